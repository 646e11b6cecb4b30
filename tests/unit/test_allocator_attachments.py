"""The allocator's core over a MemoryStore, for issue 4's last two allocator rows: nodes' load-balancer IPs
(SwarmKit's `allocateNode`, `Node.attachments`) and network attachment tasks (SwarmKit's `AttachNetwork`):
allocation, release, node removal, rebuild after a failover and writes whose outcome is unknown, never
handing an address out twice."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.allocator.core import AllocatorState, Reserved, plan, still_pending, task_dead
from shoal.models.kinds import Kind
from shoal.models.objects import ATTACHMENT_RUNTIME, Obj, new_attachment_task, task_status
from shoal.store import txn as t
from tests.sim.cp_fakes import World, make_node
from tests.unit.test_allocator_network import (
    NOW,
    addresses,
    get,
    ingress_of,
    kill_one,
    network,
    service,
    set_state,
    tasks_for,
    tick,
)


def node(w: World, node_id: str) -> Obj:
    return w.put(Kind.NODE, make_node(node_id), at=tick())


def build(w: World, inflight: tuple[Reserved, ...] = ()) -> AllocatorState:
    return AllocatorState.build(w.mem.list(Kind.TASK), w.mem.list(Kind.NETWORK), w.mem.list(Kind.SERVICE),
                                inflight, nodes=w.mem.list(Kind.NODE))


def settle(w: World, passes: int = 12) -> int:
    for i in range(passes):
        out = plan(w.mem.list(Kind.TASK), build(w), w.now)
        if not out:
            return i
        w.apply(out.ops)
    raise AssertionError("the allocator did not settle")


def assign(w: World, task: Obj, node_id: str, observed: str = "running") -> Obj:
    """What the scheduler and the agent would do: the task lands on `node_id` and runs there."""
    cur = w.mem.get(Kind.TASK, task["id"])
    return w.apply([t.update(Kind.TASK, {**cur, "node_id": node_id,
                                         "status": task_status(observed, w.now)})]).objects[0]


def lb(w: World, node_id: str) -> dict[str, str]:
    """network id -> load-balancer address of a node."""
    return {a["network_id"]: a["address"] for a in w.mem.get(Kind.NODE, node_id).get("attachments") or []}


def all_held(w: World) -> list[tuple[str, str]]:
    used: list[tuple[str, str]] = []
    for x in w.mem.list(Kind.TASK):
        if not task_dead(x):
            used += list(addresses(x).items())
    for s in w.mem.list(Kind.SERVICE):
        used += [(v["network_id"], v["addr"]) for v in (s.get("endpoint") or {}).get("virtual_ips") or []]
    for n in w.mem.list(Kind.NODE):
        used += [(a["network_id"], a["address"]) for a in n.get("attachments") or []]
    return used


def assert_unique(w: World) -> None:
    used = all_held(w)
    assert len(used) == len(set(used)), Counter(used).most_common(3)
    nets = {n["id"]: n for n in w.mem.list(Kind.NETWORK)}
    for nid, addr in used:
        ip = ipaddress.ip_interface(addr).ip
        assert ip in ipaddress.ip_network(nets[nid]["ipam"]["subnet"])
        assert ip != ipaddress.ip_address(nets[nid]["ipam"]["gateway"])


# ---- node load-balancer IPs ----------------------------------------------------------------------------------
def test_a_node_gets_one_lb_ip_per_overlay_network_used_on_it() -> None:
    w = World(NOW)
    back, front = network(w, "back"), network(w, "front")
    node(w, "n1")
    node(w, "n2")
    node(w, "idle")
    svc = service(w, "web", networks=(back["id"], front["id"]), ports=({"target_port": 80},))
    xs = tasks_for(w, svc, 3)
    settle(w)
    assert all(lb(w, n) == {} for n in ("n1", "n2", "idle"))  # allocated tasks are on no node yet
    assign(w, xs[0], "n1")
    assign(w, xs[1], "n1", observed="assigned")  # assigned, not running yet: counts as well
    assign(w, xs[2], "n2")
    settle(w)
    ingress = ingress_of(w)
    for n in ("n1", "n2"):
        assert set(lb(w, n)) == {ingress["id"], back["id"], front["id"]}  # ingress too: its ingress sandbox
    assert lb(w, "idle") == {}
    assert w.mem.get(Kind.NODE, "n1")["attachments"][0].keys() == {"network_id", "address"}
    # lowest free addresses, after the VIP (.2) and the three tasks (.3-.5)
    assert sorted(lb(w, n)[back["id"]] for n in ("n1", "n2")) == ["10.0.0.6/24", "10.0.0.7/24"]
    assert_unique(w)
    assert settle(w) == 0  # stable: nothing rewritten


def test_the_lb_ip_is_released_when_no_task_of_the_network_remains_on_the_node() -> None:
    w = World(NOW)
    back, other = network(w, "back"), network(w, "other")
    node(w, "n1")
    web = service(w, "web", networks=(back["id"],))
    api = service(w, "api", networks=(back["id"], other["id"]))
    [x] = tasks_for(w, web, 1)
    [y] = tasks_for(w, api, 1)
    settle(w)
    assign(w, x, "n1")
    assign(w, y, "n1")
    settle(w)
    before = lb(w, "n1")
    assert set(before) == {back["id"], other["id"]}
    # api's task is shut down but still running: it keeps its addresses, and the node its LB IPs
    set_state(w, y, desired="shutdown")
    settle(w)
    assert lb(w, "n1") == before
    # once it stopped, `other` is no longer used on n1 (web's task still uses `back`, whose LB IP stays)
    set_state(w, y, observed="shutdown")
    settle(w)
    assert lb(w, "n1") == {back["id"]: before[back["id"]]}
    # the freed address is handed out again, to the next holder
    z = tasks_for(w, api, 1)[0]
    settle(w)
    freed = {before[other["id"]], addresses(get(w, Kind.TASK, y))[other["id"]]}
    assert addresses(get(w, Kind.TASK, z))[other["id"]] in freed
    # the last task of `back` on n1 goes away (deleted by the reaper): the node holds nothing
    set_state(w, x, observed="failed", desired="shutdown")
    w.apply([t.delete(Kind.TASK, y["id"])])
    settle(w)
    assert lb(w, "n1") == {}
    assert_unique(w)


def test_a_removed_node_frees_its_lb_ips() -> None:
    w = World(NOW)
    back = network(w, "back", ipam={"subnet": "10.9.0.0/29"})  # .2-.6 usable
    node(w, "n1")
    node(w, "n2")
    svc = service(w, "web", networks=(back["id"],), mode="dnsrr")
    xs = tasks_for(w, svc, 2)
    settle(w)
    assign(w, xs[0], "n1")
    assign(w, xs[1], "n2")
    settle(w)
    gone = lb(w, "n1")[back["id"]]
    # the node is removed (the gateway orphans its task in the same transaction, the reaper deletes it)
    w.apply([t.delete(Kind.NODE, "n1"), t.delete(Kind.TASK, xs[0]["id"])])
    more = tasks_for(w, svc, 2)
    settle(w)
    got = sorted(addresses(get(w, Kind.TASK, x))[back["id"]] for x in more)
    assert gone in got  # its LB IP and its task's address were both free again
    assert_unique(w)


def test_non_overlay_networks_get_no_lb_ip() -> None:
    w = World(NOW)
    local = network(w, "local", driver="bridge")
    node(w, "n1")
    svc = service(w, "web", networks=(local["id"],))
    [x] = tasks_for(w, svc, 1)
    settle(w)
    assign(w, x, "n1")
    settle(w)
    assert addresses(get(w, Kind.TASK, x)) and lb(w, "n1") == {}


def test_rebuild_after_a_failover_keeps_every_lb_ip_and_never_hands_one_out_twice() -> None:
    w = World(NOW)
    back = network(w, "back")
    for n in ("n1", "n2", "n3"):
        node(w, n)
    svc = service(w, "web", networks=(back["id"],))
    xs = tasks_for(w, svc, 3)
    settle(w)
    for x, n in zip(xs, ("n1", "n2", "n3"), strict=True):
        assign(w, x, n)
    settle(w)
    before = {n: lb(w, n) for n in ("n1", "n2", "n3")}
    # A new allocator (nothing in memory) rebuilds from the store: nothing to write, nothing moves...
    assert not plan(w.mem.list(Kind.TASK), build(w), w.now)
    # ...and new tasks never get an address a node holds
    tasks_for(w, svc, 5)
    settle(w)
    assert {n: lb(w, n) for n in ("n1", "n2", "n3")} == before
    assert_unique(w)


def _first_node_write(w: World) -> tuple[Obj, Obj, Any]:
    """Network `back`, node n1 and a service with one task on it, assigned to n1: the allocator's next plan (which
    writes n1's attachment), with the network and the service."""
    back = network(w, "back")
    node(w, "n1")
    svc = service(w, "web", networks=(back["id"],))
    [x] = tasks_for(w, svc, 1)
    settle(w)
    assign(w, x, "n1")
    return back, svc, plan(w.mem.list(Kind.TASK), build(w), w.now)


