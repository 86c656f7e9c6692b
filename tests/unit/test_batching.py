"""`take_ready`, on faust's own in-memory agent test context (no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import faust
import pytest

from gapwatch_scorer.batching import take_ready


@asynccontextmanager
async def running_agent(
    max_events: int, linger: float, handle: Any
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
        async for events in take_ready(stream, max_events, linger):
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


async def test_a_batch_begun_idle_waits_the_linger_for_company_but_no_longer() -> None:
    async def handle(events: list[Any]) -> None:
        return None

    linger = 0.3
    async with running_agent(100, linger=linger, handle=handle) as (running, batches):
        loop = asyncio.get_running_loop()
        began = loop.time()
        await running.put("a")
        await asyncio.sleep(0.05)
        await running.put("b")
        await until(lambda: len(batches) == 1)
        waited = loop.time() - began
        assert [e.value for e in batches[0]] == ["a", "b"]
        assert linger * 0.9 <= waited < linger + 1.0


async def test_a_full_batch_goes_at_once_and_none_is_larger_than_the_most() -> None:
    async def handle(events: list[Any]) -> None:
        await asyncio.sleep(0.01)

    async with running_agent(3, linger=30.0, handle=handle) as (running, batches):
        for value in range(10):
            await running.put(value)
        # Nine events fill three batches at once; the tenth waits for company (30 s).
        await until(lambda: sum(len(b) for b in batches) >= 9)
        assert all(len(batch) <= 3 for batch in batches)
        assert [e.value for batch in batches for e in batch] == list(range(9))


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
