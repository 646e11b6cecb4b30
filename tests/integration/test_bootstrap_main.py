"""`python -m shoal.bootstrap` — how every compose container starts — really initialises the identities and
execs the command with the process's environment (it did nothing at all while the module had no __main__
entry: every compose container exited 0 at once and was restarted for ever, writing nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shoal import pki


def test_python_m_shoal_bootstrap_writes_the_identities_then_execs_the_command(tmp_path: Path) -> None:
    data, client = tmp_path / "pki", tmp_path / "client"
    show = "import os; print(os.environ['SHOAL_TASK_FILES_DIR'], bool(os.environ['SHOAL_JOIN_TOKEN']))"
    done = subprocess.run([sys.executable, "-m", "shoal.bootstrap", "--data-dir", str(data), "--client-dir",
                           str(client), "--hosts", "ca", "--as", "agent", "--", sys.executable, "-c", show],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "SHOAL_TASK_FILES_ROOT": str(tmp_path / "files")})
    assert done.returncode == 0, done.stderr
    assert all((client / f).is_file() for f in ("ca.pem", "cert.pem", "key.pem"))
    assert (data / "certificates" / "gateway" / pki.CERT_FILE).is_file()
    host_dir, has_token = done.stdout.split()
    assert Path(host_dir).parent == tmp_path / "files" and has_token == "True"
