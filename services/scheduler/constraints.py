"""Placement constraints, pure (SwarmKit `manager/constraint/constraint.go`).

`key==value` / `key!=value`, ANDed. Values compare case-insensitively; label keys are case-sensitive. Keys:
`node.id`, `node.hostname`, `node.role`, `node.ip` (an address or a CIDR), `node.platform.os`,
`node.platform.arch`, `node.labels.<k>` (the node spec's labels), `engine.labels.<k>` (labels the node reports).
A missing attribute counts as ""; an unknown key never matches, whatever the operator."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from shoal.models.objects import Obj
from shoal.models.specs import parse_constraint

_NODE_LABELS = "node.labels."
_ENGINE_LABELS = "engine.labels."


def _get(obj: Obj, *path: str) -> object:
    cur: object = obj
    for part in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def node_attribute(node: Obj, key: str) -> str | None:
    """The node's value for a constraint key ("" when missing), or None for an unknown key."""
    low = key.lower()
    value: object
    if low == "node.id":
        value = node.get("id")
    elif low == "node.hostname":
        value = _get(node, "description", "hostname")
    elif low == "node.role":
        value = node.get("role") or _get(node, "spec", "role")
    elif low == "node.ip":
        value = _host_of(str(_get(node, "status", "addr") or ""))
    elif low == "node.platform.os":
        value = _get(node, "description", "platform", "os")
    elif low == "node.platform.arch":
        value = _get(node, "description", "platform", "arch")
    elif low.startswith(_NODE_LABELS):
        value = _label(_get(node, "spec", "labels"), key[len(_NODE_LABELS):])
    elif low.startswith(_ENGINE_LABELS):
        value = _label(_get(node, "description", "engine", "labels"), key[len(_ENGINE_LABELS):])
    else:
        return None
    return "" if value is None else str(value)


def _label(labels: object, name: str) -> object:
    return labels.get(name) if isinstance(labels, dict) else None


def _host_of(addr: str) -> str:
    """The IP of `addr`, which may carry a port ("10.0.0.1:4331", "[::1]:4331")."""
    if addr.startswith("["):
        return addr[1:].split("]", 1)[0]
    if addr.count(":") == 1:
        return addr.split(":", 1)[0]
    return addr


def _ip_matches(node_ip: str, value: str) -> bool:
    try:
        ip = ipaddress.ip_address(node_ip)
    except ValueError:
        return False
    try:
        if "/" in value:
            return ip in ipaddress.ip_network(value, strict=False)
        return ip == ipaddress.ip_address(value)
    except ValueError:
        return False


@dataclass(frozen=True)
class Constraint:
    key: str
    op: str
    value: str

    @staticmethod
    def parse(text: str) -> Constraint:
        key, op, value = parse_constraint(text)
        return Constraint(key, op, value)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"

    def matches(self, node: Obj) -> bool:
        actual = node_attribute(node, self.key)
        if actual is None:
            return False
        if self.key.lower() == "node.ip":
            equal = _ip_matches(actual, self.value)
        else:
            equal = actual.lower() == self.value.lower()
        return equal if self.op == "==" else not equal


def parse_all(texts: Sequence[str]) -> tuple[Constraint, ...]:
    return tuple(Constraint.parse(c) for c in texts)


def first_unmet(constraints: Sequence[Constraint], node: Obj) -> Constraint | None:
    for c in constraints:
        if not c.matches(node):
            return c
    return None
