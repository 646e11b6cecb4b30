"""Following a service until it has converged, pure: `Tracker.observe(service, tasks, now)` -> what each slot is
doing and a `Verdict` (still converging, converged, or failed and why). No I/O; the caller polls the gateway and
renders (shoal/cli/follow.py).

A service has converged when the orchestrator is not in the middle of an update and every task meant to run
runs the service's current task spec, as many as desired (replicated: `replicas`; global: one per eligible
node; jobs: the completions are done). It has failed — and following stops, saying why — when:
- its update is paused (`update_status` paused or rollback_paused), naming the task error that paused it;
- an update was rolled back automatically (not when the rollback is what was asked for);
- a task stays pending with a reason from the scheduler (no node fits...) longer than `pending_bound`;
- outside an update, `failure_limit` tasks of the current spec fail (a command or image that cannot run;
  Docker's progress would wait for ever).
Tasks already terminal at the first observation are history, not failures of this change."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

UPDATING = frozenset({"updating", "rollback_started"})
FAILED_STATES = frozenset({"failed", "rejected"})
TERMINAL_STATES = frozenset({"complete", "shutdown", "failed", "rejected", "orphaned", "remove"})
#: states before a node runs the task, in which the scheduler explains why it waits
WAITING_STATES = frozenset({"new", "pending"})
JOB_MODES = frozenset({"replicated_job", "global_job"})
_TASK_IN_MESSAGE = re.compile(r"task ([0-9a-z]{6,})")


@dataclass(frozen=True)
class Slot:
    """What one slot (replicated) or node (global) shows: its newest task."""

    label: str
    task_id: str
    state: str
    desired: str
    node: str
    message: str
    current: bool


@dataclass(frozen=True)
class Verdict:
    done: bool
    ok: bool
    summary: str
    reason: str = ""


def mode_of(service: Obj) -> str:
    mode = service.get("spec", {}).get("mode") or {}
    return next(iter(mode), "replicated")


def _state(task: Obj) -> str:
    return str((task.get("status") or {}).get("state") or "new")


def _message(task: Obj) -> str:
    status = task.get("status") or {}
    return str(status.get("err") or status.get("message") or "")


def _created(task: Obj) -> float:
    return float((task.get("meta") or {}).get("created_at") or (task.get("status") or {}).get("timestamp") or 0)


def task_label(task: Obj) -> str:
    name = task.get("service_name") or "task"
    return f"{name}.{task.get('slot') or str(task.get('node_id') or '')[:12] or task['id'][:12]}"


def is_current(service: Obj, task: Obj) -> bool:
    """The task runs the service's current task spec (what the orchestrator's dirty check compares)."""
    return bool(task.get("spec") == service.get("spec", {}).get("task"))


def newest_per_slot(tasks: Iterable[Obj], mode: str) -> dict[str, Obj]:
    """The newest task of each slot (replicated) or node (global)."""
    out: dict[str, Obj] = {}
    for t in sorted(tasks, key=_created):
        key = str(t.get("slot")) if mode in ("replicated", "replicated_job") else str(t.get("node_id") or t["id"])
        out[key] = t
    return out


@dataclass
class Tracker:
    """Follows one service; `rollback`: the change followed is a rollback (its completion is success)."""

    pending_bound: float = 30.0
    failure_limit: int = 3
    rollback: bool = False
    _history: set[str] | None = None
    _started: float | None = None
    _waiting_since: dict[str, float] = field(default_factory=dict)

    def observe(self, service: Obj, tasks: Sequence[Obj], now: float) -> tuple[list[Slot], Verdict]:
        own = [t for t in tasks if t.get("service_id") == service["id"]]
        if self._history is None:
            self._history = {t["id"] for t in own if _state(t) in TERMINAL_STATES}
            self._started = now
        slots = self._slots(service, own)
        return slots, self._verdict(service, own, now)

    def _slots(self, service: Obj, own: list[Obj]) -> list[Slot]:
        mode = mode_of(service)
        live = [t for t in own if t.get("desired_state") in ("running", "complete") or _state(t) == "running"]
        newest = newest_per_slot(live or own, mode)
        return [Slot(task_label(t), t["id"], _state(t), str(t.get("desired_state") or ""),
                     str(t.get("node_id") or ""), _message(t), is_current(service, t))
                for _, t in sorted(newest.items(), key=lambda kv: (len(kv[0]), kv[0]))]

    def _verdict(self, service: Obj, own: list[Obj], now: float) -> Verdict:
        name = str(service["spec"].get("name") or service["id"])
        status = service.get("status") or {}
        update = service.get("update_status") or {}
        ustate = str(update.get("state") or "")
        if ustate in ("paused", "rollback_paused"):
            what = "update paused" if ustate == "paused" else "rollback paused"
            return Verdict(True, False, what, f"{name}: {what}: {update.get('message') or ''}"
                                              f"{self._cause(update, own)}")
        if ustate == "rollback_completed" and not self.rollback:
            return Verdict(True, False, "rolled back", f"{name}: the update was rolled back: "
                                                       f"{update.get('message') or ''}{self._cause(update, own)}")
        if (stuck := self._stuck_pending(own, now)) is not None:
            return Verdict(True, False, "pending", f"{name}: {stuck}")
        active = ustate in UPDATING
        if not active and (failed := self._new_failures(service, own)):
            last = max(failed, key=_created)
            return Verdict(True, False, "failing",
                           f"{name}: {len(failed)} tasks failed (last: {task_label(last)}: "
                           f"{_message(last) or _state(last)})")
        desired = int(status.get("desired") or 0)
        if mode_of(service) in JOB_MODES:
            completed = int(status.get("completed") or 0)
            summary = f"{completed}/{desired} completed"
            return Verdict(desired > 0 and completed >= desired and not active, True, summary)
        meant = [t for t in own if t.get("desired_state") == "running"]
        good = [t for t in meant if _state(t) == "running" and is_current(service, t)]
        summary = f"{len(good)}/{desired} running" + (f" ({ustate.replace('_', ' ')})" if active else "")
        converged = not active and len(good) == len(meant) == desired
        if mode_of(service) == "global" and desired == 0:
            # its tasks are not made yet — or no node is eligible (Docker's "0 out of 0"), once it has had time
            converged = now - (self._started if self._started is not None else now) >= self.pending_bound
            summary += " (no eligible node)" if converged else ""
        return Verdict(converged, True, summary)

    def _stuck_pending(self, own: list[Obj], now: float) -> str | None:
        waiting = {t["id"]: t for t in own
                   if _state(t) in WAITING_STATES and t.get("desired_state") == "running"
                   and (t.get("status") or {}).get("err")}
        for tid in list(self._waiting_since):
            if tid not in waiting:
                del self._waiting_since[tid]
        for tid, t in waiting.items():
            since = self._waiting_since.setdefault(tid, now)
            if now - since >= self.pending_bound:
                return (f"task {task_label(t)} is still {_state(t)} after {now - since:.0f}s (the bound is "
                        f"{self.pending_bound:g}s): {(t.get('status') or {}).get('err')}")
        return None

    def _new_failures(self, service: Obj, own: list[Obj]) -> list[Obj]:
        history = self._history or set()
        failed = [t for t in own if _state(t) in FAILED_STATES and t["id"] not in history
                  and is_current(service, t)]
        return failed if len(failed) >= self.failure_limit else []

    @staticmethod
    def _cause(update: Obj, own: list[Obj]) -> str:
        """The error of the task an update status names, or of the newest failed task."""
        m = _TASK_IN_MESSAGE.search(str(update.get("message") or ""))
        named = [t for t in own if m and t["id"] == m.group(1)]
        failed = named or sorted((t for t in own if _state(t) in FAILED_STATES), key=_created)[-1:]
        if not failed:
            return ""
        t = failed[-1]
        return f" (task {task_label(t)}: {_message(t) or _state(t)})"
