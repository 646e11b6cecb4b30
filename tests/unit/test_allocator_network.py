"""The allocator's core over a MemoryStore (every plan applied as a real transaction, so its version
preconditions are checked): subnets, the ingress network, VIPs, ingress ports, task addresses, release timing,
rebuild after a failover, and writes whose outcome is unknown."""

from __future__ import annotations

import ipaddress
import itertools
import random
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.allocator.core import (
    PENDING_MESSAGE,
    AllocatorState,
    Reserved,
    plan,
    still_pending,
    task_dead,
)
from shoal.ids import new_id
from shoal.models.kinds import Kind
from shoal.models.network_spec import NetworkSpec
from shoal.models.objects import Obj, new_task, task_status
from shoal.models.specs import ServiceSpec
from shoal.store import txn as t
from tests.sim.cp_fakes import World

NOW = 1000.0
_clock = itertools.count(1)


def tick() -> float:
    """A creation time later than every earlier one (the allocator takes the oldest first)."""
    return NOW + next(_clock) * 1e-3


def network(w: World, name: str, **spec: Any) -> Obj:
    return w.put(Kind.NETWORK, {"id": new_id(), "spec": NetworkSpec.model_validate({"name": name, **spec}).wire(),
                                "ipam": None}, at=tick())


def service(w: World, name: str, *, networks: tuple[str, ...] = (), ports: tuple[dict[str, Any], ...] = (),
            mode: str = "vip") -> Obj:
    spec = ServiceSpec.model_validate({
        "name": name, "task": {"process": {"command": ["sleep", "1"]},
                               "networks": [{"target": n, "aliases": [f"{name}-alias"]} for n in networks]},
        "endpoint": {"mode": mode, "ports": list(ports)}}).wire()
    return w.put(Kind.SERVICE, {"id": new_id(), "spec": spec, "spec_version": 1, "previous_spec": None}, at=tick())


def tasks_for(w: World, svc: Obj, n: int) -> list[Obj]:
    svc = w.mem.get(Kind.SERVICE, svc["id"])
    return [w.put(Kind.TASK, new_task(svc, slot, w.now), at=tick()) for slot in range(1, n + 1)]


def build(w: World, inflight: tuple[Reserved, ...] = ()) -> AllocatorState:
    return AllocatorState.build(w.mem.list(Kind.TASK), w.mem.list(Kind.NETWORK), w.mem.list(Kind.SERVICE),
                                inflight)


def settle(w: World, passes: int = 10, limit: int = 199) -> int:
    """Run allocator passes (each applied as one transaction) until a pass plans nothing; the number of passes
    that wrote something."""
    for i in range(passes):
        out = plan(w.mem.list(Kind.TASK), build(w), w.now, limit=limit)
        if not out:
            return i
        w.apply(out.ops)
    raise AssertionError("the allocator did not settle")


def get(w: World, kind: str, obj: Obj) -> Obj:
    return w.mem.get(kind, obj["id"])


def addresses(task: Obj) -> dict[str, str]:
    return {a["network_id"]: a["addresses"][0] for a in task.get("networks") or []}


def set_state(w: World, task: Obj, observed: str | None = None, desired: str | None = None) -> Obj:
    cur = w.mem.get(Kind.TASK, task["id"])
    new = dict(cur)
    if observed:
        new["status"] = task_status(observed, w.now)
    if desired:
        new["desired_state"] = desired
    return w.apply([t.update(Kind.TASK, new)]).objects[0]


def kill_one(w: World, n: int) -> None:
    """The `n`-th (modulo) task still alive fails, and is to be shut down."""
    live = [x for x in w.mem.list(Kind.TASK) if not task_dead(x)]
    if live:
        set_state(w, live[n % len(live)], "failed", "shutdown")


def ingress_of(w: World) -> Obj:
    [ingress] = [n for n in w.mem.list(Kind.NETWORK) if n["spec"].get("ingress")]
    return ingress


