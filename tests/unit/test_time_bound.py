"""The time bound (issue 26) and the contracts' time range (issue 27 #2), on the pure core."""

from __future__ import annotations

import copy
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gapwatch.config import load_policies
from gapwatch.core.catalog import MODEL_BY_TYPE
from gapwatch.core.clock import ClockConfig, ConflictingDuplicate, ItemClock
from gapwatch.core.examples import EXAMPLES
from gapwatch.core.promises import MAX_PROMISE_AHEAD
from gapwatch.core.scoring import LateEvent, Scoring, ScoringConfig, replay
from gapwatch.core.timebound import occurrence_field
from gapwatch.core.topics import Stream
from gapwatch.core.validation import (
    EventRejected,
    Rejection,
    decode_event,
    validate_batch,
    validate_event,
)
from gapwatch.kafka.deadletter import COPY_LIMIT, dead_letter_key, dead_letter_record

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "deploy" / "config" / "policies.yaml"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
BOUND = NOW + timedelta(minutes=5)


@pytest.fixture(scope="module")
def config() -> ScoringConfig:
    return ScoringConfig(ClockConfig.from_policies(load_policies(POLICIES)), grace_seconds=600)


def opened(item: str, at: datetime, due: datetime | None = None, event_id: str = "") -> Any:
    doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    doc.update(id=event_id or f"open-{item}", subject=item, time=at.isoformat())
    due = due or at + timedelta(minutes=30)
    doc["data"].update(
        ticket_id=item,
        opened_at=at.isoformat(),
        promises=[{"kind": "first_response", "due_at": due.isoformat()}],
    )
    doc["data"].pop("sla_policy")
    return doc


def replied(item: str, at: datetime) -> Any:
    doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.replied.v1"])
    doc.update(id=f"reply-{item}-{at.timestamp()}", subject=item, time=at.isoformat())
    doc["data"].update(ticket_id=item, replied_at=at.isoformat())
    return doc


# --- the bound at validation -------------------------------------------------------------------


def test_an_event_from_beyond_the_bound_is_refused_naming_each_field():
    doc = opened("T-1", datetime(3000, 1, 1, tzinfo=UTC))
    with pytest.raises(EventRejected) as caught:
        validate_event(doc, not_after=BOUND)
    assert caught.value.rejection is Rejection.FROM_THE_FUTURE
    assert [(e.path, e.code) for e in caught.value.errors] == [
        ("time", "from_the_future"),
        ("data.opened_at", "from_the_future"),
    ]
    assert BOUND.isoformat() in caught.value.errors[0].reason
    # Without a bound (a consumer of the contracts alone) it is a valid event.
    assert validate_event(doc).data.opened_at.year == 3000


def test_the_bound_is_inclusive_and_the_past_is_not_bounded():
    assert validate_event(opened("T-1", BOUND), not_after=BOUND)
    assert validate_event(opened("T-2", datetime(1901, 1, 1, tzinfo=UTC)), not_after=BOUND)
    with pytest.raises(EventRejected):
        validate_event(opened("T-3", BOUND + timedelta(microseconds=1)), not_after=BOUND)


def test_a_batch_with_one_event_from_the_future_names_it_by_index():
    batch = [opened("T-1", NOW), opened("T-2", datetime(2027, 1, 1, tzinfo=UTC))]
    result = validate_batch(batch, not_after=BOUND)
    assert [(e.index, e.path) for e in result.errors] == [(1, "time"), (1, "data.opened_at")]
    assert result.rejections == {Rejection.FROM_THE_FUTURE: 1}
    assert validate_batch(batch).errors == []


def test_every_event_type_names_the_field_its_occurred_at_reads():
    for event_type, model in MODEL_BY_TYPE.items():
        event = model.model_validate(EXAMPLES[event_type])
        field = occurrence_field(type(event.data))
        assert getattr(event.data, field) == event.data.occurred_at, event_type


# --- the contracts' time range ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC: no such datetime
        "9999-12-31T23:59:59-12:00",  # after year 9999 in UTC
        "1899-12-31T23:59:59Z",
        "9000-01-01T00:00:00Z",
    ],
)
@pytest.mark.parametrize("path", ["time", "data.opened_at", "data.promises[0].due_at"])
def test_out_of_range_timestamps_are_schema_invalid_with_their_path(value: str, path: str):
    doc = opened("T-1", NOW)
    if path == "time":
        doc["time"] = value
    elif path == "data.opened_at":
        doc["data"]["opened_at"] = value
    else:
        doc["data"]["promises"][0]["due_at"] = value
    with pytest.raises(EventRejected) as caught:
        decode_event(orjson.dumps(doc))
    assert caught.value.rejection is Rejection.SCHEMA_INVALID
    assert (path, "timestamp_range") in [(e.path, e.code) for e in caught.value.errors]
    batch = validate_batch([doc])  # the batch path (ingest's) gives the same, with no crash
    assert (0, path, "timestamp_range") in [(e.index, e.path, e.code) for e in batch.errors]


