"""Executors the agent can run tasks with, by name (`SHOAL_EXECUTORS`): `process` (local process groups),
`docker` (containers of the node's Docker engine: the `container` runtime) and `hollow` (simulated; for scale
tests)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from agent.executors.base import Controller, Executor, ExecutorError, ExitError, RetryableError
from agent.executors.docker import DockerExecutor
from agent.executors.docker_engine import DEFAULT_HOST
from agent.executors.hollow import HollowExecutor
from agent.executors.process import ProcessExecutor
from agent.overlay import Overlay
from shoal.workloads import Owner, task_marks

__all__ = ["Controller", "Executor", "ExecutorError", "ExitError", "RetryableError", "build_executors"]


def build_executors(names: list[str], log_dir: Path, *, owner: Owner, docker_host: str = DEFAULT_HOST,
                    publish_ip: str = "", cgroup_root: str = "", node_addr: str = "",
                    task_env: Mapping[str, str] | None = None, overlay: Overlay | None = None) -> dict[str, Executor]:
    """The executor serving each runtime, from the configured names (first one wins for a runtime).
    `owner` (cluster id, host name) marks every workload (`shoal.workloads`); `cgroup_root` chooses how process
    tasks are marked (SHOAL_CGROUP_ROOT); `docker_host` and `publish_ip` configure the docker executor
    (SHOAL_DOCKER_HOST, SHOAL_DOCKER_PUBLISH_IP); `node_addr` (SHOAL_ADDR) and `task_env` (the node's discovery
    files, agent/mesh.py) go to process tasks; `overlay` attaches containers to their overlay networks
    (agent/overlay.py)."""
    by_runtime: dict[str, Executor] = {}
    for name in names:
        executor: Executor
        if name == "process":
            executor = ProcessExecutor(log_dir, marks=task_marks(owner, cgroup_root), bind_ip=node_addr,
                                       extra_env=task_env)
        elif name == "hollow":
            executor = HollowExecutor()
        elif name == "docker":
            executor = DockerExecutor(docker_host, publish_ip=publish_ip, owner=owner, overlay=overlay)
        else:
            raise ValueError(f"agent: unknown executor {name!r} (known: process, docker, hollow)")
        for runtime in executor.runtimes:
            by_runtime.setdefault(runtime, executor)
    return by_runtime
