"""Helpers the gateway service tests share (fixtures are in conftest.py): a store's fingerprint, to prove a
refusal changed nothing, and running a coroutine (a direct store write) on the TestClient's event loop."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from shoal.store.local import LocalStore


def fingerprint(store: LocalStore) -> tuple[int, str]:
    return store.mem.revision, store.mem.state_hash()


def run(client: TestClient, coro: Any) -> Any:
    async def go() -> Any:
        return await coro

    return client.portal.call(go)  # type: ignore[union-attr]
