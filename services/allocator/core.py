"""The allocator's pure core (SwarmKit `manager/allocator`): network subnets, the ingress network, service
endpoints (VIPs, ingress ports) and task addresses; NEW → PENDING once a task has everything it needs.

One pass (`plan`) over a state rebuilt from the store (`AllocatorState.build`), in this order, each step seeing
what the previous ones took:

1. **networks** without `ipam`: a subnet — the user's (reserved as given, refused if it overlaps a subnet in
   use) or the lowest free /24 of 10.0.0.0/8 — and a gateway (the user's, or the first host address), written
   to the network's `ipam` (the allocator owns that field);
2. the **ingress network** (`spec.ingress: true`, 10.255.0.0/16), created when some service publishes an ingress
   port and there is none;
3. **service endpoints** (`service.endpoint = {spec, ports, virtual_ips}`, a system field written with the
   service's version as precondition): ingress ports with `published_port` 0 get one of 30000-32767 (kept across
   spec updates), user-given ones are reserved (first come, first served), host-mode ports are copied as given;
   endpoint mode `vip` gets one VIP per attached network (plus ingress when it publishes ingress ports), `dnsrr`
   none; VIPs of networks no longer attached are dropped;
4. **tasks** NEW with desired ≤ COMPLETE (job tasks are meant to complete), oldest first: every *voter*
   (`VOTERS`; SwarmKit's voting — today the network voter) must agree; the task then gets `networks =
   [{network_id, addresses: ["10.0.1.5/24"], aliases}]` (the ingress attachment first) and `endpoint.ports`, and
   moves to PENDING ("pending task scheduling"). A task whose service or networks are being written in this pass
   waits quietly for the next pass; one that cannot be allocated stays NEW with the reason in `status.err`
   (written only when it changes). Network attachment tasks (no service, runtime `attachment`) are allocated
   the same way, from their own spec;
5. **node load-balancer IPs** (SwarmKit's `allocateNode`, `Node.attachments`): a node gets one address on each
   overlay network that some live task on it (assigned to it, addresses held) is attached to, written to
   `node.attachments = [{network_id, address}]`; an attachment whose network no task on the node uses any more
   (or that no longer exists) is dropped, which frees its address.

Release is implicit: the state is rebuilt from the store, so an address is free once no live task, service or
network holds it. A task holds its addresses until it is *dead* — desired and observed state both past RUNNING
(SwarmKit's `taskDead`: it will not run again and has stopped) — or deleted; service VIPs and ports go with the
service's deletion (or its endpoint's rewrite); a subnet goes with its network; a node's load-balancer IPs with
the node's deletion (or its attachments' rewrite).

Writes whose outcome is not known yet are `Reserved` (the group's note): the shell passes them back to `build`
while the object is still at the version the write expects, so their allocations stay taken and the same op is
planned again — a write that commits late can never collide with a newer allocation. No I/O, no clock. The
state a pass sees, and what its voters answer, are in services/allocator/state.py."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from services.allocator.ipam import (
    DYNAMIC_PORT_END,
    DYNAMIC_PORT_START,
    INGRESS_SUBNET,
    AddressPool,
    IPNetwork,
    first_host,
    parse_address,
    parse_network,
)
from services.allocator.state import (
    Allocation,
    AllocatorState,
    Deferred,
    NetworkInfo,
    Reserved,
    _age,
    _Budget,
    _endpoint_spec,
    _spec_networks,
    _version,
    needs_ingress,
)
from services.allocator.state import HoldCache as HoldCache  # re-exported: the shell keeps one
from services.allocator.state import task_dead as task_dead  # re-exported: tests judge release with it
from shoal import netkeys
from shoal.ids import new_id
from shoal.models.kinds import Kind
from shoal.models.network_spec import is_encrypted
from shoal.models.objects import Obj, status_state, task_status
from shoal.models.states import TaskState, task_rank
from shoal.plan import Plan
from shoal.store import txn as t

PENDING_MESSAGE = "pending task scheduling"  # SwarmKit's message, shown by `service ps`
INGRESS_NAME = "ingress"

_COMPLETE = TaskState.COMPLETE.rank


def _replan_held(state: AllocatorState, kind: str, obj: Obj, out: Plan, budget: _Budget) -> bool:
    """Whether a write of `obj` is already in flight for its current version (planned by an earlier pass whose
    transaction has not landed yet). If so it is planned again as it was, the same `Reserved` (writing it twice
    changes nothing), while the budget lasts, instead of being computed anew."""
    held = state.inflight.get((kind, obj["id"]))
    if held is None or held.version != _version(obj):
        return False
    if budget.take():
        out.add([t.update(kind, held.obj)], held)
    return True


# ---- 1. networks ---------------------------------------------------------------------------------------------
def _plan_networks(state: AllocatorState, out: Plan, budget: _Budget) -> None:
    """Networks without a subnet, oldest first; those with a user-given subnet before those that take one from
    the pool, so a pool pick in the same pass never takes a subnet a user asked for."""
    waiting = [n for n in state.networks.values() if n.pool is None]
    waiting.sort(key=lambda n: not ((n.obj.get("spec") or {}).get("ipam") or {}).get("subnet"))
    for info in waiting:
        if info.pool is not None:
            continue
        if _replan_held(state, Kind.NETWORK, info.obj, out, budget):
            info.pending = True
            continue
        if not budget.take():
            info.pending = True  # next pass
            continue
        ipam = _subnet_for(state, info)
        if ipam is None:
            continue
        new = {**info.obj, "ipam": ipam}
        out.add([t.update(Kind.NETWORK, new)], Reserved(Kind.NETWORK, info.id, _version(info.obj), new))
        info.pending = True


def _subnet_for(state: AllocatorState, info: NetworkInfo) -> dict[str, str] | None:
    """The user's subnet (reserved as given) or a free one from the pool; None with `info.error` set when
    neither is possible."""
    wanted = (info.obj.get("spec") or {}).get("ipam") or {}
    if wanted.get("subnet"):
        subnet = parse_network(str(wanted["subnet"]))
        if subnet is None:
            info.error = f"invalid subnet {wanted['subnet']!r}"
            return None
        clash = state.subnets.reserve(subnet, info.id)
        if clash is not None:
            other = state.networks.get(clash[1])
            info.error = f"subnet {subnet} overlaps subnet {clash[0]} of network {other.name if other else clash[1]!r}"
            return None
        gateway = str(wanted.get("gateway") or first_host(subnet))
        return {"subnet": str(subnet), "gateway": gateway}
    subnet = None
    if info.ingress:
        default = parse_network(INGRESS_SUBNET)
        if default is not None and state.subnets.reserve(default, info.id) is None:
            subnet = default
    if subnet is None:
        subnet = state.subnets.take(info.id)
    if subnet is None:
        info.error = (f"no free /{state.subnets.size} subnet left in the default address pool "
                      f"{state.subnets.pool}")
        return None
    return {"subnet": str(subnet), "gateway": str(first_host(subnet))}


# ---- 2. the ingress network ----------------------------------------------------------------------------------
def ingress_network(network_id: str, subnet: IPNetwork) -> Obj:
    """The ingress network object as the allocator creates it (SwarmKit's `newIngressNetwork`: name `ingress`,
    `spec.ingress`, not attachable), with its subnet already allocated."""
    gateway = str(first_host(subnet))
    return {"id": network_id,
            "spec": {"name": INGRESS_NAME, "labels": {}, "driver": "overlay",
                     "ipam": {"subnet": str(subnet), "gateway": gateway}, "attachable": False, "internal": False,
                     "ingress": True},
            "ipam": {"subnet": str(subnet), "gateway": gateway}}


def _plan_ingress(state: AllocatorState, out: Plan, budget: _Budget, ids: Callable[[], str]) -> None:
    services = state.services or {}
    if state.ingress_id is not None or not any(needs_ingress(s) for s in services.values()):
        return
    held = next((r for r in state.inflight.values()
                 if r.kind == Kind.NETWORK and r.version is None and (r.obj.get("spec") or {}).get("ingress")), None)
    if held is not None:
        state.ingress_pending = True
        if budget.take():
            out.add([t.create(Kind.NETWORK, held.obj)], held)
        return
    taken = next((n for n in state.networks.values() if n.name.lower() == INGRESS_NAME), None)
    if taken is not None:
        state.ingress_error = (f"cannot create the ingress network: network {taken.name!r} ({taken.id}) already "
                               "exists and is not an ingress network; remove it")
        return
    if not budget.take():
        state.ingress_pending = True
        return
    nid = ids()
    subnet = parse_network(INGRESS_SUBNET)
    if subnet is None or state.subnets.reserve(subnet, nid) is not None:
        subnet = state.subnets.take(nid)  # 10.255.0.0/16 is taken by a user network: fall back to a /24
    if subnet is None:
        state.ingress_error = "cannot create the ingress network: no free subnet"
        return
    obj = ingress_network(nid, subnet)
    out.add([t.create(Kind.NETWORK, obj)], Reserved(Kind.NETWORK, nid, None, obj))
    state.ingress_pending = True


# ---- 3. service endpoints ------------------------------------------------------------------------------------
class _Wait(Exception):
    """Something the endpoint needs is being written in this pass."""


class _Refused(Exception):
    """The endpoint cannot be allocated; the message says why."""


class _Taken:
    """What one endpoint computation took, to give back if it fails."""

    def __init__(self, state: AllocatorState, sid: str) -> None:
        self.state = state
        self.sid = sid
        self.ports: list[tuple[str, int]] = []
        self.addrs: list[tuple[AddressPool, int]] = []

    def undo(self) -> None:
        for proto, port in self.ports:
            self.state.ports.release(proto, port, self.sid)
        for pool, addr in self.addrs:
            pool.release(addr)


def desired_endpoint(svc: Obj, state: AllocatorState) -> Obj:
    """The endpoint `svc` should have: `{spec, ports, virtual_ips}`. Raises `_Wait` or `_Refused`."""
    sid = svc["id"]
    spec = _endpoint_spec(svc)
    current = svc.get("endpoint") or {}
    taken = _Taken(state, sid)
    try:
        ports = _ports(svc, spec, current, state, taken)
        vips = _vips(svc, spec, current, state, taken) if (spec.get("mode") or "vip") == "vip" else []
    except (_Wait, _Refused):
        taken.undo()
        raise
    return {"spec": spec, "ports": ports, "virtual_ips": vips}


def _ports(svc: Obj, spec: Obj, current: Obj, state: AllocatorState, taken: _Taken) -> list[Obj]:
    sid = svc["id"]
    # Ports this service got from the dynamic range last time, by (name, protocol, target): kept on update.
    auto: list[tuple[tuple[Any, str, int], int]] = []
    for was, got in zip((current.get("spec") or {}).get("ports") or [], current.get("ports") or [], strict=False):
        if (was.get("publish_mode") or "ingress") == "ingress" and not was.get("published_port") \
                and got.get("published_port"):
            auto.append(((was.get("name"), str(was.get("protocol") or "tcp"), int(was.get("target_port") or 0)),
                         int(got["published_port"])))
    out: list[Obj] = []
    for p in spec.get("ports") or []:
        if (p.get("publish_mode") or "ingress") != "ingress":
            out.append(dict(p))  # host mode: not allocated centrally (the scheduler keeps them apart)
            continue
        proto, published = str(p.get("protocol") or "tcp"), int(p.get("published_port") or 0)
        if published:
            owner = state.ports.owner(proto, published)
            if owner is not None and owner != sid:
                raise _Refused(f"ingress port {published}/{proto} is already in use by service "
                               f"{state.service_name(owner)!r}")
            if owner is None:
                state.ports.reserve(proto, published, sid)
                taken.ports.append((proto, published))
        else:
            key = (p.get("name"), proto, int(p.get("target_port") or 0))
            reuse = next((i for i, (k, port) in enumerate(auto)
                          if k == key and state.ports.owner(proto, port) == sid), None)
            if reuse is not None:
                published = auto.pop(reuse)[1]
            else:
                got = state.ports.take(proto, sid)
                if got is None:
                    raise _Refused(f"no free ingress port for {proto} in {DYNAMIC_PORT_START}-{DYNAMIC_PORT_END}")
                published = got
                taken.ports.append((proto, got))
        out.append({**p, "published_port": published})
    return out


def _vips(svc: Obj, spec: Obj, current: Obj, state: AllocatorState, taken: _Taken) -> list[Obj]:
    sid = svc["id"]
    wanted = [str(a.get("target")) for a in _spec_networks((svc.get("spec") or {}).get("task") or {})]
    if needs_ingress(svc):
        if state.ingress_id is None:
            if state.ingress_error:
                raise _Refused(state.ingress_error)
            raise _Wait()
        wanted.insert(0, state.ingress_id)
    had = {str(v.get("network_id")): str(v.get("addr") or "") for v in current.get("virtual_ips") or []}
    out: list[Obj] = []
    for nid in wanted:
        info = _usable(state, nid)
        assert info.pool is not None
        old = parse_address(had.get(nid, ""))
        if old is not None and state.vip_owner.get((nid, old[1])) == sid:
            addr = old[1]
        else:
            got = info.pool.take()
            if got is None:
                raise _Refused(f"no free IP address left in network {info.name!r} ({info.pool.subnet}) for a VIP")
            addr = got
            taken.addrs.append((info.pool, got))
            state.vip_owner[(nid, got)] = sid
        out.append({"network_id": nid, "addr": info.pool.text(addr)})
    return out


def _usable(state: AllocatorState, nid: str) -> NetworkInfo:
    """The network `nid` with its address pool, or `_Wait` / `_Refused`."""
    info = state.networks.get(nid)
    if info is None:
        raise _Refused(f"network {nid} not found")
    if info.error is not None:
        raise _Refused(f"network {info.name!r} has no subnet: {info.error}")
    if info.pool is None:
        raise _Wait()
    return info


def _plan_services(state: AllocatorState, out: Plan, budget: _Budget) -> None:
    for svc in (state.services or {}).values():
        sid = svc["id"]
        if _replan_held(state, Kind.SERVICE, svc, out, budget):
            state.waiting_services.add(sid)
            continue
        try:
            endpoint = desired_endpoint(svc, state)
        except _Wait:
            state.waiting_services.add(sid)
            continue
        except _Refused as e:
            state.service_errors[sid] = str(e)
            continue
        if endpoint == svc.get("endpoint"):
            continue
        state.waiting_services.add(sid)
        if budget.take():
            new = {**svc, "endpoint": endpoint}
            out.add([t.update(Kind.SERVICE, new)], Reserved(Kind.SERVICE, sid, _version(svc), new))


# ---- 4. tasks ------------------------------------------------------------------------------------------------
Voter = Callable[[Obj, AllocatorState], Allocation | Deferred]


def network_voter(task: Obj, state: AllocatorState) -> Allocation | Deferred:
    """SwarmKit's "network" voter: the task's service endpoint is allocated, and the task gets one address on
    each network of its spec (plus the ingress network when its service publishes ingress ports)."""
    sid = str(task.get("service_id"))
    svc = state.service_of(task)
    if sid in state.service_errors:
        return Deferred(state.service_errors[sid])
    if sid in state.waiting_services:
        return Deferred("waiting for the service endpoint", quiet=True)
    wanted = [(str(a.get("target")), list(a.get("aliases") or [])) for a in _spec_networks(task.get("spec") or {})]
    if svc is not None and needs_ingress(svc):
        if state.ingress_id is None:
            if state.ingress_error:
                return Deferred(state.ingress_error)
            return Deferred("waiting for the ingress network", quiet=True)
        wanted.insert(0, (state.ingress_id, []))
    attachments: list[Obj] = []
    taken: list[tuple[AddressPool, int]] = []
    for nid, aliases in wanted:
        try:
            info = _usable(state, nid)
        except _Wait:
            result = Deferred(f"waiting for network {nid}", quiet=True)
        except _Refused as e:
            result = Deferred(str(e))
        else:
            assert info.pool is not None
            addr = info.pool.take()
            if addr is not None:
                taken.append((info.pool, addr))
                att: Obj = {"network_id": nid, "addresses": [info.pool.text(addr)], "aliases": aliases}
                if is_encrypted(info.obj.get("spec")):
                    att["encrypted"] = True  # the node's agent encrypts its VXLAN traffic (shoal/netkeys.py)
                attachments.append(att)
                continue
            result = Deferred(f"no free IP address left in network {info.name!r} ({info.pool.subnet})")
        for pool, a in taken:
            pool.release(a)
        return result
    fields: dict[str, Any] = {}
    if attachments:
        fields["networks"] = attachments
    ports = ((svc or {}).get("endpoint") or {}).get("ports")
    if ports:
        fields["endpoint"] = {"ports": ports}
    return Allocation(fields)


VOTERS: tuple[Voter, ...] = (network_voter,)


def allocate(task: Obj, state: AllocatorState, voters: Sequence[Voter] = VOTERS) -> Allocation | Deferred:
    """Every voter must agree; their fields are merged. (What a voter took before a later one refused stays
    taken for the rest of this pass only: the next pass rebuilds the state from the store.)"""
    fields: dict[str, Any] = {}
    for voter in voters:
        result = voter(task, state)
        if isinstance(result, Deferred):
            return result
        fields.update(result.fields)
    return Allocation(fields)


def wants_allocation(task: Obj) -> bool:
    """NEW and still meant to run (desired ≤ RUNNING, or COMPLETE for job tasks): a task whose desired state is
    SHUTDOWN or REMOVE is never allocated (SwarmKit skips dead tasks); the orchestrator's reaper deletes it."""
    return status_state(task) == TaskState.NEW.value and task_rank(task.get("desired_state")) <= _COMPLETE


