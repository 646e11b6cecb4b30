"""Network attachments and nodes' load-balancer IPs end to end, on real `shoal up` processes (process runtime),
through the `shoal` CLI and the gateway: an attachable network, an attachment task that a real agent holds
RUNNING with an address, LB IPs on the nodes running a service's tasks on an overlay network, and every
address released after the service is removed and the attachment detached."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from tests.e2e.harness import Cluster, eventually, items

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


@pytest.fixture
def cluster(shared: Cluster) -> Cluster:
    """The session's shared cluster (tests/e2e/conftest.py): this module only creates its own objects and reads."""
    return shared


def lb_ips(cluster: Cluster, network_id: str) -> dict[str, str]:
    """node id -> its load-balancer IP on the network."""
    out = {}
    for node in cluster.nodes():
        for att in node.get("attachments") or []:
            if att["network_id"] == network_id:
                out[node["id"]] = att["address"]
    return out


def network(cluster: Cluster, ref: str) -> dict[str, Any]:
    r = cluster.http.get(f"/v1/networks/{ref}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_attachment_task_and_node_lb_ips_on_real_processes(cluster: Cluster) -> None:
    cluster.cli("network", "create", "--attachable", "shared")
    cluster.cli("network", "create", "back")
    shared = eventually(lambda: network(cluster, "shared") if network(cluster, "shared")["ipam"] else None, 20,
                        "a subnet for shared")
    back = network(cluster, "back")
    nodes = cluster.nodes()
    assert len(nodes) == 2
    first, second = sorted(nodes, key=lambda n: n["description"]["hostname"])

    # a plain overlay network is not attachable: a clear refusal, nothing created
    refused = cluster.cli("network", "attach", "--node", first["description"]["hostname"], "back", check=False)
    assert refused.returncode == 1 and "network 'back' is not attachable" in refused.stderr

    # an attachment on the first node: a real agent holds it RUNNING (no process), with an address on `shared`
    done = cluster.cli("network", "attach", "--node", first["description"]["hostname"], "--container", "c0ffee",
                       "--alias", "db", "shared")
    tid = done.stdout.strip()

    def attached() -> dict[str, Any] | None:
        task = dict(cluster.http.get(f"/v1/tasks/{tid}").json())
        return task if task["status"]["state"] == "running" and task.get("networks") else None

    task = eventually(attached, 30, "the attachment task running with an address")
    assert task["node_id"] == first["id"] and task["service_id"] == "" and task["runtime"] == "attachment"
    assert task["status"]["pid"] is None  # nothing runs: the agent holds the attachment
    [addr] = task["networks"]
    assert addr["network_id"] == shared["id"] and addr["aliases"] == ["db"]
    assert ipaddress.ip_interface(addr["addresses"][0]).ip in ipaddress.ip_network(shared["ipam"]["subnet"])
    listed = items(cluster.http.get("/v1/networks/shared/attachments").json())
    assert [x["id"] for x in listed] == [tid]
    # its node gets a load-balancer IP on `shared`, shown by `GET /v1/nodes/{id}` and `shoal node inspect`
    lb = eventually(lambda: lb_ips(cluster, shared["id"]), 20, "a load-balancer IP on shared")
    assert set(lb) == {first["id"]} and lb[first["id"]] != addr["addresses"][0]
    inspected = cluster.cli("node", "inspect", first["id"]).stdout
    assert lb[first["id"]] in inspected
    # the network cannot go while the attachment holds it
    busy = cluster.cli("network", "rm", "shared", check=False)
    assert busy.returncode == 1 and f"in use by task {tid}" in busy.stderr

    # a service on `back`, one task per node: each node gets a load-balancer IP on `back`
    r = cluster.http.post("/v1/services", json={
        "name": "web", "mode": {"replicated": {"replicas": 2}},
        "task": {"process": {"command": ["sleep", "300"], "stop_grace_period": "1s"},
                 "networks": [{"target": "back"}]}})
    assert r.status_code == 201, r.text
    running = cluster.wait_running("web", 2, timeout=30)
    assert {x["node_id"] for x in running} == {first["id"], second["id"]}
    back_lb = eventually(lambda: (lambda m: m if len(m) == 2 else None)(lb_ips(cluster, back["id"])), 20,
                         "load-balancer IPs on back for both nodes")
    held = [a for x in running for a in x["networks"][0]["addresses"]] + list(back_lb.values())
    vips = [v["addr"] for v in cluster.http.get("/v1/services/web").json()["endpoint"]["virtual_ips"]]
    assert len(set(held + vips)) == len(held) + len(vips) == 5  # 2 tasks, 2 LB IPs, 1 VIP: all distinct

    # the service goes: once its tasks stopped, the nodes' LB IPs on `back` are released; `shared` keeps its one
    cluster.cli("service", "rm", "web")
    eventually(lambda: lb_ips(cluster, back["id"]) == {}, 30, "LB IPs on back released")
    assert lb_ips(cluster, shared["id"]) == lb

    # detach: the agent stops the attachment, the reaper deletes it, its node's LB IP goes, the network can go
    assert cluster.cli("network", "detach", "shared", tid).stdout.strip() == tid
    eventually(lambda: cluster.http.get(f"/v1/tasks/{tid}").status_code == 404, 30, "the attachment deleted")
    eventually(lambda: lb_ips(cluster, shared["id"]) == {}, 20, "the LB IP on shared released")
    cluster.cli("network", "rm", "shared", "back")
    assert items(cluster.http.get("/v1/networks").json()) == []
