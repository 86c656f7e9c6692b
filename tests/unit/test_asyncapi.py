"""The AsyncAPI 3 document of the topics: valid, complete, and true to the code (issue 24)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gapwatch.core.topics import TOPIC_CONFIGS, Stream, topic_name

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
# The AsyncAPI 3.0.0 meta-schema, from the npm package @asyncapi/specs 6.11.1 (Apache-2.0).
META = ROOT / "tests" / "fixtures" / "asyncapi-3.0.0.schema.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return dict(json.loads((SCHEMAS / "asyncapi.json").read_text()))


def problems(doc: dict[str, Any]) -> list[str]:
    schema = json.loads(META.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [error.message for error in validator.iter_errors(doc)]


def test_the_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert problems(document) == []
    broken = copy.deepcopy(document)
    broken["channels"]["gaps"]["messages"] = ["not a map"]
    assert problems(broken)


def test_every_topic_is_a_channel_with_its_configuration(document: dict[str, Any]) -> None:
    channels = document["channels"]
    assert set(channels) == {s.value for s in Stream}
    for stream in Stream:
        channel = channels[stream.value]
        kafka = channel["bindings"]["kafka"]
        assert channel["address"] == kafka["topic"] == topic_name(stream)
        configured = TOPIC_CONFIGS[stream]
        assert kafka["topicConfiguration"]["cleanup.policy"] == [configured["cleanup.policy"]]
        for name in ("retention.ms", "delete.retention.ms"):
            if name in configured:
                assert kafka["topicConfiguration"][name] == int(configured[name])
        assert channel["messages"], stream
    assert channels["promises"]["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"] == [
        "compact"
    ]


def test_every_message_names_a_committed_schema_and_example(document: dict[str, Any]) -> None:
    index = json.loads((SCHEMAS / "index.json").read_text())["events"]
    messages = document["components"]["messages"]
    for event in index:
        name = event["schema"].removesuffix(".schema.json")
        message = messages[name]
        assert (SCHEMAS / message["payload"]["$ref"]).is_file()
        assert (SCHEMAS / message["examples"][0]["payload"]["$ref"]).is_file()
        assert message["contentType"] == "application/cloudevents+json"
        assert message["bindings"]["kafka"]["key"]["description"] == event["key"]
    for operation in document["operations"].values():
        assert operation["action"] == "send"
