# gapwatch: one place for every command a newcomer needs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help demo run ingest infra infra-down infra-status topics test test-unit test-faults \
        test-integration \
        lint typecheck schemas bench-ingest bench-scorer bench-alerter bench-e2e scorer alerter \
        clean

help:  ## list the commands
	@awk -F ':.*## ' '/^[a-z0-9-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- set-up ----------------------------------------------------------------------------------

$(STAMP): pyproject.toml engine/Cargo.toml engine/Cargo.lock engine/pyproject.toml $(wildcard engine/src/*.rs) engine/gapwatch_engine.pyi
	@bash deploy/local/python.sh $(PYTHON) $(VENV)
	@touch $(STAMP)

venv: $(STAMP)  ## create .venv and install gapwatch with its dev dependencies

# --- local infrastructure (deploy/local/): a real Kafka broker and PostgreSQL on 127.0.0.1 ----

infra: $(STAMP)  ## start Kafka, PostgreSQL, Alertmanager (idempotent), wait until ready, topics
	@bash deploy/local/infra.sh up
	@set -a; source .run/infra.env; set +a; $(VENV)/bin/gapwatch topics

infra-down:  ## stop Kafka, PostgreSQL, Alertmanager (only the processes the scripts started)
	@bash deploy/local/infra.sh down

infra-status:  ## show whether Kafka, PostgreSQL and Alertmanager are running and ready
	@bash deploy/local/infra.sh status

topics: $(STAMP)  ## create gapwatch's topics on the running broker (idempotent)
	@set -a; source .run/infra.env; set +a; $(VENV)/bin/gapwatch topics

# --- run ---------------------------------------------------------------------------------------

demo: $(STAMP)  ## the main command: everything, a team slipping, alerts firing, live (MINUTES=4 to stop)
	@bash deploy/local/demo.sh $(if $(MINUTES),--minutes $(MINUTES))

run: infra  ## infra, then the ingest service alone on 127.0.0.1:8081 (Ctrl-C stops it)
	@set -a; source .run/infra.env; set +a; \
	  export GAPWATCH_INGEST_TOKENS="$${GAPWATCH_INGEST_TOKENS:-dev-token}"; \
	  echo "ingest: http://127.0.0.1:$${GAPWATCH_INGEST_PORT:-8081}  (token: \$$GAPWATCH_INGEST_TOKENS)"; \
	  exec $(VENV)/bin/gapwatch-ingest

# --- checks ------------------------------------------------------------------------------------

test: infra  ## everything: lint, types, unit and integration tests against the real infra
	@$(MAKE) --no-print-directory lint typecheck
	@$(VENV)/bin/gapwatch schemas --check
	@bash deploy/local/promtool.sh >/dev/null
	@$(VENV)/bin/pytest

test-unit: $(STAMP)  ## pure-core and unit tests only (no broker needed)
	@$(VENV)/bin/pytest tests/unit

test-faults: infra  ## the fault tests alone: kill -9 of each service, broker and PostgreSQL restarts
	@$(VENV)/bin/pytest tests/faults

lint: $(STAMP)  ## ruff lint and format check
	@$(VENV)/bin/ruff check src services tests bench deploy
	@$(VENV)/bin/ruff format --check src services tests bench deploy

typecheck: $(STAMP)  ## mypy --strict on the core, the alerter and the benchmarks
	@$(VENV)/bin/mypy
	@# services/alerter is the package gapwatch_alerter only once installed; mypy needs the name
	@mkdir -p .run/typecheck && ln -sfn ../../services/alerter .run/typecheck/gapwatch_alerter
	@MYPYPATH=src:.run/typecheck $(VENV)/bin/mypy --strict --follow-imports=silent \
	  --ignore-missing-imports --no-warn-unused-ignores .run/typecheck/gapwatch_alerter
	@# the benchmarks too (a changed helper once broke bench/e2e.py unnoticed); they import
	@# the services, checked here only as far as the benchmarks use them
	@ln -sfn ../../services/scorer .run/typecheck/gapwatch_scorer
	@ln -sfn ../../services/ingest .run/typecheck/gapwatch_ingest
	@MYPYPATH=src:.run/typecheck:. $(VENV)/bin/mypy --strict --follow-imports=silent \
	  --ignore-missing-imports --no-warn-unused-ignores bench

schemas: $(STAMP)  ## regenerate schemas/ from the event models
	@$(VENV)/bin/gapwatch schemas

bench-ingest: infra  ## ingest throughput vs a raw aiokafka producer on the same broker
	@$(PY) -m bench.ingest

bench-scorer: infra  ## scorer throughput, latency, memory and restart vs a raw consume loop
	@$(PY) -m bench.scorer

bench-alerter: infra  ## alerter rule evaluations/s and snapshot-to-receiver latency vs raw I/O
	@$(PY) -m bench.alerter

bench-e2e: infra  ## ingest -> scorer -> alerter under rising simulated load until it breaks, vs raw Kafka
	@$(PY) -m bench.e2e

scorer: infra  ## a scorer worker on the local broker (Ctrl-C stops it)
	@set -a; source .run/infra.env; set +a; exec $(VENV)/bin/gapwatch-scorer

alerter: infra  ## the alerter on 127.0.0.1:8083, paging the local Alertmanager (Ctrl-C stops it)
	@set -a; source .run/infra.env; set +a; \
	  export GAPWATCH_ALERTER_TOKENS="$${GAPWATCH_ALERTER_TOKENS:-dev-token}"; \
	  exec $(VENV)/bin/gapwatch-alerter

clean:  ## remove the virtualenv and caches (keeps .run data; see `infra.sh reset`)
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
