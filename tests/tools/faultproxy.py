"""faultproxy: a small fault-injecting TCP proxy for tests.

A proxy holds named *links*; each link listens on its own loopback port and forwards every connection to one
target address. Each link has a mode and a delay, changed at any time:

- ``pass``   forward bytes both ways (after the link's delay, if any);
- ``drop``   a blackhole: connections are accepted and held, bytes read and thrown away in both directions.
             A connection that lost bytes can never carry a consistent stream again (a real TCP connection
             would not deliver a gap either), so leaving ``drop`` resets every connection that dropped bytes;
- ``stall``  stop reading: bytes wait in the socket buffers and the sender sees backpressure; leaving
             ``stall`` delivers what waited, late (a network that holds packets, not one that loses them);
- ``reject`` reset existing connections and every new one at once (the peer looks down).

``delay_ms`` (plus a uniform ``jitter_ms`` either way) holds each chunk that long before writing it on,
keeping the byte order. ``heal()`` is ``pass`` without delay.

Two ways to run it, with the same methods (``ProxyControl``):

- ``FaultProxy``: the links in an asyncio loop on a daemon thread of the calling process;
- ``ProxyProcess``: the same loop in a subprocess (``python -m tests.tools.faultproxy``) driven by JSON lines
  on its stdin (a reply per command on stdout); it exits when its stdin closes, so it cannot outlive its
  parent. Use it when the test process itself is busy (its GIL is then not on the network path).

Idle, either costs nothing: every task waits on a socket or an event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

CHUNK = 64 * 1024
QUEUE_CHUNKS = 256  # per direction: a delayed link buffers at most this many chunks before backpressure


class Mode(StrEnum):
    PASS = "pass"
    DROP = "drop"
    STALL = "stall"
    REJECT = "reject"


@dataclass
class LinkStats:
    accepted: int = 0  # connections accepted (including rejected ones)
    rejected: int = 0
    reset: int = 0  # connections this proxy reset (reject, or leaving drop)
    forwarded_bytes: int = 0
    dropped_bytes: int = 0
    open: int = 0  # connections open now


@dataclass
class LinkState:
    mode: Mode = Mode.PASS
    delay_ms: float = 0.0
    jitter_ms: float = 0.0


class _Conn:
    def __init__(self, down: asyncio.StreamWriter, up: asyncio.StreamWriter) -> None:
        self.down = down
        self.up = up
        self.tainted = False  # lost bytes while dropping: reset on leaving drop
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for w in (self.down, self.up):
            with contextlib.suppress(Exception):
                w.transport.abort()  # RST: the endpoints see the connection die at once
        for t in self.tasks:
            t.cancel()


class _Link:
    def __init__(self, name: str, target: tuple[str, int], host: str) -> None:
        self.name = name
        self.target = target
        self.host = host
        self.state = LinkState()
        self.stats = LinkStats()
        self.conns: set[_Conn] = set()
        self.unstalled = asyncio.Event()
        self.unstalled.set()
        self.server: asyncio.Server | None = None
        self.rng = random.Random()

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._accept, self.host, port, reuse_address=True)
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def set(self, mode: Mode | None, delay_ms: float | None, jitter_ms: float | None) -> None:
        old = self.state.mode
        if delay_ms is not None:
            self.state.delay_ms = max(0.0, float(delay_ms))
        if jitter_ms is not None:
            self.state.jitter_ms = max(0.0, float(jitter_ms))
        if mode is None or mode == old:
            return
        self.state.mode = mode
        if mode == Mode.REJECT:
            for c in list(self.conns):
                self._reset(c)
        elif old == Mode.DROP:
            for c in list(self.conns):
                if c.tainted:
                    self._reset(c)
        if mode == Mode.STALL:
            self.unstalled.clear()
        else:
            self.unstalled.set()

    def _reset(self, c: _Conn) -> None:
        self.stats.reset += 1
        self.conns.discard(c)
        c.abort()

    def delay(self) -> float:
        s = self.state
        if not s.delay_ms and not s.jitter_ms:
            return 0.0
        return max(0.0, s.delay_ms + self.rng.uniform(-s.jitter_ms, s.jitter_ms)) / 1000.0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        if self.state.mode == Mode.REJECT:
            self.stats.rejected += 1
            writer.transport.abort()
            return
        try:
            async with asyncio.timeout(2.0):
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except (OSError, TimeoutError):
            writer.transport.abort()  # the target is down: so is the proxied address
            return
        if self.state.mode == Mode.REJECT:  # changed while we dialled
            self.stats.rejected += 1
            writer.transport.abort()
            up_writer.transport.abort()
            return
        conn = _Conn(writer, up_writer)
        self.conns.add(conn)
        self.stats.open += 1
        conn.tasks = [asyncio.create_task(self._pipe(conn, reader, up_writer)),
                      asyncio.create_task(self._pipe(conn, up_reader, writer))]
        try:
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self.stats.open -= 1
            self.conns.discard(conn)
            for w in (writer, up_writer):
                w.close()

    async def _pipe(self, conn: _Conn, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """One direction: read chunks, drop or queue them with their due time; a sender writes them on."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)

        async def sender() -> None:
            try:
                while (item := await queue.get()) is not None:
                    due, data = item
                    if (wait := due - loop.time()) > 0:
                        await asyncio.sleep(wait)
                    dst.write(data)
                    self.stats.forwarded_bytes += len(data)
                    await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()  # pass a half-close on
            except (OSError, RuntimeError):
                # The destination is gone: reset both sides, as a dead peer's kernel would. (Left alone, the
                # reader would fill the queue and stop reading, and the source would block in its writes
                # forever instead of seeing the connection fail.)
                conn.abort()

        out = asyncio.create_task(sender())
        try:
            while True:
                await self.unstalled.wait()
                data = await src.read(CHUNK)
                if not data:
                    break
                await self.unstalled.wait()  # stalled while this read was pending: hold what it got
                if self.state.mode == Mode.DROP:
                    conn.tainted = True
                    self.stats.dropped_bytes += len(data)
                    continue
                await queue.put((loop.time() + self.delay(), data))
            await queue.put(None)
            await out
        except (OSError, asyncio.IncompleteReadError):
            conn.abort()
        finally:
            if not out.done():
                out.cancel()
                with contextlib.suppress(BaseException):
                    await out

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for c in list(self.conns):
            c.abort()
        self.conns.clear()


