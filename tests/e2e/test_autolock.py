"""Autolock on a whole `shoal up` cluster, through the CLI as an admin runs it: `swarm update --autolock=true`
prints the key, every raftstore member re-wraps its data keys under it, a member killed with SIGKILL (restarted by
the supervisor) comes back locked and says so in `shoal cluster`, a wrong key is refused, `shoal swarm unlock`
with the right key brings it back into the cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shoal import unlockkey
from tests.e2e.harness import Cluster, eventually

pytestmark = pytest.mark.timeout(240)


def unlock(cluster: Cluster, key: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHOAL_URL": cluster.layout.gateway_url, "SHOAL_CERT_PATH": str(cluster.layout.client_dir)}
    return subprocess.run([sys.executable, "-m", "shoal.cli", "swarm", "unlock", "--data-dir",
                           str(cluster.layout.data_dir)], input=key + "\n", env=env, capture_output=True, text=True,
                          timeout=60)


def kek_mode(data: Path, i: int) -> str:
    return str(json.loads((data / "raft" / str(i) / "keys.json").read_text())["kek"])


def test_autolock_locks_a_restarted_manager_until_unlocked(cluster: Cluster) -> None:
    out = cluster.cli("swarm", "update", "--autolock=true").stdout
    m = re.search(r"SWMKEY-1-\S+", out)
    assert m, out
    key = m.group(0)
    assert cluster.cli("swarm", "unlock-key", "-q").stdout.strip() == key
    data = cluster.layout.data_dir
    eventually(lambda: all(kek_mode(data, i) == "autolock" for i in (1, 2, 3)), 30,
               "every raftstore member to wrap its keys under the unlock key")

    victim = next(i for i in (1, 2, 3) if i != cluster.raft_leader())
    url = cluster.layout.raft_api(victim)
    cluster.sup.kill(f"raftstore-{victim}")  # SIGKILL; the supervisor starts it again

    def locked() -> bool:
        try:
            r = cluster.manager_http.get(url + "/healthz")
        except httpx.HTTPError:
            return False
        return r.status_code == 503 and r.json().get("locked") is True

    eventually(locked, 60, f"raftstore {victim} to come back locked")
    listed = cluster.cli("cluster").stdout
    assert "locked" in listed, listed
    cluster.create_service("while-locked", 1)  # the other two members are a quorum
    cluster.wait_running("while-locked", 1, timeout=60)

    wrong = unlock(cluster, unlockkey.new())
    assert wrong.returncode != 0 and "not the unlock key" in wrong.stderr, wrong.stderr + wrong.stdout
    right = unlock(cluster, key)
    assert right.returncode == 0 and "unlocked 1" in right.stdout, right.stderr + right.stdout

    def caught_up() -> bool:
        sts = {s.get("id"): s for s in cluster.raft_status()}
        me, others = sts.get(victim), [s for i, s in sts.items() if i != victim]
        return bool(me and me.get("role") in ("follower", "leader") and others and
                    me.get("applied_index") == max(int(s.get("applied_index") or 0) for s in others))

    eventually(caught_up, 60, f"raftstore {victim} to rejoin and catch up")
    assert unlock(cluster, key).returncode != 0  # nothing left to unlock
