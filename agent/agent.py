"""Agent: one per node. Composes the state directory, the executors, the worker (tasks) and the dispatcher
session; `run()` until `stop()`, then `shutdown()` (which stops task processes unless told not to)."""

from __future__ import annotations

import logging
import random
from typing import Any

import httpx

from agent.executors import build_executors
from agent.node import describe
from agent.session import AgentSession, StatusQueue
from agent.settings import AgentSettings
from agent.state import AgentState
from agent.worker import Worker
from shoal.clock import Clock, SystemClock
from shoal.metrics import Registry

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, settings: AgentSettings, *, clock: Clock | None = None, rng: random.Random | None = None,
                 http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = Registry()
        self.state = AgentState(settings.resolved_state_dir())
        self.executors = build_executors(settings.executors, self.state.log_dir)
        self._node_id = self.state.load_node_id()
        self.queue = StatusQueue()
        self.worker = Worker(self.executors, report=self._report, node_id=lambda: self._node_id or "",
                             state=self.state, clock=self.clock)
        advertised = sorted(set(self.executors) | {e.name for e in self.executors.values()})
        self.description = describe(settings.hostname, advertised)
        self.session = AgentSession(
            settings.dispatchers, self.worker, self.queue, describe=lambda: self.description,
            node_id=lambda: self._node_id, set_node_id=self._set_node_id, addr=settings.addr, http=http,
            rpc_timeout=settings.rpc_timeout, poll_wait=settings.assignments_wait,
            status_interval=settings.status_interval, rng=rng,
        )
        self.metrics.gauge("agent_tasks", lambda: len(self.worker.managers), "tasks this agent drives")
        self.metrics.gauge("agent_connected", lambda: float(self.session.connected.is_set()),
                           "1 while a dispatcher session works")
        self.metrics.gauge("agent_status_pending", lambda: len(self.queue.pending), "status reports not yet sent")

    @property
    def node_id(self) -> str | None:
        return self._node_id

    def _set_node_id(self, node_id: str) -> None:
        if node_id != self._node_id:
            self._node_id = node_id
            self.state.save_node_id(node_id)

    def _report(self, task_id: str, status: dict[str, Any]) -> None:
        self.metrics.inc("agent_status_changes_total", help="task status changes queued for the dispatcher")
        self.queue.put(task_id, status)

    # ---- lifecycle ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        restored = self.worker.restore()
        if restored:
            log.info("agent: resumed %d tasks from %s", restored, self.state.dir)
        await self.session.run()

    def stop(self) -> None:
        self.session.stop()

    async def shutdown(self) -> None:
        """After `run()` returned: stop (or leave) the tasks, save the state, close connections."""
        await self.worker.close(stop_tasks=self.settings.stop_tasks_on_exit, grace=self.settings.exit_grace)
        await self.session.close()

    def ready(self) -> bool:
        return self.session.connected.is_set()

    def status(self) -> dict[str, Any]:
        return {"name": "agent", "instance": self.settings.instance_name(), "node_id": self._node_id,
                "hostname": self.settings.hostname, "dispatcher": self.session.dispatcher,
                "session_id": self.session.session_id, "connected": self.session.connected.is_set(),
                "heartbeat_period": self.session.period, "sessions": self.session.sessions,
                "tasks": len(self.worker.managers), "status_pending": len(self.queue.pending),
                "executors": sorted(self.executors)}
