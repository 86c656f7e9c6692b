"""Rule evaluation: the latest window figures per segment in, one verdict per rule and group out.

Pure. `FiguresBook` keeps the newest snapshot record of every (segment, promise kind, window)
and the newest open-count record of every (segment, kind, source partition) the scorer
published; `evaluate` judges every rule's groups against it at a given time.

How groups are aggregated across the segments in them (a rule's `group_by` is usually coarser
than the scorer's segment labels, e.g. team over team, region and priority):
- counts add exactly: met, breached, overdue, CSAT (a count-weighted mean);
- quantiles cannot be added, so a divergence rule looks at each segment with at least
  `min_events` outcomes in its window and takes the worst: the group diverges when any of its
  segments does (the figures name that segment). Conservative, and documented in docs/alerting.md.

A record older than `stale_after` seconds (the scorer stopped publishing it) does not count; a
group with nothing fresh, or no outcomes at all in the window, has no data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gapwatch.core.alerts.lifecycle import Verdict
from gapwatch.core.alerts.rules import (
    WINDOW_NAMES,
    AlertsConfig,
    BurnRateCondition,
    CsatCondition,
    DivergenceCondition,
    OverdueCondition,
    Rule,
)
from gapwatch.core.promises import PromiseKind

__all__ = ["Evaluator", "FigureError", "FiguresBook", "GroupKey", "evaluate", "group_labels"]

SegmentKey = tuple[tuple[str, str], ...]
GroupKey = tuple[str, ...]
"""Values of the rule's `group_by` labels, in its order."""

LATEST_BREACHED_LIMIT = 20
# Burn rates are ratios of counts divided by a budget like 1 - 0.95, which floats cannot hold
# exactly: 72 breaches of 100 at a 95 % objective must burn 14.4x, not 14.399999999999986x.
_EPSILON = 1e-9
_KINDS = tuple(PromiseKind)


class FigureError(ValueError):
    """A snapshot record that is not what the scorer publishes; it is skipped, not guessed."""


@dataclass(slots=True)
class _Window:
    met: int
    breached: int
    delivered_late: int
    gap_p90: float | None
    promised_p90: float | None
    delivered_p90: float | None
    csat_mean: float | None
    csat_count: int
    latest_breached: tuple[str, ...]
    as_of: float


@dataclass(slots=True)
class _Open:
    open: int
    at_risk: int
    overdue: int
    as_of: float


def record_as_of(record: Mapping[str, Any]) -> float:
    value = record.get("as_of")
    if not isinstance(value, str):
        raise FigureError("as_of: missing")
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise FigureError(f"as_of: not ISO 8601: {value[:40]!r}") from None
    if t.tzinfo is None:
        raise FigureError("as_of: no UTC offset")
    return t.timestamp()


def _int(record: Mapping[str, Any], name: str) -> int:
    value = record.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FigureError(f"{name}: expected a count")
    return value


def _num(record: Mapping[str, Any], name: str) -> float | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise FigureError(f"{name}: expected a number")
    return float(value)


