"""The restart supervisor's rules, pure (SwarmKit `manager/orchestrator/restart/restart.go`).

A task is never restarted: a *replacement* is created in the same slot with desired READY, and released to
RUNNING (COMPLETE for job tasks) only once the restart delay has passed *and* the old task has stopped (or its
node is down or gone), or one minute after the delay (`TaskTimeout`) — otherwise two copies could run at once.
Whether to replace at all follows the task's restart policy: condition none / on-failure (not after COMPLETE;
a job task that completed is never restarted, whatever the condition) / any, and at most
`max_attempts` replacements per slot within `window` (0 = ever), counted in an in-memory history that is reset
when the service's spec version changes and is not persisted (SwarmKit loses it on leader change too)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shoal.models.duration import parse_duration
from shoal.models.objects import Obj, desired_of, state_of, status_state
from shoal.models.states import NodeState, TaskState
from shoal.planning.orchestrator.modes import UPDATE, SlotKey, slot_key

#: how long a released replacement waits for the old task to stop (SwarmKit's restart `TaskTimeout`).
STOP_TIMEOUT = 60.0
#: SwarmKit's defaults (`api/defaults/service.go`), used when a stored spec lacks the field.
DEFAULT_DELAY = 5.0

@dataclass(frozen=True)
class RestartPolicy:
    condition: str = "any"
    delay: float = DEFAULT_DELAY
    max_attempts: int = 0
    window: float = 0.0

    @staticmethod
    def of(task: Obj) -> RestartPolicy:
        r = (task.get("spec") or {}).get("restart") or {}
        return RestartPolicy(
            condition=str(r.get("condition", "any")),
            delay=parse_duration(r.get("delay", DEFAULT_DELAY)),
            max_attempts=int(r.get("max_attempts", 0) or 0),
            window=parse_duration(r.get("window", 0.0)),
        )


def created_at(task: Obj) -> float:
    return float((task.get("meta") or {}).get("created_at") or 0.0)


def status_time(task: Obj) -> float:
    return float((task.get("status") or {}).get("timestamp") or 0.0)


# ---- nodes ---------------------------------------------------------------------------------------------------
def node_down_or_gone(node_id: str | None, nodes: Mapping[str, Obj]) -> bool:
    if not node_id:
        return False
    node = nodes.get(node_id)
    return node is None or status_state(node) == NodeState.DOWN.value


def node_drained(node_id: str | None, nodes: Mapping[str, Obj]) -> bool:
    node = nodes.get(node_id or "")
    return node is not None and (node.get("spec") or {}).get("availability") == "drain"


def node_invalid(task: Obj, nodes: Mapping[str, Obj]) -> bool:
    """SwarmKit's `orchestrator.InvalidNode`: the task's node is deleted, DOWN or drained."""
    nid = task.get("node_id")
    return bool(nid) and (node_down_or_gone(nid, nodes) or node_drained(nid, nodes))


def live(task: Obj, job: bool = False) -> bool:
    """Meant to run: desired ≤ RUNNING, or for a job task desired COMPLETE while it has not completed."""
    d = desired_of(task)
    if job:
        return d <= TaskState.COMPLETE and state_of(task) != TaskState.COMPLETE
    return d <= TaskState.RUNNING


def needs_restart(task: Obj, nodes: Mapping[str, Obj], job: bool = False) -> bool:
    """Meant to run but dead (observed > RUNNING) or on an invalid node. A job task that completed is done,
    never restarted (SwarmKit: jobs treat condition `any` like `on-failure`)."""
    if not live(task, job):
        return False
    return state_of(task) > TaskState.RUNNING or node_invalid(task, nodes)


def stopped(task: Obj, nodes: Mapping[str, Obj]) -> bool:
    """The task cannot be running: terminal, never dispatched (< ASSIGNED; the scheduler never assigns a task
    whose desired state is past RUNNING), or its node is down or deleted."""
    s = state_of(task)
    return s > TaskState.RUNNING or s < TaskState.ASSIGNED or node_down_or_gone(task.get("node_id"), nodes)


# ---- history -------------------------------------------------------------------------------------------------
@dataclass
class SlotHistory:
    spec_version: int
    total: int = 0
    times: list[float] = field(default_factory=list)  # newest last; only the last max_attempts matter


@dataclass(frozen=True)
class RestartNote:
    """A replacement that was created; recorded in the history only once its transaction committed."""

    key: SlotKey
    spec_version: int
    at: float
    max_attempts: int


class RestartHistory:
    """Restarts per slot for `max_attempts`/`window` (SwarmKit's `historyByService`), in memory only."""

    def __init__(self) -> None:
        self.slots: dict[SlotKey, SlotHistory] = {}

    def record(self, note: RestartNote) -> None:
        h = self.slots.get(note.key)
        if h is None or h.spec_version != note.spec_version:  # a new spec version starts a fresh count
            h = self.slots[note.key] = SlotHistory(note.spec_version)
        h.total += 1
        h.times.append(note.at)
        del h.times[:-max(1, note.max_attempts)]

    def prune(self, live_services: Iterable[str]) -> None:
        live = set(live_services)
        for key in [k for k in self.slots if k[0] not in live]:
            del self.slots[key]

    @staticmethod
    def rebuild(services: Mapping[str, Obj], tasks: Iterable[Obj]) -> RestartHistory:
        """Best-effort history after an activation: within each slot, every task of the service's current spec
        version but the first counts as a restart at its creation time. (The reaper keeps at least
        max_attempts+1 tasks per slot, which is what makes this possible.)"""
        history = RestartHistory()
        by_key: dict[SlotKey, list[Obj]] = {}
        for task in tasks:
            svc = services.get(task["service_id"])
            if svc is None or task.get("spec_version") != svc.get("spec_version", 1):
                continue
            if RestartPolicy.of(task).max_attempts <= 0:
                continue
            by_key.setdefault(slot_key(task, svc), []).append(task)
        for key, group in by_key.items():
            group.sort(key=lambda x: (created_at(x), x["id"]))
            for task in group[1:]:
                history.record(RestartNote(key, int(task.get("spec_version", 1)), created_at(task),
                                           RestartPolicy.of(task).max_attempts))
        return history


def restart_decision(task: Obj, history: RestartHistory, now: float,
                     key: SlotKey | None = None) -> tuple[bool, float | None]:
    """(replace it?, when the answer may turn to yes). SwarmKit's `shouldRestart`: condition first, then
    `max_attempts` within `window` for the task's spec version, counted per slot `key` (default: by slot
    number; global modes pass their node key)."""
    policy = RestartPolicy.of(task)
    if policy.condition == "none":
        return False, None
    if policy.condition == "on-failure" and state_of(task) == TaskState.COMPLETE:
        return False, None
    if policy.max_attempts <= 0:
        return True, None
    h = history.slots.get(key if key is not None else slot_key(task, None))
    if h is None or h.spec_version != task.get("spec_version", 1):
        return True, None
    if policy.window <= 0:
        return h.total < policy.max_attempts, None
    recent = [ts for ts in h.times if ts > now - policy.window]
    if len(recent) < policy.max_attempts:
        return True, None
    # Allowed again once enough of the recent restarts slide out of the window.
    return False, recent[-policy.max_attempts] + policy.window


# ---- release of a READY replacement --------------------------------------------------------------------------
def predecessor(task: Obj, slot_mates: Iterable[Obj]) -> Obj | None:
    """The newest other task of the slot: the one this replacement replaced."""
    others = [o for o in slot_mates if o["id"] != task["id"]]
    return max(others, key=lambda o: (created_at(o), status_time(o), o["id"])) if others else None


def delay_end(task: Obj, slot_mates: Iterable[Obj], nodes: Mapping[str, Obj], now: float) -> float:
    """When the restart delay of a READY replacement ends: `restart.delay` after the replacement was created,
    i.e. when the restart supervisor acted on the old task's failure (SwarmKit starts its in-memory timer in
    `Restart`; the stored creation time makes the timer survive a leader change, like SwarmKit's init pass
    re-arming READY tasks from their timestamps). Not the old task's *current* status time: that moves again
    when a task on a recovered node finally reports SHUTDOWN, which must not restart the delay. No delay when
    the old task's node is drained (SwarmKit restarts drained tasks at once), and none for the update
    supervisor's tasks (its `DelayStart` has delay 0: only the wait for the old task to stop)."""
    start = created_at(task) if task.get("meta") else now
    if task.get("created_by") == UPDATE:
        return start
    pred = predecessor(task, slot_mates)
    if pred is not None and node_drained(pred.get("node_id"), nodes):
        return start
    return start + RestartPolicy.of(task).delay


def release(task: Obj, slot_mates: Iterable[Obj], nodes: Mapping[str, Obj], now: float,
            stop_timeout: float = STOP_TIMEOUT) -> tuple[bool, float | None]:
    """(start it now?, else when to look again) for a task with desired READY (SwarmKit's `DelayStart`: wait
    the delay, then wait for the old task to stop, at most `stop_timeout`). Starting means desired RUNNING, or
    COMPLETE for a job task."""
    mates = list(slot_mates)
    end = delay_end(task, mates, nodes, now)
    if now < end:
        return False, end
    if all(stopped(o, nodes) for o in mates if o["id"] != task["id"]):
        return True, None
    if now >= end + stop_timeout:
        return True, None
    return False, end + stop_timeout
