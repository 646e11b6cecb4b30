"""The gateway's REST API over a LocalStore (FastAPI TestClient, lifespan on): every endpoint, id-or-name
lookup, and every refusal with its status code, a message naming the field, and an untouched store."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shoal.cluster import ensure_cluster
from shoal.errors import AlreadyExists, OutcomeUnknown, Unavailable
from shoal.models.objects import new_task, task_status
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.store.txn import Obj, Op, Page, TxnResult, WatchBatch
from shoal.store.wire import StreamedPage
from tests.service.gateway_kit import fingerprint, run

pytestmark = pytest.mark.timeout(30)

MEMBERS = ["http://store-1:4301", "http://store-2:4302"]


def web_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "web", "mode": {"replicated": {"replicas": 3}},
                            "task": {"process": {"command": ["sleep", "300"]}}}
    spec.update(overrides)
    return spec


def member_transport(request: httpx.Request) -> httpx.Response:
    """store-1 answers its status; store-2 is down."""
    if request.url.host == "store-2":
        raise httpx.ConnectError("connection refused", request=request)
    return httpx.Response(200, json={"id": 1, "role": "leader", "leader": 1, "term": 4, "commit_index": 17,
                                     "applied_index": 17})


def make_client(store: Any) -> TestClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(member_transport))
    settings = GatewaySettings(store_members=MEMBERS, ready_probe_interval=0.05)
    return TestClient(create_app(settings, store=store, http=http))


@pytest.fixture
def client(store: LocalStore) -> Iterator[TestClient]:
    with make_client(store) as c:
        yield c


def create(client: TestClient, **overrides: Any) -> Obj:
    r = client.post("/v1/services", json=web_spec(**overrides))
    assert r.status_code == 201, r.text
    body: Obj = r.json()
    return body


# ---- create ------------------------------------------------------------------------------------------------
def test_create_returns_201_and_stores_the_service(client: TestClient, store: LocalStore) -> None:
    body = create(client)
    assert len(body["id"]) == 25
    assert body["spec_version"] == 1 and body["previous_spec"] is None
    assert body["spec"]["mode"] == {"replicated": {"replicas": 3}}
    assert body["spec"]["task"]["restart"] == {"condition": "any", "delay": 5.0, "max_attempts": 0, "window": 0.0}
    assert body["status"] == {"desired": 3, "running": 0, "completed": 0}
    stored = store.mem.get("service", body["id"])
    assert stored["spec"] == body["spec"] and stored["meta"]["version"] == body["meta"]["version"]
    assert store.mem.count("service") == 1


def test_create_container_global_service(client: TestClient) -> None:
    body = create(client, name="agent", mode={"global": {}},
                  task={"container": {"image": "nginx:1.25", "args": ["-g", "daemon off;"]}})
    assert body["spec"]["mode"] == {"global": {}}
    assert body["spec"]["task"]["container"]["image"] == "nginx:1.25"
    assert "process" not in body["spec"]["task"]


def test_create_accepts_duration_strings(client: TestClient) -> None:
    body = create(client, task={"process": {"command": ["true"], "stop_grace_period": "1m30s"},
                                "restart": {"delay": "250ms"}})
    assert body["spec"]["task"]["process"]["stop_grace_period"] == 90.0
    assert body["spec"]["task"]["restart"]["delay"] == 0.25


INVALID_SPECS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown field", web_spec(replicas=3), "replicas: Extra inputs are not permitted"),
    ("unknown nested field", web_spec(task={"process": {"command": ["x"], "cmd": "x"}}), "task.process.cmd"),
    ("wrong type", web_spec(mode={"replicated": {"replicas": "three"}}), "mode.replicated.replicas"),
    ("negative replicas", web_spec(mode={"replicated": {"replicas": -1}}),
     "mode.replicated.replicas: Input should be greater than or equal to 0"),
    ("empty command", web_spec(task={"process": {"command": []}}), "task.process.command: command must not be empty"),
    ("blank command", web_spec(task={"process": {"command": [" "]}}), "task.process.command"),
    ("no runtime", web_spec(task={}), "task: exactly one of task.process or task.container must be given"),
    ("two runtimes", web_spec(task={"process": {"command": ["x"]}, "container": {"image": "x"}}), "task"),
    ("bad name", web_spec(name="-web"), "name: name must be 1-63 characters"),
    ("missing name", {"task": {"process": {"command": ["x"]}}}, "name: Field required"),
    ("bad constraint", web_spec(task={"process": {"command": ["x"]}, "placement": {"constraints": ["zone"]}}),
     "task.placement.constraints: invalid constraint 'zone'"),
    ("bad duration", web_spec(task={"process": {"command": ["x"]}, "restart": {"delay": "5 parsecs"}}),
     "task.restart.delay: invalid duration"),
    ("tiny memory", web_spec(task={"process": {"command": ["x"]},
                                   "resources": {"reservations": {"memory_bytes": 1024}}}),
     "task.resources.reservations: memory_bytes must be 0 or at least 4 MiB"),
    ("bad restart condition", web_spec(task={"process": {"command": ["x"]}, "restart": {"condition": "always"}}),
     "task.restart.condition"),
    ("two modes", web_spec(mode={"replicated": {"replicas": 1}, "global": {}}), "mode: exactly one mode"),
    ("not an object", [1, 2], "body"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("spec", "needle"), [(s, n) for _, s, n in INVALID_SPECS],
                         ids=[i for i, _, _ in INVALID_SPECS])
def test_invalid_spec_is_400_naming_the_field_and_changes_nothing(
    client: TestClient, store: LocalStore, spec: Any, needle: str
) -> None:
    create(client, name="existing")
    before = fingerprint(store)
    r = client.post("/v1/services", json=spec)
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"]
    assert fingerprint(store) == before


def test_malformed_json_is_400(client: TestClient, store: LocalStore) -> None:
    r = client.post("/v1/services", content=b'{"name": ', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["message"]
    assert store.mem.revision == 0


@pytest.mark.parametrize("name", ["web", "WEB", "Web"])
def test_duplicate_name_case_insensitive_is_409(client: TestClient, store: LocalStore, name: str) -> None:
    create(client)
    before = fingerprint(store)
    r = client.post("/v1/services", json=web_spec(name=name))
    assert r.status_code == 409
    assert r.json()["message"] == f"service {name!r} already exists"
    assert fingerprint(store) == before
    assert store.mem.count("service") == 1


class RacingStore(LocalStore):
    """Hides services from lists, so the name check passes and the store's unique index must refuse."""

    async def list(self, kind: str, **filters: Any) -> tuple[int, list[Obj]]:
        rev, items = await super().list(kind, **filters)
        return rev, [] if kind == "service" else items


