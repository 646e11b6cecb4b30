"""Root rotation on the CA service over real mutual TLS (in-memory store): the new root signs, the old stays
trusted and the cross-signed root goes with every certificate; a process that trusts only the old root still
talks to one renewed onto the new root, and the other way round; a node that is down holds the rotation until
it comes back and renews (or is removed); the join tokens change with the root; only the gateway may rotate."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.ca.core import CA_OBJECT_ID, policy
from shoal import enroll, pki, transport
from shoal.certs import LOCAL_HOSTS
from shoal.clock import FakeClock
from shoal.cluster import with_removed_node
from shoal.errors import Conflict
from shoal.models.kinds import Kind
from shoal.store import txn as t
from shoal.transport import Credentials
from tests.service.test_ca_service import CA, running_ca
from tests.service.tls_servers import TLSServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def ca(tmp_path: Path) -> AsyncIterator[CA]:
    async with running_ca(tmp_path / "ca") as c:
        yield c


def issuer_is(creds: Credentials, root_pem: bytes) -> bool:
    return pki.issued_by(pki.load_cert(creds.cert_file.read_bytes()), pki.load_cert(root_pem))


async def pending(ca: CA) -> set[tuple[str, str]]:
    return {(p["node_id"], p["component"]) for p in (await ca.authority.rotation_status())["pending"]}


async def test_rotation_converges_with_a_node_down_then_back(ca: CA, tmp_path: Path) -> None:
    up = await enroll.join([ca.url], ca.tokens["worker"], tmp_path / "up", hostname="up")
    down = await enroll.join([ca.url], ca.tokens["worker"], tmp_path / "down", hostname="down")
    up_creds, down_creds = Credentials(tmp_path / "up"), Credentials(tmp_path / "down")
    old_root = ca.signer.root_pem

    status = await ca.authority.rotate_root()
    new_root = status["root_cert"].encode()
    assert status["rotating"] and new_root != old_root
    assert await pending(ca) == {(up.node_id, "agent"), (down.node_id, "agent")}
    with pytest.raises(Conflict, match="already in progress"):
        await ca.authority.rotate_root()

    # The join tokens changed with the root: the old one names a root that is no longer current.
    with pytest.raises(enroll.JoinRefused, match="does not match the join token"):
        await enroll.join([ca.url], ca.tokens["worker"], tmp_path / "late", hostname="late")
    tokens = await ca.authority.tokens()
    assert pki.parse_token(tokens["worker"]).digest == pki.root_digest(pki.load_cert(new_root))

    # The node that is up notices the rotation when it looks at the roots, and renews onto the new root.
    renewer = enroll.Renewer(up_creds, [ca.url], root_poll=0.1)
    assert await renewer.check_roots()
    await enroll.renew(up_creds, [ca.url])
    assert issuer_is(up_creds, new_root)
    chain = pki.load_certs(up_creds.cert_file.read_bytes())
    assert len(chain) == 2 and pki.issued_by(chain[1], pki.load_cert(old_root))  # the cross-signed root
    assert pki.load_certs(up_creds.roots_pem) == pki.load_certs(new_root + old_root)
    assert not await renewer.check_roots()  # nothing more to do
    await enroll.renew(ca.server.creds, [ca.url])  # the CA's own certificate, as its process's Renewer does
    assert await pending(ca) == {(down.node_id, "agent")}

    # The node that was down still trusts only the old root; both directions of mTLS work with the renewed one.
    new_server_dir = tmp_path / "srv"
    ca.signer.issue_dir(new_server_dir, node_id="m2", role=pki.MANAGER, component="dispatcher", hosts=LOCAL_HOSTS)
    srv_creds = Credentials(new_server_dir)
    await enroll.renew(srv_creds, [ca.url])
    assert issuer_is(srv_creds, new_root)
    server = await TLSServer(ca.server.app, srv_creds, policy).start()
    try:
        async with transport.http_client(down_creds) as client:  # old-root leaf, old-root trust only
            assert (await client.get(server.url + "/v1/ca/roots")).status_code == 200
        async with transport.http_client(up_creds) as client:  # new-root leaf, to a server of the same
            assert (await client.get(server.url + "/v1/ca/roots")).status_code == 200
    finally:
        await server.stop()

    # A down node keeps the rotation from finishing...
    assert not await ca.authority.reconcile_rotation()
    assert (await ca.authority.rotation_status())["rotating"]
    # ...until it comes back and renews.
    assert await enroll.Renewer(down_creds, [ca.url]).check_roots()
    await enroll.renew(down_creds, [ca.url])
    await ca.authority.reconcile_rotation()  # (or the CA's own loop did it already)
    status = await ca.authority.rotation_status()
    assert not status["rotating"] and status["pending"] == []

    # The old root is dropped: the CA's roots are the new one only; processes follow it into their root file.
    assert pki.load_certs(await ca.authority.roots()) == [pki.load_cert(new_root)]
    assert not await enroll.Renewer(up_creds, [ca.url]).check_roots()
    assert pki.load_certs(up_creds.roots_pem) == [pki.load_cert(new_root)]
    # Certificates issued now carry no cross-signed root; joins work with the new token.
    joined = await enroll.join([ca.url], tokens["worker"], tmp_path / "after", hostname="after")
    assert len(pki.load_certs((tmp_path / "after" / pki.CERT_FILE).read_bytes())) == 1
    assert joined.role == pki.WORKER
    obj = await ca.store.get(Kind.CA, CA_OBJECT_ID)
    assert "rotation" not in obj and obj["root_cert"].encode() == new_root


async def test_a_removed_node_does_not_hold_the_rotation(ca: CA, tmp_path: Path) -> None:
    gone = await enroll.join([ca.url], ca.tokens["worker"], tmp_path / "gone", hostname="gone")
    await ca.authority.rotate_root()
    assert not await ca.authority.reconcile_rotation()
    cluster = await ca.store.get(Kind.CLUSTER, "default")
    await ca.store.txn([t.update(Kind.CLUSTER, with_removed_node(cluster, gone.node_id, 0.0))])
    await ca.authority.reconcile_rotation()
    assert not (await ca.authority.rotation_status())["rotating"]


async def test_only_the_gateway_rotates_the_root(ca: CA) -> None:
    await enroll.join([ca.url], ca.tokens["worker"], ca.tmp / "w1", hostname="w1")  # holds the rotation open
    for name, role, component in [("w", pki.WORKER, "agent"), ("d", pki.MANAGER, "dispatcher"),
                                  ("a", pki.ADMIN, "admin")]:
        async with transport.http_client(ca.creds(name, role=role, component=component)) as client:
            assert (await client.post(ca.url + "/v1/ca/rotate")).status_code == 403
            assert (await client.get(ca.url + "/v1/ca")).status_code == 403
    async with httpx.AsyncClient(verify=enroll.pinned_context(ca.signer.roots_pem)) as anonymous:
        assert (await anonymous.post(ca.url + "/v1/ca/rotate")).status_code == 401
    async with transport.http_client(ca.creds("g", role=pki.MANAGER, component="gateway")) as client:
        started = await client.post(ca.url + "/v1/ca/rotate")
        again = await client.post(ca.url + "/v1/ca/rotate")
        status = (await client.get(ca.url + "/v1/ca")).json()
    assert started.status_code == 200 and started.json()["rotating"]
    assert again.status_code == 409 and again.json()["code"]
    assert "root_key" not in status and "PRIVATE" not in str(status)


async def test_a_roots_hint_from_the_session_makes_a_node_look_now_and_only_when_they_changed(
        ca: CA, tmp_path: Path) -> None:
    """The dispatcher hands every heartbeat the digest of the roots it trusts (its own root file); a node's
    Renewer looks at the CA's roots at once when that is not the digest of its own — once per digest — and
    otherwise polls ten times less often. Here the periodic poll is an hour away: only the hint can make the
    node notice the rotation."""
    await enroll.join([ca.url], ca.tokens["worker"], tmp_path / "n", hostname="n")
    creds = Credentials(tmp_path / "n")
    renewer = enroll.Renewer(creds, [ca.url], root_poll=3600.0)
    looks = 0
    look = renewer.check_roots

    async def counted() -> bool:
        nonlocal looks
        looks += 1
        return await look()

    renewer.check_roots = counted  # type: ignore[method-assign]
    assert renewer.poll_interval() == 3600.0
    runner = asyncio.create_task(renewer.run())
    try:
        renewer.hint_roots(enroll.roots_digest(creds.roots_pem))  # the same roots: nothing to do
        assert renewer.poll_interval() == 3600.0 * enroll.HINTED_POLL_FACTOR
        await asyncio.sleep(0.3)
        assert looks == 0

        old_root = ca.signer.root_pem
        new_root = (await ca.authority.rotate_root())["root_cert"].encode()
        dispatcher_digest = enroll.RootsDigest(lambda: new_root + old_root)  # a dispatcher that renewed already
        for _ in range(3):  # every heartbeat carries it; the node looks once
            renewer.hint_roots(str(dispatcher_digest()))
        for _ in range(100):
            if issuer_is(creds, new_root):
                break
            await asyncio.sleep(0.05)
        assert issuer_is(creds, new_root), "the hint did not make the node renew onto the rotated root"
        assert looks == 1
        assert enroll.roots_digest(creds.roots_pem) == dispatcher_digest()
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


def test_roots_digest_ignores_surrounding_whitespace_and_rereads_the_file_once_per_ttl(tmp_path: Path) -> None:
    f = tmp_path / "roots.pem"
    f.write_bytes(b"\nPEM A\n")
    assert enroll.roots_digest(b"PEM A") == enroll.roots_digest(b"\nPEM A\n") != enroll.roots_digest(b"PEM B")
    clock = FakeClock()
    digest = enroll.RootsDigest(f.read_bytes, clock, ttl=1.0)
    first = digest()
    f.write_bytes(b"PEM B")
    assert digest() == first  # within the ttl: the cached value
    clock.advance(1.0)
    assert digest() == enroll.roots_digest(b"PEM B")
    f.unlink()
    clock.advance(1.0)
    assert digest() is None  # no file: no hint rather than a wrong one