# ---- networks ------------------------------------------------------------------------------------------------
def test_networks_get_lowest_free_24s_and_user_subnets_as_given() -> None:
    w = World(NOW)
    a = network(w, "a")
    user = network(w, "user", ipam={"subnet": "10.0.1.0/24", "gateway": "10.0.1.254"})
    plain_gw = network(w, "plain-gw", ipam={"subnet": "192.168.7.0/24"})
    b = network(w, "b")
    settle(w)
    assert get(w, Kind.NETWORK, a)["ipam"] == {"subnet": "10.0.0.0/24", "gateway": "10.0.0.1"}
    assert get(w, Kind.NETWORK, user)["ipam"] == {"subnet": "10.0.1.0/24", "gateway": "10.0.1.254"}
    assert get(w, Kind.NETWORK, plain_gw)["ipam"] == {"subnet": "192.168.7.0/24", "gateway": "192.168.7.1"}
    assert get(w, Kind.NETWORK, b)["ipam"] == {"subnet": "10.0.2.0/24", "gateway": "10.0.2.1"}  # skips the user's
    # the user's subnet is never handed out again, nor anything overlapping it
    c = network(w, "c")
    settle(w)
    assert get(w, Kind.NETWORK, c)["ipam"]["subnet"] == "10.0.3.0/24"


def test_overlapping_user_subnet_is_refused_and_its_tasks_say_why() -> None:
    w = World(NOW)
    network(w, "first", ipam={"subnet": "10.0.0.0/16"})
    settle(w)
    late = network(w, "late", ipam={"subnet": "10.0.5.0/24"})
    svc = service(w, "web", networks=(late["id"],))
    [x] = tasks_for(w, svc, 1)
    settle(w)
    assert get(w, Kind.NETWORK, late)["ipam"] is None
    x = get(w, Kind.TASK, x)
    assert x["status"]["state"] == "new"
    assert x["status"]["err"] == ("network 'late' has no subnet: subnet 10.0.5.0/24 overlaps subnet 10.0.0.0/16 of "
                                  "network 'first'")


def test_task_addresses_vips_and_aliases() -> None:
    w = World(NOW)
    back = network(w, "back")
    svc = service(w, "web", networks=(back["id"],))
    xs = tasks_for(w, svc, 3)
    settle(w)
    svc = get(w, Kind.SERVICE, svc)
    assert svc["endpoint"]["virtual_ips"] == [{"network_id": back["id"], "addr": "10.0.0.2/24"}]
    assert svc["endpoint"]["ports"] == []
    got = [get(w, Kind.TASK, x) for x in xs]
    assert all(x["status"]["state"] == "pending" and x["status"]["message"] == PENDING_MESSAGE for x in got)
    assert sorted(addresses(x)[back["id"]] for x in got) == ["10.0.0.3/24", "10.0.0.4/24", "10.0.0.5/24"]
    assert got[0]["networks"][0]["aliases"] == ["web-alias"]


def test_dnsrr_has_no_vips_and_switching_to_it_frees_them() -> None:
    w = World(NOW)
    back = network(w, "back")
    svc = service(w, "web", networks=(back["id"],))
    settle(w)
    assert get(w, Kind.SERVICE, svc)["endpoint"]["virtual_ips"][0]["addr"] == "10.0.0.2/24"
    cur = get(w, Kind.SERVICE, svc)
    spec = {**cur["spec"], "endpoint": {"mode": "dnsrr", "ports": []}}
    w.apply([t.update(Kind.SERVICE, {**cur, "spec": spec})])
    settle(w)
    assert get(w, Kind.SERVICE, svc)["endpoint"]["virtual_ips"] == []
    other = service(w, "other", networks=(back["id"],))
    settle(w)
    assert get(w, Kind.SERVICE, other)["endpoint"]["virtual_ips"][0]["addr"] == "10.0.0.2/24"  # freed, reused


def test_vips_of_networks_removed_from_the_spec_are_freed_others_kept() -> None:
    w = World(NOW)
    a, b = network(w, "a"), network(w, "b")
    svc = service(w, "web", networks=(a["id"], b["id"]))
    settle(w)
    vips = {v["network_id"]: v["addr"] for v in get(w, Kind.SERVICE, svc)["endpoint"]["virtual_ips"]}
    assert vips == {a["id"]: "10.0.0.2/24", b["id"]: "10.0.1.2/24"}
    cur = get(w, Kind.SERVICE, svc)
    spec = {**cur["spec"], "task": {**cur["spec"]["task"], "networks": [{"target": b["id"], "aliases": []}]}}
    w.apply([t.update(Kind.SERVICE, {**cur, "spec": spec})])
    settle(w)
    assert get(w, Kind.SERVICE, svc)["endpoint"]["virtual_ips"] == [{"network_id": b["id"], "addr": "10.0.1.2/24"}]
    other = service(w, "other", networks=(a["id"],))
    settle(w)
    assert get(w, Kind.SERVICE, other)["endpoint"]["virtual_ips"] == [{"network_id": a["id"], "addr": "10.0.0.2/24"}]