@dataclass(slots=True)
class FiguresBook:
    """The newest figures of every series the scorer publishes."""

    windows: dict[tuple[PromiseKind, str], dict[SegmentKey, _Window]] = field(default_factory=dict)
    open: dict[PromiseKind, dict[SegmentKey, dict[int, _Open]]] = field(default_factory=dict)
    segments: dict[SegmentKey, dict[str, str]] = field(default_factory=dict)
    version: int = 0  # grows when a new segment appears: rule selections are cached on it
    latest_as_of: float = 0.0

    def update(self, record: Mapping[str, Any]) -> None:
        """Take one record from `gapwatch.scores.v1`; an older one than held is ignored."""
        kind_name = record.get("kind")
        segment = record.get("segment")
        if not isinstance(segment, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in segment.items()
        ):
            raise FigureError("segment: expected an object of strings")
        try:
            promise_kind = PromiseKind(str(record.get("promise_kind")))
        except ValueError:
            raise FigureError("promise_kind: unknown") from None
        as_of = record_as_of(record)
        key: SegmentKey = tuple(sorted(segment.items()))
        if kind_name == "window":
            window = record.get("window")
            if window not in WINDOW_NAMES:
                raise FigureError("window: unknown")
            series = self.windows.setdefault((promise_kind, window), {})
            held = series.get(key)
            if held is not None and held.as_of > as_of:
                return
            latest = record.get("latest_breached") or []
            if not isinstance(latest, list) or not all(isinstance(i, str) for i in latest):
                raise FigureError("latest_breached: expected a list of ids")
            series[key] = _Window(
                met=_int(record, "met"),
                breached=_int(record, "breached"),
                delivered_late=_int(record, "delivered_late"),
                gap_p90=_num(record, "gap_p90"),
                promised_p90=_num(record, "promised_p90"),
                delivered_p90=_num(record, "delivered_p90"),
                csat_mean=_num(record, "csat_mean"),
                csat_count=_int(record, "csat_count"),
                latest_breached=tuple(latest[:LATEST_BREACHED_LIMIT]),  # newest first
                as_of=as_of,
            )
        elif kind_name == "open":
            partition = record.get("source_partition")
            if not isinstance(partition, int) or isinstance(partition, bool):
                raise FigureError("source_partition: expected an integer")
            parts = self.open.setdefault(promise_kind, {}).setdefault(key, {})
            held_open = parts.get(partition)
            if held_open is not None and held_open.as_of > as_of:
                return
            parts[partition] = _Open(
                _int(record, "open"), _int(record, "at_risk"), _int(record, "overdue"), as_of
            )
        else:
            raise FigureError("kind: expected 'window' or 'open'")
        if key not in self.segments:
            self.segments[key] = dict(segment)
            self.version += 1
        self.latest_as_of = max(self.latest_as_of, as_of)


# --- evaluation -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Sum:
    """Counts of one group over one window, summed across its fresh segments."""

    met: int = 0
    breached: int = 0
    delivered_late: int = 0
    csat_total: float = 0.0
    csat_count: int = 0
    fresh: bool = False
    latest_breached: list[str] = field(default_factory=list)
    segments: list[tuple[SegmentKey, _Window]] = field(default_factory=list)


def group_labels(rule: Rule, key: GroupKey) -> dict[str, str]:
    return dict(zip(rule.group_by, key, strict=True))


class _Selection:
    """Which segments a rule reads and which group each falls in; rebuilt when segments appear."""

    __slots__ = ("book", "groups", "version")

    def __init__(self, rule: Rule, book: FiguresBook) -> None:
        self.book = id(book)
        self.version = book.version
        self.groups: dict[SegmentKey, GroupKey] = {}
        for key, labels in book.segments.items():
            if all(labels.get(k) == v for k, v in rule.match.items()):
                self.groups[key] = tuple(labels.get(label, "none") for label in rule.group_by)


