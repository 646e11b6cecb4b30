"""One supervised OS process (shoal/supervisor.py): what to run (`ProcSpec`) and the running child with its
log file, its wish to run and its restart count (`Child`)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
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
        stop_together([self], grace)


def stop_together(children: Sequence[Child], grace: float = 10.0) -> None:
    """Stop `children` at once: SIGTERM to each, then wait for them all within one `grace`, and SIGKILL the
    process group of any still running. One after the other, a cluster's twelve graceful exits (a dispatcher
    closing its long polls, a raftstore its peers) added up to ~4.6 s; together they take the slowest one's."""
    running = []
    for child in children:
        child.wanted = False
        if child.alive():
            child.signal(signal.SIGTERM)
            running.append(child)
    deadline = time.monotonic() + grace
    for child in running:
        assert child.proc is not None
        try:
            child.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(child.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.proc.wait(5)


#: a child's stop stage by its name's prefix (the rest are the managers' subsystems, stage 1)
_STAGES = (("agent", 0), ("hollow", 0), ("raftstore", 2), ("nats", 3))


def stop_stages(children: Sequence[Child]) -> list[list[Child]]:
    """The order a cluster stops in, stage by stage, each stage at once: the workers first (agents stop their
    tasks while the control plane still hears their last status), then the managers' subsystems, then the
    raftstore members, then NATS — the reverse of the order they start in."""
    stages: dict[int, list[Child]] = {}
    for child in reversed(children):
        stage = next((k for prefix, k in _STAGES if child.spec.name.startswith(prefix)), 1)
        stages.setdefault(stage, []).append(child)
    return [stages[k] for k in sorted(stages)]
