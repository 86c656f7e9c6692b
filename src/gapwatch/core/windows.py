"""Rolling per-segment window metrics (5m to 7d, on event time) built from gap events.

Pure core: no I/O. The scorer feeds `RollingWindows` with gap events (`observe`) and job
completions (`observe_job_completion`), moves its watermark (`advance`), exports `snapshot`s and
checkpoints `to_dict` / `from_dict`. Everything below is deterministic: the same events in the same
order give the same snapshot, and for a fixed watermark the order of the events does not matter
(counts and sketch bins are integers, so adding and removing them is exact).

Series and segments

- A series is one (segment, promise kind). Segments come from `SegmentKeyer`: the configured
  labels in order, a missing label reads "none"; after `cap` distinct segments every new one
  falls into the `other` segment (every label "other"). Admitted segments stay admitted (the
  keyer is part of the checkpoint); with the cap reached, which segments got in depends on the
  order they arrived in. The words "none" and "other" are the keyer's own: a label whose value
  is literally `other` or `none` (or one of those followed by underscores) gets one more `_`
  (`other` -> `other_`), so a team named "other" is its own segment, never the overflow.
- Job completions (first-time fix) belong to the job, not to a promise: their series has promise
  kind `None`, and its figures carry only `ftf_rate` / `ftf_count`.

Time, buckets and the watermark

- Each window keeps epoch-aligned time buckets: 5m in 10 s buckets, 30m in 30 s, 1h in 1 min,
  6h in 5 min, 24h in 15 min, 7d in 2 h. An event goes to the bucket holding its event time
  (`outcome_at`) in each window.
- The watermark only moves forwards, and only through `advance` (and `snapshot`, which advances
  first); an event never moves it, so one event with a wrong clock cannot expire everything.
- A window as of watermark `t` holds the `n = window / bucket` buckets ending with the one that
  contains `t`: `[(k - n + 1) * w, (k + 1) * w)` with `k = floor(t / w)`. So its older edge lies
  between `window - w` and `window` before `t`: the edge is exact to one bucket (10 s, 30 s,
  1 min, 5 min, 15 min, 2 h). An event older than `window` is never in it; one younger than
  `window - w` always is. Events after `t` in the current bucket count already; later ones wait
  in their own bucket until the watermark reaches it. Bucket widths divide each other, so
  5m ⊆ 30m ⊆ 1h ⊆ 6h ⊆ 24h ⊆ 7d holds for every watermark.
- An event whose 7d bucket has left the 7d window (older than 7d, or up to 2 h less depending on
  alignment) is ignored: `observe` returns `ObserveResult.TOO_LATE` and `too_late` counts it.
  A late event inside a window goes into its own bucket and corrects that window; it is skipped
  only for the shorter windows it is already too old for.

What each outcome adds (`gap` = delivered - due, wall-clock seconds; business seconds unused)

- `met`: met +1; gap (<= 0), promised and delivered seconds go into their sketches.
- `breached` (emitted at the due time, nothing delivered): breached +1; promised seconds go into
  the promised sketch (the promise came due); the item id goes into the series' bounded list of
  latest breached items (`latest_breached_limit`, newest event time first, one entry per item
  id, the latest breach of it); a window's figures list those whose breach lies in the window.
- `delivered_late` (a breached promise delivered at last): delivered_late +1; its gap (> 0) and
  delivered seconds go into the sketches; not counted as breached again, and its promised seconds
  are not added again. So the promised sketch holds every promise that came due in the window
  once, and the delivered sketch every delivery made in it.
- `at_risk`, `cancelled`: counted only; neither is part of attainment.
- `feedback` (must carry `feedback`): CSAT (1-5) mean and count, NPS (0-10) =
  100 * (promoters 9-10 - detractors 0-6) / answers, and CSAT mean per gap bucket of the item's
  gap for that promise kind (`gap_bucket`). A feedback event without `feedback` is not counted:
  `observe` returns `ObserveResult.NO_FEEDBACK`.
- A `met` with `corrects` set (a late input event showed that a published breach was in fact
  met) also takes that breach back: breached -1 and its promised seconds out, in the buckets
  where the breach was counted, and the item leaves the latest breached list if that breach was
  its entry. The breach is found by (item, promise kind, cycle, round), as the clock names it;
  breaches younger than `correction_horizon_seconds` (default 24 h; keep it above the scorer's
  grace period) are remembered that long, older ones cannot be taken back. A correction that
  comes before its breach waits for it as long, and the breach then never counts, so the order
  of events still does not matter.
- attainment = met / (met + breached), `None` when both are 0.
- first-time fix = completions that fixed the job and were not a revisit / completions.
- pXX = DDSketch's estimate of the value at rank floor(XX/100 * (n - 1)) of the sorted values,
  within 1 % of it; `None` without values. Inf and NaN durations are left out of the sketches.
- `observe` does not deduplicate: the caller drops repeated event ids.

Quantiles come from DDSketch (1 % relative accuracy, logarithmic mapping). A bucket keeps only
the sketch's non-empty bins, as sorted (bin, count) arrays of ~8 bytes a bin, rather than
`DDSketch` objects: those cost ~3 kB each even with one value, and a filled series has 270
buckets x 3 sketches. Each window also keeps a running total of its live buckets (added on
observe, subtracted on expiry), so a snapshot rebuilds one `DDSketch` per figure from the
total's bins instead of merging up to 96 buckets.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from math import isfinite
from typing import Any, Final, NamedTuple

from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

from gapwatch.core.gaps import ArrivalOutcome, GapData, Outcome
from gapwatch.core.promises import PromiseKind

__all__ = [
    "LATEST_BREACHED_LIMIT",
    "NONE_VALUE",
    "OTHER_VALUE",
    "RELATIVE_ACCURACY",
    "WINDOWS",
    "CsatBucket",
    "GapBucket",
    "ObserveResult",
    "RollingWindows",
    "SegmentKey",
    "SegmentKeyer",
    "WindowFigures",
    "WindowSpec",
    "WindowStateError",
    "gap_bucket",
]

SegmentKey = tuple[tuple[str, str], ...]
"""(label, value) pairs in the keyer's label order; hashable and ordered."""

