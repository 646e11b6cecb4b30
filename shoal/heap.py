"""The cyclic garbage collector held off while a burst of acyclic objects is made: a planning pass, or a large
JSON answer decoded. A light module (no framework imports), so the CLI and the services share it."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector while a burst of objects with no reference cycles is made; reference
    counting still frees everything as usual, and the collector runs again afterwards if it was on.
    - A planning pass allocates O(nodes + tasks) objects, and each automatic collection would walk the whole heap
      (the mirror's every task) — about a third of a scheduler pass at 100k nodes. The shells (and benchmarks)
      wrap their pure cores' passes in it; the cores themselves touch no process state.
    - Decoding 100,000 tasks makes ~2.5 million dicts and lists, and the collector, triggered every 700
      allocations, walks the growing young heap over and over: two thirds of the decode's CPU (orjson 1.62 s →
      0.57 s, the standard library 2.66 s → 0.79 s for 71 MB of tasks; docs/performance.md)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