# ---- ingress -------------------------------------------------------------------------------------------------
def test_ingress_port_creates_the_ingress_network_assigns_a_dynamic_port_and_a_vip() -> None:
    w = World(NOW)
    back = network(w, "back")
    svc = service(w, "web", networks=(back["id"],), ports=({"target_port": 80},))
    [x] = tasks_for(w, svc, 1)
    settle(w)
    ingress = ingress_of(w)
    assert ingress["spec"]["name"] == "ingress" and ingress["spec"]["attachable"] is False
    assert ingress["ipam"] == {"subnet": "10.255.0.0/16", "gateway": "10.255.0.1"}
    ep = get(w, Kind.SERVICE, svc)["endpoint"]
    assert [(p["target_port"], p["published_port"], p["publish_mode"]) for p in ep["ports"]] == [(80, 30000, "ingress")]
    assert ep["virtual_ips"] == [{"network_id": ingress["id"], "addr": "10.255.0.2/16"},
                                 {"network_id": back["id"], "addr": "10.0.0.2/24"}]
    x = get(w, Kind.TASK, x)
    assert [a["network_id"] for a in x["networks"]] == [ingress["id"], back["id"]]  # ingress first
    assert x["networks"][0]["aliases"] == [] and addresses(x)[ingress["id"]] == "10.255.0.3/16"
    assert x["endpoint"]["ports"] == ep["ports"]  # for the scheduler's host-port filter
    # a second service: the ingress network is reused, the next port is taken
    second = service(w, "api", ports=({"target_port": 8080},))
    settle(w)
    assert len([n for n in w.mem.list(Kind.NETWORK) if n["spec"].get("ingress")]) == 1
    assert get(w, Kind.SERVICE, second)["endpoint"]["ports"][0]["published_port"] == 30001


def test_user_ports_are_reserved_and_a_conflict_waits_with_a_reason() -> None:
    w = World(NOW)
    first = service(w, "first", ports=({"target_port": 80, "published_port": 8080},))
    settle(w)
    clash = service(w, "clash", ports=({"target_port": 81, "published_port": 8080},))
    udp = service(w, "udp", ports=({"target_port": 81, "published_port": 8080, "protocol": "udp"},))
    [x] = tasks_for(w, clash, 1)
    settle(w)
    assert "endpoint" not in get(w, Kind.SERVICE, clash)
    assert get(w, Kind.SERVICE, udp)["endpoint"]["ports"][0]["published_port"] == 8080  # other protocol: fine
    x = get(w, Kind.TASK, x)
    assert x["status"]["state"] == "new"
    assert x["status"]["err"] == "ingress port 8080/tcp is already in use by service 'first'"
    assert settle(w) == 0  # the reason is written once: no write loop
    w.apply([t.delete(Kind.SERVICE, first["id"])])  # deleting the owner frees the port
    settle(w)
    assert get(w, Kind.SERVICE, clash)["endpoint"]["ports"][0]["published_port"] == 8080
    assert get(w, Kind.TASK, x)["status"]["state"] == "pending"


def test_dynamic_ports_survive_updates_and_removed_ports_are_freed() -> None:
    w = World(NOW)
    svc = service(w, "web", ports=({"target_port": 80}, {"target_port": 443}))
    settle(w)
    assert [p["published_port"] for p in get(w, Kind.SERVICE, svc)["endpoint"]["ports"]] == [30000, 30001]
    cur = get(w, Kind.SERVICE, svc)
    spec = {**cur["spec"], "endpoint": {"mode": "vip", "ports": [{"target_port": 443, "protocol": "tcp",
                                                                 "publish_mode": "ingress", "published_port": 0},
                                                                {"target_port": 9000, "protocol": "tcp",
                                                                 "publish_mode": "ingress", "published_port": 0}]}}
    w.apply([t.update(Kind.SERVICE, {**cur, "spec": spec})])
    settle(w)
    ports = {p["target_port"]: p["published_port"] for p in get(w, Kind.SERVICE, svc)["endpoint"]["ports"]}
    assert ports[443] == 30001  # kept
    assert ports[9000] == 30002  # 30000 (port 80's) is not reused within the same pass, but is free afterwards
    other = service(w, "other", ports=({"target_port": 1},))
    settle(w)
    assert get(w, Kind.SERVICE, other)["endpoint"]["ports"][0]["published_port"] == 30000