NONE_VALUE: Final = "none"
OTHER_VALUE: Final = "other"
_RESERVED_VALUE = re.compile(r"(?:none|other)_*")
RELATIVE_ACCURACY: Final = 0.01
LATEST_BREACHED_LIMIT: Final = 20
STATE_VERSION: Final = 1


class WindowSpec(NamedTuple):
    name: str
    seconds: int
    bucket_seconds: int


WINDOWS: tuple[WindowSpec, ...] = (
    WindowSpec("5m", 300, 10),
    WindowSpec("30m", 1_800, 30),
    WindowSpec("1h", 3_600, 60),
    WindowSpec("6h", 21_600, 300),
    WindowSpec("24h", 86_400, 900),
    WindowSpec("7d", 604_800, 7_200),
)
"""Shortest first; the last one decides what is too late. 30m and 6h are the SRE workbook's
ticket-severity burn-rate windows, which the alerter reads from the snapshots."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_US = 1_000_000
_BUCKET_US: tuple[int, ...] = tuple(w.bucket_seconds * _US for w in WINDOWS)
_N_BUCKETS: tuple[int, ...] = tuple(w.seconds // w.bucket_seconds for w in WINDOWS)
_LONGEST = len(WINDOWS) - 1
_W = range(len(WINDOWS))


class WindowStateError(ValueError):
    """Misuse or a corrupt checkpoint; asking again with the same input cannot help."""

    retriable = False

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"{code}: {message}")


class ObserveResult(StrEnum):
    """What `observe` did with an event; anything but COUNTED is for the caller to count."""

    COUNTED = "counted"
    TOO_LATE = "too_late"
    NO_FEEDBACK = "no_feedback"


class GapBucket(StrEnum):
    """Where an item's gap falls, for CSAT by gap."""

    EARLY = "early"
    ON_TIME = "on_time"
    LATE_LT_15M = "late_lt_15m"
    LATE_15_60M = "late_15_60m"
    LATE_GT_1H = "late_gt_1h"
    UNKNOWN = "unknown"


_GAP_BUCKETS: tuple[GapBucket, ...] = tuple(GapBucket)


DEFAULT_ON_TIME_SHARE = 0.5
"""A delivery in the last half of its promised time is `on_time`; one earlier is `early`."""


def gap_bucket(
    gap_seconds: float | None,
    arrival: ArrivalOutcome | None,
    tolerance_seconds: float = 0.0,
    promised_seconds: float = 0.0,
    on_time_share: float = 0.0,
) -> GapBucket:
    """Classify a gap: early < -tolerance <= on time <= 0 < late < 15 min <= late <= 1 h < late,
    where tolerance is the larger of `tolerance_seconds` and `on_time_share` of the promised
    time. So `on_time` holds deliveries kept within the promise without much to spare (the
    baseline lateness is compared with), and `early` the ones well ahead of it.

    For arrival windows the gap is measured to the window's end, so an arrival inside the window
    has a negative gap yet is on time: `arrival` early / on_time therefore wins over the gap.
    """
    tolerance_seconds = max(tolerance_seconds, on_time_share * max(0.0, promised_seconds))
    if arrival is ArrivalOutcome.EARLY:
        return GapBucket.EARLY
    if arrival is ArrivalOutcome.ON_TIME:
        return GapBucket.ON_TIME
    if gap_seconds is None:
        return GapBucket.UNKNOWN
    if gap_seconds < -tolerance_seconds:
        return GapBucket.EARLY
    if gap_seconds <= 0:
        return GapBucket.ON_TIME
    if gap_seconds < 900:
        return GapBucket.LATE_LT_15M
    if gap_seconds <= 3_600:
        return GapBucket.LATE_15_60M
    return GapBucket.LATE_GT_1H


def _as_utc(t: datetime, what: str) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise WindowStateError("naive_datetime", f"{what} must be timezone-aware, got {t!r}")
    return t.astimezone(UTC)


def _micros(t: datetime) -> int:
    # Integer microseconds keep bucket boundaries exact; float timestamps round near them.
    return (t - _EPOCH) // _MICROSECOND


# --- segments ---------------------------------------------------------------------------------


