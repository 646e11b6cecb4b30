"""The CA service on real mutual TLS (shoal.transport's server config, Guard, the CA's policy) over an in-memory
store: joins with right, wrong, tampered and missing tokens, role and component rules, renewal keeping the
identity, revocation, and the gateway-only token endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.ca.app import create_app
from services.ca.authority import CertificateAuthority
from services.ca.core import ANONYMOUS_PATHS, CA_OBJECT_ID, policy
from services.ca.settings import CASettings
from shoal import enroll, pki, transport, unlockkey
from shoal.certs import LOCAL_HOSTS, Signer
from shoal.cluster import ensure_cluster, with_removed_node
from shoal.errors import PermissionDenied
from shoal.models.kinds import Kind
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.transport import Credentials
from tests.service.tls_servers import TLSServer

pytestmark = pytest.mark.timeout(60)


@dataclass
class CA:
    signer: Signer
    store: LocalStore
    server: TLSServer
    authority: CertificateAuthority
    tokens: dict[str, str]
    tmp: Path

    @property
    def url(self) -> str:
        return self.server.url

    def creds(self, name: str, *, role: str, component: str, node_id: str | None = None,
              signer: Signer | None = None) -> Credentials:
        (signer or self.signer).issue_dir(self.tmp / name, node_id=node_id or name, role=role, component=component,
                                          hosts=LOCAL_HOSTS)
        return Credentials(self.tmp / name)


async def start_ca(tmp: Path, **settings: object) -> CA:
    signer = Signer.new()
    secrets = {"worker": pki.new_token_secret(), "manager": pki.new_token_secret()}
    tmp.mkdir(parents=True, exist_ok=True)
    boot = tmp / "bootstrap.json"
    boot.write_text(json.dumps({"cluster_id": signer.cluster_id, "root_cert": signer.root_pem.decode(),
                                "root_key": signer.key_pem.decode(), "tokens": secrets}))
    store = LocalStore()
    await ensure_cluster(store)
    cfg = CASettings(ca_bootstrap=str(boot), revocation_poll=0.05, **settings)  # type: ignore[arg-type]
    app = create_app(cfg, store=store)
    ca: CertificateAuthority = app.state.ca
    signer.issue_dir(tmp / "ca", node_id="m1", role=pki.MANAGER, component="ca", hosts=LOCAL_HOSTS)
    server = await TLSServer(app, Credentials(tmp / "ca"), policy, revoked=ca.revocations,
                             anonymous=ANONYMOUS_PATHS).start()
    for _ in range(200):
        if ca.ready():
            break
        await asyncio.sleep(0.02)
    assert ca.ready()
    tokens = {k: pki.make_token(signer.root, s) for k, s in secrets.items()}
    return CA(signer, store, server, ca, tokens, tmp)


@contextlib.asynccontextmanager
async def running_ca(tmp: Path) -> AsyncIterator[CA]:
    """A CA started with `start_ca(tmp)`, stopped when the block ends (the CA fixtures of the CA tests)."""
    c = await start_ca(tmp)
    try:
        yield c
    finally:
        await c.server.stop()


@pytest.fixture
async def ca(tmp_path: Path) -> AsyncIterator[CA]:
    async with running_ca(tmp_path) as c:
        yield c


async def test_bootstrap_file_is_loaded_into_the_store_and_deleted(ca: CA) -> None:
    obj = await ca.store.get(Kind.CA, CA_OBJECT_ID)
    assert obj["cluster_id"] == ca.signer.cluster_id
    assert not (ca.tmp / "bootstrap.json").exists()


async def test_worker_token_joins_as_a_worker_agent(ca: CA, tmp_path: Path) -> None:
    ident = await enroll.join([ca.url], ca.tokens["worker"], tmp_path / "w1", hostname="w1")
    assert (ident.role, ident.component, ident.cluster_id) == (pki.WORKER, "agent", ca.signer.cluster_id)
    creds = Credentials(tmp_path / "w1")  # a usable identity, chained to the cluster root
    assert creds.identity.node_id == ident.node_id
    assert (tmp_path / "w1" / pki.KEY_FILE).stat().st_mode & 0o777 == 0o600


async def test_manager_token_may_ask_for_manager_components(ca: CA) -> None:
    key = pki.new_key()
    csrs = {c: pki.make_csr(key).decode() for c in ("dispatcher", "agent")}
    async with httpx.AsyncClient(verify=enroll.pinned_context(ca.signer.roots_pem)) as client:
        resp = await client.post(ca.url + "/v1/join", json={"token": ca.tokens["manager"], "csrs": csrs})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["role"] == pki.MANAGER
    idents = {c: pki.identity_of(pki.load_cert(p.encode())) for c, p in body["certificates"].items()}
    assert {i.component for i in idents.values()} == {"dispatcher", "agent"}
    assert {i.node_id for i in idents.values()} == {body["node_id"]}


async def test_wrong_secret_is_refused_with_a_clear_message(ca: CA, tmp_path: Path) -> None:
    bad = pki.make_token(ca.signer.root, pki.new_token_secret())
    with pytest.raises(enroll.JoinRefused, match="not valid"):
        await enroll.join([ca.url], bad, tmp_path / "w", hostname="w")
    assert not (tmp_path / "w").exists()


async def test_tampered_digest_is_refused_before_anything_is_sent(ca: CA, tmp_path: Path) -> None:
    other = Signer.new()
    forged = pki.make_token(other.root, ca.tokens["worker"].rsplit("-", 1)[1])
    with pytest.raises(enroll.JoinRefused, match="does not match the join token"):
        await enroll.join([ca.url], forged, tmp_path / "w", hostname="w")
    assert ca.authority.metrics.value("ca_joins_refused_total") == 0  # never reached the CA


async def test_join_without_or_with_malformed_token_is_400(ca: CA) -> None:
    csr = pki.make_csr(pki.new_key()).decode()
    async with httpx.AsyncClient(verify=enroll.pinned_context(ca.signer.roots_pem)) as client:
        missing = await client.post(ca.url + "/v1/join", json={"csrs": {"agent": csr}})
        malformed = await client.post(ca.url + "/v1/join", json={"token": "SWMTKN-1-xyz", "csrs": {"agent": csr}})
        bad_csr = await client.post(ca.url + "/v1/join", json={"token": ca.tokens["worker"],
                                                                "csrs": {"agent": "not a csr"}})
    assert missing.status_code == 400 and missing.json()["code"] == "invalid_argument"
    assert malformed.status_code == 400 and "SWMTKN-1-<digest>-<secret>" in malformed.json()["message"]
    assert bad_csr.status_code == 400 and "CSR" in bad_csr.json()["message"]


async def test_worker_token_cannot_obtain_a_manager_component(ca: CA) -> None:
    csr = pki.make_csr(pki.new_key()).decode()
    async with httpx.AsyncClient(verify=enroll.pinned_context(ca.signer.roots_pem)) as client:
        resp = await client.post(ca.url + "/v1/join", json={"token": ca.tokens["worker"],
                                                            "csrs": {"dispatcher": csr}})
    assert resp.status_code == 403
    assert "dispatcher" in resp.json()["message"]


async def test_failed_joins_are_rate_limited_per_address(ca: CA) -> None:
    bad = pki.make_token(ca.signer.root, pki.new_token_secret())
    csr = pki.make_csr(pki.new_key()).decode()
    async with httpx.AsyncClient(verify=enroll.pinned_context(ca.signer.roots_pem)) as client:
        codes = [(await client.post(ca.url + "/v1/join", json={"token": bad, "csrs": {"agent": csr}})).status_code
                 for _ in range(ca.authority.limiter.limit + 1)]
        good = await client.post(ca.url + "/v1/join", json={"token": ca.tokens["worker"], "csrs": {"agent": csr}})
    assert codes[:-1] == [401] * ca.authority.limiter.limit and codes[-1] == 429
    assert good.status_code == 429  # the address is blocked for the window, whatever it sends


async def test_renewal_keeps_the_identity(ca: CA, tmp_path: Path) -> None:
    joined = await enroll.join([ca.url], ca.tokens["worker"], tmp_path / "w", hostname="w")
    creds = Credentials(tmp_path / "w")
    renewed = await enroll.renew(creds, [ca.url])
    assert (renewed.node_id, renewed.role, renewed.component) == (joined.node_id, pki.WORKER, "agent")
    assert renewed.serial != joined.serial
    assert creds.identity.serial == renewed.serial  # reloaded in place


async def test_a_worker_cannot_escalate_by_renewing(ca: CA) -> None:
    creds = ca.creds("w", role=pki.WORKER, component="agent")
    csr = pki.make_csr(pki.new_key()).decode()
    async with transport.http_client(creds) as client:
        resp = await client.post(ca.url + "/v1/renew", json={"csrs": {"dispatcher": csr}})
        both = await client.post(ca.url + "/v1/renew", json={"csrs": {"agent": csr, "gateway": csr}})
    assert resp.status_code == 403 and both.status_code == 403
    assert "only its own 'agent'" in resp.json()["message"]


async def test_renewal_needs_a_certificate(ca: CA) -> None:
    csr = pki.make_csr(pki.new_key()).decode()
    async with httpx.AsyncClient(verify=enroll.pinned_context(ca.signer.roots_pem)) as client:
        resp = await client.post(ca.url + "/v1/renew", json={"csr": csr})
        tokens = await client.get(ca.url + "/v1/tokens")
    assert resp.status_code == 401 and tokens.status_code == 401


async def test_a_foreign_cluster_certificate_cannot_renew(ca: CA) -> None:
    creds = ca.creds("x", role=pki.WORKER, component="agent", signer=Signer.new())
    ctx = creds.context("client")
    ctx.load_verify_locations(cadata=ca.signer.root_pem.decode())  # it trusts our server; we do not trust it
    async with httpx.AsyncClient(verify=ctx) as client:
        with pytest.raises(httpx.HTTPError):
            await client.post(ca.url + "/v1/renew", json={"csr": pki.make_csr(pki.new_key()).decode()})


async def test_a_removed_node_cannot_renew(ca: CA) -> None:
    creds = ca.creds("gone", role=pki.WORKER, component="agent")
    cluster = await ca.store.get(Kind.CLUSTER, "default")
    await ca.store.txn([t.update(Kind.CLUSTER, with_removed_node(cluster, "gone", 0.0))])
    assert "gone" in (await ca.store.get(Kind.CLUSTER, "default"))["removed_nodes"][0]["id"]
    await ca.authority.refresh_revocations()
    with pytest.raises(enroll.CAUnavailable, match="removed from the cluster"):
        await enroll.renew(creds, [ca.url])
    # Behind Guard's list, the renewal itself reads the store (a removal newer than the last poll).
    with pytest.raises(PermissionDenied, match="cannot renew"):
        await ca.authority.renew(creds.identity, {"agent": pki.make_csr(pki.new_key()).decode()}, [])


async def test_tokens_only_for_the_gateway(ca: CA) -> None:
    for name, role, component in [("w", pki.WORKER, "agent"), ("d", pki.MANAGER, "dispatcher"),
                                  ("a", pki.ADMIN, "admin")]:
        async with transport.http_client(ca.creds(name, role=role, component=component)) as client:
            assert (await client.get(ca.url + "/v1/tokens")).status_code == 403
            assert (await client.post(ca.url + "/v1/tokens/rotate", json={"role": "worker"})).status_code == 403
    async with transport.http_client(ca.creds("g", role=pki.MANAGER, component="gateway")) as client:
        tokens = (await client.get(ca.url + "/v1/tokens")).json()
        assert tokens == ca.tokens
        rotated = (await client.post(ca.url + "/v1/tokens/rotate", json={"role": "worker"})).json()
        bad = await client.post(ca.url + "/v1/tokens/rotate", json={"role": "admin"})
    assert bad.status_code == 400
    assert rotated["worker"] != ca.tokens["worker"] and rotated["manager"] == ca.tokens["manager"]
    with pytest.raises(enroll.JoinRefused, match="not valid"):
        await enroll.join([ca.url], ca.tokens["worker"], ca.tmp / "late", hostname="late")
    assert (await enroll.join([ca.url], rotated["worker"], ca.tmp / "ok", hostname="ok")).role == pki.WORKER


async def test_certificate_lifetime_follows_the_cluster_and_the_test_override(tmp_path: Path) -> None:
    c = await start_ca(tmp_path, test_cert_expiry=30.0)
    try:
        ident = await enroll.join([c.url], c.tokens["worker"], tmp_path / "w", hostname="w")
        assert 29 <= ident.not_after - ident.not_before <= 31
    finally:
        await c.server.stop()
    assert os.environ.get("SHOAL_TEST_CERT_EXPIRY") is None


async def set_autolock(store: LocalStore, on: bool) -> None:
    cluster = await store.get(Kind.CLUSTER, "default")
    spec = {**cluster["spec"], "encryption_config": {"auto_lock_managers": on}}
    await store.txn([t.update(Kind.CLUSTER, {**cluster, "spec": spec})])


async def test_the_unlock_key_follows_autolock_and_only_the_gateway_sees_or_rotates_it(ca: CA) -> None:
    for name, role, component in [("w", pki.WORKER, "agent"), ("d", pki.MANAGER, "dispatcher"),
                                  ("a", pki.ADMIN, "admin"), ("r", pki.MANAGER, "raftstore")]:
        async with transport.http_client(ca.creds(name, role=role, component=component)) as client:
            assert (await client.get(ca.url + "/v1/unlock-key")).status_code == 403
            assert (await client.post(ca.url + "/v1/unlock-key/rotate", json={})).status_code == 403
    async with transport.http_client(ca.creds("g", role=pki.MANAGER, component="gateway")) as gw:
        assert [o["id"] for o in (await ca.store.list(unlockkey.KIND))[1]] == [CA_OBJECT_ID]
        assert (await gw.get(ca.url + "/v1/unlock-key")).json() == {"unlock_key": ""}
        r = await gw.post(ca.url + "/v1/unlock-key/rotate", json={})
        assert r.status_code == 409 and "autolock is off" in r.json()["message"]
        await set_autolock(ca.store, True)
        key = (await gw.get(ca.url + "/v1/unlock-key")).json()["unlock_key"]
        assert len(unlockkey.parse(key)) == 32
        assert (await ca.store.get(unlockkey.KIND, unlockkey.OBJECT_ID))["key"] == key
        assert (await gw.get(ca.url + "/v1/unlock-key")).json()["unlock_key"] == key  # stable
        rotated = (await gw.post(ca.url + "/v1/unlock-key/rotate", json={})).json()["unlock_key"]
        assert rotated != key and (await ca.store.get(unlockkey.KIND, unlockkey.OBJECT_ID))["key"] == rotated
        await set_autolock(ca.store, False)
        for _ in range(100):  # the CA's poll removes it (SHOAL_REVOCATION_POLL here: 0.05 s)
            if not (await ca.store.list(unlockkey.KIND))[1][1:]:  # only the root is left
                break
            await asyncio.sleep(0.02)
        assert [o["id"] for o in (await ca.store.list(unlockkey.KIND))[1]] == [CA_OBJECT_ID]
        assert (await gw.get(ca.url + "/v1/unlock-key")).json() == {"unlock_key": ""}


async def test_a_join_costs_the_store_two_reads_and_one_write_and_roots_are_read_once_a_second(
        ca: CA, tmp_path: Path) -> None:
    """Issue 13 (1,000 joins): a join reads the ca object (its token is checked against the store, never a
    cached copy) and the cluster, and creates the new node's holder object without reading it first; the
    managers' addresses and the roots every node polls come from the store at most once per interval."""
    ca.authority.stop()  # its background polls (revocations, autolock, rotation) read the store too
    await asyncio.sleep(0.2)
    reads: list[str] = []
    writes: list[int] = []
    real_get, real_txn = ca.store.get, ca.store.txn

    async def get(kind: str, oid: str) -> Any:
        reads.append(f"{kind}/{oid}")
        return await real_get(kind, oid)

    async def txn(ops: Any) -> Any:
        writes.append(len(ops))
        return await real_txn(ops)

    ca.store.get, ca.store.txn = get, txn  # type: ignore[method-assign]
    await enroll.join([ca.url], ca.tokens["worker"], tmp_path / "w1", hostname="w1")  # roots + join
    await enroll.join([ca.url], ca.tokens["worker"], tmp_path / "w2", hostname="w2")
    # the roots were read once for both joins; each join read the ca object and the cluster, and wrote once
    assert reads.count(f"{Kind.CA}/{CA_OBJECT_ID}") == 3 and reads.count(f"{Kind.CLUSTER}/default") == 2
    assert len(reads) == 5 and writes == [1, 1]
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with httpx.AsyncClient(verify=False) as client:
        for _ in range(20):
            assert (await client.get(ca.url + "/v1/ca/roots")).content == ca.signer.root_pem
    assert len(reads) - 5 <= 1 + int(loop.time() - start)  # 20 requests: a read per second at most
    # a rotated token is refused at once: the join's token check reads the store
    await ca.authority.rotate("worker")
    with pytest.raises(enroll.JoinRefused, match="not valid"):
        await enroll.join([ca.url], ca.tokens["worker"], tmp_path / "w3", hostname="w3")
