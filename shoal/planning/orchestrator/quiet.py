"""When the orchestrator need not look again: changes that cannot give a full pass anything to do (pure).

A full `reconcile` walks every task; during a ramp most task changes are the allocator, the scheduler and the
agents moving a healthy task along NEW → PENDING → ASSIGNED → … → RUNNING, which no phase of the orchestrator
acts on (SwarmKit's replicated orchestrator likewise ignores a task event unless the task died or its node is
invalid, `handleTaskChange`). `benign(old, task, ...)` says whether one task change is such a change; the shell
skips its pass when the previous full pass planned nothing and every change since is benign (no service, node
or cluster changed, the timer the pass set has not fired). A change is benign when, with the service's and the
nodes' objects unchanged:
- the task is an existing task of an existing replicated or global service whose update is not running
  (`updating`/`rollback_started` watch every task of the service);
- its desired state stays RUNNING and its observed state moves forward within NEW..RUNNING (it neither died nor
  left; READY replacements and their release are the restart supervisor's business);
- it is at the service's spec version (clean for the update supervisor without looking at its node), and, once
  an update completed, not one of that update's tasks (their progress frees the update's workers);
- it is the only runnable task of its slot (so no slot of two — a start-first window, a replacement — is
  affected), and its node, once it has one, exists, is not down and not drained, and was not another node.
The reaper, the restart supervisor, the scale count, the update supervisor's dirty check and the jobs do not
change their answer for such a change; tests/unit/test_orchestrator_quiet.py checks that a full pass after any
sequence of benign changes from a pass that planned nothing plans nothing either."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shoal.models.objects import Obj, status_state
from shoal.models.states import TaskState, task_rank
from shoal.planning.orchestrator import update_status as us
from shoal.planning.orchestrator.modes import UPDATE, by_node, mode
from shoal.planning.orchestrator.restart import node_invalid

_RUNNING = TaskState.RUNNING.rank

#: what the orchestrator remembers of a task between passes: (service id, slot, node id, desired, observed)
Mark = tuple[str, int, str, int, int]


def mark_of(task: Obj) -> Mark:
    return (str(task.get("service_id") or ""), int(task.get("slot") or 0), str(task.get("node_id") or ""),
            task_rank(task.get("desired_state")), task_rank(status_state(task)))


class TaskMarks:
    """The marks of every task and how many runnable tasks each slot (by number, and by node) holds."""

    def __init__(self) -> None:
        self.marks: dict[str, Mark] = {}
        self.live: dict[tuple[str, str, Any], int] = {}

    def rebuild(self, tasks: Iterable[Obj]) -> None:
        self.marks = {}
        self.live = {}
        for task in tasks:
            self.update(task["id"], task)

    def update(self, tid: str, task: Obj | None) -> Mark | None:
        """Record `task` (None: deleted) as the store now has it; the mark it had."""
        old = self.marks.pop(tid, None)
        if old is not None:
            self._count(old, -1)
        if task is not None:
            new = self.marks[tid] = mark_of(task)
            self._count(new, 1)
        return old

    def _count(self, m: Mark, sign: int) -> None:
        if m[3] > _RUNNING:
            return
        for key in ((m[0], "slot", m[1]), (m[0], "node", m[2])):
            n = self.live.get(key, 0) + sign
            if n:
                self.live[key] = n
            else:
                del self.live[key]

    def runnable_in_slot(self, service: Obj, m: Mark) -> int:
        return self.live.get((m[0], "node", m[2]) if by_node(service) else (m[0], "slot", m[1]), 0)


def benign(old: Mark | None, task: Obj | None, services: Mapping[str, Obj], nodes: Mapping[str, Obj],
           marks: TaskMarks) -> bool:
    """Whether this change of one task (`old` its previous mark, `task` as it is now, already in `marks`) can
    give no phase of a full pass anything to do — see the module docstring."""
    if old is None or task is None:
        return False
    new = mark_of(task)
    sid = new[0]
    service = services.get(sid) if sid else None
    if service is None or sid != old[0] or mode(service) not in ("replicated", "global"):
        return False
    state = us.state_of(service)
    if state in us.ACTIVE:
        return False
    if new[3] != _RUNNING or old[3] != _RUNNING or not (old[4] <= new[4] <= _RUNNING):
        return False
    if task.get("spec_version") is None or task.get("spec_version") != service.get("spec_version", 1):
        return False
    if task.get("created_by") == UPDATE and state not in (None, us.PAUSED, us.ROLLBACK_PAUSED):
        return False
    if old[1] != new[1] or (old[2] and old[2] != new[2]) or (new[2] and node_invalid(task, nodes)):
        return False
    return marks.runnable_in_slot(service, new) == 1
