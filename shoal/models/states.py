"""Ordered states. Task states only ever increase (SwarmKit's TLA+ invariant), so they compare with < and >.

On the wire every state is its lowercase name; the rank below gives the order (SwarmKit uses gaps of 64)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from functools import total_ordering
from typing import Any


@total_ordering
class TaskState(StrEnum):
    NEW = "new"
    PENDING = "pending"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    PREPARING = "preparing"
    READY = "ready"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETE = "complete"
    SHUTDOWN = "shutdown"
    FAILED = "failed"
    REJECTED = "rejected"
    REMOVE = "remove"  # only ever a desired state
    ORPHANED = "orphaned"

    @property
    def rank(self) -> int:
        return _TASK_RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, TaskState):
            if isinstance(other, str):
                other = TaskState(other)
            else:
                return NotImplemented
        return _TASK_RANK[self] < _TASK_RANK[other]

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, TaskState):
            if isinstance(other, str):
                other = TaskState(other)
            else:
                return NotImplemented
        return _TASK_RANK[self] > _TASK_RANK[other]

    def __ge__(self, other: object) -> bool:
        return not self < other  # type: ignore[operator]

    def __le__(self, other: object) -> bool:
        return not self > other  # type: ignore[operator]

    __hash__ = StrEnum.__hash__

    @property
    def terminal(self) -> bool:
        """Past RUNNING: the task will never run again."""
        return self > TaskState.RUNNING


_TASK_RANK = {s: i * 64 for i, s in enumerate(TaskState)}
_RANK_OF_NAME = {s.value: r for s, r in _TASK_RANK.items()}


def task_rank(state: object) -> int:
    """The rank of a task state as stored (`TaskState` or its wire name); a missing or unknown one ranks as NEW
    (the one rank table: allocator and scheduler compare stored states with it)."""
    return _RANK_OF_NAME.get(str(state), 0)


class NodeState(StrEnum):
    UNKNOWN = "unknown"
    DOWN = "down"
    READY = "ready"
    DISCONNECTED = "disconnected"


class Availability(StrEnum):
    ACTIVE = "active"
    PAUSE = "pause"
    DRAIN = "drain"


class NodeRole(StrEnum):
    WORKER = "worker"
    MANAGER = "manager"


def state_label(status: Mapping[str, Any] | None) -> str:
    """A task status's state as a metric label: one of TaskState's values, or "unknown" (bounded label values;
    "none" for no status at all: a task being created)."""
    if status is None:
        return "none"
    try:
        return str(TaskState(str(status.get("state"))))
    except ValueError:
        return "unknown"
