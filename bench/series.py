"""How big the scorer's `/metrics` gets at the segment cap: series, bytes and render time.

    .venv/bin/python -m bench.series [--caps 30,100,500] [--kinds 5]

Fills the scorer's own `ScorerMetrics` as a worker does when every admitted segment has every
figure: each (segment, promise kind) with all outcomes counted, its three histograms observed,
every window figure and CSAT-by-gap bucket published, and its open promises by state. That is
the upper bound a worker's scrape reaches when its keyer is full (`GAPWATCH_SCORER_SEGMENT_CAP`
segments, plus the `other` overflow). No broker is needed: the figures are Prometheus' text
format, rendered by prometheus-client as `/metrics` renders it.

Prints one line per cap: series (sample lines), scrape bytes, render seconds (best of 3) and the
memory the registry took, and the per-(segment, kind) cost.
"""

from __future__ import annotations

import argparse
import gc
import resource
import time

from prometheus_client import CollectorRegistry, generate_latest

from gapwatch.core.gaps import Outcome
from gapwatch.core.promises import PromiseKind
from gapwatch.core.windows import WINDOWS, GapBucket
from gapwatch_scorer.app import CSAT_BY_GAP_WINDOWS, WINDOW_FIGURES
from gapwatch_scorer.metrics import WINDOW_SERIES, ScorerMetrics, publish_series

LABELS = ("team", "region", "priority")
OPEN_STATES = ("open", "at_risk", "overdue")


def fill(metrics: ScorerMetrics, segments: int, kinds: tuple[str, ...]) -> None:
    window: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in metrics.window}
    by_gap: dict[tuple[str, ...], float] = {}
    opened: dict[tuple[str, ...], float] = {}
    # The overflow segment is one more series set beside the admitted ones.
    for n in range(segments + 1):
        values = ("other",) * 3 if n == segments else (f"team-{n}", f"region-{n % 7}", "p2")
        for kind in kinds:
            for outcome in Outcome:
                metrics.outcomes.labels(*values, kind, outcome.value).inc()
            for histogram in (metrics.gap_seconds, metrics.promised_seconds):
                histogram.labels(*values, kind).observe(600.0)
            metrics.delivered_seconds.labels(*values, kind).observe(900.0)
            for spec in WINDOWS:
                for figure in WINDOW_FIGURES:
                    metric, extra = WINDOW_SERIES[figure]
                    window[metric][(*values, kind, spec.name, *extra)] = 1.0
            for name in CSAT_BY_GAP_WINDOWS:
                for bucket in GapBucket:
                    for stat in ("sum", "count"):
                        by_gap[(*values, kind, name, bucket.value, stat)] = 1.0
            for state in OPEN_STATES:
                opened[(*values, kind, state)] = 1.0
        for spec in WINDOWS:
            for figure in ("ftf_rate", "ftf_count"):
                metric, extra = WINDOW_SERIES[figure]
                window[metric][(*values, "none", spec.name, *extra)] = 1.0
    for name, gauge in metrics.window.items():
        publish_series(gauge, window[name], set())
    publish_series(metrics.csat_by_gap, by_gap, set())
    publish_series(metrics.open, opened, set())


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--caps", default="30,100,500")
    parser.add_argument("--kinds", type=int, default=len(PromiseKind))
    args = parser.parse_args()
    kinds = tuple(kind.value for kind in PromiseKind)[: args.kinds]
    print(f"labels {','.join(LABELS)}; promise kinds per segment: {len(kinds)} ({','.join(kinds)})")
    print(
        f"{'cap':>6} {'series':>9} {'per seg':>8} {'scrape MB':>10} {'render s':>9} {'RSS MiB':>8}"
    )
    for cap in (int(c) for c in args.caps.split(",")):
        registry = CollectorRegistry()
        gc.collect()
        before = rss_kib()
        metrics = ScorerMetrics(registry, LABELS)
        fill(metrics, cap, kinds)
        grown = (rss_kib() - before) / 1024
        best, body = float("inf"), b""
        for _ in range(3):
            started = time.perf_counter()
            body = generate_latest(registry)
            best = min(best, time.perf_counter() - started)
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        per_segment = sum(1 for line in body.splitlines() if b'team="team-0"' in line)
        print(
            f"{cap:>6} {series:>9,} {per_segment:>8,} {len(body) / 1e6:>10.1f} {best:>9.2f} "
            f"{grown:>8.0f}"
        )
        del registry, metrics, body


if __name__ == "__main__":
    main()