def test_duplicate_name_lost_race_is_409() -> None:
    store = RacingStore()
    with make_client(store) as client:
        create(client)
        r = client.post("/v1/services", json=web_spec(name="WEB"))
    assert r.status_code == 409
    assert r.json()["message"] == "service 'WEB' already exists"
    assert store.mem.count("service") == 1


# ---- read --------------------------------------------------------------------------------------------------
def test_get_by_id_name_and_prefix(client: TestClient) -> None:
    svc = create(client)
    for ref in (svc["id"], "web", "WEB", svc["id"][:6]):
        r = client.get(f"/v1/services/{ref}")
        assert r.status_code == 200, ref
        assert r.json()["id"] == svc["id"]


def test_unknown_service_is_404(client: TestClient) -> None:
    create(client)
    for method in ("GET", "DELETE"):
        r = client.request(method, "/v1/services/nope")
        assert r.status_code == 404
        assert r.json()["message"] == "service 'nope' not found"
    r = client.put("/v1/services/nope", json={"version": 1, "spec": web_spec(name="nope")})
    assert r.status_code == 404


def test_ambiguous_id_prefix_is_400(client: TestClient, store: LocalStore) -> None:
    spec = client.post("/v1/services", json=web_spec()).json()["spec"]
    ops: list[Op] = [t.create("service", {"id": "abc" + "0" * 22, "spec": {**spec, "name": "a"}}),
                     t.create("service", {"id": "abd" + "0" * 22, "spec": {**spec, "name": "b"}})]
    run(client, store.txn(ops))
    assert client.get("/v1/services/abc").json()["spec"]["name"] == "a"
    r = client.get("/v1/services/ab")
    assert r.status_code == 400
    assert "ambiguous" in r.json()["message"]


