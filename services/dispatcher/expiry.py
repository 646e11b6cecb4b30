"""The dispatcher's liveness (SwarmKit's heartbeat expiry): heartbeats other dispatchers publish on NATS, and
the pass that marks silent nodes DOWN. A part of `Dispatcher` (services/dispatcher/loop.py), which holds the
state these methods use."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from services.dispatcher import core
from services.dispatcher.core import Liveness, heartbeat_from_message
from shoal.errors import Conflict, NotFound
from shoal.models.kinds import Kind
from shoal.store import txn as t
from shoal.store.client import STORE_FAILURES

if TYPE_CHECKING:
    import asyncio

    from shoal.clock import Clock
    from shoal.metrics import Registry
    from shoal.store.mirror import StoreMirror
    from shoal.store.protocol import Store
    from shoal.store.txn import TxnResult

log = logging.getLogger("services.dispatcher.loop")


class NodeExpiry:
    """The liveness methods of `Dispatcher`; the attributes and methods below are the dispatcher's."""

    clock: Clock
    store: Store
    metrics: Registry
    mirror: StoreMirror
    liveness: Liveness
    session_of: dict[str, str]
    _stopped: bool
    _view_ready: asyncio.Event

    if TYPE_CHECKING:
        def period(self) -> float: ...
        def _bus_trusted(self, now: float) -> bool: ...
        async def _sleep_or_stop(self, seconds: float) -> None: ...
        def _drop_sessions_of(self, node_id: str) -> None: ...
        def _apply_written(self, result: TxnResult) -> None: ...

    async def _on_heartbeat_message(self, data: dict[str, Any]) -> None:
        # validated at the edge (issue 16): a time that is not finite or not near now, or a node nobody knows
        # (liveness is keyed by node id: remote input must not grow it), is dropped and counted
        beat = heartbeat_from_message(data, self.clock.now())
        if isinstance(beat, tuple) and self.mirror.get(Kind.NODE, beat[0]) is None:
            beat = "unknown node"
        if isinstance(beat, str):
            self.metrics.inc("dispatcher_heartbeat_messages_dropped_total",
                             help="NODE_HEARTBEAT messages dropped as impossible (bad time, unknown node)")
            log.debug("dispatcher: heartbeat message dropped (%s)", beat)
            return
        self.liveness.beat(*beat)

    async def _expire_loop(self) -> None:
        while not self._stopped:
            period = self.period()
            await self._sleep_or_stop(min(max(period / 4, 0.02), 1.0))
            if not self._view_ready.is_set() or self._stopped:
                continue
            try:
                await self.expire_nodes()
            except STORE_FAILURES as e:
                log.warning("dispatcher: heartbeat expiry pass failed: %s", e)

    async def expire_nodes(self) -> list[str]:
        """Mark DOWN every READY node silent for 3 periods (6 after this dispatcher started). Each write
        expects the version seen, so a node that re-registered meanwhile is left alone."""
        now = self.clock.now()
        period = self.period()
        served = set(self.session_of)
        # Sessions that went silent end here whatever the node's state (another dispatcher may have marked
        # it DOWN first): the agent, if alive, registers again.
        for node_id in served:
            if now - self.liveness.last_seen.get(node_id, now) >= core.HEARTBEAT_GRACE * period:
                self._drop_sessions_of(node_id)
        marked = []
        expired = self.liveness.expired(self.mirror.list(Kind.NODE), now, period)
        if not self._bus_trusted(now):
            # Without the bus we cannot hear the heartbeats other dispatchers receive: judge only the nodes
            # whose sessions are here, or a healthy node served elsewhere would flap DOWN and READY.
            expired = [n for n in expired if n["id"] in served]
        for node in expired:
            try:
                result = await self.store.txn([t.update(Kind.NODE, core.down_node(node, now))])
            except (Conflict, NotFound):
                continue  # changed under us: judged again on the next pass from a fresher view
            self._apply_written(result)
            self._drop_sessions_of(node["id"])
            marked.append(node["id"])
            self.metrics.inc("dispatcher_nodes_down_total", help="nodes marked DOWN on heartbeat failure")
            log.warning("dispatcher: node %s (%s) missed its heartbeats; marked DOWN", node["id"],
                        node.get("description", {}).get("hostname"))
        return marked
