"""Task logs on the agent: reading a task's output for a log request (`services/dispatcher/logs.py`), and keeping
process tasks' log files bounded.

Process tasks write straight to `<state dir>/logs/<task>.log` (so their output survives an agent restart, which
adopts them); `rotate` copies a file over `MAX_FILE_BYTES` to `<task>.log.1` and truncates it (the process
opened it with O_APPEND, so it carries on at the new end; logrotate's copytruncate), so a task keeps at most
about twice MAX_FILE_BYTES. Those files hold no per-line times: a line already written is stamped with its file's
modification time (an upper bound), a followed line with the time the agent read it. Container tasks are read
from the engine's `/containers/{id}/logs` (timestamps from the engine)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from shoal import logs
from shoal.concurrency import task_scope
from shoal.logs import LogQuery, Record
from shoal.models.states import TaskState

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 1024 * 1024
FOLLOW_POLL = 0.25
READ_LIMIT = 4 * 1024 * 1024  # bytes read at once from a followed file


def rotate(log_dir: Path, limit: int = MAX_FILE_BYTES) -> list[str]:
    """Copy-truncate every `*.log` of `log_dir` larger than `limit`; returns the task ids rotated."""
    out: list[str] = []
    try:
        entries = list(log_dir.glob("*.log"))
    except OSError:
        return out
    for path in entries:
        try:
            if path.stat().st_size <= limit:
                continue
            old = path.with_name(path.name + ".1")
            with open(path, "rb") as src, open(old, "wb") as dst:
                src.seek(max(0, path.stat().st_size - limit))  # the newest `limit` bytes
                src.readline()  # from a line start
                dst.write(src.read(limit))
            os.truncate(path, 0)
            out.append(path.stem)
        except OSError as e:
            log.warning("agent: cannot rotate the log file %s: %s", path, e)
    return out


def file_records(task_id: str, path: Path) -> list[Record]:
    """The lines now in a process task's log files (the rotated one first), stamped with each file's mtime."""
    out: list[Record] = []
    for p in (path.with_name(path.name + ".1"), path):
        try:
            stamp = p.stat().st_mtime
            data = p.read_bytes()[-(2 * MAX_FILE_BYTES + 65536):]
        except OSError:
            continue
        out.extend(logs.record(task_id, "stdout", stamp, ln)
                   for ln in logs.split_lines(data.decode(errors="replace")))
    return out


async def follow_file(task_id: str, path: Path, done: Callable[[], bool]) -> AsyncIterator[list[Record]]:
    """New lines of `path` as they come (from its current end), until `done()` and nothing more is written.
    A truncation (rotation) starts again at the file's beginning."""
    try:
        offset = path.stat().st_size
    except OSError:
        offset = 0
    partial = b""
    while True:
        finished = done()
        try:
            size = path.stat().st_size
            if size < offset:
                offset = 0
            data = b""
            if size > offset:
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read(READ_LIMIT)
                offset += len(data)
        except OSError:
            data = b""
        if data:
            lines = (partial + data).split(b"\n")
            partial = lines.pop()[: logs.MAX_LINE]
            now = time.time()
            yield [logs.record(task_id, "stdout", now, ln.decode(errors="replace")) for ln in lines]
            continue
        if finished:
            if partial:
                yield [logs.record(task_id, "stdout", time.time(), partial.decode(errors="replace"))]
            return
        yield []  # a heartbeat: lets the sender learn that its reader went away
        await asyncio.sleep(FOLLOW_POLL)


async def container_records(task_id: str, engine: Any, ref: str, query: LogQuery,
                            follow: bool) -> AsyncIterator[list[Record]]:
    """The engine's log stream of container `ref` (multiplexed: shoal creates containers without a TTY)."""
    params: dict[str, Any] = {"stdout": 1, "stderr": 1, "timestamps": 1,
                              "tail": "all" if query.tail is None else str(query.tail)}
    if query.since is not None:
        params["since"] = f"{query.since:.9f}"
    if follow:
        params["follow"] = 1
    await engine.negotiate()
    client: httpx.AsyncClient = engine._http  # the engine's pooled client (one per agent)
    path = f"/v{engine.api_version}/containers/{ref}/logs"
    async with client.stream("GET", path, params=params, timeout=httpx.Timeout(10.0, read=None)) as resp:
        if resp.status_code >= 400:
            body = (await resp.aread()).decode(errors="replace")[:500]
            yield [logs.record(task_id, "shoal", time.time(), f"docker engine: {body.strip()}")]
            return
        buf = bytearray()
        async for data in resp.aiter_bytes():
            buf += data
            out = [logs.engine_line(stream, payload, task_id) for stream, payload in logs.read_docker_frames(buf)]
            if out:
                yield out
            if len(buf) > READ_LIMIT:  # a frame larger than any line the engine writes: not a stream we read
                yield [logs.record(task_id, "shoal", time.time(), "docker engine: unreadable log stream")]
                return