class Evaluator:
    """Evaluates every rule of a config; caches each rule's segment selection between calls."""

    def __init__(self, config: AlertsConfig, *, stale_after: float) -> None:
        self.config = config
        self.stale_after = stale_after
        self._selections: dict[str, _Selection] = {}

    def evaluate(
        self,
        book: FiguresBook,
        now: datetime,
        known: Mapping[str, Iterable[GroupKey]] = {},
        *,
        quiet: bool = False,
    ) -> dict[tuple[str, GroupKey], Verdict]:
        """A verdict for every group of every rule with figures, and for the `known` groups.

        `known` names groups (per rule) that have an alert already: a group whose segments
        vanished still gets a verdict (no data), so its alert can resolve or be kept. With
        `quiet`, groups that do not fire and are not known get no verdict at all: the alerter
        has nothing to do for them, and skipping their evidence is most of the cost.
        """
        cutoff = now.timestamp() - self.stale_after
        sums: dict[tuple[Any, ...], dict[GroupKey, _Sum]] = {}
        verdicts: dict[tuple[str, GroupKey], Verdict] = {}
        for rule in self.config.rules:
            wanted = frozenset(known.get(rule.name, ())) if quiet else None
            selection = self._selections.get(rule.name)
            if selection is None or selection.version != book.version or selection.book != id(book):
                selection = self._selections[rule.name] = _Selection(rule, book)
            kinds = rule.promise_kinds or _KINDS
            condition = rule.condition
            results: dict[GroupKey, Verdict]
            if isinstance(condition, BurnRateCondition):
                results = _burn_rate(rule, condition, book, selection, kinds, cutoff, sums, wanted)
            elif isinstance(condition, DivergenceCondition):
                window = _sum(book, selection, kinds, condition.window, cutoff, sums, rule)
                results = {g: _divergence(rule, condition, g, s) for g, s in window.items()}
            elif isinstance(condition, CsatCondition):
                window = _sum(book, selection, kinds, condition.window, cutoff, sums, rule)
                results = {g: _csat(rule, condition, g, s) for g, s in window.items()}
            else:
                results = _overdue(rule, condition, book, selection, kinds, cutoff)
            for group, verdict in results.items():
                if wanted is None or verdict.firing or group in wanted:
                    verdicts[(rule.name, group)] = verdict
            for group in known.get(rule.name, ()):
                if (rule.name, group) not in verdicts:
                    verdicts[(rule.name, group)] = Verdict(
                        None, rule.severity, _no_data(rule, group)
                    )
        return verdicts


def evaluate(
    config: AlertsConfig, book: FiguresBook, now: datetime, *, stale_after: float
) -> dict[tuple[str, GroupKey], Verdict]:
    """One-off evaluation (tests, tools); services keep an `Evaluator` for its caches."""
    return Evaluator(config, stale_after=stale_after).evaluate(book, now)


def _sum(
    book: FiguresBook,
    selection: _Selection,
    kinds: tuple[PromiseKind, ...],
    window: str,
    cutoff: float,
    memo: dict[tuple[Any, ...], dict[GroupKey, _Sum]],
    rule: Rule,
) -> dict[GroupKey, _Sum]:
    memo_key = (kinds, window, tuple(sorted(rule.match.items())), rule.group_by)
    found = memo.get(memo_key)
    if found is not None:
        return found
    groups = selection.groups
    out: dict[GroupKey, _Sum] = {}
    for kind in kinds:
        series = book.windows.get((kind, window))
        if not series:
            continue
        for key, fig in series.items():
            group = groups.get(key)
            if group is None:
                continue
            total = out.get(group)
            if total is None:
                total = out[group] = _Sum()
            if fig.as_of < cutoff:
                continue
            total.fresh = True
            total.met += fig.met
            total.breached += fig.breached
            total.delivered_late += fig.delivered_late
            if fig.csat_mean is not None and fig.csat_count:
                total.csat_total += fig.csat_mean * fig.csat_count
                total.csat_count += fig.csat_count
            if fig.latest_breached:
                total.latest_breached.extend(fig.latest_breached)
            total.segments.append((key, fig))
    memo[memo_key] = out
    return out


def _describe(rule: Rule, group: GroupKey) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in zip(rule.group_by, group, strict=True))
    head = rule.summary or rule.name
    return f"{head} ({labels})" if labels else head


def _no_data(rule: Rule, group: GroupKey) -> str:
    return f"{_describe(rule, group)}: no data"


def _latest(total: _Sum) -> tuple[str, ...]:
    return tuple(dict.fromkeys(total.latest_breached))[:LATEST_BREACHED_LIMIT]


