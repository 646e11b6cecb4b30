"""Both ways a first manager is initialised — `init_local` (`shoal up`, compose) and `shoal swarm init`
(shoal/node.py) — hand the root CA over through the same `hand_over_ca`: the bootstrap file names the
certificates init issued itself, so a root rotation waits for them, and the returned join tokens are the ones
the CA service will accept. Both make their private directories 0700, including ones that existed wider."""

from __future__ import annotations

import json
from pathlib import Path

from services.ca import core
from shoal import bootstrap, node, pki


def _ca_state(cert_root: Path) -> tuple[dict[str, object], core.CAState]:
    data = json.loads((cert_root / bootstrap.CA_BOOTSTRAP).read_text())
    return data, core.CAState.from_obj(core.ca_object(data))


def test_swarm_init_hands_over_its_own_certificates_as_holders_and_tokens_the_ca_accepts(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir(mode=0o755)
    cfg, worker, manager = node.init(data_dir, "10.0.0.5")
    root = data_dir / "certificates"
    data, state = _ca_state(root)
    assert data["holders"] == {cfg.node_id: [*node.MANAGER_ROLES, "agent"]}
    assert core.role_of_token(state, worker) == pki.WORKER
    assert core.role_of_token(state, manager) == pki.MANAGER
    # a rotation waits for every certificate init issued (nothing is on the new root yet)
    pending = core.rotation_pending(core.bootstrap_holders(data), set(), "another-root")
    assert pending == sorted((cfg.node_id, c) for c in (*node.MANAGER_ROLES, "agent"))
    for d in (data_dir, root):
        assert d.stat().st_mode & 0o777 == 0o700


def test_init_local_hands_over_the_manager_and_raft_members_and_writes_the_worker_token(tmp_path: Path) -> None:
    data_dir, cert_root = tmp_path / "data", tmp_path / "data" / "certificates"
    ids = bootstrap.init_local(data_dir, cert_root, tmp_path / "client", raft_members=3)
    data, state = _ca_state(cert_root)
    holders = data["holders"]
    assert isinstance(holders, dict)
    assert holders[ids.manager_node] == [*bootstrap.MANAGER_PROCESSES, "raftstore"]
    assert all(holders[n] == ["raftstore"] for n in ids.raft_nodes[1:])
    assert core.role_of_token(state, ids.worker_token) == pki.WORKER
    assert (cert_root / bootstrap.WORKER_TOKEN_FILE).read_text().strip() == ids.worker_token
    for d in (data_dir, cert_root):
        assert d.stat().st_mode & 0o777 == 0o700


def test_private_dirs_narrows_an_existing_directory(tmp_path: Path) -> None:
    wide = tmp_path / "wide"
    wide.mkdir(mode=0o755)
    bootstrap.private_dirs(wide, tmp_path / "new" / "deeper")
    assert wide.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "new" / "deeper").stat().st_mode & 0o777 == 0o700
