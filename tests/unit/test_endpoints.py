"""The endpoint table (shoal/endpoints.py): backends are exactly the RUNNING tasks on READY nodes, reached at
node address : reported host port; dnsrr lists task addresses; a node's table carries what it needs."""

from __future__ import annotations

from typing import Any

from shoal import endpoints as ep


def node(nid: str, addr: str, state: str = "ready") -> dict[str, Any]:
    return {"id": nid, "status": {"state": state, "addr": addr}}


def service(sid: str, name: str, *, mode: str = "vip", ports: list[dict[str, Any]] | None = None,
            nets: list[str] | None = None) -> dict[str, Any]:
    ports = ports if ports is not None else [{"protocol": "tcp", "target_port": 8080, "published_port": 30001,
                                              "publish_mode": "ingress"}]
    vips = [{"network_id": n, "addr": f"10.0.{i}.2/24"} for i, n in enumerate(nets or [])]
    return {"id": sid, "spec": {"name": name, "endpoint": {"mode": mode},
                                "task": {"networks": [{"target": n} for n in nets or []]}},
            "endpoint": {"ports": ports, "virtual_ips": vips if mode == "vip" else []}}


def task(tid: str, sid: str, nid: str, state: str = "running", *, host_port: int | None = 40000,
         desired: str = "running", addr: str = "10.0.0.5/24", net: str = "n1") -> dict[str, Any]:
    status: dict[str, Any] = {"state": state}
    if host_port is not None:
        status["port_status"] = {"ports": [{"protocol": "tcp", "target_port": 8080, "published_port": host_port}]}
    return {"id": tid, "service_id": sid, "node_id": nid, "desired_state": desired, "status": status,
            "networks": [{"network_id": net, "addresses": [addr]}]}


NODES = [node("a", "127.0.0.2"), node("b", "127.0.0.3")]


def test_running_tasks_are_backends_reached_at_node_address_and_host_port() -> None:
    rows = ep.table([service("s1", "web")], [task("t1", "s1", "a", host_port=40001),
                                            task("t2", "s1", "b", host_port=40002)], NODES)
    routes = ep.ingress_routes({"services": rows})
    assert routes == {("tcp", 30001): ("s1", [("127.0.0.2", 40001), ("127.0.0.3", 40002)])}


def test_a_task_leaving_running_leaves_the_table_at_once() -> None:
    tasks = [task("t1", "s1", "a", host_port=40001), task("t2", "s1", "b", host_port=40002)]
    for gone in (task("t2", "s1", "b", "failed", host_port=40002),
                 task("t2", "s1", "b", "running", host_port=40002, desired="shutdown"),
                 task("t2", "s1", "b", "starting", host_port=40002)):
        rows = ep.table([service("s1", "web")], [tasks[0], gone], NODES)
        assert [b["task_id"] for b in rows[0]["backends"]] == ["t1"]
    # a task on a node that is DOWN is no backend either
    rows = ep.table([service("s1", "web")], tasks, [NODES[0], node("b", "127.0.0.3", "down")])
    assert [b["task_id"] for b in rows[0]["backends"]] == ["t1"]


def test_task_without_host_port_is_listed_but_unreachable() -> None:
    rows = ep.table([service("s1", "web")], [task("t1", "s1", "a", host_port=None)], NODES)
    assert rows[0]["backends"][0]["addresses"] == {"n1": "10.0.0.5"}
    assert ep.ingress_routes({"services": rows})[("tcp", 30001)] == ("s1", [])


def test_dnsrr_returns_task_addresses() -> None:
    svc = service("s2", "db", mode="dnsrr", nets=["n1"],
                  ports=[{"protocol": "tcp", "target_port": 8080, "published_port": 0, "publish_mode": "host"}])
    rows = ep.table([svc], [task("t1", "s2", "a", addr="10.0.0.5/24", host_port=40001),
                            task("t2", "s2", "b", addr="10.0.0.6/24", host_port=40002)], NODES)
    t = {"services": rows}
    assert ep.vip_routes(t) == {}  # no VIP
    hosts = ep.hosts_lines(t)
    assert "127.0.0.2\tdb" in hosts and "127.0.0.3\tdb" in hosts and "127.0.0.2\ttasks.db" in hosts
    found = ep.discovery(t)["db"]
    assert found["vip"] is None and found["addresses"] == ["10.0.0.5", "10.0.0.6"]
    assert found["tasks"]["8080/tcp"] == ["127.0.0.2:40001", "127.0.0.3:40002"]


