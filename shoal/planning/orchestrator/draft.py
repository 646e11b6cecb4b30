"""`Draft`: the view as the plan built so far will leave it, so each phase of a pass sees the decisions of the
phases before it. Every write it emits carries the version it was decided on (`expect_version`), so a decision
made on a stale view fails as a whole and is taken again on a fresher one. An object is changed at most once
per pass; the next pass, over the view including this pass's writes, continues."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from shoal.models.kinds import Kind
from shoal.models.objects import Obj, desired_of
from shoal.models.states import TaskState
from shoal.plan import Plan
from shoal.planning.orchestrator.modes import SlotKey, slot_key
from shoal.store import txn as t
from shoal.store.txn import Op


@dataclass(frozen=True)
class View:
    """What the orchestrator reads (its mirror's tables, by id)."""

    services: Mapping[str, Obj]
    tasks: Mapping[str, Obj]
    nodes: Mapping[str, Obj]
    cluster: Obj | None = None
    #: makes the ids of the tasks a pass creates (None: `shoal.ids.new_id`); a simulation injects its seeded one
    ids: Callable[[], str] | None = None


@dataclass(frozen=True)
class Seen:
    """What the shell observed between passes, in memory only (a new leader starts empty, like SwarmKit's
    components): `running_at` — when update tasks were seen RUNNING (their status time then), for failure
    detection after they stopped; `since` — when this instance started watching; `nodes_checked` — node id →
    the version the constraint enforcer last checked (None: check every node)."""

    running_at: Mapping[str, float] = field(default_factory=dict)
    since: float = -math.inf
    nodes_checked: Mapping[str, int] | None = None


@dataclass
class Draft:
    view: View
    tasks: dict[str, Obj] = field(init=False)
    touched: set[str] = field(default_factory=set)
    services_touched: set[str] = field(default_factory=set)
    plan: Plan = field(default_factory=Plan)

    def __post_init__(self) -> None:
        self.tasks = dict(self.view.tasks)

    # ---- task writes ----------------------------------------------------------------------------------------
    def raise_desired(self, task: Obj, state: TaskState) -> Op | None:
        """An op raising `task`'s desired state (never lowering it: desired state only increases)."""
        if task["id"] in self.touched or desired_of(task) >= state:
            return None
        return self.replace({**task, "desired_state": str(state)})

    def replace(self, new: Obj) -> Op | None:
        """An op writing `new` over the task of the same id (as read), unless it was already changed."""
        old = self.view.tasks.get(new["id"])
        if new["id"] in self.touched or old is None:
            return None
        self.tasks[new["id"]] = new
        self.touched.add(new["id"])
        return t.update(Kind.TASK, new, expect_version=old["meta"]["version"])

    def create(self, task: Obj) -> Op:
        self.tasks[task["id"]] = task
        self.touched.add(task["id"])
        return t.create(Kind.TASK, task)

    def delete(self, task: Obj) -> Op | None:
        if task["id"] in self.touched:
            return None
        self.touched.add(task["id"])
        del self.tasks[task["id"]]
        return t.delete(Kind.TASK, task["id"], expect_version=task["meta"]["version"])

    # ---- service writes (update status, automatic rollback) -------------------------------------------------
    def update_service(self, new: Obj) -> Op | None:
        sid = new["id"]
        old = self.view.services.get(sid)
        if old is None or sid in self.services_touched:
            return None
        self.services_touched.add(sid)
        return t.update(Kind.SERVICE, new, expect_version=old["meta"]["version"])

    # ---- lookups --------------------------------------------------------------------------------------------
    def by_service(self) -> dict[str, list[Obj]]:
        out: dict[str, list[Obj]] = {}
        for task in self.tasks.values():
            out.setdefault(task["service_id"], []).append(task)
        return out

    def by_slot(self) -> dict[SlotKey, list[Obj]]:
        out: dict[SlotKey, list[Obj]] = {}
        for task in self.tasks.values():
            out.setdefault(slot_key(task, self.view.services.get(task["service_id"])), []).append(task)
        return out
