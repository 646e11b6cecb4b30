"""One engine event stream per agent node tells the docker executor when its containers exit (issue 13).

Before, every running container held its own `POST /containers/{id}/wait` request open: at N = 200 the agent
spent about a quarter of its event loop in httpx's pool bookkeeping, which walks every held connection on each
new request. Now one `GET /events` (filters: type container, events die and destroy, the node's label) carries
every exit, and a controller waits on a future of its container id.

Nothing may be missed, so:

    connect    always with `since=` (the last event's time; on the first connect a second back), so events of
               the moment between the request and the engine's subscription are replayed from its buffer
    (re)connect  every container someone waits for is inspected once the stream is up: an exit while the
               stream was down (an engine restart, a dropped connection) is found that way
    epoch      counts connects (and evictions, below). A controller reads it before it looks at its container
               (`ready()` before the inspect after start); if it changed by the time it waits, the stream may
               have been down in between and the wait inspects once more
    recent     exits of containers nobody waits for yet (an exit between start's inspect and the wait) are
               kept, at most `RECENT`; evicting one bumps the epoch, so a later wait for it inspects

Events of containers not ours (the label filter should keep them out) and malformed lines are ignored; a line
longer than `MAX_LINE` is dropped unread, so a hostile stream cannot grow the agent's memory. The exit code
and the OOM flag come, as before, from the inspect the controller makes after the exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.executors.docker_engine import DockerEngine, EngineError, EngineUnavailable

log = logging.getLogger(__name__)

EXIT_ACTIONS = ("destroy", "die")  # the engine's event names (sorted: the filter as sent)
MAX_LINE = 64 * 1024  # an engine event is well under 4 KiB even with many labels
RECENT = 1024  # exits kept for containers nobody waits for yet
BACKOFF = (0.1, 2.0)  # seconds between reconnects: first, at most
NANO = 1_000_000_000


@dataclass(frozen=True)
class Exit:
    """A container of ours stopped running (`die`) or is gone (`destroy`); `exit_code` as the event says."""

    container: str
    action: str
    exit_code: int | None
    time_nano: int


def parse_event(line: bytes) -> Exit | None:
    """The exit an engine event line tells of; None for anything else (other events, malformed lines)."""
    try:
        ev = json.loads(line)
    except ValueError:
        return None
    if not isinstance(ev, dict) or ev.get("Type") != "container":
        return None
    action = ev.get("Action")
    actor = ev.get("Actor")
    if action not in EXIT_ACTIONS or not isinstance(actor, dict):
        return None
    cid = actor.get("ID")
    attrs = actor.get("Attributes")
    if not isinstance(cid, str) or not cid:
        return None
    code = attrs.get("exitCode") if isinstance(attrs, dict) else None
    when = ev.get("timeNano")
    if not isinstance(when, int) or isinstance(when, bool):
        seconds = ev.get("time")
        when = int(seconds) * NANO if isinstance(seconds, int) and not isinstance(seconds, bool) else 0
    return Exit(cid, action, int(code) if isinstance(code, str) and code.isdigit() else None, max(0, when))


def exit_message(state: Mapping[str, Any]) -> str:
    """How a container ended, from its inspected `State`: exit code, OOM kill or signal, the engine's error."""
    code = int(state.get("ExitCode") or 0)
    message = f"exit status {code}"
    if state.get("OOMKilled"):
        message += " (killed: out of memory)"
    elif code > 128:
        message += f" (signal {code - 128})"
    if state.get("Error"):
        message += f": {state['Error']}"
    return message


def never_started(state: Mapping[str, Any]) -> bool:
    return state.get("Status") == "created" or str(state.get("StartedAt", "")).startswith("0001-")


def since_param(time_nano: int) -> str:
    """The engine's `since` for a time in nanoseconds: `seconds.nanoseconds`."""
    return f"{time_nano // NANO}.{time_nano % NANO:09d}"


