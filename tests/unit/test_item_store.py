"""The scorer's item databases, without a broker (recovery: the integration tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gapwatch_scorer.item_store import RocksItemStore, item_key


def test_writes_go_with_their_offset_and_only_to_partitions_held(tmp_path: Path):
    store = RocksItemStore(tmp_path, "items-changelog")
    store._open(0)
    assert store.write(0, [(item_key("A"), b"a")], offset=7)
    assert store.get(0, item_key("A")) == b"a" and store.persisted_offset(0) == 7
    assert list(store.saved(0)) == [(item_key("A"), b"a")]  # not the offset key
    assert not store.write(1, [(item_key("B"), b"b")], offset=0)  # let go: its changelog has it
    store.close({0})
    assert not store.write(0, [(item_key("A"), b"a2")], offset=8)
    with pytest.raises(LookupError):
        store.get(0, item_key("A"))
