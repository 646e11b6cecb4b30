"""The cyclic garbage collector held off while a burst of acyclic objects is made: a planning pass, or a large
JSON answer decoded. A light module (no framework imports), so the CLI and the services share it."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator


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


#: how long a follower's heap stays frozen before the objects frozen since are checked for garbage cycles again
RECLAIM_INTERVAL = 60.0


class DecodedFreezer:
    """A store follower's decoded answers kept out of the collector's young generations (issue 13 item 2).

    A follower keeps what it decodes (every task version lands in its mirror), so each decoded container was
    walked by a young collection on the way out of `gc_paused`, again by the next middle one, and again by the
    full ones — a sixth to a fifth of a follower's CPU during a ramp (docs/performance.md, "CPU per task, third
    pass"). Decoded JSON has no cycles and reference counting frees a replaced version wherever it sits, so a
    process that opts in (`enable`: the planners' and the dispatcher's mains) collects its young generations
    right before a large decode (what died since the last freeze: small) and freezes the heap right after it
    (`gc.freeze`: every tracked object moves to the permanent generation, which no collection walks), so each
    decoded container is walked by no collection at all until the reclaim.

    The price: cyclic garbage of other objects alive at a freeze (a request in flight, a connection later
    closed) is not found while frozen. `reclaim_if_due` bounds that: once `interval` has passed since the
    first freeze, the heap is unfrozen and collected in full, once (a quiet follower freezes nothing and pays
    nothing). Processes that did not opt in (the raftstore, which freezes its own way, the CLI, agents) are
    unchanged."""

    def __init__(self, interval: float = RECLAIM_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.enabled = False
        #: clock() of the first freeze since the last reclaim (None: nothing frozen by this freezer)
        self.frozen_since: float | None = None
        self.freezes = 0
        self.reclaims = 0

    def enable(self) -> None:
        self.enabled = True

    def before_decode(self) -> None:
        """Called with the collector paused, right before a large document is decoded: the young generations
        are collected (what died since the last freeze — the answer just read, an httpx response being a
        reference cycle — is freed, not frozen); after the first freeze they hold only what came since."""
        if self.enabled:
            gc.collect(1)

    def after_decode(self) -> None:
        """Called with the collector paused, right after a large document was decoded."""
        if not self.enabled:
            return
        gc.freeze()
        self.freezes += 1
        if self.frozen_since is None:
            self.frozen_since = self.clock()

    def reclaim_due(self) -> bool:
        return self.frozen_since is not None and self.clock() - self.frozen_since >= self.interval

    def reclaim_if_due(self) -> bool:
        """Unfreeze and collect in full once `interval` has passed since the first freeze; True if it did."""
        if not self.reclaim_due():
            return False
        self.frozen_since = None
        gc.unfreeze()
        gc.collect()
        self.reclaims += 1
        return True


#: the process's one freezer (the wire's decode reports to it; `StoreMirror.run` enables it and reclaims)
decoded = DecodedFreezer()