def test_any_rfc3339_offset_is_accepted_and_normalised():
    doc = opened("T-1", NOW)
    doc["data"]["opened_at"] = "2026-03-03T11:59:00+23:59"
    event = validate_event(doc)
    assert event.data.opened_at == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("event_type", "path"),
    [
        ("gapwatch.ticket.opened.v1", "data.promises[0].due_at"),
        ("gapwatch.ticket.promise_changed.v1", "data.due_at"),
        ("gapwatch.job.scheduled.v1", "data.window.end"),
        ("gapwatch.job.rescheduled.v1", "data.window.end"),
    ],
)
def test_a_promise_beyond_the_horizon_is_refused_at_validation(event_type: str, path: str):
    doc = copy.deepcopy(EXAMPLES[event_type])
    event = validate_event(doc)
    far = (event.data.occurred_at + MAX_PROMISE_AHEAD + timedelta(days=1)).isoformat()
    if path == "data.promises[0].due_at":
        doc["data"]["promises"][0]["due_at"] = far
    elif path == "data.due_at":
        doc["data"]["due_at"] = far
    else:
        doc["data"]["window"]["end"] = far
    with pytest.raises(EventRejected) as caught:
        validate_event(doc)
    assert caught.value.rejection is Rejection.SCHEMA_INVALID
    assert [(e.path, e.code) for e in caught.value.errors] == [(path, "promise_horizon")]


# --- the watermarks never pass the bound ------------------------------------------------------

OFFSETS = st.one_of(
    st.integers(min_value=-7200, max_value=7200),  # around now, seconds
    st.integers(min_value=-(10**9), max_value=2 * 10**10).map(lambda s: s * 1.0),  # anywhere
    st.sampled_from([300, 301, 86400, 365 * 86400, 10**10]),  # just beyond, and far beyond
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 5), OFFSETS, st.booleans()), min_size=1, max_size=30))
def test_no_event_moves_a_watermark_beyond_the_bound(config: ScoringConfig, steps: Any) -> None:
    """Arbitrary event times, through the core as the scorer runs it: every watermark stays
    within the bound, and the events within it give exactly the outcomes they give alone (no
    valid event is refused as too late because of one beyond the bound)."""
    lines: list[bytes] = []
    for n, (item, offset, is_reply) in enumerate(steps):
        try:
            at = NOW + timedelta(seconds=offset)
        except OverflowError:
            continue
        name = f"T-{item}"
        doc = replied(name, at) if is_reply else opened(name, at, event_id=f"open-{n}")
        if is_reply:
            doc["id"] = f"reply-{n}"
        lines.append(orjson.dumps(doc))

    scoring = Scoring(config)
    kept: list[bytes] = []
    for line in lines:
        try:
            event = decode_event(line, BOUND)
        except EventRejected as exc:
            # Out of the contracts' range, or beyond the bound: nothing moved.
            assert exc.rejection in (Rejection.FROM_THE_FUTURE, Rejection.SCHEMA_INVALID)
            continue
        kept.append(line)
        try:
            scoring.process_and_tick(event)
        except LateEvent:
            pass
        for mark in scoring.stream_watermarks.values():
            assert mark <= BOUND
        assert scoring.watermark is None or scoring.watermark <= BOUND

    with_all = replay(lines, config, not_after=BOUND)
    alone = replay(kept, config)
    assert [e.id for e in with_all.gap_events] == [e.id for e in alone.gap_events]
    refused = {"from_the_future", "schema_invalid"}
    assert [r[1] for r in with_all.rejected if r[1] not in refused] == [
        r[1] for r in alone.rejected
    ]


def test_a_restored_clock_beyond_the_bound_is_brought_back(config: ScoringConfig):
    """A clock saved before the bound existed (its item opened in the year 3000) must not hold
    its partition's restored event time there: clamped, counted, and the partition's other
    items breach on time once it is idle."""
    far = ItemClock("T-far", config.clock)
    far.apply(validate_event(opened("T-far", datetime(3000, 1, 1, tzinfo=UTC))))
    near = ItemClock("T-near", config.clock)
    near.apply(validate_event(opened("T-near", NOW, NOW + timedelta(minutes=2))))
    saved = {c.item_id: c.to_bytes() for c in (far, near)}

    scoring = Scoring(config, track_windows=False)
    restored = [ItemClock.restore(i, config.clock, b, []) for i, b in saved.items()]
    assert scoring.adopt_many(restored, not_after=BOUND) == 2
    assert scoring.clamped == 1
    assert scoring.restored_watermarks[Stream.TICKETS] == BOUND
    # Without the clamp the restored time would be the year 3000.
    unbounded = Scoring(config, track_windows=False)
    unbounded.adopt_many(ItemClock.restore(i, config.clock, b, []) for i, b in saved.items())
    assert unbounded.restored_watermarks[Stream.TICKETS].year == 3000
    # An event of the partition within the bound catches it up, and timers fire on time.
    scoring.process(validate_event(opened("T-next", BOUND)))
    assert scoring.caught_up(Stream.TICKETS)
    fired = scoring.tick(NOW + timedelta(minutes=2, microseconds=1))
    assert ("T-near", "breached") in [(e.subject, e.data.outcome.value) for e in fired]

    one = Scoring(config, track_windows=False)
    one.adopt(ItemClock.restore("T-far", config.clock, saved["T-far"], []), BOUND)
    assert one.clamped == 1 and one.restored_watermarks[Stream.TICKETS] == BOUND


