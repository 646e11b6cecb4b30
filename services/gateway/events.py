"""The cluster's event feed (`GET /v1/events`), pure: the store's watch events -> one record per changed object
`{"rev", "time", "kind", "action", "id", "name", "actor"}`, filtered by kind and action; and the notice sent
when the requested start is older than the history the store retains.

`actor` is who wrote the transaction as the raftstore recorded it from the writer's certificate
(`"<component>@<node id>"`, e.g. `gateway@…` for every change made through the API, `orchestrator@…` for
the tasks it creates), `"unknown"` when the store did not record one. Lease renewals (kind `lease`, several a
second) are left out unless asked for by `kind=lease`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shoal.errors import InvalidArgument
from shoal.models.kinds import NAMED_KINDS, Kind
from shoal.store.txn import Event, Obj

ACTIONS = ("create", "update", "delete")
KINDS = tuple(k.value for k in Kind)
#: kinds followed when no `kind` filter is given
DEFAULT_KINDS = frozenset(KINDS) - {Kind.LEASE.value}
UNKNOWN_ACTOR = "unknown"
Record = dict[str, Any]


def parse_filters(kinds: Iterable[str], actions: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """`kind=` and `action=` query values (repeatable, or comma-separated) -> the sets followed; an unknown
    value is refused naming the accepted ones."""
    want_kinds, want_actions = _values("kind", kinds, KINDS), _values("action", actions, ACTIONS)
    if bad := sorted(want_kinds - set(KINDS)):
        raise InvalidArgument(f"kind: unknown kind {', '.join(bad)}; use one of {', '.join(KINDS)}",
                              field="kind")
    if bad := sorted(want_actions - set(ACTIONS)):
        raise InvalidArgument(f"action: unknown action {', '.join(bad)}; use one of {', '.join(ACTIONS)}",
                              field="action")
    return want_kinds or DEFAULT_KINDS, want_actions or frozenset(ACTIONS)


def _values(field: str, raw: Iterable[str], accepted: Iterable[str]) -> frozenset[str]:
    """The values of a repeatable, comma-separated filter; an empty one (`kind=`, `kind=a,,b`) is refused."""
    values = [v.strip().lower() for item in raw for v in item.split(",")]
    if any(not v for v in values):
        raise InvalidArgument(f"{field}: an empty value; use one of {', '.join(accepted)}", field=field)
    return frozenset(values)


def object_name(kind: str, obj: Obj) -> str:
    """A human name for the object: the spec name of named kinds, `<service>.<slot>` (or `<service>.<node>`)
    for tasks, the hostname of nodes; "" when it has none (or is redacted)."""
    raw = obj.get("spec")
    spec: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if kind in NAMED_KINDS:
        return str(spec.get("name") or "")
    if kind == Kind.TASK:
        service = str(obj.get("service_name") or "")
        where = obj.get("slot") or obj.get("node_id") or ""
        return f"{service}.{where}" if service and where else service
    if kind == Kind.NODE:
        return str((obj.get("description") or {}).get("hostname") or spec.get("name") or "")
    return ""


def records(event: Event, kinds: frozenset[str], actions: frozenset[str]) -> list[Record]:
    """The records of one committed transaction, in the transaction's order."""
    return [{"rev": event.revision, "time": event.time, "kind": c.kind, "action": c.action, "id": c.id,
             "name": object_name(c.kind, c.object), "actor": event.actor or UNKNOWN_ACTOR}
            for c in event.changes if c.kind in kinds and c.action in actions]


def compaction_notice(since: int, compact_revision: int, now: float) -> Record:
    """Sent first when `since` is older than the retained history: the events after `since` up to
    `compact_revision` are gone; the stream goes on from `compact_revision`."""
    return {"rev": compact_revision, "time": now, "kind": "events", "action": "compacted", "id": "", "name": "",
            "actor": "", "message": f"events after revision {since} up to {compact_revision} are no longer "
                                    f"retained (the store keeps a bounded history); continuing from revision "
                                    f"{compact_revision}"}
