"""Does a node still fit a task? Constraint matching and resource fit, pure (SwarmKit `manager/constraint`).

The orchestrator needs this outside the scheduler: the global orchestrator picks eligible nodes, the
dirty check ignores constraint-only spec changes when the node still matches, and the constraint enforcer
rejects tasks on nodes that stopped matching. The scheduler's filters use the same `Constraint` (parsed once per
task, the `node.ip` operand once), so the scheduler never places a task the enforcer would then reject:

`key==value` / `key!=value`, ANDed. Values compare case-insensitively; label keys are case-sensitive. Keys:
`node.id`, `node.hostname`, `node.role`, `node.ip` (an address or a CIDR), `node.platform.os`,
`node.platform.arch`, `node.labels.<k>` (the node spec's labels), `engine.labels.<k>` (labels the node reports).
A missing attribute counts as ""; an unknown key never matches, whatever the operator."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.models.specs import parse_constraint

Obj = dict[str, Any]


def _dig(obj: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def _host(addr: str) -> str:
    """The IP part of an address that may carry a port: "10.0.0.1:4331", "[::1]:4331"."""
    if addr.startswith("["):
        return addr[1:].split("]", 1)[0]
    return addr.split(":", 1)[0] if addr.count(":") == 1 else addr


def attribute(node: Obj, key: str) -> str | None:
    """The node's value for constraint `key` ("" when absent), or None when the key is unknown."""
    low = key.lower()
    simple = {
        "node.id": ("id",),
        "node.hostname": ("description", "hostname"),
        "node.platform.os": ("description", "platform", "os"),
        "node.platform.arch": ("description", "platform", "arch"),
    }
    value: Any
    if low in simple:
        value = _dig(node, *simple[low])
    elif low == "node.role":
        value = node.get("role") or _dig(node, "spec", "role")
    elif low == "node.ip":
        value = _host(str(_dig(node, "status", "addr") or ""))
    elif low.startswith("node.labels."):
        value = _dig(node, "spec", "labels", key[len("node.labels."):])
    elif low.startswith("engine.labels."):
        value = _dig(node, "description", "engine", "labels", key[len("engine.labels."):])
    else:
        return None
    return "" if value is None else str(value)


IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip_operand(value: str) -> IPNet | None:
    """`node.ip` operand: an address (a /32 or /128) or a CIDR; None when it is neither."""
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return None


@dataclass(frozen=True)
class Constraint:
    key: str
    op: str
    value: str
    _low: str = field(default="", compare=False, repr=False)
    _ip: IPNet | None = field(default=None, compare=False, repr=False)

    @staticmethod
    def parse(text: str) -> Constraint:
        key, op, value = parse_constraint(text)
        return Constraint(key, op, value, value.lower(), _ip_operand(value) if key.lower() == "node.ip" else None)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"

    def holds(self, actual: str | None) -> bool:
        """Whether the constraint holds for a node whose value for `key` is `actual` (None = unknown key)."""
        if actual is None:
            return False
        if self._ip is not None or self.key.lower() == "node.ip":
            equal = _ip_in(actual, self._ip)
        else:
            equal = actual.lower() == (self._low or self.value.lower())
        return equal if self.op == "==" else not equal

    def matches(self, node: Obj) -> bool:
        return self.holds(attribute(node, self.key))


def _ip_in(actual: str, net: IPNet | None) -> bool:
    if net is None or not actual:
        return False
    try:
        return ipaddress.ip_address(actual) in net
    except ValueError:
        return False


def parse_all(texts: Sequence[str]) -> tuple[Constraint, ...]:
    return tuple(Constraint.parse(c) for c in texts)


def first_unmet(constraints: Sequence[Constraint], node: Obj) -> Constraint | None:
    for c in constraints:
        if not c.matches(node):
            return c
    return None


def constraint_holds(text: str, node: Obj) -> bool:
    return Constraint.parse(text).matches(node)


def node_matches(constraints: Iterable[str], node: Obj | None) -> bool:
    """SwarmKit's `constraint.NodeMatches`: every constraint holds (no node never matches)."""
    return node is not None and all(constraint_holds(c, node) for c in constraints)


def constraints_of(task_spec: Obj) -> list[str]:
    return list(((task_spec or {}).get("placement") or {}).get("constraints") or [])


def supports_runtime(node: Obj, runtime: str) -> bool:
    """The node advertises an executor for `runtime` (`description.executors`)."""
    return runtime in (_dig(node, "description", "executors") or [])


# ---- resources ---------------------------------------------------------------------------------------------
def reservations_of(task_spec: Obj) -> tuple[int, int, dict[str, int]]:
    """(nano CPUs, memory bytes, generic kind → count) a task spec reserves."""
    r = _dig(task_spec, "resources", "reservations") or {}
    generic = {str(g["kind"]): int(g["value"]) for g in r.get("generic") or []}
    return int(r.get("nano_cpus") or 0), int(r.get("memory_bytes") or 0), generic


def node_resources(node: Obj) -> tuple[int, int, dict[str, int]]:
    """(nano CPUs, memory bytes, generic kind → count) a node advertises. Generic resources may be given as
    `{"gpu": 2}` or as SwarmKit's list of discrete (`{"kind", "value": 2}`) and named ones (`{"kind", "value":
    "GPU-0"}`, one unit each, or `{"kind", "named": [...]}`, one unit per item)."""
    res = _dig(node, "description", "resources") or {}
    raw = res.get("generic") or {}
    generic: dict[str, int] = {}
    if isinstance(raw, Mapping):
        generic = {str(k): int(v) for k, v in raw.items()}
    else:
        for g in raw:
            v = g.get("value")
            if g.get("named") is not None:  # named items: {"kind": "gpu", "named": ["GPU-0", "GPU-1"]}
                n = len(g["named"])
            else:
                n = int(v) if isinstance(v, int) or (isinstance(v, str) and v.isdigit()) else 1
            generic[str(g["kind"])] = generic.get(str(g["kind"]), 0) + n
    return int(res.get("nano_cpus") or 0), int(res.get("memory_bytes") or 0), generic
