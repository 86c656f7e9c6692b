"""The committed JSON Schemas match the models, and every example validates against both."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from gapwatch.cli import stale_schema_files
from gapwatch.core.alerts.events import AlertEvent, alert_event
from gapwatch.core.alerts.lifecycle import Transition
from gapwatch.core.catalog import MODEL_BY_TYPE
from gapwatch.core.examples import ALERT_EXAMPLE
from gapwatch.core.gaps import GapEvent
from gapwatch.core.validation import validate_event

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def test_committed_schemas_are_up_to_date():
    stale = stale_schema_files(SCHEMA_DIR)
    assert stale == [], f"run `gapwatch schemas` to refresh: {stale}"


def test_a_changed_model_makes_the_schemas_stale(tmp_path: Path):
    # The staleness check must be able to fail: corrupt one copied file and one extra file.
    for path in SCHEMA_DIR.rglob("*.json"):
        target = tmp_path / path.relative_to(SCHEMA_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    victim = tmp_path / "gapwatch.job.arrived.v1.schema.json"
    victim.write_text(victim.read_text().replace('"job_id"', '"jobid"'))
    (tmp_path / "gapwatch.job.teleported.v1.schema.json").write_text("{}")
    api = tmp_path / "openapi" / "alerter.json"
    api.write_text(api.read_text().replace('"/v1/silences"', '"/v1/silence"'))
    assert stale_schema_files(tmp_path) == [
        "gapwatch.job.arrived.v1.schema.json",
        "gapwatch.job.teleported.v1.schema.json",
        "openapi/alerter.json",
    ]


@pytest.mark.parametrize("event_type", sorted(MODEL_BY_TYPE))
def test_example_validates_against_published_schema(event_type: str):
    schema = json.loads((SCHEMA_DIR / f"{event_type}.schema.json").read_text())
    example = json.loads((SCHEMA_DIR / "examples" / f"{event_type}.example.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(example)
    assert validate_event(example).type == event_type


def test_published_schema_rejects_what_the_model_rejects():
    schema = json.loads((SCHEMA_DIR / "gapwatch.feedback.submitted.v1.schema.json").read_text())
    example = json.loads(
        (SCHEMA_DIR / "examples" / "gapwatch.feedback.submitted.v1.example.json").read_text()
    )
    example["data"]["csat"] = 9
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(example, schema)


def test_index_lists_every_type_with_its_topic():
    index = json.loads((SCHEMA_DIR / "index.json").read_text())
    topics = {e["type"]: e["topic"] for e in index["events"]}
    gap_entries = [t for t in topics if t.startswith("gapwatch.gap.")]
    alert_entries = [t for t in topics if t.startswith("gapwatch.alert.")]
    promise_entries = [t for t in topics if t.startswith("gapwatch.promise.")]
    outputs = set(gap_entries) | set(alert_entries) | set(promise_entries)
    assert set(topics) - outputs == set(MODEL_BY_TYPE)
    assert [topics[t] for t in promise_entries] == ["gapwatch.promises.v1"]
    assert [topics[t] for t in gap_entries] == ["gapwatch.gaps.v1"]
    assert [topics[t] for t in alert_entries] == ["gapwatch.alerts.v1"]
    assert topics["gapwatch.feedback.submitted.v1"] == "gapwatch.feedback.v1"
    assert topics["gapwatch.job.arrived.v1"] == "gapwatch.jobs.v1"
    assert topics["gapwatch.ticket.opened.v1"] == "gapwatch.tickets.v1"


def test_gap_example_validates_against_the_gap_schema():
    schema = json.loads((SCHEMA_DIR / "gapwatch.gap.v1.schema.json").read_text())
    example = json.loads((SCHEMA_DIR / "examples" / "gapwatch.gap.v1.example.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(example)
    GapEvent.model_validate(example)
    example["type"] = "gapwatch.gap.vanished.v1"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(example, schema)


def test_alert_example_validates_against_the_alert_schema():
    schema = json.loads((SCHEMA_DIR / "gapwatch.alert.v1.schema.json").read_text())
    example = json.loads((SCHEMA_DIR / "examples" / "gapwatch.alert.v1.example.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(example)
    AlertEvent.model_validate(example)
    example["data"]["to_state"] = "exploded"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(example, schema)


def test_alert_events_of_transitions_validate_against_the_schema():
    schema = json.loads((SCHEMA_DIR / "gapwatch.alert.v1.schema.json").read_text())
    transition = Transition.from_dict({**ALERT_EXAMPLE["data"], "id": ALERT_EXAMPLE["id"]})
    event = alert_event(transition)
    document = json.loads(event.model_dump_json(exclude_none=True))
    jsonschema.Draft202012Validator(schema).validate(document)
    assert document["id"] == ALERT_EXAMPLE["id"]
    assert document["subject"] == transition.fingerprint
    assert document["type"] == "gapwatch.alert.firing.v1"
