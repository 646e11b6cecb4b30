"""Issue 16: the resource limits of every shoal server (shoal.limits through shoal.transport.server_config),
on a real mutual-TLS server: `{message, code}` for unknown routes and framework errors, 413 over the body limit
(declared or streamed), 503 beyond the concurrency limit (ops routes still answer), connections over the bound
aborted on arrival, slow headers cut after the header timeout — and the server serving normally afterwards."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request

from shoal import limits, pki
from shoal.certs import LOCAL_HOSTS, Signer
from shoal.http import install_error_handlers, instrument, ops_router
from shoal.metrics import Registry
from shoal.transport import Credentials, http_client
from tests.service.tls_servers import TLSServer

pytestmark = pytest.mark.timeout(60)


class Served:
    def __init__(self, server: TLSServer, client: Credentials, release: asyncio.Event) -> None:
        self.server, self.client, self.release = server, client, release

    def http(self) -> httpx.AsyncClient:
        return http_client(self.client, base_url=self.server.url, timeout=5)

    def raw_tls(self) -> ssl.SSLContext:
        return self.client.context("peer-client")


@pytest.fixture
async def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    monkeypatch.setenv("SHOAL_MAX_BODY", "1000")
    monkeypatch.setenv("SHOAL_MAX_CONCURRENCY", "2")
    monkeypatch.setenv("SHOAL_MAX_CONNECTIONS", "20")
    monkeypatch.setenv("SHOAL_HEADER_TIMEOUT", "0.5")
    signer = Signer.new()
    server_creds = Credentials(signer.issue_dir(tmp_path / "srv", node_id="srv", role=pki.MANAGER,
                                                component="gateway", hosts=LOCAL_HOSTS))
    client = Credentials(signer.issue_dir(tmp_path / "cli", node_id="cli", role=pki.ADMIN, component="admin",
                                          hosts=LOCAL_HOSTS))
    monkeypatch.setattr(limits, "REFUSED", dict.fromkeys(limits.REFUSED, 0))
    release = asyncio.Event()
    app = FastAPI()
    install_error_handlers(app)
    registry = Registry()
    app.include_router(ops_router(registry))
    instrument(app, registry)

    @app.put("/echo")
    async def put_echo() -> None:
        return None

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.get("/wait")
    async def wait() -> dict[str, bool]:
        await release.wait()
        return {"ok": True}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    server = await TLSServer(app, server_creds, lambda *_: None).start()
    try:
        yield Served(server, client, release)
    finally:
        release.set()
        await server.stop()


async def test_every_error_is_message_and_code(served: Served) -> None:
    async with served.http() as h:
        r = await h.get("/no/such/route")
        assert r.status_code == 404 and r.json() == {"message": "Not Found", "code": "not_found"}
        r = await h.get("/echo")
        assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
        assert r.headers["allow"] == "POST, PUT"  # every route of the path, not the first that matched
        r = await h.get("/boom")
        assert r.status_code == 500 and r.json() == {"message": "internal error: RuntimeError", "code": "internal"}


async def test_bodies_over_the_limit_are_413(served: Served) -> None:
    async with served.http() as h:
        assert (await h.post("/echo", content=b"x" * 1000)).json() == {"size": 1000}
        r = await h.post("/echo", content=b"x" * 1001)
        assert r.status_code == 413 and r.json()["code"] == "body_too_large" and "1001 bytes" in r.json()["message"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while it streams in
            for _ in range(10):
                yield b"y" * 200

        r = await h.post("/echo", content=chunks())
        assert r.status_code == 413 and r.json()["code"] == "body_too_large"
        assert (await h.post("/echo", content=b"z" * 10)).json() == {"size": 10}
        assert "shoal_server_bodies_refused 2.0" in (await h.get("/metrics")).text  # counted for operators


async def test_beyond_the_concurrency_limit_a_clear_503(served: Served) -> None:
    async with served.http() as h:
        waiting = [asyncio.create_task(h.get("/wait")) for _ in range(2)]
        await asyncio.sleep(0.3)
        r = await h.get("/wait")
        assert r.status_code == 503 and r.json()["code"] == "overloaded" and r.headers["retry-after"] == "1"
        assert (await h.get("/healthz")).status_code == 200  # ops routes always answer
        served.release.set()
        assert [x.status_code for x in await asyncio.gather(*waiting)] == [200, 200]
        assert (await h.get("/wait")).status_code == 200


async def _open_tls(served: Served) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", served.server.port, ssl=served.raw_tls(),
                                         server_hostname="127.0.0.1")


async def test_slow_headers_are_cut_and_connections_are_bounded(served: Served) -> None:
    reader, writer = await _open_tls(served)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 3) == b"", "the slow connection was closed"
    writer.close()

    held = [await _open_tls(served) for _ in range(20)]  # the bound (SHOAL_MAX_CONNECTIONS=20)
    extra_reader, extra_writer = await _open_tls(served)
    assert await asyncio.wait_for(extra_reader.read(), 3) == b"", "over the bound: aborted on arrival"
    extra_writer.close()
    for _, w in held:
        w.close()
    await asyncio.sleep(0.2)
    async with served.http() as h:  # serving normally again
        assert (await h.get("/healthz")).status_code == 200



async def test_a_half_open_tls_connection_is_cheap_and_short(served: Served) -> None:
    """asyncio gives every TLS connection a 256 KiB read buffer and 60 s to finish its handshake; shoal's
    servers make both small (shoal.limits.bound_tls_connections): a client that sends half a TLS record and
    stalls is cut after the header timeout (0.5 s here)."""
    import asyncio.constants
    import asyncio.sslproto

    assert asyncio.sslproto.SSLProtocol.max_size == limits.TLS_READ_BUFFER
    assert asyncio.constants.SSL_HANDSHAKE_TIMEOUT == 0.5
    reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
    writer.write(b"\x16\x03\x01\x00")  # the start of a ClientHello, never finished
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b"", "the half-open handshake was cut"
    writer.close()
    async with served.http() as h:
        assert (await h.get("/healthz")).status_code == 200
