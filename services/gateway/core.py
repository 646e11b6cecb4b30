"""The gateway's pure core: resolving user references to objects, the REPLICAS status of a service, and
building the service objects written to the store. No I/O: the routes read the store and call these."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from shoal.errors import InvalidArgument, NotFound, VersionConflict
from shoal.ids import new_id
from shoal.models.specs import ServiceSpec
from shoal.models.states import TaskState
from shoal.store.txn import Obj


def resolve(objs: Iterable[Obj], ref: str, kind: str, names: Callable[[Obj], Iterable[str]]) -> Obj:
    """The object `ref` designates, in docker's order: an exact id, then a name (case-insensitive), then a
    unique id prefix. NotFound when nothing matches; InvalidArgument when a name or prefix is ambiguous."""
    items = list(objs)
    for o in items:
        if o["id"] == ref:
            return o
    wanted = ref.lower()
    by_name = [o for o in items if any(n.lower() == wanted for n in names(o) if n)]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        raise InvalidArgument(f"{kind} {ref!r} is ambiguous: {len(by_name)} {kind}s have that name; use an id")
    by_prefix = [o for o in items if o["id"].startswith(ref)] if ref else []
    if len(by_prefix) == 1:
        return by_prefix[0]
    if len(by_prefix) > 1:
        raise InvalidArgument(f"{kind} {ref!r} is ambiguous: it prefixes {len(by_prefix)} {kind} ids; "
                              "use a longer prefix")
    raise NotFound(f"{kind} {ref!r} not found")


def service_names(service: Obj) -> list[str]:
    return [service["spec"]["name"]]


def node_names(node: Obj) -> list[str]:
    """A node answers to its hostname and to its optional spec name."""
    return [str(node.get("description", {}).get("hostname") or ""), str(node.get("spec", {}).get("name") or "")]


def mode_of(spec: dict[str, Any]) -> str:
    return "global" if "global" in spec.get("mode", {}) else "replicated"


def service_status(service: Obj, tasks: Iterable[Obj]) -> dict[str, int]:
    """`docker service ls` REPLICAS: desired slots, tasks running that should run, and completed tasks.

    Replicated services desire `replicas`; a global service desires one task per eligible node, which is the
    number of its tasks the orchestrator wants running."""
    own = [t for t in tasks if t.get("service_id") == service["id"]]
    should_run = [t for t in own if t.get("desired_state") == TaskState.RUNNING]
    running = sum(1 for t in should_run if t.get("status", {}).get("state") == TaskState.RUNNING)
    completed = sum(1 for t in own if t.get("status", {}).get("state") == TaskState.COMPLETE)
    mode = service["spec"].get("mode", {})
    desired = int(mode["replicated"].get("replicas", 1)) if "replicated" in mode else len(should_run)
    return {"desired": desired, "running": running, "completed": completed}


def with_status(service: Obj, tasks: Iterable[Obj]) -> Obj:
    return {**service, "status": service_status(service, tasks)}


def name_taken(services: Iterable[Obj], name: str, except_id: str | None = None) -> bool:
    key = name.lower()
    return any(s["spec"]["name"].lower() == key and s["id"] != except_id for s in services)


def already_exists_message(name: str) -> str:
    return f"service {name!r} already exists"


def new_service(spec: ServiceSpec) -> Obj:
    """A service object as first written: spec version 1 and no previous spec."""
    return {"id": new_id(), "spec": spec.wire(), "spec_version": 1, "previous_spec": None}


def updated_service(current: Obj, version: int, spec: ServiceSpec) -> Obj:
    """The service after `PUT` with `{"version", "spec"}`, or the reason it is refused.

    Like SwarmKit's UpdateService: the caller must send the version it read (optimistic concurrency), the name
    is immutable, and so is the kind of mode. The old spec becomes `previous_spec` (for rollback)."""
    name = current["spec"]["name"]
    at = current["meta"]["version"]
    if version != at:
        raise VersionConflict(
            f"service {name!r} is at version {at}, not {version}: it changed since it was read; "
            "re-read it and retry", current_version=at)
    new = spec.wire()
    if new["name"] != name:
        raise InvalidArgument(f"spec.name: renaming a service is not supported ({name!r} -> {new['name']!r})")
    old_mode, new_mode = mode_of(current["spec"]), mode_of(new)
    if old_mode != new_mode:
        raise InvalidArgument(f"spec.mode: changing the mode of a service is not supported "
                              f"({old_mode} -> {new_mode})")
    return {**current, "spec": new, "previous_spec": current["spec"],
            "spec_version": int(current.get("spec_version", 1)) + 1}
