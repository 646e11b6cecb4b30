"""Small file helpers shared by the kernel and the agent."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so a crash leaves the old content or the new, never a part (written to a
    sibling `.tmp`, fsynced, renamed over)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
