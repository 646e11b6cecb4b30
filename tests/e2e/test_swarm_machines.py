"""Separate machines, simulated: a network namespace per machine on a bridge. `shoal swarm init` on the first,
two managers and two workers join with the tokens (wrong, tampered and missing tokens are refused first);
then the first manager loses every one of its processes at once, and the cluster keeps serving reads and
writes from the others while the workers' tasks keep running."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal import pki, transport
from tests.e2e.harness import eventually, items, pid_alive
from tests.tools import netns

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]
SHOAL = [sys.executable, "-m", "shoal.cli"]


@pytest.fixture
def machines() -> Iterator[netns.Machines]:
    why = netns.available()
    if why:
        if os.environ.get("SHOAL_REQUIRE_NETNS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    m = netns.Machines(5)
    try:
        yield m.up()
    finally:
        m.down()


def shoal(m: netns.Machines, i: int, *args: str, check: bool = True, timeout: float = 180,
          env: dict[str, str] | None = None) -> str:
    done = m.run(i, [*SHOAL, *args], timeout=timeout, cwd=ROOT,
                 env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    out = done.stdout + done.stderr
    if check:
        assert done.returncode == 0, f"machine {i}: shoal {' '.join(args)} exited {done.returncode}: {out}"
    return out


def admin(bundle: Path, host: str) -> httpx.Client:
    return transport.sync_http_client(transport.Credentials.client_bundle(bundle),
                                      base_url=f"https://{host}:4242", timeout=10.0)


def test_machines_join_with_tokens_and_survive_losing_the_first_manager(machines: netns.Machines,
                                                                         tmp_path: Path) -> None:
    m = machines
    d = {i: tmp_path / f"m{i}" for i in range(1, 6)}
    out = shoal(m, 1, "swarm", "init", "--advertise-addr", m.addr(1), "--data-dir", str(d[1]))
    found = re.search(r"--token (SWMTKN-1-\S+) (\S+)", out)
    assert found, out
    worker_token, remote = found.group(1), found.group(2)
    bundle = d[1] / "client"
    with admin(bundle, m.addr(1)) as http:
        tokens = http.get("/v1/swarm/join-tokens").json()
    manager_token = tokens["manager"]
    assert tokens["worker"] == worker_token

    # refused joins, each with a reason, leaving nothing behind
    wrong = worker_token[:-25] + pki.new_token_secret()
    out = shoal(m, 4, "swarm", "join", "--token", wrong, remote, "--data-dir", str(d[4]), check=False)
    assert "token" in out.lower() and "refused" in out, out
    digest = pki.parse_token(worker_token).digest
    tampered = worker_token.replace(digest, ("1" if digest[0] != "1" else "2") + digest[1:])
    out = shoal(m, 4, "swarm", "join", "--token", tampered, remote, "--data-dir", str(d[4]), check=False)
    assert "does not match" in out, out
    out = shoal(m, 4, "swarm", "join", remote, "--data-dir", str(d[4]), check=False)
    assert "--token" in out, out
    assert not (d[4] / "node.json").exists()

    for i in (2, 3):
        out = shoal(m, i, "swarm", "join", "--token", manager_token, remote, "--advertise-addr", m.addr(i),
                    "--data-dir", str(d[i]))
        assert "as a manager" in out, out
    for i in (4, 5):
        out = shoal(m, i, "swarm", "join", "--token", worker_token, remote, "--advertise-addr", m.addr(i),
                    "--data-dir", str(d[i]))
        assert "as a worker" in out, out

    with admin(bundle, m.addr(1)) as http:
        def ready_nodes() -> list[dict[str, Any]] | None:
            nodes = [n for n in items(http.get("/v1/nodes").json()) if n["status"]["state"] == "ready"]
            return nodes if len(nodes) == 5 else None
        nodes = eventually(ready_nodes, 120, "five READY nodes")
        roles = sorted(n.get("role") or n.get("spec", {}).get("role", "") for n in nodes)
        assert roles.count("manager") == 3, roles

        def three_voters() -> bool:
            members = http.get("/v1/cluster/members").json()["members"]
            return sum(x["role"] == "voter" for x in members) == 3
        eventually(three_voters, 120, "three raft voters")
        spec = {"name": "web", "mode": {"replicated": {"replicas": 5}},
                "task": {"process": {"command": ["sleep", "600"]}, "restart": {"delay": "1s"}}}
        assert http.post("/v1/services", json=spec).status_code == 201
        eventually(lambda: len(running(http, "web")) == 5 or None, 120, "5 running tasks")
        on_workers = {t["id"]: t["status"]["pid"] for t in running(http, "web")
                      if t["node_id"] in {n["id"] for n in nodes if n_addr(n) in (m.addr(4), m.addr(5))}}

    # the first manager loses every process at once
    assert netns.kill_all(m.ns(1)) > 0
    t0 = time.monotonic()
    with admin(bundle, m.addr(2)) as http:
        def scaled() -> bool:
            svc = http.get("/v1/services/web").json()
            spec = svc["spec"]
            spec["mode"] = {"replicated": {"replicas": 6}}
            return http.put("/v1/services/web", json={"version": svc["meta"]["version"], "spec": spec}
                            ).status_code == 200
        eventually(scaled, 90, "a write through the second manager")
        print(f"\nfirst write acknowledged {time.monotonic() - t0:.1f}s after the first manager died")
        eventually(lambda: len([t for t in running(http, "web") if t["node_id"] != nodes_of(nodes, m.addr(1))])
                   >= 6 or None, 180, "6 running tasks off the dead manager")
    for tid, pid in on_workers.items():
        assert pid_alive(pid), f"task {tid} on a worker stopped when the first manager died"


def running(http: httpx.Client, service: str) -> list[dict[str, Any]]:
    return [t for t in items(http.get("/v1/tasks", params={"service": service}).json())
            if t["status"]["state"] == "running" and t["desired_state"] == "running"]


def n_addr(node: dict[str, Any]) -> str:
    return str((node.get("status") or {}).get("addr") or "")


def nodes_of(nodes: list[dict[str, Any]], addr: str) -> str:
    return next((n["id"] for n in nodes if n_addr(n) == addr), "")


@pytest.mark.soak  # ~26 s: the CI run (SHOAL_SOAK=1) has it, `./run test` does not
def test_a_worker_promoted_runs_the_manager_roles_and_demoted_gives_them_back(machines: netns.Machines,
                                                                            tmp_path: Path) -> None:
    """`shoal node promote`: the worker's node supervisor gets manager certificates through its agent's
    renewal, joins its raftstore to the raft cluster (a voter once caught up) and starts the manager roles;
    `shoal node demote` removes its raft member first, then stops them. A service runs throughout."""
    m = machines
    d1, d2 = tmp_path / "m1", tmp_path / "m2"
    out = shoal(m, 1, "swarm", "init", "--advertise-addr", m.addr(1), "--data-dir", str(d1))
    found = re.search(r"--token (SWMTKN-1-\S+) (\S+)", out)
    assert found, out
    shoal(m, 2, "swarm", "join", "--token", found.group(1), found.group(2), "--advertise-addr", m.addr(2),
          "--data-dir", str(d2))
    with admin(d1 / "client", m.addr(1)) as http:
        def node2() -> dict[str, Any] | None:
            return next((n for n in items(http.get("/v1/nodes").json())
                         if n_addr(n) == m.addr(2) and n["status"]["state"] == "ready"), None)
        worker = eventually(node2, 90, "the worker READY")
        spec = {"name": "keep", "mode": {"replicated": {"replicas": 2}},
                "task": {"process": {"command": ["sleep", "600"]}}}
        assert http.post("/v1/services", json=spec).status_code == 201
        eventually(lambda: len(running(http, "keep")) == 2 or None, 90, "2 running tasks")

        def voters() -> int:
            return sum(x["role"] == "voter" for x in http.get("/v1/cluster/members").json()["members"])
        cli = {"SHOAL_URL": f"https://{m.addr(1)}:4242", "SHOAL_CERT_PATH": str(d1 / "client")}
        shoal(m, 1, "node", "promote", worker["id"], env=cli)
        eventually(lambda: voters() == 2 or None, 120, "the promoted machine's raftstore a voter")

        def its_gateway_answers() -> bool:
            with admin(d1 / "client", m.addr(2)) as gw2:
                return gw2.get("/v1/nodes").status_code == 200
        eventually(its_gateway_answers, 90, "the promoted machine's gateway answering")

        shoal(m, 1, "node", "demote", worker["id"], env=cli)
        eventually(lambda: voters() == 1 or None, 120, "the demoted machine's raft member removed")
        eventually(lambda: not (d2 / "certificates" / "gateway").exists() or None, 60,
                   "the demoted machine's manager processes stopped and their certificates deleted")
        assert len(running(http, "keep")) == 2
