"""Turns untrusted JSON values into validated events, or into precise per-field errors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Union

import orjson
from pydantic import Field, TypeAdapter, ValidationError

from gapwatch.core.catalog import (
    INPUT_EVENT_MODELS,
    MODEL_BY_TYPE,
    AnyInputEvent,
    supported_versions_of,
)
from gapwatch.core.jobs import JobScheduled
from gapwatch.core.promises import MAX_PROMISE_AHEAD
from gapwatch.core.tickets import TicketOpened
from gapwatch.core.timebound import FROM_THE_FUTURE, beyond_reason, times_beyond


class Rejection(StrEnum):
    """Why an event was refused; a bounded set, used as a metric label and dead-letter reason."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    SCHEMA_INVALID = "schema_invalid"
    FROM_THE_FUTURE = "from_the_future"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one event: where (`index` in the batch, `path` in the event) and why."""

    index: int
    path: str
    code: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "path": self.path, "code": self.code, "reason": self.reason}


class EventRejected(Exception):
    """An event that can never be accepted as it is; retrying the same bytes cannot help."""

    retriable = False

    def __init__(self, rejection: Rejection, errors: list[FieldError]) -> None:
        self.rejection = rejection
        self.errors = errors
        first = errors[0] if errors else None
        detail = f"{first.path or '<event>'}: {first.reason}" if first else rejection.value
        super().__init__(f"{rejection.value}: {detail}")


def format_path(loc: tuple[int | str, ...]) -> str:
    """('data', 'promises', 0, 'due_at') -> 'data.promises[0].due_at'."""
    out: list[str] = []
    for part in loc:
        if isinstance(part, int):
            out.append(f"[{part}]")
        else:
            out.append(f".{part}" if out else str(part))
    return "".join(out)


def _schema_errors(exc: ValidationError, index: int) -> list[FieldError]:
    errors = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = err["loc"]
        if err["type"] == "subject_mismatch":
            loc = ("subject",)
        errors.append(FieldError(index, format_path(loc), err["type"], err["msg"]))
    return errors


def validate_event(value: Any, index: int = 0, not_after: datetime | None = None) -> AnyInputEvent:
    """Validate one decoded JSON value as an input event; raises EventRejected.

    With `not_after`, an event whose own time lies after it is refused as `from_the_future`
    (`gapwatch.core.timebound`).
    """
    if not isinstance(value, dict):
        raise EventRejected(
            Rejection.NOT_AN_OBJECT,
            [FieldError(index, "", "object_type", "an event must be a JSON object")],
        )
    event_type = value.get("type")
    if not isinstance(event_type, str):
        code, reason = (
            ("missing", "the CloudEvents attribute 'type' is required")
            if event_type is None
            else ("string_type", "'type' must be a string")
        )
        raise EventRejected(Rejection.SCHEMA_INVALID, [FieldError(index, "type", code, reason)])
    model = MODEL_BY_TYPE.get(event_type)
    if model is None:
        siblings = supported_versions_of(event_type)
        if siblings is not None:
            raise EventRejected(
                Rejection.UNSUPPORTED_VERSION,
                [
                    FieldError(
                        index,
                        "type",
                        Rejection.UNSUPPORTED_VERSION.value,
                        f"version of {event_type!r} is not supported; supported: "
                        + ", ".join(sorted(siblings)),
                    )
                ],
            )
        raise EventRejected(
            Rejection.UNKNOWN_TYPE,
            [
                FieldError(
                    index,
                    "type",
                    Rejection.UNKNOWN_TYPE.value,
                    f"unknown event type {event_type[:200]!r}; see schemas/ for the known types",
                )
            ],
        )
    try:
        event: AnyInputEvent = model.model_validate(value)
    except ValidationError as exc:
        raise EventRejected(Rejection.SCHEMA_INVALID, _schema_errors(exc, index)) from None
    refused = after_schema(event, not_after, index)
    if refused is not None:
        raise refused
    return event


def after_schema(
    event: AnyInputEvent, not_after: datetime | None, index: int = 0
) -> EventRejected | None:
    """What refuses a schema-valid event: with `not_after`, an own time after it
    (`from_the_future`); promised times beyond the horizon, an opening's promise due before
    the opening, or two promises of one kind (`schema_invalid`). None if it is fine."""
    if not_after is not None:  # first: an event from the future is that before all else
        errors = future_errors(event, not_after, index)
        if errors:
            return EventRejected(Rejection.FROM_THE_FUTURE, errors)
    data = event.data
    start = data.occurred_at
    latest = start + MAX_PROMISE_AHEAD
    opening = isinstance(data, TicketOpened | JobScheduled)
    wrong: list[FieldError] = []
    for path, value in data.promised_times():
        if value > latest:
            wrong.append(
                FieldError(
                    index,
                    f"data.{path}",
                    "promise_horizon",
                    f"{value.isoformat()} is more than {MAX_PROMISE_AHEAD.days} days after the "
                    f"event ({start.isoformat()}); no promise may reach that far",
                )
            )
        elif opening and value < start and path != "window.start":
            wrong.append(
                FieldError(
                    index,
                    f"data.{path}",
                    "promise_before_opening",
                    f"{value.isoformat()} is before the item opened ({start.isoformat()}): a "
                    "promise cannot fall due before its own opening",
                )
            )
    if isinstance(data, TicketOpened) and len(data.promises) > 1:
        wrong.extend(_repeated_kinds(data, index))
    if wrong:
        return EventRejected(Rejection.SCHEMA_INVALID, wrong)
    return None


def _repeated_kinds(data: TicketOpened, index: int) -> list[FieldError]:
    """An item holds one promise of each kind: a second one of a kind would silently replace
    the first, so the event is refused instead, naming the repeat."""
    first: dict[str, int] = {}
    wrong = []
    for position, promise in enumerate(data.promises):
        seen = first.setdefault(promise.kind, position)
        if seen != position:
            wrong.append(
                FieldError(
                    index,
                    f"data.promises[{position}].kind",
                    "duplicate_promise_kind",
                    f"{promise.kind.value!r} is already promised at data.promises[{seen}]; an "
                    "item holds one promise of each kind",
                )
            )
    return wrong


def future_errors(event: AnyInputEvent, not_after: datetime, index: int = 0) -> list[FieldError]:
    """One error per time of the event that lies after `not_after`; none if it is within."""
    return [
        FieldError(index, path, FROM_THE_FUTURE, beyond_reason(value, not_after))
        for path, value in times_beyond(event, not_after)
    ]


def decode_event(raw: bytes, not_after: datetime | None = None) -> AnyInputEvent:
    """Decode and validate one event from its JSON bytes (a Kafka value or a JSON Lines line)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventRejected(
            Rejection.MALFORMED_JSON, [FieldError(0, "", "json_invalid", str(exc))]
        ) from None
    return validate_event(value, 0, not_after)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of validating a batch: all events, or every error of every bad event."""

    events: list[AnyInputEvent]
    errors: list[FieldError]
    rejections: dict[Rejection, int]


# Every input model, told apart by its `type` literal: a whole batch validates in one call into
# pydantic-core instead of one Python round per event. Only valid batches take this path.
_VALID_BATCH: TypeAdapter[list[AnyInputEvent]] = TypeAdapter(
    list[Annotated[Union[INPUT_EVENT_MODELS], Field(discriminator="type")]]  # type: ignore[valid-type]  # noqa: UP007
)


def validate_batch(values: list[Any], not_after: datetime | None = None) -> BatchResult:
    """Validate every value; errors of all events are collected, not just the first.

    With `not_after`, events whose own time lies after it are refused as `from_the_future`.
    """
    try:
        valid = _VALID_BATCH.validate_python(values)
    except ValidationError:
        pass  # something is wrong: validate event by event, for precise errors and reasons
    else:
        if all(after_schema(e, not_after) is None for e in valid):
            return BatchResult(valid, [], {})
    events: list[AnyInputEvent] = []
    errors: list[FieldError] = []
    rejections: dict[Rejection, int] = {}
    for index, value in enumerate(values):
        try:
            events.append(validate_event(value, index, not_after))
        except EventRejected as exc:
            errors.extend(exc.errors)
            rejections[exc.rejection] = rejections.get(exc.rejection, 0) + 1
    return BatchResult(events, errors, rejections)


def encode_event(event: AnyInputEvent) -> bytes:
    """The canonical JSON bytes of an event, as written to Kafka (times in UTC, no nulls)."""
    return event.model_dump_json(exclude_none=True).encode()
