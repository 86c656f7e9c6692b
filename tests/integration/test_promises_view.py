"""The promises behind a page, live: scorer → gapwatch.promises.v1 → the alerter's view, its API,
the page's items and `gapwatch promises`, kill -9 and a rebuild from the compacted topic."""

from __future__ import annotations

import asyncio
import copy
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gapwatch.core.examples import EXAMPLES
from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.clients import reliable_producer
from gapwatch.kafka.settings import KafkaSettings
from tests.integration.alerter_support import (
    FlakyWebhook,
    eventually,
    fresh_schema,
    start_alerter,
    webhook_receiver,
    write_rules,
)
from tests.integration.cloudevents_check import decoded, read_all
from tests.integration.conftest import stop_process
from tests.integration.scorer_support import start_scorer

pytestmark = pytest.mark.integration

TEAM = "billing-view"
SLIPPING = [f"PV-{n}" for n in range(5)]
CALM = ["PV-calm-0", "PV-calm-1"]


def overdue_rule() -> dict[str, Any]:
    return {
        "name": "overdue-now",
        "promise_kinds": ["first_response"],
        "group_by": ["team"],
        "condition": {"type": "overdue", "above": 2},
        "for": "1s",
        "hold": "2s",
    }


def ticket(item: str, team: str, opened: datetime, due: datetime) -> bytes:
    doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    doc.update(id=f"open-{item}", subject=item, time=opened.isoformat())
    doc["data"].update(
        ticket_id=item,
        team=team,
        opened_at=opened.isoformat(),
        promises=[{"kind": "first_response", "due_at": due.isoformat()}],
    )
    del doc["data"]["sla_policy"]
    return orjson.dumps(doc)


def reply(item: str, at: datetime) -> bytes:
    doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.replied.v1"])
    doc.update(id=f"reply-{item}", subject=item, time=at.isoformat())
    doc["data"].update(ticket_id=item, replied_at=at.isoformat())
    return orjson.dumps(doc)


async def send(kafka: KafkaSettings, records: list[tuple[str, bytes]]) -> None:
    producer = reliable_producer(kafka)
    await producer.start()
    try:
        tickets = topic_name(Stream.TICKETS, kafka.topic_prefix)
        for key, value in records:
            await producer.send_and_wait(tickets, value, key=key.encode())
    finally:
        await producer.stop()


