"""A swarm machine acting on `shoal node promote|demote` (shoal.node: role_change, the configs before and after,
NodeSupervisor.reconcile_role): the agent's certificate role (renewed at once when the dispatcher says the
desired role changed) drives it; a demotion whose raft member cannot be removed waits and says why."""

from __future__ import annotations

from pathlib import Path

from shoal import pki
from shoal.certs import LOCAL_HOSTS, Signer
from shoal.node import (
    NodeConfig,
    NodeLayout,
    NodeSupervisor,
    Ports,
    demoted_config,
    promoted_config,
    promoted_roles,
    role_change,
)

PORTS = Ports(raft_api=1)  # nothing listens on port 1: a raft member removal cannot get through


def machine(tmp: Path, signer: Signer, *, role: str, roles: list[str], raft_id: int | None = None) -> NodeSupervisor:
    root = tmp / "certificates"
    signer.issue_dir(root, node_id="n1", role=role, component="agent", hosts=LOCAL_HOSTS)
    for name in roles:
        signer.issue_dir(root / name, node_id="n1", role=pki.MANAGER, component=name, hosts=LOCAL_HOSTS)
    NodeConfig("n1", signer.cluster_id, bool(roles), roles, "127.0.0.1", ["10.0.0.1", "127.0.0.1"] if roles
               else ["10.0.0.1"], raft_id=raft_id, ports=PORTS).save(tmp)
    return NodeSupervisor(NodeLayout.for_node(tmp))


def test_the_agent_certificates_role_says_what_to_do() -> None:
    worker = NodeConfig("n", "c", False, [], "10.0.0.2", ["10.0.0.1"])
    manager = promoted_config(worker, ["raftstore", "gateway"])
    assert (manager.manager, manager.roles, manager.managers) == (True, ["raftstore", "gateway"],
                                                                  ["10.0.0.1", "10.0.0.2"])
    assert role_change(worker, pki.MANAGER) == "promote" and role_change(worker, pki.WORKER) == ""
    assert role_change(manager, pki.WORKER) == "demote" and role_change(manager, pki.MANAGER) == ""
    back = demoted_config(manager)
    assert (back.manager, back.roles, back.managers, back.raft_id) == (False, [], ["10.0.0.1"], None)


def test_a_promotion_waits_for_the_manager_certificates(tmp_path: Path) -> None:
    sup = machine(tmp_path, Signer.new(), role=pki.MANAGER, roles=[])
    assert promoted_roles(sup.layout.cert_root) == []
    assert sup.reconcile_role().startswith("waiting: the promotion waits for the manager certificates")
    assert not NodeConfig.load(tmp_path).manager


def test_a_demotion_waits_while_its_raft_member_cannot_be_removed(tmp_path: Path) -> None:
    sup = machine(tmp_path, Signer.new(), role=pki.WORKER, roles=["raftstore", "gateway"], raft_id=2)
    outcome = sup.reconcile_role()
    assert outcome.startswith("waiting: the demotion waits: the raft store keeps member 2"), outcome
    assert NodeConfig.load(tmp_path).manager and (tmp_path / "certificates" / "gateway").is_dir()


def test_a_demoted_manager_without_a_raft_member_drops_its_roles_and_their_certificates(tmp_path: Path) -> None:
    sup = machine(tmp_path, Signer.new(), role=pki.WORKER, roles=["orchestrator", "scheduler"])
    assert promoted_roles(sup.layout.cert_root) == ["orchestrator", "scheduler"]
    assert sup.reconcile_role() == "demoted"
    cfg = NodeConfig.load(tmp_path)
    assert (cfg.manager, cfg.roles, cfg.managers) == (False, [], ["10.0.0.1"])
    assert not (tmp_path / "certificates" / "orchestrator").exists()
    assert (tmp_path / "certificates" / "swarm-node.crt").exists(), "the agent keeps its (worker) certificate"
    assert sup.reconcile_role() == ""