class SegmentKeyer:
    """Maps segment label dicts to bounded segment keys: the first `cap` segments, then `other`."""

    def __init__(self, labels: Sequence[str], cap: int) -> None:
        if len(set(labels)) != len(labels):
            raise WindowStateError("duplicate_label", f"segment labels repeat: {list(labels)}")
        if cap < 0:
            raise WindowStateError("bad_cap", f"segment cap must be >= 0, got {cap}")
        self._labels: tuple[str, ...] = tuple(labels)
        self._cap = cap
        self._other_values: tuple[str, ...] = (OTHER_VALUE,) * len(self._labels)
        self._other: SegmentKey = tuple(zip(self._labels, self._other_values, strict=True))
        # label values as they came -> key: every event of a segment gets the same key object, and
        # lookups need only the values tuple. Keys hold the values escaped (`_segment_value`).
        # A missing label is None here and "none" in the key.
        self._admitted: dict[tuple[str | None, ...], SegmentKey] = {}

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    @property
    def cap(self) -> int:
        return self._cap

    @property
    def other(self) -> SegmentKey:
        return self._other

    @property
    def admitted(self) -> tuple[SegmentKey, ...]:
        """Admitted segments (`other` excluded)."""
        return tuple(self._admitted.values())

    def key(self, segment: Mapping[str, str]) -> SegmentKey:
        values = tuple([segment.get(label) for label in self._labels])
        key = self._admitted.get(values)
        if key is not None:
            return key
        if len(self._admitted) >= self._cap:
            return self._other
        return self._admit(values)

    def _admit(self, values: tuple[str | None, ...]) -> SegmentKey:
        key = tuple(zip(self._labels, map(_segment_value, values), strict=True))
        self._admitted[values] = key
        return key

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self._labels),
            "cap": self._cap,
            # Sorted: the admitted set, not the order it filled in, decides future keys. The
            # values as keys show them, so older checkpoints (which wrote "none") read the same.
            "admitted": sorted([value for _, value in key] for key in self._admitted.values()),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegmentKeyer:
        try:
            keyer = cls(data["labels"], data["cap"])
            for values in data["admitted"]:
                if len(values) != len(keyer._labels):
                    raise WindowStateError("bad_state", f"segment {values!r} does not fit labels")
                keyer._admit(tuple(map(_label_value, values)))
        except (KeyError, TypeError) as exc:
            raise WindowStateError("bad_state", f"segment keyer state: {exc!r}") from exc
        return keyer


def _segment_value(value: str | None) -> str:
    """A label value as a segment shows it: a missing label reads `none`, and the keyer's own
    words (`none`, `other`) get one more `_` when a label carries them literally, so they never
    merge with a missing label or the overflow segment. One-to-one: `other` -> `other_`,
    `other_` -> `other__`; `_label_value` undoes it."""
    if value is None:
        return NONE_VALUE
    return value + "_" if _RESERVED_VALUE.fullmatch(value) else value


def _label_value(shown: str) -> str | None:
    if shown == NONE_VALUE:
        return None
    return shown[:-1] if shown[-1:] == "_" and _RESERVED_VALUE.fullmatch(shown) else shown


# --- buckets ----------------------------------------------------------------------------------

# Positions in the counts list of buckets and totals: one flat list of ints, no object per count.
_EVENTS = 0
_MET = 1
_BREACHED = 2
_DELIVERED_LATE = 3
_AT_RISK = 4
_CANCELLED = 5
_CSAT_SUM = 6
_CSAT_N = 7
_NPS_PROMOTERS = 8
_NPS_DETRACTORS = 9
_NPS_N = 10
_FTF_FIXED = 11
_FTF_N = 12
_CSAT_GAP = 13  # then (sum, count) per GapBucket, in enum order
_N_COUNTS = _CSAT_GAP + 2 * len(_GAP_BUCKETS)

_SKETCH_GAP = 0
_SKETCH_PROMISED = 1
_SKETCH_DELIVERED = 2

_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
_MIN_POSITIVE = _MAPPING.min_possible


# A bin is one int: (store << 17) | (key + 2**16), store = sketch * 3 + (0 positive values,
# 1 negative values, 2 zero). DDSketch keys at 1 % stay within +-35,500 for any finite float, and
# the code fits a 32-bit array slot. Sorted codes group by store, key order within.
_KEY_BITS = 17
_KEY_BIAS = 1 << 16
_KEY_MASK = (1 << _KEY_BITS) - 1
_N_STORES = 9


def _code(value: float, sketch: int) -> int:
    if value > _MIN_POSITIVE:
        return (sketch * 3) << _KEY_BITS | (_MAPPING.key(value) + _KEY_BIAS)
    if value < -_MIN_POSITIVE:
        return (sketch * 3 + 1) << _KEY_BITS | (_MAPPING.key(-value) + _KEY_BIAS)
    return (sketch * 3 + 2) << _KEY_BITS | _KEY_BIAS


def _codes(gap: float | None, promised: float | None, delivered: float | None) -> tuple[int, ...]:
    # Durations come from timestamps, so always finite; an inf or NaN from elsewhere has no bin
    # (DDSketch's mapping would overflow) and is left out of the sketch.
    codes = []
    if gap is not None and isfinite(gap):
        codes.append(_code(gap, _SKETCH_GAP))
    if promised is not None and isfinite(promised):
        codes.append(_code(promised, _SKETCH_PROMISED))
    if delivered is not None and isfinite(delivered):
        codes.append(_code(delivered, _SKETCH_DELIVERED))
    return tuple(codes)


_Deltas = tuple[tuple[int, int], ...]
_SeriesKey = tuple[SegmentKey, PromiseKind | None]
_BreachKey = tuple[str, PromiseKind, int, int]
"""(item id, promise kind, cycle, round): which breach a correction takes back."""

