"""`take_ready`, on faust's own in-memory agent test context (no broker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import faust
import pytest

from gapwatch_scorer.batching import take_ready


@asynccontextmanager
async def running_agent(
    max_events: int, linger: float, handle: Any, quiet: float = 0.002
) -> AsyncIterator[tuple[Any, list[list[Any]]]]:
    """An agent batching with `take_ready`, in faust's in-memory test context; yields it and
    the batches it has handled so far."""
    app = faust.App(
        "gapwatch-batching-test",
        broker="kafka://127.0.0.1:1",
        store="memory://",
        loop=asyncio.get_running_loop(),  # else faust makes a loop of its own, left unclosed
    )
    batches: list[list[Any]] = []

    @app.agent()
    async def agent(stream: faust.StreamT[Any]) -> None:
        async for events in take_ready(stream, max_events, linger, quiet):
            batches.append(events)
            await handle(events)

    async with agent.test_context() as running:
        yield running, batches
    # The stream made faust's consumer, whose thread loop is never started in a test context.
    app.consumer._thread.thread_loop.close()


async def until(condition: Any, seconds: float = 5.0) -> None:
    """Return once `condition()` holds; fail after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        if condition():
            return
        if loop.time() > deadline:
            raise AssertionError(f"not true after {seconds:g}s")
        await asyncio.sleep(0.005)


async def test_events_arriving_during_a_batch_go_next_without_waiting_the_linger() -> None:
    release = asyncio.Event()

    async def handle(events: list[Any]) -> None:
        if events[0].value == 0:
            await release.wait()

    # The first event finds the worker idle, so it waits the linger; the ones that arrive
    # while its batch is handled must not.
    async with running_agent(100, linger=2.0, handle=handle) as (running, batches):
        await running.put(0)
        await until(lambda: len(batches) == 1)
        for value in range(1, 6):
            await running.put(value)
        await asyncio.sleep(0.05)
        assert len(batches) == 1  # the first batch is still being handled
        release.set()
        await until(lambda: len(batches) == 2, seconds=1.0)
        assert [[e.value for e in batch] for batch in batches] == [[0], [1, 2, 3, 4, 5]]


async def test_a_batch_goes_once_delivery_pauses_and_gathers_no_longer_than_the_linger() -> None:
    async def handle(events: list[Any]) -> None:
        return None

    quiet, linger = 0.1, 0.4
    async with running_agent(100, linger, handle, quiet) as (running, batches):
        loop = asyncio.get_running_loop()
        began = loop.time()
        await running.put("a")
        await asyncio.sleep(0.03)
        await running.put("b")
        await until(lambda: len(batches) == 1)
        waited = loop.time() - began
        assert [e.value for e in batches[0]] == ["a", "b"]
        assert quiet <= waited < linger  # "b" came before the pause, the pause ended it
        # Events that never pause: the batch goes after the linger all the same.
        for value in range(12):
            await running.put(value)
            await asyncio.sleep(0.05)
        await until(lambda: sum(len(b) for b in batches) == 14)
        assert len(batches) >= 3
        assert [e.value for batch in batches[1:] for e in batch] == list(range(12))


async def test_a_batch_that_is_behind_ignores_pauses_and_gathers_for_the_linger() -> None:
    async def handle(events: list[Any]) -> None:
        return None

    quiet, linger = 0.02, 0.5
    async with running_agent(100, linger, handle, quiet) as (running, batches):
        loop = asyncio.get_running_loop()
        began = loop.time()
        old = time.time() - 10  # appended 10 s ago: the worker is behind
        await running.put("a", timestamp=old)
        await asyncio.sleep(0.1)  # a pause five times `quiet`
        await running.put("b", timestamp=old)
        await until(lambda: len(batches) == 1)
        assert [e.value for e in batches[0]] == ["a", "b"]
        assert loop.time() - began >= linger * 0.9


async def test_a_full_batch_goes_at_once_and_none_is_larger_than_the_most() -> None:
    async def handle(events: list[Any]) -> None:
        await asyncio.sleep(0.01)

    async with running_agent(3, linger=30.0, handle=handle) as (running, batches):
        for value in range(10):
            await running.put(value)
        # Full batches go at once, not after the linger (30 s).
        await until(lambda: sum(len(b) for b in batches) == 10)
        assert all(len(batch) <= 3 for batch in batches)
        assert [e.value for batch in batches for e in batch] == list(range(10))


async def test_events_are_acked_only_after_their_batch_is_handled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps: list[tuple[str, Any]] = []
    release = asyncio.Event()

    async def ack(self: Any, event: Any) -> bool:
        steps.append(("acked", event.value))
        return True

    monkeypatch.setattr(faust.Stream, "ack", ack)

    async def handle(events: list[Any]) -> None:
        steps.append(("handling", [e.value for e in events]))
        await release.wait()
        steps.append(("handled", [e.value for e in events]))

    async with running_agent(10, linger=0.0, handle=handle) as (running, batches):
        await running.put("x")
        await running.put("y")
        await until(lambda: bool(steps))
        await asyncio.sleep(0.05)
        assert not [step for step in steps if step[0] == "acked"]
        release.set()
        await until(lambda: [s for s in steps if s[0] == "acked"] != [] and len(steps) >= 4)
        handled = [i for i, step in enumerate(steps) if step[0] == "handled"]
        acked = [i for i, step in enumerate(steps) if step[0] == "acked"]
        assert min(acked) > min(handled)
        first_batch = [e.value for e in batches[0]]
        assert [value for kind, value in steps[handled[0] + 1 :] if kind == "acked"][
            : len(first_batch)
        ] == first_batch


def test_a_batch_of_fewer_than_one_event_is_refused() -> None:
    async def first() -> None:
        async for _ in take_ready(None, 0, 0.0):  # type: ignore[arg-type]
            pass

    with pytest.raises(ValueError, match="max_events"):
        asyncio.run(first())
