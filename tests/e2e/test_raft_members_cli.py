"""Raftstore membership through the `shoal` CLI against a real `shoal up` cluster: list the members, hand raft
leadership to a chosen member, add a fourth member (started by hand with SHOAL_RAFT_JOIN=1: it joins as a
learner from a snapshot and is promoted), remove it again, and bad requests refused with the store's message.
Services keep working throughout."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.bootstrap import read_local
from tests.e2e.harness import Cluster, eventually
from tests.integration.raftprocs import ROOT, free_ports

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "shoal", agents=1)
    try:
        yield c.start()
    finally:
        c.stop()


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()[1:] if line.strip() and line[0].isdigit()]


def test_members_listed_transferred_added_and_removed_with_the_cli(cluster: Cluster, tmp_path: Path) -> None:
    listed = rows(cluster.cli("cluster", "member", "ls").stdout)
    assert sorted(r[0] for r in listed) == ["1", "2", "3"] and all(r[1] == "voter" for r in listed)
    leader = eventually(cluster.raft_leader, 15, "a raft leader")
    assert [r[0] for r in listed if r[2] == "*"] == [str(leader)]
    assert all(r[-1].isdigit() for r in listed), "MATCH INDEX comes from the leader, whichever member answers"

    target = next(i for i in (1, 2, 3) if i != leader)
    out = cluster.cli("cluster", "leader-transfer", "--to", str(target)).stdout
    assert f"to member {target}" in out
    assert eventually(lambda: cluster.raft_leader() == target or None, 10, "the new leader")

    # a fourth member, a manager node joined with the manager token and started by hand, joins
    api, peer = free_ports(2)
    layout = cluster.layout
    node4 = cluster.join_manager(tmp_path / "node4", ("raftstore",))
    nodes = read_local(layout.cert_root).raft_nodes
    members = ";".join([*(f"{i}={layout.raft_api(i)},{layout.raft_peer(i)},{nodes[i - 1]}" for i in (1, 2, 3)),
                        f"4=https://127.0.0.1:{api},127.0.0.1:{peer},{node4}"])
    env = {**os.environ, "SHOAL_RAFT_ID": "4", "SHOAL_RAFT_MEMBERS": members, "SHOAL_RAFT_JOIN": "1",
           "SHOAL_HOST": "127.0.0.1", "SHOAL_PORT": str(api), "SHOAL_DATA_DIR": str(tmp_path / "raft4"),
           "SHOAL_CERT_DIR": str(tmp_path / "node4" / "raftstore"), "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "raft4.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.raftstore"], env=env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        out = cluster.cli("cluster", "member", "add", f"https://127.0.0.1:{api}", f"127.0.0.1:{peer}",
                          "--node-id", node4, timeout=90).stdout
        assert "member 4 added as a voter" in out, out
        listed = rows(cluster.cli("cluster", "member", "ls").stdout)
        assert sorted(r[0] for r in listed) == ["1", "2", "3", "4"]

        bad = cluster.cli("cluster", "member", "rm", "42", check=False)
        assert bad.returncode != 0 and "not in the cluster" in bad.stderr + bad.stdout
        bad = cluster.cli("cluster", "member", "add", "nope", "127.0.0.1:1", "--node-id", node4, check=False)
        assert bad.returncode != 0 and "api_url" in bad.stderr + bad.stdout

        out = cluster.cli("cluster", "member", "rm", "4").stdout
        assert "member 4 removed" in out and "removed ids (never reused): 4" in out
        again = cluster.cli("cluster", "member", "add", f"https://127.0.0.1:{api}", f"127.0.0.1:{peer}", "--id",
                            "4", "--node-id", node4, check=False)
        assert again.returncode != 0 and "never come back" in again.stderr + again.stdout
    finally:
        proc.kill()
        proc.wait(10)

    cluster.create_service("still-works", 2)
    cluster.wait_running("still-works", 2)
