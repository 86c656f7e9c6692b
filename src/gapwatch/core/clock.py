"""Promise clocks: every promise of one item, its due time, pauses, and the outcomes it yields.

An `ItemClock` is a pure fold over the item's input events and a clock reading `now`:

- Events are applied in event-time order (ties: opened/scheduled first, closed last, then id).
  An event older than the latest one applied is inserted in its place and the item is re-folded
  from its log, so the final state depends only on the set of events and `now`, never on their
  arrival order. Gap events are identified by what happened (uuid5), and an id already emitted is
  never emitted again; a late event that turns an emitted breach into a met promise emits the met
  outcome with `corrects` naming the breach.
- Before an event at time t is applied, the clock advances to t: every promise due at or before t
  with nothing delivered breaches *at its due time*, and at-risk levels fire at their instants.
  `advance(now)` does the same without an event (idle items breach on time).
- Clocks start at the next business instant of the promise's calendar. Policy promises pause
  while the ticket's status is a pause status: on resume the due time moves out by the business
  time spent paused, and no timer fires while paused. Explicit promises (an absolute due time on
  the event, or a re-promise) do not pause.
- A reply by a configured author with a configured visibility (default: agent, public) delivers
  the open first and next response; a customer reply, once the first response is delivered,
  starts a next-response promise. `resolved` delivers the resolution (and any open response
  promise); `reopened` starts a new cycle with a new resolution promise; `closed` and a job's
  `cancelled` cancel what is still open.
- Jobs: the arrival promise is the window [start, end]: early before start, on time inside, late
  after end (the gap is measured from the nearest edge, 0 inside). `completed` delivers the
  completion promise (and the arrival, if no `arrived` came). A re-promise (promise_changed,
  rescheduled) keeps the original due time beside the current one; a breach already emitted
  stands, and the gap of a later delivery is measured against the due time that was breached.
- Feedback is joined with the item's headline promise (tickets: resolution, else first response;
  jobs: arrival). Feedback that arrives before the item, or before that promise has an outcome, is
  held and emitted once the outcome is known.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from gapwatch.core.calendar import BusinessCalendar
from gapwatch.core.catalog import INPUT_EVENT_MODELS, AnyInputEvent
from gapwatch.core.feedback import FeedbackSubmitted, ItemKind
from gapwatch.core.gaps import (
    ArrivalOutcome,
    FeedbackJoin,
    GapData,
    GapEvent,
    Outcome,
    VersionRef,
    make_gap_event,
)
from gapwatch.core.jobs import (
    JobArrived,
    JobCancelled,
    JobCompleted,
    JobDispatched,
    JobRescheduled,
    JobScheduled,
)
from gapwatch.core.policies import Policy, PolicySet, ResolvedPromise, Target
from gapwatch.core.promise_states import PromiseState, PromiseStateData
from gapwatch.core.promises import PromiseKind
from gapwatch.core.tickets import (
    TicketClosed,
    TicketOpened,
    TicketPromiseChanged,
    TicketReopened,
    TicketReplied,
    TicketResolved,
    TicketStatusChanged,
)

_DATA_OF_TYPE: dict[str, type[Any]] = {
    model.event_type: model.model_fields["data"].annotation  # type: ignore[misc]
    for model in INPUT_EVENT_MODELS
}
_TYPE_OF_DATA: dict[type[Any], str] = {data: name for name, data in _DATA_OF_TYPE.items()}

# Tie-break for events with the same timestamp: creation first, closing last.
_RANK: dict[type[Any], int] = {
    TicketOpened: 0,
    JobScheduled: 0,
    TicketStatusChanged: 1,
    TicketPromiseChanged: 1,
    JobRescheduled: 1,
    JobDispatched: 1,
    TicketReplied: 2,
    JobArrived: 2,
    TicketResolved: 3,
    JobCompleted: 3,
    FeedbackSubmitted: 4,
    TicketReopened: 5,
    TicketClosed: 6,
    JobCancelled: 6,
}
_FEEDBACK_RANK = _RANK[FeedbackSubmitted]
_OPENING_RANK = _RANK[TicketOpened]
EXPLICIT = VersionRef(name="explicit", version=0)


SEGMENT_INTERN_LIMIT = 100_000
SAVED_FORMAT = 2
"""Version of `ItemClock.to_dict`; bump it (and teach `from_bytes` the old one) on any change.

Format 2 is format 1 plus a `summary` (see `ItemClock.restore`); `from_bytes` reads both."""
READABLE_FORMATS = (1, 2)
OPEN_STATES = ("open", "at_risk", "overdue")
_FINAL_OUTCOMES = frozenset((Outcome.MET, Outcome.DELIVERED_LATE, Outcome.CANCELLED))
"""How an item's promise counts in the open gauges: open, open and at risk, breached and open."""


class SavedStateError(Exception):
    """A saved clock this version cannot read; the item's history is not usable as it is."""

    retriable = False

    def __init__(self, item_id: str, reason: str) -> None:
        super().__init__(f"saved state of item {item_id!r} is unreadable: {reason}")
        self.item_id = item_id


_UNREADABLE = (KeyError, IndexError, TypeError, ValueError)
"""What folding a saved log that this version cannot read raises (pydantic's errors included)."""


class ItemLogFull(Exception):
    """An item has more events than the configured log limit; the event must be dead-lettered."""

    retriable = False

    def __init__(self, item_id: str, limit: int) -> None:
        super().__init__(f"item {item_id!r} already has {limit} events (log limit)")
        self.item_id = item_id


class ConflictingDuplicate(Exception):
    """An event whose id the item already holds, with other content: the first one stays, and
    this one must be dead-lettered (a sender reusing ids would otherwise lose events unseen)."""

    retriable = False
    reason = "conflicting_duplicate"

    def __init__(self, item_id: str, event_id: str, held: bytes, offered: bytes) -> None:
        super().__init__(
            f"item {item_id!r} already holds event id {event_id!r} with other content: "
            f"held sha256 {hashlib.sha256(held).hexdigest()}, "
            f"this one sha256 {hashlib.sha256(offered).hexdigest()}"
        )


