"""The promises view in PostgreSQL: the latest state of every promise, its history, and queries."""

from __future__ import annotations

import base64
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from gapwatch.core.promise_states import PromiseState
from gapwatch_alerter.store import AlertStore, _guarded, write_offsets

SORTS: dict[str, str] = {
    "-overdue_by": "ASC",  # most overdue first: the earliest due time
    "overdue_by": "DESC",
    "time_left": "ASC",  # least time left first: the earliest due time
    "-time_left": "DESC",
    "due_at": "ASC",
    "-due_at": "DESC",
}
"""The orders `/v1/promises` offers; each is an order on the due time (then item, kind)."""
OPEN_STATES = (PromiseState.OPEN, PromiseState.AT_RISK, PromiseState.OVERDUE, PromiseState.PAUSED)


class BadCursor(ValueError):
    """A paging cursor that this view did not hand out (or for another sort)."""


@dataclass(frozen=True, slots=True)
class PromiseChange:
    """One record of the promises topic: a promise's new state, or a tombstone (`record` None)."""

    item_id: str
    promise_kind: str
    record: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class PromiseQuery:
    """A filtered, sorted page of the view."""

    labels: Mapping[str, str]
    states: Collection[str] = ()
    kinds: Collection[str] = ()
    sort: str = "-overdue_by"
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class PromisePage:
    promises: list[dict[str, Any]]
    next_cursor: str | None


class PromiseStore:
    """Reads and writes the `promises` and `promise_history` tables of an alert store's schema."""

    def __init__(self, store: AlertStore) -> None:
        self._pool = store.pool
        self.load_offsets = store.load_offsets

    @_guarded
    async def apply(
        self, changes: Sequence[PromiseChange], offsets: Mapping[tuple[str, int], int]
    ) -> None:
        """Apply a batch of the topic and move its offsets, in one transaction.

        A record is upserted (the latest per promise wins, as on the compacted topic); one whose
        state or due time differs from what the view held adds a history row; a tombstone
        deletes the promise and its history.
        """
        keys = list(dict.fromkeys((c.item_id, c.promise_kind) for c in changes))
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_HELD, [k[0] for k in keys], [k[1] for k in keys])
            held = {(r["item_id"], r["promise_kind"]): (r["state"], r["due_at"]) for r in rows}
            final: dict[tuple[str, str], dict[str, Any] | None] = {}
            history: list[tuple[str, str, str, datetime, datetime]] = []
            for change in changes:
                key = (change.item_id, change.promise_kind)
                record = change.record
                final[key] = record
                if record is None:
                    held.pop(key, None)
                    history = [h for h in history if (h[0], h[1]) != key]
                    continue
                state = record["state"]
                due = datetime.fromisoformat(record["due_at"])
                if held.get(key) != (state, due):
                    at = datetime.fromisoformat(record["changed_at"])
                    history.append((*key, state, due, at))
                    held[key] = (state, due)
            gone = [k for k, r in final.items() if r is None]
            if gone:
                await conn.execute(_DELETE, [k[0] for k in gone], [k[1] for k in gone])
                await conn.execute(_DELETE_HISTORY, [k[0] for k in gone], [k[1] for k in gone])
            kept = [(k, r) for k, r in final.items() if r is not None]
            if kept:
                await conn.execute(
                    _UPSERT,
                    [k[0] for k, _ in kept],
                    [k[1] for k, _ in kept],
                    [r["state"] for _, r in kept],
                    [orjson.dumps(r["segment"]).decode() for _, r in kept],
                    [datetime.fromisoformat(r["due_at"]) for _, r in kept],
                    [datetime.fromisoformat(r["changed_at"]) for _, r in kept],
                    [orjson.dumps(r).decode() for _, r in kept],
                )
            if history:
                columns = [list(column) for column in zip(*history, strict=True)]
                await conn.execute(_INSERT_HISTORY, *columns)
            await write_offsets(conn, offsets)

    @_guarded
    async def page(self, query: PromiseQuery, now: datetime) -> PromisePage:
        """One page of promises matching the query, sorted, with the cursor of the next."""
        direction = SORTS[query.sort]
        after: list[Any] = [None, None, None]
        if query.cursor is not None:
            after = _read_cursor(query.cursor, query.sort)
        sql = _PAGE.format(cmp=">" if direction == "ASC" else "<", direction=direction)
        rows = await self._pool.fetch(
            sql,
            list(query.states) or None,
            list(query.kinds) or None,
            orjson.dumps(dict(query.labels)).decode(),
            *after,
            query.limit + 1,
        )
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        promises = [_shown(row["record"], now) for row in rows]
        cursor = None
        if more and rows:
            last = rows[-1]
            cursor = _write_cursor(
                query.sort, last["due_at"], last["item_id"], last["promise_kind"]
            )
        return PromisePage(promises, cursor)

    @_guarded
    async def of_item(self, item_id: str, now: datetime) -> list[dict[str, Any]]:
        """Every promise of the item the view holds, each with its state history, oldest first."""
        rows = await self._pool.fetch(
            "SELECT promise_kind, record FROM promises WHERE item_id = $1 ORDER BY promise_kind",
            item_id,
        )
        history = await self._pool.fetch(
            "SELECT promise_kind, state, due_at, changed_at FROM promise_history "
            "WHERE item_id = $1 ORDER BY seq",
            item_id,
        )
        out = []
        for row in rows:
            shown = _shown(row["record"], now)
            shown["history"] = [
                {
                    "state": h["state"],
                    "due_at": h["due_at"].isoformat(),
                    "changed_at": h["changed_at"].isoformat(),
                }
                for h in history
                if h["promise_kind"] == row["promise_kind"]
            ]
            out.append(shown)
        return out

    @_guarded
    async def behind_page(
        self, labels: Mapping[str, str], kinds: Collection[str], top: int, now: datetime
    ) -> dict[str, Any]:
        """What a page about `labels` names: how many promises are overdue and at risk, and the
        `top` most overdue (then the nearest due of those at risk)."""
        segment = orjson.dumps(dict(labels)).decode()
        wanted = list(kinds) or None
        counts = await self._pool.fetch(_COUNTS, wanted, segment)
        by_state = {row["state"]: int(row["n"]) for row in counts}
        rows = await self._pool.fetch(_TOP, wanted, segment, top)
        items = []
        for row in rows:
            record = _shown(row["record"], now)
            items.append(
                {
                    key: record[key]
                    for key in (
                        "item_id",
                        "promise_kind",
                        "state",
                        "due_at",
                        "overdue_by_seconds",
                        "time_left_seconds",
                    )
                    if key in record
                }
            )
        return {
            "overdue": by_state.get(PromiseState.OVERDUE.value, 0),
            "at_risk": by_state.get(PromiseState.AT_RISK.value, 0),
            "top": items,
        }

    @_guarded
    async def closed_before(self, before: datetime, limit: int) -> list[tuple[str, str]]:
        """(item id, kind) of closed promises last changed before `before`: to tombstone."""
        rows = await self._pool.fetch(_CLOSED_BEFORE, before, limit)
        return [(row["item_id"], row["promise_kind"]) for row in rows]


