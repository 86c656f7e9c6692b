"""POST /v1/events against the real broker: events land on the right topic, bad input is refused."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import orjson
import pytest

from gapwatch.core.examples import EXAMPLES
from gapwatch.core.topics import Stream
from gapwatch.core.validation import encode_event, validate_event
from gapwatch.kafka.settings import KafkaSettings
from tests.integration.cloudevents_check import decoded
from tests.integration.conftest import IngestProcess, end_offsets, read_topic

pytestmark = pytest.mark.integration


def example(event_type: str, **envelope: Any) -> dict[str, Any]:
    doc = copy.deepcopy(EXAMPLES[event_type])
    doc.update(envelope)
    return doc


def ticket(ticket_id: str, event_id: str) -> dict[str, Any]:
    doc = example("gapwatch.ticket.opened.v1", id=event_id, subject=ticket_id)
    doc["data"]["ticket_id"] = ticket_id
    return doc


def feedback_on(item_id: str, event_id: str) -> dict[str, Any]:
    doc = example("gapwatch.feedback.submitted.v1", id=event_id, subject=item_id)
    doc["data"]["item_id"] = item_id
    doc["data"]["item_kind"] = "ticket"
    return doc


async def test_single_event_lands_on_its_topic_with_key_and_canonical_payload(
    client: httpx.AsyncClient, kafka: KafkaSettings
):
    doc = example("gapwatch.job.arrived.v1")
    response = await client.post("/v1/events", content=orjson.dumps(doc))
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1}
    records = await read_topic(kafka, Stream.JOBS, 1)
    assert len(records) == 1
    assert records[0].key == b"J-2001"
    assert records[0].value == encode_event(validate_event(doc))
    # The CloudEvents Kafka binding, structured mode: an SDK reads the same event back.
    (event,) = decoded(records)
    assert (event.get_id(), event.get_type()) == (doc["id"], doc["type"])
    assert await end_offsets(kafka, (Stream.TICKETS, Stream.FEEDBACK)) == 0


async def test_batch_is_routed_by_stream_and_feedback_meets_its_item(
    client: httpx.AsyncClient, kafka: KafkaSettings
):
    tickets = [ticket(f"T-{i}", f"e-t-{i}") for i in range(40)]
    feedback = [feedback_on(f"T-{i}", f"e-f-{i}") for i in range(40)]
    jobs = [example(t) for t in EXAMPLES if t.startswith("gapwatch.job.")]
    batch = tickets + jobs + feedback
    response = await client.post(
        "/v1/events",
        content=orjson.dumps(batch),
        headers={"Content-Type": "application/cloudevents-batch+json"},
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": len(batch)}

    ticket_records = await read_topic(kafka, Stream.TICKETS, 40)
    feedback_records = await read_topic(kafka, Stream.FEEDBACK, 40)
    job_records = await read_topic(kafka, Stream.JOBS, len(jobs))
    assert len(ticket_records) == 40 and len(feedback_records) == 40
    assert len(job_records) == len(jobs)
    assert sorted(orjson.loads(r.value)["id"] for r in job_records) == sorted(j["id"] for j in jobs)
    ticket_partition = {r.key: r.partition for r in ticket_records}
    assert len(set(ticket_partition.values())) > 1, "keys should spread over partitions"
    for record in feedback_records:
        assert record.partition == ticket_partition[record.key], record.key
        assert orjson.loads(record.value)["data"]["item_id"] == record.key.decode()


async def _assert_nothing_produced(kafka: KafkaSettings) -> None:
    assert await end_offsets(kafka) == 0


async def test_malformed_json_is_400(client: httpx.AsyncClient, kafka: KafkaSettings):
    for body in (b'{"specversion": ', b"\xff\xfe{}", b"", b"[" * 5000 + b"]" * 5000):
        response = await client.post("/v1/events", content=body)
        assert response.status_code == 400, (body[:20], response.text)
        assert response.headers["content-type"] == "application/problem+json"
    await _assert_nothing_produced(kafka)


async def test_schema_violations_are_422_listing_index_path_and_reason(
    client: httpx.AsyncClient, kafka: KafkaSettings
):
    good = example("gapwatch.ticket.closed.v1")
    naive = example("gapwatch.ticket.closed.v1")
    naive["data"]["closed_at"] = "2026-03-10T00:00:00"
    bad_csat = example("gapwatch.feedback.submitted.v1")
    bad_csat["data"]["csat"] = 9
    response = await client.post("/v1/events", content=orjson.dumps([good, naive, bad_csat]))
    assert response.status_code == 422
    problem = response.json()
    assert problem["status"] == 422
    assert "2 of 3 events are invalid" in problem["detail"]
    assert [(e["index"], e["path"], e["code"]) for e in problem["errors"]] == [
        (1, "data.closed_at", "timezone_aware"),
        (2, "data.csat", "less_than_equal"),
    ]
    assert all(e["reason"] for e in problem["errors"])
    await _assert_nothing_produced(kafka)


@pytest.mark.parametrize(
    ("event_type", "code"),
    [
        ("gapwatch.ticket.opened.v9", "unsupported_version"),
        ("gapwatch.ticket.vanished.v1", "unknown_type"),
        ("com.example.other", "unknown_type"),
    ],
)
async def test_unknown_type_or_version_is_422(
    client: httpx.AsyncClient, kafka: KafkaSettings, event_type: str, code: str
):
    doc = example("gapwatch.ticket.opened.v1", type=event_type)
    response = await client.post("/v1/events", content=orjson.dumps(doc))
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"index": 0, "path": "type", "code": code, "reason": response.json()["errors"][0]["reason"]}
    ]
    await _assert_nothing_produced(kafka)


async def test_non_object_bodies_are_422(client: httpx.AsyncClient, kafka: KafkaSettings):
    for body in (b"42", b'"event"', b"[]", b"[1]", b"null"):
        response = await client.post("/v1/events", content=body)
        assert response.status_code == 422, (body, response.text)
    await _assert_nothing_produced(kafka)


async def test_oversized_body_is_413_declared_or_streamed(
    client: httpx.AsyncClient, kafka: KafkaSettings
):
    big = orjson.dumps([example("gapwatch.ticket.closed.v1")] * 6000)
    assert len(big) > 1_048_576
    response = await client.post("/v1/events", content=big)
    assert response.status_code == 413

    async def chunks():  # no Content-Length: the limit must hold while streaming
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    response = await client.post("/v1/events", content=chunks())
    assert response.status_code == 413
    await _assert_nothing_produced(kafka)


async def test_batch_over_the_event_limit_is_413(client: httpx.AsyncClient, kafka: KafkaSettings):
    small = {"type": "x"}
    response = await client.post("/v1/events", content=orjson.dumps([small] * 1001))
    assert response.status_code == 413
    assert "limit is 1000" in response.json()["detail"]
    await _assert_nothing_produced(kafka)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Basic aW50ZWdyYXRpb24=", "Bearer", "integration"],
)
async def test_missing_or_wrong_token_is_401(
    ingest: IngestProcess, kafka: KafkaSettings, authorization: str | None
):
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    doc = example("gapwatch.ticket.closed.v1")
    response = httpx.post(
        ingest.url + "/v1/events", content=orjson.dumps(doc), headers=headers, timeout=10
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    await _assert_nothing_produced(kafka)


async def test_wrong_content_type_is_415(client: httpx.AsyncClient, kafka: KafkaSettings):
    doc = orjson.dumps(example("gapwatch.ticket.closed.v1"))
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
    ):
        response = await client.post(
            "/v1/events", content=doc, headers={"Content-Type": content_type}
        )
        assert response.status_code == 415, content_type
    await _assert_nothing_produced(kafka)


async def test_repeated_event_id_is_accepted_again(client: httpx.AsyncClient, kafka: KafkaSettings):
    doc = example("gapwatch.ticket.reopened.v1")
    for _ in range(2):
        assert (await client.post("/v1/events", content=orjson.dumps(doc))).status_code == 202
    records = await read_topic(kafka, Stream.TICKETS, 2)
    assert [orjson.loads(r.value)["id"] for r in records] == ["evt-0006", "evt-0006"]


async def test_health_readiness_metrics_and_openapi(client: httpx.AsyncClient):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    await client.post("/v1/events", content=orjson.dumps(example("gapwatch.job.arrived.v1")))
    await client.post("/v1/events", content=b"{oops")
    metrics = (await client.get("/metrics")).text
    assert 'gapwatch_ingest_events_accepted_total{stream="jobs"} 1.0' in metrics
    assert 'gapwatch_ingest_events_rejected_total{reason="malformed_json"} 1.0' in metrics
    assert 'gapwatch_ingest_requests_total{code="202"} 1.0' in metrics
    assert "gapwatch_ingest_produce_duration_seconds_bucket" in metrics
    spec = (await client.get("/openapi.json")).json()
    body = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["oneOf"][1]["maxItems"] == 1000
    assert (
        "gapwatch.ticket.opened.v1"
        in spec["components"]["schemas"]["InputEvent"]["discriminator"]["mapping"]
    )
