"""Issue 2's end-to-end checks, the failures: the cluster heals from agent, store, control-plane process and
bus failures, and `shoal down` / `up` keeps its services. Each test breaks its cluster: a fresh one each."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.harness import Cluster, eventually, items, pid_alive

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_stopped_agent_goes_down_and_its_tasks_move(cluster: Cluster) -> None:
    cluster.create_service("web", 4)
    live = cluster.wait_running("web", 4)
    nodes = {n["id"]: n for n in cluster.nodes()}
    hostname_of = {nid: n["description"]["hostname"] for nid, n in nodes.items()}
    victim_node = live[0]["node_id"]
    victim_agent = next(name for name in cluster.sup.children
                        if name.startswith("agent-") and hostname_of[victim_node].endswith(name))
    cluster.sup.stop_process(victim_agent)
    eventually(lambda: [n for n in cluster.nodes() if n["id"] == victim_node
                        and n["status"]["state"] == "down"], 15, "the stopped agent's node to be DOWN")
    after = cluster.wait_running("web", 4, timeout=30)
    assert {t["node_id"] for t in after} == set(nodes) - {victim_node}


def test_raft_leader_kill_elects_a_new_leader_and_loses_no_acknowledged_write(cluster: Cluster) -> None:
    acked = []
    for i in range(5):
        cluster.create_service(f"before-{i}", 0)
        acked.append(f"before-{i}")
    leader = cluster.raft_leader()
    assert leader is not None
    cluster.sup.kill(f"raftstore-{leader}")
    killed = time.monotonic()

    def create_again() -> bool:
        r = cluster.http.post("/v1/services", json={"name": "after", "mode": {"replicated": {"replicas": 0}},
                                                    "task": {"process": {"command": ["true"]}}})
        return r.status_code in (201, 409)

    eventually(create_again, 15, "a service create to succeed after the leader kill", interval=0.1)
    assert time.monotonic() - killed < 15
    new_leader = eventually(cluster.raft_leader, 10, "a new raft leader")
    assert new_leader != leader or cluster.sup.children[f"raftstore-{leader}"].restarts > 0
    names = {s["spec"]["name"] for s in items(cluster.http.get("/v1/services").json())}
    assert set(acked) <= names and "after" in names


@pytest.mark.timeout(400)
def test_each_control_plane_process_and_nats_can_die_during_a_scale(cluster: Cluster) -> None:
    cluster.create_service("web", 2)
    cluster.wait_running("web", 2)
    target = 2
    for name in ("gateway", "orchestrator", "allocator", "scheduler", "dispatcher", "nats"):
        target = 5 if target != 5 else 3
        cluster.scale("web", target)
        cluster.sup.kill(name)
        # the gateway may be down for a moment; the supervisor restarts the killed process
        eventually(lambda: cluster.http.get("/healthz").status_code == 200, 20, "gateway back")
        cluster.wait_running("web", target, timeout=45)


# soak tier (which .ci/run runs): a whole cluster down and up again; the state's replay stays in the default tier
# (tests/integration/test_raftstore_cluster.py::test_a_full_restart_replays_the_state_from_the_wal)
@pytest.mark.soak
def test_down_and_up_with_the_same_data_dir_keeps_services(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "shoal")
    try:
        c.start()
        c.create_service("web", 2)
        c.wait_running("web", 2)
        old_pids = [t["status"]["pid"] for t in c.running("web")]
    finally:
        c.sup.stop()
    assert not any(pid_alive(p) for p in old_pids), "shoal down leaves no task process running"
    again = Cluster(tmp_path / "shoal")
    again.layout = c.layout
    from shoal.supervisor import Supervisor

    again.sup = Supervisor(c.layout)
    again.start()
    try:
        assert again.http.get("/v1/services/web").status_code == 200
        again.wait_running("web", 2, timeout=45)
    finally:
        again.stop()

