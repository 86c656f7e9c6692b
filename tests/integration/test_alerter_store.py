"""The alerter's store against the real PostgreSQL: one fresh schema per test, dropped after."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest

from gapwatch.core.alerts.lifecycle import Alert, AlertState, Transition, transition_id
from gapwatch.core.alerts.rules import Severity
from gapwatch_alerter.store import (
    MIGRATIONS,
    AlertStore,
    Delivery,
    MigrationError,
    StoreUnavailable,
)
from tests.integration.conftest import free_port, infra_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MIGRATION_FILES = sorted(path.name for path in MIGRATIONS.glob("*.sql"))


def dsn() -> str:
    url = infra_env().get("GAPWATCH_DATABASE_URL")
    if not url:
        pytest.fail("no GAPWATCH_DATABASE_URL: run `make infra` first")
    return url


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A schema name no other test uses; whatever a test creates in it is dropped after."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    conn = await asyncpg.connect(dsn(), timeout=10)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def store(schema: str) -> AsyncIterator[AlertStore]:
    opened = await AlertStore.connect(dsn(), schema=schema)
    try:
        assert await opened.migrate() == MIGRATION_FILES
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def other(store: AlertStore) -> AsyncIterator[AlertStore]:
    """A second store on the same schema, as a second process would have."""
    opened = await AlertStore.connect(dsn(), schema=store.schema)
    try:
        yield opened
    finally:
        await opened.close()


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


def firing(rule: str = "late_orders", **labels: str) -> Alert:
    """An alert with every field set away from its default."""
    base = Alert.new(rule, labels or {"segment": "eu", "tier": "gold"})
    return replace(
        base,
        state=AlertState.FIRING,
        severity=Severity.PAGE,
        sequence=2,
        pending_since=T0,
        # Not UTC on the way in: the store hands back the same instant, in UTC.
        firing_since=(T0 + timedelta(minutes=5)).astimezone(timezone(timedelta(hours=2))),
        clear_since=T0 + timedelta(minutes=7),
        resolved_at=T0 - timedelta(days=1),
        evaluated_at=T0 + timedelta(minutes=8),
        summary="3 orders late in eu/gold",
        figures={"burn_rate": 14.4, "late": 3, "nested": {"p99_s": [1.5, None, "x"]}},
        window="1h",
        latest_breached=("T-1", "T-2"),
    )


def transition(alert: Alert, sequence: int, to: AlertState, before: AlertState) -> Transition:
    return Transition(
        id=transition_id(alert.fingerprint, sequence),
        fingerprint=alert.fingerprint,
        rule=alert.rule,
        labels=dict(alert.labels),
        severity=alert.severity,
        from_state=before,
        to_state=to,
        at=T0 + timedelta(minutes=sequence),
        sequence=sequence,
        summary=alert.summary,
        figures=dict(alert.figures),
        window=alert.window,
        latest_breached=alert.latest_breached,
        firing_since=alert.firing_since if to is AlertState.FIRING else None,
        runbook_url="https://runbooks.example/late",
        dashboard_url="",
    )


def history_of(alert: Alert) -> list[Transition]:
    """The two transitions that brought `firing()` to where it is."""
    return [
        transition(alert, 1, AlertState.PENDING, AlertState.INACTIVE),
        transition(alert, 2, AlertState.FIRING, AlertState.PENDING),
    ]


async def owe(store: AlertStore, count: int, receivers: tuple[str, ...]) -> list[Transition]:
    """Commit `count` firing transitions, each owed to every receiver."""
    alerts = [firing(segment=f"s{i}") for i in range(count)]
    transitions = [history_of(alert)[1] for alert in alerts]
    await store.commit(alerts, transitions, [(t.id, r) for t in transitions for r in receivers], {})
    return transitions


# -- migrations ---------------------------------------------------------------------------


async def test_migrate_twice_is_a_no_op_and_records_checksums(store: AlertStore):
    assert await store.migrate() == []
    conn = await asyncpg.connect(dsn(), timeout=10)
    try:
        rows = await conn.fetch(
            f"SELECT version, name, checksum FROM {store.schema}.schema_migrations ORDER BY 1"
        )
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
            store.schema,
        )
    finally:
        await conn.close()
    assert [row["name"] for row in rows] == MIGRATION_FILES
    assert [row["version"] for row in rows] == [int(name[:4]) for name in MIGRATION_FILES]
    for row in rows:
        expected = hashlib.sha256((MIGRATIONS / row["name"]).read_bytes()).hexdigest()
        assert row["checksum"] == expected
    assert {row["table_name"] for row in tables} == {
        "schema_migrations",
        "alerts",
        "transitions",
        "outbox",
        "consumer_offsets",
        "silences",
        "promises",
        "promise_history",
    }


async def test_concurrent_migrations_apply_each_file_once(schema: str):
    first = await AlertStore.connect(dsn(), schema=schema)
    second = await AlertStore.connect(dsn(), schema=schema)
    try:
        applied = await asyncio.gather(first.migrate(), second.migrate())
    finally:
        await first.close()
        await second.close()
    conn = await asyncpg.connect(dsn(), timeout=10)
    try:
        count = await conn.fetchval(f"SELECT count(*) FROM {schema}.schema_migrations")
    finally:
        await conn.close()
    assert sorted(applied[0] + applied[1]) == MIGRATION_FILES
    assert count == len(MIGRATION_FILES)


async def test_an_edited_applied_migration_is_refused(store: AlertStore):
    conn = await asyncpg.connect(dsn(), timeout=10)
    try:
        await conn.execute(
            f"UPDATE {store.schema}.schema_migrations SET checksum = 'edited' WHERE version = 1"
        )
    finally:
        await conn.close()
    with pytest.raises(MigrationError, match=r"0001_initial\.sql") as caught:
        await store.migrate()
    assert caught.value.file == "0001_initial.sql"
    assert caught.value.retriable is False


# -- the evaluator's state ----------------------------------------------------------------


async def test_commit_round_trips_alerts_and_transitions_exactly(store: AlertStore):
    alert = firing()
    quiet = Alert.new("late_orders", {"segment": "us", "tier": "gold"})
    steps = history_of(alert)
    await store.commit([alert, quiet], steps, [], {}, silenced={steps[0].id})

    loaded = await store.load_alerts()
    assert loaded == {alert.fingerprint: alert, quiet.fingerprint: quiet}
    stored = loaded[alert.fingerprint]
    assert stored.firing_since is not None and stored.firing_since.tzinfo is UTC
    assert stored.latest_breached == ("T-1", "T-2")
    assert await store.get_alert(alert.fingerprint) == alert
    assert await store.get_alert("no-such-fingerprint") is None
    assert await store.history(alert.fingerprint) == [(steps[1], False), (steps[0], True)]
    assert await store.history(alert.fingerprint, limit=1) == [(steps[1], False)]

    resolved = replace(alert, state=AlertState.RESOLVED, sequence=3, summary="all clear")
    await store.commit([resolved], [], [], {})
    assert await store.get_alert(alert.fingerprint) == resolved


async def test_list_alerts_filters_and_hides_inactive_unless_asked(store: AlertStore):
    eu = firing(segment="eu", tier="gold")
    us = replace(firing(segment="us", tier="silver"), state=AlertState.PENDING)
    other_rule = firing("csat_drop", segment="eu", tier="gold")
    quiet = Alert.new("late_orders", {"segment": "apac", "tier": "gold"})
    await store.commit([eu, us, other_rule, quiet], [], [], {})

    assert {a.fingerprint for a in await store.list_alerts()} == {
        eu.fingerprint,
        us.fingerprint,
        other_rule.fingerprint,
    }
    assert await store.list_alerts(state="inactive") == [quiet]
    assert await store.list_alerts(state="pending") == [us]
    assert await store.list_alerts(rule="csat_drop") == [other_rule]
    by_label = await store.list_alerts(labels={"segment": "eu"})
    assert {a.fingerprint for a in by_label} == {eu.fingerprint, other_rule.fingerprint}
    assert await store.list_alerts(rule="late_orders", labels={"tier": "gold"}) == [eu]
    assert len(await store.list_alerts(limit=2)) == 2
    with pytest.raises(ValueError):
        await store.list_alerts(state="exploded")


async def test_committing_the_same_evaluation_twice_adds_nothing(store: AlertStore):
    alert = firing()
    steps = history_of(alert)
    owed = [(steps[1].id, "pager"), (steps[1].id, "slack")]
    for _ in range(2):
        await store.commit([alert], steps, owed, {("gapwatch.scores.v1", 0): 7})

    assert await store.outbox_depth() == {"pager": 1, "slack": 1}
    assert len(await store.history(alert.fingerprint)) == 2
    assert await store.load_alerts() == {alert.fingerprint: alert}


async def test_offsets_commit_with_the_state_or_not_at_all(store: AlertStore):
    alert = firing()
    await store.commit([alert], [], [], {("scores", 0): 10, ("scores", 2): 5, ("gaps", 0): 1})
    assert await store.load_offsets("scores") == {0: 10, 2: 5}
    assert await store.load_offsets("gaps") == {0: 1}
    assert await store.load_offsets("unknown") == {}

    # A delivery for a transition that was never stored breaks the foreign key: nothing of
    # this commit may remain, neither the alert change nor the offsets.
    changed = replace(alert, summary="changed")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await store.commit(
            [changed], [], [(str(uuid.uuid4()), "pager")], {("scores", 0): 99, ("scores", 1): 3}
        )
    assert await store.load_offsets("scores") == {0: 10, 2: 5}
    assert await store.get_alert(alert.fingerprint) == alert

    await store.commit([], [], [], {("scores", 0): 11})
    assert await store.load_offsets("scores") == {0: 11, 2: 5}


async def test_ten_thousand_alerts_commit_in_one_batch(store: AlertStore):
    alerts = [replace(firing(segment=f"s{i}"), sequence=i % 5) for i in range(10_000)]
    started = time.monotonic()
    await store.commit(alerts, [], [], {("scores", 0): 10_000})
    elapsed = time.monotonic() - started
    loaded = await store.load_alerts()
    assert len(loaded) == 10_000
    assert loaded[alerts[1234].fingerprint] == alerts[1234]
    # Row-by-row round trips would take far longer; this bound only catches that regression.
    assert elapsed < 20, f"committing 10,000 alerts took {elapsed:.1f}s"


async def test_naive_datetimes_are_refused(store: AlertStore):
    naive = replace(firing(), evaluated_at=datetime(2026, 3, 2, 9, 0))
    with pytest.raises(ValueError, match="evaluated_at"):
        await store.commit([naive], [], [], {})
    assert await store.load_alerts() == {}


# -- the outbox ---------------------------------------------------------------------------


async def test_concurrent_claimers_never_get_the_same_row(store: AlertStore, other: AlertStore):
    await owe(store, 20, ("pager", "slack", "webhook"))
    rounds = await asyncio.gather(
        *(s.claim_deliveries(7, lease_seconds=60) for s in (store, other) for _ in range(4))
    )
    claimed = [d.id for batch in rounds for d in batch]
    assert len(claimed) == len(set(claimed))
    while batch := await other.claim_deliveries(7, lease_seconds=60):
        claimed.extend(d.id for d in batch)
    assert len(claimed) == len(set(claimed)) == 60
    assert await store.claim_deliveries(100, lease_seconds=60) == []


async def test_claims_come_oldest_first_with_the_transition(store: AlertStore):
    transitions = await owe(store, 3, ("pager", "slack"))
    claimed = await store.claim_deliveries(10, lease_seconds=60, receivers={"slack"})
    assert [d.receiver for d in claimed] == ["slack"] * 3
    assert [d.transition for d in claimed] == transitions
    assert [d.id for d in claimed] == sorted(d.id for d in claimed)
    assert all(isinstance(d, Delivery) and d.attempts == 1 for d in claimed)
    assert all(d.created_at.tzinfo is UTC for d in claimed)
    assert await store.claim_deliveries(10, lease_seconds=60, receivers=()) == []
    oldest = await store.claim_deliveries(2, lease_seconds=60)
    assert [(d.transition, d.receiver) for d in oldest] == [(t, "pager") for t in transitions[:2]]


async def test_an_expired_lease_hands_the_row_back(store: AlertStore):
    await owe(store, 1, ("pager",))
    started = time.monotonic()
    [first] = await store.claim_deliveries(5, lease_seconds=1.0)
    assert await store.claim_deliveries(5, lease_seconds=1.0) == []

    again: list[Delivery] = []

    async def reclaim() -> None:
        while not again:
            again.extend(await store.claim_deliveries(5, lease_seconds=60))
            await asyncio.sleep(0.05)

    await asyncio.wait_for(reclaim(), 10)
    assert time.monotonic() - started >= 1.0
    assert [(d.id, d.attempts) for d in again] == [(first.id, 2)]


async def test_failures_retry_at_the_given_time_then_deliver(store: AlertStore):
    [t] = await owe(store, 1, ("pager",))
    [claimed] = await store.claim_deliveries(5, lease_seconds=60)
    assert await store.outbox_depth() == {"pager": 1}
    age = await store.oldest_undelivered_age()
    assert age is not None and 0 <= age < 60

    later = datetime.now(UTC) + timedelta(hours=1)
    await store.mark_failed(claimed.id, "x" * 2_000, 503, retry_at=later)
    assert await store.claim_deliveries(5, lease_seconds=60) == []
    [status] = await store.deliveries_of(t.id)
    assert status["receiver"] == "pager"
    assert status["attempts"] == 1
    assert status["last_error"] == "x" * 500
    assert status["last_status"] == 503
    assert status["delivered_at"] is None
    assert status["next_attempt_at"] == later

    await store.mark_failed(claimed.id, "timeout", None, retry_at=datetime.now(UTC))
    [retry] = await store.claim_deliveries(5, lease_seconds=60)
    assert (retry.id, retry.attempts) == (claimed.id, 2)

    await store.mark_delivered(retry.id, 202)
    assert await store.outbox_depth() == {}
    assert await store.oldest_undelivered_age() is None
    [status] = await store.deliveries_of(t.id)
    assert status["delivered_at"] is not None and status["delivered_at"].tzinfo is UTC
    assert status["last_status"] == 202
    assert await store.claim_deliveries(5, lease_seconds=0) == []
    # A late failure report from a stale worker must not resurrect a delivered row.
    await store.mark_failed(retry.id, "late", 500, retry_at=datetime.now(UTC))
    assert await store.outbox_depth() == {}
    [status] = await store.deliveries_of(t.id)
    assert (status["last_error"], status["last_status"]) == ("timeout", 202)
    assert await store.deliveries_of("not-a-uuid") == []


# -- silences -----------------------------------------------------------------------------


async def test_silences_are_created_listed_matched_and_expired(store: AlertStore):
    now = datetime.now(UTC)
    current = await store.create_silence(
        {"alertname": "late_orders", "segment": "eu"},
        now - timedelta(minutes=1),
        now + timedelta(hours=1),
        created_by="ana",
        comment="migration",
    )
    future = await store.create_silence(
        {"segment": "us"}, now + timedelta(hours=1), now + timedelta(hours=2), "ben", "later"
    )
    assert current.matchers == {"alertname": "late_orders", "segment": "eu"}
    assert current.created_by == "ana" and current.comment == "migration"
    assert current.starts_at.tzinfo is UTC and current.expired_at is None
    assert current.as_dict()["ends_at"].endswith("Z")
    assert current.as_dict()["expired_at"] is None

    assert current.matches("late_orders", {"segment": "eu", "tier": "gold"}, now)
    assert not current.matches("csat_drop", {"segment": "eu"}, now)
    assert not current.matches("late_orders", {"segment": "us"}, now)
    assert not current.matches("late_orders", {"tier": "gold"}, now)
    assert not current.matches("late_orders", {"segment": "eu"}, now + timedelta(hours=2))

    assert {s.id for s in await store.list_silences()} == {current.id, future.id}
    assert await store.active_silences(now) == [current]
    assert await store.active_silences(now + timedelta(hours=1, minutes=30)) == [future]

    expired = await store.expire_silence(current.id)
    assert expired is not None and expired.id == current.id
    assert expired.expired_at is not None
    assert expired.ends_at <= datetime.now(UTC)
    assert not expired.matches("late_orders", {"segment": "eu"}, datetime.now(UTC))
    assert await store.active_silences(datetime.now(UTC)) == []
    assert await store.list_silences() == [future]
    assert {s.id for s in await store.list_silences(include_expired=True)} == {
        current.id,
        future.id,
    }
    assert await store.expire_silence(str(uuid.uuid4())) is None
    assert await store.expire_silence("not-a-uuid") is None


async def test_bad_silences_are_refused(store: AlertStore):
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="matcher"):
        await store.create_silence({}, now, now + timedelta(hours=1), "ana", "all")
    with pytest.raises(ValueError, match="after"):
        await store.create_silence({"segment": "eu"}, now, now, "ana", "empty")
    with pytest.raises(ValueError, match="timezone"):
        await store.create_silence(
            {"segment": "eu"}, datetime(2026, 3, 2), datetime(2026, 3, 3), "ana", "naive"
        )
    assert await store.list_silences(include_expired=True) == []


# -- leadership and notifications ---------------------------------------------------------


async def test_one_leader_at_a_time(store: AlertStore, other: AlertStore):
    assert not store.leading
    assert await store.try_lead()
    assert await store.try_lead()  # already leading: still true, same lock
    assert store.leading
    assert not await other.try_lead()
    assert not other.leading

    await store.release_lead()
    assert not store.leading
    assert await other.try_lead()
    assert not await store.try_lead()
    await other.release_lead()
    await other.release_lead()  # safe twice


async def test_leadership_ends_with_its_connection(store: AlertStore, other: AlertStore):
    assert await store.try_lead()
    pid = store._lead.get_server_pid()  # the dedicated connection, found without guessing
    conn = await asyncpg.connect(dsn(), timeout=10)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
    finally:
        await conn.close()
    await wait_for(lambda: not store.leading)
    assert await other.try_lead()
    assert not await store.try_lead()


async def test_listeners_hear_of_new_deliveries(store: AlertStore, other: AlertStore):
    heard = asyncio.Event()
    assert not store.listening
    await store.listen_outbox(heard.set)
    assert store.listening
    await owe(other, 1, ("pager",))
    await asyncio.wait_for(heard.wait(), 10)


async def test_listening_resumes_after_its_connection_is_lost(store: AlertStore, other: AlertStore):
    heard: list[str] = []
    await store.listen_outbox(lambda: heard.append("first"))
    pid = store._listen.get_server_pid()  # the dedicated connection, found without guessing
    conn = await asyncpg.connect(dsn(), timeout=10)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
    finally:
        await conn.close()
    await wait_for(lambda: not store.listening)

    await store.listen_outbox(lambda: heard.append("second"))
    assert store.listening
    await owe(other, 1, ("pager",))
    await wait_for(lambda: len(heard) >= 2)
    assert sorted(heard) == ["first", "second"]


# -- failures -----------------------------------------------------------------------------


async def test_an_unreachable_database_is_retriable():
    closed_port = free_port()
    with pytest.raises(StoreUnavailable) as caught:
        await AlertStore.connect(
            f"postgresql://gapwatch:gapwatch@127.0.0.1:{closed_port}/gapwatch",
            connect_timeout=5,
        )
    assert caught.value.retriable is True


@pytest.mark.parametrize("name", ["Gapwatch", "1abc", "pg_alerts", "a-b", "x" * 57, ""])
async def test_schema_names_are_validated(name: str):
    with pytest.raises(ValueError, match="schema"):
        await AlertStore.connect(dsn(), schema=name)


async def test_close_is_safe_twice(schema: str):
    opened = await AlertStore.connect(dsn(), schema=schema)
    await opened.migrate()
    await opened.try_lead()
    await opened.listen_outbox(lambda: None)
    await opened.close()
    await opened.close()
    assert not opened.leading
    with pytest.raises(asyncpg.InterfaceError):
        await opened.ping()