class LineSplitter:
    """Bytes in, whole lines out. A line longer than `limit` is dropped, up to its newline: memory stays bounded
    whatever the stream sends."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._skipping = False  # inside an overlong line: drop until its newline

    def feed(self, chunk: bytes) -> list[bytes]:
        out: list[bytes] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            if self._skipping:
                self._skipping = False
            elif len(self._buf) + end - start <= self.limit:
                self._buf += chunk[start:end]
                if self._buf.strip():
                    out.append(bytes(self._buf))
            self._buf.clear()
            start = end + 1
        if not self._skipping:
            self._buf += chunk[start:]
            if len(self._buf) > self.limit:
                self._buf.clear()
                self._skipping = True
        return out


class ExitStream:
    """The exits of the containers carrying `labels`, from one event stream of `engine` (see the module doc)."""

    def __init__(self, engine: DockerEngine, labels: Mapping[str, str], *, connect_timeout: float | None = None
                 ) -> None:
        self.engine = engine
        self.filters = {"type": ["container"], "event": list(EXIT_ACTIONS),
                        "label": [f"{k}={v}" for k, v in sorted(labels.items())]}
        self.connect_timeout = engine.timeout if connect_timeout is None else connect_timeout
        self.epoch = 0  # bumped at every connect and eviction (see the module doc)
        self.connects = 0
        self.last_error = ""
        self._since: int | None = None  # the last event's time (ns)
        self._waiters: dict[str, list[asyncio.Future[Exit]]] = {}
        self._recent: OrderedDict[str, Exit] = OrderedDict()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def ready(self) -> int:
        """Once the stream is up, its epoch; raises EngineUnavailable when it cannot connect in time."""
        if self._closed:
            raise EngineUnavailable("docker: the exit event stream is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="docker-exit-events")
        if not self._connected.is_set():
            try:
                await asyncio.wait_for(self._connected.wait(), self.connect_timeout)
            except TimeoutError:
                raise EngineUnavailable(f"docker: no engine event stream ({self.last_error or 'no answer'})") \
                    from None
        return self.epoch

    async def wait(self, container: str, epoch: int) -> Exit:
        """Until `container` (its full id) exits or is removed. `epoch`: `ready()`'s, read before the caller
        last saw the container running."""
        fut: asyncio.Future[Exit] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(container, []).append(fut)
        try:
            seen = self._recent.pop(container, None)
            if seen is not None:
                return seen
            await self.ready()
            if epoch != self.epoch and not fut.done():  # it may have exited while the stream was not looking
                await self._check(container)
            return await fut
        finally:
            futs = self._waiters.get(container, [])
            if fut in futs:
                futs.remove(fut)
            if not futs:
                self._waiters.pop(container, None)

    @property
    def waiting(self) -> int:
        """How many containers are waited for."""
        return len(self._waiters)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        for futs in list(self._waiters.values()):
            for fut in futs:
                if not fut.done():
                    fut.set_exception(EngineUnavailable("docker: the exit event stream is closed"))

    # ---- the stream --------------------------------------------------------------------------------------
    def deliver(self, ev: Exit) -> None:
        """An exit from the stream (or an inspect): wake its waiters, else remember it (bounded)."""
        futs = self._waiters.get(ev.container)
        if futs:
            for fut in futs:
                if not fut.done():
                    fut.set_result(ev)
            return
        self._recent[ev.container] = ev
        self._recent.move_to_end(ev.container)
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
            self.epoch += 1  # a wait still to come for it must look itself

    async def _check(self, container: str) -> None:
        ct = await self.engine.inspect(container)
        state: dict[str, Any] = (ct or {}).get("State") or {}
        if ct is None:
            self.deliver(Exit(container, "destroy", None, 0))
        elif not state.get("Running") and state.get("Status") in ("exited", "dead"):
            self.deliver(Exit(container, "die", int(state.get("ExitCode") or 0), 0))

    async def _sweep(self, connect: int) -> None:
        """After a (re)connect: inspect every container waited for (sequentially: this is rare), until done or
        the stream dropped again (the next connect sweeps again)."""
        for cid in list(self._waiters):
            while connect == self.connects and self._connected.is_set() and cid in self._waiters:
                try:
                    await self._check(cid)
                    break
                except (EngineUnavailable, EngineError) as e:
                    log.debug("docker: inspecting %s after the event stream reconnected: %s", cid[:12], e)
                    await asyncio.sleep(BACKOFF[0])

    async def _run(self) -> None:
        delay = BACKOFF[0]
        while not self._closed:
            sweep: asyncio.Task[None] | None = None
            since = self._since if self._since is not None else time.time_ns() - NANO
            try:
                async with self.engine.events(self.filters, since_param(since)) as chunks:
                    self._since = self._since or since
                    self.connects += 1
                    self.epoch += 1
                    self._connected.set()
                    if self.connects > 1:
                        log.info("docker: engine event stream reconnected (%d containers waited for)", self.waiting)
                    delay = BACKOFF[0]
                    sweep = asyncio.create_task(self._sweep(self.connects))
                    lines = LineSplitter()
                    async for chunk in chunks:
                        for line in lines.feed(chunk):
                            ev = parse_event(line)
                            if ev is not None:
                                self._since = max(self._since or 0, ev.time_nano)
                                self.deliver(ev)
                self.last_error = "the engine ended the event stream"
            except (EngineUnavailable, EngineError) as e:
                self.last_error = str(e)
            except Exception as e:  # anything else the engine's answer causes: never the end of the stream
                log.warning("docker: engine event stream failed: %r", e)
                self.last_error = repr(e)
            finally:
                self._connected.clear()
                if sweep is not None:
                    sweep.cancel()
            log.debug("docker: engine event stream down (%s); reconnecting in %.1fs", self.last_error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF[1])
