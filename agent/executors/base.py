"""The Executor/Controller seam between the agent's task driver and a runtime (SwarmKit's agent/exec).

An `Executor` makes one `Controller` per task. The driver (`agent.task`) calls the controller's operations in
the order the task's state dictates — prepare, start, wait, shutdown — and finally remove once the task is
forgotten. Errors say what the driver should do:

    ExecutorError        fatal: REJECTED before STARTING, FAILED at or after it
    └── ExitError        the workload ended unsuccessfully (carries the exit code)
    RetryableError       temporary: the driver tries the same step again after a second

Every executor derives from `BaseExecutor` and every controller from `BaseController`: the optional parts of
the seam (an executor's `probe`/`sweep`/`close`, a controller's `health` and `survives_agent_exit`) are declared
there with their do-nothing defaults, so the agent calls them directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

Obj = dict[str, Any]


class ExecutorError(Exception):
    """A fatal error of a controller operation; the message is reported as the task's `err`."""


class ExitError(ExecutorError):
    """The workload exited unsuccessfully: non-zero status, a signal, or it vanished."""

    def __init__(self, message: str, exit_code: int | None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RetryableError(Exception):
    """A temporary failure (SwarmKit's ErrTaskRetry): the same operation is tried again later."""


class Controller(Protocol):
    """Drives one task's workload. Every operation is idempotent, since the driver may repeat one after an
    agent restart or a retry."""

    @property
    def pid(self) -> int | None:
        """The workload's process id when there is one (reported in the task status)."""

    @property
    def exit_code(self) -> int | None:
        """The exit code once the workload has ended, else None."""

    async def prepare(self) -> None:
        """Make the task startable (resolve the command, create directories, pull an image)."""

    async def start(self) -> None:
        """Start the workload; returns once it runs."""

    async def wait(self) -> None:
        """Return when the workload exits successfully; raise ExitError otherwise. Cancellable."""

    async def shutdown(self) -> None:
        """Stop gracefully: the stop signal, then a kill after the task's stop grace period."""

    async def terminate(self) -> None:
        """Stop at once (kill)."""

    async def remove(self) -> None:
        """Release everything the task holds on the node (logs, directories); stops it first if needed."""

    def saved(self) -> dict[str, Any]:
        """What a later agent process needs to find this workload again (persisted with the task)."""

    @property
    def health(self) -> str | None:
        """The workload's health status (starting/healthy/unhealthy); None without a health check."""

    #: the workload outlives the agent process (containers do; process groups do not)
    survives_agent_exit: bool


class BaseController:
    """The defaults of a controller's optional parts (see `Controller`), and `pid`/`exit_code` read from the
    `_pid`/`_exit_code` a controller sets."""

    survives_agent_exit: bool = False
    _pid: int | None = None
    _exit_code: int | None = None

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    @property
    def health(self) -> str | None:
        return None


class Executor(Protocol):
    name: str
    #: it must find its runtime first (`probe`) before its runtimes are advertised (the docker engine)
    probes: bool
    #: it removes this host's workloads of tasks no longer assigned here (`sweep`)
    sweeps: bool

    @property
    def runtimes(self) -> tuple[str, ...]:
        """The task runtimes (`task.runtime`) this executor runs; advertised in the node description."""

    def controller(self, task: Obj, *, node_id: str, saved: Mapping[str, Any] | None = None) -> Controller:
        """A controller for `task`; `saved` is what an earlier controller's `saved()` returned. Raises
        ExecutorError when the task cannot run here at all."""

    async def probe(self) -> bool:
        """Whether the runtime answers (only called when `probes`)."""

    async def sweep(self, node_id: str, keep: Callable[[str], bool]) -> list[str]:
        """Remove this host's workloads of node `node_id` whose task `keep` rejects; returns what it removed
        (only called when `sweeps`)."""

    async def close(self) -> None:
        """Release the executor's connections when the agent stops."""


class BaseExecutor:
    """The defaults of an executor's optional parts (see `Executor`)."""

    name: str
    probes: bool = False
    sweeps: bool = False

    async def probe(self) -> bool:
        return True

    async def sweep(self, node_id: str, keep: Callable[[str], bool]) -> list[str]:
        return []

    async def close(self) -> None:
        return None


def distinct(executors: Iterable[Executor]) -> list[Executor]:
    """Each executor once (one may serve several runtimes), in the order given."""
    return list(dict.fromkeys(executors))


M = TypeVar("M", bound=BaseModel)


def task_spec(task: Obj, field: str, model: type[M], executor: str) -> M:
    """The task's `spec.<field>` (`container`, `process`) validated as `model`; an ExecutorError saying what is
    wrong when it is missing or invalid."""
    raw = (task.get("spec") or {}).get(field)
    if raw is None:
        raise ExecutorError(f"{executor}: task has no spec.{field}")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise ExecutorError(f"{executor}: invalid spec.{field}: {e}") from e
