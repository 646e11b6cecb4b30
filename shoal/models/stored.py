"""Is a stored object readable? The same models the gateway validates with, applied to what reaches the store
by any path (issue 16): the raftstore refuses a transaction writing an object that fails here, and consumers
skip (log and count) an object that fails here instead of failing a whole pass or list.

Only the user-written parts are validated with the spec models (service, network, node and cluster specs);
tasks, the hot write path, get a type check of the fields every consumer indexes on. Kinds without a
rule (leases, the CA, secrets, configs) are checked by their own writers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from shoal.models.cluster_spec import ClusterSpec
from shoal.models.kinds import Kind
from shoal.models.network_spec import NetworkSpec
from shoal.models.objects import status_state
from shoal.models.specs import NodeSpec, ServiceSpec
from shoal.models.states import TaskState

log = logging.getLogger(__name__)
Obj = dict[str, Any]
_TASK_STATES = frozenset(str(s) for s in TaskState)


def _spec(model: type[BaseModel], *, optional: bool = False,
          tolerated: tuple[str, ...] = ()) -> Callable[[Obj], str | None]:
    def check(obj: Obj) -> str | None:
        spec = obj.get("spec")
        if spec is None and optional:
            return None
        if not isinstance(spec, dict):
            return "spec must be an object"
        if tolerated:
            spec = {k: v for k, v in spec.items() if k not in tolerated}
        try:
            model.model_validate(spec)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first.get("loc", ())) or "spec"
            more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
            return f"spec.{where}: {str(first.get('msg', 'invalid')).removeprefix('Value error, ')}{more}"
        return None
    return check


def _task(obj: Obj) -> str | None:
    """Types of the fields consumers index and compare on, when present (tests and tools write partial tasks)."""
    for key in ("service_id", "node_id", "service_name"):
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key} must be a string or null"
    desired = obj.get("desired_state")
    if desired is not None and desired not in _TASK_STATES:
        return f"desired_state must be one of the task states (got {str(desired)[:40]!r})"
    slot = obj.get("slot")
    if slot is not None and (not isinstance(slot, int) or isinstance(slot, bool)):
        return "slot must be an integer"
    for key in ("spec", "status"):
        value = obj.get(key)
        if value is not None and not isinstance(value, dict):
            return f"{key} must be an object"
    state = status_state(obj)
    if state is not None and state not in _TASK_STATES:
        return f"status.state must be one of the task states (got {str(state)[:40]!r})"
    return None


_RULES: dict[str, Callable[[Obj], str | None]] = {
    Kind.SERVICE: _spec(ServiceSpec),
    Kind.NETWORK: _spec(NetworkSpec, tolerated=("ingress",)),
    Kind.NODE: _spec(NodeSpec, optional=True),
    Kind.CLUSTER: _spec(ClusterSpec),
    Kind.TASK: _task,
}


def unreadable(kind: str, obj: Any) -> str | None:
    """Why `obj` of `kind` cannot be read by the consumers of that kind, or None when it can."""
    if not isinstance(obj, dict):
        return "the object must be a JSON object"
    if not isinstance(obj.get("id"), str) or not obj["id"]:
        return "the object needs a non-empty string id"
    rule = _RULES.get(kind)
    return None if rule is None else rule(obj)


class Readable:
    """Filters listed objects down to the readable ones, logging (rate-limited by the log guard) and counting
    each one skipped, so one bad object never fails a whole list or pass. Verdicts are remembered per
    (kind, id, version), so listing the same objects again costs a dictionary lookup."""

    def __init__(self, max_cached: int = 100_000) -> None:
        self.skipped = 0
        self.max_cached = max_cached
        self._verdicts: dict[tuple[str, str, Any], str | None] = {}

    def reason(self, kind: str, obj: Any) -> str | None:
        key = None
        if isinstance(obj, dict) and isinstance(obj.get("id"), str):
            meta = obj.get("meta")
            version = meta.get("version") if isinstance(meta, dict) else None
            if version is not None:
                key = (kind, obj["id"], version)
                if key in self._verdicts:
                    return self._verdicts[key]
        reason = unreadable(kind, obj)
        if key is not None:
            if len(self._verdicts) >= self.max_cached:
                self._verdicts.clear()
            self._verdicts[key] = reason
        return reason

    def filter(self, kind: str, objs: list[Any]) -> list[Obj]:
        if kind not in _RULES:
            return objs
        out = []
        for obj in objs:
            reason = self.reason(kind, obj)
            if reason is None:
                out.append(obj)
                continue
            self.skipped += 1
            oid = obj.get("id") if isinstance(obj, dict) else None
            log.warning("store: skipping unreadable %s %r: %s", kind, str(oid)[:80], reason)
        return out


def check_txn_objects(ops: list[Any]) -> str | None:
    """The first reason an object written (created or updated) by `ops` is unreadable, as `ops[i]...`."""
    for i, op in enumerate(ops):
        if isinstance(op, dict) and op.get("op") in ("create", "update"):
            reason = unreadable(str(op.get("kind")), op.get("object"))
            if reason is not None:
                return f"ops[{i}] ({op.get('kind')}): {reason}"
    return None
