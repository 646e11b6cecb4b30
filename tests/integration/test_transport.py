"""shoal.transport on real sockets: what every shoal server refuses, and what its clients refuse."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from shoal import limits, pki, transport
from shoal.certs import LOCAL_HOSTS, Signer

pytestmark = pytest.mark.timeout(60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/who")
    async def who(request: Request) -> dict[str, str]:
        ident = transport.scope_identity(request.scope)
        assert ident is not None
        return {"node": ident.node_id, "role": ident.role, "component": ident.component}

    @app.post("/v1/join")
    async def join() -> dict[str, str]:
        return {"joined": "yes"}

    return app


def admins_only(ident: pki.Identity, method: str, path: str) -> str | None:
    return None if ident.role == pki.ADMIN else f"{ident.describe()} may not call {path}"


class Server:
    def __init__(self, creds: transport.Credentials, anonymous: tuple[str, ...] = (),
                 revoked: transport.Revocations | None = None) -> None:
        self.port = _free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(transport.server_config(_app(), "127.0.0.1", self.port, creds, admins_only,
                                                             revoked=revoked, anonymous=anonymous))

    async def __aenter__(self) -> Server:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.server.should_exit = True
        await self.task


@pytest.fixture
def ca(tmp_path: Path) -> Signer:
    return Signer.new("cluster-a")


@pytest.fixture
def dirs(tmp_path: Path, ca: Signer) -> dict[str, Path]:
    return {
        "server": ca.issue_dir(tmp_path / "server", node_id="m1", role=pki.MANAGER, component="gateway",
                               hosts=LOCAL_HOSTS),
        "admin": ca.issue_dir(tmp_path / "admin", node_id="admin-1", role=pki.ADMIN, component="admin"),
        "worker": ca.issue_dir(tmp_path / "worker", node_id="w1", role=pki.WORKER, component="agent",
                               hosts=LOCAL_HOSTS),
    }


@pytest.fixture
async def server(dirs: dict[str, Path]) -> AsyncIterator[Server]:
    async with Server(transport.Credentials(dirs["server"])) as s:
        yield s


async def test_identity_reaches_the_route(server: Server, dirs: dict[str, Path]) -> None:
    async with transport.http_client(transport.Credentials(dirs["admin"]), base_url=server.url) as http:
        r = await http.get("/who")
    assert r.status_code == 200
    assert r.json() == {"node": "admin-1", "role": pki.ADMIN, "component": "admin"}


async def test_policy_refuses_with_403_and_a_reason(server: Server, dirs: dict[str, Path]) -> None:
    async with transport.http_client(transport.Credentials(dirs["worker"]), base_url=server.url) as http:
        r = await http.get("/who")
    assert r.status_code == 403
    assert r.json()["code"] == "permission_denied" and "agent of node w1" in r.json()["message"]


async def test_plaintext_is_refused_not_downgraded(server: Server) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        with pytest.raises(httpx.HTTPError):
            await http.get("/who")


async def test_tls_without_a_client_certificate_is_refused(server: Server, ca: Signer) -> None:
    ctx = ssl.create_default_context(cadata=ca.root_pem.decode())
    async with httpx.AsyncClient(base_url=server.url, verify=ctx) as http:
        with pytest.raises(httpx.HTTPError):
            await http.get("/who")


async def test_a_foreign_ca_is_refused_both_ways(server: Server, tmp_path: Path, dirs: dict[str, Path]) -> None:
    other = Signer.new("cluster-a")  # same cluster name, different root: still a stranger
    stranger = other.issue_dir(tmp_path / "stranger", node_id="admin-2", role=pki.ADMIN, component="admin")
    async with transport.http_client(transport.Credentials(stranger), base_url=server.url) as http:
        with pytest.raises(httpx.HTTPError):
            await http.get("/who")


async def test_an_expired_certificate_is_refused(server: Server, ca: Signer, tmp_path: Path) -> None:
    d = tmp_path / "old"
    key = pki.new_key()
    cert = ca.sign(pki.make_csr(key), node_id="admin-old", role=pki.ADMIN, component="admin",
                   now=time.time() - 7200, lifetime=dt.timedelta(hours=1))
    pki.write_identity(d, cert, pki.key_pem(key), ca.roots_pem)
    async with transport.http_client(transport.Credentials(d), base_url=server.url) as http:
        with pytest.raises(httpx.HTTPError):
            await http.get("/who")


async def test_a_revoked_node_is_refused(dirs: dict[str, Path]) -> None:
    revoked = transport.Revocations()
    async with Server(transport.Credentials(dirs["server"]), revoked=revoked) as s:
        async with transport.http_client(transport.Credentials(dirs["admin"]), base_url=s.url) as http:
            assert (await http.get("/who")).status_code == 200
            revoked.update({"admin-1"})
            r = await http.get("/who")
            assert r.status_code == 403 and "revoked" in r.json()["message"]


async def test_anonymous_paths_only(dirs: dict[str, Path], ca: Signer) -> None:
    """The CA's join port: a caller without a certificate reaches the join path and nothing else."""
    async with Server(transport.Credentials(dirs["server"]), anonymous=("/v1/join",)) as s:
        ctx = ssl.create_default_context(cadata=ca.root_pem.decode())
        async with httpx.AsyncClient(base_url=s.url, verify=ctx) as http:
            assert (await http.post("/v1/join")).json() == {"joined": "yes"}
            r = await http.get("/who")
            assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
        async with transport.http_client(transport.Credentials(dirs["admin"]), base_url=s.url) as http:
            assert (await http.get("/who")).json()["node"] == "admin-1"  # a certificate is still read


