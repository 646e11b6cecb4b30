"""Promotion and demotion, the certificate part: the CA issues a node's new role on renewal when its desired
role in the store (`spec.role`, set by `shoal node promote|demote`) differs from the role it was last seen with
(`role`, recorded by the dispatcher from its certificate). Unit tests of the dispatcher's recording too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.ca import core
from services.dispatcher.core import registered_node
from shoal import pki
from shoal.errors import PermissionDenied
from shoal.models.kinds import Kind
from shoal.store import txn as t
from tests.service.test_ca_service import CA, start_ca

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def ca(tmp_path: Path) -> AsyncIterator[CA]:
    c = await start_ca(tmp_path / "ca")
    yield c
    await c.server.stop()


def csrs(*components: str) -> dict[str, str]:
    return {c: pki.make_csr(pki.new_key()).decode() for c in components}


async def node_with(ca: CA, node_id: str, *, observed: str, desired: str) -> None:
    node = registered_node(node_id, None, {"hostname": node_id}, None, 0.0, role=observed)
    node["spec"]["role"] = desired
    await ca.store.txn([t.create(Kind.NODE, node)])


async def test_a_promoted_worker_renews_as_a_manager_with_its_manager_components(ca: CA) -> None:
    agent = ca.creds("w1", role=pki.WORKER, component="agent").identity
    await node_with(ca, "w1", observed="worker", desired="manager")
    with pytest.raises(PermissionDenied, match="becomes a swarm-manager"):
        await ca.authority.renew(agent, csrs("agent", "admin"), [])
    reply = await ca.authority.renew(agent, csrs("agent", "dispatcher", "raftstore"), ["127.0.0.1"])
    assert reply["role"] == pki.MANAGER
    idents = {c: pki.identity_of(pki.load_cert(p.encode())) for c, p in reply["certificates"].items()}
    assert {(i.node_id, i.role, i.component) for i in idents.values()} == {
        ("w1", pki.MANAGER, "agent"), ("w1", pki.MANAGER, "dispatcher"), ("w1", pki.MANAGER, "raftstore")}
    holder = await ca.store.get(Kind.CA, core.holder_id("w1"))
    assert set(holder["issuers"]) == {"agent", "dispatcher", "raftstore"}


async def test_without_a_pending_change_a_worker_cannot_ask_for_manager_components(ca: CA) -> None:
    agent = ca.creds("w2", role=pki.WORKER, component="agent").identity
    await node_with(ca, "w2", observed="worker", desired="worker")
    with pytest.raises(PermissionDenied, match="only its own 'agent'"):
        await ca.authority.renew(agent, csrs("agent", "dispatcher"), [])
    assert (await ca.authority.renew(agent, csrs("agent"), []))["role"] == pki.WORKER


async def test_a_demoted_manager_renews_its_agent_as_a_worker_and_nothing_else(ca: CA) -> None:
    agent = ca.creds("m-agent", role=pki.MANAGER, component="agent", node_id="m2").identity
    gateway = ca.creds("m-gw", role=pki.MANAGER, component="gateway", node_id="m2").identity
    await ca.authority.renew(gateway, csrs("gateway"), [])  # recorded while still a manager
    await node_with(ca, "m2", observed="manager", desired="worker")
    with pytest.raises(PermissionDenied, match="being demoted"):
        await ca.authority.renew(gateway, csrs("gateway"), [])
    reply = await ca.authority.renew(agent, csrs("agent"), [])
    assert reply["role"] == pki.WORKER
    assert pki.identity_of(pki.load_cert(reply["certificate"].encode())).role == pki.WORKER
    holder = await ca.store.get(Kind.CA, core.holder_id("m2"))
    assert set(holder["issuers"]) == {"agent"}  # a root rotation does not wait for its old gateway


async def test_a_manager_without_a_node_object_keeps_its_role(ca: CA) -> None:
    raft = ca.creds("r3", role=pki.MANAGER, component="raftstore", node_id="r3").identity
    assert (await ca.authority.renew(raft, csrs("raftstore"), []))["role"] == pki.MANAGER


def test_desired_role_is_a_pending_change_only() -> None:
    assert core.desired_role(None) is None
    assert core.desired_role({"spec": {"role": "worker"}, "role": "worker"}) is None
    assert core.desired_role({"spec": {"role": "manager"}, "role": "worker"}) == pki.MANAGER
    assert core.desired_role({"spec": {"role": "worker"}, "role": "manager"}) == pki.WORKER


def test_the_dispatcher_records_the_certificates_role() -> None:
    new = registered_node("n", None, {}, None, 0.0, role="manager")
    assert new["role"] == new["spec"]["role"] == "manager"
    # recorded before roles came from certificates: the desired role follows (nobody demoted it)
    legacy = {**registered_node("n", None, {}, None, 0.0), "meta": {"version": 1}}
    assert registered_node("n", legacy, {}, None, 1.0, role="manager")["spec"]["role"] == "manager"
    # demoted by the user: the desired role is kept; the observed one follows the certificate
    demoted = {**new, "spec": {**new["spec"], "role": "worker"}}
    again = registered_node("n", demoted, {}, None, 1.0, role="manager")
    assert (again["spec"]["role"], again["role"]) == ("worker", "manager")
    done = registered_node("n", again, {}, None, 2.0, role="worker")
    assert (done["spec"]["role"], done["role"]) == ("worker", "worker")
    assert core.desired_role(done) is None
