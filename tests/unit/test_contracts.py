"""Every input event model, with valid and invalid examples."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gapwatch.core.catalog import INPUT_EVENT_MODELS, MODEL_BY_TYPE
from gapwatch.core.examples import EXAMPLES
from gapwatch.core.topics import Stream
from gapwatch.core.validation import (
    EventRejected,
    Rejection,
    decode_event,
    encode_event,
    format_path,
    validate_batch,
    validate_event,
)


def example(event_type: str) -> dict[str, Any]:
    return copy.deepcopy(EXAMPLES[event_type])


def rejection_of(value: Any) -> EventRejected:
    with pytest.raises(EventRejected) as info:
        validate_event(value)
    return info.value


def test_every_type_has_an_example_and_a_stream():
    assert set(EXAMPLES) == set(MODEL_BY_TYPE)
    assert {m.stream for m in INPUT_EVENT_MODELS} == {Stream.TICKETS, Stream.JOBS, Stream.FEEDBACK}


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_example_is_valid_and_round_trips(event_type: str):
    event = validate_event(example(event_type))
    assert event.type == event_type
    again = decode_event(encode_event(event))
    assert again == event
    assert event.key == event.subject.encode()


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_unknown_field_is_rejected_in_envelope_and_data(event_type: str):
    doc = example(event_type)
    doc["surprise"] = 1
    assert rejection_of(doc).errors[0].path == "surprise"
    doc = example(event_type)
    doc["data"]["surprise"] = 1
    err = rejection_of(doc).errors[0]
    assert (err.path, err.code) == ("data.surprise", "extra_forbidden")


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_every_required_data_field_is_required(event_type: str):
    model = MODEL_BY_TYPE[event_type]
    data_model = model.model_fields["data"].annotation
    assert data_model is not None
    required = [n for n, f in data_model.model_fields.items() if f.is_required()]
    assert required, event_type
    for name in required:
        doc = example(event_type)
        del doc["data"][name]
        errors = rejection_of(doc).errors
        assert any(e.path == f"data.{name}" and e.code == "missing" for e in errors), (name, errors)


def test_naive_timestamps_are_rejected_everywhere():
    doc = example("gapwatch.ticket.opened.v1")
    doc["data"]["opened_at"] = "2026-03-02T09:15:00"
    err = rejection_of(doc).errors[0]
    assert (err.path, err.code) == ("data.opened_at", "timezone_aware")
    doc = example("gapwatch.ticket.opened.v1")
    doc["time"] = "2026-03-02T09:15:00"
    assert rejection_of(doc).errors[0].path == "time"
    doc = example("gapwatch.job.scheduled.v1")
    doc["data"]["window"]["end"] = "2026-03-03T15:00:00"
    assert rejection_of(doc).errors[0].path == "data.window.end"


def test_numeric_timestamps_are_rejected():
    doc = example("gapwatch.ticket.closed.v1")
    doc["data"]["closed_at"] = 1_772_000_000
    err = rejection_of(doc).errors[0]
    assert (err.path, err.code) == ("data.closed_at", "timestamp_type")


def test_timestamps_are_normalised_to_utc():
    event = validate_event(example("gapwatch.ticket.opened.v1"))
    assert event.data.opened_at == datetime(2026, 3, 2, 8, 15, tzinfo=UTC)
    assert event.data.opened_at.tzinfo is UTC


def test_subject_must_be_the_item_id():
    doc = example("gapwatch.job.arrived.v1")
    doc["subject"] = "J-other"
    err = rejection_of(doc).errors[0]
    assert (err.path, err.code) == ("subject", "subject_mismatch")


def test_feedback_is_keyed_by_the_item_it_is_about():
    event = validate_event(example("gapwatch.feedback.submitted.v1"))
    assert event.key == b"J-2001"
    assert event.data.feedback_id == "F-3001"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("csat", 0, "greater_than_equal"),
        ("csat", 6, "less_than_equal"),
        ("csat", "5", "int_type"),
        ("nps", 11, "less_than_equal"),
        ("nps", -1, "greater_than_equal"),
        ("item_kind", "order", "enum"),
    ],
)
def test_feedback_score_ranges(field: str, value: Any, code: str):
    doc = example("gapwatch.feedback.submitted.v1")
    doc["data"][field] = value
    err = rejection_of(doc).errors[0]
    assert (err.path, err.code) == (f"data.{field}", code)


def test_feedback_needs_a_score():
    doc = example("gapwatch.feedback.submitted.v1")
    del doc["data"]["csat"]
    del doc["data"]["nps"]
    assert rejection_of(doc).errors[0].code == "score_missing"
    doc = example("gapwatch.feedback.submitted.v1")
    del doc["data"]["csat"]
    assert validate_event(doc).data.nps == 6


def test_servqual_dimensions_and_scale():
    doc = example("gapwatch.feedback.submitted.v1")
    doc["data"]["servqual"]["friendliness"] = {"expected": 5, "perceived": 5}
    assert rejection_of(doc).errors[0].path.startswith("data.servqual.friendliness")
    doc = example("gapwatch.feedback.submitted.v1")
    doc["data"]["servqual"]["empathy"] = {"expected": 8, "perceived": 5}
    assert rejection_of(doc).errors[0].path == "data.servqual.empathy.expected"


def test_arrival_window_must_be_ordered():
    doc = example("gapwatch.job.scheduled.v1")
    doc["data"]["window"] = {"start": "2026-03-03T15:00:00Z", "end": "2026-03-03T13:00:00Z"}
    err = rejection_of(doc).errors[0]
    assert (err.path, err.code) == ("data.window", "window_order")


def test_promised_completion_not_before_window():
    doc = example("gapwatch.job.scheduled.v1")
    doc["data"]["promised_completion_at"] = "2026-03-01T00:00:00Z"
    assert rejection_of(doc).errors[0].code == "completion_before_window"


def test_job_completed_fixed_must_be_a_boolean():
    doc = example("gapwatch.job.completed.v1")
    doc["data"]["fixed"] = "yes"
    assert rejection_of(doc).errors[0].path == "data.fixed"


@pytest.mark.parametrize(
    ("field", "value"),
    [("kind", "eventually"), ("reason", "because")],
)
def test_promise_changed_enums(field: str, value: str):
    doc = example("gapwatch.ticket.promise_changed.v1")
    doc["data"][field] = value
    assert rejection_of(doc).errors[0].path == f"data.{field}"


def test_explicit_promises_are_validated():
    doc = example("gapwatch.ticket.opened.v1")
    doc["data"]["promises"][0]["due_at"] = "tomorrow"
    assert rejection_of(doc).errors[0].path == "data.promises[0].due_at"


def test_reply_author_and_visibility():
    doc = example("gapwatch.ticket.replied.v1")
    doc["data"]["author"] = "bot"
    assert rejection_of(doc).errors[0].path == "data.author"
    doc = example("gapwatch.ticket.replied.v1")
    del doc["data"]["visibility"]
    assert validate_event(doc).data.visibility == "public"


def test_labels_keys_and_cardinality():
    doc = example("gapwatch.ticket.opened.v1")
    doc["data"]["labels"] = {"Bad Key": "x"}
    assert rejection_of(doc).errors[0].path.startswith("data.labels")
    doc = example("gapwatch.ticket.opened.v1")
    doc["data"]["labels"] = {f"k{i}": "v" for i in range(33)}
    assert rejection_of(doc).errors[0].code == "too_long"


def test_specversion_must_be_1_0():
    doc = example("gapwatch.ticket.closed.v1")
    doc["specversion"] = "0.3"
    assert rejection_of(doc).errors[0].path == "specversion"


def test_unknown_type_and_unsupported_version_are_told_apart():
    doc = example("gapwatch.ticket.closed.v1")
    doc["type"] = "gapwatch.ticket.closed.v2"
    exc = rejection_of(doc)
    assert exc.rejection is Rejection.UNSUPPORTED_VERSION
    assert "gapwatch.ticket.closed.v1" in exc.errors[0].reason
    doc["type"] = "gapwatch.ticket.teleported.v1"
    assert rejection_of(doc).rejection is Rejection.UNKNOWN_TYPE
    del doc["type"]
    assert rejection_of(doc).errors[0].code == "missing"
    assert rejection_of([1, 2]).rejection is Rejection.NOT_AN_OBJECT


def test_malformed_json_is_rejected_with_reason():
    with pytest.raises(EventRejected) as info:
        decode_event(b'{"type": ')
    assert info.value.rejection is Rejection.MALFORMED_JSON


def test_batch_collects_errors_of_every_event_with_its_index():
    good = example("gapwatch.ticket.closed.v1")
    bad = example("gapwatch.ticket.closed.v1")
    bad["data"]["closed_at"] = "nope"
    unknown = {"type": "nope"}
    result = validate_batch([good, bad, good, unknown])
    assert len(result.events) == 2
    assert [(e.index, e.path) for e in result.errors] == [(1, "data.closed_at"), (3, "type")]
    assert result.rejections == {Rejection.SCHEMA_INVALID: 1, Rejection.UNKNOWN_TYPE: 1}


def test_format_path():
    assert format_path(("data", "promises", 0, "due_at")) == "data.promises[0].due_at"
    assert format_path(()) == ""
    assert format_path((0,)) == "[0]"


offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
instants = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets
)


@given(instants)
def test_any_offset_is_the_same_instant_in_utc(moment: datetime):
    doc = example("gapwatch.ticket.reopened.v1")
    doc["data"]["reopened_at"] = moment.isoformat()
    event = validate_event(doc)
    assert event.data.reopened_at == moment
    assert event.data.reopened_at.utcoffset() == timedelta(0)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_any_naive_time_is_rejected(moment: datetime):
    doc = example("gapwatch.ticket.reopened.v1")
    doc["data"]["reopened_at"] = moment.isoformat()
    assert rejection_of(doc).errors[0].path == "data.reopened_at"


item_ids = st.from_regex(r"\A[A-Za-z0-9._:@/+#-]{1,128}\Z")


@given(item_ids, st.integers(1, 5), st.integers(0, 10) | st.none())
def test_valid_feedback_round_trips(item: str, csat: int, nps: int | None):
    doc = example("gapwatch.feedback.submitted.v1")
    doc["subject"] = item
    doc["data"].update(item_id=item, csat=csat, nps=nps)
    event = validate_event(doc)
    assert decode_event(encode_event(event)) == event
    assert event.key == item.encode()


@given(
    st.text(min_size=1, max_size=40).filter(
        lambda s: (
            not set(s)
            <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@/+#-")
        )
    )
)
def test_item_ids_with_other_characters_are_rejected(item: str):
    doc = example("gapwatch.job.arrived.v1")
    doc["subject"] = item
    doc["data"]["job_id"] = item
    paths = {e.path for e in rejection_of(doc).errors}
    assert "data.job_id" in paths


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_never_crashes_validation(value: Any):
    try:
        validate_event(value)
    except EventRejected as exc:
        assert exc.errors and all(isinstance(e.path, str) for e in exc.errors)
