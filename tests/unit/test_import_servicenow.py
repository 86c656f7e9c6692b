"""The ServiceNow importer: snapshot diffs to ticket events, each quirk of the export, real data."""

from __future__ import annotations

import csv
import io
import os
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from gapwatch.cli import main
from gapwatch.config import load_policies
from gapwatch.core.clock import ClockConfig, Status
from gapwatch.core.policies import PolicySet
from gapwatch.core.promises import PromiseKind
from gapwatch.core.scoring import Scoring, ScoringConfig, replay
from gapwatch.core.validation import decode_event, validate_event
from gapwatch.importers import (
    ImportOptions,
    ImportStats,
    SourceFormatError,
    UnknownSource,
    get_source,
    source_names,
)
from gapwatch.importers import servicenow as sn
from gapwatch.importers.pipeline import collect, run_import
from gapwatch.importers.sinks import send_http

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "deploy" / "config" / "servicenow-policies.yaml"
# The UCI log (see its README); elsewhere point GAPWATCH_SERVICENOW_LOG at a copy of the zip.
_CANDIDATES = [
    ROOT.parent / "shared" / "data" / "servicenow-incidents" / "incident_event_log.zip",
    Path("/work/shared/data/servicenow-incidents/incident_event_log.zip"),  # a clone elsewhere
]
REAL_ZIP = Path(
    os.environ.get(
        "GAPWATCH_SERVICENOW_LOG",
        next((p for p in _CANDIDATES if p.is_file()), _CANDIDATES[0]),
    )
)

COLUMNS = (
    "number,incident_state,active,reassignment_count,reopen_count,sys_mod_count,made_sla,"
    "caller_id,opened_by,opened_at,sys_created_by,sys_created_at,sys_updated_by,sys_updated_at,"
    "contact_type,location,category,subcategory,u_symptom,cmdb_ci,impact,urgency,priority,"
    "assignment_group,assigned_to,knowledge,u_priority_confirmation,notify,problem_id,rfc,vendor,"
    "caused_by,closed_code,resolved_by,resolved_at,closed_at"
).split(",")

BASE = {
    "number": "INC0000001",
    "active": "true",
    "reassignment_count": "0",
    "reopen_count": "0",
    "made_sla": "true",
    "caller_id": "Caller 2403",
    "opened_by": "Opened by  8",
    "opened_at": "29/2/2016 01:00",
    "sys_created_by": "?",
    "sys_created_at": "?",
    "sys_updated_by": "Updated by 21",
    "contact_type": "Phone",
    "location": "Location 143",
    "category": "Category 55",
    "subcategory": "Subcategory 170",
    "u_symptom": "?",
    "cmdb_ci": "?",
    "impact": "2 - Medium",
    "urgency": "2 - Medium",
    "priority": "3 - Moderate",
    "assignment_group": "Group 56",
    "assigned_to": "?",
    "knowledge": "true",
    "u_priority_confirmation": "false",
    "notify": "Do Not Notify",
    "problem_id": "?",
    "rfc": "?",
    "vendor": "?",
    "caused_by": "?",
    "closed_code": "code 5",
    "resolved_by": "?",
    "resolved_at": "?",
    "closed_at": "?",
}


def snapshots(*rows: tuple[str, str, int], **fields: str) -> list[dict[str, str]]:
    """Rows of one incident: (incident_state, sys_updated_at, sys_mod_count), shared fields."""
    return [
        {**BASE, **fields, "incident_state": state, "sys_updated_at": at, "sys_mod_count": str(mod)}
        for state, at, mod in rows
    ]


