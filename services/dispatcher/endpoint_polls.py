"""The dispatcher's endpoint tables (docs/networking.md): the loop that recomputes the table after changes of
tasks, services or nodes, and the long poll that sends each node its own. A part of `Dispatcher`
(services/dispatcher/loop.py), which holds the state these methods use."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from shoal import endpoints, netkeys
from shoal.models.kinds import Kind
from shoal.models.objects import Obj
from shoal.store.txn import Change

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from services.dispatcher.core import Session
    from services.dispatcher.nodeindex import NodeIndex
    from services.dispatcher.polls import Look
    from services.dispatcher.settings import DispatcherSettings
    from shoal.metrics import Registry
    from shoal.store.mirror import StoreMirror

log = logging.getLogger("services.dispatcher.loop")

ENDPOINTS_INTERVAL = 0.1  # the endpoint table is recomputed at most this often (SwarmKit batches for 100 ms too)


class EndpointPolls:
    """The endpoint-table methods of `Dispatcher`; the attributes and methods below are the dispatcher's."""

    settings: DispatcherSettings
    metrics: Registry
    mirror: StoreMirror
    index: NodeIndex
    sessions: dict[str, Session]
    _stopped: bool
    _endpoint_rows: list[Obj] | None
    _endpoints_event: asyncio.Event
    _endpoint_nets: dict[str, set[str]] | None
    _endpoints_dirty: asyncio.Event
    _node_tables: dict[tuple[frozenset[str], str | None], Obj]
    #: node id -> (its tasks' generation, re-lists, address), the rows and key ring used, its table
    _node_answers: dict[str, tuple[tuple[int, int, str | None], list[Obj], Obj | None, Obj]]
    _netkeys: Obj | None
    _networked: set[str]

    if TYPE_CHECKING:
        async def _sleep_or_stop(self, seconds: float) -> None: ...
        def session(self, session_id: str, caller: str | None = None) -> Session: ...
        def _require_ready(self) -> None: ...
        async def _long_poll(self, session_id: str, caller: str | None, wait: float, look: Look,
                             idle: Callable[[Session], dict[str, Any]]) -> dict[str, Any]: ...

    def _moves_endpoints(self, c: Change) -> bool:
        """Whether a change may move some node's endpoint table: services and nodes, and tasks attached to a
        network or of a service some node receives (`endpoints.distributed`) — not the tasks of the others
        (issue 13: at thousands of process tasks the table was recomputed, O(tasks), every 100 ms for
        changes that moved nothing)."""
        if c.kind != Kind.TASK:
            return c.kind in (Kind.SERVICE, Kind.NODE, Kind.NETKEYS)
        if c.object.get("networks"):
            return True
        service = self.mirror.get(Kind.SERVICE, str(c.object.get("service_id") or ""))
        return service is not None and endpoints.distributed(service)

    def _index_networked(self, changes: Iterable[Change] | None) -> None:
        """Keep `_networked`, the tasks attached to a network, from each batch (None: the view was listed
        again): the table's per-node networks come from those alone, not from every task (issue 13: a node's
        state change cost a pass over all 100,000 tasks)."""
        if changes is None:
            self._networked = {t["id"] for t in self.mirror.list(Kind.TASK) if t.get("networks")}
            return
        for c in changes:
            if c.kind != Kind.TASK:
                continue
            if c.action != "delete" and c.object.get("networks"):
                self._networked.add(c.id)
            else:
                self._networked.discard(c.id)

    async def _endpoints_loop(self) -> None:
        """Recompute the endpoint table after changes of tasks, services or nodes — at most every
        `ENDPOINTS_INTERVAL` (a burst of changes costs one computation, O(tasks)), and only while sessions may
        poll it — and wake the endpoint long polls only if it really changed: most task changes (NEW → ASSIGNED
        → … → STARTING) move no backend."""
        while not self._stopped:
            await self._endpoints_dirty.wait()
            self._endpoints_dirty.clear()
            started = time.perf_counter()
            try:
                self._refresh_endpoints()
            except Exception:  # a malformed object must not stop the table for everyone
                log.exception("dispatcher: computing the endpoint table failed")
            # a computation costs O(tasks): at most a fifth of the time goes to it however busy the store is
            await self._sleep_or_stop(max(ENDPOINTS_INTERVAL, 4 * (time.perf_counter() - started)))

    def _refresh_endpoints(self) -> None:
        if not self.sessions:
            self._endpoint_rows = None  # computed at the next poll
            self._node_tables.clear()
            return
        rows = self._endpoint_table()
        networked = (t for tid in self._networked if (t := self.mirror.get(Kind.TASK, tid)) is not None)
        nets = endpoints.networks_by_node(networked)  # which services each node is sent
        keys = self.mirror.get(Kind.NETKEYS, netkeys.KEYS_ID)
        if rows == self._endpoint_rows and nets == self._endpoint_nets and keys == self._netkeys:
            return
        self._netkeys = keys
        if rows != self._endpoint_rows:
            self._node_tables.clear()
        self._endpoint_rows, self._endpoint_nets = rows, nets
        ev, self._endpoints_event = self._endpoints_event, asyncio.Event()
        ev.set()

    def _endpoint_table(self) -> list[Obj]:
        self.metrics.inc("dispatcher_endpoint_computations_total", help="endpoint tables computed (O(tasks) each)")
        services = [s for s in self.mirror.list(Kind.SERVICE) if endpoints.distributed(s)]
        return endpoints.table(services, self.mirror.list(Kind.TASK) if services else (), self.mirror.list(Kind.NODE))

    def node_endpoints(self, node_id: str) -> Obj:
        """The endpoint table node `node_id` receives (shoal/endpoints.py), from this dispatcher's view; nodes
        with the same networks and address share one computation."""
        if self._endpoint_rows is None:
            self._endpoint_rows = self._endpoint_table()
            self._node_tables.clear()
        node = self.mirror.get(Kind.NODE, node_id) or {}
        addr = (node.get("status") or {}).get("addr")
        keys = self.mirror.get(Kind.NETKEYS, netkeys.KEYS_ID)
        # the node's answer stands while its tasks, the table, its address and the key ring do (issue 13: each
        # look read all the node's tasks again, O(its tasks) per poll)
        current = (self.index.generation.get(node_id, 0), self.index.relists, addr)
        rows = self._endpoint_rows
        cached = self._node_answers.get(node_id)
        if cached is not None and cached[0] == current and cached[1] is rows and cached[2] is keys:
            return cached[3]
        # only its tasks attached to a network can put the node on one (issue 13: every poll of every node read
        # all its tasks, ~12 % of a dispatcher's time with 100 process tasks a node)
        networked = self._networked
        own = [t for tid in self.index.tasks_of.get(node_id, ()) if tid in networked
               and (t := self.mirror.get(Kind.TASK, tid))]
        key = (frozenset(endpoints.node_networks(node_id, own)), addr)
        table = self._node_tables.get(key)
        if table is None:
            if len(self._node_tables) > 4096:
                self._node_tables.clear()
            table = self._node_tables[key] = endpoints.node_table(self._endpoint_rows, node_id, addr, own)
        encrypted = endpoints.encrypted_networks(node_id, own)
        answer = endpoints.with_keys(table, encrypted, keys) if encrypted else table
        if len(self._node_answers) > 4096:
            self._node_answers.clear()
        self._node_answers[node_id] = (current, rows, keys, answer)
        return answer

    def _endpoint_look(self, sess: Session, version: str) -> tuple[asyncio.Event, dict[str, Any] | None]:
        """The node's endpoint table if its version is not `version`, and the event taken before."""
        ev = self._endpoints_event
        table = self.node_endpoints(sess.node_id)
        if table["version"] == version:
            return ev, None
        self.metrics.inc("dispatcher_endpoint_tables_total", help="endpoint tables sent")
        return ev, table

    async def endpoint_table(self, session_id: str, version: str, wait: float,
                             caller: str | None = None) -> dict[str, Any]:
        """Long poll: the node's endpoint table when its version is not `version`, else (after `wait`)
        `{"version": version, "unchanged": true}`."""
        return await self._long_poll(session_id, caller, wait, lambda sess: self._endpoint_look(sess, version),
                                     lambda sess: {"version": version, "unchanged": True})
