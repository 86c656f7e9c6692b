"""The alerter's HTTP API and process wiring: evaluation, outbox delivery and re-sends."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Annotated, Any, TypeVar

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as FastApiPath
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

import gapwatch
from gapwatch.core.alerts.lifecycle import Alert, AlertState
from gapwatch.core.alerts.rules import AlertsConfig
from gapwatch.core.fields import Timestamp
from gapwatch.kafka.clients import admin_client, reliable_producer
from gapwatch.problems import PROBLEM_TYPE
from gapwatch_alerter.body_guard import BodyGuard
from gapwatch_alerter.dispatcher import AlertmanagerResender, Dispatcher
from gapwatch_alerter.engine import Engine
from gapwatch_alerter.metrics import AlerterMetrics
from gapwatch_alerter.openapi import problem_openapi
from gapwatch_alerter.promise_store import PromiseStore
from gapwatch_alerter.promise_view import PromiseView
from gapwatch_alerter.promises_api import promises_router
from gapwatch_alerter.receivers import build_receivers
from gapwatch_alerter.settings import AlerterSettings
from gapwatch_alerter.store import AlertStore, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

LABEL_FILTER = r"^[a-z][a-z0-9_]{0,63}=[^\x00-\x1f]{1,128}$"


class SilenceRequest(BaseModel):
    """A silence: transitions of matching alerts are recorded but not notified until it ends."""

    model_config = ConfigDict(extra="forbid")

    matchers: dict[
        Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")],
        Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")],
    ] = Field(
        min_length=1,
        max_length=16,
        description="Label → exact value; `alertname` matches the rule name.",
    )
    # The contracts' timestamp (1900-9000 UTC): a year-1 or year-9999 edge overflowed in the
    # duration arithmetic below and answered 500.
    starts_at: Timestamp | None = Field(default=None, description="Default: now.")
    ends_at: Timestamp | None = Field(default=None, description="Or give duration_seconds.")
    duration_seconds: float | None = Field(default=None, gt=0, le=90 * 86400, allow_inf_nan=False)
    created_by: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    comment: str = Field(min_length=1, max_length=1000, pattern=r"^[^\x00]+$")

    @model_validator(mode="after")
    def _one_end(self) -> SilenceRequest:
        if (self.ends_at is None) == (self.duration_seconds is None):
            raise ValueError("give exactly one of ends_at and duration_seconds")
        return self


def _alert_json(alert: Alert) -> dict[str, Any]:
    def iso(t: datetime | None) -> str | None:
        return None if t is None else t.isoformat().replace("+00:00", "Z")

    return {
        "fingerprint": alert.fingerprint,
        "rule": alert.rule,
        "labels": alert.labels,
        "state": alert.state.value,
        "severity": alert.severity.value,
        "summary": alert.summary,
        "figures": alert.figures,
        "window": alert.window,
        "latest_breached": list(alert.latest_breached),
        "pending_since": iso(alert.pending_since),
        "firing_since": iso(alert.firing_since),
        "resolved_at": iso(alert.resolved_at),
        "evaluated_at": iso(alert.evaluated_at),
        "transitions": alert.sequence,
    }


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def create_app(
    settings: AlerterSettings,
    config: AlertsConfig,
    registry: CollectorRegistry | None = None,
    env: dict[str, str] | None = None,
) -> FastAPI:
    """Build the ASGI app; PostgreSQL and Kafka are connected when it starts."""
    config = config.with_link_bases(settings.runbook_base_url, settings.grafana_url)
    registry = registry if registry is not None else CollectorRegistry()
    metrics = AlerterMetrics(registry)
    tokens = settings.tokens()
    env = dict(os.environ) if env is None else env
    http = httpx.AsyncClient(follow_redirects=False)
    receivers = build_receivers(config, env, http, alerter_url=settings.alerter_public_url)
    holder: dict[str, Any] = {}

    def store() -> AlertStore:
        found = holder.get("store")
        if found is None:
            raise HTTPException(503, "PostgreSQL not connected yet")
        return found  # type: ignore[no-any-return]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Connecting happens in the background, retried until PostgreSQL and Kafka answer: an
        # alerter started before its database (or during a restart of it) waits, serving
        # /healthz and a /readyz that says what it waits for, instead of exiting.
        stops: list[Callable[[], Awaitable[None]]] = []  # run in reverse order at shutdown
        tasks: list[asyncio.Task[None]] = []

        async def start() -> None:
            the_store = await until_connected("PostgreSQL", lambda: _open_store(settings))
            stops.append(the_store.close)
            holder["store"] = the_store  # the API and /readyz need only this, not Kafka
            holder["promises"] = PromiseStore(the_store)
            producer = await until_connected("Kafka", lambda: _start_producer(settings))
            stops.append(producer.stop)
            engine = Engine(settings, config, the_store, producer, metrics)
            engine.promises = holder["promises"]
            view = PromiseView(
                settings, holder["promises"], producer, metrics, lambda: engine.leading
            )
            app.state.promise_view = view
            dispatcher = Dispatcher(settings, config, the_store, receivers, producer, metrics)
            stops.append(dispatcher.stop)
            resender = AlertmanagerResender(config, the_store, receivers, lambda: engine.leading)
            holder.update(engine=engine, producer=producer)
            app.state.engine = engine
            for name, loop in (
                ("engine", engine.run()),
                ("dispatcher", dispatcher.run()),
                ("resender", resender.run()),
                ("promises", view.run()),
            ):
                task = asyncio.create_task(loop, name=name)
                task.add_done_callback(_crash_loudly)
                tasks.append(task)

        startup = asyncio.create_task(start(), name="startup")
        startup.add_done_callback(_crash_loudly)
        try:
            yield
        finally:
            for task in (startup, *tasks):
                task.cancel()
            for task in (startup, *tasks):
                with suppress(asyncio.CancelledError):
                    await task
            for stop in reversed(stops):
                await stop()
            await http.aclose()

    app = FastAPI(
        title="gapwatch alerter",
        version=gapwatch.__version__,
        description="Alerts on the gap between promised and delivered response times: current "
        "alerts with their history, silences, health and metrics.",
        lifespan=lifespan,
    )
    app.state.registry = registry

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own answer quotes every input whole: a 20 MB body came back as 60 MB, and
        # a NaN could not be written as JSON at all (a 500). Paths and reasons only, bounded.
        errors = [
            {
                "path": ".".join(str(part) for part in err.get("loc", ())),
                "code": str(err.get("type", "")),
                "reason": str(err.get("msg", ""))[:300],
            }
            for err in exc.errors()[:50]
        ]
        body = {
            "type": "about:blank",
            "title": "Unprocessable Content",
            "status": 422,
            "detail": f"{len(exc.errors())} invalid fields",
            "errors": errors,
        }
        return Response(orjson.dumps(body), 422, media_type=PROBLEM_TYPE)

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(_: Request, exc: StarletteHTTPException) -> Response:
        body = {
            "type": "about:blank",
            "title": HTTPStatus(exc.status_code).phrase,
            "status": exc.status_code,
            "detail": str(exc.detail)[:500],
        }
        return Response(orjson.dumps(body), exc.status_code, exc.headers, PROBLEM_TYPE)

    app.openapi = lambda: problem_openapi(app)  # type: ignore[method-assign]

    def promises() -> PromiseStore:
        found = holder.get("promises")
        if found is None:
            raise HTTPException(503, "PostgreSQL not connected yet")
        return found  # type: ignore[no-any-return]

    app.include_router(promises_router(promises))

    def token_ok(header: str) -> bool:
        if settings.alerter_auth_disabled:
            return True
        scheme, _, token = header.partition(" ")
        presented = token.strip().encode()
        matched = False
        for known in tokens:
            matched |= hmac.compare_digest(presented, known)
        return scheme.lower() == "bearer" and bool(presented) and matched

    # Writes are checked before FastAPI reads their body: the token, then the size.
    app.add_middleware(
        BodyGuard, authorized=token_ok, max_body_bytes=settings.alerter_max_body_bytes
    )

    def authorize(request: Request) -> None:
        if not token_ok(request.headers.get("authorization", "")):
            raise HTTPException(
                401,
                "a valid bearer token is required",
                headers={"WWW-Authenticate": 'Bearer realm="gapwatch-alerter"'},
            )

    @app.get("/v1/alerts", summary="Current alerts (not inactive), newest first")
    async def list_alerts(
        state: AlertState | None = None,
        rule: Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")] = None,
        label: Annotated[
            list[str] | None, Query(description="label=value, repeatable; all must match.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> Response:
        labels: dict[str, str] = {}
        for item in label or []:
            name, sep, value = item.partition("=")
            if not sep or not name or not value or not re.fullmatch(LABEL_FILTER, item):
                raise HTTPException(422, f"label filter {item!r}: expected label=value")
            labels[name] = value
        try:
            found = await store().list_alerts(
                state=None if state is None else state.value,
                rule=rule,
                labels=labels or None,
                limit=limit,
            )
        except StoreUnavailable:
            raise HTTPException(503, "PostgreSQL unavailable") from None
        return _json({"alerts": [_alert_json(a) for a in found]})

    @app.get(
        "/v1/alerts/{fingerprint}",
        summary="One alert with its transitions and their deliveries",
        responses={404: {"description": "No such alert"}},
    )
    async def get_alert(
        fingerprint: Annotated[str, FastApiPath(pattern=r"^[0-9a-f]{1,64}$")],
        history: int = Query(default=50, ge=1, le=500),
    ) -> Response:
        try:
            alert = await store().get_alert(fingerprint)
            if alert is None:
                raise HTTPException(404, f"no alert {fingerprint!r}")
            transitions = await store().history(fingerprint, limit=history)
            body = _alert_json(alert)
            rule = next((r for r in config.rules if r.name == alert.rule), None)
            kinds = [k.value for k in rule.promise_kinds] if rule is not None else []
            # The promises behind it now, from the promises view (the page carries them as
            # they were when it was sent).
            body["items"] = await promises().behind_page(
                alert.labels, kinds, settings.alerter_page_items, datetime.now(UTC)
            )
            body["history"] = [
                {
                    **t.as_dict(),
                    "silenced": silenced,
                    "deliveries": _deliveries_json(await store().deliveries_of(t.id)),
                }
                for t, silenced in transitions
            ]
        except StoreUnavailable:
            raise HTTPException(503, "PostgreSQL unavailable") from None
        return _json(body)

    @app.post(
        "/v1/silences",
        status_code=201,
        summary="Create a silence",
        dependencies=[Depends(authorize)],
        responses={401: {"description": "Missing or wrong token"}},
    )
    async def create_silence(body: SilenceRequest) -> Response:
        now = datetime.now(UTC)
        starts = body.starts_at or now
        ends = body.ends_at or starts + timedelta(seconds=body.duration_seconds or 0)
        if ends <= starts:
            raise HTTPException(422, "ends_at must be after starts_at")
        if ends <= now:
            # It would silence nothing: most likely a wrong date or time zone, said at once.
            raise HTTPException(
                422, f"ends_at {ends.isoformat()} is in the past: nothing to silence"
            )
        try:
            silence = await store().create_silence(
                body.matchers, starts, ends, body.created_by, body.comment
            )
        except StoreUnavailable:
            raise HTTPException(503, "PostgreSQL unavailable") from None
        return _json(silence.as_dict(), 201)

    @app.get("/v1/silences", summary="Silences, active and pending (expired on request)")
    async def list_silences(include_expired: bool = False) -> Response:
        try:
            found = await store().list_silences(include_expired=include_expired)
        except StoreUnavailable:
            raise HTTPException(503, "PostgreSQL unavailable") from None
        return _json({"silences": [s.as_dict() for s in found]})

    @app.delete(
        "/v1/silences/{silence_id}",
        summary="Expire a silence now",
        dependencies=[Depends(authorize)],
        responses={401: {"description": "Missing or wrong token"}, 404: {"description": "None"}},
    )
    async def expire_silence(silence_id: uuid.UUID) -> Response:
        try:
            silence = await store().expire_silence(str(silence_id))
        except StoreUnavailable:
            raise HTTPException(503, "PostgreSQL unavailable") from None
        if silence is None:
            raise HTTPException(404, f"no silence {silence_id}")
        return _json(silence.as_dict())

    @app.get("/healthz", summary="Liveness: the process serves requests")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: PostgreSQL and Kafka answer right now",
        responses={503: {"description": "A dependency is unreachable"}},
    )
    async def readyz() -> Response:
        checks = {"postgresql": "ok", "kafka": "ok"}
        try:
            await asyncio.wait_for(store().ping(), timeout=2.0)
        except (StoreUnavailable, HTTPException, TimeoutError):
            checks["postgresql"] = "unreachable"
        if not await _kafka_ready(settings):
            checks["kafka"] = "unreachable"
        engine = holder.get("engine")
        ready = all(v == "ok" for v in checks.values())
        body = {
            "status": "ready" if ready else "not ready",
            **checks,
            "leader": bool(engine and engine.leading),
        }
        return _json(body, 200 if ready else 503)

    @app.get(
        "/metrics", summary="Prometheus metrics", responses={200: {"content": {"text/plain": {}}}}
    )
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _deliveries_json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        item = dict(row)
        for key, value in item.items():
            if isinstance(value, datetime):
                item[key] = value.isoformat().replace("+00:00", "Z")
        out.append(item)
    return out


async def _kafka_ready(settings: AlerterSettings) -> bool:
    client = admin_client(settings, request_timeout_ms=2000)
    try:
        await asyncio.wait_for(client.start(), timeout=3.0)
        await asyncio.wait_for(client.describe_cluster(), timeout=3.0)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready", and the probe says so
        return False
    finally:
        with suppress(Exception):
            await client.close()


CONNECT_BACKOFF_MAX_SECONDS = 15.0


async def until_connected(what: str, connect: Callable[[], Awaitable[T]]) -> T:
    """`connect()`, retried with backoff (1 s doubling to 15 s) while the failure is one that
    waiting can mend; each failure is logged with its reason."""
    delay = 1.0
    while True:
        try:
            return await connect()
        except (StoreUnavailable, KafkaError, OSError) as exc:
            log.warning("cannot connect to %s yet (%s); retrying in %.0f s", what, exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, CONNECT_BACKOFF_MAX_SECONDS)


async def _open_store(settings: AlerterSettings) -> AlertStore:
    """A connected store with every migration applied (closed again if migrating fails)."""
    store = await AlertStore.connect(
        settings.database_url.get_secret_value(), schema=settings.alerter_db_schema
    )
    try:
        applied = await store.migrate()
    except BaseException:
        await store.close()
        raise
    if applied:
        log.info("applied migrations %s", applied)
    return store


async def _start_producer(settings: AlerterSettings) -> AIOKafkaProducer:
    producer = reliable_producer(settings, client_id="gapwatch-alerter")
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


def _crash_loudly(task: asyncio.Task[None]) -> None:
    """A background loop that ends by error takes the process down: better than a silent zombie."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.critical("%s stopped: %r; exiting", task.get_name(), exc, exc_info=exc)
        os._exit(1)
