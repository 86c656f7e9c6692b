# One image for all of gapwatch: the three services are thin adapters over one shared core
# (gapwatch.core, gapwatch.kafka) with one dependency set in pyproject.toml, so one build gives one
# artifact to test, scan and ship, and the services can never run different copies of the core.
# The command picks the service (docker-compose.yml, deploy/k8s):
#
#   gapwatch-ingest    the ingest HTTP API          (port 8081)
#   gapwatch-scorer    a scorer worker              (port 8082: metrics, health)
#   gapwatch-alerter   the alerter                  (port 8083)
#   gapwatch topics    create the Kafka topics once (exits)
#
#   docker build -t gapwatch:local .
#   docker run --rm -p 8081:8081 -e GAPWATCH_KAFKA_BOOTSTRAP=... -e GAPWATCH_INGEST_TOKENS=... \
#     gapwatch:local gapwatch-ingest
#
# No HEALTHCHECK here: which URL to probe depends on the command, so docker-compose.yml and the
# Kubernetes probes set it per service; `gapwatch-healthcheck URL` (deploy/docker/healthcheck.py)
# exits 0 only on a 2xx answer, as the image has no curl.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo PATH=/opt/cargo/bin:$PATH
# The compiled engine (engine/: Rust + PyO3, built by maturin) needs a Rust toolchain in this
# stage only; the runtime image gets the built module and no compiler.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates gcc libc6-dev \
    && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.85.0 \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/gapwatch
WORKDIR /src
COPY engine ./engine
RUN /opt/gapwatch/bin/pip install ./engine
# README.md is the package's long description (pyproject.toml `readme`), so the build needs it.
COPY pyproject.toml README.md ./
COPY src ./src
COPY services ./services
RUN /opt/gapwatch/bin/pip install .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/gapwatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GAPWATCH_INGEST_HOST=0.0.0.0 \
    GAPWATCH_SCORER_HOST=0.0.0.0 \
    GAPWATCH_ALERTER_HOST=0.0.0.0 \
    GAPWATCH_SCORER_DATA_DIR=/var/lib/gapwatch/scorer
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it and fsGroup/volumes match.
# The scorer's state directory exists and belongs to that user, so a fresh named volume mounted
# there is writable.
RUN groupadd --system --gid 10001 gapwatch \
    && useradd --system --uid 10001 --gid gapwatch --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin gapwatch \
    && install -d -o gapwatch -g gapwatch -m 0750 /var/lib/gapwatch /var/lib/gapwatch/scorer
COPY --from=build /opt/gapwatch /opt/gapwatch
COPY deploy/docker/healthcheck.py /opt/gapwatch/bin/gapwatch-healthcheck
# The working directory holds deploy/config, so the settings' defaults
# (GAPWATCH_SCORER_POLICIES_FILE, GAPWATCH_ALERTER_RULES_FILE) resolve inside the image.
WORKDIR /app
COPY deploy/config ./deploy/config
# Fail the build, not the deployment, if an entry point is missing or does not import.
RUN chmod 0755 /opt/gapwatch/bin/gapwatch-healthcheck \
    && for cmd in gapwatch gapwatch-ingest gapwatch-scorer gapwatch-alerter gapwatch-healthcheck; \
       do command -v "$cmd" >/dev/null || { echo "missing entry point: $cmd" >&2; exit 1; }; done \
    && for mod in gapwatch.cli gapwatch_ingest.__main__ gapwatch_scorer.__main__ \
                  gapwatch_alerter.__main__; \
       do python -c "import $mod" || { echo "cannot import $mod" >&2; exit 1; }; done

USER 10001:10001
EXPOSE 8081 8082 8083
CMD ["gapwatch", "--help"]
