"""Snapshot records read behind the live edge come back round by round, in event time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gapwatch.core.alerts.rounds import Rounds


def rounds(step: float = 1.0, ahead: float = 120.0) -> Rounds[str]:
    return Rounds(step=step, ahead=ahead)


def test_rounds_come_out_in_event_time_whatever_order_the_partitions_were_read_in():
    waiting = rounds()
    # Partition 1 was fetched first, then partition 0: each holds two snapshot rounds.
    waiting.add(1, 0, 100.0, "p1-a")
    waiting.add(1, 1, 110.0, "p1-b")
    waiting.add(0, 0, 100.2, "p0-a")
    waiting.add(0, 1, 110.3, "p0-b")
    out = list(waiting.take(behind=set()))
    assert [r.records for r in out] == [["p1-a", "p0-a"], ["p1-b", "p0-b"]]
    assert [r.as_of for r in out] == [100.2, 110.3]
    assert [r.last for r in out] == [False, True]
    assert len(waiting) == 0


def test_a_round_waits_until_every_partition_still_behind_has_read_past_it():
    waiting = rounds()
    waiting.add(0, 0, 100.0, "p0-a")
    waiting.add(0, 1, 110.0, "p0-b")
    waiting.add(1, 0, 100.5, "p1-a")
    # Partition 1 has reached 100.5 only: its share of the 110 round may still come.
    out = list(waiting.take(behind={0, 1}))
    assert [r.records for r in out] == []  # 100.0 + step reaches past what partition 1 read
    waiting.add(1, 1, 101.5, "p1-late-a")
    out = list(waiting.take(behind={0, 1}))
    assert [r.records for r in out] == [["p0-a", "p1-a"]]
    assert not out[0].last
    waiting.add(1, 2, 110.2, "p1-b")
    assert [r.records for r in waiting.take(behind={1})] == [["p1-late-a"]]
    assert [r.records for r in waiting.take(behind=set())] == [["p0-b", "p1-b"]]


def test_a_partition_read_nothing_yet_holds_every_round_back():
    waiting = rounds()
    waiting.add(0, 0, 100.0, "a")
    assert list(waiting.take(behind={0, 1})) == []
    assert [r.records for r in waiting.take(behind={0})] == []
    assert [r.records for r in waiting.take(behind=set())] == [["a"]]


def test_restart_offsets_are_the_lowest_still_waiting_per_partition():
    waiting = rounds()
    waiting.add(0, 7, 100.0, "a")
    waiting.add(0, 8, 90.0, "b")  # another scorer worker's older round, later in the log
    waiting.add(0, 9, 120.0, "c")
    waiting.add(2, 3, 121.0, "d")
    assert waiting.unapplied() == {0: 7, 2: 3}
    list(waiting.take(behind={0, 2}))  # 90 and 100 are out; 120 waits for 121 + step
    assert waiting.unapplied() == {0: 9, 2: 3}


def test_partitions_far_ahead_of_the_slowest_are_paused():
    waiting = rounds(ahead=60.0)
    waiting.add(0, 0, 100.0, "slow")
    waiting.add(1, 0, 161.0, "far")
    waiting.add(2, 0, 150.0, "near")
    assert waiting.to_pause(behind={0, 1, 2}, partitions=[0, 1, 2, 3]) == {1}
    assert waiting.to_pause(behind=set(), partitions=[0, 1, 2, 3]) == set()
    # The slowest is never paused, so the rounds always move on.
    assert waiting.to_pause(behind={1}, partitions=[0, 1, 2]) == set()
    # A partition not heard from yet does not set the pace (it would pause every other one).
    assert waiting.to_pause(behind={0, 1, 2, 5}, partitions=[0, 1, 2, 3, 5]) == {1}
    assert waiting.to_pause(behind={5}, partitions=[0, 1, 2, 5]) == set()


reads = st.lists(
    st.tuples(st.integers(0, 3), st.floats(0, 1000, allow_nan=False)), min_size=1, max_size=60
)


@given(reads, st.floats(0.1, 30), st.lists(st.integers(0, 3), max_size=4))
def test_everything_comes_out_once_in_order_and_no_round_ends_past_the_watermark(
    records: list[tuple[int, float]], step: float, still_behind: list[int]
) -> None:
    waiting = rounds(step=step)
    offsets: dict[int, int] = {}
    for partition, as_of in records:
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        waiting.add(partition, offset, as_of, f"{partition}:{offset}")
    behind = set(still_behind)
    watermark = waiting.watermark(behind)
    early = list(waiting.take(behind))
    for r in early:
        assert r.as_of < watermark  # only rounds every partition behind has read past
    rest = list(waiting.take(set()))
    out = early + rest
    names = [name for r in out for name in r.records]
    assert sorted(names) == sorted(f"{p}:{o}" for p, n in offsets.items() for o in range(n))
    assert len(names) == len(set(names))
    times = {f"{p}:{o}": t for (p, t), o in zip(records, _offsets(records), strict=True)}
    flat = [times[n] for n in names]
    assert flat == sorted(flat)
    for r in out:
        spread = [times[n] for n in r.records]
        assert max(spread) - min(spread) < step
        assert r.as_of == max(spread)
    assert [r.last for r in rest][-1:] == ([True] if rest else [])


def _offsets(records: list[tuple[int, float]]) -> list[int]:
    seen: dict[int, int] = {}
    out = []
    for partition, _ in records:
        out.append(seen.get(partition, 0))
        seen[partition] = out[-1] + 1
    return out
