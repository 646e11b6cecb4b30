"""Agent worker: the step function (SwarmKit's exec.Do), complete/incremental assignment semantics, status
only moving forward, fatal errors mapping to REJECTED/FAILED, and resuming tasks from the state directory.
Uses a fake executor, so nothing is spawned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.driver import Step, failure_state, plan
from agent.executors.base import BaseController, BaseExecutor, ExecutorError, ExitError
from agent.session import StatusQueue
from agent.state import AgentState
from agent.worker import Worker
from shoal.models.objects import task_status
from shoal.models.states import TaskState as S

pytestmark = pytest.mark.timeout(20)


# ---- the step function ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("state", "desired", "step"), [
    (S.ASSIGNED, S.RUNNING, Step.ACCEPT),
    (S.ACCEPTED, S.RUNNING, Step.BEGIN_PREPARE),
    (S.PREPARING, S.RUNNING, Step.PREPARE),
    (S.READY, S.RUNNING, Step.BEGIN_START),
    (S.STARTING, S.RUNNING, Step.START),
    (S.RUNNING, S.RUNNING, Step.WAIT),
    (S.COMPLETE, S.RUNNING, Step.NOOP),
    (S.FAILED, S.RUNNING, Step.NOOP),
    # desired READY: prepare, then pause (SwarmKit's pre-pull for restarts)
    (S.ACCEPTED, S.READY, Step.BEGIN_PREPARE),
    (S.PREPARING, S.READY, Step.PREPARE),
    (S.READY, S.READY, Step.NOOP),
    # desired ≥ SHUTDOWN stops anything not yet finished
    (S.ASSIGNED, S.SHUTDOWN, Step.SHUTDOWN),
    (S.READY, S.SHUTDOWN, Step.SHUTDOWN),
    (S.RUNNING, S.SHUTDOWN, Step.SHUTDOWN),
    (S.RUNNING, S.REMOVE, Step.SHUTDOWN),
    (S.COMPLETE, S.SHUTDOWN, Step.NOOP),
    (S.FAILED, S.REMOVE, Step.NOOP),
])
def test_plan(state: S, desired: S, step: Step) -> None:
    assert plan(state, desired) is step


def test_fatal_errors_reject_before_starting_and_fail_after() -> None:
    assert failure_state(S.PREPARING) is S.REJECTED
    assert failure_state(S.READY) is S.REJECTED
    assert failure_state(S.STARTING) is S.FAILED
    assert failure_state(S.RUNNING) is S.FAILED


# ---- a fake executor --------------------------------------------------------------------------------------

class FakeController(BaseController):
    def __init__(self, task: dict[str, Any], saved: Mapping[str, Any] | None) -> None:
        env = task["spec"]["process"].get("env", {})
        self.fail = env.get("FAIL")  # "prepare" | "start"
        self.exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.calls: list[str] = []
        self.saved_in = saved
        self._pid: int | None = int(saved["pid"]) if saved else None
        self._exit_code: int | None = None

    def saved(self) -> dict[str, Any]:
        return {"pid": self._pid} if self._pid else {}

    async def prepare(self) -> None:
        self.calls.append("prepare")
        if self.fail == "prepare":
            raise ExecutorError("no such image")

    async def start(self) -> None:
        self.calls.append("start")
        if self.fail == "start":
            raise ExecutorError("cannot start")
        self._pid = 4242

    async def wait(self) -> None:
        self.calls.append("wait")
        code = await asyncio.shield(self.exit)
        self._exit_code = code
        if code:
            raise ExitError(f"exit status {code}", code)

    async def shutdown(self) -> None:
        self.calls.append("shutdown")
        if not self.exit.done():
            self.exit.set_result(143)
            self._exit_code = 143

    async def terminate(self) -> None:
        self.calls.append("terminate")

    async def remove(self) -> None:
        self.calls.append("remove")


class FakeExecutor(BaseExecutor):
    name = "process"

    def __init__(self) -> None:
        self.made: dict[str, FakeController] = {}

    @property
    def runtimes(self) -> tuple[str, ...]:
        return ("process",)

    def controller(self, task: dict[str, Any], *, node_id: str,
                   saved: Mapping[str, Any] | None = None) -> FakeController:
        ctl = FakeController(task, saved)
        self.made[task["id"]] = ctl
        return ctl


def task(tid: str, desired: str = "running", state: str = "assigned", runtime: str = "process",
         **env: str) -> dict[str, Any]:
    return {"id": tid, "service_id": "s", "service_name": "web", "slot": 1, "node_id": "n1",
            "desired_state": desired, "runtime": runtime,
            "spec": {"process": {"command": ["sleep", "30"], "env": env}},
            "status": task_status(state, 1.0, "assigned"), "meta": {"version": 1}}


class Harness:
    def __init__(self, state_dir: Path | None = None) -> None:
        self.executor = FakeExecutor()
        self.reports: list[tuple[str, str]] = []
        self.latest: dict[str, dict[str, Any]] = {}
        self.worker = Worker({"process": self.executor}, report=self.report, node_id=lambda: "n1",
                             state=AgentState(state_dir) if state_dir else None, save_delay=0.0)

    def report(self, tid: str, status: dict[str, Any]) -> None:
        self.reports.append((tid, status["state"]))
        self.latest[tid] = status

    async def until(self, tid: str, state: str, timeout: float = 2.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.latest.get(tid, {}).get("state") != state:
            assert loop.time() < deadline, f"{tid} never reached {state}: {self.reports}"
            await asyncio.sleep(0.005)
        return self.latest[tid]

    def states(self, tid: str) -> list[str]:
        return [s for t, s in self.reports if t == tid]


async def test_complete_set_starts_tasks_through_every_state() -> None:
    h = Harness()
    h.worker.apply_complete([task("a")])
    st = await h.until("a", "running")
    assert st["pid"] == 4242
    assert h.states("a") == ["accepted", "preparing", "ready", "starting", "running"]
    h.executor.made["a"].exit.set_result(0)
    await h.until("a", "complete")
    await h.worker.close(stop_tasks=True, grace=1)


async def test_a_complete_set_replaces_everything() -> None:
    h = Harness()
    h.worker.apply_complete([task("a"), task("b")])
    await h.until("a", "running")
    await h.until("b", "running")
    h.worker.apply_complete([task("b")])  # "a" is no longer wanted here: stopped and forgotten, not reported
    await asyncio.sleep(0.05)
    assert h.executor.made["a"].calls[-2:] == ["shutdown", "remove"]
    assert "a" not in h.worker.managers and "shutdown" not in h.states("a")
    assert "shutdown" not in h.executor.made["b"].calls
    await h.worker.close(stop_tasks=True, grace=1)


async def test_incremental_updates_and_removals() -> None:
    h = Harness()
    h.worker.apply_complete([task("a")])
    await h.until("a", "running")
    h.worker.apply_incremental([{"action": "update", "task": task("b")},
                                {"action": "update", "task": task("a", desired="shutdown", state="running")}])
    st = await h.until("a", "shutdown")
    assert st["exit_code"] == 143
    await h.until("b", "running")
    h.worker.apply_incremental([{"action": "remove", "task": task("b")}])
    await asyncio.sleep(0.05)
    assert "b" not in h.worker.managers and h.executor.made["b"].calls[-1] == "remove"
    await h.worker.close(stop_tasks=True, grace=1)


async def test_desired_ready_prepares_but_does_not_start() -> None:
    h = Harness()
    h.worker.apply_complete([task("a", desired="ready")])
    await h.until("a", "ready")
    await asyncio.sleep(0.05)
    assert h.executor.made["a"].calls == ["prepare"]
    h.worker.apply_incremental([{"action": "update", "task": task("a", desired="running")}])
    await h.until("a", "running")
    await h.worker.close(stop_tasks=True, grace=1)


async def test_fatal_errors_and_exits() -> None:
    h = Harness()
    h.worker.apply_complete([task("p", FAIL="prepare"), task("s", FAIL="start"), task("x"),
                             task("c", runtime="container")])
    rejected = await h.until("p", "rejected")
    assert rejected["err"] == "no such image"
    assert (await h.until("s", "failed"))["err"] == "cannot start"
    assert "no executor for runtime 'container'" in (await h.until("c", "rejected"))["err"]
    await h.until("x", "running")
    h.executor.made["x"].exit.set_result(3)
    failed = await h.until("x", "failed")
    assert failed["exit_code"] == 3 and failed["err"] == "task: non-zero exit (3)"
    await h.worker.close(stop_tasks=True, grace=1)


async def test_status_only_moves_forward_and_lost_reports_are_repeated() -> None:
    h = Harness()
    h.worker.apply_complete([task("a")])
    await h.until("a", "running")
    n = len(h.reports)
    # A new dispatcher's complete set still shows ASSIGNED (our reports were lost): we say RUNNING again,
    # and the task is not restarted.
    h.worker.apply_complete([task("a", state="assigned")])
    await asyncio.sleep(0.05)
    assert h.reports[n:] == [("a", "running")]
    assert h.executor.made["a"].calls.count("start") == 1
    # The manager knows a later, final state (e.g. REJECTED by a constraint enforcer): taken, workload stopped.
    h.worker.apply_incremental([{"action": "update", "task": task("a", state="rejected")}])
    await asyncio.sleep(0.05)
    assert h.worker.managers["a"].state is S.REJECTED and "shutdown" in h.executor.made["a"].calls
    await h.worker.close(stop_tasks=True, grace=1)


async def test_tasks_resume_from_the_state_directory(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.worker.apply_complete([task("a")])
    await h.until("a", "running")
    await h.worker.close(stop_tasks=False, grace=1)
    saved = AgentState(tmp_path).load_tasks()
    assert saved["a"]["status"]["state"] == "running" and saved["a"]["saved"] == {"pid": 4242}

    h2 = Harness(tmp_path)
    assert h2.worker.restore() == 1
    await asyncio.sleep(0.05)
    ctl = h2.executor.made["a"]
    assert ctl.saved_in == {"pid": 4242} and ctl.calls == ["wait"]  # found again, not started again
    await h2.worker.close(stop_tasks=True, grace=1)
    assert "shutdown" in ctl.calls


def test_status_queue_keeps_the_latest_forward_state() -> None:
    async def go() -> None:
        q = StatusQueue()
        q.put("a", task_status("accepted", 1.0))
        q.put("a", task_status("running", 2.0))
        q.put("a", task_status("starting", 3.0))
        batch = q.batch()
        assert [(t, s["state"]) for t, s in batch] == [("a", "running")]
        q.put("a", task_status("failed", 4.0))  # arrives while the batch is in flight
        q.sent(batch)
        assert q.pending["a"]["state"] == "failed" and q.event.is_set()
        q.sent(q.batch())
        assert not q.pending and not q.event.is_set()

    asyncio.run(go())


async def test_the_hollow_executor_walks_states_without_running_anything() -> None:
    from agent.executors.hollow import HollowExecutor

    h = Harness()
    hollow = HollowExecutor()
    h.worker.executors = {"process": hollow, "container": hollow}
    h.worker.apply_complete([task("a"), task("b", runtime="container", SHOAL_HOLLOW_RUN_SECONDS="0.05",
                                              SHOAL_HOLLOW_EXIT_CODE="2")])
    running = await h.until("a", "running")
    assert running["pid"] is None
    failed = await h.until("b", "failed")
    assert failed["exit_code"] == 2
    h.worker.apply_incremental([{"action": "update", "task": task("a", desired="shutdown")}])
    await h.until("a", "shutdown")
    await h.worker.close(stop_tasks=True, grace=1)


class SlowState(AgentState):
    """A state directory on a disk whose every write (the fsync) takes 0.3 s."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.writes: list[str] = []

    def _write(self, path: Path, text: str) -> None:
        time.sleep(0.3)
        super()._write(path, text)
        self.writes.append(text)