async def test_clients_refuse_a_server_that_is_not_a_manager(dirs: dict[str, Path]) -> None:
    """A worker certificate issued for the same address cannot stand in for a manager's server."""
    async with Server(transport.Credentials(dirs["worker"])) as s:
        async with transport.http_client(transport.Credentials(dirs["admin"]), base_url=s.url) as http:
            with pytest.raises(httpx.HTTPError, match="not a swarm-manager"):
                await http.get("/who")
            with pytest.raises(httpx.HTTPError, match="not a swarm-manager"):  # a refusal is never remembered
                await http.get("/who")


async def test_a_managers_connection_is_checked_once_and_every_new_one_again(dirs: dict[str, Path]) -> None:
    """The server-role check is remembered per connection (its peer cannot change), not per address: a new
    connection to the same address is checked again."""
    async with Server(transport.Credentials(dirs["server"])) as s:
        async with transport.http_client(transport.Credentials(dirs["admin"]), base_url=s.url) as http:
            r1 = await http.get("/who")
            stream = r1.extensions["network_stream"]
            assert transport._ROLE_CHECKED.get(stream) == "swarm-manager"
            r2 = await http.get("/who")
            assert r2.extensions["network_stream"] is stream and r2.status_code == 200
    async with Server(transport.Credentials(dirs["worker"])) as s2:  # another server behind a fresh connection
        async with transport.http_client(transport.Credentials(dirs["admin"]), base_url=s2.url) as http:
            with pytest.raises(httpx.HTTPError, match="not a swarm-manager"):
                await http.get("/who")


async def test_renewed_certificate_is_used_by_new_connections(dirs: dict[str, Path], ca: Signer,
                                                              server: Server) -> None:
    creds = transport.Credentials(dirs["admin"])
    before = creds.identity.serial
    time.sleep(0.01)
    ca.issue_dir(dirs["admin"], node_id="admin-1", role=pki.ADMIN, component="admin")
    assert creds.reload() and creds.identity.serial != before
    assert not creds.reload()  # nothing new since
    async with transport.http_client(creds, base_url=server.url) as http:
        assert (await http.get("/who")).status_code == 200


def test_missing_identity_is_a_start_up_error(tmp_path: Path) -> None:
    with pytest.raises(transport.TransportError, match="SHOAL_CERT_DIR"):
        transport.load_credentials("")
    with pytest.raises(transport.TransportError, match="missing"):
        transport.load_credentials(tmp_path)


