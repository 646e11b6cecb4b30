"""What every Raft simulation scenario shares: the liveness check once faults stop (the cluster must elect a
leader and commit a new entry on every member of its configuration), the linearizable-read check, and which
members may be (re)started. Used by test_raft_sim.py (random faults) and test_raft_membership_sim.py
(schedules that stress membership changes); and the seeds of the soak tier."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.sim.raftnet import SimNetwork

CALM_STEPS = 300  # steps after the faults stop within which a leader must commit an entry everywhere


def require_progress(net: SimNetwork, proposed: set[bytes]) -> None:
    """Faults stop: every member that may run comes back, and the cluster must commit a new entry on every
    member of the newest leader's configuration within CALM_STEPS; what they applied must agree."""
    net.calm()
    for i in net.ids:
        if not net.up(i) and may_start(net, i):
            net.start(i)
    final = b"final"
    proposed.add(final)
    for step in range(CALM_STEPS):
        net.step()
        lead = net.leader()
        if lead is not None and step % 20 == 0:
            net.propose(lead, final)  # again if an earlier copy was lost with its leader
        live = in_cluster(net)
        if live and all(final in net.applied_data(i) for i in live):
            break
    else:
        raise AssertionError(f"no progress after faults stopped: leaders={net.leaders()} "
                             f"status={[net.node(i).status() for i in net.ids if net.up(i)]}")
    logs = [net.applied_data(i) for i in in_cluster(net)]
    longest = max(logs, key=len)
    assert all(log == longest[:len(log)] for log in logs), "members applied different sequences"
    assert set(longest) <= proposed, "committed something nobody proposed"


def in_cluster(net: SimNetwork) -> list[int]:
    """Members that are in the membership of the newest leader (started and not removed)."""
    lead = net.leader()
    if lead is None:
        return []
    return [i for i in net.node(lead).conf_state().members() if net.up(i) and i not in net.removed]


def may_start(net: SimNetwork, i: int) -> bool:
    """Removed members stay down; a spare starts only once some member added it, and a member that ran once
    comes back after a crash (as its supervisor restarts it, with its data) — even when no member that is up
    knows it: the members that are down may be the ones that hold the newest configuration."""
    if i in net.removed:
        return False
    return i in net.bootstrap or net.members[i].started or any(
        net.up(j) and i in net.node(j).conf_state().members() for j in net.ids)


def check_reads(net: SimNetwork, floor: dict[bytes, int]) -> None:
    for m in net.members.values():
        for index, ctx in m.read_states:
            want = floor.pop(ctx, None)
            if want is not None and index < want:
                raise AssertionError(f"stale read: read index {index} < {want} already applied somewhere")
        m.read_states.clear()


def start_read(net: SimNetwork, target: int, ctx: bytes, floor: dict[bytes, int]) -> None:
    """Ask `target` for a linearizable read; if it takes it, record what the answer must not be below (for
    `check_reads`): every write some member already applied, and so acknowledged."""
    least = max((len(m.applied) for m in net.members.values() if m.node is not None), default=0)
    if net.read_index(target, ctx):
        floor[ctx] = least


CHUNK = 250  # seeds per test item, so `--seeds 5000` runs as many items, each within the per-test timeout


def seed_chunks(config: pytest.Config, default: int) -> list[list[int]]:
    """The seeds the command line asks for (`--seed S` one, else `--seeds N` from `--seed-base B`; `default`
    seeds from B without either), in test items of CHUNK seeds."""
    one = config.getoption("--seed")
    base = config.getoption("--seed-base")
    n = config.getoption("--seeds") or default
    seeds = [one] if one is not None else list(range(base, base + n))
    return [seeds[i:i + CHUNK] for i in range(0, len(seeds), CHUNK)]


def run_seeds(seeds: list[int], run: Callable[[int], object], module: str, *, kind: Callable[[int], str] | None = None,
              note: str = "") -> None:
    """Run each seed's schedule; the first that fails a check fails the test, naming the command that replays it
    (`module` is the test file); then print how long they took."""
    started = time.monotonic()
    for seed in seeds:
        try:
            run(seed)
        except AssertionError as e:
            name = f"{kind(seed)} seed" if kind else "seed"
            pytest.fail(f"{name} {seed} failed{note} (replay: pytest {module} --seed {seed}): {e}")
    print(f"{len(seeds)} seeds in {time.monotonic() - started:.1f}s{note}")


def soak_base() -> tuple[int, str]:
    """The first seed of a soak slice and where it came from: SHOAL_SOAK_SEED_BASE if set, else derived from the
    commit under test — reproducible for one commit, new seeds for every commit — and well past the fixed CI
    slice. Without git (a source tarball) it falls back to a fixed base."""
    env = os.environ.get("SHOAL_SOAK_SEED_BASE")
    if env:
        return int(env), "SHOAL_SOAK_SEED_BASE"
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10, check=True)
        sha = out.stdout.strip()
        return 1_000_000 + int(sha[:8], 16) % 1_000_000_000, f"commit {sha[:12]}"
    except (OSError, subprocess.SubprocessError, ValueError):
        return 1_000_000, "no git commit: fixed base"


def soak_seeds(default: int) -> tuple[list[int], str]:
    """The soak slice: `default` seeds (sized for ~45 s of CPU) unless SHOAL_SOAK_SIM_SEEDS says otherwise."""
    base, origin = soak_base()
    n = int(os.environ.get("SHOAL_SOAK_SIM_SEEDS") or default)
    return list(range(base, base + n)), f"seeds {base}..{base + n - 1} ({origin})"
