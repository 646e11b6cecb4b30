"""The dispatcher's log broker: a reader's request (from a gateway) waits for the node's agent to pick it up on
its session's log long poll; the agent posts the records back in chunks, which stream to the reader.

Agents are never dialled (SwarmKit: managers reach nodes only through their sessions), and bulk data never goes
over NATS. Everything is bounded: requests per node and in all, a queue of `QUEUE_CHUNKS` chunks of ≤ 64 KiB per
request (a slow reader makes the agent's post wait: back-pressure, not memory), and a post that cannot be
queued within `PUSH_TIMEOUT` ends the request. A reader that goes away closes its request; the agent's next
post is answered 410 and it stops reading the task's output."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import NotFound, ShoalError, Unavailable
from shoal.ids import new_id
from shoal.logs import LogQuery

QUEUE_CHUNKS = 4
MAX_PER_NODE = 32
MAX_REQUESTS = 1024
PUSH_TIMEOUT = 30.0
PICKUP_TIMEOUT = 10.0  # an agent that does not pick a request up in this time is not answering
#: an agent that picked a request up and then sends nothing for this long (it posts an empty chunk every 5 s of a
#: quiet follow: agent/logs.py KEEPALIVE) cannot reach this dispatcher with its chunks: the request ends
SILENCE_TIMEOUT = 30.0


class Gone(ShoalError):
    status = 410
    code = "log_request_gone"


class NoSession(NotFound):
    code = "no_session"


@dataclass
class LogRequest:
    id: str
    node_id: str
    query: LogQuery
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_CHUNKS))
    picked: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, **self.query.to_wire()}


class LogBroker:
    def __init__(self) -> None:
        self.requests: dict[str, LogRequest] = {}
        self._waiting: dict[str, list[LogRequest]] = {}  # node id -> not yet picked up
        self._events: dict[str, asyncio.Event] = {}
        self.stopped = False

    def stop(self) -> None:
        """The dispatcher stops: every request ends and every log long poll answers (503 from then on)."""
        self.stopped = True
        for req in list(self.requests.values()):
            self.close(req.id)
        for ev in self._events.values():
            ev.set()

    def open(self, node_id: str, query: LogQuery) -> LogRequest:
        if self.stopped:
            raise Unavailable("dispatcher: shutting down; use another dispatcher")
        if len(self.requests) >= MAX_REQUESTS:
            raise Unavailable(f"dispatcher: {MAX_REQUESTS} log requests are open; retry later")
        if sum(1 for r in self.requests.values() if r.node_id == node_id) >= MAX_PER_NODE:
            raise Unavailable(f"dispatcher: {MAX_PER_NODE} log requests are open for node {node_id}; "
                              "retry later")
        req = LogRequest(new_id(), node_id, query)
        self.requests[req.id] = req
        self._waiting.setdefault(node_id, []).append(req)
        self._event(node_id).set()
        return req

    def close(self, request_id: str) -> None:
        req = self.requests.pop(request_id, None)
        if req is None:
            return
        req.closed = True
        waiting = self._waiting.get(req.node_id)
        if waiting and req in waiting:
            waiting.remove(req)
        with contextlib.suppress(asyncio.QueueFull):
            req.queue.put_nowait(None)  # a reader blocked on get() ends; if the queue is full it is gone anyway

    def drop_node(self, node_id: str) -> None:
        """The node's session ended: its requests end (the reader gets what came, then the end)."""
        for req in [r for r in self.requests.values() if r.node_id == node_id]:
            self.close(req.id)
        ev = self._events.pop(node_id, None)  # a poll of the ended session answers; the map keeps live nodes only
        if ev is not None:
            ev.set()

    def _event(self, node_id: str) -> asyncio.Event:
        return self._events.setdefault(node_id, asyncio.Event())

    async def poll(self, node_id: str, wait: float) -> list[dict[str, Any]]:
        """The agent's long poll: the requests for its node not yet picked up (waits up to `wait` for one)."""
        if self.stopped:
            raise Unavailable("dispatcher: shutting down; use another dispatcher")
        ev, reqs = self.look(node_id)
        if reqs is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ev.wait(), wait)
            reqs = self.take(node_id)
        return reqs

    def look(self, node_id: str) -> tuple[asyncio.Event, list[dict[str, Any]] | None]:
        """The requests for the node not yet picked up (now marked picked up), or None and the event that is set
        when one arrives (the session poll's part: services/dispatcher/polls.py)."""
        ev = self._event(node_id)
        if not self._waiting.get(node_id):
            ev.clear()
            return ev, None
        return ev, self.take(node_id)

    def take(self, node_id: str) -> list[dict[str, Any]]:
        reqs = self._waiting.pop(node_id, [])
        for r in reqs:
            r.picked.set()
        return [r.wire() for r in reqs]

    async def push(self, node_id: str, request_id: str, chunk: bytes | None) -> None:
        """A chunk from the agent (None: the end). Waits while the reader's queue is full (back-pressure)."""
        req = self.requests.get(request_id)
        if req is None or req.closed or req.node_id != node_id:
            raise Gone(f"dispatcher: log request {request_id} is over (its reader went away); stop sending")
        try:
            await asyncio.wait_for(req.queue.put(chunk), PUSH_TIMEOUT)
        except TimeoutError:
            self.close(request_id)
            raise Gone(f"dispatcher: the reader of log request {request_id} took no data for "
                       f"{PUSH_TIMEOUT:.0f}s; request ended") from None
        if chunk is None:
            self.requests.pop(request_id, None)

    async def stream(self, req: LogRequest) -> AsyncIterator[bytes]:
        """What the reader receives; closing the iterator (the reader left) closes the request."""
        try:
            try:
                await asyncio.wait_for(req.picked.wait(), PICKUP_TIMEOUT)
            except TimeoutError:
                yield _notice(req, f"node {req.node_id} did not pick up the log request in "
                                   f"{PICKUP_TIMEOUT:.0f}s (overloaded or unreachable)")
                return
            while True:
                try:
                    chunk = await asyncio.wait_for(req.queue.get(), SILENCE_TIMEOUT)
                except TimeoutError:
                    yield _notice(req, f"node {req.node_id} sent nothing for {SILENCE_TIMEOUT:.0f}s after picking "
                                       "up the log request (its posts do not arrive); request ended")
                    return
                if chunk is None:
                    return
                yield chunk
        finally:
            self.close(req.id)


def _notice(req: LogRequest, text: str) -> bytes:
    return (json.dumps({"task_id": req.query.task_ids[0], "stream": "shoal", "time": time.time(),
                        "line": text}) + "\n").encode()
