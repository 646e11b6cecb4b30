"""Valid specs for tests that write objects straight to a store (the raftstore refuses unreadable objects)."""

from __future__ import annotations

from typing import Any


def service_spec(name: str, **extra: Any) -> dict[str, Any]:
    """The smallest valid service spec (shoal.models.specs.ServiceSpec) named `name`."""
    return {"name": name, "task": {"process": {"command": ["sleep", "300"]}}, **extra}
