"""The update supervisor: rolling updates and rollbacks, pure (SwarmKit `manager/orchestrator/update/updater.go`).

SwarmKit runs one updater goroutine per service and loses it on a leader change (the next leader restarts it
from the dirty slots). Here every pass derives the update's progress from the store instead, so a failover
resumes where the store says it is:
- *this update* = the service's `update_status` plus the tasks the updater created (`created_by: "update"`)
  at the service's current `spec_version` — a new spec (or rollback) has a new version, which is what cancels
  the running update: its half-done slots are simply dirty again;
- a slot is *in progress* while its newest update task is meant to run and has not reached RUNNING, and
  keeps its worker `delay` longer; at most `parallelism` slots (0 = all) are in progress or in their delay;
- failures, the failure ratio and completion are computed from those tasks (see `Config`, `failed`).

Per dirty slot (`dirty.slot_dirty`), like SwarmKit's worker: if the slot has a clean task, keep it and shut the
others down (`useExistingTask`; with start-first only once the kept task runs); otherwise, with a free worker,
create a task at the new spec: stop-first → desired READY and the old tasks desired SHUTDOWN in the same
transaction (the restart supervisor's release starts the new one once the old stopped, ≤ 1 minute);
start-first → desired RUNNING at once, the old ones shut down when it reaches RUNNING.

Status (`update_status.py`): None + dirty slots → `updating`; failures over the ratio → failure action;
nothing dirty or in progress → once the last updated slot has been watched long enough, `completed`.
Paused states stay until the user changes the spec."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shoal.models.duration import parse_duration
from shoal.models.objects import Obj, desired_of, state_of
from shoal.models.states import TaskState
from shoal.planning.orchestrator import update_status as us
from shoal.planning.orchestrator.dirty import slot_dirty, task_dirty
from shoal.planning.orchestrator.draft import Draft, Seen
from shoal.planning.orchestrator.modes import UPDATE, SlotKey, by_node, make_task, slot_key
from shoal.planning.orchestrator.restart import created_at, status_time

#: observed states that end a task early; SHUTDOWN is not one: only the manager asks for it
FAILURE_STATES = frozenset({TaskState.COMPLETE, TaskState.FAILED, TaskState.REJECTED, TaskState.ORPHANED})


@dataclass(frozen=True)
class Config:
    """The service's update_config (or rollback_config while rolling back), with SwarmKit's defaults."""

    parallelism: int = 1
    delay: float = 0.0
    failure_action: str = "pause"
    monitor: float = 5.0
    max_failure_ratio: float = 0.0
    order: str = "stop-first"

    @staticmethod
    def of(service: Obj, rollback: bool) -> Config:
        raw = service["spec"].get("rollback_config" if rollback else "update_config") or {}
        return Config(parallelism=int(raw.get("parallelism", 1)), delay=parse_duration(raw.get("delay", 0.0)),
                      failure_action=str(raw.get("failure_action", "pause")),
                      monitor=parse_duration(raw.get("monitor", 5.0)),
                      max_failure_ratio=float(raw.get("max_failure_ratio", 0.0)),
                      order=str(raw.get("order", "stop-first")))

    @property
    def final_watch(self) -> float:
        """How long the last updated slot is watched before the update completes: `monitor`, or `delay + 1 s`
        when the delay is not shorter than the monitor period."""
        return self.monitor if self.delay < self.monitor else self.delay + 1.0


def reached_at(task: Obj, seen: Seen) -> float | None:
    """When an update task reached RUNNING or beyond (the worker is then done with its slot), if it did."""
    s = state_of(task)
    if s == TaskState.RUNNING:
        return status_time(task)
    if s > TaskState.RUNNING:
        return seen.running_at.get(task["id"], status_time(task))
    return None


def failed(task: Obj, monitor: float, seen: Seen) -> bool:
    """A task of this update that ended before RUNNING, or within `monitor` of reaching it. When it was seen
    RUNNING the gap is exact; when not (it failed between two looks, or before this leader was watching) it
    counts like SwarmKit's never-seen-running tasks if it ended within `monitor` of its creation or while this
    instance watched — a failure before a failover that SwarmKit's fresh updater would not know about, and that
    happened long after the task was made, is not counted."""
    if state_of(task) not in FAILURE_STATES or desired_of(task) >= TaskState.REMOVE:
        return False
    end = status_time(task)
    ran = seen.running_at.get(task["id"])
    if ran is not None:
        return end - ran <= monitor
    return end - created_at(task) <= monitor or end >= seen.since


def _age(task: Obj) -> tuple[float, str]:
    return (created_at(task) if task.get("meta") else math.inf, task["id"])


def supervise(d: Draft, service: Obj, slots: Sequence[tuple[SlotKey, list[Obj]]], seen: Seen, now: float) -> None:
    """One pass of the update supervisor for `service`, whose runnable tasks are `slots` (slot → tasks)."""
    state = us.state_of(service)
    if state in us.STOPPED:
        return
    nodes = d.view.nodes
    dirty = [(key, live) for key, live in slots if slot_dirty(service, live, nodes)]
    if state is None:
        if dirty:
            d.plan.add([op for op in [d.update_service(us.started(service, now))] if op])
        return
    cfg = Config.of(service, state == us.ROLLBACK_STARTED)
    tracking = state in us.ACTIVE  # after completion, stray dirty slots are fixed without failure actions
    version = service.get("spec_version", 1)
    mine = [x for x in d.tasks.values() if x["service_id"] == service["id"]
            and x.get("created_by") == UPDATE and x.get("spec_version") == version]
    if tracking and _failure_action(d, service, cfg, mine, [k for k, _ in dirty], seen):
        return
    newest: dict[SlotKey, Obj] = {}
    for x in sorted(mine, key=_age):
        newest[slot_key(x, service)] = x
    in_progress, busy = _workers(d, cfg, newest, seen, now)
    free = cfg.parallelism - busy if cfg.parallelism > 0 else len(dirty)
    for key, live in dirty:
        if any(x["id"] in d.touched or (desired_of(x) <= TaskState.RUNNING and state_of(x) > TaskState.RUNNING)
               for x in live):
            continue  # the restart supervisor acts on this slot first
        if _use_existing(d, service, cfg, live) or key in in_progress or free <= 0:
            continue
        _start(d, service, cfg, key, live, now)
        free -= 1
    if tracking and not dirty and not in_progress:
        done = [at for x in newest.values() if (at := reached_at(x, seen)) is not None]
        end = max(done) + cfg.final_watch if done else now
        if now >= end:
            d.plan.add([op for op in [d.update_service(us.completed(service, now))] if op])
        else:
            d.plan.wake(end)


def _failure_action(d: Draft, service: Obj, cfg: Config, mine: list[Obj], dirty: list[SlotKey],
                    seen: Seen) -> bool:
    """Run the failure action if more than `max_failure_ratio` of the update's slots failed (strict `>`;
    the slots are the dirty ones plus those already updated, i.e. SwarmKit's dirty set at the start)."""
    if cfg.failure_action == "continue":
        return False
    bad = [x for x in mine if failed(x, cfg.monitor, seen)]
    if not bad:
        return False
    slots = {slot_key(x, service) for x in mine} | set(dirty)
    if len(bad) / max(1, len(slots)) <= cfg.max_failure_ratio:
        return False
    culprit = max(bad, key=lambda x: (status_time(x), x["id"]))["id"]
    if cfg.failure_action == "rollback" and us.state_of(service) == us.UPDATING and service.get("previous_spec"):
        new = us.rolled_back(service, culprit)
    else:  # pause; and a rollback never rolls back again: it pauses
        new = us.paused(service, culprit)
    d.plan.add([op for op in [d.update_service(new)] if op])
    return True


