"""The dispatcher's liveness (SwarmKit's heartbeat expiry): heartbeats other dispatchers publish on NATS, and
the pass that marks silent nodes DOWN. A part of `Dispatcher` (services/dispatcher/loop.py), which holds the
state these methods use."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from services.dispatcher import core
from services.dispatcher.beats import beats_from_message
from services.dispatcher.core import Disruption, Liveness, Stalls
from services.dispatcher.nodewrites import Busy, MarkDown, NodeWriter
from shoal.models.kinds import Kind
from shoal.store.client import STORE_FAILURES

if TYPE_CHECKING:
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
    stalls: Stalls
    node_writer: NodeWriter
    session_of: dict[str, str]
    _stopped: bool
    _view_ready: asyncio.Event
    _disruption: Disruption | None = None

    @property
    def disruption(self) -> Disruption:
        """Mass-expiry damping (core.Disruption), made on first use."""
        if self._disruption is None:
            self._disruption = Disruption()
        return self._disruption

    if TYPE_CHECKING:
        def period(self) -> float: ...
        def _bus_trusted(self, now: float) -> bool: ...
        async def _sleep_or_stop(self, seconds: float) -> None: ...
        def _drop_sessions_of(self, node_id: str) -> None: ...
        def _apply_written(self, result: TxnResult) -> None: ...

    async def _on_heartbeat_message(self, data: dict[str, Any]) -> None:
        # validated at the edge (issue 16): a time that is not finite or not near now, or a node nobody knows
        # (liveness is keyed by node id: remote input must not grow it), is dropped and counted; a message
        # carries one beat or a batch of them (services/dispatcher/beats.py)
        heard, dropped = beats_from_message(data, self.clock.now())
        for node_id, at in heard:
            if self.mirror.get(Kind.NODE, node_id) is None:
                dropped.append("unknown node")
            else:
                self.liveness.beat(node_id, at, here=False)
        if dropped:
            self.metrics.inc("dispatcher_heartbeat_messages_dropped_total", len(dropped),
                             help="heartbeats from NODE_HEARTBEAT messages dropped as impossible (bad time, "
                             "unknown node)")
            log.debug("dispatcher: %d heartbeats of a message dropped (%s)", len(dropped), dropped[0])

    async def _expire_loop(self) -> None:
        while not self._stopped:
            period = self.period()
            interval = min(max(period / 4, 0.02), 1.0)
            loop = asyncio.get_running_loop()
            before = loop.time()
            await self._sleep_or_stop(interval)
            woke = loop.time()
            self.stalls.note(woke, woke - before - interval)
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
        allowance = self.stalls.allowance(asyncio.get_running_loop().time(), core.HEARTBEAT_GRACE * period)
        nodes = self.mirror.list(Kind.NODE)
        expired = self.liveness.expired(nodes, now, period, allowance)
        trusted = self._bus_trusted(now)
        if not trusted:
            # Without the bus we cannot hear the heartbeats other dispatchers receive: judge only the nodes
            # whose sessions are here, or a healthy node served elsewhere would flap DOWN and READY.
            expired = [n for n in expired if n["id"] in served]
        ready = sum(1 for n in nodes if core.node_state(n) == core.NodeState.READY and (trusted or n["id"] in served))
        was_disrupted = self.disruption.active
        silent = len(expired)
        expired = self.disruption.limit(expired, ready, now, period,
                                        deadline=lambda n: self.liveness.deadline(n, period),
                                        marked=core.down_marks(nodes))
        if self.disruption.active and not was_disrupted:
            self.metrics.inc("dispatcher_disruptions_total", help="mass silences: more than a fifth of the nodes "
                             "silent within a grace window (DOWN marks then go out at 2 % of the nodes a period)")
            log.warning("dispatcher: %d of %d READY nodes are silent (%d more marked DOWN within the grace): marking "
                        "them DOWN at most %.0f %% a period, keeping their sessions", silent, ready,
                        len(self.disruption.marks), 100 * self.disruption.rate)
        elif was_disrupted and not self.disruption.active:
            log.warning("dispatcher: the mass silence is over (%d of %d READY nodes silent)", silent, ready)
        if not self.disruption.active:
            # Sessions that went silent end here whatever the node's state (another dispatcher may have marked
            # it DOWN first): the agent, if alive, registers again. In a disruption they are kept: an agent
            # whose heartbeat is only late carries on without registering again.
            for node_id in served:
                if now - self.liveness.last_seen.get(node_id, now) >= core.HEARTBEAT_GRACE * period:
                    self._drop_sessions_of(node_id)
        marked = []
        futures: list[asyncio.Future[Any]] = []
        for node in expired:
            try:
                futures.append(self.node_writer.submit(MarkDown(node["id"], node["meta"]["version"], now)))
            except Busy:
                break  # the rest are judged again on the next pass
        if futures and not self.node_writer.running:
            await self.node_writer.flush()
        for node, res in zip(expired, await asyncio.gather(*futures, return_exceptions=True), strict=False):
            if isinstance(res, BaseException):
                if not isinstance(res, STORE_FAILURES):
                    raise res
                log.warning("dispatcher: could not mark node %s DOWN: %s", node["id"], res)
                continue
            if not res[0].written:
                continue  # changed under us: judged again on the next pass from a fresher view
            self._drop_sessions_of(node["id"])
            marked.append(node["id"])
            self.metrics.inc("dispatcher_nodes_down_total", help="nodes marked DOWN on heartbeat failure")
            log.warning("dispatcher: node %s (%s) missed its heartbeats; marked DOWN", node["id"],
                        node.get("description", {}).get("hostname"))
        return marked