def plan(tasks: Iterable[Obj], state: AllocatorState, now: float, *, limit: int = 199,
         voters: Sequence[Voter] = VOTERS, ids: Callable[[], str] = new_id, ordered: bool = False) -> Plan:
    """One pass: networks, the ingress network, service endpoints, tasks (oldest first), then node
    load-balancer IPs (when `state` tracks nodes); at most `limit` groups (one bounded transaction; the rest go
    next pass). Every group's note is the `Reserved` write. `ids` names what the pass creates (the ingress
    network): injected, so a simulation replays the same ids from its seed. `ordered`: `tasks` are already
    oldest first (a `TaskIndex`'s): read only as far as the pass goes."""
    out = Plan()
    budget = _Budget(limit)
    _plan_networks(state, out, budget)
    if state.services is not None:
        _plan_ingress(state, out, budget, ids)
        _plan_services(state, out, budget)
    # oldest first, but a pass takes at most `limit`: a heap, not a sort of every waiting task (100k NEW tasks
    # are allocated 199 a pass)
    for task in tasks if ordered else _oldest_first(tasks):
        if budget.left <= 0:
            break
        if not wants_allocation(task):
            continue
        if _replan_held(state, Kind.TASK, task, out, budget):
            continue
        result = allocate(task, state, voters)
        if isinstance(result, Deferred):
            if not result.quiet and (task.get("status") or {}).get("err") != result.reason:
                budget.take()  # write the reason once, not on every pass
                status = {**task["status"], "err": result.reason}
                out.add([t.update(Kind.TASK, {**task, "status": status})])
            continue
        state.take(result)
        budget.take()
        new = {**task, **result.fields, "status": task_status(TaskState.PENDING, now, PENDING_MESSAGE)}
        out.add([t.update(Kind.TASK, new)], Reserved(Kind.TASK, task["id"], _version(task), new))
    if state.nodes is not None:
        _plan_nodes(state, out, budget)
    return out


