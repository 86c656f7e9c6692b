"""ServiceNow incident event logs (snapshots of each incident after every update) as ticket events.

The export (e.g. the UCI "incident management process enriched event log") has one row per update,
each a full *snapshot* of the incident, not a change record. We diff consecutive snapshots of one
incident and emit what changed, at the snapshot's `sys_updated_at`:

- the incident itself: `ticket.opened` at `opened_at`, with team = assignment_group,
  region = location, priority = the priority text ("2 - High"), channel = contact_type,
  customer = caller_id, and `sla_policy` chosen by matching the policies file;
- any `incident_state` change: `ticket.status_changed`, status = the state in snake_case
  (`active`, `awaiting_user_info`, `resolved`, ...);
- the first entry into `Active` (unless already resolved): `ticket.replied` by an agent, a
  *stand-in* for the first response, which the log does not record;
- into `Resolved`: `ticket.resolved`; into `Closed`: `ticket.closed`;
- from `Resolved` or `Closed` back to an open state: `ticket.reopened` (in the UCI log, exactly
  the rows where `reopen_count` grows).

Every state change emits `status_changed`, `Resolved` and `Closed` included: the scorer pauses
policy promises while the status is an `Awaiting ...` state (the policies' `pause_statuses`) and
must see the pause end before a resolution delivered straight from it.

Quirks of the export, and what we do:

- Day-first timestamps with minute precision and no zone (`29/2/2016 01:16`): read in
  `ImportOptions.timezone` (default UTC; with DST, an ambiguous or skipped local time takes
  the offset before the change).
- `?` is a missing value: labels fall back to the first known value of the incident, then to
  `unknown` (`unassigned` for the team).
- Order: an incident's rows are ordered by `sys_mod_count`, ties by `sys_updated_at`, then file
  order; a row stamped before `opened_at` sorts first. In the UCI log `sys_mod_count` goes
  backwards in 4 incidents, each time on a first row stamped before `opened_at` whose
  reassignment count and group show it is the earliest snapshot, so it stays first.
- A row stamped before `opened_at` is taken at `opened_at` (adjusted: `updated_before_opened`); an
  event is never earlier than the incident's previous event (`time_before_previous_event`).
- `incident_state` values other than New, Active, Awaiting ..., Resolved and Closed (`-100`) are
  skipped (`unknown_state`): the incident keeps its previous state.
- An incident's rows must be contiguous, as in ServiceNow exports; a row of an incident that ended
  earlier in the file is skipped (`not_contiguous`).
- Attributes of the opening come from the first snapshot (priority changes in 383 incidents of
  the UCI log; counted as a note). `resolved_at`/`closed_at` columns hold only the *last* value;
  we use the time of each transition, which also serves reopened incidents' earlier cycles.
- Event ids are `servicenow:<number>:<action>:<n>` (n counts that action within the incident), so
  a re-import gives the same ids and the scorer deduplicates it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from gapwatch.importers import ImportOptions, ImportStats, Row, SourceFormatError

NAME = "servicenow"
SUMMARY = "ServiceNow incident event log (CSV, or a .zip holding one)"
DEFAULT_POLICIES = Path("deploy/config/servicenow-policies.yaml")
DEFAULT_SOURCE = "urn:gapwatch:import:servicenow"

MISSING = "?"
REQUIRED_COLUMNS = (
    "number",
    "incident_state",
    "reopen_count",
    "sys_mod_count",
    "made_sla",
    "caller_id",
    "opened_at",
    "sys_updated_at",
    "contact_type",
    "location",
    "priority",
    "assignment_group",
)
# Optional columns copied into `labels` (label key -> column).
LABEL_COLUMNS = {
    "category": "category",
    "subcategory": "subcategory",
    "symptom": "u_symptom",
    "impact": "impact",
    "urgency": "urgency",
}

NEW, ACTIVE, RESOLVED, CLOSED = "New", "Active", "Resolved", "Closed"
AWAITING_PREFIX = "Awaiting "
TERMINAL = frozenset({RESOLVED, CLOSED})

_STAMP = re.compile(
    r"^\s*(?P<d>\d{1,2})/(?P<m>\d{1,2})/(?P<y>\d{4})\s+(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?\s*$"
)
_ITEM_ID_BAD = re.compile(r"[^A-Za-z0-9._:@/+#-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_NOT_WORD = re.compile(r"[^a-z0-9]+")
ITEM_ID_MAX = 128
LABEL_MAX = 128


def status_of(state: str) -> str:
    """The gapwatch status for a ServiceNow state: 'Awaiting User Info' -> 'awaiting_user_info'."""
    return _NOT_WORD.sub("_", state.lower()).strip("_")


def is_known_state(state: str) -> bool:
    return state in (NEW, ACTIVE, RESOLVED, CLOSED) or (
        state.startswith(AWAITING_PREFIX) and len(state) > len(AWAITING_PREFIX)
    )


def item_id(text: str) -> str:
    """Text as an ItemId (no spaces, a fixed alphabet): 'Caller 2403' -> 'Caller-2403'."""
    return _ITEM_ID_BAD.sub("-", text.strip()).strip("-")[:ITEM_ID_MAX]


def label(text: str) -> str:
    """Text as a Label: no control characters, at most 128 characters; may come out empty."""
    return " ".join(_CONTROL.sub(" ", text).split())[:LABEL_MAX]


class _Times:
    """Day-first, zone-less export timestamps -> aware datetimes in one zone (memoised)."""

    def __init__(self, zone: tzinfo) -> None:
        self._zone = zone
        self._cache: dict[str, datetime | None] = {}

    def parse(self, text: str | None) -> datetime | None:
        if text is None:
            return None
        try:
            return self._cache[text]
        except KeyError:
            pass
        value = None
        match = _STAMP.match(text)
        if match:
            try:
                value = datetime(
                    int(match["y"]),
                    int(match["m"]),
                    int(match["d"]),
                    int(match["H"]),
                    int(match["M"]),
                    int(match["S"] or 0),
                    tzinfo=self._zone,
                )
            except ValueError:
                value = None  # 31/2/2016 and the like
        if len(self._cache) < 1_000_000:
            self._cache[text] = value
        return value


@dataclass
class Incident:
    """One incident's events, with the source facts a comparison report needs."""

    number: str
    priority: str
    made_sla: bool | None  # the source's own verdict, from the incident's last row
    events: list[dict[str, Any]] = field(default_factory=list)
    paused: bool = False  # entered an Awaiting state at least once
    reopened: int = 0  # reopen cycles
    resolved: bool = False


