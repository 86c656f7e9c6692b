"""The loop-lag watcher sees a callback that holds the event loop, and only then."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Histogram

from gapwatch_scorer.loop_lag import LAG_BUCKETS, watch_loop_lag


def lag_histogram() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    return registry, Histogram("lag_seconds", "test", buckets=LAG_BUCKETS, registry=registry)


async def watched(hold: float) -> CollectorRegistry:
    registry, lag = lag_histogram()
    watcher = asyncio.create_task(watch_loop_lag(lag, interval=0.01))
    await asyncio.sleep(0.05)
    if hold:
        time.sleep(hold)  # noqa: ASYNC251 - one callback holding the loop, as a long batch would
    await asyncio.sleep(0.05)
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    return registry


def test_a_callback_holding_the_loop_shows_as_lag():
    registry = asyncio.run(watched(hold=0.3))
    over_a_quarter = registry.get_sample_value("lag_seconds_bucket", {"le": "0.25"})
    count = registry.get_sample_value("lag_seconds_count")
    assert count is not None and count >= 5  # it kept observing before and after
    assert over_a_quarter is not None and over_a_quarter == count - 1  # exactly one late wake
    total = registry.get_sample_value("lag_seconds_sum")
    assert total is not None and total >= 0.25


def test_an_idle_loop_shows_no_lag_of_note():
    registry = asyncio.run(watched(hold=0.0))
    count = registry.get_sample_value("lag_seconds_count")
    under_a_tenth = registry.get_sample_value("lag_seconds_bucket", {"le": "0.1"})
    assert count is not None and count >= 5
    assert under_a_tenth == count