def _oldest_first(tasks: Iterable[Obj]) -> Iterable[Obj]:
    todo = [(_age(x), x) for x in tasks if wants_allocation(x)]
    heapq.heapify(todo)
    while todo:
        yield heapq.heappop(todo)[1]


# ---- 6. network encryption keys --------------------------------------------------------------------------
def plan_netkeys(networks: Iterable[Obj], current: Obj | None, now: float,
                 random_bytes: Callable[[int], bytes]) -> Plan:
    """The key ring of encrypted networks (shoal/netkeys.py, SwarmKit's keymanager): created once some network is
    encrypted, rotated every `netkeys.ROTATION_INTERVAL` after, with a wake-up at the next rotation. Kept
    (not deleted) when the last encrypted network goes, as SwarmKit keeps its bootstrap keys."""
    out = Plan()
    if current is None and not any(is_encrypted(n.get("spec")) for n in networks):
        return out
    new = netkeys.rotate(current, now, random_bytes)
    if new is not None:
        if current is None:
            out.add([t.create(Kind.NETKEYS, new)])
        else:
            out.add([t.update(Kind.NETKEYS, new, expect_version=int((current.get("meta") or {})["version"]))])
    out.wake(netkeys.next_rotation(new or current))
    return out


# ---- 5. node load-balancer IPs -------------------------------------------------------------------------------
OVERLAY_DRIVER = "overlay"


