"""shoal/aioclient.py on real sockets: the agent's session client over aiohttp keeps every promise of the
transport module's clients — the caller's certificate presented, a server that is not a manager refused before
any request reaches it, SNI names checked — and fails with httpx's errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal import transport
from shoal.aioclient import AiohttpTransport
from tests.integration import test_transport as tt
from tests.integration.test_transport import Server, _free_port

pytestmark = pytest.mark.timeout(60)
ca, dirs = tt.ca, tt.dirs  # the certificates of test_transport: a manager's, an admin's, a worker's


def _server(app: Any, creds_dir: Path) -> Server:
    """A mutual-TLS server with certificate `creds_dir` for a bare ASGI `app`, admitting every caller."""
    srv = Server(transport.Credentials(creds_dir))
    srv.server = type(srv.server)(transport.server_config(app, "127.0.0.1", srv.port,
                                                          transport.Credentials(creds_dir), lambda *_: None))
    return srv


def _aio(http: httpx.AsyncClient) -> AiohttpTransport:
    aio = getattr(http, "aio", None)
    assert isinstance(aio, AiohttpTransport)
    return aio


async def test_the_caller_is_identified_on_both_paths(dirs: dict[str, Path]) -> None:
    async with Server(transport.Credentials(dirs["server"])) as s:
        async with transport.session_client(transport.Credentials(dirs["admin"])) as http:
            r = await http.get(s.url + "/who")
            assert r.status_code == 200 and r.json()["node"] == "admin-1"
            status, headers, body = await _aio(http).call("GET", s.url + "/who", timeout=5.0)
            assert status == 200 and b'"admin-1"' in body
            assert {k.lower(): v for k, v in headers}[b"content-type"] == b"application/json"
            r = await http.post(s.url + "/v1/join", content=b"{}", headers={"content-type": "application/json"})
            assert r.json() == {"joined": "yes"}


async def test_a_server_that_is_not_a_manager_never_sees_the_request(dirs: dict[str, Path]) -> None:
    """The role is checked when the connection is made, before the request goes out; a refusal is never
    remembered (the next call is checked again)."""
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope["path"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

    worker = _server(app, dirs["worker"])  # a worker's certificate, for the same address
    async with worker:
        async with transport.session_client(transport.Credentials(dirs["admin"])) as http:
            for _ in range(2):
                with pytest.raises(httpx.RemoteProtocolError, match="not a swarm-manager"):
                    await http.get(worker.url + "/secret")
                with pytest.raises(httpx.RemoteProtocolError, match="not a swarm-manager"):
                    await _aio(http).call("POST", worker.url + "/secret", content=b"x", timeout=5.0)
    assert seen == []


async def test_sni_names_the_certificate_to_check_instead_of_the_address(dirs: dict[str, Path]) -> None:
    async with Server(transport.Credentials(dirs["server"])) as s:
        async with transport.session_client(transport.Credentials(dirs["admin"])) as http:
            status, _, _ = await _aio(http).call("GET", s.url + "/who", timeout=5.0, sni="localhost")
            assert status == 200
            with pytest.raises(httpx.ConnectError):
                await _aio(http).call("GET", s.url + "/who", timeout=5.0, sni="not-this-server.example")
            r = await http.get(s.url + "/who", extensions={"sni_hostname": "localhost"})
            assert r.status_code == 200


async def test_timeouts_and_refusals_are_httpx_errors(dirs: dict[str, Path]) -> None:
    """A slow answer is a ReadTimeout (the agent tries again within its session), a closed port a ConnectError
    (the agent moves to the next dispatcher)."""
    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(2.0)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

    srv = _server(slow, dirs["server"])
    async with srv:
        async with transport.session_client(transport.Credentials(dirs["admin"])) as http:
            with pytest.raises(httpx.ReadTimeout):
                await _aio(http).call("GET", srv.url + "/x", timeout=0.3)
            with pytest.raises(httpx.TimeoutException):
                await http.get(srv.url + "/x", timeout=0.3)
            with pytest.raises(httpx.ConnectError):
                await _aio(http).call("GET", f"https://127.0.0.1:{_free_port()}/x", timeout=2.0)


def test_without_credentials_the_session_client_is_plain_httpx() -> None:
    """In-process test transports (creds None) keep httpx's own stack."""
    http = transport.session_client(None)
    assert getattr(http, "aio", None) is None
