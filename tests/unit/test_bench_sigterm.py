"""A benchmark stopped with SIGTERM runs its `finally` blocks (bench/clusterbench.py `stop_on_sigterm`), so the
cluster it started is stopped rather than orphaned (a killed `bench/converge.py` left ten processes and 200
containers behind)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, time
from pathlib import Path
from bench.clusterbench import stop_on_sigterm
if sys.argv[2] == "handled":
    stop_on_sigterm()
try:
    Path(sys.argv[1]).with_suffix(".ready").write_text("")
    time.sleep(60)
finally:
    Path(sys.argv[1]).write_text("cleaned up")
"""


def _run_and_terminate(tmp_path: Path, mode: str) -> tuple[int, bool]:
    marker = tmp_path / f"{mode}.txt"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(marker), mode], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not marker.with_suffix(".ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the script did not start"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
    return code, marker.exists()


def test_a_sigterm_runs_the_benchmarks_finally_blocks(tmp_path: Path) -> None:
    assert _run_and_terminate(tmp_path, "handled") == (143, True)


def test_without_it_a_sigterm_skips_them(tmp_path: Path) -> None:
    # the control: what the benchmarks did before, so the test above cannot pass by accident
    assert _run_and_terminate(tmp_path, "plain") == (-signal.SIGTERM, False)