def test_name_wins_over_id_prefix(client: TestClient, store: LocalStore) -> None:
    spec = client.post("/v1/services", json=web_spec()).json()["spec"]
    run(client, store.txn([t.create("service", {"id": "api" + "0" * 22, "spec": {**spec, "name": "x"}}),
                           t.create("service", {"id": "zzz" + "0" * 22, "spec": {**spec, "name": "api"}})]))
    assert client.get("/v1/services/api").json()["id"] == "zzz" + "0" * 22


def seed_tasks(client: TestClient, store: LocalStore, service: Obj, node_id: str | None = None) -> list[Obj]:
    tasks = []
    for slot, (desired, observed) in enumerate(
        [("running", "running"), ("running", "running"), ("running", "pending"), ("shutdown", "running"),
         ("shutdown", "complete")], start=1):
        task = new_task(service, slot, 1.0, node_id=node_id)
        task["desired_state"] = desired
        task["status"] = task_status(observed, 2.0)
        tasks.append(task)
    run(client, store.txn([t.create("task", x) for x in tasks]))
    return tasks


def test_list_services_with_status(client: TestClient, store: LocalStore) -> None:
    web = create(client)
    create(client, name="api", mode={"global": {}})
    seed_tasks(client, store, web)
    r = client.get("/v1/services")
    assert r.status_code == 200
    body = r.json()
    assert body["revision"] == store.mem.revision
    items = {s["spec"]["name"]: s for s in body["items"]}
    assert [s["spec"]["name"] for s in body["items"]] == ["api", "web"]
    assert items["web"]["status"] == {"desired": 3, "running": 2, "completed": 1}
    assert items["api"]["status"] == {"desired": 0, "running": 0, "completed": 0}
    assert client.get("/v1/services/web").json()["status"] == items["web"]["status"]


def test_global_service_desires_its_running_tasks(client: TestClient, store: LocalStore) -> None:
    svc = create(client, name="agent", mode={"global": {}})
    seed_tasks(client, store, svc)
    assert client.get("/v1/services/agent").json()["status"] == {"desired": 3, "running": 2, "completed": 1}


# ---- update ------------------------------------------------------------------------------------------------
def test_update_replaces_spec_and_keeps_previous(client: TestClient, store: LocalStore) -> None:
    svc = create(client)
    new = web_spec(mode={"replicated": {"replicas": 5}})
    r = client.put("/v1/services/web", json={"version": svc["meta"]["version"], "spec": new})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["spec"]["mode"]["replicated"]["replicas"] == 5
    assert body["spec_version"] == 2
    assert body["previous_spec"] == svc["spec"]
    assert body["meta"]["version"] > svc["meta"]["version"]
    assert body["meta"]["created_at"] == svc["meta"]["created_at"]
    assert store.mem.get("service", svc["id"])["spec"] == body["spec"]
    again = client.put(f"/v1/services/{svc['id']}", json={"version": body["meta"]["version"], "spec": new})
    assert again.json()["spec_version"] == 3 and again.json()["previous_spec"] == body["spec"]


def test_stale_version_is_409_and_changes_nothing(client: TestClient, store: LocalStore) -> None:
    svc = create(client)
    ok = client.put("/v1/services/web", json={"version": svc["meta"]["version"],
                                              "spec": web_spec(labels={"a": "1"})})
    assert ok.status_code == 200
    before = fingerprint(store)
    r = client.put("/v1/services/web", json={"version": svc["meta"]["version"],
                                             "spec": web_spec(labels={"a": "2"})})
    assert r.status_code == 409
    assert f"not {svc['meta']['version']}" in r.json()["message"]
    assert r.json()["current_version"] == ok.json()["meta"]["version"]
    assert fingerprint(store) == before


class StaleReadStore(LocalStore):
    """Answers reads with the version before the last write, so only the store's precondition catches it."""

    def __init__(self) -> None:
        super().__init__()
        self.stale: dict[str, Obj] = {}

    async def list(self, kind: str, **filters: Any) -> tuple[int, list[Obj]]:
        rev, items = await super().list(kind, **filters)
        return rev, [copy.deepcopy(self.stale.get(o["id"], o)) for o in items]