def map_rows(
    rows: Iterable[Row], options: ImportOptions, stats: ImportStats
) -> Iterator[dict[str, Any]]:
    """The importer entry point: every event of every incident, incident by incident."""
    for incident in map_incidents(rows, options, stats):
        yield from incident.events


def map_incidents(
    rows: Iterable[Row], options: ImportOptions, stats: ImportStats
) -> Iterator[Incident]:
    """Group contiguous rows by incident number and map each group (see the module docstring)."""
    times = _Times(options.timezone)
    mapper = _Mapper(options, stats, times)
    finished: set[str] = set()
    current: str | None = None
    group: list[tuple[int, Row]] = []
    checked = False
    for position, row in enumerate(rows):
        if not checked:
            missing = [c for c in REQUIRED_COLUMNS if c not in row]
            if missing:
                raise SourceFormatError(
                    "not a ServiceNow incident event log: missing column(s) " + ", ".join(missing)
                )
            checked = True
        stats.rows += 1
        number = item_id(_text(row, "number"))
        if not number or number == MISSING:
            stats.skipped["missing_number"] += 1
            continue
        if number != current:
            if current is not None:
                finished.add(current)
                incident = mapper.incident(current, group)
                current, group = None, []
                if incident is not None:
                    yield incident
                if options.limit is not None and stats.items >= options.limit:
                    stats.rows -= 1  # this row belongs to an incident past the limit
                    return
            if number in finished:
                stats.skipped["not_contiguous"] += 1
                continue
            current = number
        group.append((position, row))
    if current is not None:
        incident = mapper.incident(current, group)
        if incident is not None:
            yield incident


def _text(row: Row, column: str) -> str:
    value = row.get(column)
    return value.strip() if isinstance(value, str) else MISSING


def _known(row: Row, column: str) -> str | None:
    value = _text(row, column)
    return None if value in (MISSING, "") else value


@dataclass
class _Emitter:
    """Builds one incident's event documents with deterministic ids."""

    number: str
    source: str
    events: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def emit(self, action: str, at: datetime, data: dict[str, Any]) -> None:
        n = self.counts.get(action, 0)
        self.counts[action] = n + 1
        self.events.append(
            {
                "specversion": "1.0",
                "id": f"servicenow:{self.number}:{action}:{n}",
                "source": self.source,
                "type": f"gapwatch.ticket.{action}.v1",
                # The envelope time is the event time: the same input gives the same bytes.
                "time": at.isoformat(),
                "subject": self.number,
                "data": {"ticket_id": self.number, **data},
            }
        )