def test_a_node_write_whose_answer_was_lost_keeps_its_addresses_taken() -> None:
    w = World(NOW)
    back, svc, out = _first_node_write(w)
    [g] = out.groups
    assert isinstance(g.note, Reserved) and g.note.kind == Kind.NODE
    lost = g.note.obj["attachments"][0]["address"]
    inflight = still_pending({(g.note.kind, g.note.id): g.note}, w.mem.find)
    # the write's outcome is unknown: the next pass plans the same write and gives new tasks other addresses
    more = tasks_for(w, svc, 3)
    again = plan(w.mem.list(Kind.TASK), build(w, tuple(inflight.values())), w.now)
    node_ops = [op for op in again.ops if op["kind"] == Kind.NODE]
    assert [op["object"]["attachments"] for op in node_ops] == [g.note.obj["attachments"]]
    task_addrs = [a["addresses"][0] for op in again.ops if op["kind"] == Kind.TASK
                  for a in op["object"].get("networks") or []]
    assert len(task_addrs) == len(more) and lost not in task_addrs
    # the late write lands; another node write (the dispatcher's) moves the version: nothing is pending
    w.apply(g.ops)
    assert not still_pending(inflight, w.mem.find)
    w.apply([op for op in again.ops if op["kind"] == Kind.TASK])
    settle(w)
    assert lb(w, "n1") == {back["id"]: lost}
    assert_unique(w)


