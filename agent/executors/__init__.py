"""Executors the agent can run tasks with, by name (`SHOAL_EXECUTORS`): `process` (local process groups) and
`hollow` (simulated; for scale tests). The `docker` executor joins later."""

from __future__ import annotations

from pathlib import Path

from agent.executors.base import Controller, Executor, ExecutorError, ExitError, RetryableError
from agent.executors.hollow import HollowExecutor
from agent.executors.process import ProcessExecutor

__all__ = ["Controller", "Executor", "ExecutorError", "ExitError", "RetryableError", "build_executors"]


def build_executors(names: list[str], log_dir: Path) -> dict[str, Executor]:
    """The executor serving each runtime, from the configured names (first one wins for a runtime)."""
    by_runtime: dict[str, Executor] = {}
    for name in names:
        executor: Executor
        if name == "process":
            executor = ProcessExecutor(log_dir)
        elif name == "hollow":
            executor = HollowExecutor()
        else:
            raise ValueError(f"agent: unknown executor {name!r} (known: process, hollow)")
        for runtime in executor.runtimes:
            by_runtime.setdefault(runtime, executor)
    return by_runtime