def _shown(raw: str | dict[str, Any], now: datetime) -> dict[str, Any]:
    """A stored record with its times left or overdue recomputed at `now` (or at its own
    change, if that is later: accelerated runs publish event times ahead of the wall clock)."""
    record: dict[str, Any] = orjson.loads(raw) if isinstance(raw, str) else dict(raw)
    if record.get("state") == PromiseState.CLOSED.value:
        return record
    at = max(now, datetime.fromisoformat(record["changed_at"]))
    due = datetime.fromisoformat(record["due_at"])
    if record.get("state") == PromiseState.OVERDUE.value or at >= due:
        record["overdue_by_seconds"] = (at - due).total_seconds()
        record.pop("time_left_seconds", None)
    else:
        record["time_left_seconds"] = (due - at).total_seconds()
        record.pop("overdue_by_seconds", None)
    record["as_of"] = at.isoformat()
    return record


def _write_cursor(sort: str, due: datetime, item_id: str, kind: str) -> str:
    raw = orjson.dumps([sort, due.isoformat(), item_id, kind])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_cursor(cursor: str, sort: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for, due, item_id, kind = orjson.loads(raw)
        if made_for != sort or not isinstance(item_id, str) or not isinstance(kind, str):
            raise ValueError(made_for)
        return [datetime.fromisoformat(due), item_id, kind]
    except (ValueError, TypeError) as exc:
        raise BadCursor(f"cursor {cursor[:40]!r} is not one this list handed out") from exc


_HELD = """
SELECT p.item_id, p.promise_kind, p.state, p.due_at
FROM promises AS p
JOIN unnest($1::text[], $2::text[]) AS k (item_id, promise_kind) USING (item_id, promise_kind)
FOR UPDATE OF p
"""

_UPSERT = """
INSERT INTO promises (item_id, promise_kind, state, segment, due_at, changed_at, record)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[], $6::timestamptz[],
    $7::jsonb[]
)
ON CONFLICT (item_id, promise_kind) DO UPDATE SET
    state = excluded.state,
    segment = excluded.segment,
    due_at = excluded.due_at,
    changed_at = excluded.changed_at,
    record = excluded.record
"""

_DELETE = """
DELETE FROM promises AS p
USING unnest($1::text[], $2::text[]) AS k (item_id, promise_kind)
WHERE p.item_id = k.item_id AND p.promise_kind = k.promise_kind
"""

_DELETE_HISTORY = """
DELETE FROM promise_history AS h
USING unnest($1::text[], $2::text[]) AS k (item_id, promise_kind)
WHERE h.item_id = k.item_id AND h.promise_kind = k.promise_kind
"""

_INSERT_HISTORY = """
INSERT INTO promise_history (item_id, promise_kind, state, due_at, changed_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
"""

_PAGE = """
SELECT item_id, promise_kind, due_at, record FROM promises
WHERE ($1::text[] IS NULL OR state = ANY($1::text[]))
  AND ($2::text[] IS NULL OR promise_kind = ANY($2::text[]))
  AND segment @> $3::jsonb
  AND ($4::timestamptz IS NULL OR (due_at, item_id, promise_kind) {cmp} ($4, $5::text, $6::text))
ORDER BY due_at {direction}, item_id {direction}, promise_kind {direction}
LIMIT $7
"""

_COUNTS = """
SELECT state, count(*) AS n FROM promises
WHERE ($1::text[] IS NULL OR promise_kind = ANY($1::text[])) AND segment @> $2::jsonb
  AND state IN ('overdue', 'at_risk')
GROUP BY state
"""

_TOP = """
SELECT record FROM promises
WHERE ($1::text[] IS NULL OR promise_kind = ANY($1::text[])) AND segment @> $2::jsonb
  AND state IN ('overdue', 'at_risk')
ORDER BY (state = 'overdue') DESC, due_at ASC, item_id ASC
LIMIT $3
"""

_CLOSED_BEFORE = """
SELECT item_id, promise_kind FROM promises
WHERE state = 'closed' AND changed_at < $1
ORDER BY changed_at
LIMIT $2
"""
