"""Batches of faust events that go as soon as faust has nothing more to hand over.

faust's `Stream.take_events(max_, within)` waits the whole `within` before every batch unless
`max_` events arrive first, and it stops adding events while the caller handles a batch. So an
event that arrives during a batch waits for the rest of that batch, then the whole `within`,
then its own batch: at 1,200 events/s, with `within` 50 ms, that was most of a p99 of 104-123 ms.

`take_ready` keeps adding events while a batch is handled (up to `max_events`, then it holds
faust's delivery back, as `take_events` does). A batch goes once faust's delivery pauses for
`quiet` seconds, or is full, or has gathered for `linger` seconds. Handing over just what is
there would not do: faust delivers on the worker's one thread, mostly while the caller awaits
its acks, so batches would stay small, each paying a batch's fixed cost, and a worker that fell
behind would stay behind (the scorer's drain rate fell by a third, and 3 of 9 bench runs at
1,200 events/s settled at a steady 1.1-1.7 s delay, with batches of 10-40 events). So a batch
whose first event is already older than `linger` (the worker is behind) ignores pauses and
gathers for the whole `linger` or until full, as `take_events` did every time.

Events are acked (their offsets may commit) only after the caller has handled their batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from faust.types import EventT, StreamT

log = logging.getLogger(__name__)
IDLE_WAKE_SECONDS = 0.05
"""An idle stream's wait for its first event wakes this often, as `take_events` did."""
QUIET_SECONDS = 0.002
"""A pause in faust's delivery this long ends a batch (see the module's doc)."""


async def take_ready(
    stream: StreamT[Any], max_events: int, linger: float, quiet: float = QUIET_SECONDS
) -> AsyncIterator[list[EventT]]:
    """Yield lists of at most `max_events` events from `stream`, as described above."""
    if max_events < 1:
        raise ValueError(f"max_events must be at least 1, not {max_events}")
    gathered: list[EventT] = []
    arrived = asyncio.Event()  # `gathered` is not empty
    full = asyncio.Event()  # `gathered` holds `max_events`
    room = asyncio.Event()  # `gathered` was handed over: the adder may go on
    room.set()

    async def gather(value: Any) -> Any:
        # A stream processor: faust calls it for each event it delivers, in order.
        try:
            event = stream.current_event
            if event is None:
                raise RuntimeError("a batch found faust's current event unset")
            gathered.append(event)
            arrived.set()
            if len(gathered) >= max_events:
                full.set()
                room.clear()
                await stream.wait(room)  # type: ignore[attr-defined, arg-type]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # as take_events: crash the stream, never drop silently
            log.exception("error adding an event to a batch: %r", exc)
            await stream.crash(exc)  # type: ignore[attr-defined]
        return value

    # The events are acked here, after their batch, not by the stream as they pass.
    stream.enable_acks = False
    stream.add_processor(gather)
    stream._enable_passive(aiter(stream.channel))  # type: ignore[attr-defined]
    wait_for = stream.wait_for_stopped  # type: ignore[attr-defined]
    clock = asyncio.get_running_loop().time
    while not stream.should_stop:  # type: ignore[attr-defined]
        if not gathered:
            await wait_for(arrived, timeout=IDLE_WAKE_SECONDS)
            if not gathered:
                continue  # stopping, or nothing yet
        deadline = clock() + linger
        # A batch whose first event is older than `linger` means the worker is behind: it then
        # gathers for the whole `linger` (or until full), so its fixed cost is shared widely
        # enough to catch up; a pause in delivery ends only a batch that is not behind.
        behind = time.time() - (gathered[0].message.timestamp or time.time()) > linger
        while len(gathered) < max_events and (left := deadline - clock()) > 0:
            before = len(gathered)
            await wait_for(full, timeout=left if behind else min(quiet, left))
            if len(gathered) == before:
                break  # faust's delivery paused, or the batch has gathered for `linger`
        batch = gathered[:]
        gathered.clear()
        arrived.clear()
        full.clear()
        room.set()
        try:
            yield batch
        finally:
            for event in batch:
                await stream.ack(event)