def _overlay(info: NetworkInfo) -> bool:
    return str((info.obj.get("spec") or {}).get("driver") or OVERLAY_DRIVER) == OVERLAY_DRIVER


def desired_attachments(node: Obj, state: AllocatorState) -> list[Obj]:
    """The load-balancer IPs `node` should have: one per overlay network some live task on it uses — its
    current address kept when it is still its own, a new one (the lowest free) otherwise. Networks whose
    subnet is not allocated yet, or whose pool is full, get none for now (the next pass tries again)."""
    node_id = node["id"]
    uses = state.node_uses.get(node_id, set())
    current = {str(a.get("network_id")): a for a in node.get("attachments") or []}
    out: list[Obj] = []
    # keep the current order, then new networks oldest first
    order = [n for n in current if n in uses]
    order += sorted((n for n in uses if n not in current and n in state.networks),
                    key=lambda n: _age(state.networks[n].obj))
    for net_id in order:
        info = state.networks.get(net_id)
        if info is None or info.pool is None or not _overlay(info):
            continue
        had = parse_address(str((current.get(net_id) or {}).get("address") or ""))
        if had is not None and state.lb_owner.get((net_id, had[1])) == node_id:
            out.append({"network_id": net_id, "address": info.pool.text(had[1])})
            continue
        got = info.pool.take()
        if got is None:
            continue
        state.lb_owner[(net_id, got)] = node_id
        out.append({"network_id": net_id, "address": info.pool.text(got)})
    return out


