"""Autolock on a whole `shoal up` cluster, through the CLI as an admin runs it: `swarm update --autolock=true`
prints the key, every raftstore member re-wraps its data keys and its TLS key under it, a member killed with
SIGKILL (restarted by the supervisor) comes back locked — no TLS port, its local unlock socket says so, and so
does `shoal cluster` on its machine — a wrong key is refused, `shoal swarm unlock` with the right key brings it
back into the cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shoal import keyfile, pki, unlockkey
from tests.e2e.harness import Cluster, eventually

pytestmark = pytest.mark.timeout(240)


def local_cli(cluster: Cluster, *args: str, key: str = "") -> subprocess.CompletedProcess[str]:
    """The CLI on the cluster's machine (SHOAL_DATA_DIR: it finds the local managers' unlock sockets)."""
    env = {**os.environ, "SHOAL_URL": cluster.layout.gateway_url, "SHOAL_CERT_PATH": str(cluster.layout.client_dir),
           "SHOAL_DATA_DIR": str(cluster.layout.data_dir)}
    return subprocess.run([sys.executable, "-m", "shoal.cli", *args], input=key + "\n", env=env,
                          capture_output=True, text=True, timeout=60)


def unlock(cluster: Cluster, key: str) -> subprocess.CompletedProcess[str]:
    return local_cli(cluster, "swarm", "unlock", key=key)


def kek_mode(data: Path, i: int) -> str:
    return str(json.loads((data / "raft" / str(i) / "keys.json").read_text())["kek"])


def test_autolock_locks_a_restarted_manager_until_unlocked(cluster: Cluster) -> None:
    out = cluster.cli("swarm", "update", "--autolock=true").stdout
    m = re.search(r"SWMKEY-1-\S+", out)
    assert m, out
    key = m.group(0)
    assert cluster.cli("swarm", "unlock-key", "-q").stdout.strip() == key
    data = cluster.layout.data_dir
    eventually(lambda: all(kek_mode(data, i) == "autolock" and
                           keyfile.is_encrypted((cluster.layout.cert_dir(f"raftstore-{i}") / pki.KEY_FILE)
                                                .read_bytes()) for i in (1, 2, 3)), 30,
               "every raftstore member to wrap its data keys and TLS key under the unlock key")
    ca_key = cluster.layout.cert_dir("ca") / pki.KEY_FILE
    eventually(lambda: keyfile.is_encrypted(ca_key.read_bytes()), 30, "the CA to encrypt its TLS key")
    # the other processes' keys stay plain PEMs (they cannot read the unlock key: docs/security.md)
    assert not keyfile.is_encrypted((cluster.layout.cert_dir("gateway") / pki.KEY_FILE).read_bytes())

    victim = next(i for i in (1, 2, 3) if i != cluster.raft_leader())
    url = cluster.layout.raft_api(victim)
    cluster.sup.kill(f"raftstore-{victim}")  # SIGKILL; the supervisor starts it again
    cluster.sup.kill("ca")
    sock = cluster.layout.cert_dir(f"raftstore-{victim}") / "unlock.sock"
    ca_sock = cluster.layout.cert_dir("ca") / "unlock.sock"

    def locked(path: Path) -> bool:
        if not path.exists():
            return False
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://locked") as http:
                r = http.get("/healthz")
        except httpx.HTTPError:
            return False
        return r.status_code == 503 and r.json().get("locked") is True

    eventually(lambda: locked(sock), 60, f"raftstore {victim} to come back locked")
    eventually(lambda: locked(ca_sock), 60, "the CA to come back locked")
    for locked_url in (url, cluster.layout.url_of("ca")):
        with pytest.raises(httpx.HTTPError):  # no TLS while locked: its key is encrypted
            cluster.manager_http.get(locked_url + "/healthz")
    listed = local_cli(cluster, "cluster").stdout
    assert f"raftstore-{victim} on this machine is locked" in listed and "ca on this machine is locked" in listed, \
        listed
    cluster.create_service("while-locked", 1)  # the other two members are a quorum
    cluster.wait_running("while-locked", 1, timeout=60)

    wrong = unlock(cluster, unlockkey.new())
    assert wrong.returncode != 0 and "not the unlock key" in wrong.stderr, wrong.stderr + wrong.stdout
    right = unlock(cluster, key)
    assert right.returncode == 0 and "unlocked 2" in right.stdout, right.stderr + right.stdout
    eventually(lambda: cluster.manager_http.get(cluster.layout.url_of("ca") + "/readyz").status_code == 200, 60,
               "the unlocked CA to serve again")

    def caught_up() -> bool:
        sts = {s.get("id"): s for s in cluster.raft_status()}
        me, others = sts.get(victim), [s for i, s in sts.items() if i != victim]
        return bool(me and me.get("role") in ("follower", "leader") and others and
                    me.get("applied_index") == max(int(s.get("applied_index") or 0) for s in others))

    eventually(caught_up, 60, f"raftstore {victim} to rejoin and catch up")
    assert unlock(cluster, key).returncode != 0  # nothing left to unlock
