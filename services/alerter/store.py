"""The alerter's PostgreSQL store: alerts, transitions, the delivery outbox, offsets and silences.

Everything lives in one schema (a constructor parameter), created and versioned by `migrate`, which
applies `migrations/NNNN_name.sql` in order under an advisory lock, so two processes starting at
once apply each file exactly once.

`commit` is the evaluator's single write: alert states, the transitions they went through, the
deliveries those owe and the consumer offsets that produced them, all in one transaction, so a
crash either loses the whole evaluation (and it is redone from the stored offsets, with the same
transition ids) or keeps all of it.

Deliveries are an outbox: workers claim due rows with `FOR UPDATE SKIP LOCKED` and a lease (the row
comes back if the worker dies), then mark them delivered or failed with a retry time.

Connection problems surface as `StoreUnavailable` (retriable); everything else propagates as is.
JSON columns are passed to PostgreSQL as JSON text and read back decoded.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import asyncpg  # type: ignore[import-untyped]
import orjson

from gapwatch.core.alerts.lifecycle import Alert, AlertState, Transition
from gapwatch.core.alerts.rules import Severity

__all__ = [
    "AlertStore",
    "Delivery",
    "MigrationError",
    "Silence",
    "StoreUnavailable",
]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# The schema name also names the NOTIFY channel `<schema>_outbox`, which must fit in 63 bytes.
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,55}$")
_MIGRATION_FILE = re.compile(r"^(?P<version>[0-9]{4})_[a-z0-9_]+\.sql$")
_ERROR_CHARS = 500

P = ParamSpec("P")
R = TypeVar("R")


class StoreUnavailable(Exception):
    """PostgreSQL could not be reached or dropped the connection; retrying later can help."""

    retriable = True


class MigrationError(Exception):
    """The migrations on disk and those recorded in the database disagree; a retry cannot help."""

    retriable = False

    def __init__(self, message: str, file: str) -> None:
        super().__init__(message)
        self.file = file


# Errors that mean "the database is not there right now", not "the request is wrong". OSError
# covers refused and reset connections and timeouts (TimeoutError is an OSError).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


# Errors of a login the server refused (wrong password, no such role or database).
_REFUSED: tuple[type[BaseException], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
)


def _guarded(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn connection-level failures of `method` into `StoreUnavailable`."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (*_UNAVAILABLE, *_REFUSED) as exc:
            # A login refused when the pool reconnects (after a PostgreSQL restart, say) is an
            # outage to wait out too, not a reason for the process to end.
            raise StoreUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc

    return wrapper


@dataclass(frozen=True, slots=True)
class Delivery:
    """One claimed outbox row: a transition owed to one receiver."""

    id: int
    transition: Transition
    receiver: str
    attempts: int  # including the current one
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes notifications of matching alerts between `starts_at` and `ends_at`.

    `matchers` map a label to the exact value it must have; the key `alertname` matches the rule.
    """

    id: str
    matchers: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    created_at: datetime
    expired_at: datetime | None = None

    def matches(self, rule: str, labels: Mapping[str, str], now: datetime) -> bool:
        """Whether this silence is in force at `now` and every matcher holds for the alert."""
        if not self.starts_at <= now < self.ends_at:
            return False
        return all(
            (rule if key == "alertname" else labels.get(key)) == value
            for key, value in self.matchers.items()
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (ISO 8601 UTC times ending in Z)."""
        return {
            "id": self.id,
            "matchers": dict(self.matchers),
            "starts_at": _iso(self.starts_at),
            "ends_at": _iso(self.ends_at),
            "created_by": self.created_by,
            "comment": self.comment,
            "created_at": _iso(self.created_at),
            "expired_at": None if self.expired_at is None else _iso(self.expired_at),
        }


@dataclass(frozen=True, slots=True)
class _Migration:
    version: int
    name: str
    sql: str
    checksum: str


class AlertStore:
    """The alerter's state in one PostgreSQL schema, through an asyncpg pool."""

    def __init__(self, pool: Any, dsn: str, schema: str, connect_timeout: float) -> None:
        self._pool = pool
        self._dsn = dsn
        self._schema = schema
        self._connect_timeout = connect_timeout
        self._channel = f"{schema}_outbox"
        self._migrate_key = _advisory_key("migrate", schema)
        self._lead_key = _advisory_key("lead", schema)
        self._lead: Any = None
        self._listen: Any = None
        self._callbacks: list[Callable[[], None]] = []
        self._closed = False

    @classmethod
    @_guarded
    async def connect(
        cls,
        dsn: str,
        *,
        schema: str = "gapwatch",
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: float = 10.0,
    ) -> AlertStore:
        """Open a pool whose connections see only `schema` (which `migrate` creates)."""
        _check_schema(schema)
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout,
                server_settings=_server_settings(schema, "gapwatch-alerter"),
                init=_init_connection,
            )
        except (*_UNAVAILABLE, *_REFUSED) as exc:
            # A refused login is retriable too: the role or database may be being provisioned.
            raise StoreUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
        return cls(pool, dsn, schema, connect_timeout)

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding every table of this store."""
        return self._schema

    @property
    def pool(self) -> Any:
        """The connection pool, for the views kept beside the alerts (`promise_store`)."""
        return self._pool

    async def close(self) -> None:
        """Give up leadership, stop listening and close the pool; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self.release_lead()
        listen, self._listen = self._listen, None
        if listen is not None:
            await _close_connection(listen)
        try:
            await self._pool.close()
        except _UNAVAILABLE as exc:
            log.warning("closing the pool of schema %s abruptly: %r", self._schema, exc)
            self._pool.terminate()

    @_guarded
    async def ping(self) -> None:
        """Round-trip to PostgreSQL; raises `StoreUnavailable` if it cannot."""
        await self._pool.fetchval("SELECT 1")

    # -- migrations -------------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        """Apply the migrations not yet recorded, in order; returns the file names applied."""
        return await self._apply(_load_migrations(MIGRATIONS))

    @_guarded
    async def _apply(self, migrations: Sequence[_Migration]) -> list[str]:
        applied: list[str] = []
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                await self._lock_for_migration(conn)
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
                await self._use_schema(conn)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
            recorded = {int(row["version"]): str(row["checksum"]) for row in rows}
            known = {m.version for m in migrations}
            for row in rows:
                if row["version"] not in known:
                    log.warning(
                        "schema %s has migration %s (%s) that this code does not know",
                        self._schema,
                        row["version"],
                        row["name"],
                    )
            for migration in migrations:
                if migration.version in recorded:
                    _verify(migration, recorded[migration.version])
                    continue
                async with conn.transaction():
                    # Another process may have applied it while we waited for the lock.
                    await self._lock_for_migration(conn)
                    await self._use_schema(conn)
                    checksum = await conn.fetchval(
                        "SELECT checksum FROM schema_migrations WHERE version = $1",
                        migration.version,
                    )
                    if checksum is not None:
                        _verify(migration, str(checksum))
                        continue
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum, applied_at)"
                        " VALUES ($1, $2, $3, now())",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                applied.append(migration.name)
                log.info("schema %s: applied migration %s", self._schema, migration.name)
        return applied

    async def _lock_for_migration(self, conn: Any) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", self._migrate_key)

    async def _use_schema(self, conn: Any) -> None:
        # The pool's search_path already names the schema, but set it for this transaction too,
        # so a schema created a moment ago is used without relying on cache invalidation.
        await conn.execute("SELECT set_config('search_path', $1, true)", f'"{self._schema}"')

    # -- the evaluator's state --------------------------------------------------------------

    @_guarded
    async def load_alerts(self) -> dict[str, Alert]:
        """Every stored alert by fingerprint, inactive ones included."""
        rows = await self._pool.fetch(_SELECT_ALERTS)
        return {row["fingerprint"]: _alert(row) for row in rows}

    @_guarded
    async def load_offsets(self, topic: str) -> dict[int, int]:
        """The next offset to consume per partition of `topic`, as last committed."""
        rows = await self._pool.fetch(
            "SELECT partition, next_offset FROM consumer_offsets WHERE topic = $1", topic
        )
        return {int(row["partition"]): int(row["next_offset"]) for row in rows}

    @_guarded
    async def commit(
        self,
        alerts: Sequence[Alert],
        transitions: Sequence[Transition],
        deliveries: Sequence[tuple[str, str]],
        offsets: Mapping[tuple[str, int], int],
        silenced: Collection[str] = (),
    ) -> None:
        """Store one evaluation atomically: alerts, transitions, owed deliveries and offsets.

        Re-committing the same transitions or deliveries (after a crash) adds nothing; a
        (transition id, receiver) pair is delivered once. Listeners hear of new deliveries.
        """
        by_fingerprint = {alert.fingerprint: alert for alert in alerts}  # last one wins
        alert_columns = _alert_columns(by_fingerprint.values())
        muted = set(silenced)
        transition_columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
        for t in transitions:
            for column, value in zip(
                transition_columns,
                (
                    t.id,
                    t.fingerprint,
                    t.sequence,
                    t.to_state.value,
                    _utc(t.at, "Transition.at"),
                    t.id in muted,
                    _json(t.as_dict()),
                ),
                strict=True,
            ):
                column.append(value)
        async with self._pool.acquire() as conn, conn.transaction():
            if by_fingerprint:
                await conn.execute(_UPSERT_ALERTS, *alert_columns)
            if transitions:
                await conn.execute(_INSERT_TRANSITIONS, *transition_columns)
            if deliveries:
                await conn.execute(
                    _INSERT_OUTBOX,
                    [transition_id for transition_id, _ in deliveries],
                    [receiver for _, receiver in deliveries],
                )
            await write_offsets(conn, offsets)
            if deliveries:
                # Delivered at commit: workers wake only once the rows are visible.
                await conn.execute("SELECT pg_notify($1, '')", self._channel)

    # -- the outbox -------------------------------------------------------------------------

    @_guarded
    async def claim_deliveries(
        self, limit: int, lease_seconds: float, receivers: Collection[str] | None = None
    ) -> list[Delivery]:
        """Take up to `limit` due deliveries, oldest first, for `lease_seconds`.

        A claim hides the row from other claimers until the lease runs out, so a worker that
        dies holding it hands it back without anyone's help; `attempts` counts every claim.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if lease_seconds < 0:
            raise ValueError(f"lease_seconds must not be negative, got {lease_seconds}")
        wanted = None if receivers is None else sorted(set(receivers))
        if wanted == []:
            return []
        rows = await self._pool.fetch(_CLAIM, limit, float(lease_seconds), wanted)
        return sorted(
            (
                Delivery(
                    id=int(row["id"]),
                    transition=Transition.from_dict(row["body"]),
                    receiver=str(row["receiver"]),
                    attempts=int(row["attempts"]),
                    created_at=row["created_at"],
                )
                for row in rows
            ),
            key=lambda delivery: delivery.id,
        )

    @_guarded
    async def mark_delivered_many(self, delivery_ids: Collection[int]) -> None:
        """Record many successful deliveries at once (the Kafka publisher's batches)."""
        await self._pool.execute(
            "UPDATE outbox SET delivered_at = now() WHERE id = ANY($1::bigint[])"
            " AND delivered_at IS NULL",
            list(delivery_ids),
        )

    @_guarded
    async def mark_delivered(self, delivery_id: int, status: int | None) -> None:
        """Record a successful delivery (with the receiver's HTTP status, if any)."""
        await self._pool.execute(
            "UPDATE outbox SET delivered_at = now(), last_status = $2"
            " WHERE id = $1 AND delivered_at IS NULL",
            delivery_id,
            status,
        )

    @_guarded
    async def mark_failed(
        self, delivery_id: int, error: str, status: int | None, retry_at: datetime
    ) -> None:
        """Record a failed attempt and when to try again (the error is cut to 500 characters)."""
        await self._pool.execute(
            "UPDATE outbox SET last_error = $2, last_status = $3, next_attempt_at = $4"
            " WHERE id = $1 AND delivered_at IS NULL",
            delivery_id,
            error[:_ERROR_CHARS],
            status,
            _utc(retry_at, "retry_at"),
        )

    @_guarded
    async def outbox_depth(self) -> dict[str, int]:
        """Undelivered rows per receiver (receivers with none are absent)."""
        rows = await self._pool.fetch(
            "SELECT receiver, count(*) AS n FROM outbox WHERE delivered_at IS NULL"
            " GROUP BY receiver"
        )
        return {str(row["receiver"]): int(row["n"]) for row in rows}

    @_guarded
    async def oldest_undelivered_age(self) -> float | None:
        """Seconds since the oldest undelivered row was created, or None when all are delivered."""
        age = await self._pool.fetchval(
            "SELECT extract(epoch FROM now() - min(created_at))::float8 FROM outbox"
            " WHERE delivered_at IS NULL"
        )
        return None if age is None else float(age)

    @_guarded
    async def deliveries_of(self, transition_id: str) -> list[dict[str, Any]]:
        """Delivery status of one transition per receiver (times as UTC datetimes)."""
        key = _uuid_or_none(transition_id)
        if key is None:
            return []
        rows = await self._pool.fetch(
            "SELECT receiver, attempts, delivered_at, next_attempt_at, last_error, last_status"
            " FROM outbox WHERE transition_id = $1 ORDER BY receiver",
            key,
        )
        return [dict(row) for row in rows]

    # -- reading for the API ----------------------------------------------------------------

    @_guarded
    async def list_alerts(
        self,
        state: str | None = None,
        rule: str | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int = 500,
    ) -> list[Alert]:
        """Alerts by rule then fingerprint; inactive ones only when `state='inactive'` is asked."""
        if state is not None:
            state = AlertState(state).value  # an unknown state is a ValueError, not "no rows"
        rows = await self._pool.fetch(
            _SELECT_ALERTS
            + " WHERE (CASE WHEN $1::text IS NULL THEN state <> 'inactive' ELSE state = $1 END)"
            " AND ($2::text IS NULL OR rule = $2)"
            " AND ($3::jsonb IS NULL OR labels @> $3::jsonb)"
            " ORDER BY rule, fingerprint LIMIT $4",
            state,
            rule,
            None if labels is None else _json(dict(labels)),
            limit,
        )
        return [_alert(row) for row in rows]

    @_guarded
    async def get_alert(self, fp: str) -> Alert | None:
        """One alert by fingerprint, or None."""
        row = await self._pool.fetchrow(_SELECT_ALERTS + " WHERE fingerprint = $1", fp)
        return None if row is None else _alert(row)

    @_guarded
    async def history(self, fp: str, limit: int = 200) -> list[tuple[Transition, bool]]:
        """An alert's transitions, newest first, each with whether it was silenced."""
        rows = await self._pool.fetch(
            "SELECT body, silenced FROM transitions WHERE fingerprint = $1"
            " ORDER BY sequence DESC LIMIT $2",
            fp,
            limit,
        )
        return [(Transition.from_dict(row["body"]), bool(row["silenced"])) for row in rows]

    # -- silences ---------------------------------------------------------------------------

    @_guarded
    async def create_silence(
        self,
        matchers: Mapping[str, str],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> Silence:
        """Store a new silence; at least one matcher, and it must end after it starts."""
        if not matchers:
            raise ValueError("a silence needs at least one matcher (it would mute everything)")
        for key, value in matchers.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"matcher {key!r}: {value!r} must map a string to a string")
        starts_at = _utc(starts_at, "starts_at")
        ends_at = _utc(ends_at, "ends_at")
        if ends_at <= starts_at:
            raise ValueError(f"ends_at {_iso(ends_at)} is not after starts_at {_iso(starts_at)}")
        row = await self._pool.fetchrow(
            "INSERT INTO silences (id, matchers, starts_at, ends_at, created_by, comment)"
            " VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            uuid.uuid4(),
            _json(dict(matchers)),
            starts_at,
            ends_at,
            created_by,
            comment,
        )
        return _silence(row)

    @_guarded
    async def list_silences(self, include_expired: bool = False) -> list[Silence]:
        """Silences not yet over (or all of them), newest first."""
        rows = await self._pool.fetch(
            "SELECT * FROM silences WHERE $1 OR ends_at > now() ORDER BY created_at DESC, id",
            include_expired,
        )
        return [_silence(row) for row in rows]

    @_guarded
    async def expire_silence(self, id: str) -> Silence | None:
        """End a silence now (kept for the record); None if there is no such silence."""
        key = _uuid_or_none(id)
        if key is None:
            return None
        row = await self._pool.fetchrow(
            "UPDATE silences SET expired_at = coalesce(expired_at, now()),"
            " ends_at = least(ends_at, now())"
            " WHERE id = $1 RETURNING *",
            key,
        )
        return None if row is None else _silence(row)

    @_guarded
    async def active_silences(self, now: datetime) -> list[Silence]:
        """Silences in force at `now`."""
        rows = await self._pool.fetch(
            "SELECT * FROM silences WHERE starts_at <= $1 AND ends_at > $1 ORDER BY created_at, id",
            _utc(now, "now"),
        )
        return [_silence(row) for row in rows]

    # -- leadership and notifications -------------------------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this store holds the evaluator lock on a connection that is still open."""
        return self._lead is not None and not self._lead.is_closed()

    @_guarded
    async def try_lead(self) -> bool:
        """Try to become the single evaluator for this schema; True if this store now leads.

        The lock is a session advisory lock on a connection of its own: it lasts exactly as long
        as that connection, so a crashed or partitioned leader loses it with its session.
        """
        if self.leading:
            return True
        self._lead = None
        conn = await self._dedicated("gapwatch-alerter-lead")
        try:
            got = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._lead_key))
        except BaseException:
            conn.terminate()
            raise
        if not got:
            await _close_connection(conn)
            return False
        conn.add_termination_listener(self._lead_lost)
        self._lead = conn
        log.info("leading the evaluation of schema %s", self._schema)
        return True

    async def release_lead(self) -> None:
        """Give up leadership, if held; the lock goes with the connection in any case."""
        conn, self._lead = self._lead, None
        if conn is None or conn.is_closed():
            return
        conn.remove_termination_listener(self._lead_lost)
        try:
            # Unlock before closing: closing returns before the server has ended the session,
            # and the next leader should not have to wait for that.
            await conn.execute("SELECT pg_advisory_unlock($1)", self._lead_key)
        except _UNAVAILABLE as exc:
            log.warning("leadership of %s ends with its broken connection: %r", self._schema, exc)
            conn.terminate()
            return
        await _close_connection(conn)
        log.info("stopped leading the evaluation of schema %s", self._schema)

    def _lead_lost(self, conn: Any) -> None:
        log.warning("lost the connection holding the lead of schema %s", self._schema)

    @property
    def listening(self) -> bool:
        """Whether the connection that receives outbox notifications is open."""
        return self._listen is not None and not self._listen.is_closed()

    @_guarded
    async def listen_outbox(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever a commit adds deliveries; calling again is harmless.

        Notifications are a hint, not a guarantee: they stop if the listening connection is lost
        (`listening` turns false; call again to resume every callback), so poll now and then too.
        """
        if callback not in self._callbacks:
            self._callbacks.append(callback)
        if self.listening:
            return
        conn = await self._dedicated("gapwatch-alerter-listen")
        try:
            await conn.add_listener(self._channel, self._notified)
        except BaseException:
            conn.terminate()
            raise
        self._listen = conn

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        for callback in list(self._callbacks):
            callback()

    async def _dedicated(self, application_name: str) -> Any:
        return await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout,
            server_settings=_server_settings(self._schema, application_name),
        )


# -- SQL ------------------------------------------------------------------------------------

_SELECT_ALERTS = """
SELECT fingerprint, rule, labels, state, severity, sequence, pending_since, firing_since,
    clear_since, resolved_at, evaluated_at, summary, figures, "window", latest_breached
FROM alerts
"""

_UPSERT_ALERTS = """
INSERT INTO alerts (
    fingerprint, rule, labels, state, severity, sequence, pending_since, firing_since,
    clear_since, resolved_at, evaluated_at, summary, figures, "window", latest_breached, updated_at
)
SELECT u.*, now() FROM unnest(
    $1::text[], $2::text[], $3::jsonb[], $4::text[], $5::text[], $6::integer[],
    $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[],
    $11::timestamptz[], $12::text[], $13::jsonb[], $14::text[], $15::jsonb[]
) AS u
ON CONFLICT (fingerprint) DO UPDATE SET
    rule = excluded.rule,
    labels = excluded.labels,
    state = excluded.state,
    severity = excluded.severity,
    sequence = excluded.sequence,
    pending_since = excluded.pending_since,
    firing_since = excluded.firing_since,
    clear_since = excluded.clear_since,
    resolved_at = excluded.resolved_at,
    evaluated_at = excluded.evaluated_at,
    summary = excluded.summary,
    figures = excluded.figures,
    "window" = excluded."window",
    latest_breached = excluded.latest_breached,
    updated_at = excluded.updated_at
"""

_INSERT_TRANSITIONS = """
INSERT INTO transitions (id, fingerprint, sequence, to_state, at, silenced, body)
SELECT * FROM unnest(
    $1::uuid[], $2::text[], $3::integer[], $4::text[], $5::timestamptz[], $6::boolean[],
    $7::jsonb[]
)
ON CONFLICT (id) DO NOTHING
"""

_INSERT_OUTBOX = """
INSERT INTO outbox (transition_id, receiver, next_attempt_at)
SELECT u.transition_id, u.receiver, now()
FROM unnest($1::uuid[], $2::text[]) AS u (transition_id, receiver)
ON CONFLICT (transition_id, receiver) DO NOTHING
"""

_UPSERT_OFFSETS = """
INSERT INTO consumer_offsets (topic, partition, next_offset)
SELECT * FROM unnest($1::text[], $2::integer[], $3::bigint[])
ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset
"""

_CLAIM = """
WITH due AS (
    SELECT id FROM outbox
    WHERE delivered_at IS NULL AND next_attempt_at <= now()
      AND ($3::text[] IS NULL OR receiver = ANY($3::text[]))
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox AS o
SET attempts = o.attempts + 1, next_attempt_at = now() + make_interval(secs => $2::float8)
FROM due, transitions AS t
WHERE o.id = due.id AND t.id = o.transition_id
RETURNING o.id, o.receiver, o.attempts, o.created_at, t.body
"""


# -- helpers --------------------------------------------------------------------------------


async def write_offsets(conn: Any, offsets: Mapping[tuple[str, int], int]) -> None:
    """Store (topic, partition) -> next offset in `conn`'s transaction, with what they read."""
    if offsets:
        await conn.execute(
            _UPSERT_OFFSETS,
            [topic for topic, _ in offsets],
            [partition for _, partition in offsets],
            list(offsets.values()),
        )


def _check_schema(schema: str) -> None:
    if not _SCHEMA.fullmatch(schema) or schema.startswith("pg_"):
        raise ValueError(
            f"schema {schema!r} is not a plain identifier: lower-case letters, digits and"
            " underscores, at most 56 characters, not starting with a digit or pg_"
        )


def _server_settings(schema: str, application_name: str) -> dict[str, str]:
    return {"search_path": f'"{schema}"', "application_name": application_name}


async def _init_connection(conn: Any) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_json_text, decoder=orjson.loads, format="text"
    )


def _json_text(value: Any) -> str:
    # Callers encode JSON themselves (`_json`): asyncpg would take a list for a nested array.
    if not isinstance(value, str):
        raise TypeError(f"jsonb parameters are passed as JSON text, got {type(value).__name__}")
    return value


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _close_connection(conn: Any) -> None:
    if conn.is_closed():
        return
    try:
        await conn.close(timeout=5)
    except _UNAVAILABLE as exc:
        log.debug("closing a broken connection: %r", exc)
        conn.terminate()


def _advisory_key(purpose: str, schema: str) -> int:
    """A 64-bit advisory lock key owned by this store's `purpose` in `schema`."""
    digest = hashlib.sha256(f"gapwatch.alerter:{purpose}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _load_migrations(folder: Path) -> list[_Migration]:
    migrations: dict[int, _Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_FILE.fullmatch(path.name)
        if match is None:
            raise MigrationError(
                f"migration file {path.name} is not named NNNN_lower_case_name.sql", path.name
            )
        version = int(match["version"])
        if version in migrations:
            raise MigrationError(
                f"{path.name} and {migrations[version].name} share version {version}", path.name
            )
        data = path.read_bytes()
        migrations[version] = _Migration(
            version, path.name, data.decode(), hashlib.sha256(data).hexdigest()
        )
    if not migrations:
        raise MigrationError(f"no migrations in {folder}", str(folder))
    return [migrations[version] for version in sorted(migrations)]


def _verify(migration: _Migration, recorded_checksum: str) -> None:
    if recorded_checksum != migration.checksum:
        raise MigrationError(
            f"migration {migration.name} changed after it was applied (recorded checksum"
            f" {recorded_checksum[:12]}…, file {migration.checksum[:12]}…): add a new migration"
            " instead of editing an applied one",
            migration.name,
        )


def _alert_columns(alerts: Collection[Alert]) -> tuple[list[Any], ...]:
    columns: tuple[list[Any], ...] = tuple([] for _ in range(15))
    for a in alerts:
        values = (
            a.fingerprint,
            a.rule,
            _json(a.labels),
            a.state.value,
            a.severity.value,
            a.sequence,
            _utc_or_none(a.pending_since, "Alert.pending_since"),
            _utc_or_none(a.firing_since, "Alert.firing_since"),
            _utc_or_none(a.clear_since, "Alert.clear_since"),
            _utc_or_none(a.resolved_at, "Alert.resolved_at"),
            _utc_or_none(a.evaluated_at, "Alert.evaluated_at"),
            a.summary,
            _json(a.figures),
            a.window,
            _json(list(a.latest_breached)),
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


def _alert(row: Any) -> Alert:
    return Alert(
        fingerprint=row["fingerprint"],
        rule=row["rule"],
        labels=row["labels"],
        state=AlertState(row["state"]),
        severity=Severity(row["severity"]),
        sequence=row["sequence"],
        pending_since=row["pending_since"],
        firing_since=row["firing_since"],
        clear_since=row["clear_since"],
        resolved_at=row["resolved_at"],
        evaluated_at=row["evaluated_at"],
        summary=row["summary"],
        figures=row["figures"],
        window=row["window"],
        latest_breached=tuple(row["latest_breached"]),
    )


def _silence(row: Any) -> Silence:
    return Silence(
        id=str(row["id"]),
        matchers=row["matchers"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        created_by=row["created_by"],
        comment=row["comment"],
        created_at=row["created_at"],
        expired_at=row["expired_at"],
    )


def _uuid_or_none(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def _utc(t: datetime, what: str) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {t.isoformat()}")
    return t.astimezone(UTC)


def _utc_or_none(t: datetime | None, what: str) -> datetime | None:
    return None if t is None else _utc(t, what)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")
