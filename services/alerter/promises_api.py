"""`/v1/promises`: the open promises behind the alerts, filtered by segment, state and kind."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response

from gapwatch.core.promise_states import PromiseState
from gapwatch.core.promises import PromiseKind
from gapwatch_alerter.promise_store import SORTS, BadCursor, PromiseQuery, PromiseStore
from gapwatch_alerter.store import StoreUnavailable

RESERVED = frozenset({"state", "kind", "sort", "limit", "cursor"})
"""Query parameters of the list itself; every other one filters on a segment label."""
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_LABEL_VALUE = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
_ITEM_ID = re.compile(r"^[A-Za-z0-9._:@/+#-]{1,128}$")


def _split(values: list[str]) -> list[str]:
    return [v for value in values for v in value.split(",") if v]


def _choices(
    name: str, values: list[str], allowed: type[PromiseState] | type[PromiseKind]
) -> list[str]:
    known = {member.value for member in allowed}
    wrong = [v for v in values if v not in known]
    if wrong:
        raise HTTPException(
            422, f"{name}: {wrong[0][:64]!r} is not one of {', '.join(sorted(known))}"
        )
    return values


def promises_router(promises: Callable[[], PromiseStore]) -> APIRouter:
    """The routes, reading the view through `promises` (503 until PostgreSQL is connected)."""
    router = APIRouter(tags=["promises"])

    @router.get(
        "/v1/promises",
        summary="Promises in the view, filtered and sorted, one page at a time",
        description="Filters: `state` and `kind` (repeated or comma-separated), and any other "
        "parameter names a segment label (`team=billing&region=emea`). Sorts: "
        + ", ".join(f"`{s}`" for s in SORTS)
        + ". Times left and overdue are as of the answer. `next_cursor`, when present, "
        "fetches the next page with the same filters and sort.",
    )
    async def list_promises(
        request: Request,
        state: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI's way for lists
        kind: Annotated[list[str], Query()] = [],  # noqa: B006
        sort: Annotated[str, Query()] = "-overdue_by",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> Response:
        if sort not in SORTS:
            raise HTTPException(422, f"sort: {sort[:64]!r} is not one of {', '.join(SORTS)}")
        labels: dict[str, str] = {}
        for key, value in request.query_params.multi_items():
            if key in RESERVED:
                continue
            if not _LABEL_KEY.fullmatch(key):
                raise HTTPException(422, f"{key[:64]!r}: not a label name (a-z, 0-9, _)")
            if not _LABEL_VALUE.fullmatch(value):
                raise HTTPException(422, f"{key}: a label value is 1-128 printable characters")
            if key in labels and labels[key] != value:
                raise HTTPException(422, f"{key}: one value per label")
            labels[key] = value
        query = PromiseQuery(
            labels=labels,
            states=_choices("state", _split(state), PromiseState),
            kinds=_choices("kind", _split(kind), PromiseKind),
            sort=sort,
            limit=limit,
            cursor=cursor,
        )
        now = datetime.now(UTC)
        try:
            page = await promises().page(query, now)
        except BadCursor as exc:
            raise HTTPException(422, f"cursor: {exc}") from None
        except StoreUnavailable:
            raise HTTPException(503, "PostgreSQL unavailable") from None
        body: dict[str, Any] = {"as_of": now.isoformat(), "promises": page.promises}
        if page.next_cursor is not None:
            body["next_cursor"] = page.next_cursor
        return Response(orjson.dumps(body), media_type="application/json")

    @router.get(
        "/v1/promises/{item_id:path}",
        summary="Every promise of one item, each with its state history",
    )
    async def item_promises(item_id: Annotated[str, Path(max_length=128)]) -> Response:
        if not _ITEM_ID.fullmatch(item_id):
            raise HTTPException(422, "item_id: 1-128 of A-Z a-z 0-9 . _ : @ / + # -")
        try:
            found = await promises().of_item(item_id, datetime.now(UTC))
        except StoreUnavailable:
            raise HTTPException(503, "PostgreSQL unavailable") from None
        if not found:
            raise HTTPException(404, f"no promise of item {item_id!r} in the view")
        return Response(
            orjson.dumps({"item_id": item_id, "promises": found}), media_type="application/json"
        )

    return router
