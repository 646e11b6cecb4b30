"""The pure step function of a task on the agent (SwarmKit's `exec.Do`): given the observed and desired
states, which operation comes next. Observed state only moves forward.

    desired ≥ SHUTDOWN        → SHUTDOWN unless already ≥ COMPLETE
    state > desired           → nothing (e.g. a READY task whose desired state is READY: paused)
    PREPARING / STARTING      → PREPARE / START: once begun they finish, whatever the desired state
    RUNNING                   → WAIT for the exit
    state < desired           → ACCEPT (≤ ASSIGNED), BEGIN_PREPARE (ACCEPTED), BEGIN_START (READY)

A fatal error maps to REJECTED before STARTING and FAILED at or after it (`failure_state`)."""

from __future__ import annotations

from enum import StrEnum

from shoal.models.states import TaskState


class Step(StrEnum):
    NOOP = "noop"
    ACCEPT = "accept"  # -> ACCEPTED
    BEGIN_PREPARE = "begin_prepare"  # -> PREPARING
    PREPARE = "prepare"  # controller.prepare() -> READY
    BEGIN_START = "begin_start"  # -> STARTING
    START = "start"  # controller.start() -> RUNNING
    WAIT = "wait"  # controller.wait() -> COMPLETE (or FAILED)
    SHUTDOWN = "shutdown"  # controller.shutdown() -> SHUTDOWN


#: the state a step leads to when its operation succeeds, and the message reported with it
OUTCOME: dict[Step, tuple[TaskState, str]] = {
    Step.ACCEPT: (TaskState.ACCEPTED, "accepted"),
    Step.BEGIN_PREPARE: (TaskState.PREPARING, "preparing"),
    Step.PREPARE: (TaskState.READY, "prepared"),
    Step.BEGIN_START: (TaskState.STARTING, "starting"),
    Step.START: (TaskState.RUNNING, "started"),
    Step.WAIT: (TaskState.COMPLETE, "finished"),
    Step.SHUTDOWN: (TaskState.SHUTDOWN, "shutdown"),
}


def plan(state: TaskState, desired: TaskState) -> Step:
    if desired >= TaskState.SHUTDOWN:
        return Step.NOOP if state >= TaskState.COMPLETE else Step.SHUTDOWN
    if state > desired:
        return Step.NOOP
    if state == TaskState.PREPARING:
        return Step.PREPARE
    if state == TaskState.STARTING:
        return Step.START
    if state == TaskState.RUNNING:
        return Step.WAIT
    if state < desired:
        if state <= TaskState.ASSIGNED:
            return Step.ACCEPT
        if state == TaskState.ACCEPTED:
            return Step.BEGIN_PREPARE
        if state == TaskState.READY:
            return Step.BEGIN_START
    return Step.NOOP


def failure_state(state: TaskState) -> TaskState:
    """Where a fatal error leaves a task: it never ran (REJECTED) or it did (FAILED)."""
    return TaskState.REJECTED if state < TaskState.STARTING else TaskState.FAILED
