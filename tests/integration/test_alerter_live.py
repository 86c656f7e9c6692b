"""The alerter against the real broker and PostgreSQL: pages once, resolves, survives kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from gapwatch.core.alerts.events import AlertEvent
from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.clients import reliable_producer
from gapwatch.kafka.settings import KafkaSettings
from tests.integration.alerter_support import (
    ALERTER_TOKEN,
    alerter_rig,
    committed,
    eventually,
    publish_round,
)
from tests.integration.conftest import read_topic

pytestmark = pytest.mark.timeout(240)

WINDOWS = ("5m", "30m", "1h", "6h")
HEALTHY = {"billing": (100, 0), "support": (100, 0)}
SLIPPING = {"billing": (20, 80), "support": (100, 0)}


async def test_a_slip_pages_once_despite_a_failing_receiver_and_resolves(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    async with alerter_rig(kafka, tmp_path, fail_first=3) as rig:
        hook, alerter = rig.hook, rig.alerter
        await publish_round(kafka, HEALTHY, WINDOWS)
        await asyncio.sleep(1.0)
        assert alerter.alerts() == []
        await publish_round(kafka, SLIPPING, WINDOWS)
        await eventually(lambda: rig.states().get("firing") == 1, 60, "the page to arrive")
        firing = alerter.alerts(state="firing")
        assert [a["labels"] for a in firing] == [{"team": "billing"}]
        assert firing[0]["severity"] == "page"
        assert firing[0]["figures"]["burn_rate_long"] == pytest.approx(16.0)
        assert firing[0]["latest_breached"]  # the evidence names breached items
        await publish_round(kafka, HEALTHY, WINDOWS)
        await eventually(lambda: rig.states().get("resolved") == 1, 60, "the resolve to arrive")
        await asyncio.sleep(1.5)  # any duplicate would be on its way by now
        ids = hook.accepted_ids()
        assert len(ids) == len(set(ids)) == 2, "each transition accepted exactly once"
        assert len(hook.requests) >= 3 + 2, "the first three attempts were refused"
        assert all(r.signed for r in hook.requests), "every request carries a valid HMAC"
        assert {r.body["transition"]["labels"]["team"] for r in hook.accepted()} == {"billing"}

        fingerprint = firing[0]["fingerprint"]
        detail = httpx.get(f"{alerter.url}/v1/alerts/{fingerprint}", timeout=10).json()
        states = [h["to_state"] for h in reversed(detail["history"])]
        assert states == ["pending", "firing", "resolved"]
        delivered = [d for h in detail["history"] for d in h["deliveries"]]
        assert all(d["delivered_at"] for d in delivered)

        records = await read_topic(kafka, Stream.ALERTS, expected=3, timeout=30)
        events = [AlertEvent.model_validate_json(r.value) for r in records]
        assert [e.type for e in events] == [
            "gapwatch.alert.pending.v1",
            "gapwatch.alert.firing.v1",
            "gapwatch.alert.resolved.v1",
        ]
        assert {e.subject for e in events} == {fingerprint}
        assert len({e.id for e in events}) == 3
        assert {r.key for r in records} == {fingerprint.encode()}


async def test_kill_9_mid_incident_neither_repeats_the_page_nor_loses_the_resolve(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    async with alerter_rig(kafka, tmp_path) as rig:
        await publish_round(kafka, SLIPPING, WINDOWS)
        await eventually(lambda: rig.states().get("firing") == 1, 60, "the page")
        os.kill(rig.alerter.process.pid, signal.SIGKILL)
        rig.alerter.process.wait(10)
        # The slip goes on while it is down, then recovers.
        await publish_round(kafka, SLIPPING, WINDOWS)
        await rig.restart()
        await asyncio.sleep(1.5)
        assert rig.states().get("firing") == 1, "restart re-paged"
        await publish_round(kafka, HEALTHY, WINDOWS)
        await eventually(lambda: rig.states().get("resolved") == 1, 60, "resolve")
        await asyncio.sleep(1.5)
        ids = rig.hook.accepted_ids()
        assert len(ids) == len(set(ids)) == 2


async def test_an_incident_that_began_and_ended_while_the_alerter_was_down_pages_and_resolves(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """Rounds read after a restart are judged one by one at their own time, not only the last."""
    async with alerter_rig(kafka, tmp_path) as rig:
        await publish_round(kafka, HEALTHY, WINDOWS)
        await eventually(lambda: committed(rig), 30, "the first round's offsets to be committed")
        os.kill(rig.alerter.process.pid, signal.SIGKILL)
        rig.alerter.process.wait(10)
        # While it is down: billing slips for 10 s of event time (the rule's `for` is 1 s), then
        # recovers for 10 s (its `hold` is 2 s), round every 2 s, as the scorer would publish.
        start = datetime.now(UTC)
        for i, figures in enumerate([SLIPPING] * 5 + [HEALTHY] * 5):
            await publish_round(kafka, figures, WINDOWS, as_of=start + timedelta(seconds=2 * i))
        await rig.restart()
        await eventually(lambda: rig.states().get("resolved") == 1, 60, "the resolve")
        await asyncio.sleep(1.0)  # any duplicate would be on its way by now
        assert rig.states() == {"firing": 1, "resolved": 1}
        fingerprint = rig.hook.accepted()[0].body["transition"]["fingerprint"]
        detail = httpx.get(f"{rig.alerter.url}/v1/alerts/{fingerprint}", timeout=10).json()
        history = list(reversed(detail["history"]))
        assert [h["to_state"] for h in history] == ["pending", "firing", "resolved"]
        # Judged in event time: pending at the first slipping round, firing at the next (`for`
        # 1 s), resolved at the second healthy round (`hold` 2 s), whatever the catch-up took.
        at = [datetime.fromisoformat(h["at"]) for h in history]
        assert [round((t - start).total_seconds()) for t in at] == [0, 2, 12]


async def test_silences_need_a_token_hold_pages_back_and_release_them_when_they_end(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    body = {
        "matchers": {"alertname": "first-response-burn", "team": "billing"},
        "duration_seconds": 3600,
        "created_by": "test",
        "comment": "known migration",
    }
    auth = {"Authorization": f"Bearer {ALERTER_TOKEN}"}
    async with (
        alerter_rig(kafka, tmp_path) as rig,
        httpx.AsyncClient(base_url=rig.alerter.url, timeout=10) as http,
    ):
        assert (await http.post("/v1/silences", json=body)).status_code == 401
        bad = await http.post("/v1/silences", json={**body, "duration_seconds": -1}, headers=auth)
        assert bad.status_code == 422
        assert "duration_seconds" in bad.text
        created = await http.post("/v1/silences", json=body, headers=auth)
        assert created.status_code == 201, created.text
        await publish_round(kafka, SLIPPING, WINDOWS)
        await eventually(
            lambda: rig.alerter.alerts(state="firing"), 60, "the alert to fire silently"
        )
        await asyncio.sleep(1.5)
        assert rig.hook.requests == []
        fingerprint = rig.alerter.alerts(state="firing")[0]["fingerprint"]
        detail = (await http.get(f"/v1/alerts/{fingerprint}")).json()
        firing = [h for h in detail["history"] if h["to_state"] == "firing"]
        assert [h["silenced"] for h in firing] == [True]
        silence_id = created.json()["id"]
        assert (await http.delete(f"/v1/silences/{silence_id}")).status_code == 401
        assert (await http.delete(f"/v1/silences/{silence_id}", headers=auth)).status_code == 200
        listed = (await http.get("/v1/silences")).json()["silences"]
        assert silence_id not in [s["id"] for s in listed]
        # The silence is over and the alert still fires: the held-back page goes out, under
        # the id of the transition it belongs to.
        await eventually(lambda: rig.states().get("firing") == 1, 30, "the held-back page")
        assert rig.hook.accepted_ids() == [firing[0]["id"]]
        await publish_round(kafka, HEALTHY, WINDOWS)
        await eventually(lambda: rig.states().get("resolved") == 1, 60, "resolve")
        await asyncio.sleep(1.0)
        assert rig.states() == {"firing": 1, "resolved": 1}
        metrics = (await http.get("/metrics")).text
        assert 'gapwatch_alerter_deliveries_total{receiver="hook",result="ok"} 2.0' in metrics
        assert "\nprocess_resident_memory_bytes " in metrics


async def test_garbage_on_the_scores_topic_is_dead_lettered_and_evaluation_goes_on(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    async with alerter_rig(kafka, tmp_path) as rig:
        producer = reliable_producer(kafka)
        await producer.start()
        topic = topic_name(Stream.SCORES, kafka.topic_prefix)
        for value in (b"\xff\xfe not json", b"[1,2]", orjson.dumps({"kind": "window"})):
            await producer.send_and_wait(topic, value, key=b"x")
        await producer.stop()
        await publish_round(kafka, SLIPPING, WINDOWS)
        await eventually(lambda: rig.states().get("firing") == 1, 60, "the page")
        dead = await read_topic(kafka, Stream.DEADLETTER, expected=3, timeout=30)
        reasons = sorted(orjson.loads(r.value)["reason"] for r in dead)
        assert reasons == ["bad_figures", "bad_figures", "not_json"]
        assert rig.alerter.process.poll() is None