def _burn_rate(
    rule: Rule,
    condition: BurnRateCondition,
    book: FiguresBook,
    selection: _Selection,
    kinds: tuple[PromiseKind, ...],
    cutoff: float,
    memo: dict[tuple[Any, ...], dict[GroupKey, _Sum]],
    wanted: frozenset[GroupKey] | None = None,
) -> dict[GroupKey, Verdict]:
    budget = 1.0 - condition.objective
    pairs = [(p.long, p.short, p.factor - _EPSILON) for p in condition.windows]
    by_window = {
        name: _sum(book, selection, kinds, name, cutoff, memo, rule)
        for pair in condition.windows
        for name in (pair.long, pair.short)
    }
    groups: set[GroupKey] = set()
    for sums in by_window.values():
        groups.update(sums)
    out: dict[GroupKey, Verdict] = {}
    empty = _Sum()
    for group in groups:
        if (
            wanted is not None
            and group not in wanted
            and not _burns(by_window, pairs, group, budget, condition.min_events)
        ):
            continue  # healthy and never alerted: nothing to say (quiet mode)
        worst: tuple[int, dict[str, Any], str, tuple[str, ...]] | None = None
        judged = False
        first: dict[str, Any] = {}
        first_window = ""
        for pair in condition.windows:
            long = by_window[pair.long].get(group, empty)
            short = by_window[pair.short].get(group, empty)
            total_long = long.met + long.breached
            if not long.fresh or total_long == 0:
                continue
            judged = True
            burn_long = (long.breached / total_long) / budget
            total_short = short.met + short.breached
            burn_short = (short.breached / total_short) / budget if total_short else 0.0
            figures = {
                "objective": condition.objective,
                "factor": pair.factor,
                "long_window": pair.long,
                "short_window": pair.short,
                "attainment_long": round(long.met / total_long, 6),
                "attainment_short": (round(short.met / total_short, 6) if total_short else None),
                "burn_rate_long": round(burn_long, 4),
                "burn_rate_short": round(burn_short, 4),
                "met_long": long.met,
                "breached_long": long.breached,
                "min_events": condition.min_events,
            }
            if not first:
                first, first_window = figures, pair.long
            if (
                total_long >= condition.min_events
                and burn_long + _EPSILON >= pair.factor
                and burn_short + _EPSILON >= pair.factor
                and (worst is None or pair.severity.rank > worst[0])
            ):
                worst = (pair.severity.rank, figures, pair.long, _latest(long))
        label = _describe(rule, group)
        if worst is not None:
            _, figures, window, latest = worst
            severity = next(p.severity for p in condition.windows if p.severity.rank == worst[0])
            summary = (
                f"{label}: attainment {figures['attainment_long']:.1%} over {window} "
                f"burns the {condition.objective:.1%} objective's budget "
                f"{figures['burn_rate_long']:.1f}x (limit {figures['factor']:g}x)"
            )
            out[group] = Verdict(True, severity, summary, figures, window, latest)
        elif judged:
            summary = f"{label}: attainment {first['attainment_long']:.1%} over {first_window}"
            out[group] = Verdict(False, rule.severity, summary, first, first_window)
        else:
            out[group] = Verdict(None, rule.severity, _no_data(rule, group))
    return out


def _burns(
    by_window: dict[str, dict[GroupKey, _Sum]],
    pairs: list[tuple[str, str, float]],
    group: GroupKey,
    budget: float,
    min_events: int,
) -> bool:
    """Whether any window pair burns at its factor: the cheap test before the evidence."""
    for long_name, short_name, factor in pairs:
        long = by_window[long_name].get(group)
        short = by_window[short_name].get(group)
        if long is None or short is None or not long.fresh:
            continue
        total_long = long.met + long.breached
        total_short = short.met + short.breached
        if (
            total_long >= min_events
            and total_short
            and long.breached / total_long / budget >= factor
            and short.breached / total_short / budget >= factor
        ):
            return True
    return False


