"""The allocator's tasks, kept up to date task by task (pure): which want an allocation and what each holds.

A pass used to walk every task twice — for the addresses they hold (`HoldCache`) and for the NEW ones to
allocate — although most tasks of a big cluster want nothing (they are past NEW) and hold nothing (process
tasks, tasks on no network). The shell feeds this index the tasks that changed since its last pass (`update`;
`rebuild` from every task on a full pass), and a pass then reads only the tasks that want something and the
holders: O(changed + wanting + holding), and nothing at all for a task that needs nothing allocated."""

from __future__ import annotations

from collections.abc import Iterable

from services.allocator.core import wants_allocation
from services.allocator.state import Holds, _age, task_holds
from shoal.models.objects import Obj


class TaskIndex:
    def __init__(self) -> None:
        #: NEW tasks meant to run, by id (what `core.plan` allocates)
        self.wanting: dict[str, Obj] = {}
        #: task id -> (its node id or "", the addresses it holds), for the tasks holding any
        self.held: dict[str, tuple[str, Holds]] = {}
        #: the wanting tasks that carry an error (could not be allocated)
        self.errored: set[str] = set()
        self._newest: tuple[float, str] | None = None  # the age of the newest wanting task inserted
        self._ordered = True  # `wanting` is oldest first (tasks mostly come in creation order)

    def rebuild(self, tasks: Iterable[Obj]) -> None:
        self.wanting = {}
        self.held = {}
        self.errored = set()
        self._newest = None
        self._ordered = True
        for task in tasks:
            self.update(task["id"], task)

    def update(self, tid: str, task: Obj | None) -> None:
        """`task` (None: deleted) is as the store now has it."""
        self.wanting.pop(tid, None)
        self.held.pop(tid, None)
        self.errored.discard(tid)
        if task is None:
            return
        if wants_allocation(task):
            age = _age(task)
            if self._newest is not None and age < self._newest:
                self._ordered = False
            else:
                self._newest = age
            self.wanting[tid] = task
            if (task.get("status") or {}).get("err"):
                self.errored.add(tid)
        if task.get("networks"):
            held = task_holds(task)
            if held:
                self.held[tid] = (str(task.get("node_id") or ""), held)

    def oldest_first(self) -> Iterable[Obj]:
        """The wanting tasks, oldest first (re-sorted only after a task came out of order)."""
        if not self._ordered:
            self.wanting = dict(sorted(self.wanting.items(), key=lambda kv: _age(kv[1])))
            self._ordered = True
        if not self.wanting:
            self._newest = None
        return self.wanting.values()

    def holds(self) -> list[tuple[str, Holds]]:
        """(node id or "", what it holds) of every task that holds something (`HoldCache.holds`' answer)."""
        return list(self.held.values())

    def deferred(self) -> int:
        """NEW tasks that could not be allocated (their error is written)."""
        return len(self.errored)
