"""`POST /v1/services/plan` and `POST /v1/services/{ref}/plan` on the gateway (TestClient over a LocalStore, and
real mutual TLS for the refusals): the same 400/409 as create and update, 404 for an unknown service, 403 for
non-admins, and nothing written — the store's revision and state hash are unchanged by any plan."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shoal import pki
from shoal.models.kinds import Kind
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.transport import sync_http_client
from tests.service.gateway_kit import fingerprint
from tests.service.test_gateway_security import Cluster, gateway  # noqa: F401 (the mTLS gateway fixture)
from tests.sim.cp_fakes import make_node

pytestmark = pytest.mark.timeout(30)


def spec(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": "web", "mode": {"replicated": {"replicas": 2}},
                           "task": {"process": {"command": ["sleep", "300"]}}}
    out.update(overrides)
    return out


@pytest.fixture
def store() -> LocalStore:
    s = LocalStore()
    asyncio.run(s.txn([t.create(Kind.NODE, make_node("n1", labels={"zone": "a"})),
                       t.create(Kind.NODE, make_node("n2", labels={"zone": "b"}))]))
    return s


@pytest.fixture
def client(store: LocalStore) -> Iterator[TestClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    with TestClient(create_app(GatewaySettings(store_members=["http://unused:1"]), store=store, http=http)) as c:
        yield c


def test_a_new_service_plan_places_its_tasks_and_writes_nothing(client: TestClient, store: LocalStore) -> None:
    before = fingerprint(store)
    r = client.post("/v1/services/plan", json=spec(mode={"replicated": {"replicas": 4}}))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"] == {"create": 4, "stop": 0, "replace": 0, "unchanged": 0, "pending": 0}
    assert {n: c["create"] for n, c in body["nodes"].items()} == {"n1": 2, "n2": 2}  # spread
    assert body["revision"] == before[0] and body["converged"]
    assert fingerprint(store) == before
    assert client.get("/v1/services").json()["items"] == []


def test_an_impossible_constraint_is_pending_with_the_schedulers_reason(client: TestClient) -> None:
    task = {"process": {"command": ["sleep", "300"]}, "placement": {"constraints": ["node.labels.zone==c"]}}
    body = client.post("/v1/services/plan", json=spec(task=task)).json()
    assert body["summary"]["pending"] == 2 and body["nodes"] == {}
    assert {x["reason"] for x in body["pending"]} == {
        "no suitable node (constraint node.labels.zone==c not satisfied on 2 nodes)"}


def test_a_plan_of_an_update_writes_nothing(client: TestClient, store: LocalStore) -> None:
    created = client.post("/v1/services", json=spec()).json()
    before = fingerprint(store)
    r = client.post("/v1/services/web/plan",
                    json={"version": created["meta"]["version"], "spec": spec(mode={"replicated": {"replicas": 3}})})
    assert r.status_code == 200, r.text
    assert r.json()["service"]["id"] == created["id"] and r.json()["service"]["spec_version"] == 2
    assert fingerprint(store) == before
    assert client.get("/v1/services/web").json()["meta"]["version"] == created["meta"]["version"]


@pytest.mark.parametrize(("body", "status", "fragment"), [
    (spec(mode={"replicated": {"replicas": -1}}), 400, "replicas"),
    (spec(task={}), 400, "task"),
    (spec(task={"process": {"command": ["sleep", "1"]}, "networks": [{"target": "nope"}]}), 400, "nope"),
])
def test_a_new_service_plan_is_refused_like_create(client: TestClient, store: LocalStore, body: dict[str, Any],
                                                   status: int, fragment: str) -> None:
    before = fingerprint(store)
    for path in ("/v1/services/plan", "/v1/services"):
        r = client.post(path, json=body)
        assert r.status_code == status, (path, r.text)
        assert fragment in r.json()["message"] and r.json()["code"]
    assert fingerprint(store) == before


def test_a_plan_for_a_taken_name_is_409_like_create(client: TestClient) -> None:
    client.post("/v1/services", json=spec())
    plan, real = client.post("/v1/services/plan", json=spec()), client.post("/v1/services", json=spec())
    assert plan.status_code == real.status_code == 409
    assert plan.json() == real.json()


@pytest.mark.parametrize(("change", "status", "fragment"), [
    ({"spec": spec(name="other")}, 400, "renaming"),
    ({"spec": spec(mode={"global": {}})}, 400, "mode"),
    ({"spec": spec(mode={"replicated": {"replicas": -1}})}, 400, "replicas"),
    ({"version": 999}, 409, "not 999"),
])
def test_an_update_plan_is_refused_like_update(client: TestClient, store: LocalStore, change: dict[str, Any],
                                               status: int, fragment: str) -> None:
    created = client.post("/v1/services", json=spec()).json()
    body = {"version": created["meta"]["version"], "spec": spec(), **change}
    before = fingerprint(store)
    plan, real = client.post("/v1/services/web/plan", json=body), client.put("/v1/services/web", json=body)
    assert plan.status_code == real.status_code == status, (plan.text, real.text)
    assert fragment in plan.json()["message"] and plan.json()["code"] == real.json()["code"]
    assert fingerprint(store) == before


def test_an_unknown_service_is_404(client: TestClient) -> None:
    r = client.post("/v1/services/ghost/plan", json={"version": 1, "spec": spec(name="ghost")})
    assert r.status_code == 404 and "ghost" in r.json()["message"]


async def test_only_admins_may_plan(gateway: tuple[Cluster, str, LocalStore]) -> None:  # noqa: F811
    c, url, store = gateway

    def post(role: str, component: str, path: str) -> int:
        with sync_http_client(c.creds(f"{component}-{role}", role, component), timeout=5) as h:
            return h.post(url + path, json=spec()).status_code

    before = store.mem.revision
    for path in ("/v1/services/plan", "/v1/services/web/plan"):
        assert await asyncio.to_thread(post, pki.WORKER, "agent", path) == 403
        assert await asyncio.to_thread(post, pki.MANAGER, "orchestrator", path) == 403
    assert await asyncio.to_thread(post, pki.ADMIN, "admin", "/v1/services/plan") == 200
    assert store.mem.revision == before
