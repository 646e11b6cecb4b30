"""Worker: turns assignment messages into one TaskManager per task (SwarmKit's agent/worker.go).

An assignment set holds tasks, and the secrets and configs those tasks reference (SwarmKit's assignment kinds).
A COMPLETE set replaces everything: tasks absent from it are shut down and forgotten (the cluster no longer
wants them — e.g. they were rescheduled while this node was cut off). An INCREMENTAL message applies its
updates and removals, each of one kind (`{"action", "task" | "secret" | "config": object}`). Secrets and
configs are kept in memory only (agent/payloads.py) and written, per task, to its own directory before its
controller is made; the directory goes when the task ends or is forgotten.

The agent's own status of a task is authoritative (it is the one running it); when the
copy from the dispatcher shows an older state, the agent's status is reported again, which heals reports lost
with a dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from agent.executors.attachment import AttachmentExecutor
from agent.executors.base import Executor, ExecutorError, distinct
from agent.payloads import KINDS, PayloadError, Payloads, TaskFiles
from agent.state import AgentState
from agent.task import TaskManager
from shoal import wire
from shoal.clock import Clock, SystemClock
from shoal.models.objects import Obj, runtime_of, task_name
from shoal.models.states import TaskState

log = logging.getLogger(__name__)

Report = Callable[[str, dict[str, Any]], None]
SAVE_DELAY_PER_TASK = 0.0002  # seconds a save waits longer for each task of the node (1,000 tasks: +0.2 s)
SAVE_DELAY_MAX = 1.0
SHARED_SPECS = 256  # service versions whose task spec the worker's tasks share (the oldest is dropped)


class Worker:
    def __init__(self, executors: Mapping[str, Executor], *, report: Report, node_id: Callable[[], str],
                 state: AgentState | None = None, clock: Clock | None = None, save_delay: float = 0.05,
                 task_files: TaskFiles | None = None) -> None:
        # network attachment tasks hold an address and run nothing: every node serves them
        self.executors: Mapping[str, Executor] = {AttachmentExecutor.name: AttachmentExecutor(), **executors}
        self.report = report
        self.node_id = node_id
        self.state = state
        self.clock = clock or SystemClock()
        self.save_delay = save_delay
        self.managers: dict[str, TaskManager] = {}
        self.payloads = Payloads()
        self.task_files = task_files
        self._forgetting: set[asyncio.Task[None]] = set()
        self._forgetting_ids: set[str] = set()
        self._sweeping: set[str] = set()
        self._complete = False  # a COMPLETE set was applied: from then on `managers` is what the node runs
        self._save_handle: asyncio.TimerHandle | None = None
        self._saving: asyncio.Task[None] | None = None  # the background write of the task state in flight
        #: (service id, spec version) -> (spec, endpoint spec) shared by its tasks (`_shared`)
        self._specs: dict[tuple[Any, Any], tuple[Any, Any]] = {}
        #: task id -> (task, status, saved, encoded record) of the last save (`_records_text`)
        self._encoded: dict[str, tuple[Obj, dict[str, Any], dict[str, Any], bytes]] = {}
        self._save_again = False  # a save was asked for while one was in flight

    # ---- assignments -------------------------------------------------------------------------------------
    def apply_complete(self, tasks: Iterable[Obj], secrets: Iterable[Obj] = (), configs: Iterable[Obj] = ()) -> None:
        self.payloads.replace("secret", secrets)
        self.payloads.replace("config", configs)
        wanted = {t["id"]: t for t in tasks}
        self._complete = True
        for tid in list(self.managers):
            if tid not in wanted:
                self._forget(tid)
        for task in wanted.values():
            self._upsert(task)
        self._save_soon()
        self.reconcile()

    def reconcile(self) -> None:
        """Executors that can list their workloads on the node (`sweep`: the marked processes of the process
        executor, the labelled containers of the docker one) stop those of tasks this node does not run —
        started just before an agent crash and missing from its saved state, deleted while the agent was down,
        or left by an earlier node id of this host. Call only while the assignments are complete: after a
        COMPLETE set of a live session. Until then a restarted agent adopts (its controllers find their
        workloads by the same marks) and stops nothing."""
        node_id = self.node_id()
        if not self._complete:
            return  # restored from the saved state only: it may lack tasks started just before a crash
        if self.task_files is not None:
            self.task_files.sweep(self.managers.keys() | self._forgetting_ids)
        for executor in distinct(self.executors.values()):
            if not executor.sweeps or not node_id or executor.name in self._sweeping:
                continue
            self._sweeping.add(executor.name)
            bg = asyncio.create_task(self._run_sweep(executor.name, executor.sweep, node_id), name="sweep")
            self._forgetting.add(bg)
            bg.add_done_callback(self._forgetting.discard)

    def apply_incremental(self, changes: Iterable[Mapping[str, Any]]) -> None:
        for change in changes:
            kind = next((k for k in KINDS if k in change), None)
            if kind is not None:  # the dispatcher sends a task's secrets before it, removes them after it
                if change["action"] == "remove":
                    self.payloads.remove(kind, change[kind]["id"])
                else:
                    self.payloads.update(kind, change[kind])
                continue
            task = change["task"]
            if change["action"] == "remove":
                self._forget(task["id"])
            else:
                self._upsert(task)
        self._save_soon()

    def _shared(self, task: Obj) -> Obj:
        """`task` with its `spec` and `endpoint_spec` the very objects of the other tasks of its service
        version when they are equal (every replica's spec is a copy of the service's): each decoded copy is
        about half a task's memory (issue 13). Objects are never changed in place, so sharing is safe; a
        spec that differs is simply not shared."""
        key = (task.get("service_id"), task.get("spec_version"))
        spec, endpoint = task.get("spec"), task.get("endpoint_spec")
        cached = self._specs.get(key)
        if cached is None or cached[0] != spec:
            if len(self._specs) >= SHARED_SPECS:
                del self._specs[next(iter(self._specs))]  # the oldest
            self._specs[key] = (spec, endpoint)
            return task
        if cached[0] is spec and cached[1] is endpoint:
            return task
        out = {**task, "spec": cached[0]}
        if endpoint is not cached[1] and endpoint == cached[1]:
            out["endpoint_spec"] = cached[1]
        return out

    def _upsert(self, task: Obj) -> None:
        task = self._shared(task)
        mgr = self.managers.get(task["id"])
        if mgr is None:
            self._start(task, dict(task["status"]), None)
            return
        mgr.update(task)
        remote = task.get("status", {}).get("state")
        if remote is None or mgr.state > TaskState(remote):
            self.report(mgr.id, mgr.status)  # the cluster has not seen our latest status: say it again

    def _start(self, task: Obj, status: dict[str, Any], saved: Mapping[str, Any] | None) -> TaskManager:
        controller, reject = None, None
        runtime = runtime_of(task)
        executor = self.executors.get(runtime)
        if executor is None:
            reject = f"agent: no executor for runtime {runtime!r} on this node (has: {sorted(self.executors)})"
        else:
            try:
                controller = executor.controller(self._with_files(task, runtime, saved), node_id=self.node_id(),
                                                 saved=saved)
            except (ExecutorError, PayloadError) as e:
                reject = str(e)
        mgr = TaskManager(task, status, controller, on_status=self._on_status, clock=self.clock, reject=reject)
        self.managers[mgr.id] = mgr
        mgr.start()
        return mgr

    def _with_files(self, task: Obj, runtime: str, saved: Mapping[str, Any] | None) -> Obj:
        """The task its controller gets: with `files` (paths, never data) when it references secrets or configs,
        written now — or, for a workload found again after an agent restart (`saved`), as written then (the
        payloads are not kept across agent restarts; the files are, on tmpfs, while the task runs)."""
        if not any((task.get("spec") or {}).get(f) for f in ("secrets", "configs")):
            return task
        if self.task_files is None:
            raise PayloadError("agent: this agent has no directory for task secrets and configs")
        if saved:
            return {**task, "files": self.task_files.layout(task, runtime)}
        return {**task, "files": self.task_files.write(task, self.payloads, runtime)}

    async def _run_sweep(self, name: str, sweep: Callable[..., Awaitable[Any]], node_id: str) -> None:
        try:
            await sweep(node_id, lambda tid: tid in self.managers or tid in self._forgetting_ids)
        except Exception as e:
            log.warning("agent: sweeping the workloads of unassigned tasks failed: %s", e)
        finally:
            self._sweeping.discard(name)

    def _forget(self, task_id: str) -> None:
        mgr = self.managers.pop(task_id, None)
        if mgr is None:
            return
        log.info("agent: task %s is no longer assigned here; stopping and forgetting it", task_id)

        self._forgetting_ids.add(task_id)  # a sweep must not race the graceful stop

        async def stop_and_remove() -> None:
            try:
                await mgr.close(stop=True)
                await mgr.remove()
            except Exception:
                log.exception("agent: removing task %s failed", task_id)
            finally:
                if self.task_files is not None:
                    self.task_files.remove(task_id)
                self._forgetting_ids.discard(task_id)

        bg = asyncio.create_task(stop_and_remove(), name=f"forget.{task_id}")
        self._forgetting.add(bg)
        bg.add_done_callback(self._forgetting.discard)

    def _on_status(self, mgr: TaskManager, report: bool) -> None:
        if mgr.state > TaskState.RUNNING and self.task_files is not None:
            self.task_files.remove(mgr.id)  # the task ended: its secrets and configs go at once
        self._save_soon()
        if report and self.managers.get(mgr.id) is mgr:
            self.report(mgr.id, mgr.status)

    # ---- persistence -------------------------------------------------------------------------------------
    def restore(self) -> int:
        """Start managers for the tasks a previous agent process knew; their controllers find the workloads
        again. Runs before any dispatcher is reachable, so tasks keep being driven meanwhile."""
        if self.state is None:
            return 0
        for tid, rec in self.state.load_tasks().items():
            try:
                self._start(self._shared(rec["task"]), rec["status"], rec.get("saved"))
            except (KeyError, TypeError, ValueError) as e:
                log.warning("agent: skipping unreadable saved task %s: %s", tid, e)
        return len(self.managers)

    def save_interval(self) -> float:
        """How long the changes gather before a save: `save_delay`, plus `SAVE_DELAY_PER_TASK` a task (capped
        at `SAVE_DELAY_MAX`). A save writes every task, so at a steady stream of changes this keeps the bytes
        written per second bounded whatever the node runs (issue 13: 1,000 tasks a node wrote ~1 MB every
        50 ms); what a crash loses meanwhile the restarted agent finds again (`reconcile`, the complete set)."""
        return min(SAVE_DELAY_MAX, self.save_delay + SAVE_DELAY_PER_TASK * len(self.managers))

    def _save_soon(self) -> None:
        # Coalesce the bursts of state changes of task starts into one write.
        if self.state is None or self._save_handle is not None:
            return
        self._save_handle = asyncio.get_running_loop().call_later(self.save_interval(), self._save_in_background)

    def _records_text(self) -> bytes:
        """tasks.json's content: `{task id: {"task", "status", "saved"}}`. Each task's record is encoded once
        per change — a save re-encodes only the records whose task or status object was replaced or whose
        controller's `saved()` differs (issue 13: encoding every task at every save made the agent's cost per
        change proportional to all its tasks)."""
        cache, fresh = self._encoded, {}
        parts = []
        for tid, m in self.managers.items():
            saved = m.saved()
            hit = cache.get(tid)
            if hit is not None and hit[0] is m.task and hit[1] is m.status and hit[2] == saved:
                entry = hit
            else:
                entry = (m.task, m.status, saved,
                         wire.dumps(tid) + b":" + wire.dumps({"task": m.task, "status": m.status, "saved": saved}))
            fresh[tid] = entry
            parts.append(entry[3])
        self._encoded = fresh
        return b"{" + b",".join(parts) + b"}"

    def _save_in_background(self) -> None:
        """The coalesced save: encoded here, written and fsynced in a thread, one write at a time. A write
        blocks for as long as the disk takes (the fsync), and a start burst of many tasks asks for one every
        `save_delay`: on the event loop those writes held up every engine call and status report. A save
        asked for while one is in flight is made once it ends, with the state as it is then."""
        self._save_handle = None
        if self.state is None:
            return
        if self._saving is not None:
            self._save_again = True
            return
        state, text = self.state, self._records_text()

        async def write() -> None:
            try:
                await asyncio.to_thread(state.save_tasks_encoded, text)
            except OSError as e:
                log.error("agent: cannot save task state in %s: %s", state.dir, e)
            finally:
                self._saving = None
                if self._save_again:
                    self._save_again = False
                    self._save_soon()

        self._saving = asyncio.create_task(write(), name="agent.save-tasks")

    def save_now(self) -> None:
        """Write the task state at once, on the caller's thread (at shutdown, once no write is in flight)."""
        self._save_handle = None
        if self.state is None:
            return
        try:
            self.state.save_tasks_encoded(self._records_text())
        except OSError as e:
            log.error("agent: cannot save task state in %s: %s", self.state.dir, e)

    # ---- views and shutdown ------------------------------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        out = []
        for mgr in sorted(self.managers.values(), key=lambda m: m.id):
            st = mgr.status
            out.append({"id": mgr.id, "name": task_name(mgr.task), "service_id": mgr.task.get("service_id"),
                        "runtime": runtime_of(mgr.task), "desired_state": str(mgr.desired),
                        "state": st.get("state"), "message": st.get("message"), "err": st.get("err"),
                        "pid": st.get("pid"), "exit_code": st.get("exit_code"),
                        "health": mgr.controller.health if mgr.controller is not None else None,
                        "timestamp": st.get("timestamp")})
        return out

    async def close(self, *, stop_tasks: bool | None, grace: float) -> None:
        """Stop driving tasks. With `stop_tasks`, stop their workloads too (graceful stop, all at once, bounded
        by `grace` seconds, then killed); with None, only the workloads whose controller does not survive the
        agent (`survives_agent_exit`: containers do, processes do not)."""
        managers = list(self.managers.values())

        def stops(m: TaskManager) -> bool:
            if stop_tasks is not None:
                return stop_tasks
            return m.controller is None or not m.controller.survives_agent_exit

        stopping = [m for m in managers if stops(m)]
        await asyncio.gather(*(m.close(stop=False) for m in managers if not stops(m)), return_exceptions=True)
        if stopping:
            try:
                await asyncio.wait_for(asyncio.gather(*(m.close(stop=True) for m in stopping),
                                                      return_exceptions=True), grace)
            except TimeoutError:
                await asyncio.gather(*(m.terminate() for m in stopping), return_exceptions=True)
        if self._forgetting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._forgetting, return_exceptions=True), grace)
        if self._save_handle is not None:
            self._save_handle.cancel()
        if self._saving is not None:  # never two writers of the same file
            with contextlib.suppress(Exception):
                await self._saving
        self.save_now()
