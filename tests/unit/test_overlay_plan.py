"""The pure plans of the container overlay (agent/overlay_plan.py): derived identifiers, which attachments a
container gets, the peers (neighbour/FDB entries) and VIP balancers of a network from the endpoint table, the
hosts file, and the iproute2 commands."""

from __future__ import annotations

from typing import Any

from agent import overlay_plan as plan
from tests.tools.fake_iproute import recording_overlay

NET = "net1"
INGRESS = "ingress0"


def task(tid: str, address: str, *, ingress: bool = False, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    nets = [{"network_id": INGRESS, "addresses": ["10.255.0.9/16"]}] if ingress else []
    nets.append({"network_id": NET, "addresses": [address + "/24"]})
    return {"id": tid, "spec": {"networks": [{"target": NET}]}, "networks": nets + (extra or [])}


def backend(tid: str, node_addr: str, address: str | None, ports: dict[str, int] | None = None) -> dict[str, Any]:
    return {"task_id": tid, "node_id": "n-" + node_addr, "node_addr": node_addr,
            "addresses": {NET: address} if address else {}, "ports": ports or {}}


def table() -> dict[str, Any]:
    return {"node_addr": "127.0.0.2", "services": [
        {"id": "sweb", "name": "web", "mode": "vip", "networks": [INGRESS, NET],
         "vips": [{"network_id": INGRESS, "addr": "10.255.0.2"}, {"network_id": NET, "addr": "10.0.1.2"}],
         "ports": [{"protocol": "tcp", "target_port": 80, "published_port": 30001, "publish_mode": "ingress"},
                   {"protocol": "udp", "target_port": 53, "published_port": 0, "publish_mode": "ingress"}],
         "backends": [backend("a", "127.0.0.2", "10.0.1.3", {"80/tcp": 41000}),
                      backend("b", "127.0.0.3", "10.0.1.4", {"80/tcp": 42000})]},
        {"id": "sdb", "name": "db", "mode": "dnsrr", "networks": [NET], "vips": [], "ports": [],
         "backends": [backend("c", "127.0.0.3", "10.0.1.10"), backend("d", "127.0.0.4", "10.0.1.6")]},
        {"id": "sother", "name": "other", "mode": "vip", "networks": ["net2"],
         "vips": [{"network_id": "net2", "addr": "10.0.2.2"}], "ports": [],
         "backends": [backend("e", "127.0.0.3", None)]},
    ]}


def test_derived_identifiers_are_stable_and_in_range() -> None:
    assert plan.vni(NET) == plan.vni(NET) and plan.vni(NET) != plan.vni("net2")
    assert all(4096 <= plan.vni(f"n{i}") < 1 << 24 for i in range(200))
    assert plan.vxlan_port("10.1.2.3") == 4789 and plan.vxlan_port("10.1.2.3", 8472) == 8472
    assert plan.vxlan_port("127.0.0.2") == 4792 and plan.vxlan_port("127.0.0.3") == 4793
    assert plan.vxlan_port("not-an-ip") == 4789
    assert plan.mac("10.0.1.3") == "02:42:0a:00:01:03"
    for name in (plan.vxlan_link("node" * 10, NET), *plan.veth_names("node" * 10, "task" * 10, 3)):
        assert name.startswith(plan.PREFIX) and len(name) <= 15  # IFNAMSIZ - 1
    assert plan.veth_names("n", "t", 0) != plan.veth_names("n", "t", 1) != plan.veth_names("m", "t", 1)
    assert plan.ns_name("n1", NET) != plan.ns_name("n2", NET)


def test_attachments_leave_out_the_ingress_network_and_derive_the_gateway() -> None:
    [att] = plan.attachments(task("a", "10.0.1.3", ingress=True))
    assert (att.network_id, att.index, att.address, att.prefixlen, att.gateway) == (NET, 0, "10.0.1.3", 24, "10.0.1.1")
    assert att.cidr == "10.0.1.3/24" and att.subnet == "10.0.1.0/24"
    two = plan.attachments(task("a", "10.0.1.3", extra=[{"network_id": "net2", "addresses": ["10.0.2.7/24"]}]))
    assert [(a.network_id, a.index) for a in two] == [(NET, 0), ("net2", 1)]
    # nothing to attach: no networks, an IPv6 or a malformed address, a /31
    assert plan.attachments({"id": "x"}) == []
    for bad in ("fd00::5/64", "nonsense", "10.0.0.1/31"):
        assert plan.attachments({"id": "x", "spec": {"networks": [{"target": NET}]},
                                 "networks": [{"network_id": NET, "addresses": [bad]}]}) == []


def test_peers_are_the_remote_tasks_of_the_network() -> None:
    peers = plan.peers(table(), NET, "127.0.0.2")
    assert peers == {plan.Peer("10.0.1.4", "02:42:0a:00:01:04", "127.0.0.3", 4793),
                     plan.Peer("10.0.1.10", "02:42:0a:00:01:0a", "127.0.0.3", 4793),
                     plan.Peer("10.0.1.6", "02:42:0a:00:01:06", "127.0.0.4", 4794)}
    assert {p.address for p in plan.peers(table(), NET, "127.0.0.3")} == {"10.0.1.3", "10.0.1.6"}
    assert plan.peers(table(), "net2", "127.0.0.2") == set()  # its task has no address there
    assert plan.peers({}, NET, "127.0.0.2") == set()


def test_vips_and_balancers_of_a_network() -> None:
    assert plan.vips(table(), NET) == {"10.0.1.2"}
    assert plan.vips(table(), "net2") == {"10.0.2.2"}
    routes = plan.vip_routes(table(), NET)
    # only declared tcp ports; the backends are reached at their node's host port
    assert routes == {("10.0.1.2", 80): ("sweb", [("127.0.0.2", 41000), ("127.0.0.3", 42000)])}
    assert plan.vip_routes(table(), "net2") == {}


def test_hosts_file_names_services_vips_and_task_addresses() -> None:
    text = plan.hosts_text(task("a", "10.0.1.3"), table())
    lines = text.splitlines()
    assert "127.0.0.1\tlocalhost" in lines
    assert "10.0.1.2\tweb" in lines and "10.255.0.2\tweb" not in lines  # the VIP on this network only
    assert ["10.0.1.3\ttasks.web", "10.0.1.4\ttasks.web"] == [x for x in lines if x.endswith("tasks.web")]
    # dnsrr: the name gives the task addresses (numerically sorted)
    assert [x for x in lines if x.endswith("\tdb")] == ["10.0.1.6\tdb", "10.0.1.10\tdb"]
    assert not any("other" in x for x in lines)  # not on this task's networks
    assert len(lines) == len(set(lines))


def test_command_plans() -> None:
    cmds = plan.network_commands("sh-ns", "sh-x1", 5000, "127.0.0.2", 4792, "10.0.1.1", 24)
    flat = [" ".join(c) for c in cmds]
    assert flat[0] == "ip netns add sh-ns"
    assert "ip -n sh-ns addr add 10.0.1.1/24 dev br0" in flat
    assert "ip link add sh-x1 mtu 1450 type vxlan id 5000 local 127.0.0.2 dstport 4792 nolearning proxy" in flat
    assert flat.index("ip link set sh-x1 netns sh-ns") < flat.index("ip -n sh-ns link set vx0 master br0 up")
    att = plan.attachments(task("a", "10.0.1.3"))[0]
    flat = [" ".join(c) for c in plan.attach_commands("sh-ns", 4242, "sh-va", "sh-ca", att)]
    assert "ip link set sh-ca netns 4242" in flat
    assert "ip link add sh-va mtu 1450 type veth peer name sh-ca mtu 1450" in flat
    assert "nsenter --net=/proc/4242/ns/net ip link set eth0 address 02:42:0a:00:01:03" in flat
    assert "nsenter --net=/proc/4242/ns/net ip addr add 10.0.1.3/24 dev eth0" in flat
    assert flat[-1] == "nsenter --net=/proc/4242/ns/net ip route replace default via 10.0.1.1 dev eth0"
    second = plan.Attachment("net2", 1, "10.0.2.7", 24, "10.0.2.1")
    assert not any("route" in c for c in plan.attach_commands("sh-ns", 1, "a", "b", second))
    p = plan.Peer("10.0.1.4", "02:42:0a:00:01:04", "127.0.0.3", 4793)
    q = plan.Peer("10.0.1.9", "02:42:0a:00:01:09", "127.0.0.4", 4794)
    flat = [" ".join(c) for c in plan.neighbour_commands("sh-ns", {p}, {q})]
    assert flat == ["ip -n sh-ns neigh del 10.0.1.9 dev vx0",
                    "bridge -n sh-ns fdb del 02:42:0a:00:01:09 dev vx0 dst 127.0.0.4 self",
                    "ip -n sh-ns neigh replace 10.0.1.4 lladdr 02:42:0a:00:01:04 dev vx0 nud permanent",
                    "bridge -n sh-ns fdb replace 02:42:0a:00:01:04 dev vx0 dst 127.0.0.3 port 4793 self permanent"]
    assert [" ".join(c) for c in plan.vip_commands("sh-ns", {"10.0.1.2"}, {"10.0.1.7"})] == [
        "ip -n sh-ns addr del 10.0.1.7/32 dev br0", "ip -n sh-ns addr replace 10.0.1.2/32 dev br0"]


async def test_the_overlay_applies_tables_as_diffs(tmp_path: Any, monkeypatch: Any) -> None:
    """The shell (agent/overlay.py) over a recording fake of iproute2 (the real thing: tests/docker/
    test_docker_overlay.py): a table adds the remote tasks' entries and the VIPs once, the same table again runs
    nothing, a task gone from the table has its entries deleted."""
    from agent import overlay as overlay_mod
    ov, ran = recording_overlay(tmp_path, monkeypatch)
    net = ov.nets[NET] = overlay_mod._Net(NET, plan.ns_name("node1", NET))
    t = table()
    t["services"][0]["ports"] = []  # no balancers (they would listen inside a real namespace)
    await ov.apply(t)
    assert ran[0] == "ip netns list"  # the sweep
    adds = [r for r in ran if "neigh replace" in r or "fdb replace" in r]
    assert len(adds) == 6 and not any("del" in r for r in ran)  # 3 remote tasks: a neighbour and an FDB entry each
    assert f"ip -n {net.ns} addr replace 10.0.1.2/32 dev br0" in ran
    ran.clear()
    await ov.apply(t)
    assert ran == ["ip netns list"]  # nothing changed: nothing run
    t["services"][1]["backends"] = t["services"][1]["backends"][:1]  # task d (10.0.1.6 on 127.0.0.4) is gone
    ran.clear()
    await ov.apply(t)
    assert ran[1:] == [f"ip -n {net.ns} neigh del 10.0.1.6 dev vx0",
                       f"bridge -n {net.ns} fdb del 02:42:0a:00:01:06 dev vx0 dst 127.0.0.4 self"]
    assert ov.status()["networks"][0]["vips"] == ["10.0.1.2"]
