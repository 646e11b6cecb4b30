"""The object model: ordered task states, node states, and the pydantic specs accepted at the API edge."""

from shoal.models.kinds import Kind
from shoal.models.states import Availability, NodeRole, NodeState, TaskState

__all__ = ["Availability", "Kind", "NodeRole", "NodeState", "TaskState"]
