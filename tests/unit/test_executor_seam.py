"""The executor seam is declared, not discovered: every executor derives from `BaseExecutor` (probe, sweep and
close with their defaults; `probes`/`sweeps` say which it really does) and every controller from
`BaseController` (health, survives_agent_exit, pid/exit_code from `_pid`/`_exit_code`); `distinct` lists an
executor serving several runtimes once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.executors import build_executors
from agent.executors.attachment import AttachmentExecutor
from agent.executors.base import BaseController, BaseExecutor, ExecutorError, distinct, task_spec
from agent.executors.docker import DockerController, DockerExecutor
from agent.executors.hollow import HollowController, HollowExecutor
from agent.executors.process import ProcessExecutor
from shoal.models.specs import ContainerSpec, ProcessSpec
from shoal.workloads import Owner


def test_each_executor_declares_what_it_does_beyond_running_tasks(tmp_path: Path) -> None:
    built = build_executors(["process", "docker", "hollow"], tmp_path,
                            owner=Owner("c" * 25, "host"), docker_host=f"unix://{tmp_path}/none.sock")
    kinds = {type(e): (e.probes, e.sweeps) for e in distinct(built.values())}
    assert kinds == {ProcessExecutor: (False, True), DockerExecutor: (True, True)}  # hollow serves no runtime left
    assert all(isinstance(e, BaseExecutor) for e in (*built.values(), HollowExecutor(), AttachmentExecutor()))


def test_distinct_keeps_one_of_each_in_order() -> None:
    hollow, attach = HollowExecutor(), AttachmentExecutor()
    assert distinct([hollow, attach, hollow]) == [hollow, attach]


def test_the_defaults_do_nothing() -> None:
    ex = HollowExecutor()
    assert not ex.probes and not ex.sweeps
    assert asyncio.run(ex.probe()) is True
    assert asyncio.run(ex.sweep("n1", lambda _: False)) == []
    asyncio.run(ex.close())
    ctl = HollowController({"id": "t1", "spec": {}}, env={})
    assert isinstance(ctl, BaseController) and ctl.health is None and ctl.survives_agent_exit is False
    assert ctl.pid is None and ctl.exit_code is None
    assert DockerController.survives_agent_exit is True


def test_a_task_spec_is_validated_in_one_place() -> None:
    spec = task_spec({"spec": {"process": {"command": ["sleep", "1"]}}}, "process", ProcessSpec, "process executor")
    assert spec.command == ["sleep", "1"]
    with pytest.raises(ExecutorError, match=r"^process executor: task has no spec\.process$"):
        task_spec({"spec": {}}, "process", ProcessSpec, "process executor")
    with pytest.raises(ExecutorError, match=r"^docker executor: task has no spec\.container$"):
        task_spec({"spec": None}, "container", ContainerSpec, "docker executor")
    with pytest.raises(ExecutorError, match=r"^docker executor: invalid spec\.container: "):
        task_spec({"spec": {"container": {"image": 7}}}, "container", ContainerSpec, "docker executor")
