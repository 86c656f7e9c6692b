"""The scoring engine: every item's promise clock, timers, rolling windows and open-promise gauges.

One `Scoring` instance owns a set of items (the scorer runs one per partition set; replay runs one
over a whole file). It is pure and single-threaded; the services feed it events and clock ticks.

Time rule (docs/scoring.md has it too):

- Each input stream (tickets, jobs, feedback) has a *watermark*: the largest event time seen on
  it. An event more than `grace_seconds` behind its stream's watermark is refused (`LateEvent`,
  dead-lettered by the scorer with reason `too_late`); any later event is applied at its own
  event time, and corrects results (a met outcome after a published breach says `corrects`).
- After each event, the timers of its stream's items fire up to that stream's watermark:
  breaches at their due times, at-risk levels at theirs. Tickets follow the tickets stream and
  jobs the jobs stream, so a consumer reading one topic ahead of another breaches nothing early;
  feedback moves no clock. The live scorer also ticks between events with each stream's
  watermark extrapolated at wall-clock rate, so an idle partition still breaches on time. Replay
  and the live scorer emit the same gap events (same ids) for the same input.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gapwatch.core.calendar import CalendarError
from gapwatch.core.catalog import AnyInputEvent
from gapwatch.core.clock import (
    ClockConfig,
    ConflictingDuplicate,
    ItemClock,
    ItemLogFull,
    SavedStateError,
)
from gapwatch.core.feedback import ItemKind
from gapwatch.core.gaps import GapData, GapEvent
from gapwatch.core.promises import PromiseKind
from gapwatch.core.topics import Stream
from gapwatch.core.validation import EventRejected, FieldError, decode_event
from gapwatch.core.windows import (
    DEFAULT_ON_TIME_SHARE,
    RollingWindows,
    SegmentKeyer,
    WindowFigures,
)

DEFAULT_SEGMENT_LABELS = ("team", "region", "priority")
STREAM_ITEM_KIND = {Stream.TICKETS: ItemKind.TICKET, Stream.JOBS: ItemKind.JOB}
ITEM_KIND_STREAM = {kind: stream for stream, kind in STREAM_ITEM_KIND.items()}


class LateEvent(Exception):
    """An event older than the grace period allows; it can never be applied."""

    retriable = False
    reason = "too_late"

    def __init__(self, event_id: str, lateness: timedelta, grace: timedelta) -> None:
        super().__init__(
            f"event {event_id!r} is {lateness.total_seconds():.0f}s behind the watermark; "
            f"the grace period is {grace.total_seconds():.0f}s"
        )


class Unscorable(Exception):
    """A valid event whose promise the clock cannot compute: a business calendar with no
    answer within its horizon, or a time sum out of `datetime`'s range. Nothing was applied."""

    retriable = False

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


def observe_gap(windows: RollingWindows, gap: GapData) -> None:
    """Count one gap event in the windows; a job completion also counts for first-time fix."""
    windows.observe(gap)
    if gap.fixed is not None and gap.corrects is None:
        windows.observe_job_completion(gap.segment, gap.outcome_at, gap.fixed, bool(gap.revisit))


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    clock: ClockConfig
    segment_labels: tuple[str, ...] = DEFAULT_SEGMENT_LABELS
    segment_cap: int = 100
    grace_seconds: float = 3600.0
    closed_retention_seconds: float = 14 * 24 * 3600.0
    on_time_share: float = DEFAULT_ON_TIME_SHARE
    # Feedback still unjoined this long (event time) after it was submitted is dropped and
    # counted: its item was never seen, or never delivered what the feedback is about.
    feedback_hold_seconds: float = 30 * 24 * 3600.0


@dataclass(slots=True)
class OpenCounts:
    open: int = 0
    at_risk: int = 0
    overdue: int = 0


