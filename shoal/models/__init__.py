"""The object model: ordered task states, node states, and the pydantic specs accepted at the API edge."""

from shoal.models.states import Availability, NodeRole, NodeState, TaskState
from shoal.models.kinds import Kind

__all__ = ["Availability", "Kind", "NodeRole", "NodeState", "TaskState"]
