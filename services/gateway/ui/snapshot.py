"""What the dashboard shows, computed from objects already in memory: pure, no I/O, the time injected.

`build_snapshot` = `compose(workload(...), ...)`: the hub (services/gateway/ui/hub.py) calls `compose` once per
second per gateway (not per browser) with the Raft status it polled and the instances heard on NATS, and
`workload` (nodes, services, tasks from its mirror) only in the seconds when one of those kinds changed.
One pass over the tasks; the result's size grows with nodes and services, not with tasks (tasks are counted,
and only a bounded number of them are listed: the recent errors of each service and the tasks that should run
but do not)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from services.gateway.core import mode_of, service_status
from shoal.instances import instance_view
from shoal.models.states import TaskState
from shoal.store.txn import Obj

ERRORS_PER_SERVICE = 3
MAX_NOT_RUNNING = 50
#: observed states whose task has stopped for a reason worth showing
FAILED_STATES = frozenset({TaskState.FAILED, TaskState.REJECTED, TaskState.ORPHANED})


def _status(task: Obj) -> dict[str, Any]:
    status = task.get("status")
    return status if isinstance(status, dict) else {}


def _ts(task: Obj) -> float:
    return float(_status(task).get("timestamp") or (task.get("meta") or {}).get("updated_at") or 0.0)


def task_line(task: Obj, node_names: dict[str, str]) -> dict[str, Any]:
    st = _status(task)
    node_id = task.get("node_id") or ""
    return {"id": task["id"], "name": f"{task.get('service_name') or 'attachment'}.{task.get('slot')}",
            "state": st.get("state"), "desired": task.get("desired_state"), "node": node_names.get(node_id, node_id),
            "message": st.get("message") or "", "err": st.get("err") or "", "exit_code": st.get("exit_code"),
            "time": _ts(task)}


def node_view(node: Obj, running: int, assigned: int) -> dict[str, Any]:
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    desc = node.get("description") or {}
    res = desc.get("resources") or {}
    return {"id": node["id"], "hostname": desc.get("hostname") or spec.get("name") or node["id"],
            "role": node.get("role") or spec.get("role"), "state": status.get("state"),
            "availability": spec.get("availability", "active"), "addr": status.get("addr"),
            "message": status.get("message") or "",
            "cpus": round(int(res.get("nano_cpus") or 0) / 1e9, 2), "memory_bytes": int(res.get("memory_bytes") or 0),
            "tasks_running": running, "tasks": assigned}


def raft_members(status: dict[str, Any] | None, members: list[dict[str, Any]]) -> dict[str, Any]:
    """Leader, term, commit index, and per member its role, term, commit/applied index and lag (the leader's
    commit index minus the member's applied index)."""
    reachable = [m for m in members if m.get("reachable")]
    best = status or max(reachable, key=lambda m: int(m.get("term") or 0), default={})
    leader = best.get("leader")
    lead = next((m for m in reachable if leader is not None and m.get("id") == leader), None)
    commit = (lead or best).get("commit_index")
    out = []
    for m in members:
        applied = m.get("applied_index")
        lag = int(commit) - int(applied) if isinstance(commit, int) and isinstance(applied, int) else None
        out.append({"id": m.get("id"), "url": m.get("url"), "reachable": bool(m.get("reachable")),
                    "role": m.get("role") if m.get("reachable") else "unreachable", "term": m.get("term"),
                    "commit_index": m.get("commit_index"), "applied_index": applied,
                    "lag": max(lag, 0) if lag is not None else None, "error": m.get("error")})
    return {"leader": leader, "term": best.get("term"), "commit_index": commit, "members": out}


def workload(nodes: Iterable[Obj], services: Iterable[Obj], tasks: Iterable[Obj]) -> dict[str, Any]:
    """The part of the snapshot made from nodes, services and tasks (the costly part: one pass over the tasks),
    `{"nodes", "services", "tasks"}`. The hub recomputes it only when one of those kinds changed."""
    nodes, services = list(nodes), list(services)
    node_names = {n["id"]: node_view(n, 0, 0)["hostname"] for n in nodes}
    by_state: Counter[str] = Counter()
    per_service: dict[str, list[Obj]] = defaultdict(list)
    running_on: Counter[str] = Counter()
    assigned_to: Counter[str] = Counter()
    not_running: list[Obj] = []
    for task in tasks:
        state = str(_status(task).get("state") or "")
        by_state[state] += 1
        if task.get("service_id"):
            per_service[task["service_id"]].append(task)
        node_id = task.get("node_id")
        wanted = task.get("desired_state") == TaskState.RUNNING
        if node_id and wanted:
            assigned_to[node_id] += 1
            if state == TaskState.RUNNING:
                running_on[node_id] += 1
        if wanted and state != TaskState.RUNNING and task.get("service_id"):
            not_running.append(task)
    service_views = []
    for svc in sorted(services, key=lambda s: str((s.get("spec") or {}).get("name", ""))):
        own = per_service.get(svc["id"], [])
        counts = service_status(svc, own)
        failed = sorted((t for t in own if _status(t).get("err") or _status(t).get("state") in FAILED_STATES),
                        key=_ts, reverse=True)[:ERRORS_PER_SERVICE]
        us = svc.get("update_status") or {}
        service_views.append({
            "id": svc["id"], "name": svc["spec"]["name"], "mode": mode_of(svc["spec"]), **counts,
            "update": {"state": us.get("state"), "message": us.get("message") or ""} if us.get("state") else None,
            "errors": [task_line(t, node_names) for t in failed],
        })
    not_running.sort(key=_ts, reverse=True)
    return {
        "nodes": sorted((node_view(n, running_on[n["id"]], assigned_to[n["id"]]) for n in nodes),
                        key=lambda v: (str(v["hostname"]), v["id"])),
        "services": service_views,
        "tasks": {"total": sum(by_state.values()), "by_state": dict(sorted(by_state.items())),
                  "not_running": [task_line(t, node_names) for t in not_running[:MAX_NOT_RUNNING]],
                  "not_running_total": len(not_running)},
    }


def compose(work: dict[str, Any], leases: Iterable[Obj], instances: Iterable[Obj], raft: dict[str, Any],
            now: float, *, revision: int = 0, store_error: str | None = None) -> dict[str, Any]:
    """The whole snapshot: `work` (from `workload`) with the raft view, the instances and where it stands."""
    return {
        "revision": revision,
        "time": now,
        "store_error": store_error,
        **work,
        "raft": raft,
        "instances": [{k: v for k, v in i.items() if k not in ("age", "last_seen", "pid")}
                      for i in instance_view(instances, list(leases), now)],
    }


def build_snapshot(nodes: Iterable[Obj], services: Iterable[Obj], tasks: Iterable[Obj], leases: Iterable[Obj],
                   instances: Iterable[Obj], raft: dict[str, Any], now: float, *, revision: int = 0,
                   store_error: str | None = None) -> dict[str, Any]:
    """The whole dashboard as one JSON-able dict (module doc). Deterministic for the same inputs (sorted)."""
    return compose(workload(nodes, services, tasks), leases, instances, raft, now, revision=revision,
                   store_error=store_error)


def without_time(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What decides whether a snapshot changed (the time always does)."""
    return {k: v for k, v in snapshot.items() if k != "time"}
