"""shoal.child: a cluster stops stage by stage, each stage at once (stop_stages, stop_together)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from shoal.child import Child, ProcSpec, stop_stages, stop_together


def child(name: str, tmp: Path, argv: list[str] | None = None) -> Child:
    return Child(ProcSpec(name, argv or [sys.executable, "-c", "pass"], {}, None), tmp, tmp)


def test_workers_then_subsystems_then_members_then_nats_in_reverse_start_order(tmp_path: Path) -> None:
    started = ["nats", "raftstore-1", "raftstore-2", "ca", "gateway", "dispatcher", "dispatcher-2", "agent-1",
               "agent-2", "hollow-agents"]
    stages = stop_stages([child(n, tmp_path) for n in started])
    assert [[c.spec.name for c in s] for s in stages] == [
        ["hollow-agents", "agent-2", "agent-1"],
        ["dispatcher-2", "dispatcher", "gateway", "ca"],
        ["raftstore-2", "raftstore-1"],
        ["nats"],
    ]
    # a machine's supervisor (shoal/node.py) names its processes by role alone
    assert [[c.spec.name for c in s] for s in stop_stages([child(n, tmp_path) for n in
                                                           ("nats", "raftstore", "dispatcher", "agent")])] == \
        [["agent"], ["dispatcher"], ["raftstore"], ["nats"]]


def test_a_stage_stops_together_and_a_child_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    slow = "import signal, time; signal.signal(signal.SIGTERM, lambda *_: (print('term', time.time(), " \
           "flush=True), time.sleep(1.0), exit(0))); print('up', flush=True); time.sleep(60)"
    deaf = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); " \
           "time.sleep(60)"
    kids = [child(f"s{i}", tmp_path, [sys.executable, "-c", slow]) for i in range(3)]
    stubborn = child("deaf", tmp_path, [sys.executable, "-c", deaf])
    for c in [*kids, stubborn]:
        c.start()
    for c in [*kids, stubborn]:  # each has installed its handler
        deadline = time.monotonic() + 10
        while "up" not in c.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
    stop_together(kids, grace=10.0)
    assert all(not c.alive() for c in kids)
    # each was told before any had finished its 1 s exit: one after the other, they would be 1 s apart
    told = [float(c.log_path.read_text().split("term ")[1].split()[0]) for c in kids]
    assert max(told) - min(told) < 1.0, f"SIGTERMs at {told}: not stopped together"
    began = time.monotonic()
    stop_together([stubborn], grace=0.3)
    assert not stubborn.alive() and stubborn.proc is not None and stubborn.proc.returncode == -9
    assert time.monotonic() - began < 5
    assert not any(c.wanted for c in [*kids, stubborn])
