"""The ingest HTTP API: POST /v1/events validates and produces; health, readiness and metrics."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Receive, Scope, Send

import gapwatch
from gapwatch.core.validation import FieldError, Rejection, validate_batch
from gapwatch_ingest.metrics import IngestMetrics
from gapwatch_ingest.openapi import add_ingest_paths
from gapwatch_ingest.publisher import EventPublisher, KafkaUnavailable
from gapwatch_ingest.settings import IngestSettings

log = logging.getLogger(__name__)

JSON_TYPES = frozenset(
    {"application/json", "application/cloudevents+json", "application/cloudevents-batch+json"}
)
RETRY_AFTER_SECONDS = 5


class Problem(Exception):
    """A request that ends with an RFC 9457 problem response."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers

    def response(self) -> Response:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            body["errors"] = [e.as_dict() for e in self.errors]
        return Response(
            orjson.dumps(body),
            status_code=self.status,
            media_type="application/problem+json",
            headers=self.headers,
        )


class EventsEndpoint:
    """POST /v1/events, step by step: auth, size, JSON, validation, produce."""

    def __init__(
        self, settings: IngestSettings, publisher: EventPublisher, metrics: IngestMetrics
    ) -> None:
        self._settings = settings
        self._publisher = publisher
        self._metrics = metrics
        self._tokens = settings.token_list()

    async def __call__(self, request: Request) -> Response:
        try:
            response = await self._accept(request)
        except Problem as problem:
            response = problem.response()
        except Exception:  # a bug: answer and count it like every other outcome
            log.exception("internal error on POST /v1/events")
            response = Problem(
                500, "Internal Server Error", "the event could not be handled; see the logs"
            ).response()
        self._metrics.requests.labels(str(response.status_code)).inc()
        return response

    def _authorize(self, request: Request) -> None:
        if self._settings.ingest_auth_disabled:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        presented = token.strip().encode()
        # Compare against every token so the time taken does not reveal which prefix matched.
        matched = False
        for known in self._tokens:
            matched |= hmac.compare_digest(presented, known)
        if scheme.lower() != "bearer" or not presented or not matched:
            raise Problem(
                401,
                "Unauthorized",
                "a valid bearer token is required",
                headers={"WWW-Authenticate": 'Bearer realm="gapwatch-ingest"'},
            )

    def _check_content_type(self, request: Request) -> None:
        raw = request.headers.get("content-type", "")
        media_type, _, params = raw.partition(";")
        media_type = media_type.strip().lower()
        charset = params.strip().lower().removeprefix("charset=").strip('"') if params else "utf-8"
        if media_type not in JSON_TYPES or charset not in ("utf-8", "utf8"):
            raise Problem(
                415,
                "Unsupported Media Type",
                f"content type {raw[:100]!r} is not accepted; send UTF-8 application/json "
                "(or application/cloudevents+json, application/cloudevents-batch+json)",
            )

    async def _read_body(self, request: Request) -> bytes:
        limit = self._settings.ingest_max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise Problem(400, "Bad Request", "Content-Length is not a number")
            if int(declared) > limit:
                self._metrics.events_rejected.labels("body_too_large").inc()
                raise Problem(413, "Content Too Large", f"body over the {limit}-byte limit")
        body = bytearray()
        try:
            async with asyncio.timeout(self._settings.ingest_body_timeout_seconds):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        self._metrics.events_rejected.labels("body_too_large").inc()
                        raise Problem(413, "Content Too Large", f"body over the {limit}-byte limit")
        except TimeoutError:
            raise Problem(
                408,
                "Request Timeout",
                f"body not received within {self._settings.ingest_body_timeout_seconds}s",
                headers={"Connection": "close"},
            ) from None
        return bytes(body)

    def _decode(self, body: bytes) -> list[Any]:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self._metrics.events_rejected.labels(Rejection.MALFORMED_JSON.value).inc()
            raise Problem(400, "Bad Request", f"body is not valid UTF-8 JSON: {exc}") from None
        if isinstance(value, dict):
            return [value]
        if isinstance(value, list):
            if not value:
                raise Problem(
                    422,
                    "Unprocessable Content",
                    "empty batch",
                    errors=[FieldError(0, "", "batch_empty", "a batch needs at least one event")],
                )
            limit = self._settings.ingest_max_batch_events
            if len(value) > limit:
                self._metrics.events_rejected.labels("batch_too_large").inc(len(value))
                raise Problem(
                    413, "Content Too Large", f"batch of {len(value)} events; the limit is {limit}"
                )
            return value
        self._metrics.events_rejected.labels(Rejection.NOT_AN_OBJECT.value).inc()
        raise Problem(
            422,
            "Unprocessable Content",
            "body must be an event object or an array of events",
            errors=[FieldError(0, "", "object_type", "expected a JSON object or array")],
        )

    async def _accept(self, request: Request) -> Response:
        self._authorize(request)
        self._check_content_type(request)
        values = self._decode(await self._read_body(request))
        result = validate_batch(values, self._settings.not_after())
        if result.errors:
            rejected = self._metrics.events_rejected
            for rejection, count in result.rejections.items():
                rejected.labels(rejection.value).inc(count)
            if result.events:
                rejected.labels("batch_rejected").inc(len(result.events))
            bad = sum(result.rejections.values())
            raise Problem(
                422,
                "Unprocessable Content",
                f"{bad} of {len(values)} events are invalid; no event of this request was accepted",
                errors=result.errors,
            )
        try:
            counts = await self._publisher.publish(result.events)
        except KafkaUnavailable as exc:
            self._metrics.events_rejected.labels("kafka_unavailable").inc(len(result.events))
            log.warning("answering 503: %s", exc)
            raise Problem(
                503,
                "Service Unavailable",
                f"{exc}; nothing of this request was acknowledged",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None
        for stream, count in counts.items():
            self._metrics.events_accepted.labels(stream.value).inc(count)
        self._metrics.batch_events.observe(len(result.events))
        return Response(
            orjson.dumps({"accepted": len(result.events)}),
            status_code=202,
            media_type="application/json",
        )


class EventsFastPath:
    """The ASGI app to serve: POST /v1/events goes straight to its endpoint, everything else
    (lifespan included) through FastAPI.

    The endpoint answers every outcome itself, problem documents included, so FastAPI's routing,
    dependency and middleware layers (about 7 % of the CPU under load, py-spy) only serve the
    other routes. The route stays registered with FastAPI for the OpenAPI document.
    """

    def __init__(self, app: FastAPI, events: EventsEndpoint) -> None:
        self.app = app
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/events" and scope["method"] == "POST":
            response = await self._events(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app(
    settings: IngestSettings,
    registry: CollectorRegistry | None = None,
    *,
    multiprocess: bool = False,
) -> FastAPI:
    """Build the ASGI app; Kafka is connected in the background when the app starts.

    `multiprocess`: this is one of several workers (PROMETHEUS_MULTIPROC_DIR is set); /metrics
    then shows the sum over all workers, live and gone, not this process's own values.
    """
    registry = registry if registry is not None else CollectorRegistry()
    metrics = IngestMetrics(registry)
    exposed = registry
    if multiprocess:
        # Sums over the workers; process_* figures cannot be summed that way, so they are
        # left out (read them per worker PID from the OS).
        exposed = CollectorRegistry()
        MultiProcessCollector(exposed)
    else:
        ProcessCollector(registry=registry)
    publisher = EventPublisher(settings, metrics)
    events = EventsEndpoint(settings, publisher, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await publisher.start()
        try:
            yield
        finally:
            await publisher.stop()

    app = FastAPI(
        title="gapwatch ingest",
        version=gapwatch.__version__,
        description="Accepts ticket, job and feedback events (CloudEvents 1.0, structured JSON) "
        "and produces them to Kafka. 202 means Kafka acknowledged every event of the request.",
        lifespan=lifespan,
    )
    app.state.publisher = publisher
    app.state.events = events
    app.state.registry = registry
    app.state.metrics = metrics

    app.add_api_route(
        "/v1/events",
        events,
        methods=["POST"],
        status_code=202,
        summary="Submit one event or a batch of events",
        description="A batch is all-or-nothing: if any event is invalid, none is produced "
        "(422 lists every error). 202 only after Kafka acknowledged every event.",
        include_in_schema=True,
    )

    @app.get("/healthz", summary="Liveness: the process serves requests")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: Kafka answers right now",
        responses={503: {"description": "Kafka is not reachable"}},
    )
    async def readyz() -> Response:
        ok = await publisher.ready()
        body = {"status": "ready" if ok else "kafka unreachable"}
        return Response(
            orjson.dumps(body), status_code=200 if ok else 503, media_type="application/json"
        )

    @app.get(
        "/metrics", summary="Prometheus metrics", responses={200: {"content": {"text/plain": {}}}}
    )
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(exposed), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = add_ingest_paths(spec, settings.ingest_max_batch_events)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
