"""Health checks of `process` tasks, with Docker's semantics (which SwarmKit relies on): a probe command runs
every `interval`; `retries` consecutive failures make the task unhealthy; failures during `start_period` do
not count until the first success. A task stays STARTING until its first healthy probe (SwarmKit waits for
health inside Start), and an unhealthy task is stopped and FAILED.

`test`: `[]` or `["NONE"]` — no check; `["CMD", exe, args...]` — exec; `["CMD-SHELL", cmd]` — `/bin/sh -c`.
Zero durations/retries take Docker's defaults: interval 30 s, timeout 30 s, retries 3."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3


class Health(StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class HealthConfig:
    argv: tuple[str, ...]
    interval: float
    timeout: float
    retries: int
    start_period: float

    @staticmethod
    def from_spec(spec: Any) -> HealthConfig | None:
        """From a `HealthCheck` spec (or None); None when there is nothing to check."""
        if spec is None or not spec.test or spec.test[0] == "NONE":
            return None
        kind, rest = spec.test[0], list(spec.test[1:])
        argv = rest if kind == "CMD" else ["/bin/sh", "-c", rest[0]]
        return HealthConfig(tuple(argv), spec.interval or DEFAULT_INTERVAL, spec.timeout or DEFAULT_TIMEOUT,
                            spec.retries or DEFAULT_RETRIES, spec.start_period)


@dataclass
class HealthTracker:
    """The health state machine, fed with probe results; pure (the caller passes the time)."""

    config: HealthConfig
    started_at: float
    state: Health = Health.STARTING
    failures: int = 0
    last_output: str = ""

    def record(self, ok: bool, now: float) -> Health:
        if ok:
            self.failures = 0
            self.state = Health.HEALTHY
        elif self.state == Health.STARTING and now - self.started_at < self.config.start_period:
            pass  # still starting up: failures do not count yet
        else:
            self.failures += 1
            if self.failures >= self.config.retries:
                self.state = Health.UNHEALTHY
        return self.state


async def probe(config: HealthConfig, env: Mapping[str, str], cwd: str | None) -> bool:
    """Run the probe once: healthy iff it exits 0 within the timeout (a probe that hangs is killed)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *config.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, env=dict(env), cwd=cwd, start_new_session=True)
    except OSError:
        return False
    try:
        return await asyncio.wait_for(proc.wait(), config.timeout) == 0
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return False
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
