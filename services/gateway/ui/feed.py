"""The dashboard's event feed: the ONE place that turns what the store committed into the events the dashboard
shows, `{"rev", "time", "kind", "action", "id", "name", "actor"}` (the shape of `GET /v1/events`, issue 14),
plus `detail` (a task's state and error, a node's state) for the dashboard's line.

Today it reads the store's watch events the dashboard's mirror fetches anyway (`events_of`). When the gateway
has its own events stream, point `events_of` at the function that stream uses; nothing else in the dashboard
knows where events come from. Pure: no I/O."""

from __future__ import annotations

from typing import Any

from shoal.models.kinds import Kind
from shoal.store.txn import Change, Event, Obj

#: kinds the feed reports (leases are renewed every half second: noise, shown as instances instead)
FEED_KINDS = frozenset({Kind.NODE, Kind.SERVICE, Kind.TASK, Kind.NETWORK, Kind.SECRET, Kind.CONFIG,
                        Kind.CLUSTER})


def object_name(kind: str, obj: Obj) -> str:
    """The name a user knows an object by: a service's, a node's host name, a task's `<service>.<slot>`."""
    raw = obj.get("spec")
    spec: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if kind == Kind.TASK:
        service = obj.get("service_name") or ""
        return f"{service}.{obj.get('slot')}" if service else f"attachment.{str(obj.get('id', ''))[:12]}"
    if kind == Kind.NODE:
        desc = obj.get("description") or {}
        return str(spec.get("name") or desc.get("hostname") or obj.get("id", ""))
    return str(spec.get("name") or obj.get("id", ""))


def _detail(change: Change) -> str:
    obj = change.object
    if change.kind == Kind.TASK:
        status = obj.get("status") or {}
        text = f"{status.get('state', '?')} (desired {obj.get('desired_state', '?')})"
        err = status.get("err")
        return f"{text}: {err}" if err else text
    if change.kind == Kind.NODE:
        status = obj.get("status") or {}
        spec = obj.get("spec") or {}
        return f"{status.get('state', '?')}, {spec.get('availability', 'active')}"
    if change.kind == Kind.SERVICE:
        us = obj.get("update_status") or {}
        return f"update {us['state']}" if us.get("state") else ""
    return ""


def events_of(event: Event, time: float, actor: str | None = None) -> list[dict[str, Any]]:
    """The feed's events for one committed transaction at `event.revision`. `time` is when it was seen (a
    deleted object carries no time of its own); `actor` is who wrote it when the store says (it does not yet:
    None)."""
    out = []
    for c in event.changes:
        if c.kind not in FEED_KINDS:
            continue
        meta = c.object.get("meta") or {}
        when = float(meta.get("updated_at") or time) if c.action != "delete" else time
        out.append({"rev": event.revision, "time": when, "kind": c.kind, "action": c.action, "id": c.id,
                    "name": object_name(c.kind, c.object), "actor": actor, "detail": _detail(c)})
    return out