def _workers(d: Draft, cfg: Config, newest: Mapping[SlotKey, Obj], seen: Seen,
             now: float) -> tuple[set[SlotKey], int]:
    """The slots whose update task has not reached RUNNING yet, and how many workers are busy (those, plus
    slots finished less than `delay` ago)."""
    in_progress: set[SlotKey] = set()
    waiting = 0
    for key, x in newest.items():
        if desired_of(x) <= TaskState.RUNNING and state_of(x) < TaskState.RUNNING:
            in_progress.add(key)
            continue
        at = reached_at(x, seen)
        if at is not None and now < at + cfg.delay:
            waiting += 1
            d.plan.wake(at + cfg.delay)
    return in_progress, len(in_progress) + waiting


def _use_existing(d: Draft, service: Obj, cfg: Config, live: list[Obj]) -> bool:
    """SwarmKit's `useExistingTask`: a slot with a clean task keeps it and shuts the other tasks down (after
    the kept task runs, with start-first). False if the slot has no clean task."""
    nodes = d.view.nodes
    clean = [x for x in live if state_of(x) <= TaskState.RUNNING
             and not task_dirty(service, x, nodes.get(str(x.get("node_id") or "")))]
    if not clean:
        return False
    keep = max(clean, key=lambda x: (desired_of(x) == TaskState.RUNNING, state_of(x) == TaskState.RUNNING,
                                     _age(x)))
    if cfg.order == "start-first" and state_of(keep) < TaskState.RUNNING:
        return True  # wait: the old task serves until the new one runs
    d.plan.add([op for x in live if x["id"] != keep["id"] and (op := d.raise_desired(x, TaskState.SHUTDOWN))])
    return True


def _start(d: Draft, service: Obj, cfg: Config, key: SlotKey, live: list[Obj], now: float) -> None:
    """A task at the new spec for the slot: stop-first shuts the old ones down in the same transaction;
    start-first keeps one old task serving (the running one) until the new one runs, and shuts down the rest
    at once (e.g. the unstarted task of a cancelled start-first update), so a slot never holds more than two."""
    node_id = str(key[1]) if by_node(service) else None
    stop_first = cfg.order != "start-first"
    task = make_task(service, 0 if node_id else int(key[1]), now,
                     desired=TaskState.READY if stop_first else TaskState.RUNNING, node_id=node_id,
                     created_by=UPDATE, ids=d.view.ids)
    serving = None if stop_first else max(live, key=lambda x: (state_of(x) == TaskState.RUNNING, _age(x)))
    ops = [d.create(task)]
    ops += [op for x in live if x is not serving and (op := d.raise_desired(x, TaskState.SHUTDOWN))]
    d.plan.add(ops)