def test_host_mode_ports_are_not_allocated_but_never_picked_for_ingress() -> None:
    w = World(NOW)
    host = service(w, "host", ports=({"target_port": 80, "published_port": 30000, "publish_mode": "host"},
                                      {"target_port": 81, "publish_mode": "host"}), mode="dnsrr")
    settle(w)
    ep = get(w, Kind.SERVICE, host)["endpoint"]
    assert [p["published_port"] for p in ep["ports"]] == [30000, 0] and ep["virtual_ips"] == []
    assert not [n for n in w.mem.list(Kind.NETWORK) if n["spec"].get("ingress")]  # no ingress port: no ingress
    ing = service(w, "ing", ports=({"target_port": 80},))
    settle(w)
    assert get(w, Kind.SERVICE, ing)["endpoint"]["ports"][0]["published_port"] == 30001


def test_a_user_network_named_ingress_blocks_ingress_with_a_reason() -> None:
    w = World(NOW)
    network(w, "Ingress")
    svc = service(w, "web", ports=({"target_port": 80},))
    [x] = tasks_for(w, svc, 1)
    settle(w)
    err = get(w, Kind.TASK, x)["status"]["err"]
    assert err.startswith("cannot create the ingress network: network 'Ingress'") and err.endswith("remove it")


def test_pool_exhaustion_keeps_tasks_new_with_a_reason() -> None:
    w = World(NOW)
    tiny = network(w, "tiny", ipam={"subnet": "10.5.0.0/29"})  # 5 usable addresses after the gateway
    svc = service(w, "web", networks=(tiny["id"],))
    xs = tasks_for(w, svc, 6)
    settle(w)
    states = Counter(get(w, Kind.TASK, x)["status"]["state"] for x in xs)
    assert states == {"pending": 4, "new": 2}  # one address is the service's VIP
    stuck = [get(w, Kind.TASK, x) for x in xs if get(w, Kind.TASK, x)["status"]["state"] == "new"]
    assert stuck[0]["status"]["err"] == "no free IP address left in network 'tiny' (10.5.0.0/29)"


# ---- release timing ------------------------------------------------------------------------------------------
def test_addresses_are_held_until_the_task_is_dead_or_deleted() -> None:
    w = World(NOW)
    tiny = network(w, "tiny", ipam={"subnet": "10.5.0.0/30"})  # exactly one address: 10.5.0.2
    svc = service(w, "web", networks=(tiny["id"],), mode="dnsrr")
    [old] = tasks_for(w, svc, 1)
    settle(w)
    assert addresses(get(w, Kind.TASK, old)) == {tiny["id"]: "10.5.0.2/30"}
    [new] = tasks_for(w, svc, 1)
    for observed, desired in [("running", None), ("running", "shutdown")]:  # being shut down: still held
        set_state(w, old, observed, desired)
        settle(w)
        assert get(w, Kind.TASK, new)["status"]["state"] == "new", (observed, desired)
    set_state(w, old, "shutdown")  # desired and observed past RUNNING: dead, address free
    assert task_dead(get(w, Kind.TASK, old))
    settle(w)
    assert addresses(get(w, Kind.TASK, new)) == {tiny["id"]: "10.5.0.2/30"}
    # deletion frees too
    [third] = tasks_for(w, svc, 1)
    settle(w)
    assert get(w, Kind.TASK, third)["status"]["state"] == "new"
    w.apply([t.delete(Kind.TASK, new["id"])])
    settle(w)
    assert addresses(get(w, Kind.TASK, third)) == {tiny["id"]: "10.5.0.2/30"}


def test_only_stopped_tasks_that_will_not_run_again_are_dead() -> None:
    def x(observed: str, desired: str) -> Obj:
        return {"status": {"state": observed}, "desired_state": desired}

    assert not task_dead(x("running", "shutdown"))  # still stopping
    assert not task_dead(x("failed", "running"))  # stopped, but the orchestrator has not decided yet
    assert not task_dead(x("pending", "remove"))  # allocated, not yet moved to SHUTDOWN by the scheduler
    assert task_dead(x("failed", "shutdown")) and task_dead(x("complete", "complete"))
    assert task_dead(x("orphaned", "remove")) and task_dead(x("shutdown", "shutdown"))


