"""A shoal process does not load httpx's command-line entry point and what it pulls in (rich, pygments): ~4-6
MiB of resident memory per process for a command none runs (shoal/__init__.py, docs/performance.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("entry", ["services.dispatcher.__main__", "agent.__main__", "shoal.runner"])
def test_entry_points_do_not_import_the_httpx_cli(entry: str) -> None:
    code = (f"import sys, {entry}, httpx\n"
            "print(sorted(m for m in ('httpx._main', 'rich', 'pygments') if sys.modules.get(m) is not None))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# cryptography (~8 MiB of RSS a process, 5 of them its shared library) is loaded only by the processes and at
# the moment that need it: signing in the CA, key generation at renewal, the raftstore's at-rest AES-GCM. A
# running process reads certificates with shoal.certread and verifies its root with OpenSSL (transport.chains_to).
LEAN = ["services.orchestrator.__main__", "services.scheduler.__main__", "services.allocator.__main__",
        "services.dispatcher.__main__", "services.gateway.__main__", "services.ca.__main__", "agent.__main__",
        "shoal.runner", "shoal.transport", "shoal.enroll"]


@pytest.mark.parametrize("entry", [*LEAN, "services.raftstore.__main__"])
def test_entry_points_do_not_import_x509(entry: str) -> None:
    heavy = ("cryptography.x509", "cryptography.hazmat.primitives.asymmetric")
    code = f"import sys, {entry}\nprint(sorted(m for m in sys.modules if m.startswith({heavy!r})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("entry", LEAN)
def test_entry_points_do_not_import_cryptography(entry: str) -> None:
    code = f"import sys, {entry}\nprint(sorted(m for m in sys.modules if m.startswith('cryptography')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("entry", [*LEAN, "services.raftstore.__main__"])
def test_entry_points_do_not_import_pydantic_settings(entry: str) -> None:
    """shoal.config.EnvSettings reads SHOAL_* on plain pydantic models (~1.3 MiB a process saved)."""
    code = f"import sys, {entry}\nprint(sorted(m for m in ('pydantic_settings', 'dotenv') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
