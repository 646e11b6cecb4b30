"""Small file helpers shared by the kernel and the agent."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str | bytes) -> None:
    """Replace `path` with `text` (str, or bytes written as they are) so a crash leaves the old content or the
    new, never a part (written to a sibling `.tmp`, fsynced, renamed over)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb" if isinstance(text, bytes) else "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def write_durable(path: Path, data: bytes) -> None:
    """Replace `path` with `data` (mode 0600) so that once this returns the new content survives a power loss,
    and a crash before leaves the old content or the new, never a part: written whole to a sibling `.tmp`,
    fsynced, renamed over, then the directory fsynced so the rename itself is on disk."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
