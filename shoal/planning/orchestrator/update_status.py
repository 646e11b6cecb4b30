"""The service's `update_status` and the automatic rollback: the service writes the orchestrator owns.

States (SwarmKit's UpdateStatus): `updating` → `paused` | `completed`, or → `rollback_started` (automatic:
failure_action rollback; manual: the gateway) → `rollback_paused` | `rollback_completed`. None means no update
was seen since the last spec change (a user update resets it to None). Messages are SwarmKit's. Each function
returns the new service object; the caller writes it with the version it read as a precondition."""

from __future__ import annotations

from typing import Any

from shoal.models.objects import Obj

UPDATING = "updating"
PAUSED = "paused"
COMPLETED = "completed"
ROLLBACK_STARTED = "rollback_started"
ROLLBACK_PAUSED = "rollback_paused"
ROLLBACK_COMPLETED = "rollback_completed"

#: an update is running (failures are watched, slots are replaced, completion is awaited)
ACTIVE = frozenset({UPDATING, ROLLBACK_STARTED})
#: nothing happens until the user changes the spec (or asks for a rollback)
STOPPED = frozenset({PAUSED, ROLLBACK_PAUSED})


def state_of(service: Obj) -> str | None:
    status = service.get("update_status")
    return str(status["state"]) if status else None


def _with(service: Obj, **fields: Any) -> Obj:
    return {**service, "update_status": {**(service.get("update_status") or {}), **fields}}


def started(service: Obj, now: float) -> Obj:
    return {**service, "update_status": {"state": UPDATING, "message": "update in progress", "started_at": now}}


def paused(service: Obj, task_id: str) -> Obj:
    if state_of(service) == ROLLBACK_STARTED:
        return _with(service, state=ROLLBACK_PAUSED,
                     message=f"rollback paused due to failure or early termination of task {task_id}")
    return _with(service, state=PAUSED, message=f"update paused due to failure or early termination of task {task_id}")


def completed(service: Obj, now: float) -> Obj:
    if state_of(service) == ROLLBACK_STARTED:
        return _with(service, state=ROLLBACK_COMPLETED, message="rollback completed", completed_at=now)
    return _with(service, state=COMPLETED, message="update completed", completed_at=now)


def rolled_back(service: Obj, task_id: str) -> Obj:
    """SwarmKit's `rollbackUpdate`: spec ← previous spec, previous spec cleared, state rollback_started (the
    update's `started_at` is kept). SwarmKit restores the previous spec *version* too; our spec versions are a
    counter that only grows (tasks and the restart history tell versions apart by it), so the rolled-back
    spec gets the next one, as a manual rollback does."""
    return {**service, "spec": service["previous_spec"], "previous_spec": None,
            "spec_version": int(service.get("spec_version", 1)) + 1,
            "update_status": {**(service.get("update_status") or {}), "state": ROLLBACK_STARTED,
                              "message": f"update rolled back due to failure or early termination of task {task_id}"}}
