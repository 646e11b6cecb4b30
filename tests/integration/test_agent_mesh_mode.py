"""`python -m agent` with SHOAL_MESH=kernel on a machine without the kernel path exits at start (status 3) naming
what is missing, before it joins anything (docs/networking.md, "Kernel path"). Here the iptables tools are
hidden from its PATH, which works whether or not this machine has them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(60)
def test_kernel_mesh_asked_but_unavailable_fails_loudly(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {"PATH": str(bin_dir), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "SHOAL_MESH": "kernel",
           "SHOAL_STATE_DIR": str(tmp_path / "state"), "SHOAL_PORT": "0"}
    out = subprocess.run([sys.executable, "-m", "agent"], env=env, capture_output=True, text=True, timeout=50)
    assert out.returncode == 3, (out.returncode, out.stderr[-2000:])
    if os.geteuid() == 0:
        assert "missing the iptables-save command; the iptables-restore command" in out.stderr, out.stderr
    else:
        assert "missing root" in out.stderr, out.stderr
    assert not (tmp_path / "state" / "certificates").exists()  # nothing joined, nothing written