_MET_DELTAS: _Deltas = ((_EVENTS, 1), (_MET, 1))
_BREACHED_DELTAS: _Deltas = ((_EVENTS, 1), (_BREACHED, 1))
_DELIVERED_LATE_DELTAS: _Deltas = ((_EVENTS, 1), (_DELIVERED_LATE, 1))
_AT_RISK_DELTAS: _Deltas = ((_EVENTS, 1), (_AT_RISK, 1))
_CANCELLED_DELTAS: _Deltas = ((_EVENTS, 1), (_CANCELLED, 1))
_FTF_DELTAS: dict[bool, _Deltas] = {
    True: ((_EVENTS, 1), (_FTF_N, 1), (_FTF_FIXED, 1)),
    False: ((_EVENTS, 1), (_FTF_N, 1)),
}


class _Bucket:
    """Integer counts and DDSketch bins of one time bucket.

    Bins are two parallel arrays sorted by code: ~8 bytes a bin, against ~100 in a dict (an
    entry plus its int objects). The 24h and 7d buckets of a busy series hold hundreds of bins
    each, so this is where the memory goes; the extra bisect costs well under a microsecond.
    """

    __slots__ = ("codes", "counts", "hits")

    def __init__(self) -> None:
        self.counts: list[int] = [0] * _N_COUNTS
        self.codes: array[int] | None = None  # most buckets of breaches / feedback need none
        self.hits: array[int] | None = None

    def add(self, deltas: _Deltas, codes: tuple[int, ...]) -> None:
        counts = self.counts
        for index, amount in deltas:
            counts[index] += amount
        if not codes:
            return
        keys, hits = self.codes, self.hits
        if keys is None or hits is None:
            keys = self.codes = array("i")
            hits = self.hits = array("I")
        for code in codes:
            i = bisect_left(keys, code)
            if i < len(keys) and keys[i] == code:
                hits[i] += 1
            else:
                keys.insert(i, code)
                hits.insert(i, 1)

    def remove(self, deltas: _Deltas, codes: tuple[int, ...]) -> None:
        """Undo one `add` of the same deltas and codes."""
        counts = self.counts
        for index, amount in deltas:
            counts[index] -= amount
        keys, hits = self.codes, self.hits
        if keys is None or hits is None:
            return
        for code in codes:
            i = bisect_left(keys, code)
            if hits[i] > 1:
                hits[i] -= 1
            else:
                del keys[i], hits[i]

    def is_empty(self) -> bool:
        return not self.counts[_EVENTS] and not self.codes

    def to_list(self) -> list[Any]:
        return [list(self.counts), list(self.codes or ()), list(self.hits or ())]

    @classmethod
    def from_list(cls, data: Sequence[Any]) -> _Bucket:
        counts, codes, hits = data
        if len(counts) != _N_COUNTS or len(codes) != len(hits) or list(codes) != sorted(codes):
            raise WindowStateError("bad_state", "bucket shape does not match this version")
        bucket = cls()
        bucket.counts = [int(c) for c in counts]
        if codes:
            bucket.codes = array("i", codes)
            bucket.hits = array("I", hits)
        return bucket


class _Total:
    """Counts and bins of a window's live buckets, kept in step so a snapshot merges nothing.

    Bins are kept per DDSketch store (key -> count), ready to load into a sketch.
    """

    __slots__ = ("counts", "stores")

    def __init__(self) -> None:
        self.counts: list[int] = [0] * _N_COUNTS
        self.stores: list[dict[int, int]] = [{} for _ in range(_N_STORES)]

    def add(self, deltas: _Deltas, codes: tuple[int, ...]) -> None:
        counts = self.counts
        for index, amount in deltas:
            counts[index] += amount
        for code in codes:
            store = self.stores[code >> _KEY_BITS]
            key = (code & _KEY_MASK) - _KEY_BIAS
            store[key] = store.get(key, 0) + 1

    def remove(self, deltas: _Deltas, codes: tuple[int, ...]) -> None:
        counts = self.counts
        for index, amount in deltas:
            counts[index] -= amount
        for code in codes:
            store = self.stores[code >> _KEY_BITS]
            key = (code & _KEY_MASK) - _KEY_BIAS
            self._put(store, key, store[key] - 1)

    def merge(self, bucket: _Bucket, sign: int) -> None:
        counts = self.counts
        for index, amount in enumerate(bucket.counts):
            if amount:
                counts[index] += sign * amount
        if bucket.codes is not None and bucket.hits is not None:
            for code, hits in zip(bucket.codes, bucket.hits, strict=True):
                store = self.stores[code >> _KEY_BITS]
                key = (code & _KEY_MASK) - _KEY_BIAS
                self._put(store, key, store.get(key, 0) + sign * hits)

    @staticmethod
    def _put(store: dict[int, int], key: int, count: int) -> None:
        if count:
            store[key] = count
        else:
            del store[key]  # emptied bins go, so a total is no bigger than its live buckets

    def sketch(self, sketch: int) -> BaseDDSketch:
        positive, negative, zero = self.stores[sketch * 3 : sketch * 3 + 3]
        return BaseDDSketch(
            _MAPPING, _dense_store(positive), _dense_store(negative), float(sum(zero.values()))
        )


