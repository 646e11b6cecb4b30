"""The node description an agent registers with (SwarmKit's NodeDescription): hostname, platform, resources
and the runtimes its executors serve."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from typing import Any

NANO = 1_000_000_000


def memory_bytes(meminfo: str = "/proc/meminfo") -> int:
    """Total memory from /proc/meminfo (0 where there is none)."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        pass
    return 0


def arch() -> str:
    """Go-style architecture names, as SwarmKit reports them (x86_64 -> amd64, aarch64 -> arm64)."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}.get(machine, machine)


def describe(hostname: str, executors: Iterable[str]) -> dict[str, Any]:
    return {
        "hostname": hostname,
        "platform": {"os": platform.system().lower(), "arch": arch()},
        "resources": {"nano_cpus": (os.cpu_count() or 1) * NANO, "memory_bytes": memory_bytes()},
        "executors": sorted(set(executors)),
    }
