"""The pure parts of root rotation: the ca object before, during and after; who is still pending; what a
process does with the CA's roots; the CLI's progress text; distinct names for rotated roots."""

from __future__ import annotations

import pytest

from services.ca import core
from shoal import enroll, pki
from shoal.certs import Signer
from shoal.cli.swarm_ca import progress_text
from shoal.errors import Conflict


def ca_obj(signer: Signer) -> dict[str, object]:
    return {"id": core.CA_OBJECT_ID, "cluster_id": signer.cluster_id, "root_cert": signer.root_pem.decode(),
            "root_key": signer.key_pem.decode(), "tokens": {"worker": "w" * 25, "manager": "m" * 25}}


def test_start_and_finish_rotation() -> None:
    s = Signer.new()
    before = core.CAState.from_obj(ca_obj(s))
    assert not before.rotating and before.roots_pem == s.root_pem and before.chain_pem == b""
    during = core.CAState.from_obj(core.start_rotation(ca_obj(s), 1000.0))
    new_root = pki.load_cert(during.root_pem)
    assert during.rotating and during.old_root_pem == s.root_pem
    assert pki.load_certs(during.roots_pem) == [new_root, s.root]  # the new (signing) root first
    cross = pki.load_cert(during.chain_pem)
    assert cross.subject == new_root.subject and pki.issued_by(cross, s.root)
    assert new_root.subject != s.root.subject  # OpenSSL tells the two roots apart by name
    assert during.digest != before.digest and during.token("worker") != before.token("worker")
    with pytest.raises(Conflict):
        core.start_rotation(core.start_rotation(ca_obj(s), 1000.0), 1001.0)
    after = core.CAState.from_obj(core.finish_rotation(core.start_rotation(ca_obj(s), 1000.0)))
    assert not after.rotating and len(pki.load_certs(after.roots_pem)) == 1


def test_pending_leaves_out_removed_nodes_and_renewed_components() -> None:
    holders = [core.holder_record(None, "a", {"agent": "new", "gateway": "old"}),
               core.holder_record(None, "b", {"agent": "old"}),
               core.holder_record(core.holder_record(None, "c", {"agent": "old"}), "c", {"agent": "new"})]
    assert core.rotation_pending(holders, set(), "new") == [("a", "gateway"), ("b", "agent")]
    assert core.rotation_pending(holders, {"b"}, "new") == [("a", "gateway")]
    assert core.rotation_pending([], set(), "new") == []


def test_bootstrap_holders_name_inits_certificates() -> None:
    s = Signer.new()
    boot = {**ca_obj(s), "tokens": {"worker": pki.new_token_secret(), "manager": pki.new_token_secret()},
            "holders": {"m": ["gateway", "raftstore"], "r2": ["raftstore"]}}
    holders = {h["node_id"]: h["issuers"] for h in core.bootstrap_holders(boot)}
    digest = pki.root_digest(s.root)
    assert holders == {"m": {"gateway": digest, "raftstore": digest}, "r2": {"raftstore": digest}}
    assert core.bootstrap_holders({**boot, "holders": None}) == []


def test_roots_decision() -> None:
    old, new = Signer.new(), Signer.new()
    leaf = old.sign(pki.make_csr(pki.new_key()), node_id="n", role=pki.WORKER, component="agent")
    assert enroll.roots_decision(leaf, old.root_pem, old.root_pem) == ""
    assert enroll.roots_decision(leaf, old.root_pem, new.root_pem + old.root_pem) == "renew"
    assert enroll.roots_decision(leaf, old.root_pem + new.root_pem, old.root_pem) == "roots"
    assert enroll.roots_decision(leaf, old.root_pem, b"") == ""


def test_progress_text() -> None:
    assert "no rotation" in progress_text({"rotating": False, "root_digest": "abc"})
    text = progress_text({"rotating": True, "root_digest": "abc",
                          "pending": [{"node_id": "n1", "component": "agent"}]})
    assert "1 certificate(s) on 1 node(s)" in text and "n1  agent" in text and "shoal node rm" in text


def test_only_the_gateway_may_call_the_root_routes() -> None:
    gw = pki.Identity(node_id="m", role=pki.MANAGER, cluster_id="c", component="gateway", not_before=0,
                      not_after=1, serial=1)
    disp = pki.Identity(node_id="m", role=pki.MANAGER, cluster_id="c", component="dispatcher", not_before=0,
                        not_after=1, serial=1)
    assert core.policy(gw, "POST", "/v1/ca/rotate") is None and core.policy(gw, "GET", "/v1/ca") is None
    assert core.policy(disp, "POST", "/v1/ca/rotate") and core.policy(disp, "GET", "/v1/ca")