def _dense_store(bins: Mapping[int, int]) -> DenseStore:
    store = DenseStore()
    if bins:
        # The lowest and highest keys first: the store then sizes itself once instead of growing
        # and re-centring (in Python) on every new extreme.
        low, high = min(bins), max(bins)
        store.add(low, bins[low])
        if high != low:
            store.add(high, bins[high])
        for key, count in bins.items():
            if key != low and key != high:
                store.add(key, count)
    return store


class _Series:
    """Buckets, running window totals and latest breached items of one (segment, kind)."""

    __slots__ = ("buckets", "latest", "totals")

    def __init__(self) -> None:
        self.buckets: list[dict[int, _Bucket]] = [{} for _ in _W]
        self.totals: list[_Total] = [_Total() for _ in _W]
        self.latest: list[tuple[int, str]] = []  # (event time µs, item id), newest first

    def is_empty(self) -> bool:
        return not self.latest and not any(self.buckets)


# --- figures ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CsatBucket:
    mean: float | None
    count: int


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """Figures of one (segment, promise kind, window) as of the watermark."""

    segment: dict[str, str]
    promise_kind: PromiseKind | None
    window: str
    window_seconds: int
    as_of: datetime
    met: int
    breached: int
    delivered_late: int
    at_risk: int
    cancelled: int
    attainment: float | None
    gap_p50: float | None
    gap_p90: float | None
    gap_p99: float | None
    promised_p50: float | None
    promised_p90: float | None
    delivered_p50: float | None
    delivered_p90: float | None
    csat_mean: float | None
    csat_count: int
    nps: float | None
    nps_count: int
    csat_by_gap_bucket: dict[str, CsatBucket] = field(default_factory=dict)
    ftf_rate: float | None = None
    ftf_count: int = 0
    latest_breached: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly: plain types, `as_of` as ISO 8601 with `Z`."""
        return {
            "segment": dict(self.segment),
            "promise_kind": None if self.promise_kind is None else self.promise_kind.value,
            "window": self.window,
            "window_seconds": self.window_seconds,
            "as_of": self.as_of.isoformat().replace("+00:00", "Z"),
            **figures_dict(self),
            "latest_breached": list(self.latest_breached),
        }


SCALAR_FIGURES = (
    "met",
    "breached",
    "delivered_late",
    "at_risk",
    "cancelled",
    "attainment",
    "gap_p50",
    "gap_p90",
    "gap_p99",
    "promised_p50",
    "promised_p90",
    "delivered_p50",
    "delivered_p90",
    "csat_mean",
    "csat_count",
    "nps",
    "nps_count",
)


def figures_dict(figures: Any) -> dict[str, Any]:
    """The figures of a `WindowFigures` (or a replay's `PeriodFigures`), JSON-friendly."""
    out = {name: getattr(figures, name) for name in SCALAR_FIGURES}
    out["csat_by_gap_bucket"] = {
        name: {"mean": b.mean, "count": b.count} for name, b in figures.csat_by_gap_bucket.items()
    }
    out["ftf_rate"] = figures.ftf_rate
    out["ftf_count"] = figures.ftf_count
    return out


def total_figures(total: _Total) -> dict[str, Any]:
    """The figures a total of counts and sketches gives, by `WindowFigures` field name: a
    window's, or (`totals`) a whole history's or a period's."""
    c = total.counts
    gap, promised, delivered = (
        total.sketch(i) for i in (_SKETCH_GAP, _SKETCH_PROMISED, _SKETCH_DELIVERED)
    )
    return dict(
        met=c[_MET],
        breached=c[_BREACHED],
        delivered_late=c[_DELIVERED_LATE],
        at_risk=c[_AT_RISK],
        cancelled=c[_CANCELLED],
        attainment=_ratio(c[_MET], c[_MET] + c[_BREACHED]),
        gap_p50=_quantile(gap, 0.5),
        gap_p90=_quantile(gap, 0.9),
        gap_p99=_quantile(gap, 0.99),
        promised_p50=_quantile(promised, 0.5),
        promised_p90=_quantile(promised, 0.9),
        delivered_p50=_quantile(delivered, 0.5),
        delivered_p90=_quantile(delivered, 0.9),
        csat_mean=_ratio(c[_CSAT_SUM], c[_CSAT_N]),
        csat_count=c[_CSAT_N],
        nps=_ratio(100 * (c[_NPS_PROMOTERS] - c[_NPS_DETRACTORS]), c[_NPS_N]),
        nps_count=c[_NPS_N],
        csat_by_gap_bucket={
            b.value: CsatBucket(
                mean=_ratio(c[_CSAT_GAP + 2 * i], c[_CSAT_GAP + 2 * i + 1]),
                count=c[_CSAT_GAP + 2 * i + 1],
            )
            for i, b in enumerate(_GAP_BUCKETS)
        },
        ftf_rate=_ratio(c[_FTF_FIXED], c[_FTF_N]),
        ftf_count=c[_FTF_N],
    )


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _quantile(sketch: BaseDDSketch, q: float) -> float | None:
    value = sketch.get_quantile_value(q)
    return None if value is None else float(value)


# --- the windows ------------------------------------------------------------------------------


class RollingWindows:
    """Every series' buckets and window totals, a watermark, and the figures they give."""

    def __init__(
        self,
        keyer: SegmentKeyer,
        watermark: datetime,
        *,
        on_time_tolerance_seconds: float = 0.0,
        on_time_share: float = DEFAULT_ON_TIME_SHARE,
        latest_breached_limit: int = LATEST_BREACHED_LIMIT,
        correction_horizon_seconds: float = 86_400.0,
    ) -> None:
        if not 0 <= on_time_share <= 1:
            raise WindowStateError(
                "bad_share", f"on-time share must be in [0, 1], got {on_time_share}"
            )
        if on_time_tolerance_seconds < 0:
            raise WindowStateError(
                "bad_tolerance", f"on-time tolerance must be >= 0, got {on_time_tolerance_seconds}"
            )
        if latest_breached_limit < 0:
            raise WindowStateError(
                "bad_limit", f"latest breached limit must be >= 0, got {latest_breached_limit}"
            )
        if not 0 <= correction_horizon_seconds <= WINDOWS[_LONGEST].seconds:
            raise WindowStateError(
                "bad_horizon",
                f"correction horizon must be in [0, {WINDOWS[_LONGEST].seconds}] seconds, "
                f"got {correction_horizon_seconds}",
            )
        self.keyer = keyer
        self.on_time_tolerance_seconds = float(on_time_tolerance_seconds)
        self.on_time_share = float(on_time_share)
        self.latest_breached_limit = latest_breached_limit
        self.correction_horizon_seconds = float(correction_horizon_seconds)
        self._horizon_us = round(correction_horizon_seconds * _US)
        self.too_late = 0
        self._series: dict[_SeriesKey, _Series] = {}
        # Counted breaches that a correction may still take back: -> (series, event µs, bin code).
        self._breaches: dict[_BreachKey, tuple[_SeriesKey, int, tuple[int, ...]]] = {}
        # Corrections seen before their breach: -> event µs of the correcting `met`.
        self._early_corrections: dict[_BreachKey, int] = {}
        self._watermark_us = _micros(_as_utc(watermark, "watermark"))
        self._current = self._current_buckets(self._watermark_us)

    @property
    def watermark(self) -> datetime:
        return _EPOCH + self._watermark_us * _MICROSECOND

    @property
    def series_count(self) -> int:
        return len(self._series)

    @property
    def pending_corrections(self) -> int:
        """Corrections still waiting for the breach they name."""
        return len(self._early_corrections)

    @staticmethod
    def _current_buckets(t_us: int) -> tuple[int, ...]:
        return tuple(t_us // width for width in _BUCKET_US)

    # --- input ---------------------------------------------------------------------------------

    def observe(self, event: GapData) -> ObserveResult:
        """Count one gap event in its buckets by event time (`outcome_at`)."""
        t_us = _micros(event.outcome_at)
        if t_us // _BUCKET_US[_LONGEST] <= self._current[_LONGEST] - _N_BUCKETS[_LONGEST]:
            self.too_late += 1
            return ObserveResult.TOO_LATE
        outcome = event.outcome
        codes: tuple[int, ...] = ()
        if outcome is Outcome.MET:
            deltas = _MET_DELTAS
            codes = _codes(event.gap_seconds, event.promised_seconds, event.delivered_seconds)
        elif outcome is Outcome.BREACHED:
            breach: _BreachKey = (event.item_id, event.promise_kind, event.cycle, event.round)
            # Only breaches inside the horizon can be taken back; remembering older ones would
            # cost memory for corrections the scorer's grace period no longer lets through.
            correctable = t_us >= self._watermark_us - self._horizon_us
            if correctable and self._early_corrections.pop(breach, None) is not None:
                # Already taken back by the correction; still admit its segment, as the other
                # arrival order does, so the keyer's state does not depend on the order.
                self.keyer.key(event.segment)
                return ObserveResult.COUNTED
            deltas = _BREACHED_DELTAS
            codes = _codes(None, event.promised_seconds, None)
        elif outcome is Outcome.DELIVERED_LATE:
            deltas = _DELIVERED_LATE_DELTAS
            codes = _codes(event.gap_seconds, None, event.delivered_seconds)
        elif outcome is Outcome.AT_RISK:
            deltas = _AT_RISK_DELTAS
        elif outcome is Outcome.CANCELLED:
            deltas = _CANCELLED_DELTAS
        else:
            feedback = event.feedback
            if feedback is None:
                return ObserveResult.NO_FEEDBACK
            built: list[tuple[int, int]] = [(_EVENTS, 1)]
            if feedback.csat is not None:
                where = _GAP_BUCKETS.index(
                    gap_bucket(
                        event.gap_seconds,
                        event.arrival,
                        self.on_time_tolerance_seconds,
                        event.promised_seconds,
                        self.on_time_share,
                    )
                )
                built += [
                    (_CSAT_SUM, feedback.csat),
                    (_CSAT_N, 1),
                    (_CSAT_GAP + 2 * where, feedback.csat),
                    (_CSAT_GAP + 2 * where + 1, 1),
                ]
            if feedback.nps is not None:
                built.append((_NPS_N, 1))
                if feedback.nps >= 9:
                    built.append((_NPS_PROMOTERS, 1))
                elif feedback.nps <= 6:
                    built.append((_NPS_DETRACTORS, 1))
            deltas = tuple(built)
        key = (self.keyer.key(event.segment), event.promise_kind)
        series = self._series_of(key)
        self._add(series, t_us, deltas, codes)
        if outcome is Outcome.BREACHED:
            self._remember_breach(series, t_us, event.item_id)
            if correctable:
                self._breaches[breach] = (key, t_us, codes)
        elif event.corrects is not None and outcome is Outcome.MET:
            self._take_back((event.item_id, event.promise_kind, event.cycle, event.round), t_us)
        return ObserveResult.COUNTED

    def observe_job_completion(
        self, segment: Mapping[str, str], completed_at: datetime, fixed: bool, is_revisit: bool
    ) -> ObserveResult:
        """Count one job completion for first-time fix (series with promise kind `None`)."""
        t_us = _micros(_as_utc(completed_at, "completed_at"))
        if t_us // _BUCKET_US[_LONGEST] <= self._current[_LONGEST] - _N_BUCKETS[_LONGEST]:
            self.too_late += 1
            return ObserveResult.TOO_LATE
        series = self._series_of((self.keyer.key(segment), None))
        self._add(series, t_us, _FTF_DELTAS[fixed and not is_revisit], ())
        return ObserveResult.COUNTED

    def _series_of(self, key: _SeriesKey) -> _Series:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        return series

    def _add(self, series: _Series, t_us: int, deltas: _Deltas, codes: tuple[int, ...]) -> None:
        current = self._current
        for w in _W:
            index = t_us // _BUCKET_US[w]
            if index <= current[w] - _N_BUCKETS[w]:
                continue  # already too old for this (shorter) window
            buckets = series.buckets[w]
            bucket = buckets.get(index)
            if bucket is None:
                bucket = buckets[index] = _Bucket()
            bucket.add(deltas, codes)
            if index <= current[w]:
                series.totals[w].add(deltas, codes)
            # else: ahead of the watermark; `advance` adds the bucket when it gets there.

    def _take_back(self, breach: _BreachKey, corrected_at_us: int) -> None:
        found = self._breaches.pop(breach, None)
        if found is None:
            self._early_corrections[breach] = corrected_at_us
            return
        key, t_us, codes = found
        series = self._series.get(key)
        if series is None:
            return  # the breach has left every window already
        for w in _W:
            index = t_us // _BUCKET_US[w]
            bucket = series.buckets[w].get(index)
            if bucket is None:
                continue  # expired from this (shorter) window
            bucket.remove(_BREACHED_DELTAS, codes)
            if bucket.is_empty():
                del series.buckets[w][index]
            if index <= self._current[w]:
                series.totals[w].remove(_BREACHED_DELTAS, codes)
        if (t_us, breach[0]) in series.latest:
            series.latest.remove((t_us, breach[0]))
        if series.is_empty():
            del self._series[key]

    def _remember_breach(self, series: _Series, t_us: int, item_id: str) -> None:
        # Keeps the top `limit` items by (latest breach time, id): the same set whatever the
        # order of arrival, since an evicted entry can never outrank the ones that evicted it.
        latest = series.latest
        for i, (seen_us, seen_id) in enumerate(latest):
            if seen_id == item_id:
                if seen_us >= t_us:
                    return
                del latest[i]
                break
        latest.append((t_us, item_id))
        latest.sort(reverse=True)
        del latest[self.latest_breached_limit :]

    # --- time ----------------------------------------------------------------------------------

    def advance(self, now: datetime) -> None:
        """Move the watermark to `now` (never backwards) and expire buckets that left windows."""
        now_us = _micros(_as_utc(now, "now"))
        if now_us <= self._watermark_us:
            return
        old = self._current
        new = self._current_buckets(now_us)
        self._watermark_us = now_us
        if new == old:
            return
        self._current = new
        changed = [w for w in _W if new[w] != old[w]]
        if len(changed) > 1:  # at most once a minute: the 1h window's bucket moved
            self._forget_old_breaches()
        for key in list(self._series):
            series = self._series[key]
            for w in changed:
                self._slide(series, w, old[w], new[w])
            if _LONGEST in changed:
                first_live = new[_LONGEST] - _N_BUCKETS[_LONGEST] + 1
                width = _BUCKET_US[_LONGEST]
                series.latest[:] = [e for e in series.latest if e[0] // width >= first_live]
            if series.is_empty():
                del self._series[key]

    def _forget_old_breaches(self) -> None:
        horizon = self._watermark_us - self._horizon_us
        self._breaches = {k: v for k, v in self._breaches.items() if v[1] >= horizon}
        self._early_corrections = {
            k: t_us for k, t_us in self._early_corrections.items() if t_us >= horizon
        }

    @staticmethod
    def _slide(series: _Series, w: int, old: int, new: int) -> None:
        n = _N_BUCKETS[w]
        buckets = series.buckets[w]
        total = series.totals[w]
        for index in list(buckets):
            bucket = buckets[index]
            if index <= new - n:
                if old - n < index <= old:
                    total.merge(bucket, -1)
                del buckets[index]
            elif old < index <= new:
                total.merge(bucket, +1)

    # --- output --------------------------------------------------------------------------------

    def snapshot(self, now: datetime) -> list[WindowFigures]:
        """Advance to `now`, then figures for every (segment, kind, window) holding any event.

        Ordered by segment, promise kind (`None` first) and window (shortest first).
        """
        self.advance(now)
        as_of = self.watermark
        figures: list[WindowFigures] = []
        for key in self._sorted_series():
            series = self._series[key]
            for w in _W:
                if series.totals[w].counts[_EVENTS]:
                    figures.append(self._figures(key, series, w, as_of))
        return figures

    def _sorted_series(self) -> list[_SeriesKey]:
        return sorted(self._series, key=lambda k: (k[0], k[1] or ""))

    def _figures(
        self,
        key: _SeriesKey,
        series: _Series,
        w: int,
        as_of: datetime,
    ) -> WindowFigures:
        total = series.totals[w]
        first_live = self._current[w] - _N_BUCKETS[w] + 1
        width = _BUCKET_US[w]
        latest = tuple(
            item for t_us, item in series.latest if first_live <= t_us // width <= self._current[w]
        )
        spec = WINDOWS[w]
        return WindowFigures(
            segment=dict(key[0]),
            promise_kind=key[1],
            window=spec.name,
            window_seconds=spec.seconds,
            as_of=as_of,
            **total_figures(total),
            latest_breached=latest,
        )

    # --- checkpoint ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly state; window totals are left out and rebuilt from the buckets."""
        series_out = []
        for key in self._sorted_series():
            series = self._series[key]
            series_out.append(
                {
                    "segment": [value for _, value in key[0]],
                    "kind": None if key[1] is None else key[1].value,
                    "buckets": {
                        WINDOWS[w].name: [
                            [index, *series.buckets[w][index].to_list()]
                            for index in sorted(series.buckets[w])
                        ]
                        for w in _W
                    },
                    "latest_breached": [[t_us, item] for t_us, item in series.latest],
                }
            )
        return {
            "version": STATE_VERSION,
            "relative_accuracy": RELATIVE_ACCURACY,
            "windows": [list(spec) for spec in WINDOWS],
            "watermark_us": self._watermark_us,
            "on_time_tolerance_seconds": self.on_time_tolerance_seconds,
            "on_time_share": self.on_time_share,
            "latest_breached_limit": self.latest_breached_limit,
            "correction_horizon_seconds": self.correction_horizon_seconds,
            "too_late": self.too_late,
            "keyer": self.keyer.to_dict(),
            "series": series_out,
            "breaches": sorted(
                [item, kind.value, cycle, round_, [v for _, v in key[0]], t_us, list(codes)]
                for (item, kind, cycle, round_), (key, t_us, codes) in self._breaches.items()
            ),
            "early_corrections": sorted(
                [item, kind.value, cycle, round_, t_us]
                for (item, kind, cycle, round_), t_us in self._early_corrections.items()
            ),
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], keyer: SegmentKeyer | None = None
    ) -> RollingWindows:
        """Rebuild from `to_dict`; a checkpoint of another layout raises `WindowStateError`.

        Pass `keyer` when several instances share one (e.g. one per partition), restored once;
        its labels must match the checkpoint's. Without it the checkpoint's own keyer is used.
        """
        try:
            if (
                data["version"] != STATE_VERSION
                or data["relative_accuracy"] != RELATIVE_ACCURACY
                or [tuple(spec) for spec in data["windows"]] != list(WINDOWS)
            ):
                raise WindowStateError(
                    "incompatible_state",
                    f"checkpoint v{data['version']} with windows {data['windows']} and accuracy "
                    f"{data['relative_accuracy']} does not match this version",
                )
            saved = SegmentKeyer.from_dict(data["keyer"])
            if keyer is None:
                keyer = saved
            elif keyer.labels != saved.labels:
                raise WindowStateError(
                    "incompatible_state",
                    f"checkpoint segment labels {list(saved.labels)} differ from the keyer's "
                    f"{list(keyer.labels)}",
                )
            windows = cls(
                keyer,
                _EPOCH + int(data["watermark_us"]) * _MICROSECOND,
                on_time_tolerance_seconds=data["on_time_tolerance_seconds"],
                on_time_share=data.get("on_time_share", DEFAULT_ON_TIME_SHARE),
                latest_breached_limit=data["latest_breached_limit"],
                correction_horizon_seconds=data["correction_horizon_seconds"],
            )
            windows.too_late = int(data["too_late"])
            for entry in data["series"]:
                segment = tuple(zip(keyer.labels, entry["segment"], strict=True))
                kind = None if entry["kind"] is None else PromiseKind(entry["kind"])
                series = windows._series_of((segment, kind))
                for w in _W:
                    for index, *bucket in entry["buckets"][WINDOWS[w].name]:
                        series.buckets[w][int(index)] = _Bucket.from_list(bucket)
                    windows._rebuild_total(series, w)
                series.latest = [(int(t_us), str(item)) for t_us, item in entry["latest_breached"]]
            for item, kind, cycle, round_, values, t_us, codes in data["breaches"]:
                segment = tuple(zip(keyer.labels, values, strict=True))
                windows._breaches[(item, PromiseKind(kind), cycle, round_)] = (
                    (segment, PromiseKind(kind)),
                    int(t_us),
                    tuple(int(code) for code in codes),
                )
            for item, kind, cycle, round_, t_us in data["early_corrections"]:
                windows._early_corrections[(item, PromiseKind(kind), cycle, round_)] = int(t_us)
        except WindowStateError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise WindowStateError("bad_state", f"rolling windows state: {exc!r}") from exc
        return windows

    def _rebuild_total(self, series: _Series, w: int) -> None:
        total = series.totals[w] = _Total()
        low = self._current[w] - _N_BUCKETS[w]
        for index in sorted(series.buckets[w]):
            if low < index <= self._current[w]:
                total.merge(series.buckets[w][index], +1)
