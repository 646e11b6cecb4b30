"""Placement constraints, pure (SwarmKit `manager/constraint/constraint.go`).

`key==value` / `key!=value`, ANDed. Values compare case-insensitively; label keys are case-sensitive. Keys:
`node.id`, `node.hostname`, `node.role`, `node.ip` (an address, or a CIDR matching the node's `status.addr`),
`node.platform.os`, `node.platform.arch`, `node.labels.<k>` (the node spec's labels), `engine.labels.<k>`
(labels the node reports in `description.engine.labels`). A missing attribute counts as ""; an unknown key
never matches, whatever the operator.

Attribute lookup is the kernel's `shoal.placement.attribute`, shared with the orchestrator's constraint
enforcer, so the scheduler never places a task the enforcer would then reject. A constraint is parsed once per
task (and the `node.ip` operand once), not once per node."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from shoal.models.objects import Obj
from shoal.models.specs import parse_constraint
from shoal.placement import attribute as node_attribute

__all__ = ["Constraint", "first_unmet", "node_attribute", "parse_all"]

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
        return self.holds(node_attribute(node, self.key))


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