def _record_tls_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write handed to a TLS transport from now on, in order (the list is cleared by the caller)."""
    writes: list[bytes] = []
    real_write = asyncio.sslproto._SSLProtocolTransport.write

    def recording_write(self: asyncio.sslproto._SSLProtocolTransport, data: bytes) -> None:
        writes.append(bytes(data))
        real_write(self, data)

    monkeypatch.setattr(asyncio.sslproto._SSLProtocolTransport, "write", recording_write)
    return writes


def _asgi_server(app: Any, dirs: dict[str, Path]) -> Server:
    """A mutual-TLS server for a bare ASGI `app`, admitting admins only."""
    srv = Server(transport.Credentials(dirs["server"]))
    srv.server = uvicorn.Server(transport.server_config(app, "127.0.0.1", srv.port,
                                                        transport.Credentials(dirs["server"]), admins_only))
    return srv


async def test_a_fast_path_answer_leaves_as_one_write(dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    """`send_json` with the request's scope: the answer's head and body reach the TLS transport as one write (one
    record, one send), through the connection's CorkedTransport; without the scope, as uvicorn writes them: two."""
    from shoal.http import send_json

    writes = _record_tls_writes(monkeypatch)
    body = b'{"fast":true}'

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] == "http":
            await send_json(send, 200, body, scope if scope["path"] == "/corked" else None)

    srv = _asgi_server(app, dirs)
    async with srv, transport.http_client(transport.Credentials(dirs["admin"]), base_url=srv.url) as http:
        for path, answers in (("/corked", 1), ("/plain", 2)):
            writes.clear()
            r = await http.get(path)
            assert r.status_code == 200 and r.content == body
            answer = [w for w in writes if w.startswith(b"HTTP/1.1 200") or w == body]
            assert len(answer) == answers, (path, writes)
            assert answer[0].startswith(b"HTTP/1.1 200") and answer[-1].endswith(b"\r\n\r\n" + body if answers == 1
                                                                                else body)


async def test_a_large_answer_reaches_the_tls_transport_in_pieces(dirs: dict[str, Path],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer larger than `TLS_WRITE_PIECE` goes to the TLS transport in pieces of at most that size, on
    uvicorn's own path and on a fast path's corked one: asyncio encrypts each write whole into the connection's
    outgoing memory BIO, which keeps what it grew to for the connection's life (shoal.limits). The client
    receives the answer unchanged."""
    from shoal.http import send_json

    writes = _record_tls_writes(monkeypatch)
    body = bytes(range(256)) * 1000  # 256,000 bytes: 16 pieces

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] == "http":
            await send_json(send, 200, body, scope if scope["path"] == "/corked" else None)

    srv = _asgi_server(app, dirs)
    async with srv, transport.http_client(transport.Credentials(dirs["admin"]), base_url=srv.url) as http:
        for path in ("/corked", "/plain"):
            writes.clear()
            r = await http.get(path)
            assert r.status_code == 200 and r.content == body
            sizes = [len(w) for w in writes]
            assert max(sizes) <= limits.TLS_WRITE_PIECE, (path, sizes)
            assert sum(sizes) >= len(body)


def test_the_corked_transport_cuts_only_tls_writes() -> None:
    """Pieces over TLS only (a plain transport has no BIO to grow), whole when small, held writes joined first."""
    class Fake:
        def __init__(self, tls: bool) -> None:
            self.tls, self.writes = tls, []  # type: ignore[var-annotated]

        def get_extra_info(self, name: str) -> object:
            return object() if name == "ssl_object" and self.tls else None

        def write(self, data: bytes) -> None:
            self.writes.append(bytes(data))

        def is_closing(self) -> bool:
            return False

    piece = limits.TLS_WRITE_PIECE
    data = b"x" * (2 * piece + 5)
    tls, plain = Fake(True), Fake(False)
    for fake in (tls, plain):
        cork = transport.CorkedTransport(fake)
        cork.write(b"small")
        cork.write(data)
        cork.hold()
        cork.write(b"head")
        cork.write(data)
        cork.release()
    assert [len(w) for w in tls.writes] == [5, piece, piece, 5, piece, piece, 9]
    assert b"".join(tls.writes) == b"small" + data + b"head" + data
    assert plain.writes == [b"small", data, b"head" + data]
