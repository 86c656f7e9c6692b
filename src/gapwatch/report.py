"""`gapwatch report`: gapwatch's resolution verdicts on an imported log beside the source's own.

The import runs in memory, then the scoring core folds the events exactly as `gapwatch replay`
does (`Scoring.process_and_tick` per event, in event-time order) but without the rolling windows,
which the report does not read and which cost a third of replay's time. Per group (ServiceNow:
priority) it prints:

- incidents;
- gapwatch's resolution attainment: met / (met + breached) over resolution promises, one per
  cycle (a reopened incident has several); delivered late counts as breached, promises cancelled
  by a close without resolution count in neither;
- the share of incidents the source marked as made (`made_sla` of the incident's last row);
- agreement: the share of incidents, among those both sides judged, where gapwatch's verdict
  (met = every judged resolution cycle met) equals the source's.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from gapwatch.config import load_policies
from gapwatch.core.clock import ClockConfig, ConflictingDuplicate, ItemLogFull, Status
from gapwatch.core.policies import PolicySet, Target
from gapwatch.core.promises import PromiseKind
from gapwatch.core.scoring import LateEvent, Scoring, ScoringConfig, Unscorable
from gapwatch.core.validation import decode_event
from gapwatch.importers import ImportOptions, ImportStats, servicenow
from gapwatch.importers.files import csv_rows
from gapwatch.importers.pipeline import collect
from gapwatch.importers.servicenow import Incident, map_incidents

MET_STATUSES = frozenset({Status.MET})
MISSED_STATUSES = frozenset({Status.BREACHED, Status.DELIVERED_LATE})


@dataclass(frozen=True, slots=True)
class SourceVerdict:
    """What the source says about one item, and the facts that explain disagreements."""

    item_id: str
    group: str
    made_sla: bool | None
    paused: bool = False
    reopened: bool = False


@dataclass
class Tally:
    """Counts for one group of items (or for all of them)."""

    items: int = 0
    met: int = 0  # resolution promises met
    breached: int = 0  # resolution promises breached or delivered late
    source_known: int = 0  # items with a made_sla value
    source_made: int = 0
    compared: int = 0  # items both sides judged
    agree: int = 0
    gapwatch_met_source_missed: int = 0
    gapwatch_missed_source_met: int = 0
    no_verdict: int = 0  # items gapwatch could not judge (closed unresolved before the due time)

    @property
    def attainment(self) -> float | None:
        judged = self.met + self.breached
        return self.met / judged if judged else None

    @property
    def made_sla_share(self) -> float | None:
        return self.source_made / self.source_known if self.source_known else None

    @property
    def agreement(self) -> float | None:
        return self.agree / self.compared if self.compared else None

    def add(self, other: Tally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Comparison:
    groups: dict[str, Tally] = field(default_factory=dict)
    total: Tally = field(default_factory=Tally)
    # Agreement split by what may explain a difference: (compared, agree).
    paused: tuple[int, int] = (0, 0)
    not_paused: tuple[int, int] = (0, 0)
    reopened: tuple[int, int] = (0, 0)
    not_reopened: tuple[int, int] = (0, 0)


@dataclass
class Report:
    comparison: Comparison
    stats: ImportStats
    policies: PolicySet
    limit: int | None
    import_seconds: float
    scoring_seconds: float
    events: int
    rejected: dict[str, int]


def gapwatch_verdict(scoring: Scoring, item_id: str) -> tuple[bool | None, int, int]:
    """(met?, resolution promises met, breached) for one item; None when nothing was judged."""
    clock = scoring.items.get(item_id)
    if clock is None:
        return None, 0, 0
    statuses = [p.status for p in clock.promises if p.kind is PromiseKind.RESOLUTION]
    met = sum(1 for s in statuses if s in MET_STATUSES)
    missed = sum(1 for s in statuses if s in MISSED_STATUSES)
    verdict = False if missed else (True if met else None)
    return verdict, met, missed


def compare(verdicts: Iterable[SourceVerdict], scoring: Scoring) -> Comparison:
    """Tally gapwatch's resolution outcomes against the source's verdicts, per group."""
    result = Comparison()
    splits = {"paused": [0, 0], "not_paused": [0, 0], "reopened": [0, 0], "not_reopened": [0, 0]}
    for item in verdicts:
        tally = result.groups.setdefault(item.group, Tally())
        verdict, met, missed = gapwatch_verdict(scoring, item.item_id)
        tally.items += 1
        tally.met += met
        tally.breached += missed
        if item.made_sla is not None:
            tally.source_known += 1
            tally.source_made += item.made_sla
        if verdict is None:
            tally.no_verdict += 1
            continue
        if item.made_sla is None:
            continue
        tally.compared += 1
        same = verdict == item.made_sla
        tally.agree += same
        tally.gapwatch_met_source_missed += verdict and not item.made_sla
        tally.gapwatch_missed_source_met += (not verdict) and item.made_sla
        for key in (
            "paused" if item.paused else "not_paused",
            "reopened" if item.reopened else "not_reopened",
        ):
            splits[key][0] += 1
            splits[key][1] += same
    for tally in result.groups.values():
        result.total.add(tally)
    result.paused, result.not_paused = _pair(splits["paused"]), _pair(splits["not_paused"])
    result.reopened, result.not_reopened = _pair(splits["reopened"]), _pair(splits["not_reopened"])
    return result


def _pair(values: list[int]) -> tuple[int, int]:
    return values[0], values[1]


def score(events: Iterable[bytes], policies: PolicySet) -> tuple[Scoring, dict[str, int]]:
    """Fold time-ordered events through the scoring core; returns it and rejections by reason."""
    scoring = Scoring(ScoringConfig(ClockConfig.from_policies(policies)), track_windows=False)
    rejected: dict[str, int] = {}
    for raw in events:
        try:
            scoring.process_and_tick(decode_event(raw))
        except LateEvent:
            rejected[LateEvent.reason] = rejected.get(LateEvent.reason, 0) + 1
        except ItemLogFull:
            rejected["item_log_full"] = rejected.get("item_log_full", 0) + 1
        except (Unscorable, ConflictingDuplicate) as exc:
            rejected[exc.reason] = rejected.get(exc.reason, 0) + 1
    return scoring, rejected


def servicenow_report(path: Path, options: ImportOptions, *, progress: bool = True) -> Report:
    """Import a ServiceNow incident log in memory, score it, and compare with `made_sla`.

    `options.policies` are the SLA policies to score with (default: the servicenow file).
    """
    policies = options.policies or load_policies(servicenow.DEFAULT_POLICIES)
    options = replace(options, policies=policies)
    began = time.perf_counter()
    stats = ImportStats()
    incidents: list[Incident] = []

    def documents(rows: Iterable[dict[str, str]]) -> Iterable[dict[str, object]]:
        for incident in map_incidents(rows, options, stats):
            incidents.append(incident)
            yield from incident.events
            incident.events = []  # the pipeline holds the encoded events; free the documents

    with csv_rows(path, progress=progress, label="import servicenow") as rows:
        events = collect(documents(rows), stats)
    imported = time.perf_counter()
    scoring, rejected = score(events, policies)
    scored = time.perf_counter()
    verdicts = [
        SourceVerdict(i.number, i.priority, i.made_sla, i.paused, i.reopened > 0) for i in incidents
    ]
    return Report(
        comparison=compare(verdicts, scoring),
        stats=stats,
        policies=policies,
        limit=options.limit,
        import_seconds=imported - began,
        scoring_seconds=scored - imported,
        events=len(events),
        rejected=rejected,
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _share(pair: tuple[int, int]) -> str:
    compared, agree = pair
    return f"{_pct(agree / compared if compared else None)} of {compared}"


def _duration(target: Target) -> str:
    if target.days is not None:
        return f"{target.days}d"
    seconds = target.seconds or 0.0
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def resolution_targets(policies: PolicySet) -> list[str]:
    """'1 - Critical 4h', ... from the policies that promise a resolution."""
    out = []
    for policy in policies.policies:
        rule = policy.promises.get(PromiseKind.RESOLUTION)
        if rule is not None:
            wanted = policy.match.get("priority", "other")
            name = wanted if isinstance(wanted, str) else "/".join(wanted)
            out.append(f"{name} {_duration(rule.within)}")
    return out


def _bullets(*texts: str) -> list[str]:
    return [
        line
        for text in texts
        for line in textwrap.wrap(text, width=96, initial_indent="- ", subsequent_indent="  ")
    ]


def render(report: Report) -> str:
    """The report as plain text: a table per group, then what explains the differences."""
    c = report.comparison
    header = (
        f"{'priority':<14}{'incidents':>10}{'met':>8}{'breached':>10}{'attainment':>12}"
        f"{'made_sla':>10}{'agreement':>11}{'compared':>10}{'gw>src':>8}{'gw<src':>8}"
        f"{'no verdict':>12}"
    )
    lines = [
        "Resolution SLA: gapwatch (assumed targets) vs the source's made_sla"
        + (f" (first {report.limit} incidents)" if report.limit is not None else ""),
        "",
        header,
        "-" * len(header),
    ]
    rows = [*sorted(c.groups.items()), ("all", c.total)]
    for name, t in rows:
        if name == "all":
            lines.append("-" * len(header))
        lines.append(
            f"{name:<14}{t.items:>10}{t.met:>8}{t.breached:>10}{_pct(t.attainment):>12}"
            f"{_pct(t.made_sla_share):>10}{_pct(t.agreement):>11}{t.compared:>10}"
            f"{t.gapwatch_met_source_missed:>8}{t.gapwatch_missed_source_met:>8}"
            f"{t.no_verdict:>12}"
        )
    total = c.total
    lines += [
        "",
        *textwrap.wrap(
            "met / breached: gapwatch's resolution promises (one per cycle; delivered late counts"
            " as breached); attainment = met / (met + breached). made_sla: share of incidents"
            " whose last row says made_sla=true. agreement: incidents where gapwatch (met = every"
            " judged cycle met) and made_sla say the same, of those both judged (compared)."
            " gw>src: gapwatch met, source missed; gw<src: gapwatch missed, source met. no"
            " verdict: closed unresolved before its due time, so gapwatch did not judge it.",
            width=98,
        ),
        "",
        "Why they differ:",
        *_bullets(
            "Targets are our assumption (deploy/config/servicenow-policies.yaml, 24x7 calendar):"
            f" {', '.join(resolution_targets(report.policies))}. The export does not carry the"
            " source's SLA definitions (targets, schedule, pause conditions).",
            "made_sla's semantics are unknown: it is the source's own flag, it changed within"
            f" {report.stats.notes.get('incident_made_sla_changed', 0)} incidents (we take the"
            " last row), and it may measure another SLA than our resolution promise (a response"
            " target, a business-hours schedule, the last priority rather than the first).",
            "Pauses: gapwatch stops the clock in Awaiting states; the source's pause conditions"
            f" are unknown. Agreement with a pause {_share(c.paused)}, without"
            f" {_share(c.not_paused)}.",
            "Reopen cycles: gapwatch scores each cycle against a fresh target and calls the"
            " incident missed if any cycle missed. Agreement for reopened incidents"
            f" {_share(c.reopened)}, others {_share(c.not_reopened)}.",
            f"Of the disagreements, {total.gapwatch_missed_source_met} are gapwatch stricter"
            f" than the source and {total.gapwatch_met_source_missed} more lenient.",
        ),
        "",
        f"Import: {report.stats.rows} rows -> {report.events} events in "
        f"{report.import_seconds:.1f}s; scoring: {report.scoring_seconds:.1f}s"
        + (
            "; scoring refused " + ", ".join(f"{k}: {n}" for k, n in report.rejected.items())
            if report.rejected
            else ""
        )
        + ".",
        *report.stats.summary()[1:],
    ]
    return "\n".join(lines) + "\n"
