"""TaskManager: drives one task through `driver.plan` with its controller, one asyncio task per task
(SwarmKit's agent/task.go). A new copy of the task from the dispatcher (e.g. a higher desired state) interrupts
a WAIT and the plan is made again; PREPARE and START always finish once begun."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from agent.driver import OUTCOME, Step, failure_state, plan
from agent.executors.base import Controller, ExecutorError, ExitError, RetryableError
from shoal.clock import Clock
from shoal.models.objects import Obj, desired_of, task_status
from shoal.models.states import TaskState

log = logging.getLogger(__name__)

RETRY_INTERVAL = 1.0  # SwarmKit's agent retries a temporary failure every second
#: operations that may take long (an image pull, a health check wait, the workload's whole life)
INTERRUPTIBLE = frozenset({Step.PREPARE, Step.START, Step.WAIT})


def _stable(task: Obj) -> Obj:
    return {k: v for k, v in task.items() if k not in ("status", "meta")}


class TaskManager:
    def __init__(self, task: Obj, status: dict[str, Any], controller: Controller | None, *,
                 on_status: Callable[[TaskManager, bool], None], clock: Clock, reject: str | None = None,
                 retry_interval: float = RETRY_INTERVAL) -> None:
        """`status` is the agent's own view of the task's status (authoritative on this node); `controller`
        is None when no executor can run the task, which is then REJECTED with `reject` as the error.
        `on_status(manager, report)` runs on every status change (report=False: the manager knows it)."""
        self.task = task
        self.status = dict(status)
        self.controller = controller
        self.reject = reject
        self.on_status = on_status
        self.clock = clock
        self.retry_interval = retry_interval
        self._changed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._halt = False
        self._interruptible = False  # an operation a new copy of the task interrupts is in flight
        self._interrupting = False  # `update` cancelled it; the cancellation has not come back yet

    @property
    def id(self) -> str:
        return str(self.task["id"])

    @property
    def state(self) -> TaskState:
        return TaskState(self.status["state"])

    @property
    def desired(self) -> TaskState:
        return desired_of(self.task)

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name=f"task.{self.id}")

    def update(self, task: Obj) -> None:
        """A new copy of the task from the dispatcher. Only a change beyond status and meta (SwarmKit's
        TasksEqualStable) interrupts the operation in progress, so a re-sent complete set costs nothing."""
        changed = _stable(task) != _stable(self.task)
        self.task = task
        remote = task.get("status") or {}
        if remote.get("state") and TaskState(remote["state"]) > self.state:
            # The manager knows a later state than we do: our record was lost, or the manager settled the
            # task itself (a constraint enforcer's REJECTED). States only move forward, so take it; if the
            # task is over as far as the cluster is concerned, stop whatever still runs.
            self.status = dict(remote)
            self._halt = self.state.terminal
            self.on_status(self, False)
            changed = True
        if changed:
            self._changed.set()
            if self._interruptible and not self._interrupting and self._runner is not None:
                self._interrupting = True  # the operation in flight ends (cancelled), the plan is made again
                self._runner.cancel()

    async def _run(self) -> None:
        while not self._closed:
            self._changed.clear()
            if self._halt:
                self._halt = False
                if self.controller is not None:
                    try:
                        await self.controller.shutdown()
                    except Exception:
                        log.exception("task %s: stopping a task the cluster considers over failed", self.id)
                continue
            step = plan(self.state, self.desired)
            if step is Step.NOOP:
                await self._changed.wait()
            elif step in INTERRUPTIBLE:
                await self._unless_changed(step)
            else:
                await self._do(step)

    async def _unless_changed(self, step: Step) -> None:
        """Run a controller operation unless a new copy of the task arrives first; then it is cancelled and
        the plan made again (SwarmKit's task manager cancels the operation in flight on an update). The
        state machine is unchanged by a cancelled operation: PREPARING or STARTING is simply resumed.

        The operation runs in the manager's own asyncio task, which `update` cancels (issue 13: a task of its
        own per operation, plus one waiting for the change, cost two tasks per operation and ~2 KB per running
        task); a cancellation that is not `update`'s (the manager closed, the loop ending) goes on up."""
        me = asyncio.current_task()
        assert me is not None
        self._interruptible = True
        try:
            await self._do(step)
        except asyncio.CancelledError:
            interrupted, self._interrupting = self._interrupting, False
            if not interrupted or self._closed or me.uncancel() > 0:
                raise
            return  # interrupted by a new copy of the task
        finally:
            self._interruptible = False
        if self._interrupting:  # the operation swallowed the interruption: it is over all the same
            self._interrupting = False
            me.uncancel()

    async def _do(self, step: Step) -> None:
        before = self.state
        ctl = self.controller
        if ctl is None and step is not Step.SHUTDOWN:
            self._set(TaskState.REJECTED, "rejected", err=self.reject or "no executor for this task")
            return
        try:
            if ctl is not None:
                if step is Step.PREPARE:
                    await ctl.prepare()
                elif step is Step.START:
                    await ctl.start()
                elif step is Step.WAIT:
                    await ctl.wait()
                elif step is Step.SHUTDOWN:
                    await ctl.shutdown()
        except RetryableError as e:
            log.info("task %s: %s failed temporarily (%s); retrying", self.id, step, e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.retry_interval)
            return
        except ExitError as e:
            err = f"task: non-zero exit ({e.exit_code})" if e.exit_code is not None else f"task: {e}"
            self._set(failure_state(before), str(e), err=err, exit_code=e.exit_code)
            return
        except ExecutorError as e:
            self._set(failure_state(before), str(e), err=str(e))
            return
        except Exception as e:  # a bug or an unexpected OS error: as fatal as an executor error
            log.exception("task %s: %s failed", self.id, step)
            self._set(failure_state(before), f"{step} failed: {e}", err=repr(e))
            return
        state, message = OUTCOME[step]
        self._set(state, message)

    def _set(self, state: TaskState, message: str, *, err: str | None = None,
             exit_code: int | None = None) -> None:
        if state <= self.state:
            return  # observed state only moves forward
        ctl = self.controller
        if exit_code is None and ctl is not None and state.terminal:
            exit_code = ctl.exit_code
        extra: dict[str, Any] = {}
        ports = getattr(ctl, "port_status", None)
        if ports and not state.terminal:  # where other nodes reach the task (shoal/endpoints.py)
            extra["port_status"] = ports
        self.status = task_status(state, self.clock.now(), message, err=err,
                                  pid=ctl.pid if ctl is not None else None, exit_code=exit_code, **extra)
        log.info("task %s: %s (%s)", self.id, state, message)
        self.on_status(self, True)

    async def close(self, *, stop: bool) -> None:
        """Stop driving the task; with `stop`, also shut its workload down (task forgotten, or agent exit)."""
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if stop and self.controller is not None:
            await self.controller.shutdown()

    async def terminate(self) -> None:
        if self.controller is not None:
            await self.controller.terminate()

    async def remove(self) -> None:
        if self.controller is not None:
            await self.controller.remove()

    def saved(self) -> dict[str, Any]:
        return self.controller.saved() if self.controller is not None else {}