def test_a_node_changed_by_someone_else_is_planned_again_from_its_new_version() -> None:
    w = World(NOW)
    back, _, out = _first_node_write(w)
    # the dispatcher marks the node DOWN meanwhile: the allocator's write fails its version precondition
    cur = w.mem.get(Kind.NODE, "n1")
    w.apply([t.update(Kind.NODE, {**cur, "status": {**cur["status"], "state": "down"}})])
    try:
        w.apply(out.ops)
        raise AssertionError("the stale node write must fail")
    except Exception as e:  # VersionConflict
        assert "version" in str(e)
    settle(w)
    n1 = w.mem.get(Kind.NODE, "n1")
    assert n1["status"]["state"] == "down" and set(lb(w, "n1")) == {back["id"]}  # both changes kept


# ---- network attachment tasks --------------------------------------------------------------------------------
def test_an_attachment_task_gets_an_address_and_its_node_an_lb_ip() -> None:
    w = World(NOW)
    net = network(w, "shared", attachable=True)
    node(w, "n1")
    service(w, "web", networks=(net["id"],))  # services are tracked: the serviceless task still allocates
    x = w.put(Kind.TASK, new_attachment_task(net["id"], "n1", w.now, container_id="c0ffee", aliases=["db"]),
              at=tick())
    assert x["runtime"] == ATTACHMENT_RUNTIME and x["service_id"] == ""
    settle(w)
    x = get(w, Kind.TASK, x)
    assert x["status"]["state"] == "pending" and x["node_id"] == "n1"
    [att] = x["networks"]
    assert att["network_id"] == net["id"] and att["aliases"] == ["db"]
    # pre-bound to its node: the node's LB IP comes as soon as the task holds its address
    assert set(lb(w, "n1")) == {net["id"]}
    assert lb(w, "n1")[net["id"]] != att["addresses"][0]
    # detached: desired REMOVE, then the agent stops it — address and LB IP are free again
    set_state(w, x, desired="remove")
    set_state(w, x, observed="shutdown")
    settle(w)
    assert lb(w, "n1") == {}
    assert all_held(w) == [(net["id"], "10.0.0.2/24")]  # only web's VIP is left