async def test_saving_the_task_state_never_blocks_the_loop_and_keeps_the_last_state(tmp_path: Path) -> None:
    """The coalesced saves of a start burst are written off the event loop, one at a time: the tasks keep
    moving (and engine calls and reports keep going) while the disk is slow, and the file ends with the last
    state (a save asked for during a write is made after it)."""
    state = SlowState(tmp_path)
    h = Harness()
    h.worker.state = state
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    h.worker.apply_complete([task("a"), task("b")])
    await h.until("a", "running")
    await h.until("b", "running")
    assert loop.time() - t0 < 0.25  # five states each, several saves asked for: none waited for the disk
    for _ in range(100):
        if h.worker._saving is None and h.worker._save_handle is None:
            break
        await asyncio.sleep(0.05)
    assert 1 <= len(state.writes) <= 3  # coalesced: one in flight, one more for what changed meanwhile
    saved = AgentState(tmp_path).load_tasks()
    assert {tid: r["status"]["state"] for tid, r in saved.items()} == {"a": "running", "b": "running"}
    h.executor.made["a"].exit.set_result(0)
    h.executor.made["b"].exit.set_result(0)
    await h.worker.close(stop_tasks=False, grace=1)


# ---- the cost of a task (issue 13) --------------------------------------------------------------------------