class Status(StrEnum):
    OPEN = "open"
    MET = "met"
    BREACHED = "breached"
    DELIVERED_LATE = "delivered_late"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class ClockConfig:
    """What the clocks need from configuration: policies, calendars and the reply rule."""

    policies: PolicySet
    calendars: dict[str, BusinessCalendar]
    reply_authors: frozenset[str]
    reply_visibilities: frozenset[str]
    log_limit: int = 512
    # Names the configuration that saved summaries were computed under (see `ItemClock.restore`).
    fingerprint: str = ""

    resolved: dict[str, dict[PromiseKind, ResolvedPromise]] = field(default_factory=dict)
    _refs: dict[str, VersionRef] = field(default_factory=dict)
    _pauses: dict[str, frozenset[str]] = field(default_factory=dict)
    _segments: dict[tuple[tuple[str, str], ...], dict[str, str]] = field(default_factory=dict)
    _open_states: dict[tuple[Any, ...], tuple[tuple[PromiseKind, str], ...]] = field(
        default_factory=dict
    )

    @classmethod
    def from_policies(cls, policies: PolicySet, log_limit: int = 512) -> ClockConfig:
        replies = policies.defaults.replies
        calendars = policies.calendar_objects()
        # Holiday data is configuration too: a newer `holidays` package can close other days.
        holiday_data = sorted({d for c in calendars.values() if (d := c.holiday_data) is not None})
        return cls(
            policies=policies,
            calendars=calendars,
            reply_authors=frozenset(replies.authors),
            reply_visibilities=frozenset(replies.visibilities),
            log_limit=log_limit,
            fingerprint=hashlib.sha256(
                f"{log_limit}:{holiday_data}:{policies.model_dump_json()}".encode()
            ).hexdigest()[:16],
            # Resolved once: every opened item would otherwise rebuild its policy's promises.
            resolved={p.name: {r.kind: r for r in policies.resolve(p)} for p in policies.policies},
        )

    def shared_segment(self, segment: dict[str, str]) -> dict[str, str]:
        """One dict per distinct label set: items of a segment share it (never mutated)."""
        key = tuple(segment.items())
        shared = self._segments.get(key)
        if shared is None:
            if len(self._segments) >= SEGMENT_INTERN_LIMIT:
                return segment  # free-form labels gone wild: stop interning, stay correct
            shared = self._segments[key] = segment
        return shared

    def shared_open_states(self, states: list[list[str]]) -> tuple[tuple[PromiseKind, str], ...]:
        """Saved open states as shared tuples: most items are in one of a handful of states."""
        key = tuple((kind, state) for kind, state in states)
        shared = self._open_states.get(key)
        if shared is None:
            shared = tuple((PromiseKind(kind), state) for kind, state in key)
            if any(state not in OPEN_STATES for _, state in shared):
                raise ValueError(f"unknown open state in {states!r}")
            if len(self._open_states) < SEGMENT_INTERN_LIMIT:
                self._open_states[key] = shared
        return shared

    def policy_ref(self, policy: Policy) -> VersionRef:
        # Shared, not built per item: an open promise should cost bytes, not objects.
        ref = self._refs.get(policy.name)
        if ref is None:
            ref = self._refs[policy.name] = VersionRef(
                name=policy.name, version=self.policies.version
            )
        return ref

    def pause_statuses(self, policy: Policy | None) -> frozenset[str]:
        key = policy.name if policy is not None else ""
        statuses = self._pauses.get(key)
        if statuses is None:
            statuses = self._pauses[key] = self.policies.pause_statuses(policy)
        return statuses

    def rules(self, policy: Policy) -> dict[PromiseKind, ResolvedPromise]:
        rules = self.resolved.get(policy.name)
        if rules is None:
            rules = {r.kind: r for r in self.policies.resolve(policy)}
        return rules


@dataclass(slots=True)
class Promise:
    kind: PromiseKind
    cycle: int
    round: int
    started_at: datetime
    due_at: datetime
    original_due_at: datetime
    calendar: str
    policy: VersionRef
    pausable: bool
    at_risk: tuple[float, ...]
    caused_by: str
    window_start: datetime | None = None
    at_risk_fired: int = 0
    next_at_risk_at: datetime | None = None
    status: Status = Status.OPEN
    delivered_at: datetime | None = None
    breach_id: str | None = None
    gap_seconds: float | None = None
    arrival: ArrivalOutcome | None = None


@dataclass(slots=True)
class _Entry:
    """One input event in the item's log, with its sort key.

    The event is kept in its saved form only (`saved`, the JSON of `[id, type, data]`, a few
    hundred bytes): the decoded model (over a kilobyte) is held while the event is being applied
    and decoded again only when the log is re-folded (an out-of-order event, a restore).
    """

    at: datetime
    rank: int
    event_id: str
    saved: bytes
    data: Any = None

    @classmethod
    def of(cls, event_id: str, data: Any) -> _Entry:
        saved = b"".join(
            (
                b"[",
                orjson.dumps(event_id),
                b',"',
                _TYPE_OF_DATA[type(data)].encode(),
                b'",',
                data.__pydantic_serializer__.to_json(data),
                b"]",
            )
        )
        return cls(data.occurred_at, _RANK[type(data)], event_id, saved, data)

    def key(self) -> tuple[datetime, int, str]:
        return (self.at, self.rank, self.event_id)

    @property
    def is_feedback(self) -> bool:
        return self.rank == _FEEDBACK_RANK

    def model(self) -> Any:
        """The decoded event data (decoded again from the saved form when it was let go)."""
        if self.data is None:
            _, event_type, body = orjson.loads(self.saved)
            self.data = _DATA_OF_TYPE[event_type].model_validate(body)
        return self.data


