"""One supervised OS process (shoal/supervisor.py): what to run (`ProcSpec`) and the running child with its
log file, its wish to run and its restart count (`Child`)."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from shoal.runner import private_opener


@dataclass(frozen=True)
class ProcSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str | None  # GET -> 200 once the process serves


class Child:
    def __init__(self, spec: ProcSpec, log_dir: Path, cwd: Path) -> None:
        self.spec = spec
        self.log_path = log_dir / f"{spec.name}.log"
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.wanted = True
        self.restarts = 0
        self.next_start = 0.0

    def start(self) -> None:
        logf = open(self.log_path, "ab", opener=private_opener)
        env = {**os.environ, **self.spec.env}
        self.proc = subprocess.Popen(self.spec.argv, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.cwd, start_new_session=True)
        logf.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 10.0) -> None:
        self.wanted = False
        if not self.alive():
            return
        assert self.proc is not None
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)
