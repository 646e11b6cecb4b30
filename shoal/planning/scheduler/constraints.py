"""Placement constraints, pure (SwarmKit `manager/constraint/constraint.go`).

`key==value` / `key!=value`, ANDed. Values compare case-insensitively; label keys are case-sensitive. Keys:
`node.id`, `node.hostname`, `node.role`, `node.ip` (an address, or a CIDR matching the node's `status.addr`),
`node.platform.os`, `node.platform.arch`, `node.labels.<k>` (the node spec's labels), `engine.labels.<k>`
(labels the node reports in `description.engine.labels`). A missing attribute counts as ""; an unknown key
never matches, whatever the operator.

The implementation is the kernel's `shoal.placement.Constraint`, shared with the orchestrator's constraint
enforcer, so the scheduler never places a task the enforcer would then reject. A constraint is parsed once per
task (and the `node.ip` operand once), not once per node."""

from __future__ import annotations

from shoal.placement import Constraint, first_unmet, parse_all
from shoal.placement import attribute as node_attribute

__all__ = ["Constraint", "first_unmet", "node_attribute", "parse_all"]