@dataclass(slots=True)
class Snapshot:
    as_of: datetime
    windows: list[WindowFigures]
    open_counts: dict[tuple[tuple[tuple[str, str], ...], PromiseKind], OpenCounts]

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "windows": [w.as_dict() for w in self.windows],
            "open": [
                {
                    "segment": dict(segment),
                    "promise_kind": kind.value,
                    "open": c.open,
                    "at_risk": c.at_risk,
                    "overdue": c.overdue,
                }
                for (segment, kind), c in sorted(self.open_counts.items(), key=_open_key)
            ],
        }


def _open_key(item: tuple[tuple[tuple[tuple[str, str], ...], PromiseKind], OpenCounts]) -> Any:
    (segment, kind), _ = item
    return (segment, kind.value)


@dataclass
class Scoring:
    """Applies input events to item clocks, fires timers, and keeps the rolling windows."""

    config: ScoringConfig
    items: dict[str, ItemClock] = field(default_factory=dict)
    watermark: datetime | None = None
    windows: RollingWindows | None = None
    keyer: SegmentKeyer | None = None
    # The live scorer keeps windows in a separate, segment-partitioned stage; replay keeps both.
    track_windows: bool = True
    # Event time per stream: tickets' timers follow the tickets stream, jobs' the jobs stream, so
    # one topic read ahead of another (as a consumer of several topics does) breaches nothing.
    stream_watermarks: dict[Stream, datetime] = field(default_factory=dict)
    # Newest event time among clocks restored from a state store, per stream. A store can be
    # ahead of the offset a restarted consumer resumes from (state is saved before offsets are
    # committed), so these must not move the watermarks: the re-read events do, exactly as in
    # replay. The live scorer ticks from them only once a partition is idle.
    restored_watermarks: dict[Stream, datetime] = field(default_factory=dict)
    # Restored clocks found unreadable when a timer woke them, for the caller to report.
    unreadable: list[SavedStateError] = field(default_factory=list)
    # Restored clocks whose event time lay beyond the time bound, brought back to it (`adopt`).
    clamped: int = 0
    # Item events stamped before their item's opening, which took effect at the opening.
    before_opened: int = 0
    # Openings naming an `sla_policy` the configuration lacks: label matching chose instead.
    unknown_policies: int = 0
    # Items with feedback waiting to join, with the time its oldest was submitted.
    waiting: dict[str, datetime] = field(default_factory=dict)
    # Feedback dropped unjoined after the hold, by reason (`sweep_feedback`).
    unjoined: dict[str, int] = field(default_factory=dict)
    _timers: dict[ItemKind, list[tuple[datetime, str]]] = field(default_factory=dict)
    _scheduled: dict[str, datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.keyer is None:
            self.keyer = SegmentKeyer(self.config.segment_labels, self.config.segment_cap)

    # --- input ---------------------------------------------------------------------------------

    def process(self, event: AnyInputEvent) -> list[GapEvent]:
        """Apply one validated input event; raises LateEvent, ItemLogFull, Unscorable or
        SavedStateError (its item's restored state is unreadable) for dead letters."""
        at = event.data.occurred_at
        stream = event.stream
        grace = timedelta(seconds=self.config.grace_seconds)
        mark = self.stream_watermarks.get(stream)
        if mark is not None and at < mark - grace:
            raise LateEvent(event.id, mark - at, grace)
        clock = self.items.get(event.subject)
        if clock is None:
            clock = self.items[event.subject] = ItemClock(event.subject, self.config.clock)
        item_event = stream is not Stream.FEEDBACK
        early = clock.before_opening() if item_event else 0
        named = getattr(event.data, "sla_policy", None)
        # `resolved` holds every configured policy by name.
        if named is not None and named not in self.config.clock.resolved:
            self.unknown_policies += 1
        try:
            out = clock.apply(event)
        except CalendarError as exc:
            raise Unscorable(f"calendar_{exc.code}", str(exc)) from None
        except OverflowError as exc:
            raise Unscorable("out_of_range", f"a promised time is out of range: {exc}") from None
        if item_event:
            self.before_opened += clock.before_opening() - early
            if event.subject in self.waiting and not clock.waiting_feedback():
                del self.waiting[event.subject]  # joined
        elif clock.waiting_feedback():
            self.waiting.setdefault(event.subject, at)
        if mark is None or at > mark:
            self.stream_watermarks[stream] = at
        if self.watermark is None or at > self.watermark:
            self.watermark = at
        if self.track_windows:
            windows = self._windows(at)
            for gap in out:
                observe_gap(windows, gap.data)
        self._schedule(clock)
        return out

    def adopt(self, clock: ItemClock, not_after: datetime | None = None) -> None:
        """Take over a clock restored from a state store: hold it and schedule its timers.

        Its timers fire when its stream's watermark reaches them. The watermark itself is left
        alone: the restored clock may have seen events the consumer is about to read again, and
        firing other items' timers at that later time would breach them before their own
        (re-read) deliveries arrive. Its time is kept in `restored_watermarks` instead, brought
        back to `not_after` if it lies beyond (`clamped` counts those): a clock saved before the
        time bound existed must not hold its partition in the far future.
        """
        self.items[clock.item_id] = clock
        last = self._bounded(clock.last_item_event_at, not_after)
        stream = ITEM_KIND_STREAM.get(clock.item_kind or ItemKind.TICKET)
        if last is not None and stream is not None:
            mark = self.restored_watermarks.get(stream)
            if mark is None or last > mark:
                self.restored_watermarks[stream] = last
        self._schedule(clock)

    def _bounded(self, at: datetime | None, not_after: datetime | None) -> datetime | None:
        if at is not None and not_after is not None and at > not_after:
            self.clamped += 1
            return not_after
        return at

    def adopt_many(self, clocks: Iterable[ItemClock], not_after: datetime | None = None) -> int:
        """`adopt` for a whole restore: the same result, timers heaped once at the end."""
        items, scheduled, restored = self.items, self._scheduled, self.restored_watermarks
        pending: dict[ItemKind, list[tuple[datetime, str]]] = {}
        count = 0
        for clock in clocks:
            count += 1
            item_id = clock.item_id
            items[item_id] = clock
            kind = clock.item_kind
            last = clock.last_item_event_at
            if last is not None and not_after is not None and last > not_after:
                last = self._bounded(last, not_after)
            stream = ITEM_KIND_STREAM.get(kind or ItemKind.TICKET)
            if last is not None and stream is not None:
                mark = restored.get(stream)
                if mark is None or last > mark:
                    restored[stream] = last
            deadline = clock.next_deadline()
            if deadline is None:
                scheduled.pop(item_id, None)
            elif kind is not None and scheduled.get(item_id) != deadline:
                scheduled[item_id] = deadline
                timers = pending.get(kind)
                if timers is None:
                    timers = pending[kind] = []
                timers.append((deadline, item_id))
        for kind, timers in pending.items():
            heap = self._timers.setdefault(kind, [])
            if len(timers) * max(1, len(heap)).bit_length() < len(heap):
                for timer in timers:  # a few into a large heap: pushing is cheaper
                    heapq.heappush(heap, timer)
            else:
                heap.extend(timers)
                heapq.heapify(heap)
        return count

    def caught_up(self, stream: Stream) -> bool:
        """Whether events read since a restore have reached the restored clocks' time."""
        restored = self.restored_watermarks.get(stream)
        mark = self.stream_watermarks.get(stream)
        return restored is None or (mark is not None and mark >= restored)

    def process_and_tick(self, event: AnyInputEvent) -> list[GapEvent]:
        """Apply an event, then fire the timers its stream's event time has reached."""
        out = self.process(event)
        kind = STREAM_ITEM_KIND.get(event.stream)
        if kind is not None:
            out.extend(self.tick(self.stream_watermarks[event.stream], kind))
        return out

    def fire_passed(self) -> list[GapEvent]:
        """Fire the timers each stream's event time has already passed.

        For clocks adopted after their stream's watermark passed their deadlines (a restore that
        finishes after the first re-read events): those events could not fire timers that were
        not yet scheduled, and the next event of the stream may never come.
        """
        out: list[GapEvent] = []
        for stream, kind in STREAM_ITEM_KIND.items():
            mark = self.stream_watermarks.get(stream)
            if mark is not None:
                out.extend(self.tick(mark, kind))
        return out

    def tick(self, now: datetime, kind: ItemKind | None = None) -> list[GapEvent]:
        """Fire every timer due before `now` (of one item kind, or of all)."""
        out: list[GapEvent] = []
        for timer_kind, timers in self._timers.items():
            if kind is None or timer_kind is kind:
                out.extend(self._fire(timers, now))
        if self.windows is not None and now > self.windows.watermark and kind is None:
            self.windows.advance(now)
        return out

    def _fire(self, timers: list[tuple[datetime, str]], now: datetime) -> list[GapEvent]:
        out: list[GapEvent] = []
        while timers and timers[0][0] < now:  # passed, not reached: see `next_deadline`
            deadline, item_id = heapq.heappop(timers)
            if self._scheduled.get(item_id) != deadline:
                continue  # superseded by a later schedule
            del self._scheduled[item_id]
            clock = self.items.get(item_id)
            if clock is None:
                continue
            try:
                fired = clock.advance(now)
            except SavedStateError as exc:
                # A restored clock whose log this version cannot read: its timers stop here
                # (it stays resting, and its next event is refused with the same error), and
                # the events whose time fired it are not blamed for it.
                self.unreadable.append(exc)
                continue
            if fired and self.track_windows:
                windows = self._windows(now)
                for gap in fired:
                    observe_gap(windows, gap.data)
            out.extend(fired)
            self._schedule(clock)
        return out

    def sweep_feedback(self, now: datetime) -> list[ItemClock]:
        """Drop the feedback that has waited longer than the hold (event time `now`) to join
        its item, counting it by reason in `unjoined`; returns the clocks that changed (for
        the caller to save)."""
        limit = now - timedelta(seconds=self.config.feedback_hold_seconds)
        changed = []
        for item_id, since in list(self.waiting.items()):
            clock = self.items.get(item_id)
            if clock is None or not clock.waiting_feedback():
                del self.waiting[item_id]
            elif since <= limit:
                reason, count = clock.drop_waiting_feedback()
                self.unjoined[reason] = self.unjoined.get(reason, 0) + count
                del self.waiting[item_id]
                changed.append(clock)
        return changed

    def feedback_waiting(self) -> dict[str, int]:
        """Feedback still waiting to join, by why: its item not seen yet, or not delivered."""
        counts: dict[str, int] = {}
        for item_id in self.waiting:
            clock = self.items.get(item_id)
            if clock is not None and (n := clock.waiting_feedback()):
                reason = "item_never_seen" if clock.item_kind is None else "never_delivered"
                counts[reason] = counts.get(reason, 0) + n
        return counts

    def _windows(self, at: datetime) -> RollingWindows:
        if self.windows is None:
            assert self.keyer is not None
            self.windows = RollingWindows(self.keyer, at, on_time_share=self.config.on_time_share)
        return self.windows

    def _schedule(self, clock: ItemClock) -> None:
        deadline = clock.next_deadline()
        if deadline is None:
            self._scheduled.pop(clock.item_id, None)
            return
        if self._scheduled.get(clock.item_id) != deadline and clock.item_kind is not None:
            self._scheduled[clock.item_id] = deadline
            heapq.heappush(self._timers.setdefault(clock.item_kind, []), (deadline, clock.item_id))

    # --- output --------------------------------------------------------------------------------

    def open_counts(self) -> dict[tuple[tuple[tuple[str, str], ...], PromiseKind], OpenCounts]:
        """Open, at-risk and overdue-open promises per (segment, promise kind), right now."""
        counts: dict[tuple[tuple[tuple[str, str], ...], PromiseKind], OpenCounts] = {}
        for _ in self.count_open(counts):
            pass
        return counts

    def count_open(
        self,
        counts: dict[tuple[tuple[tuple[str, str], ...], PromiseKind], OpenCounts],
        step: int = 5000,
    ) -> Iterator[None]:
        """`open_counts` into `counts`, pausing (yielding) after every `step` items.

        It visits every item: with a million of them that is most of a second, which a caller
        on an event loop spreads out by letting other work run at each pause. Items added
        meanwhile are counted at the next call; a clock that changes meanwhile is counted in
        whatever state it is in when visited.
        """
        assert self.keyer is not None
        clocks = list(self.items.values())
        for start in range(0, len(clocks), step):
            for clock in clocks[start : start + step]:
                if clock.closed or clock.item_kind is None:
                    continue
                segment = self.keyer.key(clock.segment)
                for kind, state in clock.open_states():
                    c = counts.setdefault((segment, kind), OpenCounts())
                    if state == "overdue":
                        c.overdue += 1
                    else:
                        c.open += 1
                        if state == "at_risk":
                            c.at_risk += 1
            yield

    def snapshot(self, now: datetime) -> Snapshot:
        windows = self._windows(now)
        figures = windows.snapshot(max(now, windows.watermark))
        return Snapshot(now, figures, self.open_counts())

    def evict(self, now: datetime) -> int:
        """Forget closed items with no event for the retention period; returns how many."""
        horizon = now - timedelta(seconds=self.config.closed_retention_seconds)
        stale = [
            item_id
            for item_id, clock in self.items.items()
            if clock.closed and clock.last_event_at is not None and clock.last_event_at < horizon
        ]
        for item_id in stale:
            del self.items[item_id]
            self._scheduled.pop(item_id, None)
        return len(stale)


@dataclass
class ReplayResult:
    gap_events: list[GapEvent]
    rejected: list[tuple[int, str, str]]  # (line, reason, detail)
    scoring: Scoring


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input line replay refused: where, why, every error (validation gives several), and
    the line itself (left out of `as_dict`)."""

    line: int
    reason: str
    detail: str
    errors: tuple[FieldError, ...]
    raw: bytes = b""

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "reason": self.reason,
            "detail": self.detail,
            "errors": [{"path": e.path, "code": e.code, "reason": e.reason} for e in self.errors],
        }


def replay(
    lines: Iterable[bytes],
    config: ScoringConfig,
    until: datetime | None = None,
    not_after: datetime | None = None,
) -> ReplayResult:
    """Run the core over JSON Lines of input events, exactly as the live scorer would.

    With `not_after`, events whose own time lies after it are rejected as `from_the_future`
    (the live scorer bounds by its clock; `gapwatch replay` by `--until`, or its clock).
    Keeps every gap event: for inputs of any size, use `replay_stream`.
    """
    scoring = Scoring(config)
    gaps: list[GapEvent] = []
    rejected: list[tuple[int, str, str]] = []
    for out in replay_stream(numbered(lines), scoring, until, not_after):
        if isinstance(out, Rejected):
            rejected.append((out.line, out.reason, out.detail))
        else:
            gaps.append(out)
    return ReplayResult(gaps, rejected, scoring)


def replay_stream(
    lines: Iterable[tuple[int, bytes]],
    scoring: Scoring,
    until: datetime | None = None,
    not_after: datetime | None = None,
    rest_after: timedelta | None = None,
    *,
    advance_windows: bool = False,
    windows_from: datetime | None = None,
) -> Iterator[GapEvent | Rejected]:
    """`replay`, streaming: yields each gap event as it is produced and each refused line, and
    keeps neither. `lines` are (line number, bytes), in the order to apply them (`numbered`
    gives the file's order); once the iterator is exhausted `scoring` holds the final state.

    With `rest_after`, a clock untouched (no input or gap event) for that long of event time
    is put to rest, as the live scorer's state store holds it: its saved bytes and a summary,
    re-folded if it is needed again. The gap events are the same; the memory an idle item
    takes is a fraction of an active one's.

    With `advance_windows`, the rolling windows follow the event time (hourly) as the live
    scorer's do, so buckets older than 7 days are dropped instead of kept for the whole input.
    The final windows are the same; a gap event more than 7 days older than the event time
    reached is then left out of the windows, as live. With `windows_from`, the windows count
    only the gap events produced once the event time has reached it: a replay that wants the
    windows as of `until` needs those of the last 7 days (and the grace period, and a 2-hour
    bucket) before it, and skips the windows' work for the rest of history.
    """
    if windows_from is not None:
        scoring.track_windows = False
    touched: OrderedDict[str, None] = OrderedDict()  # least recently touched first
    rested_at = None
    for line_no, line in lines:
        try:
            event = decode_event(line, not_after)
            out = scoring.process_and_tick(event)
        except EventRejected as exc:
            yield Rejected(line_no, exc.rejection.value, str(exc), tuple(exc.errors), line)
        except LateEvent as exc:
            yield _rejected(line_no, LateEvent.reason, exc, line)
        except ItemLogFull as exc:
            yield _rejected(line_no, "item_log_full", exc, line)
        except (Unscorable, ConflictingDuplicate) as exc:
            yield _rejected(line_no, exc.reason, exc, line)
        else:
            yield from out
            if rest_after is None and not advance_windows and windows_from is None:
                continue
            if rest_after is not None:
                touched[event.subject] = None
                touched.move_to_end(event.subject)
                for gap in out:
                    touched[gap.subject] = None
                    touched.move_to_end(gap.subject)
            mark = scoring.watermark
            if windows_from is not None and mark is not None and mark >= windows_from:
                scoring.track_windows, windows_from = True, None
            if mark is not None and (rested_at is None or mark - rested_at >= _REST_EVERY):
                rested_at = mark
                if rest_after is not None:
                    _rest_idle(scoring, touched, mark - rest_after)
                if advance_windows and scoring.windows is not None:
                    scoring.windows.advance(mark)
    if windows_from is not None:  # never reached
        scoring.track_windows = True
    if until is not None:
        yield from scoring.tick(until)
    end = until or scoring.watermark
    if end is not None:
        scoring.sweep_feedback(end)


_REST_EVERY = timedelta(hours=1)


def _rest_idle(scoring: Scoring, touched: OrderedDict[str, None], before: datetime) -> None:
    """Put to rest the clocks in `touched` (least recently touched first) with no event since
    `before`, and forget them there. One with events stamped before its opening stays awake:
    `Scoring.process` counts those from the clock's log, which a resting clock does not hold."""
    config = scoring.config.clock
    items = scoring.items
    while touched:
        item_id = next(iter(touched))
        clock = items.get(item_id)
        if clock is not None and not clock.resting:
            last = clock.last_event_at
            if last is not None and last >= before:
                break
            if not clock.before_opening():
                items[item_id] = ItemClock.restore(item_id, config, clock.to_bytes())
        touched.popitem(last=False)


def _rejected(line_no: int, reason: str, exc: Exception, line: bytes) -> Rejected:
    return Rejected(line_no, reason, str(exc), (FieldError(0, "", reason, str(exc)),), line)


def numbered(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, line) of each line that is not blank."""
    for line_no, line in enumerate(lines, start=1):
        if line.strip():
            yield line_no, line


__all__ = [
    "LateEvent",
    "OpenCounts",
    "Rejected",
    "ReplayResult",
    "Scoring",
    "ScoringConfig",
    "Snapshot",
    "Unscorable",
    "numbered",
    "replay",
    "replay_stream",
]
