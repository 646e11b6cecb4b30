"""The docker executor's one engine event stream for exits (agent/executors/docker_events.py): parsing of the
engine's event lines (malformed and foreign ones ignored), bounded line splitting, and the stream's
bookkeeping against a fake engine — a die wakes its waiter, an exit seen before the wait is kept (bounded), a
dropped stream reconnects from the last event's time and inspects what it was watching."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from agent.executors import docker_events
from agent.executors.docker_engine import EngineUnavailable
from agent.executors.docker_events import Exit, ExitStream, LineSplitter, parse_event, since_param

CID = "a" * 64


def event(cid: str = CID, action: str = "die", code: str | None = "3", t: int = 1_700_000_000_123456789,
          **extra: Any) -> bytes:
    attrs = {"name": "web.1.x", "shoal.node.id": "n1"}
    if code is not None:
        attrs["exitCode"] = code
    body = {"Type": "container", "Action": action, "status": action, "id": cid,
            "Actor": {"ID": cid, "Attributes": attrs}, "scope": "local", "time": t // 10**9, "timeNano": t, **extra}
    return json.dumps(body).encode()


def test_parse_event_reads_die_and_destroy_and_ignores_everything_else() -> None:
    assert parse_event(event()) == Exit(CID, "die", 3, 1_700_000_000_123456789)
    assert parse_event(event(action="destroy", code=None)) == Exit(CID, "destroy", None, 1_700_000_000_123456789)
    assert parse_event(event(code="137")) == Exit(CID, "die", 137, 1_700_000_000_123456789)
    ev = json.loads(event())
    del ev["timeNano"]
    assert parse_event(json.dumps(ev).encode()) == Exit(CID, "die", 3, 1_700_000_000 * 10**9)  # older engines
    for bad in [event(action="start"), event(action="oom"), event(Type="network"), b"", b"{", b"[1,2]", b"null",
                b'"die"', b'{"Type":"container","Action":"die"}', b'{"Type":"container","Action":"die","Actor":7}',
                b'{"Type":"container","Action":"die","Actor":{"ID":5}}', b"\xff\xfe garbage"]:
        assert parse_event(bad) is None, bad
    for code in ["-1", "x", ""]:  # an exit code that is no number: the exit still counts, its code from inspect
        assert parse_event(event(code=code)) == Exit(CID, "die", None, 1_700_000_000_123456789)
    ev = json.loads(event())
    ev["timeNano"], ev["time"] = True, "soon"
    assert parse_event(json.dumps(ev).encode()) == Exit(CID, "die", 3, 0)
    assert since_param(1_700_000_000_000000042) == "1700000000.000000042"


def test_line_splitter_joins_chunks_and_drops_overlong_lines_without_growing() -> None:
    lines = LineSplitter(limit=10)
    assert lines.feed(b"ab") == [] and lines.feed(b"c\nde") == [b"abc"]
    assert lines.feed(b"f\n\n  \ng") == [b"def"]  # blank lines are no events
    assert lines.feed(b"h\n") == [b"gh"]
    assert lines.feed(b"x" * 50) == [] and len(lines._buf) == 0  # overlong: dropped as it comes
    assert lines.feed(b"y" * 50) == [] and len(lines._buf) == 0
    assert lines.feed(b"zz\nok\n") == [b"ok"]  # ... up to its newline; the next line is whole
    assert lines.feed(b"0123456789\n01234567890\nend\n") == [b"0123456789", b"end"]  # the limit is inclusive


class FakeEngine:
    """`events` streams what a test queues (None ends the stream; an exception drops it); `inspect` answers
    from `states`."""

    def __init__(self) -> None:
        self.timeout = 5.0
        self.streams: asyncio.Queue[asyncio.Queue[bytes | BaseException | None]] = asyncio.Queue()
        self.since: list[str] = []
        self.filters: list[Mapping[str, list[str]]] = []
        self.states: dict[str, dict[str, Any] | None] = {}
        self.inspected: list[str] = []
        self.refuse = 0  # connects to refuse first
        self.garble = 0  # connects whose answer makes no sense (an unexpected error) first

    async def inspect(self, ref: str) -> dict[str, Any] | None:
        self.inspected.append(ref)
        state = self.states.get(ref, {"Running": True, "Status": "running"})
        return None if state is None else {"Id": ref, "State": state}

    @contextlib.asynccontextmanager
    async def events(self, filters: Mapping[str, list[str]], since: str) -> AsyncIterator[AsyncIterator[bytes]]:
        self.since.append(since)
        self.filters.append(filters)
        if self.refuse:
            self.refuse -= 1
            raise EngineUnavailable("connection refused")
        if self.garble:
            self.garble -= 1
            raise ValueError("invalid literal for int() with base 10: 'x'")
        q: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        self.streams.put_nowait(q)

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                item = await q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item

        yield chunks()


async def connected(stream: ExitStream, engine: FakeEngine) -> asyncio.Queue[bytes | BaseException | None]:
    await stream.ready()
    return await asyncio.wait_for(engine.streams.get(), 2)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_die_wakes_its_waiter_and_foreign_or_malformed_lines_change_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine()
    stream = ExitStream(engine, {"shoal.node.id": "n1"})  # type: ignore[arg-type]
    q = await connected(stream, engine)
    assert engine.filters[0] == {"type": ["container"], "event": ["destroy", "die"], "label": ["shoal.node.id=n1"]}
    epoch = stream.epoch
    waiting = asyncio.create_task(stream.wait(CID, epoch))
    await settle()
    assert stream.waiting == 1 and not waiting.done()
    for junk in [b"{not json\n", b'{"Type":"container","Action":"die","Actor":{"ID":null}}\n', b"x" * 100_000,
                 b"\n", event(action="start") + b"\n", event(cid="b" * 64)[:30]]:
        q.put_nowait(junk)
    q.put_nowait(event(cid="b" * 64)[30:] + b"\n")  # someone else's exit, split across chunks
    await settle()
    assert not waiting.done() and list(stream._recent) == ["b" * 64]
    q.put_nowait(event(code="7")[:50])
    q.put_nowait(event(code="7")[50:] + b"\n")
    assert (await asyncio.wait_for(waiting, 2)).exit_code == 7
    assert stream.waiting == 0 and engine.inspected == []  # the stream told: no inspect
    # an exit the stream saw before anyone waited (between start's inspect and the wait) is not lost
    assert (await asyncio.wait_for(stream.wait("b" * 64, epoch), 1)).exit_code == 3
    # ... and what it keeps is bounded: evicting bumps the epoch, so a later wait inspects for itself
    monkeypatch.setattr(docker_events, "RECENT", 3)
    for i in range(5):
        stream.deliver(Exit(f"c{i}", "die", 0, 0))
    assert list(stream._recent) == ["c2", "c3", "c4"] and stream.epoch == epoch + 2
    await stream.close()


async def test_a_dropped_stream_reconnects_from_the_last_event_and_inspects_what_it_watched() -> None:
    engine = FakeEngine()
    stream = ExitStream(engine, {"shoal.node.id": "n1"})  # type: ignore[arg-type]
    q = await connected(stream, engine)
    epoch = stream.epoch
    last = time.time_ns() + 5 * 10**9  # later than the first connect's `since`
    q.put_nowait(event(cid="e" * 64, t=last) + b"\n")
    waits = {c: asyncio.create_task(stream.wait(c * 64, epoch)) for c in "123"}
    await settle()
    engine.states["1" * 64] = {"Running": False, "Status": "exited", "ExitCode": 4}  # exits while the stream is down
    engine.states["2" * 64] = None  # removed while it is down
    engine.refuse = 2  # the engine is restarting: two connects fail before it answers
    q.put_nowait(EngineUnavailable("connection reset"))
    q2 = await asyncio.wait_for(engine.streams.get(), 5)
    assert engine.since[1:] == [since_param(last)] * 3  # from the last event on: nothing missed in between
    assert (await asyncio.wait_for(waits["1"], 2)) == Exit("1" * 64, "die", 4, 0)
    assert (await asyncio.wait_for(waits["2"], 2)).action == "destroy"
    assert not waits["3"].done() and stream.epoch > epoch  # still running: still waited for
    assert sorted(engine.inspected) == sorted(c * 64 for c in "123")
    # a wait whose caller looked before the reconnect (an older epoch) inspects once itself
    engine.inspected.clear()
    engine.states["4" * 64] = {"Running": False, "Status": "exited", "ExitCode": 0}
    assert (await asyncio.wait_for(stream.wait("4" * 64, epoch), 2)).exit_code == 0
    assert engine.inspected == ["4" * 64]
    q2.put_nowait(None)  # the engine ends the stream (a restart): reconnects again
    await asyncio.wait_for(engine.streams.get(), 5)
    await stream.close()
    with pytest.raises(EngineUnavailable):
        await waits["3"]  # closing fails the waits left (the worker retries them)
    assert stream.connects == 3


async def test_an_unexpected_error_does_not_end_the_stream() -> None:
    engine = FakeEngine()
    engine.garble = 1
    stream = ExitStream(engine, {"shoal.node.id": "n1"})  # type: ignore[arg-type]
    await asyncio.wait_for(stream.ready(), 3)
    assert stream.connects == 1 and len(engine.since) == 2
    await stream.close()


async def test_ready_fails_clearly_when_the_engine_does_not_answer() -> None:
    engine = FakeEngine()
    engine.refuse = 1000
    stream = ExitStream(engine, {"shoal.node.id": "n1"}, connect_timeout=0.3)  # type: ignore[arg-type]
    with pytest.raises(EngineUnavailable, match="connection refused"):
        await stream.ready()
    await stream.close()
