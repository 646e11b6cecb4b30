"""Helpers the gateway service tests share (fixtures are in conftest.py): a store's fingerprint, to prove a
refusal changed nothing, running a coroutine (a direct store write) on the TestClient's event loop, and the
gateway app over a store with no raftstore member answering (the CLI tests drive it in-process)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shoal.store.local import LocalStore


def fingerprint(store: LocalStore) -> tuple[int, str]:
    return store.mem.revision, store.mem.state_hash()


def run(client: TestClient, coro: Any) -> Any:
    async def go() -> Any:
        return await coro

    return client.portal.call(go)  # type: ignore[union-attr]


def gateway_app(store: LocalStore) -> FastAPI:
    """The gateway over `store`; its one raftstore member (for member status) refuses every connection."""
    from services.gateway.app import create_app
    from services.gateway.settings import GatewaySettings

    def members(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    return create_app(GatewaySettings(store_members=["http://m1"]), store=store,
                      http=httpx.AsyncClient(transport=httpx.MockTransport(members)))
