"""Network attachments (SwarmKit's AttachNetwork/DetachNetwork) and nodes' load-balancer IPs through the gateway
over a LocalStore: the attach/detach API and its refusals (FastAPI TestClient), then the whole control plane
(orchestrator, allocator, scheduler, fake agents, and the gateway in the same event loop): an attachment task
gets an address, its node and the nodes of a service's tasks get LB IPs, nothing reschedules or reaps the
attachment, and detaching releases everything."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.allocator.loop import Allocator
from services.allocator.settings import AllocatorSettings
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shoal.clock import SystemClock
from shoal.models.kinds import Kind
from shoal.models.objects import ATTACHMENT_RUNTIME, Obj, task_status
from shoal.store import txn as t
from shoal.store.local import LocalStore
from tests.service.test_control_plane import FAST, ControlPlane, eventually
from tests.service.test_gateway_modes_ports_networks import (
    RacingStore,
    fingerprint,
    make_client,
    members,
    net,
    refused,
    run,
)
from tests.sim.cp_fakes import make_node

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def client(store: LocalStore) -> Iterator[TestClient]:
    with make_client(store) as c:
        yield c


def seed(client: TestClient, store: LocalStore, *nodes: str) -> None:
    run(client, store.txn([t.create(Kind.NODE, make_node(n, hostname=f"host-{n}")) for n in nodes]))


def attach(client: TestClient, network: str, **body: Any) -> Obj:
    r = client.post(f"/v1/networks/{network}/attachments", json=body)
    assert r.status_code == 201, r.text
    out: Obj = r.json()
    return out


# ---- the API -------------------------------------------------------------------------------------------------
def test_attach_creates_a_serviceless_task_bound_to_the_node(client: TestClient, store: LocalStore) -> None:
    seed(client, store, "n1")
    shared = net(client, "shared", attachable=True)
    before = store.mem.get(Kind.NETWORK, shared["id"])["meta"]["version"]
    task = attach(client, "SHARED", node_id="host-n1", container_id="c0ffee", aliases=["db", "cache"])
    assert task["service_id"] == "" and task["node_id"] == "n1" and task["runtime"] == ATTACHMENT_RUNTIME
    assert task["desired_state"] == "running" and task["status"]["state"] == "new"
    assert task["spec"] == {"attachment": {"container_id": "c0ffee"},
                            "networks": [{"target": shared["id"], "aliases": ["db", "cache"]}]}
    # the network was rewritten (unchanged) in the same transaction: it serialises with the network's removal
    after = store.mem.get(Kind.NETWORK, shared["id"])
    assert after["meta"]["version"] == task["meta"]["version"] > before and after["spec"] == shared["spec"]
    # it shows in the network's attachments, the task list (by node) and by its name
    listed = client.get("/v1/networks/shared/attachments").json()
    assert [x["id"] for x in listed["items"]] == [task["id"]]
    assert [x["id"] for x in client.get("/v1/tasks", params={"node": "host-n1"}).json()["items"]] == [task["id"]]
    assert client.get(f"/v1/tasks/attachment.n1.{task['id']}").json()["id"] == task["id"]
    # a container may be attached without an id (a bare attachment), and by node id prefix
    other = attach(client, shared["id"][:6], node_id="n1")
    assert other["spec"]["attachment"] == {"container_id": ""}


@pytest.mark.parametrize(("path", "body", "status", "needle"), [
    ("/v1/networks/back/attachments", {"node_id": "n1"}, 403, "network 'back' is not attachable"),
    ("/v1/networks/ingress/attachments", {"node_id": "n1"}, 403,
     "network 'ingress' is the ingress network: containers cannot be attached to it"),
    ("/v1/networks/nope/attachments", {"node_id": "n1"}, 404, "network 'nope' not found"),
    ("/v1/networks/shared/attachments", {"node_id": "ghost"}, 404, "node 'ghost' not found"),
    ("/v1/networks/shared/attachments", {}, 400, "node_id: Field required"),
    ("/v1/networks/shared/attachments", {"node_id": "n1", "aliases": ["a b"]}, 400, "invalid alias 'a b'"),
    ("/v1/networks/shared/attachments", {"node_id": "n1", "addresses": ["10.0.0.9"]}, 400,
     "addresses: Extra inputs are not permitted"),
])
def test_attach_refusals(client: TestClient, store: LocalStore, path: str, body: Obj, status: int,
                         needle: str) -> None:
    seed(client, store, "n1")
    net(client, "back")
    net(client, "shared", attachable=True)
    ingress = {"id": "i" * 25, "spec": {"name": "ingress", "labels": {}, "driver": "overlay", "attachable": False,
                                        "internal": False, "ingress": True}, "ipam": None}
    run(client, store.txn([t.create(Kind.NETWORK, ingress)]))
    body_out = refused(client, store, "POST", path, status, needle, json=body)
    if status == 403:
        assert body_out["code"] == "permission_denied"


def test_a_network_with_attachments_cannot_be_removed_until_they_are_detached(
        client: TestClient, store: LocalStore) -> None:
    seed(client, store, "n1")
    net(client, "shared", attachable=True)
    task = attach(client, "shared", node_id="n1")
    # not allocated yet (it only names the network in its spec): in use all the same
    body = refused(client, store, "DELETE", "/v1/networks/shared", 409,
                   f"network 'shared' is in use by task {task['id']} (an attachment on node n1, new)")
    assert body["code"] == "in_use"
    # allocated and running (what the allocator, the scheduler and the agent do)
    cur = store.mem.get(Kind.TASK, task["id"])
    running = {**cur, "networks": [{"network_id": cur["spec"]["networks"][0]["target"],
                                    "addresses": ["10.0.0.3/24"], "aliases": []}],
               "status": task_status("running", 2.0)}
    run(client, store.txn([t.update(Kind.TASK, running)]))
    refused(client, store, "DELETE", "/v1/networks/shared", 409, "is in use by task")
    # detach: desired REMOVE (the agent stops it, the reaper deletes it); repeated, it answers the same
    r = client.delete(f"/v1/networks/shared/attachments/{task['id'][:8]}")
    assert r.status_code == 200 and r.json()["desired_state"] == "remove"
    before = fingerprint(store)
    again = client.delete(f"/v1/networks/shared/attachments/{task['id']}")
    assert again.status_code == 200 and again.json()["desired_state"] == "remove" and fingerprint(store) == before
    # a task being detached no longer holds the network (like a service task being shut down)
    assert client.delete("/v1/networks/shared").status_code == 200


def test_detach_refusals(client: TestClient, store: LocalStore) -> None:
    seed(client, store, "n1")
    net(client, "shared", attachable=True)
    net(client, "other", attachable=True)
    task = attach(client, "shared", node_id="n1")
    refused(client, store, "DELETE", f"/v1/networks/other/attachments/{task['id']}", 404,
            f"attachment {task['id']!r} not found on network 'other'")
    refused(client, store, "DELETE", "/v1/networks/shared/attachments/zzz", 404,
            "attachment 'zzz' not found on network 'shared'")
    refused(client, store, "DELETE", f"/v1/networks/nope/attachments/{task['id']}", 404, "network 'nope' not found")


def test_a_node_removed_while_attaching_is_a_404_and_nothing_is_written() -> None:
    store = RacingStore()
    with make_client(store) as client:
        seed(client, store, "n1")
        net(client, "shared", attachable=True)
        store.before_next_txn = [t.delete(Kind.NODE, "n1")]  # another gateway removes the node meanwhile
        r = client.post("/v1/networks/shared/attachments", json={"node_id": "n1"})
        assert r.status_code == 404 and r.json()["message"] == "node 'n1' not found"
        assert store.mem.count(Kind.TASK) == 0


# ---- in the running control plane ----------------------------------------------------------------------------
@pytest.fixture
async def plane() -> AsyncIterator[tuple[ControlPlane, httpx.AsyncClient]]:
    cp = ControlPlane()
    await cp.start()
    app = create_app(GatewaySettings(store_members=["http://m1"]), store=cp.store,
                     http=httpx.AsyncClient(transport=httpx.MockTransport(members)))
    gw = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
    try:
        yield cp, gw
    finally:
        await gw.aclose()
        await cp.close()


def lb_ips(cp: ControlPlane, node_id: str) -> dict[str, str]:
    node = cp.store.mem.get(Kind.NODE, node_id)
    return {a["network_id"]: a["address"] for a in node.get("attachments") or []}


def addresses_of(cp: ControlPlane, task: Obj) -> str:
    address: str = task["networks"][0]["addresses"][0]
    return address


def held(cp: ControlPlane) -> list[tuple[str, str]]:
    """Every address held: live tasks', VIPs and nodes' LB IPs."""
    used = [(a["network_id"], a["addresses"][0]) for x in cp.tasks() for a in x.get("networks") or []
            if not (x["desired_state"] in ("shutdown", "remove") and x["status"]["state"] in ("shutdown", "failed"))]
    for s in cp.store.mem.list(Kind.SERVICE):
        used += [(v["network_id"], v["addr"]) for v in (s.get("endpoint") or {}).get("virtual_ips") or []]
    for n in cp.store.mem.list(Kind.NODE):
        used += [(a["network_id"], a["address"]) for a in n.get("attachments") or []]
    return used


async def test_attachment_and_service_tasks_get_addresses_and_their_nodes_lb_ips(
        plane: tuple[ControlPlane, httpx.AsyncClient]) -> None:
    cp, gw = plane
    r = await gw.post("/v1/networks", json={"name": "shared", "attachable": True})
    assert r.status_code == 201, r.text
    shared = r.json()
    r = await gw.post("/v1/networks/shared/attachments", json={"node_id": "n2", "container_id": "abc"})
    assert r.status_code == 201, r.text
    att = r.json()

    def attached() -> Obj | None:
        x = cp.store.mem.find(Kind.TASK, att["id"])
        return x if x is not None and x["status"]["state"] == "running" else None

    running = await eventually(attached, timeout=15, what="the attachment task running on n2")
    assert running["node_id"] == "n2"  # pre-bound: validated on its node, never moved
    [addr] = running["networks"]
    assert addr["network_id"] == shared["id"]
    assert ipaddress.ip_interface(addr["addresses"][0]).ip in ipaddress.ip_network("10.0.0.0/24")
    await eventually(lambda: shared["id"] in lb_ips(cp, "n2"), timeout=10, what="n2's LB IP on shared")
    assert lb_ips(cp, "n1") == {}
    # the gateway shows it: the network's attachments and the node
    listed = (await gw.get("/v1/networks/shared/attachments")).json()["items"]
    assert listed[0]["networks"][0]["addresses"] == addr["addresses"]
    node = (await gw.get("/v1/nodes/n2")).json()
    assert node["attachments"] == [{"network_id": shared["id"], "address": lb_ips(cp, "n2")[shared["id"]]}]

    # a service on the same network: both nodes end up with one LB IP each, nothing held twice
    spec = {"name": "web", "mode": {"replicated": {"replicas": 2}},
            "task": {"process": {"command": ["sleep", "1000"]}, "networks": [{"target": "shared"}]}}
    r = await gw.post("/v1/services", json=spec)
    assert r.status_code == 201, r.text
    web = r.json()
    await eventually(lambda: len([x for x in cp.tasks(web) if x["status"]["state"] == "running"]) == 2,
                     timeout=15, what="web running")
    on_n1 = [x for x in cp.tasks(web) if x["node_id"] == "n1"]
    assert on_n1  # spread: one per node
    await eventually(lambda: shared["id"] in lb_ips(cp, "n1"), timeout=10, what="n1's LB IP on shared")
    n2_lb = lb_ips(cp, "n2")[shared["id"]]
    assert len(held(cp)) == len(set(held(cp))) == 2 + 1 + 1 + 2  # tasks, attachment, VIP, LB IPs

    # the orchestrator leaves the attachment alone (no service: never an orphan to remove), for several passes
    await asyncio.sleep(0.5)
    assert cp.store.mem.get(Kind.TASK, att["id"])["desired_state"] == "running"

    # removing the service: n1 has no task on `shared` left, its LB IP goes; n2 keeps it for the attachment
    assert (await gw.delete("/v1/services/web")).status_code == 200
    await eventually(lambda: lb_ips(cp, "n1") == {}, timeout=15, what="n1's LB IP released")
    assert lb_ips(cp, "n2") == {shared["id"]: n2_lb}
    r = await gw.delete("/v1/networks/shared")
    assert r.status_code == 409 and "an attachment on node n2" in r.json()["message"]

    # detach: the agent stops it, the reaper deletes it, the address and n2's LB IP are free again
    r = await gw.delete(f"/v1/networks/shared/attachments/{att['id']}")
    assert r.status_code == 200 and r.json()["desired_state"] == "remove"
    await eventually(lambda: cp.store.mem.find(Kind.TASK, att["id"]) is None, timeout=15,
                     what="the detached attachment deleted by the reaper")
    await eventually(lambda: lb_ips(cp, "n2") == {}, timeout=10, what="n2's LB IP released")
    assert (await gw.delete("/v1/networks/shared")).status_code == 200


async def test_lb_ips_survive_an_allocator_failover_and_go_with_a_removed_node(
        plane: tuple[ControlPlane, httpx.AsyncClient]) -> None:
    cp, gw = plane
    r = await gw.post("/v1/networks", json={"name": "shared", "attachable": True})
    shared = r.json()
    for n in ("n1", "n2"):
        r = await gw.post("/v1/networks/shared/attachments", json={"node_id": n})
        assert r.status_code == 201, r.text
    await eventually(lambda: all(shared["id"] in lb_ips(cp, n) for n in ("n1", "n2")), timeout=15,
                     what="both nodes' LB IPs")
    before = {n: lb_ips(cp, n) for n in ("n1", "n2")}

    standby = Allocator(cp.store, cp.bus, SystemClock(), AllocatorSettings(instance="allocator-2", **FAST))
    runner = asyncio.create_task(standby.run())
    try:
        cp.allocator.stop()
        await eventually(lambda: standby.leader.active, timeout=10, what="the standby allocator takes over")
        r = await gw.post("/v1/networks/shared/attachments", json={"node_id": "n1"})
        third = r.json()
        await eventually(lambda: (cp.store.mem.get(Kind.TASK, third["id"]).get("networks")), timeout=10,
                         what="a third attachment allocated by the new allocator")
        await asyncio.sleep(0.3)
        assert {n: lb_ips(cp, n) for n in ("n1", "n2")} == before  # nothing re-allocated
        assert len(held(cp)) == len(set(held(cp))) == 3 + 2

        # n2 goes away for good: removed (force: it is READY); its attachment is orphaned and reaped, and
        # its LB IP goes with the node object
        cp.agents.nodes = ("n1",)
        freed = before["n2"][shared["id"]]
        [n2_task] = [x for x in cp.tasks() if x["node_id"] == "n2"]
        r = await gw.delete("/v1/nodes/n2", params={"force": "true"})
        assert r.status_code == 200, r.text
        await eventually(lambda: [x for x in cp.tasks() if x["node_id"] == "n2"] == [], timeout=10,
                         what="n2's attachment reaped")
        assert freed not in {a for _, a in held(cp)}
        # the two holes (n2's LB IP and its attachment's address) lie below every address still held: the
        # next two allocations take exactly them (lowest free first)
        hole = addresses_of(cp, n2_task)
        got = []
        for _ in range(2):
            r = await gw.post("/v1/networks/shared/attachments", json={"node_id": "n1"})
            got.append(r.json()["id"])
        await eventually(lambda: all(cp.store.mem.get(Kind.TASK, x).get("networks") for x in got), timeout=10,
                         what="two more attachments allocated")
        assert {cp.store.mem.get(Kind.TASK, x)["networks"][0]["addresses"][0] for x in got} == {freed, hole}
        assert len(held(cp)) == len(set(held(cp)))
    finally:
        standby.stop()
        await asyncio.wait_for(runner, 5)
