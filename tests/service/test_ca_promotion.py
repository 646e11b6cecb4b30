"""Promotion and demotion, the certificate part: the CA issues a node's new role on renewal when its desired
role in the store (`spec.role`, set by `shoal node promote|demote`) differs from the role it was last seen with
(`role`, recorded by the dispatcher from its certificate). Unit tests of the dispatcher's recording too."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from services.ca import core
from services.dispatcher.core import registered_node
from shoal import enroll, pki
from shoal.errors import PermissionDenied
from shoal.models.kinds import Kind
from shoal.store import txn as t
from shoal.transport import Credentials
from tests.service.test_ca_service import CA, running_ca

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def ca(tmp_path: Path) -> AsyncIterator[CA]:
    async with running_ca(tmp_path / "ca") as c:
        yield c


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


async def test_the_renewer_told_a_new_role_renews_at_once_with_the_manager_components(ca: CA,
                                                                                        tmp_path: Path) -> None:
    """The node learns its desired role from its dispatcher's heartbeat answer (`Renewer.desire`): promoted,
    its agent renews at once (not at 50-80 % of the lifetime) and gets its manager components' certificates in
    the same renewal; demoted, it renews as a worker and asks for nothing else."""
    joined = await enroll.join([ca.url], ca.tokens["worker"], tmp_path / "w", hostname="w",
                               hosts=["127.0.0.1"])
    creds = Credentials(tmp_path / "w")
    renewer = enroll.Renewer(creds, [ca.url], root_poll=30.0)
    renewer.manager_components = {c: tmp_path / "w" / c for c in ("raftstore", "gateway")}
    changes: list[str] = []
    renewer.on_role_change = changes.append
    await node_with(ca, joined.node_id, observed="worker", desired="worker")
    running = asyncio.create_task(renewer.run())
    try:
        renewer.desire(pki.WORKER)  # no change: nothing happens
        await asyncio.sleep(0.3)
        assert renewer.renewals == 0 and renewer.extra_components() == {}
        node = await ca.store.get(Kind.NODE, joined.node_id)
        await ca.store.txn([t.update(Kind.NODE, {**node, "spec": {**node["spec"], "role": "manager"}})])
        renewer.desire(pki.MANAGER)
        await _until(lambda: renewer.renewals == 1)
        assert creds.identity.role == pki.MANAGER and changes == [pki.MANAGER]
        for comp in ("raftstore", "gateway"):
            ident = Credentials(tmp_path / "w" / comp).identity
            assert (ident.node_id, ident.role, ident.component) == (joined.node_id, pki.MANAGER, comp)
        # the dispatcher records the new role at the next registration; then the user demotes the node
        node = await ca.store.get(Kind.NODE, joined.node_id)
        await ca.store.txn([t.update(Kind.NODE, {**node, "role": "manager", "spec": {**node["spec"],
                                                                                   "role": "worker"}})])
        renewer.desire(pki.WORKER)
        assert renewer.extra_components() == {}
        await _until(lambda: renewer.renewals == 2)
        assert creds.identity.role == pki.WORKER and changes == [pki.MANAGER, pki.WORKER]
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)
