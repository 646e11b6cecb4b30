"""shoal's manager subsystems, one process each (importing shoal first: see shoal/__init__.py)."""

import shoal  # noqa: F401