def _plan_nodes(state: AllocatorState, out: Plan, budget: _Budget) -> None:
    """Nodes whose load-balancer IPs must change (written with the node's version as precondition; the
    allocator owns `node.attachments`)."""
    nodes = state.nodes or {}
    # only nodes with LB IPs, tasks on networks, or a write in flight can change (most nodes of a big cluster
    # have none of these): no pass walks every node
    ids = {nid for nid, n in nodes.items() if n.get("attachments")} | set(state.node_uses)
    ids |= {oid for kind, oid in state.inflight if kind == Kind.NODE}
    for node in sorted((nodes[i] for i in ids if i in nodes), key=_age):
        if budget.left <= 0:
            return
        if _replan_held(state, Kind.NODE, node, out, budget):
            continue
        wanted = desired_attachments(node, state)
        if wanted == list(node.get("attachments") or []):
            continue
        budget.take()
        new = {**node, "attachments": wanted}
        out.add([t.update(Kind.NODE, new)], Reserved(Kind.NODE, node["id"], _version(node), new))


def still_pending(held: Mapping[tuple[str, str], Reserved], current: Callable[[str, str], Obj | None]
                  ) -> dict[tuple[str, str], Reserved]:
    """The reserved writes that may still land: their object is still at the version they expect (absent, for
    a create). The others landed (the store now shows what they allocated) or can never land."""
    return {k: r for k, r in held.items() if _version(current(r.kind, r.id)) == r.version}