def test_version_race_caught_by_store_is_409() -> None:
    store = StaleReadStore()
    with make_client(store) as client:
        svc = create(client)
        store.stale[svc["id"]] = svc
        client.put("/v1/services/web", json={"version": svc["meta"]["version"], "spec": web_spec()})
        before = fingerprint(store)
        # the gateway reads the stale copy, so its own check passes; the store refuses
        r = client.put("/v1/services/web", json={"version": svc["meta"]["version"], "spec": web_spec()})
    assert r.status_code == 409
    assert "changed since version" in r.json()["message"]
    assert store.mem.revision == before[0] + 1  # the refused entry used a revision, changed no object
    assert store.mem.state_hash() == before[1]


@pytest.mark.parametrize(("spec", "status", "needle"), [
    (web_spec(name="web2"), 400, "spec.name: renaming a service is not supported"),
    (web_spec(name="WEB"), 400, "spec.name"),
    (web_spec(mode={"global": {}}), 400, "spec.mode: changing the mode of a service is not supported"),
    (web_spec(mode={"replicated": {"replicas": -2}}), 400, "spec.mode.replicated.replicas"),
    (web_spec(task={}), 400, "spec.task"),
    (web_spec(bogus=True), 400, "spec.bogus: Extra inputs are not permitted"),
])
def test_refused_updates_change_nothing(client: TestClient, store: LocalStore, spec: Obj, status: int,
                                        needle: str) -> None:
    svc = create(client)
    before = fingerprint(store)
    r = client.put("/v1/services/web", json={"version": svc["meta"]["version"], "spec": spec})
    assert r.status_code == status, r.text
    assert needle in r.json()["message"]
    assert fingerprint(store) == before


def test_update_body_must_carry_version(client: TestClient, store: LocalStore) -> None:
    create(client)
    before = fingerprint(store)
    for body in ({"spec": web_spec()}, {"version": "x", "spec": web_spec()}, {"version": 1, "spec": web_spec(),
                                                                              "force": True}):
        r = client.put("/v1/services/web", json=body)
        assert r.status_code == 400
    assert "version: Field required" in client.put("/v1/services/web", json={"spec": web_spec()}).json()["message"]
    assert fingerprint(store) == before


# ---- delete ------------------------------------------------------------------------------------------------
def test_delete_by_name(client: TestClient, store: LocalStore) -> None:
    svc = create(client)
    r = client.delete("/v1/services/WEB")
    assert r.status_code == 200
    assert r.json()["id"] == svc["id"]
    assert store.mem.count("service") == 0
    assert client.get(f"/v1/services/{svc['id']}").status_code == 404
    assert client.delete("/v1/services/web").status_code == 404
    create(client)  # the name is free again


# ---- tasks and nodes ---------------------------------------------------------------------------------------
def seed_node(client: TestClient, store: LocalStore, node_id: str, hostname: str) -> Obj:
    node = {"id": node_id, "spec": {"labels": {}, "role": "worker", "availability": "active"}, "role": "worker",
            "status": {"state": "ready", "message": "", "addr": "127.0.0.1", "timestamp": 1.0},
            "description": {"hostname": hostname}}
    run(client, store.txn([t.create("node", node)]))
    return node


def test_tasks_filters(client: TestClient, store: LocalStore) -> None:
    web, api = create(client), create(client, name="api")
    node = seed_node(client, store, "n" * 25, "host-a")
    web_tasks = seed_tasks(client, store, web, node_id=node["id"])
    seed_tasks(client, store, api)
    assert len(client.get("/v1/tasks").json()["items"]) == 10
    for ref in ("web", "WEB", web["id"]):
        items = client.get("/v1/tasks", params={"service": ref}).json()["items"]
        assert {x["id"] for x in items} == {x["id"] for x in web_tasks}
    on_node = client.get("/v1/tasks", params={"node": "HOST-A"}).json()["items"]
    assert {x["id"] for x in on_node} == {x["id"] for x in web_tasks}
    running = client.get("/v1/tasks", params={"service": "web", "desired_state": "running"}).json()["items"]
    assert len(running) == 3
    r = client.get("/v1/tasks", params={"desired_state": "sleeping"})
    assert r.status_code == 400 and "desired_state" in r.json()["message"]
    r = client.get("/v1/tasks", params={"service": "nope"})
    assert r.status_code == 404 and r.json()["message"] == "service 'nope' not found"
    assert client.get("/v1/tasks", params={"node": "nope"}).status_code == 404
    # a full id of a service that is gone (its tasks await the reaper) filters literally instead of 404
    assert client.get("/v1/tasks", params={"service": "a" * 25}).json()["items"] == []