def csv_text(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return load_policies(POLICIES)


def run(
    rows: list[dict[str, str]], policies: PolicySet | None = None, **options: Any
) -> tuple[list[sn.Incident], ImportStats]:
    stats = ImportStats()
    incidents = list(sn.map_incidents(rows, ImportOptions(policies=policies, **options), stats))
    return incidents, stats


def kinds(incident: sn.Incident) -> list[tuple[str, str]]:
    """(action, time) of each event, plus the status for status_changed."""
    out = []
    for event in incident.events:
        action = event["type"].split(".")[2]
        if action == "status_changed":
            action = f"status:{event['data']['status']}"
        out.append((action, event["time"][11:16]))
    return out


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- mapping ------------------------------------------------------------------------------------


def test_a_plain_incident_maps_to_a_ticket_lifecycle(policies: PolicySet):
    rows = snapshots(
        ("New", "29/2/2016 01:05", 0),
        ("Active", "29/2/2016 02:10", 1),
        ("Active", "29/2/2016 03:00", 2),  # a snapshot with no state change gives nothing
        ("Resolved", "29/2/2016 04:30", 3),
        ("Closed", "5/3/2016 12:00", 4),
    )
    (incident,), stats = run(rows, policies)
    assert kinds(incident) == [
        ("opened", "01:00"),
        ("status:active", "02:10"),
        ("replied", "02:10"),
        ("status:resolved", "04:30"),
        ("resolved", "04:30"),
        ("status:closed", "12:00"),
        ("closed", "12:00"),
    ]
    opened = incident.events[0]
    assert opened["id"] == "servicenow:INC0000001:opened:0"
    assert opened["subject"] == "INC0000001" == opened["data"]["ticket_id"]
    assert opened["data"] == {
        "ticket_id": "INC0000001",
        "opened_at": "2016-02-29T01:00:00+00:00",
        "priority": "3 - Moderate",
        "channel": "Phone",
        "customer_id": "Caller-2403",
        "customer_tier": "unknown",
        "team": "Group 56",
        "region": "Location 143",
        "labels": {
            "source_system": "servicenow",
            "category": "Category 55",
            "subcategory": "Subcategory 170",
            "impact": "2 - Medium",
            "urgency": "2 - Medium",
        },
        "sla_policy": "servicenow-p3-moderate",
    }
    assert incident.events[2]["data"]["author"] == "agent"
    assert [e["id"] for e in incident.events[1:3]] == [
        "servicenow:INC0000001:status_changed:0",
        "servicenow:INC0000001:replied:0",
    ]
    for event in incident.events:
        validate_event(event)
    assert (incident.priority, incident.made_sla, stats.items, stats.rows) == (
        "3 - Moderate",
        True,
        1,
        5,
    )
    assert not stats.skipped and not stats.adjusted


def test_dates_are_day_first_in_the_chosen_timezone():
    rows = snapshots(("Resolved", "1/3/2016 09:05", 1), opened_at="1/3/2016 09:00")
    (incident,), _ = run(rows)
    assert incident.events[0]["data"]["opened_at"] == "2016-03-01T09:00:00+00:00"  # 1 March
    (incident,), _ = run(rows, timezone=ZoneInfo("Europe/Amsterdam"))
    event = validate_event(incident.events[0])
    assert event.data.opened_at == datetime(2016, 3, 1, 8, 0, tzinfo=UTC)
    assert event.time == event.data.opened_at


def test_question_marks_fall_back_to_the_first_known_value_then_a_default():
    rows = snapshots(
        ("New", "29/2/2016 01:00", 0),
        ("Active", "29/2/2016 02:00", 1),
        assignment_group="?",
        location="?",
        caller_id="?",
        category="?",
        contact_type="?",
    )
    rows[1]["assignment_group"] = "Group 7"
    (incident,), _ = run(rows)
    data = incident.events[0]["data"]
    assert (data["team"], data["region"], data["customer_id"], data["channel"]) == (
        "Group 7",
        "unknown",
        "unknown",
        "unknown",
    )
    assert "category" not in data["labels"]
    validate_event(incident.events[0])


def test_awaiting_states_pause_and_active_resumes():
    rows = snapshots(
        ("Active", "29/2/2016 01:10", 1),
        ("Awaiting User Info", "29/2/2016 02:00", 2),
        ("Active", "29/2/2016 05:00", 3),
        ("Awaiting Vendor", "29/2/2016 06:00", 4),
        ("Resolved", "29/2/2016 07:00", 5),
        ("Closed", "5/3/2016 07:00", 6),
    )
    (incident,), _ = run(rows)
    assert kinds(incident) == [
        ("opened", "01:00"),
        ("status:active", "01:10"),
        ("replied", "01:10"),  # once: only the first move to Active stands in for a reply
        ("status:awaiting_user_info", "02:00"),
        ("status:active", "05:00"),
        ("status:awaiting_vendor", "06:00"),
        ("status:resolved", "07:00"),
        ("resolved", "07:00"),
        ("status:closed", "07:00"),
        ("closed", "07:00"),
    ]
    assert incident.paused


def test_every_awaiting_status_is_a_pause_status_of_the_policies(policies: PolicySet):
    states = ["Awaiting User Info", "Awaiting Vendor", "Awaiting Problem", "Awaiting Evidence"]
    assert {sn.status_of(s) for s in states} <= set(policies.defaults.pause_statuses)
    assert sn.status_of("Active") not in policies.defaults.pause_statuses


def score(incidents: list[sn.Incident], policies: PolicySet) -> Scoring:
    stats = ImportStats()
    events = collect((e for i in incidents for e in i.events), stats)
    assert not stats.invalid
    scoring = Scoring(ScoringConfig(ClockConfig.from_policies(policies)))
    for raw in events:
        scoring.process_and_tick(decode_event(raw))
    return scoring


def resolution(scoring: Scoring, number: str = "INC0000001") -> list[Status]:
    clock = scoring.items[number]
    return [p.status for p in clock.promises if p.kind is PromiseKind.RESOLUTION]


def test_a_pause_stretches_the_resolution_target(policies: PolicySet):
    # Critical: 4h. Open 01:00, waiting 02:00-05:00, resolved 07:00: 3h of working time.
    rows = snapshots(
        ("Active", "29/2/2016 01:10", 1),
        ("Awaiting User Info", "29/2/2016 02:00", 2),
        ("Active", "29/2/2016 05:00", 3),
        ("Resolved", "29/2/2016 07:00", 4),
        ("Closed", "5/3/2016 07:00", 5),
        priority="1 - Critical",
    )
    incidents, _ = run(rows, policies)
    assert resolution(score(incidents, policies)) == [Status.MET]


def test_a_resolution_straight_from_a_pause_ends_the_pause_first(policies: PolicySet):
    # Open 01:00, waiting from 02:00 until resolved at 09:00: 1h of working time, met. Without
    # the status_changed(resolved) before `resolved`, the clock would compare 09:00 with 05:00.
    rows = snapshots(
        ("Awaiting User Info", "29/2/2016 02:00", 1),
        ("Resolved", "29/2/2016 09:00", 2),
        ("Closed", "5/3/2016 09:00", 3),
        priority="1 - Critical",
    )
    incidents, _ = run(rows, policies)
    assert resolution(score(incidents, policies)) == [Status.MET]


def test_reopens_start_new_cycles(policies: PolicySet):
    rows = snapshots(
        ("New", "29/2/2016 01:00", 0),
        ("Resolved", "29/2/2016 02:00", 1),
        ("Active", "29/2/2016 03:00", 2),
        ("Resolved", "29/2/2016 04:00", 3),
        ("Closed", "5/3/2016 04:00", 4),
        ("Active", "6/3/2016 04:00", 5),
        ("Resolved", "6/3/2016 05:00", 6),
        ("Closed", "11/3/2016 05:00", 7),
    )
    for row, count in zip(rows, [0, 0, 1, 1, 1, 2, 2, 2], strict=True):
        row["reopen_count"] = str(count)
    (incident,), stats = run(rows, policies)
    actions = [a for a, _ in kinds(incident) if not a.startswith("status:")]
    # No reply: the first resolution already delivered the first response.
    assert actions == [
        "opened",
        "resolved",
        "reopened",
        "resolved",
        "closed",
        "reopened",
        "resolved",
        "closed",
    ]
    assert [e["id"] for e in incident.events if "resolved.v1" in e["type"]] == [
        f"servicenow:INC0000001:resolved:{n}" for n in range(3)
    ]
    assert incident.reopened == 2 and "reopen_count_disagrees" not in stats.notes
    assert resolution(score([incident], policies)) == [Status.MET] * 3


def test_mod_count_backwards_first_row_stamped_before_opening_stays_first():
    # INC0000135 in the real log: the first row says sys_mod_count 7, is stamped before
    # opened_at and is Active; the later rows count 1..7 and end Closed (also 7).
    rows = snapshots(
        ("Active", "29/2/2016 00:27", 7),
        ("Active", "29/2/2016 01:45", 1),
        ("Resolved", "29/2/2016 03:27", 2),
        ("Closed", "5/3/2016 17:00", 7),
    )
    (incident,), stats = run(rows)
    assert kinds(incident) == [
        ("opened", "01:00"),
        ("status:active", "01:00"),  # taken at opened_at, not before it
        ("replied", "01:00"),
        ("status:resolved", "03:27"),
        ("resolved", "03:27"),
        ("status:closed", "17:00"),
        ("closed", "17:00"),
    ]
    assert stats.notes["incident_mod_count_backwards"] == 1
    assert stats.adjusted == {"updated_before_opened": 1}
    assert "incident_rows_reordered" not in stats.notes


def test_equal_mod_counts_are_ordered_by_time():
    # INC0000137: two rows with sys_mod_count 1, the later one first in the file.
    rows = snapshots(
        ("Active", "29/2/2016 03:10", 1),
        ("New", "29/2/2016 01:52", 1),
        ("Resolved", "29/2/2016 03:03", 2),
    )
    (incident,), stats = run(rows)
    assert kinds(incident) == [
        ("opened", "01:00"),
        ("status:active", "03:10"),
        ("replied", "03:10"),
        # 03:03 follows 03:10 in sys_mod_count order; an event never precedes the previous one
        ("status:resolved", "03:10"),
        ("resolved", "03:10"),
    ]
    assert stats.notes["incident_rows_reordered"] == 1
    assert stats.adjusted == {"time_before_previous_event": 1}


def test_state_minus_100_rows_are_skipped():
    rows = snapshots(
        ("Active", "29/2/2016 01:05", 11),
        ("-100", "29/2/2016 01:15", 14),
        ("-100", "29/2/2016 01:21", 15),
        ("Resolved", "29/2/2016 01:28", 21),
    )
    (incident,), stats = run(rows)
    assert [a for a, _ in kinds(incident)] == [
        "opened",
        "status:active",
        "replied",
        "status:resolved",
        "resolved",
    ]
    assert stats.skipped == {"unknown_state": 2}


def test_rows_of_an_incident_that_ended_earlier_are_skipped():
    first = snapshots(("New", "29/2/2016 01:00", 0), ("Resolved", "29/2/2016 02:00", 1))
    other = snapshots(("New", "29/2/2016 01:30", 0), number="INC0000002")
    late = snapshots(("Closed", "29/2/2016 05:00", 2))
    more = snapshots(("Active", "29/2/2016 06:00", 1), number="INC0000002")
    incidents, stats = run(first + other + late + more)
    assert [i.number for i in incidents] == ["INC0000001", "INC0000002"]
    assert stats.skipped == {"not_contiguous": 2}


def test_an_incident_without_opened_at_is_skipped_whole():
    rows = snapshots(("New", "29/2/2016 01:00", 0), ("Active", "29/2/2016 02:00", 1))
    for row in rows:
        row["opened_at"] = "?"
    incidents, stats = run(rows)
    assert incidents == [] and stats.skipped == {"missing_opened_at": 2} and stats.items == 0


def test_unparseable_timestamps_skip_the_row():
    rows = snapshots(("New", "29/2/2016 01:00", 0), ("Active", "31/2/2016 02:00", 1))
    (incident,), stats = run(rows)
    assert [a for a, _ in kinds(incident)] == ["opened"]
    assert stats.skipped == {"bad_sys_updated_at": 1}


def test_a_file_that_is_not_a_servicenow_log_is_refused():
    with pytest.raises(SourceFormatError, match="missing column"):
        run([{"number": "INC1", "state": "New"}])


def test_limit_stops_after_n_incidents():
    rows = [
        *snapshots(("New", "29/2/2016 01:00", 0), number="INC1"),
        *snapshots(("New", "29/2/2016 01:00", 0), number="INC2"),
        *snapshots(("New", "29/2/2016 01:00", 0), number="INC3"),
    ]
    incidents, stats = run(rows, limit=2)
    assert [i.number for i in incidents] == ["INC1", "INC2"]
    assert (stats.items, stats.rows) == (2, 2)


def test_sanitising_ids_and_labels():
    assert sn.item_id(" Caller 2403 ") == "Caller-2403"
    assert sn.item_id("a/b c\td") == "a/b-c-d"
    assert sn.label("Group\t7\x00") == "Group 7"
    assert len(sn.label("x" * 500)) == 128
    assert sn.status_of("Awaiting User Info") == "awaiting_user_info"


# --- the pipeline, files and sinks ---------------------------------------------------------------


def mixed_rows() -> list[dict[str, str]]:
    return [
        *snapshots(
            ("New", "29/2/2016 01:00", 0),
            ("Active", "1/3/2016 09:00", 1),
            ("Resolved", "2/3/2016 09:00", 2),
            ("Closed", "7/3/2016 09:00", 3),
        ),
        *snapshots(
            ("New", "29/2/2016 05:00", 0),
            ("Resolved", "29/2/2016 06:00", 1),
            ("Closed", "5/3/2016 06:00", 2),
            number="INC0000002",
            opened_at="29/2/2016 05:00",
            priority="1 - Critical",
        ),
    ]


def test_events_come_out_valid_in_time_order_and_replay_cleanly(tmp_path: Path, policies):
    path = tmp_path / "log.csv"
    path.write_text(csv_text(mixed_rows()))
    result = run_import(
        get_source("servicenow"), path, ImportOptions(policies=policies), progress=False
    )
    times = [decode_event(raw).data.occurred_at for raw in result.events]
    assert times == sorted(times)
    assert not result.stats.invalid and result.stats.events == len(result.events) == 12
    config = ScoringConfig(ClockConfig.from_policies(policies))
    replayed = replay(result.events, config)
    assert replayed.rejected == []
    assert set(replayed.scoring.items) == {"INC0000001", "INC0000002"}


def test_zip_and_csv_give_the_same_bytes(tmp_path: Path):
    text = csv_text(mixed_rows())
    plain = tmp_path / "log.csv"
    plain.write_text(text)
    packed = tmp_path / "log.zip"
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export/incident_event_log.csv", text)
    source = get_source("servicenow")
    a = run_import(source, plain, ImportOptions(), progress=False)
    b = run_import(source, packed, ImportOptions(), progress=False)
    assert a.events == b.events and len(a.events) == 12


def test_a_zip_without_exactly_one_csv_is_refused(tmp_path: Path):
    packed = tmp_path / "log.zip"
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("readme.txt", "nothing here")
    with pytest.raises(SourceFormatError, match=r"exactly one \.csv"):
        run_import(get_source("servicenow"), packed, ImportOptions(), progress=False)


def test_the_registry_names_the_sources():
    assert source_names() == ["servicenow"]
    assert get_source("servicenow").NAME == "servicenow"
    with pytest.raises(UnknownSource, match="known: servicenow"):
        get_source("zendesk")


def test_invalid_documents_are_counted_not_emitted():
    stats = ImportStats()
    good = snapshots(("New", "29/2/2016 01:00", 0))
    (incident,), _ = run(good)
    bad = {**incident.events[0], "id": "bad id with spaces"}
    assert len(collect([bad, incident.events[0]], stats)) == 1
    assert (
        stats.invalid == {"schema_invalid": 1} and "bad id with spaces" in stats.invalid_examples[0]
    )


def test_the_cli_writes_json_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.chdir(ROOT)
    source = tmp_path / "log.csv"
    source.write_text(csv_text(mixed_rows()))
    out = tmp_path / "events.jsonl"
    with pytest.raises(SystemExit) as done:
        main(["import", "servicenow", str(source), "-o", str(out), "-q"])
    assert done.value.code == 0
    lines = out.read_bytes().splitlines()
    assert len(lines) == 12
    assert orjson.loads(lines[0])["data"]["sla_policy"] == "servicenow-p3-moderate"
    assert "skipped rows: none" in capsys.readouterr().err


def test_the_cli_refuses_an_unknown_timezone(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as done:
        main(
            ["import", "servicenow", str(tmp_path / "x.csv"), "-o", "x", "--timezone", "Mars/Base"]
        )
    assert done.value.code == 2
    assert "Mars/Base" in capsys.readouterr().err


def test_the_cli_refuses_an_unknown_source(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["import", "zendesk", str(tmp_path / "x.csv"), "-o", "x"])
    assert done.value.code == 2
    assert "unknown import source 'zendesk'; known: servicenow" in capsys.readouterr().err


def test_the_importers_are_packaged():
    # pyproject lists packages explicitly: a subpackage missing there is missing from the image.
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert "gapwatch.importers" in listed


class _Ingest(BaseHTTPRequestHandler):
    received: list[tuple[str | None, int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.headers.get("Authorization"), len(orjson.loads(body))))
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"accepted": 1}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def ingest() -> Iterator[str]:
    _Ingest.received = []
    server = HTTPServer(("127.0.0.1", 0), _Ingest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_events_go_to_the_ingest_api_in_batches_with_the_token(ingest, monkeypatch):
    monkeypatch.setenv("GAPWATCH_INGEST_TOKEN", "s3cret")
    events = [orjson.dumps({"n": n}) for n in range(12)]
    assert send_http(events, ingest, batch=5, progress=False) == 12
    assert _Ingest.received == [("Bearer s3cret", 5), ("Bearer s3cret", 5), ("Bearer s3cret", 2)]


# --- the real log --------------------------------------------------------------------------------


@pytest.mark.skipif(not REAL_ZIP.is_file(), reason="the shared ServiceNow log is not here")
def test_the_real_log_first_3000_incidents(policies: PolicySet):
    options = ImportOptions(policies=policies, limit=3000)
    result = run_import(get_source("servicenow"), REAL_ZIP, options, progress=False)
    stats = result.stats
    assert stats.items == 3000 and stats.rows == 21453
    assert not stats.invalid and stats.events == len(result.events) == 20443
    assert stats.skipped == {}  # the 5 rows with state -100 come later (INC0028089, INC0030413)
    # INC0000130, 131, 134, 135, 164 are stamped before opened_at; 4 of them count backwards.
    assert stats.adjusted == {"updated_before_opened": 5}
    assert stats.notes["incident_mod_count_backwards"] == 4
    assert stats.notes["incident_rows_reordered"] == 1  # INC0000137
    ids = [orjson.loads(raw)["id"] for raw in result.events]
    assert len(set(ids)) == len(ids)
    again = run_import(get_source("servicenow"), REAL_ZIP, options, progress=False)
    assert again.events == result.events  # same input, same ids and bytes: re-imports dedupe
    first = decode_event(result.events[0])
    assert first.subject == "INC0000045" and first.data.opened_at == utc("2016-02-29T01:16")
    assert first.data.sla_policy == "servicenow-p3-moderate"
