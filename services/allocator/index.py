"""The allocator's tasks, kept up to date task by task (pure): which want an allocation and what each holds.

A pass used to walk every task twice — for the addresses they hold (`HoldCache`) and for the NEW ones to
allocate — although most tasks of a big cluster want nothing (they are past NEW) and hold nothing (process
tasks, tasks on no network). The shell feeds this index the tasks that changed since its last pass (`update`;
`rebuild` from every task on a full pass), and a pass then reads only the tasks that want something and the
holders: O(changed + wanting + holding), and nothing at all for a task that needs nothing allocated."""

from __future__ import annotations

from collections.abc import Iterable

from services.allocator.core import wants_allocation
from services.allocator.state import Holds, task_holds
from shoal.models.objects import Obj


class TaskIndex:
    def __init__(self) -> None:
        #: NEW tasks meant to run, by id (what `core.plan` allocates)
        self.wanting: dict[str, Obj] = {}
        #: task id -> (its node id or "", the addresses it holds), for the tasks holding any
        self.held: dict[str, tuple[str, Holds]] = {}

    def rebuild(self, tasks: Iterable[Obj]) -> None:
        self.wanting = {}
        self.held = {}
        for task in tasks:
            self.update(task["id"], task)

    def update(self, tid: str, task: Obj | None) -> None:
        """`task` (None: deleted) is as the store now has it."""
        self.wanting.pop(tid, None)
        self.held.pop(tid, None)
        if task is None:
            return
        if wants_allocation(task):
            self.wanting[tid] = task
        if task.get("networks"):
            held = task_holds(task)
            if held:
                self.held[tid] = (str(task.get("node_id") or ""), held)

    def holds(self) -> list[tuple[str, Holds]]:
        """(node id or "", what it holds) of every task that holds something (`HoldCache.holds`' answer)."""
        return list(self.held.values())

    def deferred(self) -> int:
        """NEW tasks that could not be allocated (their error is written)."""
        return sum(1 for x in self.wanting.values() if (x.get("status") or {}).get("err"))
