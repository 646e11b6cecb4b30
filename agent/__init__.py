"""The shoal agent: one per node. Registers with a dispatcher, runs the tasks assigned to its node through an
executor (`process`, or `hollow` for simulations) and reports their status (SwarmKit's agent/)."""

import shoal  # noqa: F401  (first: see shoal/__init__.py)
