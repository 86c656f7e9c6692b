"""Prometheus metrics of the scorer, created once per registry."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from gapwatch.core.gaps import Outcome
from gapwatch_scorer.loop_lag import LAG_BUCKETS

# Gap histogram buckets, seconds: early by up to a day ... late by up to a day.
GAP_BUCKETS = (
    -86400,
    -14400,
    -3600,
    -900,
    -300,
    -60,
    0,
    60,
    300,
    900,
    3600,
    14400,
    86400,
)
DURATION_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200, 604800)


class ScorerMetrics:
    """Counters and histograms PromQL can sum across workers, window gauges, pipeline health."""

    def __init__(self, registry: CollectorRegistry, segment_labels: tuple[str, ...]) -> None:
        # process_cpu_seconds_total, process_resident_memory_bytes, open fds: CPU and memory
        # per worker, beside the pipeline's own figures.
        ProcessCollector(registry=registry)
        labels = [*segment_labels, "kind"]
        self.segment_labels = segment_labels
        self.outcomes = Counter(
            "gapwatch_promise_outcomes_total",
            "Promise outcomes (met, breached, at_risk, delivered_late, cancelled) by segment.",
            [*labels, "outcome"],
            registry=registry,
        )
        self.gap_seconds = Histogram(
            "gapwatch_promise_gap_seconds",
            "Delivered minus promised time of delivered promises (negative = early).",
            labels,
            buckets=GAP_BUCKETS,
            registry=registry,
        )
        self.promised_seconds = Histogram(
            "gapwatch_promise_promised_seconds",
            "Promised response time (due minus start) of promises that came due or were met.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.delivered_seconds = Histogram(
            "gapwatch_promise_delivered_seconds",
            "Delivered response time (delivery minus start).",
            labels,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # The rolling windows' figures: one metric per quantity, in base units. `window` is
        # 5m..7d; `percentile` (50, 90, 99) a DDSketch estimate (1 % relative accuracy) of the
        # window's values (not `quantile`: these are gauges, and that label is a summary's).
        win = [*labels, "window"]
        self.window: dict[str, Gauge] = {
            name: Gauge(name, text, win + extra, registry=registry)
            for name, text, extra in (
                (
                    "gapwatch_window_outcomes",
                    "Promise outcomes in the rolling window (outcome: met, breached, "
                    "delivered_late, at_risk).",
                    ["outcome"],
                ),
                (
                    "gapwatch_window_attainment_ratio",
                    "Met / (met + breached) in the rolling window.",
                    [],
                ),
                (
                    "gapwatch_window_gap_seconds",
                    "Quantiles of delivered minus due time (negative = early) in the window.",
                    ["percentile"],
                ),
                (
                    "gapwatch_window_promised_seconds",
                    "Quantiles of the promised response time of promises due in the window.",
                    ["percentile"],
                ),
                (
                    "gapwatch_window_delivered_seconds",
                    "Quantiles of the delivered response time of deliveries in the window.",
                    ["percentile"],
                ),
                ("gapwatch_window_csat_score", "Mean CSAT (1-5) in the window.", []),
                ("gapwatch_window_csat_answers", "CSAT answers in the window.", []),
                ("gapwatch_window_nps_score", "NPS (-100..100) in the window.", []),
                ("gapwatch_window_nps_answers", "NPS answers in the window.", []),
                (
                    "gapwatch_window_first_time_fix_ratio",
                    "Jobs fixed on the first visit / completed jobs in the window (kind none).",
                    [],
                ),
                (
                    "gapwatch_window_first_time_fix_jobs",
                    "Completed jobs in the window (kind none).",
                    [],
                ),
            )
        }
        self.csat_by_gap = Gauge(
            "gapwatch_window_csat_by_gap",
            "CSAT answers by how late the item was over the 24h and 7d windows. bucket: early "
            "(delivered with more than GAPWATCH_SCORER_ON_TIME_SHARE of the promised time to "
            "spare), on_time (the rest up to the due time), late_lt_15m, late_15_60m, "
            "late_gt_1h, unknown; stat: sum of scores or count of answers, so sum(sum) / "
            "sum(count) is the mean over any grouping.",
            [*labels, "window", "bucket", "stat"],
            registry=registry,
        )
        self.open = Gauge(
            "gapwatch_open_promises",
            "Promises open right now, by state (open, at_risk, overdue).",
            [*labels, "state"],
            registry=registry,
        )
        self.events = Counter(
            "gapwatch_scorer_events_total",
            "Input events processed, by stream.",
            ["stream"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "gapwatch_scorer_dead_letters_total",
            "Input events sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.gap_events = Counter(
            "gapwatch_scorer_gap_events_total",
            "Gap events produced, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "gapwatch_scorer_processing_seconds",
            "Time from an input event's append to Kafka until its gap events were acknowledged.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.loop_lag = Histogram(
            "gapwatch_scorer_event_loop_lag_seconds",
            "How much later than asked the event loop woke a sleeper (every 0.1 s): time the"
            " loop was held by one piece of work, which every waiting event waited too.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.lag = Gauge(
            "gapwatch_scorer_consumer_lag",
            "Records behind the end of the input topics, summed over assigned partitions.",
            registry=registry,
        )
        self.windows_lag = Gauge(
            "gapwatch_scorer_windows_lag",
            "Gap records behind the end of the segment topic (the windows stage's input), summed"
            " over assigned partitions.",
            registry=registry,
        )
        self.items = Gauge(
            "gapwatch_scorer_items", "Items held in memory by this worker.", registry=registry
        )
        self.clamped = Counter(
            "gapwatch_scorer_clamped_watermarks_total",
            "Restored item clocks whose event time lay beyond the time bound (saved before it "
            "existed): their partition's restored event time was brought back to the bound.",
            registry=registry,
        )
        self.feedback_unjoined = Counter(
            "gapwatch_scorer_feedback_unjoined_total",
            "Feedback dropped after waiting GAPWATCH_SCORER_FEEDBACK_HOLD_SECONDS (event time) "
            "to join its item: the item was never seen, or never delivered.",
            ["reason"],
            registry=registry,
        )
        self.feedback_waiting = Gauge(
            "gapwatch_scorer_feedback_waiting",
            "Feedback waiting to join its item (reason: item_never_seen, never_delivered).",
            ["reason"],
            registry=registry,
        )
        for reason in ("item_never_seen", "never_delivered"):
            self.feedback_unjoined.labels(reason)
            self.feedback_waiting.labels(reason)
        self.before_opening = Counter(
            "gapwatch_scorer_events_before_opening_total",
            "Item events stamped before their item's opening: they took effect at the opening.",
            registry=registry,
        )
        self.unknown_policies = Counter(
            "gapwatch_scorer_unknown_sla_policy_total",
            "Openings naming an sla_policy the configuration lacks: their policy was chosen by "
            "label matching instead (a typo, or a policy not deployed yet).",
            registry=registry,
        )
        self.stage_restarts = Counter(
            "gapwatch_scorer_stage_restarts_total",
            "Restarts of a stage's reader after an unexpected error, by stage and error type.",
            ["stage", "reason"],
            registry=registry,
        )
        for outcome in Outcome:
            self.gap_events.labels(outcome.value)


WINDOW_SERIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "met": ("gapwatch_window_outcomes", ("met",)),
    "breached": ("gapwatch_window_outcomes", ("breached",)),
    "delivered_late": ("gapwatch_window_outcomes", ("delivered_late",)),
    "at_risk": ("gapwatch_window_outcomes", ("at_risk",)),
    "attainment": ("gapwatch_window_attainment_ratio", ()),
    "gap_p50": ("gapwatch_window_gap_seconds", ("50",)),
    "gap_p90": ("gapwatch_window_gap_seconds", ("90",)),
    "gap_p99": ("gapwatch_window_gap_seconds", ("99",)),
    "promised_p50": ("gapwatch_window_promised_seconds", ("50",)),
    "promised_p90": ("gapwatch_window_promised_seconds", ("90",)),
    "delivered_p50": ("gapwatch_window_delivered_seconds", ("50",)),
    "delivered_p90": ("gapwatch_window_delivered_seconds", ("90",)),
    "csat_mean": ("gapwatch_window_csat_score", ()),
    "csat_count": ("gapwatch_window_csat_answers", ()),
    "nps": ("gapwatch_window_nps_score", ()),
    "nps_count": ("gapwatch_window_nps_answers", ()),
    "ftf_rate": ("gapwatch_window_first_time_fix_ratio", ()),
    "ftf_count": ("gapwatch_window_first_time_fix_jobs", ()),
}
"""Each window figure (`WindowFigures` field) -> its metric and the values of the metric's own
labels after (segment, kind, window)."""


def publish_series(
    gauge: Gauge,
    values: Mapping[tuple[str, ...], float],
    published: set[tuple[str, ...]],
) -> set[tuple[str, ...]]:
    """Set each series of `gauge` (by label values) to its value, then remove the series
    `published` before and not now; returns the series published now.

    Unlike `clear()` and refill, a scrape rendered meanwhile (`/metrics` renders in a thread)
    sees every series, with its old or its new value, never a gauge half refilled.
    """
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    for labels in published - values.keys():
        gauge.remove(*labels)
    return set(values)
