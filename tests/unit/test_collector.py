"""The scorer's pacing of the cyclic garbage collector."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gapwatch_scorer.collector import freeze_survivors


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def _unfrozen_after() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_survivors_leave_the_full_collections_sight_and_young_cycles_are_collected():
    kept = [Node() for _ in range(100)]
    garbage = Node()
    garbage.other = Node()
    garbage.other.other = garbage  # a cycle: only the collector frees it
    gone = weakref.ref(garbage)
    del garbage

    freeze_survivors()

    assert gone() is None  # collected, not frozen
    assert gc.get_freeze_count() >= len(kept)
    tracked = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
    assert not tracked & {id(node) for node in kept}  # out of every generation's walk


def test_nothing_is_collected_or_frozen_while_the_collector_is_off():
    gc.disable()
    try:
        garbage = Node()
        garbage.other = garbage
        stays = weakref.ref(garbage)
        del garbage
        before = gc.get_freeze_count()
        freeze_survivors()
        assert gc.get_freeze_count() == before
        assert stays() is not None  # a restore under way: left for the collector to see later
    finally:
        gc.enable()
    gc.collect()
    assert stays() is None
