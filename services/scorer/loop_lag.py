"""How late the event loop runs: the scorer's own view of what holds every batch and timer.

A callback that holds the loop (a long batch, a snapshot, a full garbage collection) delays
every event waiting behind it; the processing-latency histogram shows that only as a tail,
without saying whether the scorer's loop or something outside it (the broker, the machine) was
late. A sleeper that asks to wake every `interval` seconds measures how much later it woke.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Histogram

LAG_INTERVAL_SECONDS = 0.1
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


async def watch_loop_lag(lag: Histogram, interval: float = LAG_INTERVAL_SECONDS) -> None:
    """Observe, every `interval`, how much later than asked the loop woke this task; until
    cancelled. Costs one wake-up per interval."""
    while True:
        asked = time.perf_counter() + interval
        await asyncio.sleep(interval)
        lag.observe(max(0.0, time.perf_counter() - asked))
