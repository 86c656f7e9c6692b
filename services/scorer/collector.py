"""The cyclic garbage collector, kept off the scorer's latency.

Python's collector walks every long-lived object at each full (generation 2) collection. The
scorer's long-lived objects are its item clocks, millions of them: they hold no reference
cycles (reference counting frees a closed item's clock at once), yet each full collection
walks them all, holding the event loop meanwhile. Measured on 2026-11-24:

- the latency bench at 1,470 events/s: a full collection every ~7.5 s, taking 33, 80, then
  113 ms as the items grew; they were the p99;
- one worker taking 1M items live: 18 full collections, the longest 1.9 s (a breach due then
  fires that much late, and heartbeats stop meanwhile).

So the tick collects the young generations (cheap: they hold a few thousand objects at most)
and freezes what survived them (`gc.freeze`): automatic full collections then only ever see
what became long-lived since the last tick. Cyclic garbage in the young generations is still
collected; what could escape is a cycle among objects that were already frozen when it became
garbage. A check over 200,000 items opened, frozen and then all dropped found 20 such objects
(the clocks themselves were freed by reference counting, frozen or not). The frozen objects are
not counted here, nor exported: `gc.get_freeze_count` walks them all (15 ms and growing each
tick in the latency bench).
"""

from __future__ import annotations

import gc


def freeze_survivors() -> None:
    """Collect the young generations, then move every object that survived them out of the
    collector's sight.

    Nothing is collected while the collector is off: a restore turns it off while it makes
    millions of objects, all in the youngest generation, and freezes them itself after."""
    if gc.isenabled():
        gc.collect(1)  # generations 0 and 1: what is still tracked there is not garbage
        gc.freeze()