def test_get_task(client: TestClient, store: LocalStore) -> None:
    task = seed_tasks(client, store, create(client))[0]
    assert client.get(f"/v1/tasks/{task['id']}").json()["id"] == task["id"]
    assert client.get(f"/v1/tasks/{task['id'][:10]}").json()["id"] == task["id"]
    assert client.get(f"/v1/tasks/web.1.{task['id']}").json()["id"] == task["id"]
    r = client.get("/v1/tasks/zzzz")
    assert r.status_code == 404 and r.json()["message"] == "task 'zzzz' not found"


def test_nodes(client: TestClient, store: LocalStore) -> None:
    seed_node(client, store, "b" * 25, "beta")
    seed_node(client, store, "a" * 25, "alpha")
    assert [n["description"]["hostname"] for n in client.get("/v1/nodes").json()["items"]] == ["alpha", "beta"]
    assert client.get("/v1/nodes/BETA").json()["id"] == "b" * 25
    assert client.get("/v1/nodes/aaaa").json()["id"] == "a" * 25
    r = client.get("/v1/nodes/gamma")
    assert r.status_code == 404 and r.json()["message"] == "node 'gamma' not found"


# ---- cluster -----------------------------------------------------------------------------------------------
def test_cluster_view(client: TestClient, store: LocalStore) -> None:
    r = client.get("/v1/cluster")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == "default" and body["spec"]["dispatcher"]["heartbeat_period"] == 5.0
    assert body["meta"] is None  # nobody created it yet: defaults shown, nothing written
    assert store.mem.revision == 0
    assert body["available"] is True and body["error"] is None
    raft = body["raft"]
    assert raft["leader"] == 1 and raft["leader_url"] == MEMBERS[0]
    assert raft["commit_index"] == 0 and raft["term"] == 1  # as the store (LocalStore) reports it
    assert raft["members"][0] == {"url": MEMBERS[0], "reachable": True, "id": 1, "role": "leader", "leader": 1,
                                  "term": 4, "commit_index": 17, "applied_index": 17}
    assert raft["members"][1]["url"] == MEMBERS[1] and raft["members"][1]["reachable"] is False
    assert body["subsystems"] == []

    run(client, ensure_cluster(store, heartbeat_period=2.0))
    lease = {"id": "scheduler", "holder": "scheduler-1", "term": 3, "expires_at": 4e9, "duration": 1.5}
    run(client, store.txn([t.create("lease", lease)]))
    body = client.get("/v1/cluster").json()
    assert body["spec"]["dispatcher"]["heartbeat_period"] == 2.0 and body["meta"]["version"] >= 1
    assert body["subsystems"] == [{"kind": "lease", "name": "scheduler", "holder": "scheduler-1", "term": 3,
                                   "expires_at": 4e9, "duration": 1.5, "expired": False}]


