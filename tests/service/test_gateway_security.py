"""The gateway's authorization over real mutual TLS (an in-process uvicorn with shoal.transport's server
config over a LocalStore): only admin bundles reach `/v1/*`; managers reach the ops routes; workers, other
clusters, certificate-less clients and removed nodes are refused. The join-token relay to the CA, and
`spec.ca_config.node_cert_expiry`, over the TestClient."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.policy import gateway_policy
from services.gateway.settings import GatewaySettings
from shoal import pki
from shoal.certs import LOCAL_HOSTS, Signer
from shoal.cluster import default_cluster, with_removed_node
from shoal.models.kinds import Kind
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.transport import Credentials, Revocations, server_config, sync_http_client
from tests.integration.raftprocs import free_ports

pytestmark = pytest.mark.timeout(30)

WORKER_TOKEN = "SWMTKN-1-" + "a" * 50 + "-" + "w" * 25
MANAGER_TOKEN = "SWMTKN-1-" + "a" * 50 + "-" + "m" * 25


def ident(role: str, component: str) -> pki.Identity:
    return pki.Identity(node_id="n1", role=role, cluster_id="c", component=component, not_before=0, not_after=0,
                        serial=1)


# ---- the policy (pure) ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/services", "/v1/swarm/join-tokens", "/v1/cluster", "/docs"])
def test_only_admins_reach_the_api(path: str) -> None:
    assert gateway_policy(ident(pki.ADMIN, "admin"), "GET", path) is None
    for who in (ident(pki.MANAGER, "gateway"), ident(pki.MANAGER, "dispatcher"), ident(pki.WORKER, "agent")):
        reason = gateway_policy(who, "GET", path)
        assert reason is not None and path in reason


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_managers_and_admins_reach_the_ops_routes_workers_do_not(path: str) -> None:
    assert gateway_policy(ident(pki.MANAGER, "raftstore"), "GET", path) is None
    assert gateway_policy(ident(pki.ADMIN, "admin"), "GET", path) is None
    assert gateway_policy(ident(pki.WORKER, "agent"), "GET", path) is not None


# ---- a real mTLS server ----------------------------------------------------------------------------------------
class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.signer = Signer.new()

    def creds(self, name: str, role: str, component: str, signer: Signer | None = None) -> Credentials:
        return Credentials((signer or self.signer).issue_dir(self.tmp / name, node_id=name, role=role,
                                                             component=component, hosts=LOCAL_HOSTS))


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Cluster, str, LocalStore]]:
    c = Cluster(tmp_path)
    store = LocalStore()
    await store.txn([t.create(Kind.CLUSTER, default_cluster())])
    (port,) = free_ports(1)
    settings = GatewaySettings(store_members=["https://unused:1"], ready_probe_interval=0.05, port=port)
    revoked = Revocations()
    member_http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    app = create_app(settings, store=store, http=member_http, revoked=revoked)
    creds = c.creds("gw-node", pki.MANAGER, "gateway")
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, creds, gateway_policy, revoked=revoked))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield c, f"https://127.0.0.1:{port}", store
    finally:
        server.should_exit = True
        await task
        await member_http.aclose()


async def call(creds: Credentials | None, url: str, path: str, *, ctx: ssl.SSLContext | None = None) -> int:
    def go() -> int:
        if ctx is not None:
            with httpx.Client(verify=ctx, timeout=5) as h:
                return h.get(url + path).status_code
        with sync_http_client(creds, timeout=5) as h:
            return h.get(url + path).status_code

    return await asyncio.to_thread(go)


async def test_an_admin_bundle_reaches_the_api(gateway: tuple[Cluster, str, LocalStore]) -> None:
    c, url, _ = gateway
    admin = c.creds("admin-1", pki.ADMIN, "admin")
    assert await call(admin, url, "/v1/services") == 200
    assert await call(admin, url, "/healthz") == 200


async def test_a_worker_and_a_manager_non_admin_get_403_on_the_api(gateway: tuple[Cluster, str, LocalStore]) -> None:
    c, url, _ = gateway
    worker = c.creds("w1", pki.WORKER, "agent")
    manager = c.creds("m1", pki.MANAGER, "dispatcher")
    assert await call(worker, url, "/v1/services") == 403
    assert await call(manager, url, "/v1/services") == 403
    assert await call(worker, url, "/healthz") == 403
    assert await call(manager, url, "/healthz") == 200


async def test_only_an_admin_reads_the_event_stream(gateway: tuple[Cluster, str, LocalStore]) -> None:
    c, url, store = gateway
    until = f"/v1/events?since=0&until={store.mem.revision}"
    assert await call(c.creds("admin-3", pki.ADMIN, "admin"), url, until) == 200
    assert await call(c.creds("w2", pki.WORKER, "agent"), url, until) == 403
    assert await call(c.creds("m2", pki.MANAGER, "orchestrator"), url, until) == 403
    assert await call(c.creds("m3", pki.MANAGER, "gateway"), url, "/v1/events") == 403


async def test_clients_without_a_certificate_or_of_another_cluster_are_refused(
        gateway: tuple[Cluster, str, LocalStore]) -> None:
    c, url, _ = gateway
    no_cert = ssl.create_default_context(cadata=c.signer.root_pem.decode())
    with pytest.raises(httpx.HTTPError):
        await call(None, url, "/healthz", ctx=no_cert)
    foreign = Signer.new()
    other = c.creds("intruder", pki.ADMIN, "admin", signer=foreign)
    ctx = ssl.create_default_context(cadata=c.signer.root_pem.decode())  # trusts the server, shows a foreign cert
    ctx.load_cert_chain(other.cert_file, other.key_file)
    with pytest.raises(httpx.HTTPError):
        await call(None, url, "/v1/services", ctx=ctx)
    with pytest.raises(httpx.HTTPError):  # plaintext
        await asyncio.to_thread(lambda: httpx.get(url.replace("https", "http") + "/healthz", timeout=5))


async def test_a_removed_node_is_refused_once_the_gateway_reads_the_cluster_object(
        gateway: tuple[Cluster, str, LocalStore]) -> None:
    c, url, store = gateway
    admin = c.creds("admin-2", pki.ADMIN, "admin")
    assert await call(admin, url, "/v1/services") == 200
    cluster = await store.get(Kind.CLUSTER, "default")
    await store.txn([t.update(Kind.CLUSTER, with_removed_node(cluster, "admin-2", time.time()),
                              expect_version=cluster["meta"]["version"])])
    deadline = time.monotonic() + 5
    status = 200
    while status != 403 and time.monotonic() < deadline:  # the probe loop re-reads it every 50 ms
        await asyncio.sleep(0.05)
        status = await call(admin, url, "/v1/services")
    assert status == 403


# ---- join tokens, relayed to the CA -------------------------------------------------------------------------
class FakeCA:
    def __init__(self) -> None:
        self.tokens = {"worker": WORKER_TOKEN, "manager": MANAGER_TOKEN}
        self.requests: list[tuple[str, str, bytes]] = []
        self.refuse: tuple[int, dict[str, Any]] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, str(request.url), request.content))
        if self.refuse is not None:
            return httpx.Response(self.refuse[0], json=self.refuse[1])
        if request.url.host == "ca-down":
            raise httpx.ConnectError("refused", request=request)
        if request.method == "GET" and request.url.path == "/v1/tokens":
            return httpx.Response(200, json=self.tokens)
        if request.url.path.startswith("/v1/unlock-key"):
            return httpx.Response(200, json={"unlock_key": UNLOCK_KEY})
        if request.method == "POST" and request.url.path == "/v1/tokens/rotate":
            self.tokens["worker"] = WORKER_TOKEN.replace("w", "x")
            return httpx.Response(200, json=self.tokens)
        return httpx.Response(404, json={"message": "no such route", "code": "not_found"})


@pytest.fixture
def ca() -> FakeCA:
    return FakeCA()


@pytest.fixture
def client(ca: FakeCA) -> Iterator[TestClient]:
    settings = GatewaySettings(store_members=["http://s:1"], ca_urls=["https://ca-down:1", "https://ca:4250"],
                               ready_probe_interval=10)
    members = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    ca_http = httpx.AsyncClient(transport=httpx.MockTransport(ca))
    with TestClient(create_app(settings, store=LocalStore(), http=members, ca_http=ca_http)) as c:
        yield c


def test_join_tokens_are_relayed_to_the_first_ca_that_answers(client: TestClient, ca: FakeCA,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = client.get("/v1/swarm/join-tokens")
    assert r.status_code == 200
    assert r.json() == {"worker": WORKER_TOKEN, "manager": MANAGER_TOKEN, "join_addr": "ca:4250"}
    assert [u for _, u, _ in ca.requests] == ["https://ca-down:1/v1/tokens", "https://ca:4250/v1/tokens"]
    assert WORKER_TOKEN not in caplog.text and MANAGER_TOKEN not in caplog.text


def test_rotate_relays_the_role(client: TestClient, ca: FakeCA) -> None:
    r = client.post("/v1/swarm/join-tokens/rotate", json={"role": "worker"})
    assert r.status_code == 200 and r.json()["worker"] != WORKER_TOKEN
    assert ca.requests[-1][:2] == ("POST", "https://ca:4250/v1/tokens/rotate")
    assert ca.requests[-1][2] == b'{"role":"worker"}'


def test_rotate_refuses_an_unknown_role_without_asking_the_ca(client: TestClient, ca: FakeCA) -> None:
    r = client.post("/v1/swarm/join-tokens/rotate", json={"role": "admin"})
    assert r.status_code == 400 and "role" in r.json()["message"]
    assert ca.requests == []


def test_a_ca_refusal_is_passed_on(client: TestClient, ca: FakeCA) -> None:
    ca.refuse = (403, {"message": "ca: only the gateway may read tokens", "code": "permission_denied"})
    r = client.get("/v1/swarm/join-tokens")
    assert r.status_code == 403
    assert r.json() == {"message": "ca: only the gateway may read tokens", "code": "permission_denied"}


def test_no_ca_configured_is_503() -> None:
    settings = GatewaySettings(store_members=["http://s:1"], ready_probe_interval=10)
    members = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    with TestClient(create_app(settings, store=LocalStore(), http=members)) as c:
        r = c.get("/v1/swarm/join-tokens")
    assert r.status_code == 503 and "SHOAL_CA_URLS" in r.json()["message"]


def test_no_ca_answering_is_503(client: TestClient, ca: FakeCA) -> None:
    client.app.state.gateway.settings.ca_urls = ["https://ca-down:1"]  # type: ignore[attr-defined]
    r = client.get("/v1/swarm/join-tokens")
    assert r.status_code == 503 and r.json()["code"] == "unavailable"


# ---- ca_config ------------------------------------------------------------------------------------------------
def test_cluster_update_sets_the_node_cert_expiry(client: TestClient) -> None:
    version = (client.get("/v1/cluster").json()["meta"] or {}).get("version", 0)
    r = client.patch("/v1/cluster", json={"version": version, "ca_config": {"node_cert_expiry": "2h"}})
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["ca_config"] == {"node_cert_expiry": 7200.0}
    assert r.json()["spec"]["dispatcher"]["heartbeat_period"] == 5.0  # other sections untouched


@pytest.mark.parametrize("value", [1800, "59m", -1, "soon"])
def test_cluster_update_refuses_a_cert_expiry_under_an_hour(client: TestClient, value: Any) -> None:
    r = client.patch("/v1/cluster", json={"ca_config": {"node_cert_expiry": value}})
    assert r.status_code == 400
    assert "node_cert_expiry" in r.json()["message"] and r.json()["code"] == "invalid_argument"


# ---- the CLI over real mutual TLS ------------------------------------------------------------------------------
def bundle(creds: Credentials, d: Path) -> Path:
    d.mkdir(parents=True)
    (d / "ca.pem").write_bytes(creds.roots_pem)
    (d / "cert.pem").write_bytes(creds.cert_file.read_bytes())
    (d / "key.pem").write_bytes(creds.key_file.read_bytes())
    return d


async def test_the_cli_uses_the_admin_bundle(gateway: tuple[Cluster, str, LocalStore], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from shoal.cli import main

    c, url, _ = gateway
    monkeypatch.setenv("SHOAL_CERT_PATH", str(bundle(c.creds("admin-3", pki.ADMIN, "admin"), tmp_path / "adm")))
    assert await asyncio.to_thread(main, ["--url", url, "service", "ls", "-q"]) == 0
    monkeypatch.setenv("SHOAL_CERT_PATH", str(bundle(c.creds("w9", pki.WORKER, "agent"), tmp_path / "wrk")))
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["--url", url, "service", "ls"]) == 1
    assert "may not call GET /v1/services" in capsys.readouterr().err


# ---- autolock ----------------------------------------------------------------------------------------------------
UNLOCK_KEY = "SWMKEY-1-" + "A" * 43


def test_cluster_update_turns_autolock_on_and_the_unlock_key_is_relayed(
        client: TestClient, ca: FakeCA, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    version = (client.get("/v1/cluster").json().get("meta") or {}).get("version", 0)
    r = client.patch("/v1/cluster", json={"version": version, "encryption_config": {"auto_lock_managers": True}})
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["encryption_config"] == {"auto_lock_managers": True}
    version = r.json()["meta"]["version"]
    bad = [{"auto_lock_managers": "maybe"}, {"autolock": True}]
    assert all(client.patch("/v1/cluster", json={"version": version, "encryption_config": b}).status_code == 400
               for b in bad)
    assert client.get("/v1/swarm/unlock-key").json() == {"unlock_key": UNLOCK_KEY}
    assert client.post("/v1/swarm/unlock-key/rotate").status_code == 200
    assert [(m, u) for m, u, _ in ca.requests if "ca:4250" in u] == [
        ("GET", "https://ca:4250/v1/unlock-key"), ("POST", "https://ca:4250/v1/unlock-key/rotate")]
    assert UNLOCK_KEY not in caplog.text
