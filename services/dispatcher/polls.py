"""The dispatcher's long polls of a session (docs/agent-protocol.md): the assignment stream, and the session
poll that carries whatever is new of the assignments, the endpoint table and log requests in one answer — one
request in flight per node instead of three (issue 13: at 1,000 nodes the three polls were 5 connections per
node and most of the hollow agents' client CPU). A part of `Dispatcher` (services/dispatcher/loop.py), which
holds the state these methods use; every part is looked at by the same function its own route uses, so the
semantics are the same on both paths."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from shoal.errors import NotFound, Unavailable
from shoal.metrics import LAG_BUCKETS

if TYPE_CHECKING:
    from services.dispatcher.core import Session
    from services.dispatcher.logs import LogBroker
    from services.dispatcher.nodeindex import NodeIndex
    from services.dispatcher.settings import DispatcherSettings
    from shoal.metrics import Registry
    from shoal.models.objects import Obj
    from shoal.store.mirror import StoreMirror

CATCH_UP_TIMEOUT = 5.0

#: what a look waits on before it looks again: the event of its part, or those of several parts
Wake = asyncio.Event | Sequence[asyncio.Event]
Look = Callable[["Session"], tuple[Wake, "dict[str, Any] | None"]]


class SessionPolls:
    """The long-poll methods of `Dispatcher`; the attributes and methods below are the dispatcher's."""

    settings: DispatcherSettings
    metrics: Registry
    mirror: StoreMirror
    index: NodeIndex
    logs: LogBroker
    sessions: dict[str, Session]
    _stopped: bool

    if TYPE_CHECKING:
        def session(self, session_id: str, caller: str | None = None) -> Session: ...
        def _require_ready(self) -> None: ...
        def node_tasks(self, node_id: str) -> dict[str, Obj]: ...
        def _endpoint_look(self, sess: Session, version: str) -> tuple[asyncio.Event, dict[str, Any] | None]: ...

    def _assignment_look(self, sess: Session, after: int) -> tuple[asyncio.Event, dict[str, Any] | None]:
        """The session's next assignment message after `after`, if there is one, and the event taken before."""
        node_id, index = sess.node_id, self.index
        ev = index.event(node_id)
        changed_at = index.changed_at.pop(node_id, None)
        changed = index.take_changes(node_id)
        relisted = sess.relists_seen != index.relists
        payloads_stale = sess.payloads_seen != index.payload_changes
        sess.relists_seen, sess.payloads_seen = index.relists, index.payload_changes
        if sess.stream.continues(after) and not relisted:
            # only the tasks that changed since the last message (issue 13): O(change), not O(node's set)
            msg = sess.stream.next_delta(after, {tid: index.task_for(node_id, tid) for tid in changed},
                                         lambda: index.dependencies(index.tasks(node_id).values()),
                                         payloads_stale)
        else:
            tasks = self.node_tasks(node_id)
            msg = sess.stream.next_message(after, tasks, index.dependencies(tasks.values()))
        if msg is not None:
            sess.pacer.sent(asyncio.get_running_loop().time())
            self.metrics.inc("dispatcher_assignment_messages_total", help="assignment messages sent")
            if changed_at is not None:
                self.metrics.observe("dispatcher_assignment_lag_seconds", time.perf_counter() - changed_at,
                                     "a task change for a node in this dispatcher's view, to the assignment "
                                     "message that carries it (batching delay included)", buckets=LAG_BUCKETS)
        return ev, msg

    async def assignments(self, session_id: str, after: int, wait: float,
                          caller: str | None = None) -> dict[str, Any]:
        """Long poll: the next message of the session's stream, or an empty incremental after `wait`."""
        return await self._long_poll(session_id, caller, wait, lambda sess: self._assignment_look(sess, after),
                                     lambda sess: sess.stream.empty(after))

    async def session_poll(self, session_id: str, after: int, version: str | None, wait: float,
                           caller: str | None = None) -> dict[str, Any]:
        """Long poll of everything a session receives: `{"assignments": the next message after `after`,
        "endpoints": the node's table when its version is not `version`, "logs": {"requests": [...]}}`, each
        part present only when it has news, as soon as one has; `{}` after `wait`. `version` None: the agent
        takes no endpoint table. Log requests are handed out once, as on their own poll."""
        def look(sess: Session) -> tuple[Wake, dict[str, Any] | None]:
            answer: dict[str, Any] = {}
            a_ev, msg = self._assignment_look(sess, after)
            if msg is not None:
                answer["assignments"] = msg
            l_ev, reqs = self.logs.look(sess.node_id)
            if reqs:
                answer["logs"] = {"requests": reqs}
            events = [a_ev, l_ev]
            if version is not None:
                e_ev, table = self._endpoint_look(sess, version)
                if table is not None:
                    answer["endpoints"] = table
                events.append(e_ev)
            return events, answer or None

        return await self._long_poll(session_id, caller, wait, look, lambda sess: {})

    async def _long_poll(self, session_id: str, caller: str | None, wait: float, look: Look,
                         idle: Callable[[Session], dict[str, Any]]) -> dict[str, Any]:
        """The shape of the agent's long polls: once the view holds the session's registration, `look` at the
        session's answer until there is one (`look` returns it with the event(s) that fire on the next change,
        taken before it looked) or `wait` (capped at assignment_max_wait) runs out: then `idle`. The session
        must stay current and the dispatcher ready throughout. After a change, linger as the session's pacer
        says (shoal/pacing.py: at once after a quiet spell, else until `assignment_batch_delay` after the last
        assignment message), so a burst of commits goes out as one message."""
        sess = self.session(session_id, caller)
        self._require_ready()
        await self._catch_up(sess.min_revision)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(wait, 0.0), self.settings.assignment_max_wait)
        while True:
            if self.sessions.get(session_id) is not sess:
                raise NotFound(f"dispatcher: session {session_id!r} was replaced or expired; register again")
            self._require_ready()
            wake, answer = look(sess)
            if answer is not None:
                return answer
            remaining = deadline - loop.time()
            if remaining <= 0:
                return idle(sess)
            try:
                await wait_any(wake, remaining)
            except TimeoutError:
                continue
            # SwarmKit batches assignment changes (100 ms after the last one). Here the batching is paced
            # (shoal/pacing.py): a change after a quiet spell goes out at once; within `assignment_batch_delay`
            # of the session's last message, linger until then so a burst of commits goes out as one message.
            delay = min(sess.pacer.delay(loop.time()), max(0.0, deadline - loop.time()))
            if delay > 0:
                await asyncio.sleep(delay)

    async def _catch_up(self, revision: int) -> None:
        """Wait until the view includes the registration's revision. Everything the agent learnt from an
        earlier dispatcher was committed before it registered here, so a COMPLETE set taken from this view
        never lacks a task the agent runs (which it would then stop)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CATCH_UP_TIMEOUT
        while self.mirror.revision < revision:
            if loop.time() > deadline or self._stopped:
                raise Unavailable(f"dispatcher: store view is behind revision {revision}; retry shortly")
            self.mirror.wake()
            await asyncio.sleep(0.01)


async def wait_any(wake: Wake, timeout: float) -> None:
    """Until one of the events is set; TimeoutError after `timeout`."""
    if isinstance(wake, asyncio.Event):
        await asyncio.wait_for(wake.wait(), timeout)
        return
    if any(ev.is_set() for ev in wake):
        return
    waiters = [asyncio.ensure_future(ev.wait()) for ev in wake]
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    if not done:
        raise TimeoutError
