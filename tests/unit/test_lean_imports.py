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