class ProxyCore:
    """The links, living in one event loop (not thread-safe: the wrappers below call it on its loop)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.links: dict[str, _Link] = {}

    async def add(self, name: str, target_host: str, target_port: int, listen_port: int = 0) -> int:
        if name in self.links:
            raise ValueError(f"faultproxy: link {name!r} exists")
        link = _Link(name, (target_host, target_port), self.host)
        port = await link.start(listen_port)
        self.links[name] = link
        return port

    async def set(self, names: list[str] | None, mode: str | None = None, delay_ms: float | None = None,
                  jitter_ms: float | None = None) -> None:
        m = Mode(mode) if mode is not None else None
        for link in self._select(names):
            link.set(m, delay_ms, jitter_ms)

    async def heal(self, names: list[str] | None = None) -> None:
        await self.set(names, Mode.PASS.value, 0.0, 0.0)

    async def state(self) -> dict[str, dict[str, Any]]:
        return {n: {**asdict(link.state), "mode": link.state.mode.value, "port": link.port,
                    "target": list(link.target), "stats": asdict(link.stats)} for n, link in self.links.items()}

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()
        self.links.clear()

    def _select(self, names: list[str] | None) -> list[_Link]:
        if names is None:
            return list(self.links.values())
        missing = [n for n in names if n not in self.links]
        if missing:
            raise KeyError(f"faultproxy: no links {missing}")
        return [self.links[n] for n in names]


class ProxyControl(Protocol):
    def add_link(self, name: str, target_host: str, target_port: int, listen_port: int = 0) -> int: ...
    def set(self, names: Iterable[str] | None = None, mode: Mode | str | None = None,
            delay_ms: float | None = None, jitter_ms: float | None = None) -> None: ...
    def heal(self, names: Iterable[str] | None = None) -> None: ...
    def state(self) -> dict[str, dict[str, Any]]: ...
    def close(self) -> None: ...


def _names(names: Iterable[str] | None) -> list[str] | None:
    return None if names is None else list(names)


def _mode(mode: Mode | str | None) -> str | None:
    return None if mode is None else Mode(mode).value


class FaultProxy:
    """ProxyCore on a daemon thread's event loop; every method is synchronous and thread-safe."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._loop = asyncio.new_event_loop()
        self._core = ProxyCore(host)
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._thread.start()
        self._closed = False

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def add_link(self, name: str, target_host: str, target_port: int, listen_port: int = 0) -> int:
        return self._call(self._core.add(name, target_host, target_port, listen_port))

    def set(self, names: Iterable[str] | None = None, mode: Mode | str | None = None,
            delay_ms: float | None = None, jitter_ms: float | None = None) -> None:
        self._call(self._core.set(_names(names), _mode(mode), delay_ms, jitter_ms))

    def heal(self, names: Iterable[str] | None = None) -> None:
        self._call(self._core.heal(_names(names)))

    def state(self) -> dict[str, dict[str, Any]]:
        return self._call(self._core.state())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._core.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProxyProcess:
    """ProxyCore in a subprocess, driven over its stdin/stdout; same methods as FaultProxy."""

    def __init__(self, host: str = "127.0.0.1", log: Path | None = None) -> None:
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        stderr = open(log, "ab") if log is not None else subprocess.DEVNULL  # the child keeps its own copy
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.tools.faultproxy", "--host", host],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=root,
                                         env=env)
        finally:
            if log is not None:
                stderr.close()  # type: ignore[union-attr]
        self._lock = threading.Lock()
        self._call("ping")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _call(self, cmd: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self._lock:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"faultproxy process exited (code {self.proc.poll()})")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"faultproxy: {cmd} failed: {reply.get('error')}")
        return reply.get("result")

    def add_link(self, name: str, target_host: str, target_port: int, listen_port: int = 0) -> int:
        return int(self._call("add", name=name, target_host=target_host, target_port=target_port,
                              listen_port=listen_port))

    def set(self, names: Iterable[str] | None = None, mode: Mode | str | None = None,
            delay_ms: float | None = None, jitter_ms: float | None = None) -> None:
        self._call("set", names=_names(names), mode=_mode(mode), delay_ms=delay_ms, jitter_ms=jitter_ms)

    def heal(self, names: Iterable[str] | None = None) -> None:
        self._call("heal", names=_names(names))

    def state(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = self._call("state")
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # EOF: the proxy closes its links and exits
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError, ValueError):
                    f.close()

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _serve_stdio(host: str) -> None:
    core = ProxyCore(host)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer
    handlers = {
        "ping": lambda a: _done(None),
        "add": lambda a: core.add(a["name"], a["target_host"], int(a["target_port"]), int(a.get("listen_port", 0))),
        "set": lambda a: core.set(a.get("names"), a.get("mode"), a.get("delay_ms"), a.get("jitter_ms")),
        "heal": lambda a: core.heal(a.get("names")),
        "state": lambda a: core.state(),
    }
    try:
        while line := await reader.readline():
            try:
                req = json.loads(line)
                result = await handlers[req["cmd"]](req)
                reply: dict[str, Any] = {"ok": True, "result": result}
            except Exception as e:  # the caller raises it
                reply = {"ok": False, "error": repr(e)}
            out.write(json.dumps(reply).encode() + b"\n")
            out.flush()
    finally:
        await core.close()


async def _done(value: T) -> T:
    return value


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="fault-injecting TCP proxy driven by JSON lines on stdin")
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args(argv)
    asyncio.run(_serve_stdio(args.host))


if __name__ == "__main__":
    main()