async def test_a_running_task_holds_one_asyncio_task_and_shares_its_services_spec() -> None:
    """A running task is driven by its manager's one asyncio task (the operation runs in it, interrupted by
    cancelling it), and the tasks of one service version share one spec object."""
    from agent.executors.hollow import HollowExecutor

    h = Harness()
    hollow = HollowExecutor()
    h.worker.executors = {"process": hollow}
    before = len(asyncio.all_tasks())
    h.worker.apply_complete([task(f"t{i}") for i in range(20)])
    for i in range(20):
        await h.until(f"t{i}", "running")
    await asyncio.sleep(0.05)
    assert len(asyncio.all_tasks()) - before == 20
    specs = {id(m.task["spec"]) for m in h.worker.managers.values()}
    assert len(specs) == 1
    # a new copy (desired state) interrupts the wait: the plan is made again and the task shuts down
    h.worker.apply_incremental([{"action": "update", "task": task("t3", desired="shutdown")}])
    await h.until("t3", "shutdown")
    assert h.worker.managers["t3"].task["spec"] is h.worker.managers["t4"].task["spec"]
    await h.worker.close(stop_tasks=True, grace=1)
    assert len(asyncio.all_tasks()) == before


class SwallowingController(FakeController):
    """An operation that catches its cancellation and returns (a controller's cleanup that goes wrong)."""

    async def wait(self) -> None:
        self.calls.append("wait")
        try:
            await asyncio.shield(self.exit)
        except asyncio.CancelledError:
            self.calls.append("swallowed")


