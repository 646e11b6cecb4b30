"""shoal: a SwarmKit-style container orchestrator built as microservices over NATS and a Raft store."""

import sys

__version__ = "0.1.0"

# httpx imports its command-line entry point (`httpx._main`) when it is imported, which loads click, rich and
# pygments whenever they are installed (they are in a development environment): ~6 MiB of resident memory in
# every shoal process for a command no process runs (bench/footprint.py, docs/performance.md). An import of a
# module mapped to None raises ImportError, which httpx catches (its `httpx.main` then says to install the
# CLI extras). Every process's entry point is inside shoal, services or agent, whose packages import this one
# first.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
