"""The allocator's pure core: NEW → PENDING (SwarmKit `manager/allocator`).

SwarmKit's task allocators *vote*: a task moves to PENDING ("pending task scheduling") once every voter has
allocated what it needs (today only "network": IPs, VIPs, ingress ports). Here each voter is a function
`(task, state) -> Allocation | Deferred`; `allocate` runs them all and merges their task fields, or returns the
first reason to wait. There are no voters yet — networks and ports slot into `VOTERS` together with the pool
state they need in `AllocatorState`. No I/O, no clock: `now` is given."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.models.kinds import Kind
from shoal.models.objects import Obj, desired_of, state_of, task_status
from shoal.models.states import TaskState
from shoal.plan import Plan
from shoal.store import txn as t

PENDING_MESSAGE = "pending task scheduling"  # SwarmKit's message, shown by `service ps`


@dataclass(frozen=True)
class Allocation:
    """Fields to set on the task (e.g. `networks` with addresses, `endpoint` ports)."""

    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Deferred:
    """Cannot allocate yet (e.g. a pool is exhausted); the task stays NEW with this reason in `status.err`."""

    reason: str


@dataclass
class AllocatorState:
    """Cluster-wide allocation state rebuilt from the store (address pools, ingress port map). Empty until the
    network voter lands; `take` records an allocation so later tasks of the same pass see it."""

    allocated: int = 0

    @staticmethod
    def build(tasks: Iterable[Obj]) -> AllocatorState:
        return AllocatorState()

    def take(self, allocation: Allocation) -> None:
        self.allocated += 1


Voter = Callable[[Obj, AllocatorState], Allocation | Deferred]
VOTERS: tuple[Voter, ...] = ()


def allocate(task: Obj, state: AllocatorState, voters: Sequence[Voter] = VOTERS) -> Allocation | Deferred:
    """Every voter must agree; their fields are merged."""
    fields: dict[str, Any] = {}
    for voter in voters:
        result = voter(task, state)
        if isinstance(result, Deferred):
            return result
        fields.update(result.fields)
    return Allocation(fields)


def wants_allocation(task: Obj) -> bool:
    """NEW and still meant to run: a task already past RUNNING in desired state is never allocated (SwarmKit
    skips dead tasks); the orchestrator's reaper deletes it."""
    return state_of(task) == TaskState.NEW and desired_of(task) <= TaskState.RUNNING


def plan(tasks: Iterable[Obj], state: AllocatorState, now: float, *, limit: int = 199,
         voters: Sequence[Voter] = VOTERS) -> Plan:
    """Up to `limit` ops, oldest tasks first (one bounded transaction per pass; the rest go next pass)."""
    out = Plan()
    todo = sorted((x for x in tasks if wants_allocation(x)),
                  key=lambda x: ((x.get("meta") or {}).get("created_at") or 0.0, x["id"]))
    for task in todo:
        if len(out.groups) >= limit:
            break
        result = allocate(task, state, voters)
        if isinstance(result, Deferred):
            if (task.get("status") or {}).get("err") != result.reason:  # write only on change: no loops
                status = {**task["status"], "err": result.reason}
                out.add([t.update(Kind.TASK, {**task, "status": status})])
            continue
        state.take(result)
        new = {**task, **result.fields, "status": task_status(TaskState.PENDING, now, PENDING_MESSAGE)}
        out.add([t.update(Kind.TASK, new)])
    return out
