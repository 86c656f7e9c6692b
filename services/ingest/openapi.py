"""The OpenAPI description of the ingest API, with the published event schemas inlined."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from gapwatch.core.catalog import INPUT_EVENT_MODELS
from gapwatch.problems import problem_response, problem_schema

PROBLEM_SCHEMA = problem_schema(
    "RFC 9457 problem details; `errors` lists every bad field of every event.",
    {
        "type": "object",
        "required": ["index", "path", "code", "reason"],
        "properties": {
            "index": {"type": "integer", "description": "Position in the batch (0 for one event)."},
            "path": {"type": "string", "description": "Field path, e.g. data.window.end."},
            "code": {"type": "string", "description": "Machine-readable error code."},
            "reason": {"type": "string"},
        },
    },
)


def event_components() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the schema of one input event as a oneOf of refs, the component schemas)."""
    refs, top = models_json_schema(
        [(m, "validation") for m in INPUT_EVENT_MODELS],
        ref_template="#/components/schemas/{model}",
    )
    one_event = {
        "oneOf": [refs[(m, "validation")] for m in INPUT_EVENT_MODELS],
        "discriminator": {
            "propertyName": "type",
            "mapping": {m.event_type: refs[(m, "validation")]["$ref"] for m in INPUT_EVENT_MODELS},
        },
    }
    return one_event, top.get("$defs", {})


def add_ingest_paths(spec: dict[str, Any], max_batch_events: int) -> dict[str, Any]:
    """Document POST /v1/events on the spec FastAPI generated (the handler reads raw bytes)."""
    one_event, defs = event_components()
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(defs)
    schemas["InputEvent"] = one_event
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["Accepted"] = {
        "type": "object",
        "required": ["accepted"],
        "properties": {
            "accepted": {"type": "integer", "description": "Events acknowledged by Kafka."}
        },
    }
    components.setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
    body_schema = {
        "oneOf": [
            {"$ref": "#/components/schemas/InputEvent"},
            {
                "type": "array",
                "minItems": 1,
                "maxItems": max_batch_events,
                "items": {"$ref": "#/components/schemas/InputEvent"},
            },
        ]
    }
    operation = spec["paths"]["/v1/events"]["post"]
    operation["security"] = [{"bearer": []}]
    operation["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": body_schema},
            "application/cloudevents+json": {"schema": {"$ref": "#/components/schemas/InputEvent"}},
            "application/cloudevents-batch+json": {"schema": body_schema["oneOf"][1]},
        },
    }
    operation["responses"] = {
        "202": {
            "description": "Every event of the request is acknowledged by Kafka.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
        },
        "400": problem_response("The body is not JSON (or not UTF-8)."),
        "401": problem_response("Missing or wrong bearer token."),
        "408": problem_response("The body did not arrive within the body deadline."),
        "413": problem_response("The body or the batch is over its limit."),
        "415": problem_response("Unsupported content type."),
        "422": problem_response("Events failed validation; nothing of the batch was produced."),
        "503": problem_response(
            "Kafka did not acknowledge in time; retry after Retry-After seconds."
        ),
    }
    return spec
