"""Exits through the node's one engine event stream (agent/executors/docker_events.py), against the real engine:
exit code and OOM seen through it, no connection held per running container, and a stream that drops while a
container exits loses nothing — whether the engine replays the event (`since=`) or not (an engine restart
empties its buffer: the inspect after the reconnect finds it)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping

import pytest

from agent.executors.base import ExitError
from agent.executors.docker import DockerExecutor
from agent.executors.docker_engine import EngineUnavailable
from agent.executors.docker_events import ExitStream, since_param
from tests.docker.test_docker_executor import executor, make_task, started

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]
__all__ = ["executor"]  # the fixture, shared


def held_connections(ex: DockerExecutor) -> int:
    """Connections the engine client's long-request pool holds (the event stream; before: one wait each)."""
    return len(ex.engine._waits._transport._pool.connections)  # type: ignore[attr-defined]


async def test_exit_code_and_oom_come_through_the_event_stream(executor: DockerExecutor, task_image: str) -> None:
    bad = await started(executor, make_task(task_image, command=["sh", "-c", "sleep 0.3; exit 3"]))
    oom = await started(executor, make_task(task_image, command=["sh", "-c", "sleep 0.3; head -c 200000000 "
                                                                 "/dev/zero | tr '\\0' a >/dev/null; x=$(head -c "
                                                                 "200000000 /dev/zero | tr '\\0' a)"],
                                            resources={"limits": {"memory_bytes": 8 * 1024 * 1024}}))
    stream = executor._exits["node-t"]
    with pytest.raises(ExitError) as e:
        await bad.wait()
    assert e.value.exit_code == 3 and "exit status 3" in str(e.value)
    with pytest.raises(ExitError) as e:
        await oom.wait()
    assert e.value.exit_code == 137 and "out of memory" in str(e.value)
    assert stream.connects == 1 and stream.waiting == 0
    for ctl in (bad, oom):
        await ctl.remove()


async def test_running_containers_hold_no_connection_each(executor: DockerExecutor, task_image: str) -> None:
    ctls = [await started(executor, make_task(task_image, command=["sleep", "60"])) for _ in range(5)]
    waits = [asyncio.create_task(c.wait()) for c in ctls]
    stream = executor._exits["node-t"]
    for _ in range(100):
        if stream.waiting == 5:
            break
        await asyncio.sleep(0.02)
    assert stream.waiting == 5
    await asyncio.sleep(0.2)
    assert held_connections(executor) == 1  # the event stream; waits on the engine held 5
    for c in ctls:
        await c.engine.kill(c.container_id or c.name)
    for w in waits:
        with pytest.raises(ExitError):
            await asyncio.wait_for(w, 10)
    for c in ctls:
        await c.remove()


class Breakable:
    """Wraps the engine's `events`: `drop()` breaks the open stream and refuses reconnects until `restore()`;
    with `forget`, the reconnect asks from now on (an engine restart lost its event buffer)."""

    def __init__(self, stream: ExitStream, *, forget: bool) -> None:
        self.real = stream.engine.events
        self.forget = forget
        self.dropped = asyncio.Event()
        self.down = False
        stream.engine.events = self.events  # type: ignore[method-assign]

    def drop(self) -> None:
        self.down = True
        self.dropped.set()

    def restore(self) -> None:
        self.down = False
        self.dropped.clear()

    @contextlib.asynccontextmanager
    async def events(self, filters: Mapping[str, list[str]], since: str) -> AsyncIterator[AsyncIterator[bytes]]:
        if self.down:
            raise EngineUnavailable("test: the engine is down")
        if self.forget:
            since = since_param(time.time_ns())
        async with self.real(filters, since) as chunks:
            yield self._until_dropped(chunks)

    async def _until_dropped(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        it = aiter(chunks)
        while True:
            nxt = asyncio.ensure_future(anext(it))
            drop = asyncio.ensure_future(self.dropped.wait())
            done, _ = await asyncio.wait({nxt, drop}, return_when=asyncio.FIRST_COMPLETED)
            drop.cancel()
            if nxt not in done:
                nxt.cancel()
                with contextlib.suppress(BaseException):
                    await nxt
                raise EngineUnavailable("test: the stream dropped")
            try:
                yield nxt.result()
            except StopAsyncIteration:
                return


@pytest.mark.parametrize("forget", [False, True], ids=["replayed", "engine-forgot"])
async def test_an_exit_while_the_stream_is_down_is_not_lost(executor: DockerExecutor, task_image: str,
                                                            forget: bool) -> None:
    task = make_task(task_image, command=["sh", "-c", "sleep 1; exit 5"])
    stream = executor.controller(task, node_id="node-t").exits
    breaker = Breakable(stream, forget=forget)  # before the stream connects
    ctl = await started(executor, task)
    waiting = asyncio.create_task(ctl.wait())
    for _ in range(100):
        if stream.waiting:
            break
        await asyncio.sleep(0.02)
    breaker.drop()
    while ((await executor.engine.inspect(ctl.container_id or ctl.name)) or {})["State"]["Running"]:
        await asyncio.sleep(0.1)  # it exits while nobody listens
    await asyncio.sleep(0.3)
    assert not waiting.done()
    breaker.restore()
    with pytest.raises(ExitError) as e:
        await asyncio.wait_for(waiting, 10)
    assert e.value.exit_code == 5 and stream.connects >= 2
    await ctl.remove()
