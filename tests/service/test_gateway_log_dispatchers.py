"""The gateway finds the dispatcher holding a node's session when the dispatchers are scaled behind one name (a
compose service): it resolves every address of each SHOAL_DISPATCHER_URLS entry, asks them in turn over real
mutual TLS (each certificate checked against the name, as agents do), streams from the one that holds the
session and asks it first next time. Before, it dialled the name once: a random one of the dispatchers, so
`docker service logs` said "no session" for most nodes of a scaled cluster."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from services.dispatcher.core import policy as dispatcher_policy
from services.gateway.context import GatewayContext, Holders
from services.gateway.logs import task_records
from services.gateway.settings import GatewaySettings
from shoal import logs, pki, transport
from shoal.certs import Signer
from shoal.logs import Record
from shoal.store import txn as t
from shoal.store.local import LocalStore
from tests.service.tls_servers import TLSServer, node_creds

pytestmark = pytest.mark.timeout(30)


def dispatcher_app(holds: set[str], asked: list[str], me: str) -> FastAPI:
    """The dispatcher's `POST /v1/logs` contract (services/dispatcher/logs.py): 404 `no_session` for a node it
    does not hold, else the node's records as NDJSON."""
    app = FastAPI()

    @app.post("/v1/logs")
    async def node_logs(request: Request) -> Any:
        body = await request.json()
        asked.append(me)
        if body["node_id"] not in holds:
            return JSONResponse({"message": f"no session for {body['node_id']}", "code": "no_session"}, 404)
        recs = [logs.record(tid, "stdout", 1.0, f"hello from {me}") for tid in body["task_ids"]]

        async def out() -> AsyncIterator[bytes]:
            for chunk in logs.chunks(recs):
                yield chunk
        return StreamingResponse(out(), media_type="application/x-ndjson")
    return app


async def collect(ctx: GatewayContext, node_id: str) -> list[Record]:
    return [r async for r in task_records(ctx, [{"id": "t1", "node_id": node_id}], tail=None, since=None,
                                          follow=False)]


async def test_the_gateway_asks_every_address_of_a_scaled_dispatcher_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    signer = Signer.new()
    asked: list[str] = []
    servers: list[TLSServer] = []
    port = 0
    for i, (host, holds) in enumerate((("127.0.0.1", {"n-other"}), ("127.0.0.2", {"n-mine"}))):
        cert_dir = signer.issue_dir(tmp_path / f"d{i}", node_id=f"mgr{i}", role=pki.MANAGER, component="dispatcher",
                                    hosts=("dispatcher",))  # the service name only, as compose issues them
        server = TLSServer(dispatcher_app(holds, asked, host), transport.Credentials(cert_dir), dispatcher_policy,
                           host=host, port=port)
        servers.append(await server.start())
        port = server.port  # both containers listen on the same port, as a scaled service does

    async def two_addresses(host: str, p: int, **kw: Any) -> list[Any]:
        assert host == "dispatcher"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", p))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", two_addresses)
    store = LocalStore()
    for nid in ("n-mine", "n-other"):
        await store.txn([t.create("node", {"id": nid, "spec": {"role": "worker"}, "status": {"state": "ready"}})])
    gateway = node_creds(signer, tmp_path / "gateway", role=pki.MANAGER, component="gateway")
    http = transport.http_client(gateway, timeout=5.0)
    settings = GatewaySettings(store_members=["http://store-1:4301"],
                               dispatcher_urls=[f"https://dispatcher:{port}"])
    ctx = GatewayContext(settings, store, http)
    try:
        got = await collect(ctx, "n-mine")
        assert [(r["stream"], r["line"]) for r in got] == [("stdout", "hello from 127.0.0.2")], got
        assert asked == ["127.0.0.1", "127.0.0.2"]  # the first address does not hold it: 404, next
        assert ctx.log_holders.get("n-mine") == f"https://127.0.0.2:{port}"

        asked.clear()  # the holder is asked first next time: one request
        assert [r["line"] for r in await collect(ctx, "n-mine")] == ["hello from 127.0.0.2"]
        assert asked == ["127.0.0.2"]

        asked.clear()  # another node's holder is found the same way
        assert [r["line"] for r in await collect(ctx, "n-other")] == ["hello from 127.0.0.1"]
        assert asked == ["127.0.0.1"]

        # a node no dispatcher holds: one line saying so, after asking each address once
        await store.txn([t.create("node", {"id": "n-lost", "spec": {"role": "worker"},
                                           "status": {"state": "ready"}})])
        asked.clear()
        lost = await collect(ctx, "n-lost")
        assert len(lost) == 1 and lost[0]["stream"] == "shoal" and "(asked 2)" in lost[0]["line"], lost
        assert sorted(asked) == ["127.0.0.1", "127.0.0.2"]
        assert ctx.log_holders.get("n-lost") is None

        # the certificate is checked against the name: a dispatcher whose certificate names something else is
        # not streamed from (the gateway says it could not reach one)
        monkeypatch.setattr(settings, "dispatcher_urls", [f"https://elsewhere:{port}"])

        async def elsewhere(host: str, p: int, **kw: Any) -> list[Any]:
            return await two_addresses("dispatcher", p)

        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", elsewhere)
        asked.clear()
        ctx.log_holders = Holders()
        refused = await collect(ctx, "n-mine")
        assert len(refused) == 1 and "no session with a reachable dispatcher" in refused[0]["line"]
        assert asked == []  # the TLS handshake failed before any request
    finally:
        await http.aclose()
        for s in servers:
            await s.stop()


def test_holders_are_bounded() -> None:
    h = Holders(limit=2)
    for i in range(3):
        h.remember(f"n{i}", f"https://d{i}")
    assert h.get("n0") is None and h.get("n2") == "https://d2"
    h.remember("n1", "https://dx")  # refreshed: now the newest
    h.remember("n3", "https://d3")
    assert h.get("n1") == "https://dx" and h.get("n2") is None and h.get("n3") == "https://d3"
