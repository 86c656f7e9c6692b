"""Requests that write: the token is checked before the body is read, and the body is bounded.

FastAPI reads and parses a request body before its dependencies run, so a 150 MB POST without a
token was read, parsed and held (RSS 125 -> 547 MB) before the 401. This ASGI layer answers 401
from the headers alone and 413 as soon as the declared or received length passes the limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Asgi = Callable[..., Any]


class BodyGuard:
    def __init__(self, app: Asgi, authorized: Callable[[str], bool], max_body_bytes: int) -> None:
        self.app = app
        self.authorized = authorized
        self.limit = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Asgi, send: Asgi) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITES:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not self.authorized(headers.get("authorization", "")):
            await _problem(send, 401, "a valid bearer token is required", auth=True)
            return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _problem(send, 413, f"body over the {self.limit}-byte limit")
            return
        received = 0

        async def bounded() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, bounded, send)
        except _TooLarge:
            await _problem(send, 413, f"body over the {self.limit}-byte limit")


class _TooLarge(Exception):
    pass


async def _problem(send: Asgi, status: int, detail: str, *, auth: bool = False) -> None:
    title = {401: "Unauthorized", 413: "Content Too Large"}[status]
    body = orjson.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if auth:
        headers.append((b"www-authenticate", b'Bearer realm="gapwatch-alerter"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