# ---- store failures ----------------------------------------------------------------------------------------
class DownStore:
    """A Store whose every call fails like a raftstore cluster without a leader. `calls` counts the reads and
    writes (the gateway's readiness probe asks `status()` on its own timetable, counted apart in `probes`)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0
        self.probes = 0

    async def _fail(self) -> Any:
        self.calls += 1
        raise self.error

    async def txn(self, ops: list[Op]) -> TxnResult:
        return await self._fail()  # type: ignore[no-any-return]

    async def get(self, kind: str, obj_id: str) -> Obj:
        return await self._fail()  # type: ignore[no-any-return]

    async def list(self, kind: str, **filters: Any) -> tuple[int, list[Obj]]:
        return await self._fail()  # type: ignore[no-any-return]

    async def page(self, kind: str, **filters: Any) -> Page:
        return await self._fail()  # type: ignore[no-any-return]

    async def page_stream(self, kind: str, **filters: Any) -> StreamedPage:
        return await self._fail()  # type: ignore[no-any-return]

    async def counts(self, kind: str, **filters: Any) -> tuple[int, list[dict[str, Any]]]:
        return await self._fail()  # type: ignore[no-any-return]

    async def watch(self, after: int, wait: float = 0.0, upto: int = 0) -> WatchBatch:
        return await self._fail()  # type: ignore[no-any-return]

    async def status(self) -> dict[str, Any]:
        self.probes += 1
        raise self.error

    async def close(self) -> None:
        return None


def test_store_without_leader_is_503() -> None:
    with make_client(DownStore(Unavailable("store: no raft leader"))) as client:
        calls = [
            client.post("/v1/services", json=web_spec()),
            client.get("/v1/services"),
            client.get("/v1/services/web"),
            client.put("/v1/services/web", json={"version": 1, "spec": web_spec()}),
            client.delete("/v1/services/web"),
            client.get("/v1/tasks"),
            client.get("/v1/tasks/abc"),
            client.get("/v1/nodes"),
            client.get("/v1/nodes/abc"),
        ]
        for r in calls:
            assert r.status_code == 503, (r.request.url, r.text)
            assert r.json()["message"] == "store unavailable: no raft leader"
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        cluster = client.get("/v1/cluster")
        assert cluster.status_code == 200
        body = cluster.json()
        assert body["available"] is False and body["error"] == "store unavailable: no raft leader"
        assert body["raft"]["leader"] == 1  # from the reachable member's own status
        assert body["subsystems"] is None


def test_invalid_input_is_refused_before_asking_the_store() -> None:
    store = DownStore(Unavailable("store: no raft leader"))
    with make_client(store) as client:
        before = store.calls
        r = client.post("/v1/services", json=web_spec(mode={"replicated": {"replicas": -1}}))
    assert r.status_code == 400
    assert store.calls == before


def test_unreachable_store_message() -> None:
    err = Unavailable("store: no raftstore member reachable (['http://127.0.0.1:4301']): refused")
    with make_client(DownStore(err)) as client:
        r = client.get("/v1/services")
    assert r.status_code == 503
    assert r.json()["message"].startswith("store unavailable: no raftstore member reachable")


def test_write_timeout_is_504() -> None:
    class SlowCommit(LocalStore):
        async def txn(self, ops: list[Op]) -> TxnResult:
            raise OutcomeUnknown("store: write timed out after 10s; it may still commit")

    with make_client(SlowCommit()) as client:
        r = client.post("/v1/services", json=web_spec())
    assert r.status_code == 504
    assert "may still commit" in r.json()["message"]


def test_readiness_recovers_with_the_store() -> None:
    class Flaky(LocalStore):
        down = True

        async def status(self) -> dict[str, Any]:
            if self.down:
                raise Unavailable("store: no raft leader")
            return await super().status()

    store = Flaky()
    with make_client(store) as client:
        assert client.get("/readyz").status_code == 503
        store.down = False
        for _ in range(100):
            if client.get("/readyz").status_code == 200:
                break
            run(client, asyncio.sleep(0.02))
        assert client.get("/readyz").json() == {"ready": True}


def test_already_exists_from_store_for_other_reasons_keeps_409() -> None:
    class IdClash(LocalStore):
        async def txn(self, ops: list[Op]) -> TxnResult:
            raise AlreadyExists("store: service 'x' already exists")

    with make_client(IdClash()) as client:
        r = client.post("/v1/services", json=web_spec())
    assert r.status_code == 409


# ---- ops ---------------------------------------------------------------------------------------------------
def test_ops_routes_and_openapi(client: TestClient) -> None:
    create(client)
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").json() == {"ready": True}
    metrics = client.get("/metrics").text
    assert 'shoal_http_requests_total{method="POST",route="/v1/services",status="201"} 1.0' in metrics
    assert "shoal_gateway_services_created_total 1.0" in metrics
    assert client.get("/v1/status").json()["store_ready"] is True
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/services", "/v1/services/{ref}", "/v1/tasks", "/v1/tasks/{ref}", "/v1/nodes",
            "/v1/nodes/{ref}", "/v1/cluster"} <= set(paths)
    assert client.get("/docs").status_code == 200