def listed(url: str, **params: Any) -> list[dict[str, Any]]:
    """Every promise of the list, following the cursor, a page of 2 at a time."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": "2", **({"cursor": cursor} if cursor else {})}
        response = httpx.get(url + "/v1/promises", params=query, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        out.extend(body["promises"])
        cursor = body.get("next_cursor")
        if not cursor:
            return out


def view(url: str) -> list[tuple[str, str, str, str]]:
    """The whole view, comparable across alerters: (item, kind, state, due) per promise."""
    states = ["open", "at_risk", "overdue", "paused", "closed"]
    return sorted(
        (p["item_id"], p["promise_kind"], p["state"], p["due_at"])
        for p in listed(url, state=states, sort="due_at")
    )


async def test_a_page_names_its_overdue_items_and_the_view_survives_kill_9(
    kafka: KafkaSettings, tmp_path: Path
):
    hook = FlakyWebhook()
    await hook.start()
    rules = write_rules(tmp_path / "alerts.yaml", [overdue_rule()], [webhook_receiver(hook.url)])
    scorer = start_scorer(kafka, tmp_path, "view")
    alerter = None
    try:
        async with fresh_schema() as schema:
            alerter = await asyncio.to_thread(start_alerter, kafka, tmp_path, schema, rules)
            now = datetime.now(UTC).replace(microsecond=0)
            records = [(i, ticket(i, TEAM, now, now + timedelta(seconds=3))) for i in SLIPPING]
            records += [(i, ticket(i, "calm", now, now + timedelta(hours=1))) for i in CALM]
            await send(kafka, records)

            # The page names the overdue items of its team, and only those.
            def page() -> dict[str, Any] | None:
                for r in hook.accepted():
                    transition = r.body["transition"]
                    if transition["to_state"] == "firing" and transition.get("items"):
                        return dict(transition)
                return None

            paged = await eventually(page, 90, "a page naming its items")
            assert paged["labels"] == {"team": TEAM}
            items = paged["items"]
            assert items["overdue"] >= 3
            named = {i["item_id"] for i in items["top"]}
            assert named and named <= set(SLIPPING)
            assert all(
                i["state"] == "overdue" and i["overdue_by_seconds"] >= 0 for i in items["top"]
            )

            # The view lists the same items as overdue, filtered by label, state and kind.
            def overdue() -> set[str]:
                found = listed(alerter.url, team=TEAM, state="overdue", kind="first_response")
                return {p["item_id"] for p in found}

            await eventually(lambda: overdue() == set(SLIPPING), 60, "all five overdue")
            assert named <= overdue()
            calm = listed(alerter.url, team="calm")
            assert {p["item_id"] for p in calm} == set(CALM)
            assert all(p["state"] == "open" and p["time_left_seconds"] > 0 for p in calm)
            # Most overdue first; all of them equally here, then by item id.
            ordered = listed(alerter.url, team=TEAM, state="overdue", sort="-overdue_by")
            assert [p["item_id"] for p in ordered] == sorted(SLIPPING)

            # `gapwatch promises` prints them, from the API alone.
            cli = subprocess.run(
                [sys.executable, "-m", "gapwatch", "promises", "--team", TEAM, "--state",
                 "overdue", "--url", alerter.url],
                capture_output=True, text=True, timeout=60, check=False,
                env={k: v for k, v in os.environ.items() if not k.startswith("GAPWATCH_KAFKA")},
            )  # fmt: skip
            assert cli.returncode == 0, cli.stderr
            assert all(item in cli.stdout for item in SLIPPING), cli.stdout
            assert "5 promises" in cli.stdout

            # A delivered item leaves the overdue list; its history shows how it got there.
            delivered = SLIPPING[0]
            await send(kafka, [(delivered, reply(delivered, datetime.now(UTC)))])
            await eventually(lambda: delivered not in overdue(), 60, "the delivered item gone")
            one = httpx.get(f"{alerter.url}/v1/promises/{delivered}", timeout=10).json()
            first = next(p for p in one["promises"] if p["promise_kind"] == "first_response")
            assert (first["state"], first["outcome"]) == ("closed", "delivered_late")
            states = [h["state"] for h in first["history"]]
            assert states[0] == "open" and states[-2:] == ["overdue", "closed"]
            assert httpx.get(f"{alerter.url}/v1/promises/PV-none", timeout=10).status_code == 404
            # Every applied record's lag behind the scorer is measured (bench/e2e.py reads it).
            scrape = httpx.get(f"{alerter.url}/metrics", timeout=10).text
            lagged = re.search(
                r"^gapwatch_alerter_promise_view_lag_seconds_count (\S+)$", scrape, re.M
            )
            applied = re.search(r"^gapwatch_alerter_promise_records_total (\S+)$", scrape, re.M)
            assert lagged and applied and float(lagged[1]) >= float(applied[1]) > 0
            # Issue 24: gap, promise-state and alert records are CloudEvents in structured
            # mode, as the SDKs' Kafka binding reads them.
            for stream, kind in (
                (Stream.GAPS, "gapwatch.gap."),
                (Stream.PROMISES, "gapwatch.promise.state."),
                (Stream.ALERTS, "gapwatch.alert."),
            ):
                events = decoded(await read_all(kafka, stream))
                assert events and all(e.get_type().startswith(kind) for e in events), stream
                # `dataschema` names the published schema of what gapwatch itself produces.
                published = f"https://gapwatch.dev/schemas/{kind}v1.schema.json"
                assert {e.get_dataschema() for e in events} == {published}, stream

            # kill -9, restart: the view is the one before, nothing lost.
            before = await eventually(lambda: view(alerter.url), 30, "the view")
            alerter.process.send_signal(signal.SIGKILL)
            alerter.process.wait(10)
            alerter = await asyncio.to_thread(start_alerter, kafka, tmp_path, schema, rules)
            assert view(alerter.url) == before

            # Rebuilt from the compacted topic alone: a fresh schema reaches the same view.
            async with fresh_schema() as other:
                second = await asyncio.to_thread(start_alerter, kafka, tmp_path, other, rules)
                try:
                    await eventually(
                        lambda: view(second.url) == before, 60, "the rebuilt view equal"
                    )
                finally:
                    stop_process(second.process)
    finally:
        if alerter is not None:
            stop_process(alerter.process)
        stop_process(scorer.process)
        await hook.stop()
