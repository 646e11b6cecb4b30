"""NodeIndex: the dispatcher's index of its store view by node — which tasks name each node, and the long polls
waiting on each node — kept current from every batch of changes the mirror takes in (or the dispatcher writes),
so a change wakes exactly the long polls of the nodes it concerns.

For the nodes whose session is here (`track`), it also gathers which of their tasks changed since their last
assignment message (`take_changes`), so that message is the diff of those tasks only (issue 13: diffing a
node's whole set on every message made the dispatcher's cost per change proportional to the node's tasks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from services.dispatcher import core
from shoal.models.kinds import Kind
from shoal.models.objects import Obj
from shoal.store.mirror import StoreMirror
from shoal.store.txn import Change


class NodeIndex:
    def __init__(self, mirror: StoreMirror) -> None:
        self.mirror = mirror
        self.tasks_of: dict[str, set[str]] = {}  # node id -> ids of tasks naming it
        self.node_of: dict[str, str] = {}  # task id -> node id
        self.events: dict[str, asyncio.Event] = {}
        #: node id -> perf_counter() of its oldest task change not yet sent (the assignment lag metric)
        self.changed_at: dict[str, float] = {}
        #: tracked node id -> ids of its tasks (as it held them, or as they are) changed since `take_changes`
        self.changed: dict[str, set[str]] = {}
        #: bumped by a re-list (everything may have changed) and by a secret or config change (a node's
        #: dependencies may have moved); a node's next diff compares them with what it saw (`take_changes`)
        self.relists = 0
        self.payload_changes = 0
        #: node id -> count of changes of its tasks (what was computed from them is current while it holds)
        self.generation: dict[str, int] = {}

    def absorb(self, changes: Iterable[Change] | None) -> list[str]:
        """Fold `changes` (None: the mirror re-listed, everything may have changed) in and wake the nodes they
        concern; returns the ids of nodes deleted in them (the dispatcher ends their sessions)."""
        if changes is None:
            self.relists += 1
            self.tasks_of.clear()
            self.node_of.clear()
            for task in self.mirror.objects[Kind.TASK].values():
                if task.get("node_id"):
                    self.node_of[task["id"]] = task["node_id"]
                    self.tasks_of.setdefault(task["node_id"], set()).add(task["id"])
            self.wake_all()
            return []
        deleted = []
        for c in changes:
            if c.kind in (Kind.SECRET, Kind.CONFIG):
                self.payload_changes += 1
                self.wake_all()  # rare (data is immutable): a task may have arrived before the secret it references
                continue
            if c.kind == Kind.NODE and c.action == "delete":
                deleted.append(c.id)
            if c.kind != Kind.TASK:
                continue
            old = self.node_of.get(c.id)
            new: str | None = c.object.get("node_id") if c.action != "delete" else None
            if old != new:
                if old is not None:
                    self.tasks_of.get(old, set()).discard(c.id)
                    del self.node_of[c.id]
                if new is not None:
                    self.node_of[c.id] = new
                    self.tasks_of.setdefault(new, set()).add(c.id)
            for affected in (old, new):
                if affected is not None:
                    self.changed_at.setdefault(affected, time.perf_counter())
                    self.wake(affected)
                    self.generation[affected] = self.generation.get(affected, 0) + 1
                    if (ids := self.changed.get(affected)) is not None:
                        ids.add(c.id)
        return deleted

    def wake(self, node_id: str) -> None:
        ev = self.events.pop(node_id, None)
        if ev is not None:
            ev.set()

    def wake_all(self) -> None:
        for node_id in list(self.events):
            self.wake(node_id)

    def event(self, node_id: str) -> asyncio.Event:
        """What a long poll of `node_id` waits on (set, and replaced, at the node's next change)."""
        return self.events.setdefault(node_id, asyncio.Event())

    def track(self, node_id: str) -> None:
        """Gather the changes of `node_id`'s tasks from now on (its session is here); forgets earlier ones."""
        self.changed[node_id] = set()

    def untrack(self, node_id: str) -> None:
        self.changed.pop(node_id, None)

    def take_changes(self, node_id: str) -> set[str]:
        """The ids of `node_id`'s tasks (before or after the change) changed since the last call, and from
        now on gather afresh. Only a tracked node's are gathered (an untracked node gets an empty set)."""
        ids = self.changed.get(node_id)
        if ids is None:
            return set()
        self.changed[node_id] = set()
        return ids

    def task_for(self, node_id: str, task_id: str) -> Obj | None:
        """Task `task_id` as node `node_id` must hold it, or None when the node must not hold it."""
        task = self.mirror.get(Kind.TASK, task_id)
        return task if task is not None and core.is_assigned_to(task, node_id) else None

    def tasks(self, node_id: str) -> dict[str, Obj]:
        """The tasks node `node_id` must hold: assigned to it, observed state ≥ ASSIGNED."""
        out = {}
        for tid in self.tasks_of.get(node_id, ()):
            task = self.mirror.get(Kind.TASK, tid)
            if task is not None and core.is_assigned_to(task, node_id):
                out[tid] = task
        return out

    def dependencies(self, tasks: Iterable[Obj]) -> dict[str, dict[str, Obj]]:
        """The secrets and configs `tasks` (a node's) reference while they need them, as the node receives them.
        One that is not in the view (yet) is left out; its arrival wakes the node's long poll."""
        out: dict[str, dict[str, Obj]] = {}
        for kind, ids in core.dependency_ids(tasks).items():
            objs = (self.mirror.get(kind, i) for i in sorted(ids))
            out[kind] = {o["id"]: core.payload_view(o) for o in objs if o is not None}
        return out