@dataclass(slots=True)
class _State:
    """Everything derived from the log; rebuilt from scratch on a re-fold."""

    item_kind: ItemKind | None = None
    segment: dict[str, str] = field(default_factory=dict)
    policy: Policy | None = None
    pause_statuses: frozenset[str] = frozenset()
    status: str = ""
    paused_since: datetime | None = None
    cycle: int = 0
    rounds: dict[PromiseKind, int] = field(default_factory=dict)
    promises: dict[PromiseKind, Promise] = field(default_factory=dict)
    # Made on first use: most items never re-promise nor wait with feedback (memory per item).
    history: list[Promise] | None = None
    pending_feedback: list[tuple[str, FeedbackSubmitted]] | None = None
    # Item events stamped before the item's opening, applied at the opening (`_apply_one`).
    early: list[_Entry] | None = None
    closed: bool = False
    clock: datetime | None = None


@dataclass(slots=True)
class _Summary:
    """What a resting clock answers without its log: saved with the log, read on a restore."""

    item_kind: ItemKind | None
    closed: bool
    segment: dict[str, str]
    last_event_at: datetime | None
    last_item_event_at: datetime | None
    next_deadline: datetime | None
    open_states: tuple[tuple[PromiseKind, str], ...]
    # The latest `advance` that found nothing due (the folded clock would have moved to it).
    advanced_to: datetime | None = None

    @classmethod
    def of(cls, saved: list[Any], config: ClockConfig) -> _Summary:
        _, kind, closed, segment, last, last_item, deadline, states = saved
        last_at = _time(last)
        return cls(
            _ITEM_KINDS[kind] if kind is not None else None,
            bool(closed),
            config.shared_segment(segment),
            last_at,
            last_at if last_item == last else _time(last_item),
            _time(deadline),
            config.shared_open_states(states),
        )


_ITEM_KINDS = {kind.value: kind for kind in ItemKind}
_SUMMARY_KEY = b',"summary":'


def _saved_summary(raw: bytes) -> Any:
    """The summary of a format-2 save, parsed alone (it is the last key), or None.

    The bytes `,"summary":` cannot occur inside a JSON string (its quotes would be escaped),
    so the last occurrence is the top-level key the save ends with.
    """
    if not raw.startswith(b'{"format":2,') or not raw.endswith(b"}"):
        return None
    at = raw.rfind(_SUMMARY_KEY)
    if at < 0:
        return None
    try:
        return orjson.loads(raw[at + len(_SUMMARY_KEY) : -1])
    except orjson.JSONDecodeError:
        return None


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


