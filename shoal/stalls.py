"""Event-loop stalls, caught where they happen (issue 13: a dispatcher that answers nothing for seconds turns
1,000 nodes' heartbeats into DOWN marks, and nothing said what held it).

A callback on the loop stamps the time every `tick` seconds; a daemon thread looks every `tick` too. Once the
stamp is older than `threshold`, the thread takes the main thread's stack at that moment (what is running now,
not what ran last) and, when the loop turns again, logs one WARNING with the stall's length and that stack.
A stall inside one C call that holds the GIL (a full garbage collection) is seen only once it ends; its length
is still right, and the stack shows where the loop was when the thread got the GIL back. `stalls` and
`longest` count them for a process's `/metrics` or a benchmark.

The pure part (`StallClock`) decides; the thread and the loop callback around it are small."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

#: `SHOAL_STALL_WARN`: seconds without a loop turn that count as a stall (0 turns the watchdog off)
DEFAULT_THRESHOLD = 2.0
#: frames of the stalled stack kept in the log line (the innermost ones)
STACK_FRAMES = 12


def threshold_from(env: Mapping[str, str] | None = None) -> float:
    raw = (os.environ if env is None else env).get("SHOAL_STALL_WARN", "").strip()
    if not raw:
        return DEFAULT_THRESHOLD
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"SHOAL_STALL_WARN={raw!r}: give seconds (0 turns the stall watchdog off)") from None
    if value < 0 or value != value:
        raise SystemExit(f"SHOAL_STALL_WARN={raw!r}: give a number of seconds ≥ 0")
    return value


class StallClock:
    """When the loop last turned, and whether the silence since is a stall not yet sampled. No thread, no
    clock of its own: both sides pass `now`."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.last_turn: float | None = None
        self.sampled: str | None = None  # the stack taken during the current stall
        self.stalls = 0
        self.longest = 0.0

    def turned(self, now: float) -> tuple[float, str] | None:
        """The loop turned at `now`: the stall that just ended (its length and stack), if one was sampled."""
        ended = None
        if self.sampled is not None and self.last_turn is not None:
            length = now - self.last_turn
            self.stalls += 1
            self.longest = max(self.longest, length)
            ended = (length, self.sampled)
        self.last_turn, self.sampled = now, None
        return ended

    def should_sample(self, now: float) -> bool:
        """Whether the watchdog takes the stack now: the loop has been silent past the threshold, and this
        stall has no sample yet."""
        return (self.last_turn is not None and self.sampled is None
                and now - self.last_turn >= self.threshold)


def _stack_of(thread_id: int) -> str:
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return "(stack unavailable)"
    lines = traceback.format_stack(frame)[-STACK_FRAMES:]
    return " <- ".join(line.strip().splitlines()[0].replace("File ", "") for line in reversed(lines))


class StallWatch:
    """The watchdog of one event loop: start it from inside the loop (`start`), stop it with `stop`."""

    def __init__(self, threshold: float, *, tick: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state = StallClock(threshold)
        self.tick = tick if tick is not None else min(0.25, threshold / 4)
        self.clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._main = threading.get_ident()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._main = threading.get_ident()
        self._stamp()
        self._thread = threading.Thread(target=self._watch, name="shoal.stalls", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _stamp(self) -> None:
        with self._lock:
            ended = self.state.turned(self.clock())
        if ended is not None:
            length, stack = ended
            log.warning("event loop stalled %.2f s; running then: %s", length, stack)
        if not self._stop.is_set() and self._loop is not None and not self._loop.is_closed():
            self._loop.call_later(self.tick, self._stamp)

    def _watch(self) -> None:
        while not self._stop.wait(self.tick):
            with self._lock:
                due = self.state.should_sample(self.clock())
            if due:
                stack = _stack_of(self._main)
                with self._lock:
                    if self.state.sampled is None:
                        self.state.sampled = stack