def test_vip_service_gets_one_local_vip_everywhere() -> None:
    svc = service("s3", "api", nets=["n1"],
                  ports=[{"protocol": "tcp", "target_port": 8080, "published_port": 0, "publish_mode": "host"}])
    rows = ep.table([svc], [task("t1", "s3", "a", host_port=40001)], NODES)
    vip = ep.local_vip("s3")
    assert vip.startswith("127.") and vip not in ("127.0.0.1", "127.0.0.2")
    assert ep.vip_routes({"services": rows}) == {(vip, 8080): ("s3", [("127.0.0.2", 40001)])}
    assert f"{vip}\tapi" in ep.hosts_lines({"services": rows})


def test_node_table_carries_ingress_services_and_those_of_its_networks_only() -> None:
    ingress = service("s1", "web")
    mine = service("s2", "api", nets=["n1"], ports=[])
    other = service("s3", "other", nets=["n9"], ports=[])
    tasks = [task("t1", "s2", "a", net="n1"), task("t9", "s3", "b", net="n9")]
    rows = ep.table([ingress, mine, other], tasks, NODES)
    got = ep.node_table(rows, "a", "127.0.0.2", tasks)
    assert [s["name"] for s in got["services"]] == ["api", "web"] and got["node_addr"] == "127.0.0.2"
    # versioned by content: the same table, the same version; a change, another
    assert ep.node_table(rows, "a", "127.0.0.2", tasks)["version"] == got["version"]
    rows2 = ep.table([ingress, mine, other], [task("t1", "s2", "a", "failed", net="n1"), tasks[1]], NODES)
    assert ep.node_table(rows2, "a", "127.0.0.2", tasks)["version"] != got["version"]


def test_bad_port_status_is_ignored() -> None:
    t = task("t1", "s1", "a")
    t["status"]["port_status"] = {"ports": [{"target_port": "x"}, {"target_port": 8080, "published_port": 70000}]}
    assert ep.host_ports(t) == {}


def test_networks_by_node_is_node_networks_of_each_node() -> None:
    tasks = [task("t1", "s1", "a", net="n1"), task("t2", "s1", "a", "starting", net="n2"),
             task("t3", "s1", "b", "failed", net="n3"), task("t4", "s1", "b", desired="shutdown", net="n4")]
    by_node = ep.networks_by_node(tasks)
    assert by_node == {"a": {"n1", "n2"}} == {n: ep.node_networks(n, tasks) for n in ("a",)}
    assert ep.node_networks("b", tasks) == set()


def test_services_no_node_receives_can_be_left_out_of_the_table() -> None:
    ingress, on_net = service("s1", "web"), service("s2", "api", nets=["n1"], ports=[])
    host_only = service("s3", "h", ports=[{"protocol": "tcp", "target_port": 80, "published_port": 8080,
                                           "publish_mode": "host"}])
    plain = service("s4", "batch", ports=[])
    assert [ep.distributed(s) for s in (ingress, on_net, host_only, plain)] == [True, True, False, False]
    tasks = [task("t1", "s2", "a", net="n1"), task("t3", "s3", "a", net="n7"), task("t4", "s4", "b", net="n8")]
    every = ep.table([ingress, on_net, host_only, plain], tasks, NODES)
    kept = ep.table([s for s in (ingress, on_net, host_only, plain) if ep.distributed(s)], tasks, NODES)
    for nid, addr in (("a", "127.0.0.2"), ("b", "127.0.0.3")):  # every node's table is the same without them
        assert ep.node_table(kept, nid, addr, tasks) == ep.node_table(every, nid, addr, tasks)