def test_deleting_a_service_frees_its_vips_and_ports() -> None:
    w = World(NOW)
    back = network(w, "back")
    svc = service(w, "web", networks=(back["id"],), ports=({"target_port": 80, "published_port": 8080},))
    settle(w)
    w.apply([t.delete(Kind.SERVICE, svc["id"])])
    again = service(w, "again", networks=(back["id"],), ports=({"target_port": 80, "published_port": 8080},))
    settle(w)
    ep = get(w, Kind.SERVICE, again)["endpoint"]
    assert ep["ports"][0]["published_port"] == 8080
    assert {v["addr"] for v in ep["virtual_ips"]} == {"10.255.0.2/16", "10.0.0.2/24"}


# ---- failover and in-flight writes ---------------------------------------------------------------------------
def test_a_fresh_allocator_rebuilds_from_the_store_and_never_double_allocates() -> None:
    w = World(NOW)
    back = network(w, "back")
    svc = service(w, "web", networks=(back["id"],), ports=({"target_port": 80},))
    first = tasks_for(w, svc, 5)
    settle(w)
    before = {x["id"]: get(w, Kind.TASK, x) for x in first}
    ep_before = get(w, Kind.SERVICE, svc)["endpoint"]
    # "Failover": a new instance with no memory at all — the state comes from the store alone.
    second = service(w, "api", networks=(back["id"],), ports=({"target_port": 80},))
    more = tasks_for(w, svc, 5) + tasks_for(w, second, 5)
    assert settle(w) > 0
    assert get(w, Kind.SERVICE, svc)["endpoint"] == ep_before  # nothing allocated is allocated again
    assert all(get(w, Kind.TASK, x) == before[x["id"]] for x in first)
    assert get(w, Kind.SERVICE, second)["endpoint"]["ports"][0]["published_port"] == 30001
    used = [a for x in first + more for a in addresses(get(w, Kind.TASK, x)).items()]
    used += [(v["network_id"], v["addr"]) for s in (svc, second) for v in get(w, Kind.SERVICE, s)["endpoint"]
             ["virtual_ips"]]
    assert len(used) == len(set(used)) == 15 * 2 + 2 * 2


def test_writes_with_unknown_outcome_stay_reserved_and_are_planned_again() -> None:
    w = World(NOW)
    back = network(w, "back")
    svc = service(w, "web", networks=(back["id"],), mode="dnsrr")
    settle(w)
    [a] = tasks_for(w, svc, 1)
    lost = plan(w.mem.list(Kind.TASK), build(w), NOW)  # planned, written... and the answer was lost
    [group] = lost.groups
    held = group.note
    assert isinstance(held, Reserved) and held.id == a["id"]
    [b] = tasks_for(w, svc, 1)
    pending = still_pending({(held.kind, held.id): held}, w.mem.find)
    assert list(pending.values()) == [held]
    again = plan(w.mem.list(Kind.TASK), build(w, tuple(pending.values())), NOW)
    by_id = {op["object"]["id"]: op["object"] for op in again.ops}
    assert by_id[a["id"]] == held.obj  # the same op again, not a new allocation
    assert addresses(by_id[b["id"]]) != addresses(held.obj)  # and nobody else gets its address
    w.apply(lost.ops)  # the lost write commits late...
    assert not still_pending({(held.kind, held.id): held}, w.mem.find)  # ...and is no longer held
    w.apply([op for op in again.ops if op["object"]["id"] == b["id"]])
    assert addresses(get(w, Kind.TASK, a)) != addresses(get(w, Kind.TASK, b))


def test_a_pass_is_bounded() -> None:
    w = World(NOW)
    back = network(w, "back")
    svc = service(w, "web", networks=(back["id"],))
    tasks_for(w, svc, 30)
    passes = settle(w, passes=20, limit=7)
    assert passes == 2 + 5  # network, service, then 30 tasks 7 at a time (the service pass takes 1 of 7)
    assert all(x["status"]["state"] == "pending" for x in w.mem.list(Kind.TASK))


