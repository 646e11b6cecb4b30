"""Compose scales the dispatcher: the agent resolves `dispatcher` to every container's address and dials one
address per session. The dispatchers' certificates name the service (`dispatcher`), not each container's
address, so the agent checks the certificate against the name it resolved (SNI and host-name check), over the
real mutual TLS of shoal.transport. Dialled by address with nothing else, the check fails (it did: every agent
of a scaled compose cluster was refused by every dispatcher)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from agent.session import AgentSession, DispatcherClient, DispatcherUnavailable
from shoal import pki, transport
from shoal.certs import Signer
from tests.service.tls_servers import TLSServer, node_creds

pytestmark = pytest.mark.timeout(30)


async def test_a_dispatcher_dialled_by_address_is_checked_against_its_service_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    signer = Signer.new()
    server_dir = signer.issue_dir(tmp_path / "dispatcher", node_id="mgr", role=pki.MANAGER,
                                  component="dispatcher", hosts=("dispatcher",))  # the service name only
    app = FastAPI()

    @app.post("/v1/sessions/{sid}/heartbeat")
    async def heartbeat(sid: str) -> dict[str, Any]:
        return {"period": 1.0}

    @app.post("/v1/sessions/{sid}/logs/{rid}")
    async def log_chunk(sid: str, rid: str) -> dict[str, Any]:
        return {}

    server = await TLSServer(app, transport.Credentials(server_dir), lambda ident, method, path: None).start()
    http = transport.http_client(node_creds(signer, tmp_path / "agent"), timeout=5.0)
    try:
        with pytest.raises(DispatcherUnavailable, match="not valid for"):
            await DispatcherClient(http, server.url).heartbeat("s1")
        assert await DispatcherClient(http, server.url).log_chunk("s1", "r1", b"", True) is False
        named = DispatcherClient(http, server.url, server_name="dispatcher")
        # log chunks are checked against the name too (they were not: every log request of a scaled compose
        # cluster's agents ended with "certificate is not valid for <address>", and the reader waited for ever).
        # First on this client, so the connection is not one a named call already opened.
        assert await named.log_chunk("s1", "r1", b"", True) is True
        assert await named.heartbeat("s1") == {"period": 1.0}

        # the session remembers which name each resolved address stands for
        loop = asyncio.get_running_loop()

        async def two_addresses(host: str, port: int, **kw: Any) -> list[Any]:
            assert host == "dispatcher"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port))]

        monkeypatch.setattr(loop, "getaddrinfo", two_addresses)
        session = AgentSession([f"https://dispatcher:{server.port}"], None, None,  # type: ignore[arg-type]
                               describe=dict, node_id=lambda: None, set_node_id=lambda _: None, http=http)
        url = await session._next(None)
        assert url in (f"https://127.0.0.1:{server.port}", f"https://127.0.0.2:{server.port}")
        assert session._names[url] == "dispatcher"
    finally:
        await http.aclose()
        await server.stop()
