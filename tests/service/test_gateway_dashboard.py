"""The dashboard's door over real TLS (an in-process uvicorn with shoal.transport's server config, the way
services/gateway/__main__.py serves it, over a LocalStore): an admin bundle asks for a login link, a browser
without a certificate exchanges it once for a session cookie and then reads the dashboard — and nothing else.
Every refusal is tested: no credential, a wrong/used/expired token, a forged/expired/logged-out session, a
session on the API, a session of a removed admin, non-admins asking for links, too many browsers, the
dashboard turned off. The live stream is read as a browser would (SSE)."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from services.gateway.__main__ import UI_LOGIN_HINT
from services.gateway.app import create_app
from services.gateway.policy import gateway_policy
from services.gateway.settings import GatewaySettings
from services.gateway.ui.sessions import COOKIE_NAME, LOGIN_PATH, UiSessions
from shoal import pki
from shoal.certs import LOCAL_HOSTS, Signer
from shoal.cluster import default_cluster, with_removed_node
from shoal.models.kinds import Kind
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.transport import Credentials, Revocations, server_config, sync_http_client
from tests.integration.raftprocs import free_ports

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Gateway:
    url: str
    signer: Signer
    tmp: Path
    store: LocalStore
    clock: Clock
    sessions: UiSessions
    app: Any

    def creds(self, name: str, role: str, component: str) -> Credentials:
        return Credentials(self.signer.issue_dir(self.tmp / name, node_id=name, role=role, component=component,
                                                 hosts=LOCAL_HOSTS))

    def browser(self) -> httpx.Client:
        """A TLS client without a certificate that trusts the cluster root (a browser that imported ca.pem)."""
        return httpx.Client(verify=ssl.create_default_context(cadata=self.signer.root_pem.decode()), timeout=5,
                            base_url=self.url)

    def admin(self, name: str = "admin-1") -> httpx.Client:
        return sync_http_client(self.creds(name, pki.ADMIN, "admin"), timeout=5, base_url=self.url)


async def serve(tmp: Path, *, ui: bool = True, max_clients: int = 4) -> AsyncIterator[Gateway]:
    signer = Signer.new()
    store = LocalStore()
    await store.txn([t.create(Kind.CLUSTER, default_cluster())])
    (port,) = free_ports(1)
    settings = GatewaySettings(store_members=["https://unused:1"], ready_probe_interval=0.05, port=port, ui=ui,
                               ui_max_clients=max_clients, ui_interval=0.1)
    revoked = Revocations()
    clock = Clock()
    gw_creds = Credentials(signer.issue_dir(tmp / "gw", node_id="gw", role=pki.MANAGER, component="gateway",
                                            hosts=LOCAL_HOSTS))
    sessions = UiSessions(gw_creds.identity.cluster_id, clock=clock, token_ttl=60, session_ttl=3600)
    member_http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    app = create_app(settings, store=store, http=member_http, revoked=revoked, ui_sessions=sessions)
    door: dict[str, Any] = {"anonymous": (LOGIN_PATH,), "authenticate": sessions.authenticate,
                            "login_hint": UI_LOGIN_HINT} if ui else {}
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, gw_creds, gateway_policy, revoked=revoked,
                                          timeout_graceful_shutdown=1, **door))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield Gateway(f"https://127.0.0.1:{port}", signer, tmp, store, clock, sessions, app)
    finally:
        server.should_exit = True
        await task
        await member_http.aclose()


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for g in serve(tmp_path):
        yield g


def run(fn: Any, *args: Any) -> Any:
    return asyncio.to_thread(fn, *args)


def login_link(gw: Gateway, admin: str = "admin-1") -> str:
    with gw.admin(admin) as h:
        r = h.post("/v1/ui/login")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["path"].startswith(LOGIN_PATH + "?token=") and body["expires_in"] == 60
    return str(body["path"])


def session_cookie(gw: Gateway, admin: str = "admin-1") -> str:
    path = login_link(gw, admin)
    with gw.browser() as b:
        r = b.get(path)
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    return cookie.split(";", 1)[0].split("=", 1)[1]


def get(gw: Gateway, path: str, cookie: str | None = None, method: str = "GET") -> httpx.Response:
    with gw.browser() as b:
        headers = {"cookie": f"{COOKIE_NAME}={cookie}"} if cookie is not None else {}
        return b.request(method, path, headers=headers)


async def test_a_login_link_gives_a_browser_a_strict_session_cookie_once(gw: Gateway) -> None:
    path = await run(login_link, gw)
    first = await run(get, gw, path)
    assert first.status_code == 200
    cookie = first.headers["set-cookie"]
    for attribute in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
        assert attribute in cookie, cookie
    assert first.headers["referrer-policy"] == "no-referrer"  # the token never leaves in a Referer
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert len(value) >= 43 and value not in path  # 32 random bytes, not the token
    page = await run(get, gw, "/ui/", value)
    assert page.status_code == 200 and "<title>shoal</title>" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert (await run(get, gw, f"/ui/static/{name}", value)).status_code == 200
    root = await run(get, gw, "/", value)
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    # single use: the same link again is refused and sets nothing
    again = await run(get, gw, path)
    assert again.status_code == 401 and "set-cookie" not in again.headers
    assert again.json()["code"] == "unauthenticated" and "shoal ui" in again.json()["message"]


async def test_without_a_certificate_or_a_session_everything_is_refused(gw: Gateway) -> None:
    for path in ("/", "/ui/", "/ui/static/app.js", "/ui/stream", "/v1/services", "/healthz", "/_ping"):
        r = await run(get, gw, path)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["code"] == "unauthenticated" and "shoal ui" in r.json()["message"]
    for token in ("", "x", "A" * 43):  # missing, short, well-formed but never issued
        r = await run(get, gw, f"{LOGIN_PATH}?token={token}")
        assert r.status_code == 401 and "set-cookie" not in r.headers
    forged = await run(get, gw, "/ui/", "A" * 43)
    assert forged.status_code == 401
    r = await run(lambda: gw.browser().post("/v1/ui/login"))
    assert r.status_code == 401


async def test_a_token_expires(gw: Gateway) -> None:
    path = await run(login_link, gw)
    gw.clock.now += 61
    r = await run(get, gw, path)
    assert r.status_code == 401 and "set-cookie" not in r.headers


async def test_a_session_expires_and_logout_ends_it(gw: Gateway) -> None:
    cookie = await run(session_cookie, gw)
    assert (await run(get, gw, "/ui/", cookie)).status_code == 200
    gw.clock.now += 3601
    assert (await run(get, gw, "/ui/", cookie)).status_code == 401
    gw.clock.now -= 3601
    cookie = await run(session_cookie, gw)
    out = await run(get, gw, "/ui/logout", cookie)
    assert out.status_code == 200 and "Max-Age=0" in out.headers["set-cookie"]
    assert (await run(get, gw, "/ui/", cookie)).status_code == 401


async def test_a_session_reads_the_dashboard_and_nothing_else(gw: Gateway) -> None:
    cookie = await run(session_cookie, gw)
    for path in ("/v1/services", "/v1/cluster", "/v1/swarm/join-tokens", "/metrics", "/healthz", "/_ping",
                 "/docs", "/v1.41/services"):
        r = await run(get, gw, path, cookie)
        assert r.status_code == 403, (path, r.text)
        assert "dashboard session" in r.json()["message"]
    for method, path in (("POST", "/v1/ui/login"), ("POST", "/v1/services"), ("PUT", "/ui/"),
                         ("DELETE", "/ui/stream")):
        r = await run(get, gw, path, cookie, method)
        assert r.status_code == 403, (method, path, r.text)


async def test_only_admins_get_login_links(gw: Gateway) -> None:
    for name, role, component in (("w1", pki.WORKER, "agent"), ("m1", pki.MANAGER, "gateway")):
        with sync_http_client(gw.creds(name, role, component), timeout=5, base_url=gw.url) as h:
            r = await run(h.post, "/v1/ui/login")
        assert r.status_code == 403, r.text
    assert gw.sessions.counts == (0, 0)


async def test_the_session_of_a_removed_admin_is_refused(gw: Gateway) -> None:
    cookie = await run(session_cookie, gw, "admin-gone")
    assert (await run(get, gw, "/ui/", cookie)).status_code == 200
    cluster = await gw.store.get(Kind.CLUSTER, "default")
    await gw.store.txn([t.update(Kind.CLUSTER, with_removed_node(cluster, "admin-gone", time.time()),
                                 expect_version=cluster["meta"]["version"])])
    deadline = time.monotonic() + 5
    status = 200
    while status != 403 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        status = (await run(get, gw, "/ui/", cookie)).status_code
    assert status == 403


def read_stream(gw: Gateway, cookie: str, want: int | str, timeout: float = 10.0) -> list[tuple[str, Any]]:
    """Read Server-Sent Events until `want` messages came (a number), or a message of that kind (a name)."""
    out: list[tuple[str, Any]] = []
    deadline = time.monotonic() + timeout
    with gw.browser() as b, b.stream("GET", "/ui/stream", headers={"cookie": f"{COOKIE_NAME}={cookie}"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[6:])))
                done = len(out) >= want if isinstance(want, int) else event == want
                if done or time.monotonic() > deadline:
                    break
    return out


async def test_the_stream_sends_a_snapshot_then_changes_and_events(gw: Gateway) -> None:
    cookie = await run(session_cookie, gw)
    reader = asyncio.create_task(asyncio.to_thread(read_stream, gw, cookie, "events"))
    await asyncio.sleep(0.5)
    svc = {"id": "s1", "spec": {"name": "web", "mode": {"replicated": {"replicas": 2}},
                                "task": {"process": {"command": ["sleep", "1"]}}}}
    await gw.store.txn([t.create(Kind.SERVICE, svc)])
    messages = await reader
    kinds = [k for k, _ in messages]
    assert kinds[0] == "snapshot" and "events" in kinds, kinds
    last = [d for k, d in messages if k == "snapshot"][-1]
    assert [s["name"] for s in last["services"]] == ["web"] and last["services"][0]["desired"] == 2
    events = [e for k, d in messages if k == "events" for e in d]
    assert {"kind": "service", "action": "create", "name": "web", "id": "s1"}.items() <= events[0].items()
    # the stream ended with the browser: the hub forgets it
    deadline = time.monotonic() + 5
    while gw.app.state.ui_hub.browsers and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not gw.app.state.ui_hub.browsers


def hold_stream(gw: Gateway, cookie: str, release: threading.Event) -> int:
    """Open the stream as a browser and keep it open until `release`; returns its status."""
    with gw.browser() as b, b.stream("GET", "/ui/stream", headers={"cookie": f"{COOKIE_NAME}={cookie}"}) as r:
        release.wait(20)
        return r.status_code


async def test_more_browsers_than_the_bound_get_503(tmp_path: Path) -> None:
    async for gw in serve(tmp_path, max_clients=1):
        cookie = await run(session_cookie, gw)
        release = threading.Event()
        first = asyncio.create_task(asyncio.to_thread(hold_stream, gw, cookie, release))
        try:
            deadline = time.monotonic() + 5
            while not gw.app.state.ui_hub.browsers and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            r = await run(get, gw, "/ui/stream", cookie)
            assert r.status_code == 503 and r.json()["code"] == "ui_busy", r.text
        finally:
            release.set()
            assert await first == 200


async def test_with_the_dashboard_off_the_gateway_needs_a_certificate(tmp_path: Path) -> None:
    async for gw in serve(tmp_path, ui=False):
        with pytest.raises(httpx.HTTPError):  # no certificate: the handshake fails, as before the dashboard
            await run(get, gw, "/ui/")
        with gw.admin() as h:
            assert (await run(h.get, "/ui/")).status_code == 404
            assert (await run(h.post, "/v1/ui/login")).status_code == 404


async def test_an_admin_certificate_reaches_the_dashboard_without_logging_in(gw: Gateway) -> None:
    with gw.admin() as h:
        assert (await run(h.get, "/ui/")).status_code == 200
        root = await run(h.get, "/")
        assert root.status_code == 307 and root.headers["location"] == "/ui/"
        assert (await run(h.get, "/_ping")).status_code == 200  # the Docker API's unversioned paths are untouched
