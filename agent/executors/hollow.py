"""The `hollow` executor: walks tasks through their states without running anything, so one machine can host
thousands of simulated nodes (Kubernetes' hollow nodes). Never the default; enable with
`SHOAL_EXECUTORS=hollow`.

It accepts every runtime. A task "runs" until it is shut down, unless its spec's env asks otherwise:
`SHOAL_HOLLOW_RUN_SECONDS` (then it exits), `SHOAL_HOLLOW_EXIT_CODE` (with that code, default 0),
`SHOAL_HOLLOW_START_SECONDS` (time spent starting) — read from `spec.process.env` or `spec.container.env`."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from agent.executors.base import BaseController, BaseExecutor, ExitError, Obj


def _env(task: Obj) -> Mapping[str, str]:
    spec = task.get("spec", {})
    runtime = spec.get("process") or spec.get("container") or {}
    env = runtime.get("env") or {}
    return env if isinstance(env, dict) else {}


class HollowController(BaseController):
    def __init__(self, task: Obj, env: Mapping[str, str] | None = None) -> None:
        """`env`: the SHOAL_HOLLOW_* settings; read from the task's spec when not given ({} = run until shut down)."""
        env = _env(task) if env is None else env
        self.run_seconds = float(env["SHOAL_HOLLOW_RUN_SECONDS"]) if "SHOAL_HOLLOW_RUN_SECONDS" in env else None
        self.exit_code_wanted = int(env.get("SHOAL_HOLLOW_EXIT_CODE", "0"))
        self.start_seconds = float(env.get("SHOAL_HOLLOW_START_SECONDS", "0"))
        self._exit_code: int | None = None

    def saved(self) -> dict[str, Any]:
        return {}

    async def prepare(self) -> None:
        return None

    async def start(self) -> None:
        if self.start_seconds:
            await asyncio.sleep(self.start_seconds)

    async def wait(self) -> None:
        if self.run_seconds is None:
            # runs until the driver cancels the wait to shut it down (a bare future: the least a wait can hold)
            await asyncio.get_running_loop().create_future()
        await asyncio.sleep(self.run_seconds or 0.0)
        self._exit_code = self.exit_code_wanted
        if self.exit_code_wanted != 0:
            raise ExitError(f"exit status {self.exit_code_wanted}", self.exit_code_wanted)

    async def shutdown(self) -> None:
        if self._exit_code is None:
            self._exit_code = 0

    async def terminate(self) -> None:
        await self.shutdown()

    async def remove(self) -> None:
        return None


class HollowExecutor(BaseExecutor):
    name = "hollow"

    @property
    def runtimes(self) -> tuple[str, ...]:
        return ("container", "process")

    def controller(self, task: Obj, *, node_id: str, saved: Mapping[str, Any] | None = None) -> HollowController:
        return HollowController(task)