# --- conflicting duplicates --------------------------------------------------------------------


def test_the_same_id_with_other_content_is_refused_and_the_same_content_is_not(
    config: ScoringConfig,
):
    first = opened("T-1", NOW, event_id="evt-1")
    again = copy.deepcopy(first)
    other = copy.deepcopy(first)
    other["data"]["team"] = "someone-else"
    scoring = Scoring(config)
    scoring.process(validate_event(first))
    assert scoring.process(validate_event(again)) == []  # at-least-once delivery: ignored
    with pytest.raises(ConflictingDuplicate) as caught:
        scoring.process(validate_event(other))
    assert str(caught.value).count("sha256") == 2
    result = replay([orjson.dumps(d) for d in (first, again, other)], config)
    assert [(line, reason) for line, reason, _ in result.rejected] == [(3, "conflicting_duplicate")]


# --- dead letters and replay -------------------------------------------------------------------


def test_a_dead_letter_copies_what_fits_and_names_the_rest_by_digest():
    small = orjson.loads(
        dead_letter_record(
            "r", "d", service="s", topic="t", partition=0, offset=1, key=b"k", value=b"v"
        )
    )
    assert small["copied"] is True and small["value_b64"] == "dg=="
    huge = b"x" * (COPY_LIMIT + 1)
    letter = dead_letter_record(
        "r", "d" * 10**6, service="s", topic="t", partition=0, offset=1, key=huge, value=huge
    )
    assert len(letter) < 8 * 1024
    parsed = orjson.loads(letter)
    assert parsed["copied"] is False and parsed["value_size"] == len(huge)
    assert "value_b64" not in parsed and len(parsed["detail"]) == 2000
    assert len(dead_letter_key(huge)) <= 256 and dead_letter_key(b"T-1") == b"T-1"


def test_replay_rejects_events_beyond_until_plus_the_skew(tmp_path: Path):
    path = tmp_path / "in.jsonl"
    lines = [opened("T-1", NOW), opened("T-2", NOW + timedelta(days=1))]
    path.write_bytes(b"\n".join(orjson.dumps(d) for d in lines) + b"\n")
    out = tmp_path / "out.json"
    until = (NOW + timedelta(hours=1)).isoformat()
    command = [sys.executable, "-m", "gapwatch", "replay", str(path), "--until", until]
    run = subprocess.run(
        [*command, "-o", str(tmp_path / "gaps.jsonl"), "--summary", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1, run.stderr  # like `gapwatch ingest`: a line was rejected
    rejected = orjson.loads(out.read_bytes())["rejected"]["listed"]
    assert [(r["line"], r["reason"]) for r in rejected] == [(2, "from_the_future")]


@pytest.mark.parametrize("until", ["garbage", "2026-03-02T12:00:00"])
def test_replay_checks_until_before_any_work(tmp_path: Path, until: str):
    run = subprocess.run(
        [sys.executable, "-m", "gapwatch", "replay", str(tmp_path / "none"), "--until", until],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert "expected e.g. 2026-03-31T00:00:00+00:00" in run.stderr
    assert "Traceback" not in run.stderr


def test_dead_letter_headers_carry_the_original_headers_and_where_it_came_from():
    from gapwatch.kafka.deadletter import HEADERS_LIMIT, dead_letter

    original = [("traceparent", b"00-abc-def-01"), ("empty", None)]
    letter = dead_letter(
        "schema_invalid",
        "data.team: too long",
        service="scorer",
        topic="gapwatch.tickets.v1",
        partition=3,
        offset=41,
        key=b"T-1",
        value=b"{}",
        headers=original,
    )
    assert letter.key == b"T-1" and orjson.loads(letter.value)["offset"] == 41
    assert letter.headers == [
        ("traceparent", b"00-abc-def-01"),
        ("empty", b""),
        ("__connect.errors.topic", b"gapwatch.tickets.v1"),
        ("__connect.errors.partition", b"3"),
        ("__connect.errors.offset", b"41"),
        ("__connect.errors.exception.class.name", b"schema_invalid"),
        ("__connect.errors.exception.message", b"data.team: too long"),
    ]
    # Headers beyond the bound are counted, not copied: the letter still fits on its topic.
    huge = [(f"h{i}", b"x" * 1000) for i in range(200)]
    bounded = dead_letter(
        "x",
        "y",
        service="s",
        topic="t",
        partition=0,
        offset=0,
        key=None,
        value=None,
        headers=huge,
    )
    kept = [h for h in bounded.headers if h[0].startswith("h")]
    assert sum(len(n) + len(v) for n, v in kept) <= HEADERS_LIMIT < 200 * 1002
    assert ("gapwatch.dlq.headers.dropped", str(200 - len(kept)).encode()) in bounded.headers
