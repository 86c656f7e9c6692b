"""Issue 27 #8: labels that look alike in Grafana but are separate series are refused."""

from __future__ import annotations

import copy

import pytest

from gapwatch.core.examples import EXAMPLES
from gapwatch.core.validation import EventRejected, validate_event


@pytest.mark.parametrize(
    "team",
    [
        "\ufeffbilling\u200d",  # BOM and zero-width joiner: shows as "billing"
        "bill\u0085ing",  # a C1 control (NEL)
        "billing\u202e",  # a bidi override
        "\u200bbilling",  # zero-width space
        "bill\u00ading",  # soft hyphen
        "billing\u2066",  # bidi isolate
    ],
)
def test_invisible_characters_in_a_label_are_refused_with_the_path(team: str):
    doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    doc["data"]["team"] = team
    with pytest.raises(EventRejected) as caught:
        validate_event(doc)
    assert [(e.path, e.code) for e in caught.value.errors] == [
        ("data.team", "string_pattern_mismatch")
    ]


@pytest.mark.parametrize("team", ["billing", "Zürich ops", "東京", "billing-2 (EU)"])
def test_visible_text_of_any_script_stays_accepted(team: str):
    doc = copy.deepcopy(EXAMPLES["gapwatch.ticket.opened.v1"])
    doc["data"]["team"] = team
    assert validate_event(doc).data.team == team