class _Mapper:
    def __init__(self, options: ImportOptions, stats: ImportStats, times: _Times) -> None:
        self._options = options
        self._stats = stats
        self._times = times
        self._source = options.source or DEFAULT_SOURCE

    def incident(self, number: str, group: list[tuple[int, Row]]) -> Incident | None:
        stats, times = self._stats, self._times
        opened_candidates = [times.parse(_known(r, "opened_at")) for _, r in group]
        opened_values = [t for t in opened_candidates if t is not None]
        if not opened_values:
            stats.skipped["missing_opened_at"] += len(group)
            return None
        opened = min(opened_values)

        usable: list[tuple[tuple[bool, int, datetime, int], Row, datetime]] = []
        mods: list[int] = []
        for position, row in group:
            updated = times.parse(_known(row, "sys_updated_at"))
            if updated is None:
                stats.skipped["bad_sys_updated_at"] += 1
                continue
            try:
                mod = int(_text(row, "sys_mod_count"))
            except ValueError:
                stats.skipped["bad_sys_mod_count"] += 1
                continue
            mods.append(mod)
            usable.append(((updated >= opened, mod, updated, position), row, updated))
        if any(b < a for a, b in itertools.pairwise(mods)):
            stats.notes["incident_mod_count_backwards"] += 1
        ordered = sorted(usable, key=lambda u: u[0])
        if [u[0][3] for u in ordered] != [u[0][3] for u in usable]:
            stats.notes["incident_rows_reordered"] += 1
        if not ordered:
            return None

        stats.items += 1
        first = ordered[0][1]
        rows = [row for _, row, _ in ordered]
        priority = label(_first_known(rows, "priority") or "unknown") or "unknown"
        if len({_text(r, "priority") for r in rows} - {MISSING}) > 1:
            stats.notes["incident_priority_changed"] += 1
        made_sla = {"true": True, "false": False}.get(_text(rows[-1], "made_sla").lower())
        if len({_text(r, "made_sla") for r in rows} - {MISSING}) > 1:
            stats.notes["incident_made_sla_changed"] += 1

        emitter = _Emitter(number, self._source)
        incident = Incident(number, priority, made_sla, emitter.events)
        emitter.emit("opened", opened, self._opening(rows, priority, opened))

        state, reopen_count, replied = NEW, _int(_text(first, "reopen_count")), False
        last_at = opened
        for _, row, updated in ordered:
            new_state = _text(row, "incident_state")
            if not is_known_state(new_state):
                stats.skipped["unknown_state"] += 1
                continue
            at = updated
            if at < opened:
                stats.adjusted["updated_before_opened"] += 1
                at = opened
            count = _int(_text(row, "reopen_count"))
            grew = count is not None and reopen_count is not None and count > reopen_count
            reopen_count = count if count is not None else reopen_count
            if new_state == state:
                if grew:
                    stats.notes["reopen_count_grew_without_reopen"] += 1
                continue
            if at < last_at:
                stats.adjusted["time_before_previous_event"] += 1
                at = last_at
            last_at = at
            emitter.emit(
                "status_changed", at, {"changed_at": at.isoformat(), "status": status_of(new_state)}
            )
            leaves_terminal = state in TERMINAL and new_state not in TERMINAL
            if leaves_terminal:
                emitter.emit("reopened", at, {"reopened_at": at.isoformat()})
                incident.reopened += 1
            if leaves_terminal != grew:
                stats.notes["reopen_count_disagrees"] += 1
            if new_state.startswith(AWAITING_PREFIX):
                incident.paused = True
            elif new_state == ACTIVE and not replied and not incident.resolved:
                emitter.emit(
                    "replied",
                    at,
                    {"replied_at": at.isoformat(), "author": "agent", "visibility": "public"},
                )
                replied = True
            elif new_state == RESOLVED:
                emitter.emit("resolved", at, {"resolved_at": at.isoformat()})
                incident.resolved = True
            elif new_state == CLOSED:
                emitter.emit("closed", at, {"closed_at": at.isoformat()})
            state = new_state
        return incident

    def _opening(self, rows: list[Row], priority: str, opened: datetime) -> dict[str, Any]:
        labels = {"source_system": NAME}
        for key, column in LABEL_COLUMNS.items():
            value = label(_first_known(rows, column) or "")
            if value:
                labels[key] = value
        data: dict[str, Any] = {
            "opened_at": opened.isoformat(),
            "priority": priority,
            "channel": label(_first_known(rows, "contact_type") or "") or "unknown",
            "customer_id": item_id(_first_known(rows, "caller_id") or "") or "unknown",
            "customer_tier": "unknown",  # the log has no tier
            "team": label(_first_known(rows, "assignment_group") or "") or "unassigned",
            "region": label(_first_known(rows, "location") or "") or "unknown",
            "labels": labels,
        }
        policies = self._options.policies
        if policies is not None:
            segment = {
                **labels,
                "priority": data["priority"],
                "team": data["team"],
                "region": data["region"],
                "channel": data["channel"],
                "customer_tier": data["customer_tier"],
            }
            policy = policies.select(segment)
            if policy is None:
                self._stats.notes["incident_without_policy"] += 1
            else:
                data["sla_policy"] = policy.name
        return data


def _first_known(rows: list[Row], column: str) -> str | None:
    for row in rows:
        value = _known(row, column)
        if value is not None:
            return value
    return None


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
