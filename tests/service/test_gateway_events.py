"""`GET /v1/events`: the gateway over a real raftstore member (in process, the gateway's certificate identity in
the store's requests) streams exactly the changes made, in order, with who made them; filters by kind and
action; a `since` older than the retained history starts with the compaction notice; bad filters are refused
with what to use. (That only admins reach it: tests/service/test_gateway_security.py.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app as gateway_app
from services.gateway.settings import GatewaySettings
from shoal.cluster import ensure_cluster
from shoal.store.client import StoreClient
from shoal.store.local import LocalStore
from shoal.store.memory import MemoryStore
from tests.service.test_raftstore_actor import As, ident
from tests.service.test_raftstore_api import one_member_app

pytestmark = pytest.mark.timeout(60)


def web(replicas: int = 1) -> dict[str, Any]:
    return {"name": "web", "mode": {"replicated": {"replicas": replicas}},
            "task": {"process": {"command": ["sleep", "300"]}}}


class Stack:
    def __init__(self, gateway: httpx.AsyncClient, store: StoreClient) -> None:
        self.gateway, self.store = gateway, store

    async def revision(self) -> int:
        rev, _ = await self.store.list("cluster")
        return rev

    async def events(self, **params: Any) -> list[dict[str, Any]]:
        r = await self.gateway.get("/v1/events", params=params)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.text.splitlines() if line.strip()]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with one_member_app(tmp_path) as store_app:
        store_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=As(store_app, ident("gateway", "gw-1"))),
                                       base_url="http://store")
        store = StoreClient(["http://store"], client=store_http, retry_for=2.0)
        await ensure_cluster(store)
        members = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
        app = gateway_app(GatewaySettings(store_members=["http://store"], ready_probe_interval=0.05), store=store,
                          http=members)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as gw:
                yield Stack(gw, store)
        await store_http.aclose()


async def test_a_sequence_of_changes_gives_exactly_those_events_in_order(stack: Stack) -> None:
    start = await stack.revision()
    created = (await stack.gateway.post("/v1/services", json=web())).json()
    r = await stack.gateway.put(f"/v1/services/{created['id']}",
                                json={"version": created["meta"]["version"], "spec": web(3)})
    assert r.status_code == 200, r.text
    assert (await stack.gateway.delete("/v1/services/web")).status_code in (200, 204)
    end = await stack.revision()
    got = await stack.events(since=start, until=end, kind="service")
    assert [(e["kind"], e["action"], e["id"], e["name"], e["actor"], e["time"]) for e in got] == [
        ("service", a, created["id"], "web", "gateway@gw-1", 1000.0) for a in ("create", "update", "delete")]
    assert [e["rev"] for e in got] == sorted(e["rev"] for e in got) and start < got[0]["rev"] <= got[-1]["rev"] <= end
    assert set(got[0]) == {"rev", "time", "kind", "action", "id", "name", "actor"}
    only_updates = await stack.events(since=start, until=end, kind="service", action="update")
    assert [(e["action"], e["rev"]) for e in only_updates] == [("update", got[1]["rev"])]
    assert await stack.events(since=start, until=end, kind="node,network") == []


async def test_the_stream_follows_changes_made_after_it_started(stack: Stack) -> None:
    start = await stack.revision()

    async def later() -> None:
        await asyncio.sleep(0.3)
        await stack.gateway.post("/v1/services", json=web())

    writer = asyncio.create_task(later())
    got = await stack.events(until=start + 1, kind="service")  # no `since`: from now on
    await writer
    assert [(e["action"], e["name"]) for e in got] == [("create", "web")]


def test_since_older_than_the_retained_history_starts_with_the_compaction_notice() -> None:
    store = LocalStore(MemoryStore(history=3), now=lambda: 50.0)
    app = gateway_app(GatewaySettings(store_members=["http://store"], ready_probe_interval=0.05), store=store,
                      http=httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(503))))
    with TestClient(app) as client:
        for i in range(6):
            assert client.post("/v1/services", json={**web(), "name": f"s{i}"}).status_code == 201
        end = store.mem.revision
        r = client.get("/v1/events", params={"since": 0, "until": end})
        assert r.status_code == 200, r.text
        lines = [json.loads(x) for x in r.text.splitlines()]
        oldest = store.mem.compact_revision
        assert oldest > 0
        assert lines[0]["action"] == "compacted" and lines[0]["kind"] == "events" and lines[0]["rev"] == oldest
        assert f"after revision 0 up to {oldest}" in lines[0]["message"]
        assert [e["name"] for e in lines[1:]] == [f"s{i}" for i in range(6)][-(end - oldest):]
        assert all(e["actor"] == "unknown" for e in lines[1:])  # an in-process store records no writer


@pytest.mark.parametrize(("params", "field", "says"), [
    ({"kind": "servce"}, "kind", "unknown kind servce; use one of cluster, node, service"),
    ({"action": "remove"}, "action", "unknown action remove; use one of create, update, delete"),
    ({"action": ""}, "action", "action: an empty value; use one of create"),
    ({"kind": "service,,node"}, "kind", "kind: an empty value; use one of cluster"),
])
def test_unknown_filters_are_refused_saying_what_to_use(params: dict[str, str], field: str, says: str) -> None:
    store = LocalStore()
    app = gateway_app(GatewaySettings(store_members=["http://store"], ready_probe_interval=0.05), store=store,
                      http=httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(503))))
    with TestClient(app) as client:
        r = client.get("/v1/events", params=params)
        assert r.status_code == 400
        assert r.json()["code"] == "invalid_argument" and says in r.json()["message"]
        assert r.json()["field"] == field
        assert client.get("/v1/events", params={"since": -1}).status_code in (400, 422)
