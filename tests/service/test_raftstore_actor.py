"""Who wrote each transaction: the raftstore leader records the writer's certificate (`"<component>@<node id>"`)
with the entry, and the store's watch events carry it (with the transaction's time). A forwarding member names
the original caller; only raftstore members are believed when they do; a body's own `actor` is ignored."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.raftstore.access import ON_BEHALF_HEADER, ON_BEHALF_NODE_HEADER
from shoal import pki
from shoal.transport import IDENTITY_SCOPE_KEY
from tests.service.test_raftstore_api import one_member_app
from tests.specs import service_spec

pytestmark = pytest.mark.timeout(60)


def ident(component: str, node_id: str) -> pki.Identity:
    return pki.Identity(node_id=node_id, role=pki.MANAGER, cluster_id="c", component=component, not_before=0,
                        not_after=0, serial=1)


class As:
    """The ASGI app as the Guard would hand it a request: with a verified identity in the scope."""

    def __init__(self, app: Any, who: pki.Identity) -> None:
        self.app, self.who = app, who

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope[IDENTITY_SCOPE_KEY] = self.who
        await self.app(scope, receive, send)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    async with one_member_app(tmp_path) as app:
        yield app


async def write(app: Any, who: pki.Identity, name: str, headers: dict[str, str] | None = None,
                extra: dict[str, Any] | None = None) -> int:
    body = {"ops": [{"op": "create", "kind": "service", "object": {"id": name, "spec": service_spec(name)}}],
            **(extra or {})}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=As(app, who)), base_url="http://store") as c:
        r = await c.post("/v1/txn", content=json.dumps(body), headers=headers or {})
        assert r.status_code == 200, r.text
        return int(r.json()["revision"])


async def events(app: Any, after: int) -> list[dict[str, Any]]:
    who = ident("gateway", "gw-node")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=As(app, who)), base_url="http://store") as c:
        r = await c.get("/v1/watch", params={"after": after})
        assert r.status_code == 200, r.text
        out: list[dict[str, Any]] = r.json()["events"]
        return out


async def test_each_write_records_its_writer_and_time(app: Any) -> None:
    first = await write(app, ident("gateway", "node-a"), "web")
    await write(app, ident("orchestrator", "node-b"), "api")
    got = await events(app, first - 1)
    assert [(e["changes"][0]["id"], e["actor"], e["time"]) for e in got] == [
        ("web", "gateway@node-a", 1000.0), ("api", "orchestrator@node-b", 1000.0)]


async def test_a_forwarding_member_names_the_original_writer(app: Any) -> None:
    rev = await write(app, ident("raftstore", "node-2"), "web",
                      headers={ON_BEHALF_HEADER: "gateway", ON_BEHALF_NODE_HEADER: "node-9"})
    assert (await events(app, rev - 1))[0]["actor"] == "gateway@node-9"


async def test_only_raftstore_members_may_name_someone_else_and_a_body_cannot(app: Any) -> None:
    rev = await write(app, ident("scheduler", "node-3"), "web",
                      headers={ON_BEHALF_HEADER: "gateway", ON_BEHALF_NODE_HEADER: "node-9"},
                      extra={"actor": "ca@elsewhere"})
    assert (await events(app, rev - 1))[0]["actor"] == "scheduler@node-3"