# ---- the invariant, under random histories -------------------------------------------------------------------
def check_invariants(w: World) -> None:
    nets = {n["id"]: n for n in w.mem.list(Kind.NETWORK)}
    subnets = [ipaddress.ip_network(n["ipam"]["subnet"]) for n in nets.values() if n.get("ipam")]
    for i, a in enumerate(subnets):
        assert not any(a.overlaps(b) for b in subnets[i + 1:])  # type: ignore[arg-type]
    used: list[tuple[str, str]] = []
    for x in w.mem.list(Kind.TASK):
        if not task_dead(x):
            used += list(addresses(x).items())
    ports: list[tuple[str, int]] = []
    for s in w.mem.list(Kind.SERVICE):
        ep = s.get("endpoint") or {}
        used += [(v["network_id"], v["addr"]) for v in ep.get("virtual_ips") or []]
        ports += [(p["protocol"], p["published_port"]) for p in ep.get("ports") or []
                  if p["publish_mode"] == "ingress"]
    assert len(used) == len(set(used)), Counter(used).most_common(3)
    assert len(ports) == len(set(ports))
    for nid, addr in used:
        assert ipaddress.ip_interface(addr).ip in ipaddress.ip_network(nets[nid]["ipam"]["subnet"])
        assert ipaddress.ip_interface(addr).ip != ipaddress.ip_address(nets[nid]["ipam"]["gateway"])


WEIGHTS = {"service": 2, "tasks": 4, "kill": 2, "delete": 1, "settle": 4, "lose": 2}


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_no_address_or_port_is_ever_held_twice(seed: int) -> None:
    """Seeded random histories of 60 steps — services created and deleted, tasks started and killed, passes
    whose answers are lost and whose writes commit later (between steps, or between another pass's planning
    and its write) — never give one address or port to two holders."""
    rng = random.Random(seed)
    w = World(NOW)
    nets = [network(w, "a", ipam={"subnet": "10.1.0.0/28"}), network(w, "b")]
    services: list[Obj] = []
    late: list[list[t.Op]] = []
    inflight: dict[tuple[str, str], Reserved] = {}
    for i in range(60):
        what = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        n, land = rng.randrange(10), rng.random() < 0.3
        if what == "service":
            ports = ({"target_port": 80, "published_port": 30000 + n % 3},) if n % 2 else ({"target_port": 80},)
            services.append(service(w, f"s{i}", networks=(nets[n % 2]["id"],), ports=ports))
        elif what == "tasks" and services:
            tasks_for(w, services[n % len(services)], 1 + n % 3)
        elif what == "kill":
            kill_one(w, n)
        elif what == "delete" and services:
            victim = services.pop(n % len(services))
            w.apply([t.delete(Kind.SERVICE, victim["id"])])
        elif what in ("settle", "lose"):
            for _ in range(1 if what == "lose" else 4):  # a pass whose answer is lost, or passes until idle
                inflight = still_pending(inflight, w.mem.find)
                state = AllocatorState.build(w.mem.list(Kind.TASK), w.mem.list(Kind.NETWORK),
                                             w.mem.list(Kind.SERVICE), inflight.values())
                out = plan(w.mem.list(Kind.TASK), state, w.now)
                for g in out.groups:
                    if isinstance(g.note, Reserved):
                        inflight[(g.note.kind, g.note.id)] = g.note
                if what == "lose":
                    late.append(out.ops)
                elif late and land:  # a lost write commits between this pass's planning and its write
                    apply_late(w, late.pop(0))
                for op in out.ops if what == "settle" else []:
                    try:
                        w.apply([op])
                    except Exception:  # stale (a late write landed first): the allocator retries next pass
                        pass
        if late and land:  # lost writes may commit at any later point
            apply_late(w, late.pop(0))
        check_invariants(w)


def apply_late(w: World, ops: list[t.Op]) -> None:
    for op in ops:
        try:
            w.apply([op])
        except Exception:  # stale by now: it can never land
            pass


def test_the_ingress_network_is_named_by_the_injected_ids() -> None:
    w = World(NOW)
    service(w, "web", ports=({"target_port": 80},))
    out = plan(w.mem.list(Kind.TASK), build(w), w.now, ids=lambda: "i" * 25)
    created = [op["object"] for op in out.ops if op["op"] == "create" and op["kind"] == Kind.NETWORK]
    assert [(n["id"], n["spec"]["name"]) for n in created] == [("i" * 25, "ingress")]
