"""Listing at scale through the gateway (issue 13): task pages filtered in the store, service status from the
store's counts, and no route that reads every object of a kind to answer a question about one (a spying
LocalStore records every full list)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shoal.models.objects import new_task, task_status
from shoal.models.states import TaskState
from shoal.store import txn as t
from shoal.store import wire
from shoal.store.local import LocalStore
from shoal.store.txn import Obj
from tests.service.test_gateway_api import create, make_client, run

pytestmark = pytest.mark.timeout(60)


class SpyStore(LocalStore):
    """Records the kinds of every `list` call (a full read of a kind, or of one service's tasks)."""

    def __init__(self) -> None:
        super().__init__()
        self.listed: list[tuple[str, dict[str, Any]]] = []

    async def list(self, kind: str, **filters: Any) -> tuple[int, list[Obj]]:
        self.listed.append((kind, filters))
        return await super().list(kind, **filters)


@pytest.fixture
def store() -> SpyStore:
    return SpyStore()


@pytest.fixture
def client(store: SpyStore) -> Iterator[TestClient]:
    with make_client(store) as c:
        yield c


def seed(client: TestClient, store: LocalStore, service: Obj, n: int, state: TaskState = TaskState.RUNNING,
         node_id: str | None = None) -> list[Obj]:
    tasks = []
    for slot in range(1, n + 1):
        task = new_task(service, slot, 1.0, node_id=node_id)
        task["status"] = task_status(state, 1.0)
        tasks.append(task)
    for i in range(0, n, 500):
        run(client, store.txn([t.create("task", x) for x in tasks[i:i + 500]]))
    return tasks


def walk(client: TestClient, limit: int, **params: Any) -> list[str]:
    ids: list[str] = []
    token = None
    while True:
        q = {**params, "limit": limit, **({"next": token} if token else {})}
        r = client.get("/v1/tasks", params=q)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= limit
        ids += [x["id"] for x in body["items"]]
        token = body["next"]
        if token is None:
            return ids


def test_task_pages_walk_every_matching_task_once_in_id_order(client: TestClient, store: SpyStore) -> None:
    web, api = create(client), create(client, name="api")
    web_tasks = seed(client, store, web, 1200)
    seed(client, store, api, 30, state=TaskState.FAILED)
    want = sorted(x["id"] for x in web_tasks)
    assert walk(client, 100, service="web") == want
    assert walk(client, 1000, service=web["id"]) == want
    assert walk(client, 7, service="api", state="failed") == sorted(
        x["id"] for x in client.get("/v1/tasks", params={"service": "api"}).json()["items"])
    assert walk(client, 50, service="web", state="failed") == []
    everything = client.get("/v1/tasks").json()
    assert len(everything["items"]) == 1230 and everything["next"] is None
    assert not [k for k, _ in store.listed if k == "task"], "tasks were read in full, not paged in the store"


def test_a_task_page_walk_survives_writes_between_pages(client: TestClient, store: SpyStore) -> None:
    web = create(client)
    first = seed(client, store, web, 40)
    r = client.get("/v1/tasks", params={"service": "web", "limit": 15}).json()
    seen = [x["id"] for x in r["items"]]
    gone = sorted(x["id"] for x in first)[-1]
    run(client, store.txn([t.delete("task", gone)]))
    seed(client, store, web, 5)
    token = r["next"]
    while token:
        r = client.get("/v1/tasks", params={"service": "web", "limit": 15, "next": token}).json()
        seen += [x["id"] for x in r["items"]]
        token = r["next"]
    assert len(seen) == len(set(seen))
    assert {x["id"] for x in first} - {gone} <= set(seen)


def test_bad_page_arguments_are_400_and_say_what_to_fix(client: TestClient, store: SpyStore) -> None:
    create(client)
    before = store.mem.revision, store.mem.state_hash()
    r = client.get("/v1/tasks", params={"limit": 0})
    assert r.status_code == 400 and "limit" in r.json()["message"]
    r = client.get("/v1/tasks", params={"limit": 10, "next": "not a token!"})  # not base64url: no page's token
    assert r.status_code == 400 and "next" in r.json()["message"] and r.json()["code"], r.json()
    r = client.get("/v1/tasks", params={"state": "sleeping"})
    assert r.status_code == 400 and "state" in r.json()["message"]
    assert (store.mem.revision, store.mem.state_hash()) == before


def test_service_status_comes_from_counts_not_from_reading_tasks(client: TestClient, store: SpyStore) -> None:
    web, api = create(client, mode={"replicated": {"replicas": 5}}), create(client, name="api")
    seed(client, store, web, 4)
    seed(client, store, web, 2, state=TaskState.COMPLETE)
    seed(client, store, api, 1, state=TaskState.PENDING)
    store.listed.clear()
    got = client.get("/v1/services/web").json()
    assert got["status"] == {"desired": 5, "running": 4, "completed": 2}
    assert client.get(f"/v1/services/{web['id'][:12]}").json()["id"] == web["id"]
    listed = {s["spec"]["name"]: s["status"] for s in client.get("/v1/services").json()["items"]}
    assert listed == {"web": {"desired": 5, "running": 4, "completed": 2},
                      "api": {"desired": 3, "running": 0, "completed": 0}}
    assert [k for k, _ in store.listed] == ["service"], "only GET /v1/services lists (the services themselves)"


def test_finding_one_service_or_task_reads_no_full_list(client: TestClient, store: SpyStore) -> None:
    web = create(client)
    create(client, name="api")
    task = seed(client, store, web, 3)[0]
    store.listed.clear()
    for ref in (web["id"], "WEB", web["id"][:8]):
        assert client.get(f"/v1/services/{ref}").json()["id"] == web["id"]
    for ref in (task["id"], task["id"][:10], f"web.1.{task['id']}"):
        assert client.get(f"/v1/tasks/{ref}").json()["id"] == task["id"]
    assert client.get("/v1/tasks/web.1.zzzz").status_code == 404
    assert client.get("/v1/services/nope").status_code == 404
    assert [k for k, _ in store.listed if k == "task"] == []


def test_task_lists_stream_as_json_or_ndjson_with_the_same_tasks(client: TestClient, store: SpyStore) -> None:
    """`GET /v1/tasks` passes the store's encoded tasks through: the JSON answer (built around them, chunked)
    and the NDJSON one carry exactly what the store holds, with the revision and the page token; and it
    never lists a kind (a streamed page, not `list`)."""
    web = create(client)
    seed(client, store, web, 1234)  # more than one encoded chunk (wire.CHUNK)
    held = sorted(store.mem.list("task"), key=lambda x: x["id"])
    body = client.get("/v1/tasks", params={"service": "web"}).json()
    assert body["items"] == held and body["next"] is None and body["revision"] == store.mem.revision

    r = client.get("/v1/tasks", params={"service": "web"}, headers={"accept": "application/x-ndjson"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in r.text.splitlines()] == held
    assert int(r.headers["shoal-revision"]) == store.mem.revision and "shoal-next" not in r.headers

    first = client.get("/v1/tasks", params={"service": "web", "limit": 1000},
                       headers={"accept": "application/x-ndjson"})
    rest = client.get("/v1/tasks", params={"service": "web", "next": first.headers["shoal-next"]},
                      headers={"accept": "application/x-ndjson"})
    assert [json.loads(x)["id"] for x in (first.text + rest.text).splitlines()] == [x["id"] for x in held]

    empty = client.get("/v1/tasks", params={"service": "web", "state": "failed"})
    assert empty.json() == {"revision": store.mem.revision, "items": [], "next": None}
    assert client.get("/v1/tasks", params={"service": "nope"}).status_code == 404  # refused before streaming
    assert [k for k, _ in store.listed if k == "task"] == []


def test_a_task_list_projects_fields_in_the_store_and_refuses_unknown_ones(client: TestClient,
                                                                         store: SpyStore) -> None:
    web = create(client)
    seed(client, store, web, 20)
    held = sorted(store.mem.list("task"), key=lambda x: x["id"])
    want = [{"id": x["id"], "slot": x["slot"], "status": x["status"]} for x in held]
    r = client.get("/v1/tasks", params={"service": "web", "fields": "slot,status"},
                   headers={"accept": "application/x-ndjson"})
    assert [json.loads(line) for line in r.text.splitlines()] == want
    assert client.get("/v1/tasks", params={"fields": "slot,status"}).json()["items"] == want
    before = store.mem.revision
    for bad in ("slot,sttaus", "", "slot,,status", "spec.name"):
        r = client.get("/v1/tasks", params={"fields": bad})
        assert r.status_code == 400 and r.json()["code"] == "invalid_argument", (bad, r.text)
        assert "field" in r.json()["message"]
    assert "sttaus" in client.get("/v1/tasks", params={"fields": "slot,sttaus"}).json()["message"]
    assert store.mem.revision == before


def test_the_store_stream_is_released_once_the_answer_is_sent(client: TestClient, store: SpyStore) -> None:
    web = create(client)
    seed(client, store, web, 3)
    released: list[str] = []
    opened = store.page_stream

    async def tracked(kind: str, **kw: Any) -> wire.StreamedPage:
        page = await opened(kind, **kw)

        async def aclose() -> None:
            released.append(kind)

        return wire.StreamedPage(page.revision, page.next, page.chunks, aclose)

    store.page_stream = tracked  # type: ignore[method-assign]
    assert len(client.get("/v1/tasks").json()["items"]) == 3
    r = client.get("/v1/tasks", headers={"accept": "application/x-ndjson"})
    assert len(r.text.splitlines()) == 3
    assert released == ["task", "task"]