# ---- answering a request -------------------------------------------------------------------------------------
Post = Callable[[bytes, bool], Awaitable[bool]]  # (chunk, done) -> False once the reader is gone
KEEPALIVE = 5.0  # seconds of silence after which a follow posts an empty chunk (to learn the reader left)


def _finished(mgr: Any) -> Callable[[], bool]:
    def done() -> bool:
        try:
            return TaskState(mgr.status.get("state", "")).terminal
        except ValueError:
            return False
    return done


def _sources(task_id: str, mgr: Any, query: LogQuery) -> AsyncIterator[list[Record]] | list[Record]:
    """What one task's log is on this node: records now (a list) or an async source (containers, follows).
    A task the node no longer holds is said so when asked for alone (a service's old tasks are skipped)."""
    if mgr is None and len(query.task_ids) > 1:
        return []
    if mgr is None:
        return [logs.record(task_id, "shoal", time.time(),
                            f"task {task_id} is not on this node any more: its logs went with it")]
    ctl = mgr.controller
    path = getattr(ctl, "log_path", None)
    if isinstance(path, Path):
        now = logs.select(file_records(task_id, path), query)
        if not query.follow:
            return now
        return _then_follow(now, follow_file(task_id, path, _finished(mgr)))
    engine = getattr(ctl, "engine", None)
    if engine is not None:
        ref = str(getattr(ctl, "container_id", None) or getattr(ctl, "name", task_id))
        return container_records(task_id, engine, ref, query, query.follow and not _finished(mgr)())
    return []  # hollow and attachment tasks print nothing


async def _then_follow(first: list[Record], rest: AsyncIterator[list[Record]]) -> AsyncIterator[list[Record]]:
    yield first
    async for batch in rest:
        yield batch


async def answer(query: LogQuery, managers: Mapping[str, Any], post: Post) -> None:
    """Send what `query` asks of the tasks `managers` holds, then the end. Records of several tasks are merged
    by time for what exists now; followed lines go as they come. Stops as soon as `post` says the reader left."""
    static: list[Record] = []
    live: list[AsyncIterator[list[Record]]] = []
    for tid in query.task_ids:
        src = _sources(tid, managers.get(tid), query)
        if isinstance(src, list):
            static.extend(src)
        else:
            live.append(src)
    static.sort(key=lambda r: r["time"])
    for chunk in logs.chunks(static):
        if not await post(chunk, False):
            return
    if live and await _pump(live, post) is False:
        return
    await post(b"", True)


async def _pump(sources: list[AsyncIterator[list[Record]]], post: Post) -> bool:
    """Merge live sources through a queue of a few batches (a slow reader slows the readers, bounded)."""
    queue: asyncio.Queue[list[Record] | None] = asyncio.Queue(4)

    async def drain(src: AsyncIterator[list[Record]]) -> None:
        try:
            async for batch in src:
                await queue.put(batch)
        except (httpx.HTTPError, OSError, Exception) as e:  # one task's source failing ends only that task
            await queue.put([logs.record("", "shoal", time.time(), f"log source failed: {e}")])
        finally:
            await queue.put(None)

    async with task_scope() as tg:
        readers = [tg.create_task(drain(s)) for s in sources]
        running, silent_since = len(readers), time.monotonic()
        try:
            while running:
                try:
                    batch = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except TimeoutError:
                    batch = []
                if batch is None:
                    running -= 1
                    continue
                if not batch and time.monotonic() - silent_since < KEEPALIVE:
                    continue
                silent_since = time.monotonic()
                for chunk in (logs.chunks(batch) if batch else [b""]):
                    if not await post(chunk, False):
                        return False
            return True
        finally:
            for r in readers:
                r.cancel()
