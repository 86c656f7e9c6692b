"""Generates the published JSON Schemas of the event contracts (pure: returns documents)."""

from __future__ import annotations

from typing import Any

from gapwatch import __version__
from gapwatch.core.alerts.events import AlertEvent
from gapwatch.core.asyncapi import asyncapi_document
from gapwatch.core.catalog import INPUT_EVENT_MODELS
from gapwatch.core.envelope import SCHEMA_BASE_URI
from gapwatch.core.examples import ALERT_EXAMPLE, EXAMPLES, GAP_EXAMPLE, PROMISE_STATE_EXAMPLE
from gapwatch.core.gaps import GapEvent
from gapwatch.core.promise_states import PromiseStateEvent
from gapwatch.core.topics import Stream, topic_name

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_file_name(event_type: str) -> str:
    return f"{event_type}.schema.json"


def example_file_name(event_type: str) -> str:
    return f"{event_type}.example.json"


def event_schemas() -> dict[str, dict[str, Any]]:
    """Relative file name -> document, for every file under `schemas/`."""
    files: dict[str, dict[str, Any]] = {}
    index: list[dict[str, Any]] = []
    for model in INPUT_EVENT_MODELS:
        event_type = model.event_type
        schema = model.model_json_schema(mode="validation")
        schema = {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": SCHEMA_BASE_URI + schema_file_name(event_type),
            **schema,
            "title": event_type,
        }
        files[schema_file_name(event_type)] = schema
        files["examples/" + example_file_name(event_type)] = EXAMPLES[event_type]
        index.append(
            {
                "type": event_type,
                "topic": topic_name(model.stream),
                "key": "subject (the item id)",
                "schema": schema_file_name(event_type),
                "example": "examples/" + example_file_name(event_type),
            }
        )
    gap_schema = GapEvent.model_json_schema(mode="validation")
    files[schema_file_name(GapEvent.event_type)] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": SCHEMA_BASE_URI + schema_file_name(GapEvent.event_type),
        **gap_schema,
        "title": "gapwatch.gap.<outcome>.v1",
    }
    files["examples/" + example_file_name(GapEvent.event_type)] = GAP_EXAMPLE
    index.append(
        {
            "type": "gapwatch.gap.{met,breached,at_risk,delivered_late,cancelled,feedback}.v1",
            "topic": topic_name(Stream.GAPS),
            "key": "subject (the item id)",
            "schema": schema_file_name(GapEvent.event_type),
            "example": "examples/" + example_file_name(GapEvent.event_type),
        }
    )
    alert_schema = AlertEvent.model_json_schema(mode="validation")
    files[schema_file_name(AlertEvent.event_type)] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": SCHEMA_BASE_URI + schema_file_name(AlertEvent.event_type),
        **alert_schema,
        "title": "gapwatch.alert.<state>.v1",
    }
    files["examples/" + example_file_name(AlertEvent.event_type)] = ALERT_EXAMPLE
    index.append(
        {
            "type": "gapwatch.alert.{pending,firing,resolved,inactive}.v1",
            "topic": topic_name(Stream.ALERTS),
            "key": "subject (the alert fingerprint)",
            "schema": schema_file_name(AlertEvent.event_type),
            "example": "examples/" + example_file_name(AlertEvent.event_type),
        }
    )
    promise_schema = PromiseStateEvent.model_json_schema(mode="validation")
    files[schema_file_name(PromiseStateEvent.event_type)] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": SCHEMA_BASE_URI + schema_file_name(PromiseStateEvent.event_type),
        **promise_schema,
        "title": PromiseStateEvent.event_type,
    }
    files["examples/" + example_file_name(PromiseStateEvent.event_type)] = PROMISE_STATE_EXAMPLE
    index.append(
        {
            "type": PromiseStateEvent.event_type,
            "topic": topic_name(Stream.PROMISES),
            "key": "<item id>|<promise kind> (compacted: the latest record is the state)",
            "schema": schema_file_name(PromiseStateEvent.event_type),
            "example": "examples/" + example_file_name(PromiseStateEvent.event_type),
        }
    )
    files["index.json"] = {"events": index}
    files["asyncapi.json"] = asyncapi_document(index, version=__version__)
    return files
