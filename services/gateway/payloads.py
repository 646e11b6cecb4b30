"""Secrets and configs at the gateway, the pure part: the objects written, what an answer may show (a secret's
data never), resolving a service's references, and the checks of updates and removals. No I/O.

Removal is two-phase so that it cannot race a service starting to reference the object: the object is first
rewritten with `removing: true` (its version moves, so a service write that checked the old version fails and
reads again — and is then refused), then the services are read and, if none references it, it is deleted
expecting that new version. A reference found in between puts it back (`removing` cleared) and answers 409."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services.gateway.core import InUse, resolve
from shoal.errors import InvalidArgument, NotFound, VersionConflict
from shoal.ids import new_id
from shoal.models.kinds import Kind
from shoal.models.secrets import PayloadUpdate
from shoal.store.txn import Obj

#: the reference list in a task spec and the id field the gateway fills, per kind
REF_FIELDS = {Kind.SECRET: ("secrets", "secret_id"), Kind.CONFIG: ("configs", "config_id")}


def names_of(obj: Obj) -> list[str]:
    return [obj["spec"]["name"]]


def new_payload_object(spec: dict[str, Any]) -> Obj:
    return {"id": new_id(), "spec": spec}


def public_view(kind: str, obj: Obj) -> Obj:
    """What the API answers: a secret without its data (SwarmKit never returns it), a config with it; the
    internal `removing` mark only while set."""
    out = {k: v for k, v in obj.items() if k != "removing" or v}
    if kind == Kind.SECRET:
        out["spec"] = {k: v for k, v in obj["spec"].items() if k != "data"}
    return out


def updated_payload(kind: str, current: Obj, body: PayloadUpdate) -> Obj:
    """`current` with the new labels (the only thing that may change), checked against the version read."""
    version = current["meta"]["version"]
    if body.version != version:
        raise VersionConflict(f"{kind} {current['spec']['name']!r} changed since version {body.version} was "
                              f"read (now {version}); re-read it and retry", current=version)
    return {**current, "spec": {**current["spec"], "labels": dict(body.labels)}}


def referencing_services(kind: str, obj_id: str, services: Iterable[Obj]) -> list[str]:
    """Names of the services whose task spec references `obj_id` (as SwarmKit, the current spec only: a rollback
    to a spec naming a removed secret is refused with 400 then)."""
    field, id_field = REF_FIELDS[Kind(kind)]
    out = []
    for s in services:
        refs = ((s.get("spec") or {}).get("task") or {}).get(field) or []
        if any(isinstance(r, dict) and r.get(id_field) == obj_id for r in refs):
            out.append(s["spec"]["name"])
    return sorted(out)


def check_unused(kind: str, obj: Obj, services: Iterable[Obj]) -> None:
    users = referencing_services(kind, obj["id"], services)
    if users:
        name = obj["spec"]["name"]
        raise InUse(f"{kind} {name!r} is in use by service {users[0]!r}"
                    + (f" (and {len(users) - 1} more)" if len(users) > 1 else "")
                    + f"; remove the {kind} from those services first", services=users)


def resolve_refs(spec: Obj, secrets: Iterable[Obj], configs: Iterable[Obj],
                 field: str = "") -> tuple[Obj, list[tuple[str, Obj]]]:
    """`spec` with each `task.secrets[]`/`task.configs[]` source resolved: `secret_id`/`config_id` set, `source`
    the object's name, `target` defaulted (a secret: its name; a config: `/<name>`); and the (kind, object)
    pairs it references. 400 naming the field when a source names nothing or an object being removed."""
    task = spec.get("task") or {}
    pools = {Kind.SECRET: list(secrets), Kind.CONFIG: list(configs)}
    used: list[tuple[str, Obj]] = []
    new_task = dict(task)
    for kind, (list_field, id_field) in REF_FIELDS.items():
        refs = task.get(list_field) or []
        if not refs:
            continue
        out = []
        for i, ref in enumerate(refs):
            where = f"{field}task.{list_field}[{i}].source"
            try:
                obj = resolve(pools[kind], ref["source"], kind.value, names_of)
            except NotFound:
                raise InvalidArgument(f"{where}: {kind.value} {ref['source']!r} not found") from None
            except InvalidArgument as e:
                raise InvalidArgument(f"{where}: {e.message}") from None
            if obj.get("removing"):
                raise InvalidArgument(f"{where}: {kind.value} {obj['spec']['name']!r} is being removed")
            name = obj["spec"]["name"]
            default_target = name if kind == Kind.SECRET else "/" + name
            out.append({**ref, "source": name, id_field: obj["id"], "target": ref.get("target") or default_target})
            if all(o["id"] != obj["id"] for _, o in used):
                used.append((kind.value, obj))
        new_task[list_field] = out
    if not used:
        return spec, []
    return {**spec, "task": new_task}, used