class ItemClock:
    """The promise clock of one ticket or job (see the module docstring for the rules).

    A clock restored with `restore` rests: it holds its saved bytes and answers what the
    scoring engine asks of every item (kind, segment, next deadline, open states, last event
    times) from the saved summary. Anything else (an event, a timer, its promises) re-folds it
    from the saved log first, exactly as `from_bytes` does.
    """

    __slots__ = ("_config", "_emitted", "_log", "_resting", "_saved", "_state", "item_id")

    def __init__(self, item_id: str, config: ClockConfig) -> None:
        self.item_id = item_id
        self._config = config
        self._log: list[_Entry] = []
        self._state = _State()
        # Ids of gap events already published, with what they were about (for corrections);
        # made with the first one (memory per item).
        self._emitted: dict[str, tuple[Outcome, PromiseKind, int, int]] | None = None
        self._saved: bytes | None = None  # set while resting
        self._resting: _Summary | None = None

    # --- public API ------------------------------------------------------------------------

    @property
    def resting(self) -> bool:
        """Whether the clock still answers from its saved summary (not re-folded yet)."""
        return self._resting is not None

    @property
    def item_kind(self) -> ItemKind | None:
        if self._resting is not None:
            return self._resting.item_kind
        return self._state.item_kind

    @property
    def closed(self) -> bool:
        if self._resting is not None:
            return self._resting.closed
        return self._state.closed

    @property
    def open_promises(self) -> list[Promise]:
        self._wake()
        return [p for p in self._state.promises.values() if p.status is Status.OPEN]

    @property
    def promises(self) -> list[Promise]:
        """Every promise the item has had, current ones last."""
        self._wake()
        return [*(self._state.history or ()), *self._state.promises.values()]

    def open_states(self) -> list[tuple[PromiseKind, str]]:
        """Each promise that counts in the open gauges, with how (one of `OPEN_STATES`)."""
        if self._resting is not None:
            return list(self._resting.open_states)
        states = []
        for promise in [*(self._state.history or ()), *self._state.promises.values()]:
            if promise.status is Status.OPEN:
                states.append((promise.kind, "at_risk" if promise.at_risk_fired else "open"))
            elif promise.status is Status.BREACHED:
                states.append((promise.kind, "overdue"))
        return states

    def promise_states(
        self, at: datetime, closed: Iterable[tuple[PromiseKind, int, int]] = ()
    ) -> list[PromiseStateData]:
        """Each promise's state as of `at` (the time of the step just taken): every promise not
        closed, and of the closed ones those named in `closed` (kind, cycle, round): the ones
        that step closed, so that a closed promise is stated once."""
        self._wake()
        state = self._state
        if state.item_kind is None:
            return []
        closed_now = set(closed)
        paused = state.paused_since is not None
        out: list[PromiseStateData] = []
        for promise in [*(state.history or ()), *state.promises.values()]:
            status = promise.status
            outcome = None
            if status is Status.OPEN:
                if paused and promise.pausable:
                    current = PromiseState.PAUSED
                elif promise.at_risk_fired:
                    current = PromiseState.AT_RISK
                else:
                    current = PromiseState.OPEN
            elif status is Status.BREACHED:
                current = PromiseState.OVERDUE
            elif (promise.kind, promise.cycle, promise.round) in closed_now:
                current, outcome = PromiseState.CLOSED, Outcome(status.value)
            else:
                continue
            cal = self._config.calendars[promise.calendar]
            left = over = left_business = over_business = None
            if current is PromiseState.OVERDUE:
                over = (at - promise.due_at).total_seconds()
                over_business = cal.business_seconds_between(promise.due_at, at)
            elif current is not PromiseState.CLOSED:
                left = (promise.due_at - at).total_seconds()
                left_business = cal.business_seconds_between(at, promise.due_at)
            out.append(
                PromiseStateData(
                    item_id=self.item_id,
                    item_kind=state.item_kind,
                    promise_kind=promise.kind,
                    cycle=promise.cycle,
                    round=promise.round,
                    segment=state.segment,
                    state=current,
                    outcome=outcome,
                    changed_at=at,
                    started_at=promise.started_at,
                    due_at=promise.due_at,
                    original_due_at=promise.original_due_at,
                    window_start=promise.window_start,
                    delivered_at=promise.delivered_at,
                    time_left_seconds=left,
                    time_left_business_seconds=left_business,
                    overdue_by_seconds=over,
                    overdue_by_business_seconds=over_business,
                    policy=promise.policy,
                    calendar=VersionRef(name=cal.name, version=cal.spec.version),
                )
            )
        return out

    def waiting_feedback(self) -> int:
        """Feedback events waiting for the item's outcome to join it (0 for a resting clock,
        whose summary does not say: it is counted once an event or a timer wakes it)."""
        if self._resting is not None:
            return 0
        return len(self._state.pending_feedback or ())

    def drop_waiting_feedback(self) -> tuple[str, int]:
        """Forget the feedback still waiting for this item's outcome, from the log too (so a
        re-fold does not bring it back); returns why it never joined, and how many."""
        self._wake()
        state = self._state
        ids = {event_id for event_id, _ in state.pending_feedback or ()}
        if not ids:
            return "", 0
        self._log = [e for e in self._log if e.event_id not in ids]
        state.pending_feedback = None
        return ("item_never_seen" if state.item_kind is None else "never_delivered"), len(ids)

    def before_opening(self) -> int:
        """How many of the item's events (feedback aside) are stamped before its opening: they
        took effect at the opening. 0 while the item has not opened. Wakes a resting clock
        (whose log is not in memory), as applying an event to it does anyway."""
        self._wake()
        opened = next((e.at for e in self._log if e.rank == _OPENING_RANK), None)
        if opened is None:
            return 0
        return sum(
            1
            for e in self._log
            if e.at < opened and e.rank != _OPENING_RANK and e.rank != _FEEDBACK_RANK
        )

    @property
    def last_event_at(self) -> datetime | None:
        if self._resting is not None:
            return self._resting.last_event_at
        return self._log[-1].at if self._log else None

    @property
    def last_item_event_at(self) -> datetime | None:
        """Time of the latest ticket or job event (feedback travels on its own stream)."""
        if self._resting is not None:
            return self._resting.last_item_event_at
        for entry in reversed(self._log):
            if not entry.is_feedback:
                return entry.at
        return None

    @property
    def paused(self) -> bool:
        self._wake()
        return self._state.paused_since is not None

    @property
    def segment(self) -> dict[str, str]:
        if self._resting is not None:
            return self._resting.segment
        return self._state.segment

    @property
    def emitted_ids(self) -> set[str]:
        self._wake()
        return set(self._emitted or ())

    def apply(self, event: AnyInputEvent) -> list[GapEvent]:
        """Apply one input event; returns the gap events it (and the time it moved) caused."""
        self._wake()
        event_id = event.id
        for held in self._log:
            if held.event_id == event_id:
                # A repeated id is the same event (at-least-once delivery), unless its content
                # says otherwise: compared as models, so a log saved by an older version that
                # wrote the same facts differently still matches.
                if held.model() != event.data:
                    offered = _Entry.of(event_id, event.data).saved
                    raise ConflictingDuplicate(self.item_id, event_id, held.saved, offered)
                held.data = None
                return []
        if len(self._log) >= self._config.log_limit:
            raise ItemLogFull(self.item_id, self._config.log_limit)
        entry = _Entry.of(event_id, event.data)
        key = entry.key()
        in_order = not self._log or key >= self._log[-1].key()
        if in_order:
            self._log.append(entry)
            out: list[tuple[GapData, str]] = []
            self._step(entry, out)
            entry.data = None
            return self._emit(out)
        bisect.insort(self._log, entry, key=_Entry.key)
        return self._refold()

    def advance(self, now: datetime) -> list[GapEvent]:
        """Move the clock to `now` without an event: due promises breach, at-risk levels fire."""
        resting = self._resting
        if resting is not None and (resting.next_deadline is None or now <= resting.next_deadline):
            # Nothing falls due before the next deadline: remember the time, stay resting.
            if resting.advanced_to is None or now > resting.advanced_to:
                resting.advanced_to = now
            return []
        self._wake()
        state = self._state
        if state.clock is not None and now <= state.clock:
            return []
        out: list[tuple[GapData, str]] = []
        self._advance(now, out)
        return self._emit(out)

    def next_deadline(self) -> datetime | None:
        """The instant after which `advance` would emit something, if any.

        Timers fire once time has passed them, not at them: at one instant, events apply
        before timers fire, so a delivery stamped exactly at the due time is `met`, with no
        `breached` published first (live, where another item's event may reach that instant
        first, as in replay)."""
        if self._resting is not None:
            return self._resting.next_deadline
        if self._state.paused_since is not None:
            candidates = [p for p in self.open_promises if not p.pausable]
        else:
            candidates = self.open_promises
        times = [p.due_at for p in candidates]
        times += [p.next_at_risk_at for p in candidates if p.next_at_risk_at is not None]
        return min(times) if times else None

    # --- persistence -----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Compact form for a state store: the event log, the clock, the emitted ids and a summary.

        Each log entry is already JSON, so a save joins bytes rather than encoding the log again.
        The summary (what `restore` answers from without re-folding) is computed from the folded
        state and names the configuration it was computed under.
        """
        if self._resting is not None and self._resting.advanced_to is None:
            return self._saved  # type: ignore[return-value]  # set while resting
        self._wake()
        state = self._state
        emitted = [[i, o.value, k.value, c, r] for i, (o, k, c, r) in (self._emitted or {}).items()]
        summary = [
            self._config.fingerprint,
            state.item_kind,
            state.closed,
            state.segment,
            _iso(self.last_event_at),
            _iso(self.last_item_event_at),
            _iso(self.next_deadline()),
            self.open_states(),
        ]
        return b"".join(
            (
                b'{"format":',
                str(SAVED_FORMAT).encode(),
                b',"log":[',
                b",".join(e.saved for e in self._log),
                b'],"clock":',
                orjson.dumps(state.clock.isoformat() if state.clock else None),
                b',"emitted":',
                orjson.dumps(emitted),
                b',"summary":',
                orjson.dumps(summary),
                b"}",
            )
        )

    def to_dict(self) -> dict[str, Any]:
        """The saved form as JSON-ready data (for stores that encode values themselves)."""
        saved: dict[str, Any] = orjson.loads(self.to_bytes())
        return saved

    @classmethod
    def from_bytes(
        cls,
        item_id: str,
        config: ClockConfig,
        raw: bytes | dict[str, Any],
        unpublished: list[GapEvent] | None = None,
    ) -> ItemClock:
        """Rebuild a clock saved by `to_bytes` (or its decoded JSON): the log is re-folded.

        Under the policies of the save, the re-fold yields only gap events published before it.
        Under changed policies it can yield new ones: a promise still open at the save whose
        new due time or at-risk level had already passed by the clock's saved time. Those are
        appended to `unpublished`, when given, for the caller to publish (they count as
        emitted from now on); without them such a breach would never be published, as the
        re-fold moved the promise past its due time. Promises that had already reached their
        final outcome (met, delivered late, cancelled) keep it: a policy change re-scores
        what is open, and `gapwatch replay` re-evaluates history.
        """
        saved = _read_saved(item_id, raw)
        clock = cls(item_id, config)
        try:
            clock._fold_saved(saved, unpublished)
        except _UNREADABLE as exc:
            raise SavedStateError(item_id, f"log: {exc!r}") from None
        return clock

    @classmethod
    def restore(
        cls,
        item_id: str,
        config: ClockConfig,
        raw: bytes,
        unpublished: list[GapEvent] | None = None,
    ) -> ItemClock:
        """A clock from its saved bytes, resting: re-folded only when first used.

        A restart restores every item of its partitions, and re-folding each one (decoding its
        log and redoing the calendar arithmetic) costs far more than reading a summary; most
        items then wait for their next event or deadline. A save without a summary (format 1),
        or with one computed under other policies, is re-folded at once (`from_bytes`, which
        appends to `unpublished` what the changed policies imply and was never published), so a
        policy change applies to restored items exactly as it would on a re-fold.
        """
        summary = _saved_summary(raw)
        if not isinstance(summary, list) or not summary or summary[0] != config.fingerprint:
            return cls.from_bytes(item_id, config, raw, unpublished)
        clock = cls.__new__(cls)
        clock.item_id = item_id
        clock._config = config
        clock._log = _RESTING_LOG
        clock._state = _RESTING_STATE
        clock._emitted = None
        clock._saved = raw
        try:
            clock._resting = _Summary.of(summary, config)
        except (TypeError, ValueError, KeyError) as exc:
            raise SavedStateError(item_id, f"summary: {exc!r}") from None
        return clock

    def _wake(self) -> None:
        """Re-fold a resting clock from its saved log (no-op for a clock in use)."""
        resting, raw = self._resting, self._saved
        if resting is None or raw is None:
            return
        # No longer resting from here: the fold reads the clock's own properties (`promises`,
        # to join pending feedback), which must see the state being folded, not wake it again.
        self._resting = self._saved = None
        try:
            saved = _read_saved(self.item_id, raw)
            self._log = []
            self._state = _State()
            self._fold_saved(saved)
            if resting.advanced_to is not None:
                self._advance(resting.advanced_to, [])  # nothing was due before: moves the clock
        except BaseException as exc:
            # Unreadable: stay resting, so the next use meets the same error, not a blank clock.
            self._log, self._state = _RESTING_LOG, _RESTING_STATE
            self._resting, self._saved = resting, raw
            if isinstance(exc, _UNREADABLE):
                raise SavedStateError(self.item_id, f"log: {exc!r}") from None
            raise

    def _fold_saved(self, saved: dict[str, Any], unpublished: list[GapEvent] | None = None) -> None:
        for event_id, event_type, body in saved["log"]:
            data = _DATA_OF_TYPE[event_type].model_validate(body)
            self._log.append(_Entry.of(event_id, data))
        self._emitted = {
            i: (Outcome(o), PromiseKind(k), c, r) for i, o, k, c, r in saved["emitted"]
        }
        out: list[tuple[GapData, str]] = []
        for entry in self._log:
            self._step(entry, out)
            entry.data = None
        if saved["clock"] is not None:
            self._advance(datetime.fromisoformat(saved["clock"]), out)
        if unpublished is None or not out:
            return  # what the re-fold produced under the save's own policies was published
        finished = {
            (kind, cycle, round_)
            for outcome, kind, cycle, round_ in self._emitted.values()
            if outcome in _FINAL_OUTCOMES
        }
        unpublished.extend(
            self._emit(
                [
                    (data, extra)
                    for data, extra in out
                    if (data.promise_kind, data.cycle, data.round) not in finished
                ]
            )
        )

    # --- folding ---------------------------------------------------------------------------

    def _refold(self) -> list[GapEvent]:
        clock = self._state.clock
        self._state = _State()
        out: list[tuple[GapData, str]] = []
        for entry in self._log:
            self._step(entry, out)
            entry.data = None
        if clock is not None:
            self._advance(clock, out)
        return self._emit(out)

    def _step(self, entry: _Entry, out: list[tuple[GapData, str]]) -> None:
        if entry.is_feedback:
            # Feedback travels on its own stream and moves no clock: read ahead of the item's
            # own events (as a consumer of several topics may), it must not breach the item
            # before its reply or resolution arrives.
            self._apply_one(entry, out)
            return
        # Timers due up to the event fire first; after it, anything the event made due at once
        # (an at-risk level passed while paused, say) fires at the event's time.
        self._advance(entry.at, out)
        self._apply_one(entry, out)
        self._advance(entry.at, out)

    def _emit(self, out: list[tuple[GapData, str]]) -> list[GapEvent]:
        if not out:
            return []
        emitted = self._emitted
        if emitted is None:
            emitted = self._emitted = {}
        events = []
        for data, extra in out:
            event = make_gap_event(data, extra)
            if event.id in emitted:
                continue
            if data.outcome is Outcome.MET:
                # A met outcome for a promise whose breach was already published corrects it.
                breach = _breach_of(emitted, data)
                if breach is not None:
                    event = make_gap_event(data.model_copy(update={"corrects": breach}), extra)
            emitted[event.id] = (data.outcome, data.promise_kind, data.cycle, data.round)
            events.append(event)
        return events

    def _advance(self, now: datetime, out: list[tuple[GapData, str]]) -> None:
        state = self._state
        paused = state.paused_since is not None
        for promise in list(state.promises.values()):
            if promise.status is not Status.OPEN or (paused and promise.pausable):
                continue
            while promise.next_at_risk_at is not None and promise.next_at_risk_at < now:
                if promise.next_at_risk_at >= promise.due_at:
                    promise.next_at_risk_at = None
                    break
                fraction = promise.at_risk[promise.at_risk_fired]
                out.append(
                    (
                        self._gap(
                            promise,
                            Outcome.AT_RISK,
                            promise.next_at_risk_at,
                            None,
                            at_risk=fraction,
                        ),
                        f"{fraction:g}",
                    )
                )
                promise.at_risk_fired += 1
                self._schedule_at_risk(promise)
            if promise.due_at < now:  # due and passed: a delivery at the due time is met
                promise.status = Status.BREACHED
                promise.next_at_risk_at = None
                data = self._gap(promise, Outcome.BREACHED, promise.due_at, None)
                promise.breach_id = make_gap_event(data).id
                out.append((data, ""))
        # Moved last: at-risk levels rescheduled above may fall between the old clock and now.
        if state.clock is None or now > state.clock:
            state.clock = now

    # --- one event -------------------------------------------------------------------------

    def _apply_one(self, entry: _Entry, out: list[tuple[GapData, str]]) -> None:
        data, at, event_id = entry.model(), entry.at, entry.event_id
        state = self._state
        if isinstance(data, TicketOpened | JobScheduled):
            if state.item_kind is None:
                self._open(data, at, event_id, out)
                early, state.early = state.early, None
                for was in early or ():
                    # Stamped before the opening (the source systems' clocks disagree, most
                    # often): it takes effect at the opening, not never.
                    self._apply_one(_Entry(at, was.rank, was.event_id, was.saved, was.data), out)
            return
        if isinstance(data, FeedbackSubmitted):
            if state.pending_feedback is None:
                state.pending_feedback = []
            state.pending_feedback.append((event_id, data))
            self._flush_feedback(out)
            return
        if state.item_kind is None:
            # It takes effect once the item's opening event arrives, at the opening's time.
            if state.early is None:
                state.early = []
            state.early.append(entry)
            return
        if isinstance(data, TicketStatusChanged):
            self._status(data.status, at)
        elif isinstance(data, TicketReplied):
            self._reply(data, at, event_id, out)
        elif isinstance(data, TicketPromiseChanged):
            self._repromise(data.kind, data.due_at, None, at, event_id)
        elif isinstance(data, TicketResolved):
            for kind in (
                PromiseKind.RESOLUTION,
                PromiseKind.FIRST_RESPONSE,
                PromiseKind.NEXT_RESPONSE,
            ):
                self._deliver(kind, at, event_id, out)
        elif isinstance(data, TicketReopened):
            self._reopen(at, event_id)
        elif isinstance(data, TicketClosed | JobCancelled):
            for promise in list(state.promises.values()):
                if promise.status is Status.OPEN:
                    promise.status = Status.CANCELLED
                    promise.next_at_risk_at = None
                    out.append((self._gap(promise, Outcome.CANCELLED, at, None, event_id), ""))
            state.closed = True
            self._flush_feedback(out)
        elif isinstance(data, JobRescheduled):
            self._repromise(PromiseKind.ARRIVAL, data.window.end, data.window.start, at, event_id)
        elif isinstance(data, JobArrived):
            self._deliver(PromiseKind.ARRIVAL, at, event_id, out)
        elif isinstance(data, JobCompleted):
            self._deliver(PromiseKind.ARRIVAL, at, event_id, out)
            before = len(out)
            self._deliver(PromiseKind.COMPLETION, at, event_id, out)
            if len(out) > before:  # the completion outcome carries first-time-fix facts
                gap, extra = out[before]
                fix = {"fixed": data.fixed, "revisit": data.revisit_of is not None}
                out[before] = (gap.model_copy(update=fix), extra)
        # JobDispatched carries nothing the clocks need; it stays in the log for completeness.

    def _open(
        self,
        data: TicketOpened | JobScheduled,
        at: datetime,
        event_id: str,
        out: list[tuple[GapData, str]],
    ) -> None:
        state = self._state
        policies = self._config.policies
        if isinstance(data, TicketOpened):
            state.item_kind = ItemKind.TICKET
            state.segment = self._config.shared_segment(
                {
                    **data.labels,
                    "team": data.team,
                    "region": data.region,
                    "priority": data.priority,
                    "channel": data.channel,
                    "customer_tier": data.customer_tier,
                }
            )
            policy = policies.select(state.segment, data.sla_policy)
            explicit = {p.kind: p.due_at for p in data.promises}
            kinds: tuple[PromiseKind, ...] = (PromiseKind.FIRST_RESPONSE, PromiseKind.RESOLUTION)
        else:
            state.item_kind = ItemKind.JOB
            state.segment = self._config.shared_segment(
                {
                    **data.labels,
                    "team": data.team,
                    "region": data.region,
                    "service_type": data.service_type,
                    "customer_tier": data.customer_tier,
                }
            )
            policy = policies.select(state.segment)
            explicit = {PromiseKind.ARRIVAL: data.window.end}
            if data.promised_completion_at is not None:
                explicit[PromiseKind.COMPLETION] = data.promised_completion_at
            kinds = (PromiseKind.COMPLETION,)
        state.policy = policy
        state.pause_statuses = self._config.pause_statuses(policy)
        for kind, due in explicit.items():
            window = (
                data.window.start
                if isinstance(data, JobScheduled) and kind is PromiseKind.ARRIVAL
                else None
            )
            self._start_explicit(kind, at, due, window, event_id)
        if policy is not None:
            rules = self._config.rules(policy)
            for kind in kinds:
                if kind in rules and kind not in explicit:
                    start = data.window.start if isinstance(data, JobScheduled) else at
                    self._start_policy(
                        kind,
                        start,
                        rules[kind].within,
                        rules[kind].calendar,
                        rules[kind].at_risk,
                        event_id,
                    )
        self._flush_feedback(out)

    def _policy_ref(self) -> VersionRef:
        policy = self._state.policy
        if policy is None:
            return EXPLICIT
        return self._config.policy_ref(policy)

    def _next_round(self, kind: PromiseKind) -> int:
        rounds = self._state.rounds
        rounds[kind] = rounds.get(kind, -1) + 1
        return rounds[kind]

    def _store(self, promise: Promise) -> None:
        state = self._state
        previous = state.promises.get(promise.kind)
        if previous is not None:
            if state.history is None:
                state.history = []
            state.history.append(previous)
        state.promises[promise.kind] = promise
        self._schedule_at_risk(promise)

    def _start_policy(
        self,
        kind: PromiseKind,
        at: datetime,
        within: Target,
        calendar: str,
        at_risk: tuple[float, ...],
        event_id: str,
    ) -> None:
        cal = self._config.calendars[calendar]
        start = cal.next_open(at)
        due = within.due(cal, start)
        self._store(
            Promise(
                kind=kind,
                cycle=self._state.cycle,
                round=self._next_round(kind),
                started_at=start,
                due_at=due,
                original_due_at=due,
                calendar=calendar,
                policy=self._policy_ref(),
                pausable=True,
                at_risk=at_risk,
                caused_by=event_id,
            )
        )

    def _start_explicit(
        self,
        kind: PromiseKind,
        at: datetime,
        due: datetime,
        window_start: datetime | None,
        event_id: str,
    ) -> None:
        defaults = self._config.policies.defaults
        self._store(
            Promise(
                kind=kind,
                cycle=self._state.cycle,
                round=self._next_round(kind),
                started_at=min(at, due),
                due_at=due,
                original_due_at=due,
                calendar=defaults.calendar,
                policy=EXPLICIT,
                pausable=False,
                at_risk=defaults.at_risk,
                caused_by=event_id,
                window_start=window_start,
            )
        )

    def _schedule_at_risk(self, promise: Promise) -> None:
        if promise.at_risk_fired >= len(promise.at_risk) or promise.status is not Status.OPEN:
            promise.next_at_risk_at = None
            return
        cal = self._config.calendars[promise.calendar]
        total = cal.business_seconds_between(promise.started_at, promise.due_at)
        if total <= 0:
            promise.next_at_risk_at = None
            return
        fraction = promise.at_risk[promise.at_risk_fired]
        at = cal.add_business_seconds(promise.started_at, fraction * total)
        # A level that a pause or re-promise moved into the past is reached now, not back then.
        now = self._state.clock
        promise.next_at_risk_at = at if now is None or at >= now else now

    def _status(self, status: str, at: datetime) -> None:
        state = self._state
        state.status = status
        pausing = status in state.pause_statuses
        if pausing and state.paused_since is None:
            state.paused_since = at
        elif not pausing and state.paused_since is not None:
            since, state.paused_since = state.paused_since, None
            for promise in state.promises.values():
                if promise.status is Status.OPEN and promise.pausable:
                    cal = self._config.calendars[promise.calendar]
                    paused = cal.business_seconds_between(since, at)
                    if paused > 0:
                        # A pause stretches the promise itself, it is not a re-promise: both
                        # due times move, so drift keeps meaning "moved by someone".
                        promise.due_at = cal.add_business_seconds(promise.due_at, paused)
                        promise.original_due_at = cal.add_business_seconds(
                            promise.original_due_at, paused
                        )
                        self._schedule_at_risk(promise)

    def _reply(
        self, data: TicketReplied, at: datetime, event_id: str, out: list[tuple[GapData, str]]
    ) -> None:
        config, state = self._config, self._state
        if data.author in config.reply_authors and data.visibility in config.reply_visibilities:
            self._deliver(PromiseKind.FIRST_RESPONSE, at, event_id, out)
            self._deliver(PromiseKind.NEXT_RESPONSE, at, event_id, out)
            return
        if data.author != "customer" or state.policy is None:
            return
        first = state.promises.get(PromiseKind.FIRST_RESPONSE)
        current = state.promises.get(PromiseKind.NEXT_RESPONSE)
        if (first is not None and first.status is Status.OPEN) or (
            current is not None and current.status is Status.OPEN
        ):
            return  # an answer is already owed; a follow-up does not start another clock
        rules = config.rules(state.policy)
        rule = rules.get(PromiseKind.NEXT_RESPONSE)
        if rule is not None:
            self._start_policy(
                PromiseKind.NEXT_RESPONSE, at, rule.within, rule.calendar, rule.at_risk, event_id
            )

    def _repromise(
        self,
        kind: PromiseKind,
        due: datetime,
        window_start: datetime | None,
        at: datetime,
        event_id: str,
    ) -> None:
        promise = self._state.promises.get(kind)
        if promise is None:
            self._start_explicit(kind, at, due, window_start, event_id)
            return
        if promise.status is not Status.OPEN:
            return  # the breach (or delivery) stands
        promise.due_at = due
        promise.window_start = window_start if window_start is not None else promise.window_start
        promise.pausable = False
        self._schedule_at_risk(promise)

    def _reopen(self, at: datetime, event_id: str) -> None:
        state = self._state
        state.cycle += 1
        state.closed = False
        state.rounds.pop(PromiseKind.RESOLUTION, None)
        if state.policy is None:
            return
        rules = self._config.rules(state.policy)
        rule = rules.get(PromiseKind.RESOLUTION)
        if rule is not None:
            self._start_policy(
                PromiseKind.RESOLUTION, at, rule.within, rule.calendar, rule.at_risk, event_id
            )

    def _deliver(
        self, kind: PromiseKind, at: datetime, event_id: str, out: list[tuple[GapData, str]]
    ) -> None:
        promise = self._state.promises.get(kind)
        if promise is None or promise.status not in (Status.OPEN, Status.BREACHED):
            return
        was_breached = promise.status is Status.BREACHED
        state = self._state
        if state.paused_since is not None and promise.status is Status.OPEN and promise.pausable:
            # Delivered without resuming first (resolved straight from a waiting status): the
            # pause so far stretches the promise just as a resume would have.
            cal = self._config.calendars[promise.calendar]
            paused = cal.business_seconds_between(state.paused_since, at)
            if paused > 0:
                promise.due_at = cal.add_business_seconds(promise.due_at, paused)
                promise.original_due_at = cal.add_business_seconds(promise.original_due_at, paused)
        promise.delivered_at = at
        promise.next_at_risk_at = None
        late = at > promise.due_at
        if was_breached and late:
            promise.status, outcome = Status.DELIVERED_LATE, Outcome.DELIVERED_LATE
        elif late:  # unreachable in order (the clock advanced first), kept for safety
            promise.status, outcome = Status.DELIVERED_LATE, Outcome.DELIVERED_LATE
        else:
            promise.status, outcome = Status.MET, Outcome.MET
        data = self._gap(promise, outcome, at, at, event_id)
        promise.gap_seconds, promise.arrival = data.gap_seconds, data.arrival
        out.append((data, ""))
        self._flush_feedback(out)

    # --- feedback --------------------------------------------------------------------------

    def _headline(self) -> Promise | None:
        state = self._state
        if state.item_kind is ItemKind.JOB:
            order: tuple[PromiseKind, ...] = (PromiseKind.ARRIVAL, PromiseKind.COMPLETION)
        else:
            order = (PromiseKind.RESOLUTION, PromiseKind.FIRST_RESPONSE)
        for kind in order:
            for promise in reversed(self.promises):
                if promise.kind is kind:
                    return promise
        return None

    def _flush_feedback(self, out: list[tuple[GapData, str]]) -> None:
        state = self._state
        if not state.pending_feedback or state.item_kind is None:
            return
        promise = self._headline()
        if promise is None:
            if not state.closed:
                return
        elif promise.status in (Status.OPEN, Status.BREACHED) and not state.closed:
            return  # the gap is not known yet
        for event_id, feedback in state.pending_feedback:
            join = FeedbackJoin(
                feedback_id=feedback.feedback_id,
                feedback_event_id=event_id,
                submitted_at=feedback.submitted_at,
                csat=feedback.csat,
                nps=feedback.nps,
                servqual_gap={
                    d: float(r.perceived - r.expected) for d, r in feedback.servqual.items()
                },
            )
            if promise is None:
                continue  # no promise to join with: nothing to measure against
            data = self._gap(
                promise, Outcome.FEEDBACK, feedback.submitted_at, promise.delivered_at, event_id
            )
            data = data.model_copy(
                update={
                    "feedback": join,
                    "gap_seconds": promise.gap_seconds,
                    "arrival": promise.arrival,
                }
            )
            out.append((data, feedback.feedback_id))
        state.pending_feedback = None

    # --- gap figures -----------------------------------------------------------------------

    def _gap(
        self,
        promise: Promise,
        outcome: Outcome,
        outcome_at: datetime,
        delivered_at: datetime | None,
        caused_by: str | None = None,
        at_risk: float | None = None,
    ) -> GapData:
        cal = self._config.calendars[promise.calendar]
        gap = gap_business = delivered_seconds = None
        arrival = None
        if delivered_at is not None:
            delivered_seconds = (delivered_at - promise.started_at).total_seconds()
            start = promise.window_start
            if start is not None and delivered_at < start:
                arrival = ArrivalOutcome.EARLY
                gap = (delivered_at - start).total_seconds()
                gap_business = cal.business_seconds_between(start, delivered_at)
            elif start is not None and delivered_at <= promise.due_at:
                arrival, gap, gap_business = ArrivalOutcome.ON_TIME, 0.0, 0.0
            else:
                if start is not None:
                    arrival = ArrivalOutcome.LATE
                gap = (delivered_at - promise.due_at).total_seconds()
                gap_business = cal.business_seconds_between(promise.due_at, delivered_at)
        state = self._state
        return GapData(
            item_id=self.item_id,
            item_kind=state.item_kind or ItemKind.TICKET,
            promise_kind=promise.kind,
            cycle=promise.cycle,
            round=promise.round,
            segment=state.segment,
            outcome=outcome,
            outcome_at=outcome_at,
            started_at=promise.started_at,
            promised_at=promise.due_at,
            original_promised_at=promise.original_due_at,
            window_start=promise.window_start,
            delivered_at=delivered_at,
            gap_seconds=gap,
            gap_business_seconds=gap_business,
            promised_seconds=(promise.due_at - promise.started_at).total_seconds(),
            delivered_seconds=delivered_seconds,
            drift_seconds=(promise.due_at - promise.original_due_at).total_seconds(),
            arrival=arrival,
            at_risk_fraction=at_risk,
            policy=promise.policy,
            calendar=VersionRef(name=cal.name, version=cal.spec.version),
            caused_by=caused_by or promise.caused_by,
        )


_RESTING_LOG: list[_Entry] = []
_RESTING_STATE = _State()
"""Shared by resting clocks, which never touch them (every use wakes the clock first)."""


def _read_saved(item_id: str, raw: bytes | dict[str, Any]) -> dict[str, Any]:
    # A state store may hand back the JSON already decoded (faust does after a recovery).
    try:
        saved = raw if isinstance(raw, dict) else orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SavedStateError(item_id, f"not JSON: {exc}") from None
    if not isinstance(saved, dict) or saved.get("format") not in READABLE_FORMATS:
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        raise SavedStateError(item_id, f"format {found!r}, this version reads {READABLE_FORMATS}")
    return saved


def _breach_of(
    emitted: dict[str, tuple[Outcome, PromiseKind, int, int]], data: GapData
) -> str | None:
    wanted = (Outcome.BREACHED, data.promise_kind, data.cycle, data.round)
    for event_id, about in emitted.items():
        if about == wanted:
            return event_id
    return None
