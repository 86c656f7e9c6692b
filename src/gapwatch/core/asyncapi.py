"""The AsyncAPI 3 document of gapwatch's Kafka topics (pure: returns a document).

Generated beside the JSON Schemas (`gapwatch schemas`, `schemas/asyncapi.json`) from the same
catalogue: every topic as a channel with its address, key, messages (payloads are the published
schema files, referenced relatively), headers, partitioning and topic configuration (the Kafka
bindings), and one operation per producer.
"""

from __future__ import annotations

from typing import Any

from gapwatch.core.topics import TOPIC_CONFIGS, Stream, topic_name

KAFKA_BINDING_VERSION = "0.5.0"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"

_PRODUCER = {
    Stream.TICKETS: "ingest",
    Stream.JOBS: "ingest",
    Stream.FEEDBACK: "ingest",
    Stream.GAPS: "scorer",
    Stream.SCORES: "scorer",
    Stream.PROMISES: "scorer",
    Stream.ALERTS: "alerter",
    Stream.DEADLETTER: "ingest, scorer, alerter",
}
_CE_HEADERS = {
    "type": "object",
    "properties": {
        "content-type": {
            "type": "string",
            "const": CLOUDEVENTS_CONTENT_TYPE + "; charset=utf-8",
            "description": "The CloudEvents Kafka binding's structured content mode.",
        }
    },
}
_PLAIN: dict[Stream, dict[str, Any]] = {
    Stream.SCORES: {
        "name": "gapwatch.scores.window_or_open",
        "key": "the segment (its labels, sorted, as JSON)",
        "payload": {
            "type": "object",
            "description": "A rolling-window snapshot of one segment and promise kind "
            '(`kind: "window"`: met, breached, attainment, quantiles, CSAT... per window) or its '
            'open promises (`kind: "open"`: open, at_risk, overdue per source partition). '
            "Read by the alerter; see docs/scoring.md.",
            "required": ["kind"],
            "properties": {"kind": {"type": "string", "enum": ["window", "open"]}},
        },
    },
    Stream.DEADLETTER: {
        "name": "gapwatch.deadletter",
        "key": "the original record's key, or sha256:<hex> of a key over 256 bytes",
        "payload": {
            "type": "object",
            "description": "A record that could not be used: why, and the original (whole "
            "under 512 KiB, else its digests and first KiB).",
            "required": ["reason", "detail", "service", "topic", "partition", "offset"],
            "properties": {
                "reason": {"type": "string"},
                "detail": {"type": "string"},
                "service": {"type": "string"},
                "topic": {"type": "string"},
                "partition": {"type": "integer"},
                "offset": {"type": "integer"},
                "copied": {"type": "boolean"},
                "key_b64": {"type": "string"},
                "value_b64": {"type": "string"},
            },
        },
    },
}


def asyncapi_document(
    events: list[dict[str, Any]], version: str, partitions: int = 6
) -> dict[str, Any]:
    """The document for the catalogue's `events` (as `schemas/index.json` lists them: type,
    topic, key, schema, example), at gapwatch `version`, with the default partition count."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_topic.setdefault(event["topic"], []).append(event)
    for stream in Stream:
        topic = topic_name(stream)
        names = []
        for event in by_topic.get(topic, []):
            name = event["schema"].removesuffix(".schema.json")
            names.append(name)
            messages[name] = {
                "name": name,
                "title": event["type"],
                "contentType": CLOUDEVENTS_CONTENT_TYPE,
                "headers": _CE_HEADERS,
                "payload": {"$ref": event["schema"]},
                "examples": [{"name": "example", "payload": {"$ref": event["example"]}}],
                "bindings": {
                    "kafka": {
                        "key": {"type": "string", "description": event["key"]},
                        "bindingVersion": KAFKA_BINDING_VERSION,
                    }
                },
            }
        plain = _PLAIN.get(stream)
        if plain is not None:
            names.append(plain["name"])
            messages[plain["name"]] = {
                "name": plain["name"],
                "contentType": "application/json",
                "payload": plain["payload"],
                "bindings": {
                    "kafka": {
                        "key": {"type": "string", "description": plain["key"]},
                        "bindingVersion": KAFKA_BINDING_VERSION,
                    }
                },
            }
        configs = TOPIC_CONFIGS[stream]
        configuration: dict[str, Any] = {"cleanup.policy": [configs["cleanup.policy"]]}
        for setting in ("retention.ms", "delete.retention.ms"):
            if setting in configs:
                configuration[setting] = int(configs[setting])
        channels[stream.value] = {
            "address": topic,
            "description": f"Written by {_PRODUCER[stream]}. Keyed as each message says; "
            "records of one key keep their order (one partition).",
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
            "bindings": {
                "kafka": {
                    "topic": topic,
                    "partitions": partitions,
                    "topicConfiguration": configuration,
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
        operations[f"write_{stream.value}"] = {
            "action": "send",
            "title": f"{_PRODUCER[stream]} writes {topic}",
            "channel": {"$ref": f"#/channels/{stream.value}"},
            "messages": [{"$ref": f"#/channels/{stream.value}/messages/{name}"} for name in names],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "gapwatch topics",
            "version": version,
            "description": "Every Kafka topic gapwatch reads and writes. Topic names take an "
            "optional prefix (GAPWATCH_TOPIC_PREFIX); the partition count is "
            "GAPWATCH_KAFKA_PARTITIONS (co-partitioned); configs are the defaults of "
            "`gapwatch topics` (GAPWATCH_KAFKA_TOPIC_CONFIGS overrides them).",
        },
        "defaultContentType": CLOUDEVENTS_CONTENT_TYPE,
        "servers": {
            "local": {
                "host": "127.0.0.1:19092",
                "protocol": "kafka",
                "description": "The local broker of `make infra` (deploy/local).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }
