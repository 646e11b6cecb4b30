"""The Docker Engine API subset on the gateway (TestClient over a LocalStore): the calls the docker CLI makes,
in the shapes of ../shared/reference/docker-engine-api, and dockerd's errors."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shoal.models.objects import new_task, task_status
from shoal.store import txn as t
from shoal.store.local import LocalStore

pytestmark = pytest.mark.timeout(30)
V = "/v1.41"


def _status(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"id": 1, "role": "leader", "leader": 1})


@pytest.fixture
def client(store: LocalStore) -> Iterator[TestClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(_status))
    settings = GatewaySettings(store_members=["http://store-1:4301"], ready_probe_interval=0.05)
    with TestClient(create_app(settings, store=store, http=http)) as c:
        yield c


def docker_spec(name: str = "web", replicas: int | None = 2, **extra: Any) -> dict[str, Any]:
    """What `docker service create --name web --replicas 2 busybox:1 sleep 300` sends (API 1.41)."""
    mode: dict[str, Any] = {"Replicated": {} if replicas is None else {"Replicas": replicas}}
    return {"Name": name, "Labels": {},
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox:1", "Args": ["sleep", "300"], "Init": False,
                                               "DNSConfig": {}, "Isolation": "default"},
                             "Resources": {"Limits": {}, "Reservations": {}}, "Placement": {}, "ForceUpdate": 0,
                             "Runtime": "container"},
            "Mode": mode, "UpdateConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000,
                                           "MaxFailureRatio": 0, "Order": "stop-first"},
            "EndpointSpec": {"Mode": "vip"}, **extra}


def create(client: TestClient, **kw: Any) -> str:
    r = client.post(f"{V}/services/create", json=docker_spec(**kw))
    assert r.status_code == 201, r.text
    return str(r.json()["ID"])


def test_ping_head_and_get_carry_the_version_headers(client: TestClient) -> None:
    for method in ("HEAD", "GET"):
        r = client.request(method, "/_ping")
        assert r.status_code == 200
        assert r.headers["API-Version"] == "1.41" and r.headers["OSType"] == "linux"
        assert r.headers["Swarm"] == "active/manager"
        assert r.content == (b"" if method == "HEAD" else b"OK")


def test_version_info_and_the_docker_routes_stay_out_of_openapi(client: TestClient) -> None:
    assert client.get(f"{V}/version").json()["ApiVersion"] == "1.41"
    info = client.get("/info").json()
    assert info["Swarm"]["LocalNodeState"] == "active" and info["Swarm"]["ControlAvailable"] is True
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/services" in paths and not any(p.startswith(("/services", "/_ping", "/nodes")) for p in paths)


def test_newer_api_version_is_refused_like_dockerd(client: TestClient) -> None:
    r = client.get("/v1.99/version")
    assert r.status_code == 400
    assert r.json()["message"] == "client version 1.99 is too new. Maximum supported API version is 1.41"


def test_create_defaults_replicas_and_inspect_shows_the_docker_spec(client: TestClient) -> None:
    sid = create(client, replicas=None)
    got = client.get(f"{V}/services/web?insertDefaults=true").json()
    assert got["ID"] == sid and got["Version"]["Index"] >= 1
    assert got["Spec"]["Mode"] == {"Replicated": {"Replicas": 1}}
    assert got["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "busybox:1"
    assert got["Spec"]["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"] == 10_000_000_000
    # the /v1 API sees the same service
    assert client.get("/v1/services/web").json()["spec"]["task"]["container"]["args"] == ["sleep", "300"]


def test_unsupported_docker_field_is_refused_naming_it(client: TestClient) -> None:
    spec = docker_spec()
    spec["TaskTemplate"]["ContainerSpec"]["Privileges"] = {"NoNewPrivileges": True}
    r = client.post(f"{V}/services/create", json=spec)
    assert r.status_code == 400
    assert r.json()["message"] == "TaskTemplate.ContainerSpec.Privileges is not supported by shoal"
    assert client.get(f"{V}/services").json() == []


def test_name_clash_missing_service_and_stale_version_use_dockerd_wording(client: TestClient) -> None:
    create(client)
    r = client.post(f"{V}/services/create", json=docker_spec())
    assert r.status_code == 409
    assert r.json()["message"] == ("rpc error: code = AlreadyExists desc = name conflicts with an existing object: "
                                   "service web already exists")
    r = client.get(f"{V}/services/nope")
    assert (r.status_code, r.json()["message"]) == (404, "service nope not found")
    assert r.headers["content-type"] == "application/json"
    version = client.get(f"{V}/services/web").json()["Version"]["Index"]
    r = client.post(f"{V}/services/web/update?version={version + 7}", json=docker_spec(replicas=3))
    assert (r.status_code, r.json()["message"]) == (409, "rpc error: code = Unknown desc = update out of sequence")


def test_scale_update_and_rollback_previous(client: TestClient) -> None:
    create(client)
    cur = client.get(f"{V}/services/web").json()
    r = client.post(f"{V}/services/{cur['ID']}/update?version={cur['Version']['Index']}", json=docker_spec(replicas=5))
    assert r.status_code == 200 and r.json() == {"Warnings": None}
    cur = client.get(f"{V}/services/web").json()
    assert cur["Spec"]["Mode"]["Replicated"]["Replicas"] == 5
    assert cur["PreviousSpec"]["Mode"]["Replicated"]["Replicas"] == 2
    r = client.post(f"{V}/services/{cur['ID']}/update?version={cur['Version']['Index']}&rollback=previous",
                    json=cur["Spec"])
    assert r.status_code == 200, r.text
    cur = client.get(f"{V}/services/web").json()
    assert cur["Spec"]["Mode"]["Replicated"]["Replicas"] == 2
    assert cur["UpdateStatus"]["State"] == "rollback_started"


def test_service_list_filters_and_status(client: TestClient, store: LocalStore) -> None:
    sid = create(client)
    create(client, name="db", replicas=1)
    service = client.get(f"/v1/services/{sid}").json()
    task = new_task(service, 1, 1.0)
    task["status"] = task_status("running", 2.0)
    asyncio.run(store.txn([t.create("task", task)]))
    listed = client.get(f"{V}/services?status=true").json()
    by_name = {s["Spec"]["Name"]: s for s in listed}
    assert by_name["web"]["ServiceStatus"] == {"RunningTasks": 1, "DesiredTasks": 2, "CompletedTasks": 0}
    filters = json.dumps({"name": {"we": True}})
    assert [s["Spec"]["Name"] for s in client.get(f"{V}/services", params={"filters": filters}).json()] == ["web"]
    r = client.get(f"{V}/services", params={"filters": json.dumps({"bogus": {"x": True}})})
    assert (r.status_code, r.json()["message"]) == (400, "Invalid filter 'bogus'")
    tasks = client.get(f"{V}/tasks", params={"filters": json.dumps({"service": {"web": True},
                                                                     "_up-to-date": {"true": True}})}).json()
    assert [x["ID"] for x in tasks] == [task["id"]]
    assert tasks[0]["Spec"]["ContainerSpec"]["Image"] == "busybox:1" and tasks[0]["Status"]["State"] == "running"
    assert client.get(f"{V}/tasks/{task['id']}").json()["ServiceID"] == sid
    # after an image change the old task is no longer up to date
    cur = client.get(f"{V}/services/web").json()
    spec = cur["Spec"]
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = "busybox:2"
    assert client.post(f"{V}/services/web/update?version={cur['Version']['Index']}", json=spec).status_code == 200
    tasks = client.get(f"{V}/tasks", params={"filters": json.dumps({"service": {sid: True},
                                                                     "_up-to-date": {"true": True}})}).json()
    assert tasks == []
    assert client.delete(f"{V}/services/web").status_code == 200
    assert client.get(f"{V}/services/web").status_code == 404


def test_process_services_appear_with_a_marked_container_spec_and_round_trip(client: TestClient) -> None:
    r = client.post("/v1/services", json={"name": "proc", "task": {"process": {"command": ["sleep", "30"]}}})
    assert r.status_code == 201
    got = client.get(f"{V}/services/proc").json()
    cs = got["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert cs["Image"] == "shoal/process" and cs["Labels"] == {"io.shoal.runtime": "process"}
    assert cs["Command"] == ["sleep", "30"]
    spec = got["Spec"]
    spec["Mode"]["Replicated"]["Replicas"] = 2
    r = client.post(f"{V}/services/proc/update?version={got['Version']['Index']}", json=spec)
    assert r.status_code == 200, r.text
    assert client.get("/v1/services/proc").json()["spec"]["task"]["process"]["command"] == ["sleep", "30"]


def test_secrets_and_configs(client: TestClient) -> None:
    data = base64.b64encode(b"s3cr3t").decode()
    r = client.post(f"{V}/secrets/create", json={"Name": "pw", "Labels": {"a": "1"}, "Data": data})
    assert r.status_code == 201
    sid = r.json()["ID"]
    got = client.get(f"{V}/secrets/pw").json()
    assert got["ID"] == sid and got["Spec"] == {"Name": "pw", "Labels": {"a": "1"}}  # never the data
    r = client.post(f"{V}/secrets/create", json={"Name": "pw", "Data": data})
    assert r.status_code == 409
    cid = client.post(f"{V}/configs/create", json={"Name": "conf", "Data": data}).json()["ID"]
    assert client.get(f"{V}/configs/{cid}").json()["Spec"]["Data"] == data
    spec = docker_spec()
    spec["TaskTemplate"]["ContainerSpec"]["Secrets"] = [
        {"File": {"Name": "pw", "UID": "0", "GID": "0", "Mode": 292}, "SecretID": sid, "SecretName": "pw"}]
    assert client.post(f"{V}/services/create", json=spec).status_code == 201
    r = client.delete(f"{V}/secrets/pw")
    assert r.status_code == 400 and r.json()["message"].startswith("rpc error: code = InvalidArgument desc = ")
    assert client.delete(f"{V}/services/web").status_code == 200
    assert client.delete(f"{V}/secrets/pw").status_code == 204
    assert client.get(f"{V}/secrets/pw").json()["message"] == "secret pw not found"
    assert [c["Spec"]["Name"] for c in client.get(f"{V}/configs").json()] == ["conf"]


def test_networks_overlay_and_builtin_ingress(client: TestClient) -> None:
    body = {"Name": "backend", "CheckDuplicate": True, "Driver": "overlay", "Scope": "",
            "IPAM": {"Driver": "default", "Options": {}, "Config": []}, "Internal": False, "Attachable": True,
            "Ingress": False, "ConfigOnly": False, "ConfigFrom": None, "Options": {}, "Labels": {"x": "1"}}
    r = client.post(f"{V}/networks/create", json=body)
    assert r.status_code == 201 and r.json()["Warning"] == ""
    names = {n["Name"]: n for n in client.get(f"{V}/networks").json()}
    assert names["ingress"]["Ingress"] is True and names["backend"]["Attachable"] is True
    only = client.get(f"{V}/networks", params={"filters": json.dumps({"driver": {"overlay": True}})}).json()
    assert len(only) == 2
    r = client.post(f"{V}/networks/create", json={**body, "Name": "b", "Driver": "bridge"})
    assert r.status_code == 400 and "bridge" in r.json()["message"]
    assert client.delete(f"{V}/networks/backend").status_code == 204
    assert client.get(f"{V}/networks/backend").status_code == 404


def test_nodes_update_with_version(client: TestClient, store: LocalStore) -> None:
    node = {"id": "n1", "spec": {"labels": {}, "role": "manager", "availability": "active"}, "role": "manager",
            "status": {"state": "ready", "addr": "10.0.0.5"},
            "description": {"hostname": "alpha", "platform": {"os": "linux", "arch": "x86_64"},
                            "resources": {"nano_cpus": 2_000_000_000, "memory_bytes": 1 << 30}}}
    asyncio.run(store.txn([t.create("node", node)]))
    listed = client.get(f"{V}/nodes").json()
    assert listed[0]["Description"]["Hostname"] == "alpha" and listed[0]["ManagerStatus"]["Leader"] is True
    assert client.get("/info").json()["Swarm"]["NodeID"] == "n1"
    assert client.get(f"{V}/nodes/self").json()["ID"] == "n1"
    cur = client.get(f"{V}/nodes/alpha").json()
    body = {"Labels": {"zone": "a"}, "Role": "manager", "Availability": "drain"}
    assert client.post(f"{V}/nodes/n1/update?version={cur['Version']['Index']}", json=body).status_code == 200
    assert client.get(f"{V}/nodes/n1").json()["Spec"]["Availability"] == "drain"
    r = client.post(f"{V}/nodes/n1/update?version={cur['Version']['Index']}", json=body)
    assert r.status_code == 409
    r = client.post(f"{V}/nodes/n1/update?version={cur['Version']['Index'] + 1}", json={**body, "Role": "worker"})
    assert r.status_code == 400 and "last manager" in r.json()["message"]
    assert client.get(f"{V}/nodes/zzz").json()["message"] == "node zzz not found"


def test_engine_only_calls_get_a_clear_not_supported(client: TestClient) -> None:
    r = client.post(f"{V}/containers/create", json={"Image": "busybox"})
    assert r.status_code == 501 and "not supported by shoal" in r.json()["message"]
    assert r.headers["content-type"] == "application/json"
    assert client.get(f"{V}/distribution/busybox:1/json").status_code == 404
    # swarm init/join: dockerd's answer for a node already in a swarm (the gateway always is), plus how to join
    for path in ("/swarm/init", "/swarm/join"):
        r = client.post(f"{V}{path}", json={"ListenAddr": "0.0.0.0:2377", "RemoteAddrs": ["10.0.0.1:2377"]})
        assert r.status_code == 503, (path, r.text)
        assert r.json()["message"].startswith("This node is already part of a swarm. Use \"docker swarm leave\"")
        assert "shoal swarm join" in r.json()["message"]
    # the log endpoints want at least one stream, as dockerd does (the CLI always asks for both)
    create(client)
    r = client.get(f"{V}/services/web/logs?follow=0")
    assert r.status_code == 400 and r.json()["message"] == "Bad parameters: you must choose at least one stream"
    r = client.post(f"{V}/swarm/leave?force=1")
    assert r.status_code == 501 and r.json()["message"].startswith("`docker swarm leave`")