def _divergence(
    rule: Rule, condition: DivergenceCondition, group: GroupKey, total: _Sum
) -> Verdict:
    """The group diverges when its worst segment (with enough outcomes) does."""
    worst: tuple[float, dict[str, Any], SegmentKey] | None = None
    judged = False
    for key, fig in total.segments:
        events = fig.met + fig.breached  # each promise once: a late delivery was a breach
        if events < condition.min_events:
            continue
        judged = True
        excess = 0.0
        ratio = None
        if condition.max_ratio is not None and fig.delivered_p90 is not None and fig.promised_p90:
            ratio = fig.delivered_p90 / fig.promised_p90
            excess = max(excess, ratio / condition.max_ratio)
        if condition.max_gap_p90 is not None and fig.gap_p90 is not None:
            if condition.max_gap_p90 > 0:
                excess = max(excess, fig.gap_p90 / condition.max_gap_p90)
            elif fig.gap_p90 > 0:
                excess = max(excess, float("inf"))
        figures = {
            "segment": dict(key),
            "events": events,
            "delivered_p90": fig.delivered_p90,
            "promised_p90": fig.promised_p90,
            "ratio": None if ratio is None else round(ratio, 4),
            "max_ratio": condition.max_ratio,
            "gap_p90": fig.gap_p90,
            "max_gap_p90": condition.max_gap_p90,
        }
        if worst is None or excess > worst[0]:
            worst = (excess, figures, key)
    if not judged or worst is None:
        if total.fresh:  # figures, but no segment with enough outcomes: too few to judge
            figures = {"min_events": condition.min_events, "segments": len(total.segments)}
            summary = f"{_describe(rule, group)}: too few outcomes over {condition.window}"
            return Verdict(False, rule.severity, summary, figures, condition.window)
        return Verdict(None, rule.severity, _no_data(rule, group))
    excess, figures, key = worst
    where = ", ".join(f"{k}={v}" for k, v in key)
    window = condition.window
    head = f"{_describe(rule, group)}: worst segment {where}"
    measured = []
    if figures["ratio"] is not None:
        measured.append(f"delivered p90 is {figures['ratio']:.2f}x promised p90")
    if figures["gap_p90"] is not None:
        measured.append(f"gap p90 {figures['gap_p90']:.0f}s")
    summary = f"{head}: {', '.join(measured) or 'no quantiles'} over {window}"
    firing = excess > 1.0
    return Verdict(
        firing, rule.severity, summary, figures, window, _latest(total) if firing else ()
    )


def _csat(rule: Rule, condition: CsatCondition, group: GroupKey, total: _Sum) -> Verdict:
    if not total.fresh or total.csat_count == 0:
        return Verdict(None, rule.severity, _no_data(rule, group))
    mean = total.csat_total / total.csat_count
    figures = {
        "csat_mean": round(mean, 4),
        "csat_count": total.csat_count,
        "floor": condition.floor,
        "min_responses": condition.min_responses,
    }
    firing = total.csat_count >= condition.min_responses and mean < condition.floor
    summary = (
        f"{_describe(rule, group)}: CSAT {mean:.2f} from {total.csat_count} responses "
        f"over {condition.window} (floor {condition.floor:g})"
    )
    return Verdict(firing, rule.severity, summary, figures, condition.window, _latest(total))


def _overdue(
    rule: Rule,
    condition: OverdueCondition,
    book: FiguresBook,
    selection: _Selection,
    kinds: tuple[PromiseKind, ...],
    cutoff: float,
) -> dict[GroupKey, Verdict]:
    counts: dict[GroupKey, list[int]] = {}
    groups = selection.groups
    for kind in kinds:
        for key, parts in book.open.get(kind, {}).items():
            group = groups.get(key)
            if group is None:
                continue
            total = counts.setdefault(group, [0, 0, 0, 0])
            for part in parts.values():
                if part.as_of < cutoff:
                    continue
                total[0] += part.open
                total[1] += part.at_risk
                total[2] += part.overdue
                total[3] += 1
    out = {}
    for group, (open_, at_risk, overdue, fresh) in counts.items():
        label = _describe(rule, group)
        if not fresh:
            out[group] = Verdict(None, rule.severity, _no_data(rule, group))
            continue
        figures = {"open": open_, "at_risk": at_risk, "overdue": overdue, "above": condition.above}
        summary = f"{label}: {overdue} promises overdue and still open (limit {condition.above})"
        out[group] = Verdict(overdue > condition.above, rule.severity, summary, figures, "now")
    return out