async def test_an_interruption_ends_the_operation_and_only_the_operation() -> None:
    h = Harness()
    h.worker.apply_complete([task("a"), task("b")])
    await h.until("a", "running")
    await h.until("b", "running")
    mgr = h.worker.managers["a"]
    assert mgr._runner is not None
    runner = mgr._runner
    # a copy that changes nothing stable does not interrupt
    h.worker.apply_incremental([{"action": "update", "task": task("a", state="running")}])
    await asyncio.sleep(0.02)
    assert h.executor.made["a"].calls == ["prepare", "start", "wait"]
    # one that does ends the wait; the manager's task carries on (not cancelled) and waits again
    changed = {**task("a"), "spec": {"process": {"command": ["sleep", "31"], "env": {}}}}
    h.worker.apply_incremental([{"action": "update", "task": changed}])
    await asyncio.sleep(0.05)
    assert h.executor.made["a"].calls == ["prepare", "start", "wait", "wait"]
    assert not runner.done() and runner.cancelling() == 0
    # an operation that swallows the cancellation: the manager's task is not left with a pending cancel
    ctl = SwallowingController(task("b"), None)
    mgr_b = h.worker.managers["b"]
    mgr_b.controller = ctl
    h.worker.apply_incremental([{"action": "update", "task": {**task("b"), "spec": changed["spec"]}}])
    await asyncio.sleep(0.05)  # the old controller's wait ended; the new one's waits
    mgr_b.update({**task("b"), "spec": {"process": {"command": ["x"], "env": {}}}})
    await asyncio.sleep(0.05)
    assert ctl.calls == ["wait", "swallowed"] and mgr_b._runner is not None
    assert not mgr_b._runner.done() and mgr_b._runner.cancelling() == 0
    # closing while an operation runs ends the manager's task
    await mgr.close(stop=False)
    assert runner.done()
    h.executor.made["b"].exit.set_result(0)
    await h.worker.close(stop_tasks=True, grace=1)


async def test_a_save_encodes_only_the_records_that_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    from agent import worker as worker_module

    h = Harness(tmp_path)
    h.worker.apply_complete([task(f"t{i}") for i in range(30)])
    for i in range(30):
        await h.until(f"t{i}", "running")
    h.worker.save_now()
    encoded: list[Any] = []
    real = worker_module.wire.dumps

    def counting(obj: Any) -> bytes:
        encoded.append(obj)
        return real(obj)

    monkeypatch.setattr(worker_module.wire, "dumps", counting)
    h.worker.save_now()
    assert encoded == []  # nothing changed: nothing encoded again
    h.executor.made["t5"].exit.set_result(0)
    await h.until("t5", "complete")
    h.worker.save_now()
    assert [x for x in encoded if isinstance(x, dict)] == [
        {"task": h.worker.managers["t5"].task, "status": h.worker.managers["t5"].status, "saved": {"pid": 4242}}]
    saved = AgentState(tmp_path).load_tasks()
    assert len(saved) == 30 and saved["t5"]["status"]["state"] == "complete"
    assert saved["t6"]["status"]["state"] == "running" and saved["t6"]["saved"] == {"pid": 4242}
    for i in range(30):
        if i != 5:
            h.executor.made[f"t{i}"].exit.set_result(0)
    await h.worker.close(stop_tasks=False, grace=1)
