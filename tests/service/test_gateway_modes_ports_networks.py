"""The gateway's service modes, ports and networks API over a LocalStore (FastAPI TestClient): job modes,
update/rollback configs, manual rollback, published ports, networks, node update/removal and cluster patch.
Every refusal is checked for its status, a message naming the field, and an untouched store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shoal.cluster import REMOVED_NODES_KEPT, removed_node_ids, with_removed_node
from shoal.errors import Unavailable
from shoal.models.objects import new_task, task_status
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.store.txn import Obj, Op, TxnResult
from tests.service.gateway_kit import fingerprint, run

pytestmark = pytest.mark.timeout(60)


def members(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


def make_client(store: Any) -> TestClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(members))
    return TestClient(create_app(GatewaySettings(store_members=["http://m1"]), store=store, http=http))


@pytest.fixture
def client(store: LocalStore) -> Iterator[TestClient]:
    with make_client(store) as c:
        yield c


def spec(name: str = "web", **overrides: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"name": name, "mode": {"replicated": {"replicas": 2}},
                         "task": {"process": {"command": ["sleep", "300"]}}}
    s.update(overrides)
    return s


def ports(*items: tuple[int, int] | tuple[int, int, str] | tuple[int, int, str, str]) -> dict[str, Any]:
    """endpoint with ports (published, target[, mode[, protocol]])."""
    out = []
    for item in items:
        p: dict[str, Any] = {"published_port": item[0], "target_port": item[1]}
        if len(item) > 2:
            p["publish_mode"] = item[2]  # type: ignore[misc]
        if len(item) > 3:
            p["protocol"] = item[3]  # type: ignore[misc]
        out.append(p)
    return {"ports": out}


def create(client: TestClient, name: str = "web", **overrides: Any) -> Obj:
    r = client.post("/v1/services", json=spec(name, **overrides))
    assert r.status_code == 201, r.text
    body: Obj = r.json()
    return body


def put(client: TestClient, ref: str, new: dict[str, Any], version: int | None = None) -> httpx.Response:
    if version is None:
        version = client.get(f"/v1/services/{ref}").json()["meta"]["version"]
    return client.put(f"/v1/services/{ref}", json={"version": version, "spec": new})


def refused(client: TestClient, store: LocalStore, method: str, path: str, status: int, needle: str,
            **kwargs: Any) -> dict[str, Any]:
    before = fingerprint(store)
    r = client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert needle in body["message"], body["message"]
    assert fingerprint(store) == before
    return body


# ---- modes, jobs -------------------------------------------------------------------------------------------
def test_service_create_fills_update_rollback_endpoint_defaults(client: TestClient) -> None:
    body = create(client)
    assert body["spec"]["update_config"] == {"parallelism": 1, "delay": 0.0, "failure_action": "pause",
                                             "monitor": 5.0, "max_failure_ratio": 0.0, "order": "stop-first"}
    assert body["spec"]["rollback_config"] == body["spec"]["update_config"]
    assert body["spec"]["endpoint"] == {"mode": "vip", "ports": []}
    assert body["update_status"] is None
    assert "job_status" not in body


def test_create_replicated_job(client: TestClient, store: LocalStore) -> None:
    body = create(client, "batch", mode={"replicated_job": {"max_concurrent": 2}})
    assert body["spec"]["mode"] == {"replicated_job": {"max_concurrent": 2, "total_completions": 2}}
    assert "update_config" not in body["spec"] and "rollback_config" not in body["spec"]
    assert body["job_status"]["job_iteration"] == 0 and body["job_status"]["last_execution"] > 0
    assert body["status"] == {"desired": 2, "running": 0, "completed": 0}
    assert store.mem.get("service", body["id"])["job_status"] == body["job_status"]


def test_create_global_job(client: TestClient) -> None:
    body = create(client, "sweep", mode={"global_job": {}})
    assert body["spec"]["mode"] == {"global_job": {}}
    assert body["status"] == {"desired": 0, "running": 0, "completed": 0}


@pytest.mark.parametrize(("mode", "field"), [({"replicated_job": {}}, "update_config"),
                                             ({"global_job": {}}, "update_config"),
                                             ({"replicated_job": {}}, "rollback_config")])
def test_jobs_may_not_have_update_config(client: TestClient, store: LocalStore, mode: Obj, field: str) -> None:
    refused(client, store, "POST", "/v1/services", 400, f"invalid request: {field}: jobs",
            json=spec("batch", mode=mode, **{field: {"parallelism": 2}}))
    assert store.mem.count("service") == 0


def test_job_update_with_update_config_is_400(client: TestClient, store: LocalStore) -> None:
    create(client, "batch", mode={"replicated_job": {}})
    version = client.get("/v1/services/batch").json()["meta"]["version"]
    refused(client, store, "PUT", "/v1/services/batch", 400, "spec.update_config: jobs (replicated_job)",
            json={"version": version, "spec": spec("batch", mode={"replicated_job": {}}, update_config={})})


@pytest.mark.parametrize(("old", "new"), [
    ({"replicated": {"replicas": 1}}, {"global": {}}),
    ({"replicated": {"replicas": 1}}, {"replicated_job": {}}),
    ({"global": {}}, {"global_job": {}}),
    ({"replicated_job": {}}, {"global_job": {}}),
    ({"global_job": {}}, {"replicated": {"replicas": 1}}),
])
def test_mode_type_change_is_refused(client: TestClient, store: LocalStore, old: Obj, new: Obj) -> None:
    svc = create(client, mode=old)
    old_kind, new_kind = next(iter(old)), next(iter(new))
    refused(client, store, "PUT", "/v1/services/web", 400,
            f"spec.mode: changing the mode of a service is not supported ({old_kind} -> {new_kind})",
            json={"version": svc["meta"]["version"], "spec": spec(mode=new)})


def test_job_update_starts_a_new_iteration(client: TestClient) -> None:
    svc = create(client, "batch", mode={"replicated_job": {"total_completions": 4}})
    r = put(client, "batch", spec("batch", mode={"replicated_job": {"total_completions": 5}}))
    assert r.status_code == 200, r.text
    assert r.json()["job_status"]["job_iteration"] == 1
    assert r.json()["job_status"]["last_execution"] >= svc["job_status"]["last_execution"]
    r = client.post("/v1/services/batch/rollback")
    assert r.json()["job_status"]["job_iteration"] == 2


def seed(client: TestClient, store: LocalStore, service: Obj, rows: list[tuple[str, str, int | None]],
         node_id: str | None = None) -> list[Obj]:
    """Tasks of `service`: (desired, observed, job_iteration or None)."""
    tasks = []
    for slot, (desired, observed, iteration) in enumerate(rows):
        task = new_task(service, slot, 1.0, node_id=node_id)
        task["desired_state"] = desired
        task["status"] = task_status(observed, 2.0)
        if iteration is not None:
            task["job_iteration"] = iteration
        tasks.append(task)
    run(client, store.txn([t.create("task", x) for x in tasks]))
    return tasks


def test_job_status_counts_the_current_iteration(client: TestClient, store: LocalStore) -> None:
    svc = create(client, "batch", mode={"replicated_job": {"max_concurrent": 2, "total_completions": 5}})
    put(client, "batch", spec("batch", mode={"replicated_job": {"max_concurrent": 2, "total_completions": 5}}))
    seed(client, store, svc, [
        ("complete", "complete", 0), ("complete", "complete", 0), ("complete", "complete", 0),  # old iteration
        ("complete", "complete", 1), ("complete", "complete", 1), ("complete", "complete", 1),
        ("complete", "running", 1), ("complete", "pending", 1), ("shutdown", "failed", 1),
    ])
    status = client.get("/v1/services/batch").json()["status"]
    assert status == {"desired": 5, "running": 1, "completed": 3}
    listed = {s["spec"]["name"]: s["status"] for s in client.get("/v1/services").json()["items"]}
    assert listed["batch"] == status


def test_global_job_status(client: TestClient, store: LocalStore) -> None:
    svc = create(client, "sweep", mode={"global_job": {}})
    seed(client, store, svc, [("complete", "complete", None), ("complete", "running", 0),
                              ("complete", "assigned", 0), ("shutdown", "failed", 0)])
    assert client.get("/v1/services/sweep").json()["status"] == {"desired": 3, "running": 1, "completed": 1}


NEW_FIELD_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("two modes", spec(mode={"replicated_job": {}, "global_job": {}}), "mode: exactly one mode may be given"),
    ("max_concurrent 0", spec(mode={"replicated_job": {"max_concurrent": 0}}),
     "mode.replicated_job.max_concurrent: Input should be greater than or equal to 1"),
    ("ratio", spec(update_config={"max_failure_ratio": 2}), "update_config.max_failure_ratio"),
    ("rollback action", spec(rollback_config={"failure_action": "rollback"}), "rollback_config.failure_action"),
    ("order", spec(update_config={"order": "whatever"}), "update_config.order"),
    ("port protocol", spec(endpoint={"ports": [{"target_port": 80, "protocol": "icmp"}]}),
     "endpoint.ports.0.protocol"),
    ("target port", spec(endpoint={"ports": [{"target_port": 0}]}), "endpoint.ports.0.target_port"),
    ("spread", spec(task={"process": {"command": ["x"]}, "placement": {"preferences": [{"spread": "zone"}]}}),
     "task.placement.preferences.0.spread"),
    ("generic", spec(task={"process": {"command": ["x"]},
                           "resources": {"reservations": {"generic": [{"kind": "gpu", "value": 0}]}}}),
     "task.resources.reservations.generic.0.value"),
    ("health", spec(task={"process": {"command": ["x"], "healthcheck": {"test": ["CMD-SHELL"]}}}),
     "task.process.healthcheck.test"),
    ("health interval", spec(task={"process": {"command": ["x"], "healthcheck": {"interval": "10us"}}}),
     "task.process.healthcheck.interval: interval must be 0 or at least 1ms"),
]


@pytest.mark.parametrize(("body", "needle"), [(b, n) for _, b, n in NEW_FIELD_REFUSALS],
                         ids=[i for i, _, _ in NEW_FIELD_REFUSALS])
def test_new_field_refusals_change_nothing(client: TestClient, store: LocalStore, body: Obj, needle: str) -> None:
    svc = create(client, "existing")
    refused(client, store, "POST", "/v1/services", 400, "invalid request: " + needle, json=body)
    refused(client, store, "PUT", "/v1/services/existing", 400, "invalid request: spec." + needle,
            json={"version": svc["meta"]["version"], "spec": {**body, "name": "existing"}})
    assert store.mem.count("service") == 1


# ---- update status, manual rollback ------------------------------------------------------------------------
def test_manual_rollback_swaps_spec_and_previous_spec(client: TestClient, store: LocalStore) -> None:
    v1 = create(client)
    v2 = put(client, "web", spec(mode={"replicated": {"replicas": 5}}, labels={"v": "2"})).json()
    assert v2["spec_version"] == 2 and v2["update_status"] is None
    r = client.post("/v1/services/web/rollback", json={"version": v2["meta"]["version"]})
    assert r.status_code == 200, r.text
    back = r.json()
    assert back["spec"] == v1["spec"] and back["previous_spec"] == v2["spec"]
    assert back["spec_version"] == 3
    status = back["update_status"]
    assert status["state"] == "rollback_started" and status["message"] == "manually requested rollback"
    assert status["started_at"] > 0
    assert back["status"]["desired"] == 2
    assert store.mem.get("service", v1["id"])["spec"] == v1["spec"]
    # rolling back again swaps back (SwarmKit: manual rollback swaps, it does not clear previous_spec)
    again = client.post(f"/v1/services/{v1['id']}/rollback").json()
    assert again["spec"] == v2["spec"] and again["previous_spec"] == v1["spec"] and again["spec_version"] == 4
    # a user update resets the update status
    r = put(client, "web", spec(labels={"v": "3"}))
    assert r.json()["update_status"] is None and r.json()["spec_version"] == 5


def test_rollback_without_previous_spec_is_400(client: TestClient, store: LocalStore) -> None:
    create(client)
    refused(client, store, "POST", "/v1/services/web/rollback", 400,
            "service 'web' has no previous spec to roll back to")


def test_rollback_stale_version_is_409(client: TestClient, store: LocalStore) -> None:
    v1 = create(client)
    put(client, "web", spec(labels={"a": "b"}))
    body = refused(client, store, "POST", "/v1/services/web/rollback", 409,
                   f"not {v1['meta']['version']}", json={"version": v1["meta"]["version"]})
    assert body["code"] == "version_conflict"


def test_rollback_unknown_service_and_bad_body(client: TestClient, store: LocalStore) -> None:
    create(client)
    refused(client, store, "POST", "/v1/services/nope/rollback", 404, "service 'nope' not found")
    refused(client, store, "POST", "/v1/services/web/rollback", 400, "force: Extra inputs",
            json={"force": True})


def test_rollback_refused_when_its_port_was_taken(client: TestClient, store: LocalStore) -> None:
    create(client, endpoint=ports((8080, 80)))
    put(client, "web", spec(endpoint=ports((9090, 80))))
    create(client, "api", endpoint=ports((8080, 80)))
    refused(client, store, "POST", "/v1/services/web/rollback", 409, "port 8080/tcp is already in use by "
            "service 'api'")


def test_force_update_counter_round_trips(client: TestClient) -> None:
    create(client)
    r = put(client, "web", spec(task={"process": {"command": ["sleep", "300"]}, "force_update": 1}))
    assert r.json()["spec"]["task"]["force_update"] == 1 and r.json()["spec_version"] == 2


# ---- ports -------------------------------------------------------------------------------------------------
def test_duplicate_published_port_in_spec_is_400(client: TestClient, store: LocalStore) -> None:
    refused(client, store, "POST", "/v1/services", 400,
            "endpoint: ports[1]: published port 8080/tcp is already given by ports[0]",
            json=spec(endpoint=ports((8080, 80), (8080, 81, "host"))))
    refused(client, store, "POST", "/v1/services", 400, "endpoint: ports[0]: a port published in ingress mode "
            "cannot be used with endpoint mode dnsrr", json=spec(endpoint={"mode": "dnsrr", **ports((80, 80))}))


@pytest.mark.parametrize(("mine", "theirs", "kind"), [
    ((8080, 80), (8080, 81), "an ingress"),
    ((8080, 80, "host"), (8080, 81), "an ingress"),
    ((8080, 80), (8080, 81, "host"), "a host-published"),
])
def test_port_conflict_with_another_service_is_409(client: TestClient, store: LocalStore, mine: Any,
                                                   theirs: Any, kind: str) -> None:
    other = create(client, "api", endpoint=ports(theirs))
    body = refused(client, store, "POST", "/v1/services", 409,
                   f"spec.endpoint.ports: port 8080/tcp is already in use by service 'api' ({other['id']}) "
                   f"as {kind} port", json=spec(endpoint=ports(mine)))
    assert body["code"] == "port_in_use" and body["service"] == "api"


def test_ports_that_do_not_conflict(client: TestClient) -> None:
    create(client, "api", endpoint=ports((8080, 80, "host"), (5353, 53)))
    create(client, "web", endpoint=ports((8080, 80, "host"), (5353, 53, "ingress", "udp"), (0, 80)))
    create(client, "db", endpoint=ports((0, 80)))  # 0 = the allocator picks one: never a conflict


def test_update_does_not_conflict_with_itself_but_with_others(client: TestClient, store: LocalStore) -> None:
    create(client, endpoint=ports((8080, 80)))
    r = put(client, "web", spec(endpoint=ports((8080, 80), (8443, 443))))
    assert r.status_code == 200, r.text
    create(client, "api", endpoint=ports((9000, 80)))
    version = client.get("/v1/services/api").json()["meta"]["version"]
    refused(client, store, "PUT", "/v1/services/api", 409, "port 8443/tcp is already in use by service 'web'",
            json={"version": version, "spec": spec("api", endpoint=ports((8443, 80)))})


def test_port_assigned_by_the_allocator_counts(client: TestClient, store: LocalStore) -> None:
    svc = create(client, "api", endpoint=ports((0, 80)))
    stored = store.mem.get("service", svc["id"])
    allocated = {**stored, "endpoint": {"ports": [{"protocol": "tcp", "target_port": 80, "published_port": 30000,
                                                   "publish_mode": "ingress"}]}}
    run(client, store.txn([t.update("service", allocated)]))
    refused(client, store, "POST", "/v1/services", 409, "port 30000/tcp is already in use by service 'api'",
            json=spec(endpoint=ports((30000, 80))))


# ---- networks ----------------------------------------------------------------------------------------------
def net(client: TestClient, name: str = "back", **extra: Any) -> Obj:
    r = client.post("/v1/networks", json={"name": name, **extra})
    assert r.status_code == 201, r.text
    body: Obj = r.json()
    return body


def test_network_crud(client: TestClient, store: LocalStore) -> None:
    back = net(client, labels={"tier": "db"}, ipam={"subnet": "10.20.0.0/24", "gateway": "10.20.0.1"},
               attachable=True)
    assert len(back["id"]) == 25 and back["ipam"] is None
    assert back["spec"] == {"name": "back", "labels": {"tier": "db"}, "driver": "overlay",
                            "ipam": {"subnet": "10.20.0.0/24", "gateway": "10.20.0.1"}, "attachable": True,
                            "internal": False}
    assert store.mem.get("network", back["id"])["spec"] == back["spec"]
    front = net(client, "Front")
    listed = client.get("/v1/networks").json()
    assert [n["spec"]["name"] for n in listed["items"]] == ["back", "Front"]
    assert listed["revision"] == store.mem.revision
    for ref in (back["id"], "BACK", back["id"][:8]):
        assert client.get(f"/v1/networks/{ref}").json()["id"] == back["id"]
    r = client.delete("/v1/networks/front")
    assert r.status_code == 200 and r.json()["id"] == front["id"]
    assert store.mem.count("network") == 1
    refused(client, store, "GET", "/v1/networks/front", 404, "network 'front' not found")
    refused(client, store, "DELETE", "/v1/networks/front", 404, "network 'front' not found")


def test_encrypted_network_is_stored_and_shown(client: TestClient, store: LocalStore) -> None:
    sec = net(client, "sec", options={"encrypted": ""})
    assert sec["spec"]["options"] == {"encrypted": ""}
    assert store.mem.get("network", sec["id"])["spec"]["options"] == {"encrypted": ""}
    assert client.get("/v1/networks/sec").json()["spec"]["options"] == {"encrypted": ""}
    assert "options" not in net(client, "plain")["spec"]


@pytest.mark.parametrize("name", ["back", "BACK", "Back"])
def test_network_name_taken_is_409(client: TestClient, store: LocalStore, name: str) -> None:
    net(client)
    refused(client, store, "POST", "/v1/networks", 409, f"network {name!r} already exists", json={"name": name})


@pytest.mark.parametrize(("body", "needle"), [
    ({"name": "x", "ipam": {"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}},
     "ipam: gateway: 10.0.1.1 is not inside subnet 10.0.0.0/24"),
    ({"name": "x", "ipam": {"subnet": "10.0.0.7/24"}}, "ipam.subnet: invalid subnet '10.0.0.7/24': it has host bits"),
    ({"name": "x", "ipam": {"gateway": "10.0.0.1"}}, "ipam.subnet: Field required"),
    ({"name": "x y"}, "name: name must be"),
    ({"name": "x", "scope": "local"}, "scope: Extra inputs are not permitted"),
    ({"name": "x", "options": {"mtu": "1400"}}, "options: unsupported driver option(s) 'mtu': shoal knows encrypted"),
    ({"name": "x", "options": {"encrypted": "no"}}, "leave it out for a network in the clear"),
])
def test_invalid_network_is_400(client: TestClient, store: LocalStore, body: Obj, needle: str) -> None:
    refused(client, store, "POST", "/v1/networks", 400, needle, json=body)


def test_service_network_targets_are_resolved_to_ids(client: TestClient, store: LocalStore) -> None:
    back = net(client)
    before = store.mem.get("network", back["id"])["meta"]["version"]
    svc = create(client, task={"process": {"command": ["x"]}, "networks": [{"target": "BACK", "aliases": ["db"]}]})
    assert svc["spec"]["task"]["networks"] == [{"target": back["id"], "aliases": ["db"]}]
    # the referenced network is rewritten (unchanged) in the same transaction: that serialises with removal
    after = store.mem.get("network", back["id"])
    assert after["meta"]["version"] == svc["meta"]["version"] > before
    assert after["spec"] == back["spec"]
    r = put(client, "web", svc["spec"])  # the stored id is accepted as a target too
    assert r.status_code == 200 and r.json()["spec"]["task"]["networks"][0]["target"] == back["id"]


def test_unknown_or_duplicate_network_is_400(client: TestClient, store: LocalStore) -> None:
    back = net(client)
    refused(client, store, "POST", "/v1/services", 400, "task.networks[0].target: network 'nope' not found",
            json=spec(task={"process": {"command": ["x"]}, "networks": [{"target": "nope"}]}))
    refused(client, store, "POST", "/v1/services", 400, "task.networks[1].target: network 'back' is attached "
            "more than once", json=spec(task={"process": {"command": ["x"]},
                                              "networks": [{"target": "back"}, {"target": back["id"]}]}))
    svc = create(client)
    refused(client, store, "PUT", "/v1/services/web", 400, "spec.task.networks[0].target: network 'gone' not found",
            json={"version": svc["meta"]["version"],
                  "spec": spec(task={"process": {"command": ["x"]}, "networks": [{"target": "gone"}]})})


def test_network_in_use_by_a_service_cannot_be_removed(client: TestClient, store: LocalStore) -> None:
    net(client)
    create(client, task={"process": {"command": ["x"]}, "networks": [{"target": "back"}]})
    body = refused(client, store, "DELETE", "/v1/networks/back", 409, "network 'back' is in use by service 'web'")
    assert body["code"] == "in_use"
    assert client.delete("/v1/services/web").status_code == 200
    assert client.delete("/v1/networks/back").status_code == 200


@pytest.mark.parametrize(("attachment", "desired", "observed", "blocks"), [
    ({"network": {"id": "N"}, "addresses": ["10.0.0.3/24"]}, "running", "running", True),
    ({"network_id": "N"}, "running", "pending", True),
    ({"network": {"id": "N"}}, "complete", "running", True),
    ({"network": {"id": "N"}}, "shutdown", "running", False),
    ({"network": {"id": "N"}}, "running", "failed", False),
    ({"network": {"id": "N"}}, "remove", "complete", False),
])
def test_network_attached_to_a_live_task_cannot_be_removed(client: TestClient, store: LocalStore, attachment: Obj,
                                                           desired: str, observed: str, blocks: bool) -> None:
    back = net(client)
    svc = create(client)
    task = new_task(svc, 1, 1.0)
    task.update(desired_state=desired, status=task_status(observed, 2.0),
                networks=[{k: ({"id": back["id"]} if v == {"id": "N"} else back["id"] if v == "N" else v)
                           for k, v in attachment.items()}])
    run(client, store.txn([t.create("task", task)]))
    if blocks:
        refused(client, store, "DELETE", "/v1/networks/back", 409, f"network 'back' is in use by task {task['id']}")
    else:
        assert client.delete("/v1/networks/back").status_code == 200


class RacingStore(LocalStore):
    """Runs `before_next_txn` (once) just before the next transaction: a write of another gateway landing
    between our reads and our write."""

    def __init__(self) -> None:
        super().__init__()
        self.before_next_txn: list[Op] | None = None

    async def txn(self, ops: list[Op]) -> TxnResult:
        if self.before_next_txn is not None:
            other, self.before_next_txn = self.before_next_txn, None
            await super().txn(other)
        return await super().txn(ops)


def test_service_attaching_during_network_removal_wins() -> None:
    store = RacingStore()
    with make_client(store) as client:
        back = net(client)
        # another gateway creates a service on `back` (rewriting `back`, as every gateway does) after our checks
        svc = create(client)
        network = store.mem.get("network", back["id"])
        other = {**store.mem.get("service", svc["id"])}
        other["spec"] = {**other["spec"], "task": {**other["spec"]["task"], "networks": [{"target": back["id"],
                                                                                          "aliases": []}]}}
        store.before_next_txn = [t.update("service", other), t.update("network", network)]
        r = client.delete("/v1/networks/back")
    assert r.status_code == 409, r.text
    assert "in use by service 'web'" in r.json()["message"]
    assert store.mem.count("network") == 1


def test_network_removed_during_service_create_is_400() -> None:
    store = RacingStore()
    with make_client(store) as client:
        back = net(client)
        store.before_next_txn = [t.delete("network", back["id"])]
        r = client.post("/v1/services", json=spec(task={"process": {"command": ["x"]},
                                                        "networks": [{"target": "back"}]}))
    assert r.status_code == 400, r.text
    assert "task.networks[0].target: network 'back' not found" in r.json()["message"]
    assert store.mem.count("service") == 0


# ---- nodes -------------------------------------------------------------------------------------------------
def seed_node(client: TestClient, store: LocalStore, node_id: str, hostname: str, state: str = "ready",
              role: str = "worker", labels: dict[str, str] | None = None) -> Obj:
    node = {"id": node_id, "spec": {"labels": labels or {}, "role": role, "availability": "active"},
            "role": role, "status": {"state": state, "message": "", "addr": "127.0.0.1", "timestamp": 1.0},
            "description": {"hostname": hostname}}
    res = run(client, store.txn([t.create("node", node)]))
    created: Obj = res.objects[0]
    return created


def test_node_patch(client: TestClient, store: LocalStore) -> None:
    node = seed_node(client, store, "a" * 25, "host-a", labels={"zone": "a", "old": "x"})
    r = client.patch("/v1/nodes/host-a", json={"version": node["meta"]["version"], "availability": "drain",
                                               "labels_add": {"zone": "b", "ssd": "true"}, "labels_rm": ["old"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["spec"] == {"labels": {"zone": "b", "ssd": "true"}, "role": "worker", "availability": "drain"}
    assert body["meta"]["version"] > node["meta"]["version"]
    assert body["status"] == node["status"] and body["description"] == node["description"]
    assert store.mem.get("node", node["id"])["spec"] == body["spec"]
    r = client.patch(f"/v1/nodes/{node['id'][:6]}", json={"version": body["meta"]["version"],
                                                          "spec": {"labels": {}, "availability": "pause",
                                                                   "name": "edge"}})
    assert r.json()["spec"] == {"name": "edge", "labels": {}, "role": "worker", "availability": "pause"}
    assert client.get("/v1/nodes/edge").json()["id"] == node["id"]


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"availability": "drain"}, 400, "version: Field required"),
    ({"version": "STALE", "availability": "drain"}, 409, "node 'host-a' is at version"),
    ({"version": "V", "availability": "sleep"}, 400, "availability: Input should be 'active', 'pause' or 'drain'"),
    ({"version": "V", "role": "boss"}, 400, "role: Input should be"),
    ({"version": "V", "labels_rm": ["nope"]}, 400, "labels_rm: node 'host-a' has no label 'nope'"),
    ({"version": "V", "labels_add": {"": "x"}}, 400, "labels_add..[key]: String should have at least 1 character"),
    ({"version": "V", "labels_add": {" ": "x"}}, 400, "labels_add: label keys must not be empty"),
    ({"version": "V", "labels_add": {"a": "1"}, "labels_rm": ["a"]}, 400, "label 'a' is both added and removed"),
    ({"version": "V", "spec": {"availability": "drain"}, "role": "manager"}, 400,
     "give either spec or individual changes, not both"),
    ({"version": "V", "spec": {"availability": "drain", "cpu": 1}}, 400, "spec.cpu: Extra inputs"),
    ({"version": "V", "drain": True}, 400, "drain: Extra inputs"),
])
def test_node_patch_refusals(client: TestClient, store: LocalStore, body: Obj, status: int, needle: str) -> None:
    node = seed_node(client, store, "a" * 25, "host-a")
    version = node["meta"]["version"]
    body = {k: (version if v == "V" else version - 1 if v == "STALE" else v) for k, v in body.items()}
    refused(client, store, "PATCH", "/v1/nodes/host-a", status, needle, json=body)
    refused(client, store, "PATCH", "/v1/nodes/nope", 404, "node 'nope' not found",
            json={"version": version, "availability": "drain"})


def test_demoting_the_last_manager_is_refused(client: TestClient, store: LocalStore) -> None:
    m1 = seed_node(client, store, "m" * 25, "m1", role="manager")
    refused(client, store, "PATCH", "/v1/nodes/m1", 400, "role: node 'm1' is the last manager",
            json={"version": m1["meta"]["version"], "role": "worker"})
    w = seed_node(client, store, "w" * 25, "w1")
    r = client.patch("/v1/nodes/w1", json={"version": w["meta"]["version"], "role": "manager"})
    assert r.status_code == 200
    r = client.patch("/v1/nodes/m1", json={"version": m1["meta"]["version"], "role": "worker"})
    assert r.status_code == 200 and r.json()["spec"]["role"] == "worker"


def node_tasks(client: TestClient, store: LocalStore, node_id: str) -> list[Obj]:
    svc = create(client)
    return seed(client, store, svc, [("running", "running", None), ("running", "assigned", None),
                                     ("shutdown", "running", None), ("shutdown", "failed", None),
                                     ("shutdown", "complete", None), ("running", "rejected", None)],
                node_id=node_id)


def test_ready_node_is_not_removed_without_force(client: TestClient, store: LocalStore) -> None:
    seed_node(client, store, "a" * 25, "host-a")
    node_tasks(client, store, "a" * 25)
    body = refused(client, store, "DELETE", "/v1/nodes/host-a", 409,
                   "node 'host-a' is ready and cannot be removed")
    assert "force" in body["message"] and "drain" in body["message"]
    assert body["code"] == "failed_precondition"
    refused(client, store, "DELETE", "/v1/nodes/nope", 404, "node 'nope' not found")


@pytest.mark.parametrize(("state", "force"), [("ready", True), ("down", False), ("down", True),
                                              ("unknown", False), ("disconnected", False)])
def test_node_removal_orphans_its_unfinished_tasks_in_one_transaction(
    client: TestClient, store: LocalStore, state: str, force: bool,
) -> None:
    node = seed_node(client, store, "a" * 25, "host-a", state=state)
    other = seed_node(client, store, "b" * 25, "host-b")
    tasks = node_tasks(client, store, node["id"])
    elsewhere = seed(client, store, create(client, "api"), [("running", "running", None)], node_id=other["id"])
    revision = store.mem.revision
    r = client.delete("/v1/nodes/host-a", params={"force": "true"} if force else None)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == node["id"]
    assert store.mem.find("node", node["id"]) is None
    assert store.mem.revision == revision + 1  # one transaction: node delete + orphaned tasks + tombstone
    (event,) = store.mem.events_since(revision)
    assert len(event.changes) == 1 + 3 + 1
    assert [x["id"] for x in store.mem.get("cluster", "default")["removed_nodes"]] == [node["id"]]
    states = {x["id"]: store.mem.get("task", x["id"])["status"] for x in tasks}
    for x, expected in zip(tasks, ["orphaned", "orphaned", "orphaned", "failed", "complete", "rejected"],
                           strict=True):
        assert states[x["id"]]["state"] == expected
    assert states[tasks[0]["id"]]["message"] == "task belonged to a node that has been deleted"
    assert sorted(r.json()["orphaned_tasks"]) == sorted(x["id"] for x in tasks[:3])
    assert store.mem.get("task", elsewhere[0]["id"])["status"]["state"] == "running"


def test_node_removal_remembers_the_removed_id_in_the_cluster_object(client: TestClient, store: LocalStore) -> None:
    """SwarmKit's Cluster.RemovedNodes: the dispatcher reads it so that the agent of a removed node, still
    holding its id, joins again as a new node instead of bringing the removed one back (a test on real
    processes showed the node reappear under its old id half a second after `shoal node rm --force`)."""
    for i, name in enumerate(["host-a", "host-b"]):
        seed_node(client, store, str(i) * 25, name, state="down")
    assert client.delete("/v1/nodes/host-a").status_code == 200  # no cluster object yet: created with it
    cluster = store.mem.get("cluster", "default")
    assert cluster["spec"]["dispatcher"]["heartbeat_period"] == 5.0
    assert [x["id"] for x in cluster["removed_nodes"]] == ["0" * 25]
    r = client.patch("/v1/cluster", json={"version": cluster["meta"]["version"],
                                          "dispatcher": {"heartbeat_period": "2s"}})
    assert r.status_code == 200 and len(r.json()["removed_nodes"]) == 1  # a spec change keeps the list
    assert client.delete("/v1/nodes/host-b").status_code == 200
    removed = store.mem.get("cluster", "default")["removed_nodes"]
    assert [x["id"] for x in removed] == ["0" * 25, "1" * 25] and all(x["removed_at"] > 0 for x in removed)
    assert client.get("/v1/cluster").json()["removed_nodes"] == removed


def test_the_cluster_remembers_a_bounded_number_of_removed_nodes() -> None:
    cluster: Obj = {"id": "default", "spec": {}}
    for i in range(REMOVED_NODES_KEPT + 5):
        cluster = with_removed_node(cluster, f"n{i}", float(i))
    ids = removed_node_ids(cluster)
    assert len(ids) == REMOVED_NODES_KEPT and "n4" not in ids and "n5" in ids
    assert removed_node_ids(with_removed_node(cluster, "n5", 9e9)) == ids  # removed again: moved, not doubled
    assert removed_node_ids(None) == set()


class TaskWriterStore(LocalStore):
    """The dispatcher writes a task status right after the gateway read it, once."""

    def __init__(self) -> None:
        super().__init__()
        self.task_id: str | None = None

    async def txn(self, ops: list[Op]) -> TxnResult:
        if self.task_id is not None and any(op["kind"] == "node" and op["op"] == "delete" for op in ops):
            task = self.mem.get("task", self.task_id)
            self.task_id = None
            await super().txn([t.update("task", {**task, "status": task_status("running", 3.0)})])
        return await super().txn(ops)


def test_node_removal_retries_when_a_task_changes_meanwhile() -> None:
    store = TaskWriterStore()
    with make_client(store) as client:
        seed_node(client, store, "a" * 25, "host-a", state="down")
        tasks = node_tasks(client, store, "a" * 25)
        store.task_id = tasks[1]["id"]
        r = client.delete("/v1/nodes/host-a")
    assert r.status_code == 200, r.text
    assert store.mem.get("task", tasks[1]["id"])["status"]["state"] == "orphaned"


# ---- cluster -----------------------------------------------------------------------------------------------
def test_cluster_patch_creates_the_cluster_object(client: TestClient, store: LocalStore) -> None:
    assert client.get("/v1/cluster").json()["meta"] is None  # not created yet: version 0 creates it
    r = client.patch("/v1/cluster", json={"version": 0, "dispatcher": {"heartbeat_period": "10s"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "default" and store.mem.revision == 1
    assert body["spec"] == {"name": "default", "dispatcher": {"heartbeat_period": 10.0},
                            "orchestration": {"task_history_retention_limit": 5}}
    r = client.patch("/v1/cluster", json={"version": body["meta"]["version"],
                                          "orchestration": {"task_history_retention_limit": -1}})
    assert r.json()["spec"]["dispatcher"]["heartbeat_period"] == 10.0
    assert r.json()["spec"]["orchestration"]["task_history_retention_limit"] == -1
    assert client.get("/v1/cluster").json()["spec"] == r.json()["spec"]
    r = client.patch("/v1/cluster", json={"version": r.json()["meta"]["version"],
                                          "spec": {"dispatcher": {"heartbeat_period": 2}}})
    assert r.json()["spec"] == {"name": "default", "dispatcher": {"heartbeat_period": 2.0},
                                "orchestration": {"task_history_retention_limit": 5}}


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"dispatcher": {"heartbeat_period": 0}}, 400, "dispatcher.heartbeat_period: heartbeat_period must be greater"),
    ({"dispatcher": {"heartbeat_period": "fast"}}, 400, "dispatcher.heartbeat_period: invalid duration"),
    ({"dispatcher": {"period": "5s"}}, 400, "dispatcher.period: Extra inputs"),
    ({"orchestration": {"task_history_retention_limit": "all"}}, 400, "orchestration.task_history_retention_limit"),
    ({"spec": {"name": "prod"}}, 400, "spec.name: renaming the cluster is not supported"),
    ({"spec": {}, "dispatcher": {"heartbeat_period": 1}}, 400, "give either spec or the sections"),
    ({}, 400, "nothing to change"),
    ({"version": "STALE", "dispatcher": {"heartbeat_period": 1}}, 409, "cluster 'default' is at version"),
    ({"version": None, "dispatcher": {"heartbeat_period": 1}}, 400, "version: Field required"),
    ({"version": "CURRENT_AS_STRING", "dispatcher": {"heartbeat_period": 1}}, 400, "version: Input should be a "
                                                                                   "valid integer"),
    ({"version": "CURRENT", "dispatcher": {"heartbeat_period": "1ms"}}, 400, "heartbeat_period must be between"),
])
def test_cluster_patch_refusals(client: TestClient, store: LocalStore, body: Obj, status: int,
                                needle: str) -> None:
    created = client.patch("/v1/cluster", json={"version": 0, "dispatcher": {"heartbeat_period": 3}}).json()
    at = created["meta"]["version"]
    values = {"STALE": at - 1, "CURRENT": at, "CURRENT_AS_STRING": str(at)}
    body = {k: values.get(v, v) if isinstance(v, str) else v for k, v in {"version": at, **body}.items()
            if v is not None}
    refused(client, store, "PATCH", "/v1/cluster", status, needle, json=body)


def test_cluster_patch_refusals_do_not_create_it(client: TestClient, store: LocalStore) -> None:
    refused(client, store, "PATCH", "/v1/cluster", 400, "heartbeat_period", json={"version": 0, "dispatcher":
                                                                                 {"heartbeat_period": -1}})
    refused(client, store, "PATCH", "/v1/cluster", 409, "does not exist yet",
            json={"version": 3, "dispatcher": {"heartbeat_period": 1}})
    assert store.mem.revision == 0


# ---- plumbing ----------------------------------------------------------------------------------------------
def test_new_routes_are_in_openapi(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/services/{ref}/rollback", "/v1/networks", "/v1/networks/{ref}"} <= set(paths)
    assert "patch" in paths["/v1/nodes/{ref}"] and "delete" in paths["/v1/nodes/{ref}"]
    assert "patch" in paths["/v1/cluster"]


class DownStore(LocalStore):
    async def txn(self, ops: list[Op]) -> TxnResult:
        raise Unavailable("store: no raft leader")

    async def get(self, kind: str, obj_id: str) -> Obj:
        raise Unavailable("store: no raft leader")

    async def list(self, kind: str, **filters: Any) -> tuple[int, list[Obj]]:
        raise Unavailable("store: no raft leader")


def test_new_endpoints_answer_503_without_a_store() -> None:
    with make_client(DownStore()) as client:
        for method, path, body in [("POST", "/v1/services/web/rollback", None), ("POST", "/v1/networks",
                                                                                {"name": "n"}),
                                   ("GET", "/v1/networks", None), ("GET", "/v1/networks/n", None),
                                   ("DELETE", "/v1/networks/n", None),
                                   ("PATCH", "/v1/nodes/n", {"version": 1, "availability": "drain"}),
                                   ("DELETE", "/v1/nodes/n", None),
                                   ("PATCH", "/v1/cluster", {"version": 0, "dispatcher": {"heartbeat_period": 1}})]:
            r = client.request(method, path, json=body)
            assert r.status_code == 503, (method, path, r.text)
            assert r.json()["message"] == "store unavailable: no raft leader"
