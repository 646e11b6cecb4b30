"""Files a shoal process creates are private to its user, whatever umask it was started with: checked in a
real child process (the umask is process-wide)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)


def test_files_a_shoal_process_creates_are_private(tmp_path: Path) -> None:
    """Issue 16: every process runs setup_logging first, which sets the private umask: directories 0700,
    files (WAL, snapshots, locks, state, task logs) 0600, even when started under umask 022."""
    code = ("import os; os.umask(0o022); from shoal.runner import setup_logging, private_opener; "
            "setup_logging('info', 't'); open('state.json', 'w').close(); os.mkdir('wal'); "
            "os.umask(0o022); open('sup.log', 'ab', opener=private_opener).close()")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=30)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"state.json": 0o600, "wal": 0o700, "sup.log": 0o600}
