"""The agent reconciles the processes on its node with its assignments (real processes, real marks): a task
started just before its agent died — missing from the saved state — is adopted, not started twice; processes
of tasks the complete set lacks, and of an earlier node id of the same host, are killed, even one that left its
process group and cleared its environment; another cluster's or host's are never touched; nothing is killed
before a complete set arrives."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.executors.process import ProcessExecutor
from agent.state import AgentState
from agent.worker import Worker
from shoal.bootstrap import CLUSTER_FILE
from shoal.cli.up import cmd_down
from shoal.models.objects import task_status
from shoal.workloads import Owner, TaskMarks, stop_cluster_processes, task_marks

pytestmark = pytest.mark.timeout(30)


def cluster_of(tmp_path: Path, suffix: str = "") -> str:
    return "unit-" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12] + suffix


@pytest.fixture(autouse=True)
def _cleanup(tmp_path: Path) -> Iterator[None]:
    yield
    stop_cluster_processes(cluster_of(tmp_path))
    stop_cluster_processes(cluster_of(tmp_path, "-other"))


def task(tid: str, command: list[str] | None = None, state: str = "assigned") -> dict[str, Any]:
    return {"id": tid, "service_id": "s", "service_name": "web", "slot": int(tid[-1]), "node_id": "n1",
            "desired_state": "running", "runtime": "process",
            "spec": {"process": {"command": command or ["sleep", "60"], "stop_grace_period": 1}},
            "status": task_status(state, 1.0, state), "meta": {"version": 1}}


def worker(marks: TaskMarks, tmp_path: Path, node: str = "n1") -> Worker:
    ex = ProcessExecutor(tmp_path / "logs", marks=marks, kill_timeout=2.0)
    return Worker({"process": ex}, report=lambda tid, st: None, node_id=lambda: node,
                  state=AgentState(tmp_path / "state"), save_delay=0.0)


async def spawned(marks: TaskMarks, tmp_path: Path, node: str, tid: str, command: list[str] | None = None) -> int:
    """A task process started by an agent that died before saving it."""
    ctl = ProcessExecutor(tmp_path / "logs", marks=marks).controller(task(tid, command), node_id=node)
    await ctl.prepare()
    await ctl.start()
    assert ctl.pid is not None
    return ctl.pid


async def until(cond: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_adopt_what_is_assigned_and_kill_what_is_not(tmp_path: Path) -> None:
    marks = task_marks(Owner(cluster_of(tmp_path), "host-a"))
    other_cluster = task_marks(Owner(cluster_of(tmp_path, "-other"), "host-a"))
    other_host = task_marks(Owner(cluster_of(tmp_path), "host-b"))
    wanted = await spawned(marks, tmp_path, "n1", "ta1")
    await spawned(marks, tmp_path, "n1", "tb2", ["sh", "-c", "setsid env -i sleep 60 & exec sleep 60"])
    await spawned(marks, tmp_path, "n0", "tc3")  # an earlier node id of this host
    await spawned(other_cluster, tmp_path, "n1", "td4")
    await spawned(other_host, tmp_path, "n9", "te5")
    await until(lambda: len(marks.pids("n1", "tb2")) == 2)

    w = worker(marks, tmp_path)
    assert w.restore() == 0  # the saved state knows none of them
    w.reconcile()  # no complete set yet: a restarted agent stops nothing
    await asyncio.sleep(0.3)
    assert marks.pids("n1", "tb2") and marks.pids("n0", "tc3")

    w.apply_complete([task("ta1", state="starting")])
    await until(lambda: not marks.pids("n1", "tb2") and not marks.pids("n0", "tc3"))
    await until(lambda: w.managers["ta1"].state.name == "RUNNING")
    assert marks.pids("n1", "ta1") == [wanted]  # adopted, not started again
    assert w.managers["ta1"].status["pid"] == wanted
    assert other_cluster.pids("n1", "td4") and other_host.pids("n9", "te5")  # never another's

    await w.close(stop_tasks=True, grace=2.0)
    assert not marks.pids("n1", "ta1")


async def test_periodic_reconcile_kills_an_escaped_unassigned_process(tmp_path: Path) -> None:
    marks = task_marks(Owner(cluster_of(tmp_path), "host-a"))
    w = worker(marks, tmp_path)
    w.apply_complete([task("ta1")])
    await until(lambda: "ta1" in w.managers and w.managers["ta1"].state.name == "RUNNING")
    # a task process the worker does not know appears (e.g. its forget failed); the next reconcile takes it
    await spawned(marks, tmp_path, "n1", "tz9", ["sh", "-c", "trap '' TERM; exec sleep 60"])
    w.reconcile()
    await until(lambda: not marks.pids("n1", "tz9"))
    assert marks.pids("n1", "ta1")
    await w.close(stop_tasks=True, grace=2.0)


async def test_a_task_stopped_by_its_manager_takes_its_whole_mark(tmp_path: Path) -> None:
    marks = task_marks(Owner(cluster_of(tmp_path), "host-a"))
    w = worker(marks, tmp_path)
    w.apply_complete([task("ta1", ["sh", "-c", "setsid sleep 60 & exec sleep 60"])])
    await until(lambda: len(marks.pids("n1", "ta1")) == 2)
    w.apply_complete([])
    await until(lambda: not marks.pids("n1", "ta1"))
    await until(lambda: not marks.path("n1", "ta1").exists())
    await w.close(stop_tasks=True, grace=2.0)


def test_stop_cluster_takes_every_host_and_node_of_one_cluster_only(tmp_path: Path) -> None:
    async def start() -> None:
        for host, node in (("h1", "n1"), ("h2", "n2"), ("h2", "n3")):
            await spawned(task_marks(Owner(cluster_of(tmp_path), host)), tmp_path, node, "tx1")
        await spawned(task_marks(Owner(cluster_of(tmp_path, "-other"), "h1")), tmp_path, "n1", "ty1")

    asyncio.run(start())
    stopped = stop_cluster_processes(cluster_of(tmp_path))
    assert sorted((w.host, w.node) for w in stopped) == [("h1", "n1"), ("h2", "n2"), ("h2", "n3")]
    assert stop_cluster_processes(cluster_of(tmp_path)) == []
    assert [w.task for w in stop_cluster_processes(cluster_of(tmp_path, "-other"))] == ["ty1"]


def test_shoal_down_stops_what_a_dead_supervisor_left(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "certificates").mkdir()
    (data_dir / "certificates" / CLUSTER_FILE).write_text(json.dumps(
        {"cluster_id": cluster_of(tmp_path), "manager_node": "m", "raft_nodes": ["m"]}))
    marks = task_marks(Owner(cluster_of(tmp_path), "host-a"))
    asyncio.run(spawned(marks, tmp_path, "n1", "tl1"))
    assert cmd_down(argparse.Namespace(data_dir=data_dir)) == 0
    out = capsys.readouterr().out
    assert "stopped process of task tl1 (node n1, host host-a)" in out and "stopped 1 task workloads" in out
    assert not marks.pids("n1", "tl1")