# ---- the invariant, under random histories -------------------------------------------------------------------
WEIGHTS = {"tasks": 3, "attach": 2, "land": 4, "kill": 2, "node_rm": 1, "node_add": 1, "settle": 3, "lose": 2}


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_no_address_is_held_twice_with_nodes_tasks_and_lost_writes(seed: int) -> None:
    """Seeded random histories: tasks and attachment tasks created, landing on nodes, killed; nodes added and
    removed; passes whose answers are lost and commit later — no address is ever held by two of tasks, VIPs
    and nodes' load-balancer IPs, and after settling every node holds exactly the LB IPs its tasks need."""
    rng = random.Random(seed)
    w = World(NOW)
    nets = [network(w, "a", ipam={"subnet": "10.1.0.0/27"}, attachable=True), network(w, "b")]
    nodes = ["n0", "n1", "n2"]
    for name in nodes:
        node(w, name)
    svc = service(w, "web", networks=(nets[0]["id"], nets[1]["id"]))
    late: list[list[t.Op]] = []
    inflight: dict[tuple[str, str], Reserved] = {}
    serial = 3
    for _ in range(50):
        what = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        n = rng.randrange(10)
        if what == "tasks":
            tasks_for(w, svc, 1 + n % 2)
        elif what == "attach" and nodes:
            w.put(Kind.TASK, new_attachment_task(nets[0]["id"], nodes[n % len(nodes)], w.now), at=tick())
        elif what == "land" and nodes:
            waiting = [x for x in w.mem.list(Kind.TASK) if x["status"]["state"] == "pending"]
            if waiting:
                x = waiting[n % len(waiting)]
                assign(w, x, x.get("node_id") or nodes[n % len(nodes)])
        elif what == "kill":
            kill_one(w, n)
        elif what == "node_rm" and nodes:
            gone = nodes.pop(n % len(nodes))
            orphans = [x for x in w.mem.list(Kind.TASK) if x.get("node_id") == gone]
            w.apply([t.delete(Kind.NODE, gone), *(t.delete(Kind.TASK, x["id"]) for x in orphans)])
        elif what == "node_add":
            nodes.append(f"n{serial}")
            node(w, nodes[-1])
            serial += 1
        elif what in ("settle", "lose"):
            for _ in range(1 if what == "lose" else 4):
                inflight = still_pending(inflight, w.mem.find)
                out = plan(w.mem.list(Kind.TASK), build(w, tuple(inflight.values())), w.now)
                for g in out.groups:
                    if isinstance(g.note, Reserved):
                        inflight[(g.note.kind, g.note.id)] = g.note
                if what == "lose":
                    late.append(out.ops)
                    continue
                for op in out.ops:
                    try:
                        w.apply([op])
                    except Exception:  # stale (a late write landed first): planned again next pass
                        pass
        if late and rng.random() < 0.3:
            for op in late.pop(0):
                try:
                    w.apply([op])
                except Exception:  # stale by now: it can never land
                    pass
        assert_unique(w)
    # drain: every lost write either lands or is dropped, then the allocator settles on the exact LB IPs
    for ops in late:
        for op in ops:
            try:
                w.apply([op])
            except Exception:
                pass
    settle(w)
    assert_unique(w)
    for name in nodes:
        used = {a for x in w.mem.list(Kind.TASK) if x.get("node_id") == name and not task_dead(x)
                for a in addresses(x)}
        assert set(lb(w, name)) == used
