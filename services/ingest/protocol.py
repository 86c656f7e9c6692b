"""The ingest server's HTTP protocol: uvicorn's httptools one, with bounds on slow or huge heads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

Closed = Callable[[str], None]
CLOSE_REASONS = (
    "header_timeout",
    "header_too_large",
    "unread_body_timeout",
    "too_many_connections",
)


def bounded_protocol(
    *,
    header_timeout: float,
    max_header_bytes: int,
    body_timeout: float,
    max_connections: int = 1000,
    on_closed: Closed | None = None,
) -> type[BoundedHttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` with these bounds; `on_closed` is called
    with one of CLOSE_REASONS for every connection it cuts off."""
    attributes: dict[str, Any] = {
        "header_timeout": header_timeout,
        "max_header_bytes": max_header_bytes,
        "body_timeout": body_timeout,
        "max_connections": max_connections,
        "on_closed": staticmethod(on_closed or (lambda reason: None)),
    }
    return type("IngestHttpProtocol", (BoundedHttpToolsProtocol,), attributes)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Closes connections on which a client is too slow, or sends too much, where uvicorn would not.

    uvicorn waits for a request line and headers forever and buffers them without limit, and any
    byte received cancels its keep-alive timer until the next answer, so one byte a minute holds a
    connection open and a few megabytes of headers grow the process by hundreds. Here:

    - a request line plus headers must be complete within `header_timeout` seconds of the
      connection opening or of the first byte after the previous request, and at most
      `max_header_bytes` long; else 408 or 431 and the connection closes (a connection that
      sent nothing is closed without an answer);
    - a body nobody reads (the answer went out first: 401, 413, 415) must finish arriving within
      `body_timeout` seconds of the answer, else the connection closes;
    - at most `max_connections` connections are open at once: one more is answered 503 (with
      `Retry-After`) and closed as it opens, so many idle or slow clients cannot hold an
      unbounded number of sockets and buffers between them. (uvicorn's `limit_concurrency`
      answers 503 only once a request's headers are in, and keeps the connection.)

    Bodies the endpoint reads are bounded by the endpoint itself (same `body_timeout`).
    """

    header_timeout: float = 10.0
    max_header_bytes: int = 65_536
    body_timeout: float = 10.0
    max_connections: int = 1000

    @staticmethod
    def on_closed(reason: str) -> None:
        """Called with one of CLOSE_REASONS for every connection cut off here (for metrics)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_head = True  # the next bytes belong to a request line and headers
        self._head_bytes = 0
        self._heads = 0
        self._body_pending = False
        if len(self.connections) > self.max_connections:  # this one is already in the set
            self._refuse(
                "too_many_connections",
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the server holds its limit of {self.max_connections} open connections",
                retry_after=1,
            )
            return
        self._arm(self.header_timeout, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        heads = self._heads
        if self._reading_head:
            self._head_bytes += len(data)
            if self._deadline is None:
                self._arm(self.header_timeout, self._head_too_slow)
        super().data_received(data)
        # Count only while the same head is still incomplete: a chunk that completed a head may
        # also hold the start of the next one, which must not be charged to it.
        if (
            heads == self._heads
            and self._reading_head
            and self._head_bytes > self.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse(
                "header_too_large",
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"request line and headers over the {self.max_header_bytes}-byte limit",
            )

    def on_headers_complete(self) -> None:
        self._disarm()
        self._heads += 1
        self._reading_head = False
        self._head_bytes = 0
        self._body_pending = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_pending = False
        self._reading_head = True
        answered = self.cycle is not None and self.cycle.response_complete
        super().on_message_complete()
        if answered and self._deadline is not None and not self.transport.is_closing():
            # The unread body is in: wait for the next request as after any other answer
            # (uvicorn's keep-alive timer was cancelled by the body's bytes).
            self._disarm()
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._body_pending and not self.transport.is_closing():
            self._arm(self.body_timeout, self._unread_body_too_slow)

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._head_bytes == 0:  # not a byte of a request: nothing to answer
            self.on_closed("header_timeout")
            self.transport.close()
            return
        self._refuse(
            "header_timeout",
            HTTPStatus.REQUEST_TIMEOUT,
            f"request line and headers not received within {self.header_timeout:g}s",
        )

    def _unread_body_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.on_closed("unread_body_timeout")
            self.transport.close()

    def _refuse(
        self, reason: str, status: HTTPStatus, detail: str, retry_after: int | None = None
    ) -> None:
        """Answer with a problem document if no answer is under way on this connection; close."""
        self._disarm()
        self.on_closed(reason)
        if self.cycle is None or self.cycle.response_complete:
            body = orjson.dumps(
                {
                    "type": "about:blank",
                    "title": status.phrase,
                    "status": status.value,
                    "detail": detail,
                }
            )
            head = (
                f"HTTP/1.1 {status.value} {status.phrase}\r\n"
                "content-type: application/problem+json\r\n"
                f"content-length: {len(body)}\r\n"
                + (f"retry-after: {retry_after}\r\n" if retry_after is not None else "")
                + "connection: close\r\n\r\n"
            )
            self.transport.write(head.encode("ascii") + body)
        self.transport.close()
