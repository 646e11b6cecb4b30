"""Agent: one per node. Composes the state directory, the executors, the worker (tasks) and the dispatcher
session; `run()` until `stop()`, then `shutdown()` (which stops task processes unless told not to)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

import httpx

from agent import logs as task_logs
from agent.executors import build_executors
from agent.executors.base import distinct
from agent.mesh import Mesh
from agent.node import describe
from agent.overlay import Overlay
from agent.payloads import TaskFiles, default_base
from agent.session import AgentSession, StatusQueue
from agent.settings import AgentSettings
from agent.state import AgentState
from agent.worker import Worker
from shoal import meshrules, pki, transport
from shoal.clock import Clock, SystemClock
from shoal.enroll import Renewer
from shoal.metrics import Registry
from shoal.transport import Credentials
from shoal.workloads import Owner

log = logging.getLogger(__name__)

PROBE_WAIT = 3.0  # seconds the first registration waits for executors' runtimes to answer


class Agent:
    def __init__(self, settings: AgentSettings, *, clock: Clock | None = None, rng: random.Random | None = None,
                 http: httpx.AsyncClient | None = None, creds: Credentials | None = None) -> None:
        """`creds`: the node's certificate — its node id, the client certificate every dispatcher call
        presents, renewed before expiry through `SHOAL_CA_URLS`. None only in-process in tests."""
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = Registry()
        self.creds = creds
        self.state = AgentState(settings.resolved_state_dir())
        cluster = creds.identity.cluster_id if creds else settings.cluster_id
        # routing mesh, service discovery; its path (kernel or userspace) is chosen by `python -m agent`
        self.mesh = Mesh(self.state.dir, default_addr=settings.addr,
                         node_tag=meshrules.tag(cluster, settings.hostname))
        #: containers on overlay networks (kernel path), with the docker executor unless SHOAL_OVERLAY=false
        self.overlay = Overlay(self.state.dir, node_id=lambda: self._node_id or "", addr=settings.addr,
                               esp_userspace=settings.esp_userspace) \
            if settings.overlay and "docker" in settings.executors else None
        self.executors = build_executors(settings.executors, self.state.log_dir,
                                         owner=Owner(creds.identity.cluster_id if creds else settings.cluster_id,
                                                     settings.hostname),
                                         docker_host=settings.docker_host, publish_ip=settings.docker_publish_ip,
                                         cgroup_root=settings.cgroup_root, node_addr=settings.addr or "",
                                         task_env=self.mesh.task_env(), overlay=self.overlay)
        self._node_id = self.state.load_node_id()
        self.renewer: Renewer | None = None
        self.left = False
        self._closing: set[asyncio.Task[None]] = set()  # old HTTP clients being closed (kept referenced)
        #: called once the node has left the cluster (the process entry point ends the process)
        self.on_leave: Callable[[], None] | None = None
        if creds is not None:
            self._set_node_id(creds.identity.node_id)  # the certificate names the node, nothing else
            http = http or transport.session_client(creds, timeout=settings.rpc_timeout,
                                                keepalive_expiry=transport.SESSION_KEEPALIVE_EXPIRY)
            if settings.ca_urls:
                self.renewer = Renewer(creds, settings.ca_urls, hosts=settings.cert_hosts(), clock=self.clock,
                                       rng=rng)
                self.renewer.manager_components = {c: creds.dir / c for c in settings.manager_components}
                self.renewer.on_role_change = self._role_changed
        self.queue = StatusQueue()
        files_dir = settings.task_files_dir or default_base(settings.resolved_state_dir(), settings.hostname)
        self.worker = Worker(self.executors, report=self._report, node_id=lambda: self._node_id or "",
                             state=self.state, clock=self.clock,
                             task_files=TaskFiles(files_dir, settings.task_files_host_dir))
        # Executors that must find their runtime first (`probe`: the docker engine) are advertised once it
        # answers; their tasks still get controllers meanwhile (a restored container task keeps being driven).
        self._unprobed = {e.name for e in distinct(self.executors.values()) if e.probes}
        self.description = describe(settings.hostname, self.advertised())
        self._prober: asyncio.Task[None] | None = None
        self.session = AgentSession(
            settings.dispatchers, self.worker, self.queue, describe=lambda: self.description,
            node_id=lambda: self._node_id, set_node_id=self._set_node_id, addr=settings.addr, http=http,
            rpc_timeout=settings.rpc_timeout, poll_wait=settings.assignments_wait,
            status_interval=settings.status_interval, rng=rng,
        )
        self.session.on_endpoints = self._endpoints
        if self.renewer is not None:
            self.session.on_role = self._desired_role
            self.session.on_roots = self.renewer.hint_roots
        self.metrics.gauge("agent_tasks", lambda: len(self.worker.managers), "tasks this agent drives")
        self.metrics.gauge("agent_connected", lambda: float(self.session.connected.is_set()),
                           "1 while a dispatcher session works")
        self.metrics.gauge("agent_status_pending", lambda: len(self.queue.pending), "status reports not yet sent")

    @property
    def node_id(self) -> str | None:
        return self._node_id

    def advertised(self) -> list[str]:
        """The runtimes (and executor names) this node offers: those of executors whose runtime answers."""
        ready = {rt: e for rt, e in self.executors.items() if e.name not in self._unprobed}
        return sorted(set(ready) | {e.name for e in ready.values()})

    async def probe_executors(self, *, interval: float = 5.0) -> None:
        """Probe executors with a runtime of their own (the docker engine) until each answers; every newly
        available one updates the node description and registers the node again."""
        warned: set[str] = set()
        while self._unprobed:
            for executor in distinct(self.executors.values()):
                if executor.name not in self._unprobed or not executor.probes:
                    continue
                if await executor.probe():
                    self._unprobed.discard(executor.name)
                    self.description = describe(self.settings.hostname, self.advertised())
                    log.info("agent: %s executor available; node offers %s", executor.name,
                             ", ".join(self.description["executors"]))
                    self.session.renew()
                elif executor.name not in warned:
                    warned.add(executor.name)
                    log.warning("agent: %s executor: its runtime does not answer (retrying every %gs); not "
                                "advertising %s", executor.name, interval, ", ".join(executor.runtimes))
            if self._unprobed:
                await asyncio.sleep(interval)

    def _desired_role(self, name: str) -> None:
        """The dispatcher's heartbeat answer says which role the node should have (`shoal node promote|demote`);
        the renewer renews at once when the certificate says otherwise."""
        role = {"worker": pki.WORKER, "manager": pki.MANAGER}.get(name)
        if role is not None and self.renewer is not None:
            if role != self.renewer.creds.identity.role and self.renewer.desired != role:
                log.info("agent: the node is to become a %s; renewing its certificate now", name)
            self.renewer.desire(role)

    def _role_changed(self, role: str) -> None:
        """The certificate now carries the new role: register again, so the dispatcher records it — over new
        connections (a pooled one still carries the old certificate, and the dispatcher reads the role from
        the connection's)."""
        log.info("agent: the node's certificate now says %s; registering again", role)
        if self.creds is not None:
            old = self.session.http
            self.session.http = transport.session_client(self.creds, timeout=self.settings.rpc_timeout,
                                                     keepalive_expiry=transport.SESSION_KEEPALIVE_EXPIRY)
            closing = asyncio.get_running_loop().create_task(old.aclose())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        self.session.renew()

    def _set_node_id(self, node_id: str) -> None:
        if node_id != self._node_id:
            self._node_id = node_id
            self.state.save_node_id(node_id)

    async def _endpoints(self, table: dict[str, Any]) -> None:
        """A new endpoint table: the routing mesh, then the overlay (its errors are logged, never raised)."""
        keys: dict[str, Any] = {k: table.pop(k) for k in ("network_keys", "encrypted_networks") if k in table}
        await self.mesh.apply(table)  # saved to disk: without the network keys (held in memory only)
        if self.overlay is not None:
            await self.overlay.apply({**table, **keys})

    def _report(self, task_id: str, status: dict[str, Any]) -> None:
        self.metrics.inc("agent_status_changes_total", help="task status changes queued for the dispatcher")
        self.queue.put(task_id, status)

    # ---- lifecycle ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        await self.mesh.restore()  # the routing mesh listens again before a dispatcher answers
        self.session.endpoints_version = self.mesh.version
        if self.overlay is not None:
            self.overlay.table = self.mesh.table
            await self.overlay.check()  # says loudly what the kernel path lacks (then: the default bridge)
        restored = self.worker.restore()
        if restored:
            log.info("agent: resumed %d tasks from %s", restored, self.state.dir)
        if self._unprobed:
            # The first answer (normally at once) goes into the first registration; a runtime that is late
            # re-registers the node when it shows up.
            self._prober = asyncio.create_task(self.probe_executors(), name="agent.probe")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._prober), PROBE_WAIT)
        renewing = asyncio.create_task(self.renewer.run(), name="agent.renew") if self.renewer else None
        try:
            async with asyncio.TaskGroup() as tg:
                reconciler = tg.create_task(self.reconcile_periodically(), name="agent.reconcile")
                try:
                    await self.session.run()
                finally:
                    reconciler.cancel()
            if self.session.removed is not None:
                await self.leave()
        finally:
            if renewing is not None:
                renewing.cancel()
                with contextlib.suppress(BaseException):
                    await renewing
            if self._prober is not None:
                self._prober.cancel()
                with contextlib.suppress(BaseException):
                    await self._prober

    async def reconcile_periodically(self) -> None:
        """Every `SHOAL_RECONCILE_INTERVAL`, while a session works (its complete set received and kept current
        by incremental changes), have the executors stop what runs on the node that the assignments do not
        want (SwarmKit's worker reconciles on every assignment set; this also catches what escaped one)."""
        while True:
            await asyncio.sleep(self.settings.reconcile_interval)
            task_logs.rotate(self.state.log_dir)  # process tasks' log files stay bounded (agent/logs.py)
            if self.session.connected.is_set():
                self.worker.reconcile()

    async def leave(self) -> None:
        """The cluster removed this node (SwarmKit's node leaving on `docker node rm --force`): stop every task,
        forget the node's identity and state, and end the process. Restarted with a join token (a local
        cluster's supervisor does), the agent joins again as a new node; without one it says how to."""
        log.warning("agent: this node was removed from the cluster: stopping its tasks and forgetting its identity")
        await self.worker.close(stop_tasks=True, grace=self.settings.exit_grace)
        self.state.forget()  # (workloads it no longer knew: the next agent of this host sweeps earlier node ids)
        if self.creds is not None:
            for f in (self.creds.cert_file, self.creds.key_file, self.creds.root_file):
                f.unlink(missing_ok=True)
        self.left = True
        if self.on_leave is not None:
            self.on_leave()  # `python -m agent`: a graceful exit of the process (restarted, it joins anew)

    def stop(self) -> None:
        self.session.stop()

    async def shutdown(self) -> None:
        """After `run()` returned: stop (or leave) the tasks, save the state, close connections."""
        if not self.left:  # a node that left has stopped its tasks and must not save them again
            await self.worker.close(stop_tasks=self.settings.stop_tasks_on_exit, grace=self.settings.exit_grace)
        await self.session.close()
        await self.mesh.close()
        if self.overlay is not None:
            await self.overlay.close()
        for executor in distinct(self.executors.values()):
            await executor.close()

    def ready(self) -> bool:
        return self.session.connected.is_set()

    def status(self) -> dict[str, Any]:
        return {"name": "agent", "instance": self.settings.instance_name(), "node_id": self._node_id,
                "hostname": self.settings.hostname, "dispatcher": self.session.dispatcher,
                "session_id": self.session.session_id, "connected": self.session.connected.is_set(),
                "heartbeat_period": self.session.period, "sessions": self.session.sessions,
                "tasks": len(self.worker.managers), "status_pending": len(self.queue.pending),
                "executors": sorted(self.executors), "advertised": self.description["executors"],
                "mesh": self.mesh.status(),
                "overlay": None if self.overlay is None else self.overlay.status(),
                "certificate": None if self.creds is None else {
                    "role": self.creds.identity.role, "not_after": self.creds.identity.not_after,
                    "renewals": self.renewer.renewals if self.renewer else 0}}
