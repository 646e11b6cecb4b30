"""The allocator's state and its building blocks (services/allocator/core.py has the passes): what one pass sees
(`AllocatorState`, rebuilt from the store with the `Reserved` writes not yet known to have landed), what a voter
answers (`Allocation`, `Deferred`), and which addresses a task or node holds."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.allocator.ipam import (
    AddressPool,
    IPNetwork,
    PortSpace,
    SubnetPool,
    parse_address,
    parse_network,
)
from shoal.models.kinds import Kind
from shoal.models.objects import Obj, status_state
from shoal.models.states import TaskState, task_rank

_RUNNING = TaskState.RUNNING.rank


@dataclass(frozen=True)
class Allocation:
    """Fields to set on the task (e.g. `networks` with addresses, `endpoint` ports)."""

    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Deferred:
    """Cannot allocate yet. With a `reason` (e.g. a pool is exhausted) the task stays NEW with it in
    `status.err`; `quiet` = only waiting for something this pass is writing (nothing to tell the user)."""

    reason: str
    quiet: bool = False


@dataclass(frozen=True)
class Reserved:
    """A planned write and what it allocates: `obj` (kind, id) as written, expecting `version` (None for a
    create). Held by the shell until the object is no longer at `version` (the write landed or can no longer
    land), and fed back to `AllocatorState.build`."""

    kind: str
    id: str
    version: int | None
    obj: Obj


def task_dead(task: Obj) -> bool:
    """Desired and observed state both past RUNNING: it will not run again and has stopped (SwarmKit's
    `taskDead`), so its addresses are free even before the reaper deletes it."""
    return task_rank(task.get("desired_state")) > _RUNNING and task_rank(status_state(task)) > _RUNNING


def _age(obj: Obj) -> tuple[float, str]:
    return float((obj.get("meta") or {}).get("created_at") or 0.0), str(obj["id"])


def _version(obj: Obj | None) -> int | None:
    return None if obj is None else (obj.get("meta") or {}).get("version")


def _endpoint_spec(service: Obj) -> Obj:
    return (service.get("spec") or {}).get("endpoint") or {"mode": "vip", "ports": []}


def needs_ingress(service: Obj) -> bool:
    """The service publishes a port in ingress mode (it is then attached to the ingress network)."""
    return any((p.get("publish_mode") or "ingress") == "ingress" for p in _endpoint_spec(service).get("ports") or [])


def _spec_networks(obj: Obj) -> list[Obj]:
    """`task.networks` of a task spec (`task["spec"]`) or of a service spec (`service["spec"]["task"]`)."""
    return list(obj.get("networks") or [])


@dataclass
class NetworkInfo:
    """A network as the allocator sees it: its address pool once its subnet is in the store."""

    obj: Obj
    id: str
    name: str
    ingress: bool
    pool: AddressPool | None = None
    pending: bool = False  # its subnet is being written in this pass: users wait for the next one
    error: str | None = None  # why no subnet can be allocated

    @property
    def subnet_text(self) -> str:
        return str(self.pool.subnet) if self.pool is not None else "no subnet"


@dataclass
class AllocatorState:
    """Cluster-wide allocation state, rebuilt from the store (`build`): subnets, per-network address pools,
    ingress ports, and the services and networks of this pass. Empty by default (no networks; services not
    tracked: tasks are then allocated from their own spec only)."""

    networks: dict[str, NetworkInfo] = field(default_factory=dict)
    services: dict[str, Obj] | None = None
    subnets: SubnetPool = field(default_factory=SubnetPool)
    ports: PortSpace = field(default_factory=PortSpace)
    inflight: dict[tuple[str, str], Reserved] = field(default_factory=dict)
    vip_owner: dict[tuple[str, int], str] = field(default_factory=dict)  # (network id, address) -> service id
    ingress_id: str | None = None
    ingress_pending: bool = False
    ingress_error: str | None = None
    service_errors: dict[str, str] = field(default_factory=dict)
    waiting_services: set[str] = field(default_factory=set)
    allocated: int = 0
    nodes: dict[str, Obj] | None = None  # None: node load-balancer IPs are not managed in this pass
    node_uses: dict[str, set[str]] = field(default_factory=dict)  # node id -> networks its live tasks use
    lb_owner: dict[tuple[str, int], str] = field(default_factory=dict)  # (network id, address) -> node id

    # ---- rebuilding -----------------------------------------------------------------------------------------
    @staticmethod
    def build(tasks: Iterable[Obj], networks: Iterable[Obj] = (), services: Iterable[Obj] | None = None,
              inflight: Iterable[Reserved] = (), cache: HoldCache | None = None,
              nodes: Iterable[Obj] | None = None,
              holds: Iterable[tuple[str, Holds]] | None = None) -> AllocatorState:
        """Everything the store says is allocated is taken: network subnets, service VIPs and ingress ports,
        addresses of live (not dead) tasks, nodes' load-balancer IPs, and whatever in-flight writes hold.
        `cache` (kept by the caller across passes) saves re-reading the tasks that did not change; `holds`
        (a `TaskIndex`'s) replaces reading `tasks` at all. Without `nodes`, node load-balancer IPs are left
        alone."""
        st = AllocatorState()
        for net in sorted(networks, key=_age):
            st._add_network(net)
        if services is not None:
            st.services = {}
            for svc in sorted(services, key=_age):
                st.services[svc["id"]] = svc
                st._hold_endpoint(svc["id"], svc)
        by_network: dict[str, list[int]] = {}
        for node_id, held in (cache or HoldCache()).holds(tasks) if holds is None else holds:
            for nid, addr in held:
                by_network.setdefault(nid, []).append(addr)
            if node_id:
                st.node_uses.setdefault(node_id, set()).update(nid for nid, _ in held)
        for nid, addrs in by_network.items():
            info = st.networks.get(nid)
            if info is not None and info.pool is not None:
                info.pool.reserve_many(addrs)
        if nodes is not None:
            st.nodes = {}
            for node in nodes:
                st.nodes[node["id"]] = node
                if node.get("attachments"):
                    st._hold_node(node["id"], node)
        for r in inflight:
            st.inflight[(r.kind, r.id)] = r
            st._hold(r)
        return st

    def _add_network(self, net: Obj) -> NetworkInfo:
        spec = net.get("spec") or {}
        info = NetworkInfo(net, net["id"], str(spec.get("name") or net["id"]), bool(spec.get("ingress")))
        self.networks[info.id] = info
        if info.ingress and self.ingress_id is None:
            self.ingress_id = info.id
        ipam = net.get("ipam") or {}
        subnet = parse_network(str(ipam.get("subnet") or ""))
        if subnet is not None:
            self.subnets.reserve(subnet, info.id)
            info.pool = _pool(subnet, ipam.get("gateway"))
        return info

    def _hold_endpoint(self, sid: str, svc: Obj) -> None:
        for p in _endpoint_spec(svc).get("ports") or []:
            if (p.get("publish_mode") or "ingress") == "host" and p.get("published_port"):
                self.ports.host.add((str(p.get("protocol") or "tcp"), int(p["published_port"])))
        endpoint = svc.get("endpoint") or {}
        for p in endpoint.get("ports") or []:
            port, proto = int(p.get("published_port") or 0), str(p.get("protocol") or "tcp")
            if not port:
                continue
            if (p.get("publish_mode") or "ingress") == "ingress":
                self.ports.reserve(proto, port, sid)
            else:
                self.ports.host.add((proto, port))
        for vip in endpoint.get("virtual_ips") or []:
            info = self.networks.get(str(vip.get("network_id")))
            addr = parse_address(str(vip.get("addr") or ""))
            if info is not None and info.pool is not None and addr is not None and info.pool.reserve(addr[1]):
                self.vip_owner[(info.id, addr[1])] = sid

    def _hold_node(self, node_id: str, node: Obj) -> None:
        """Take a node's load-balancer IPs (an address another holder already has is not the node's: it will
        get a new one)."""
        for nid, addr in node_holds(node):
            info = self.networks.get(nid)
            if info is not None and info.pool is not None and info.pool.reserve(addr):
                self.lb_owner[(nid, addr)] = node_id

    def _hold(self, r: Reserved) -> None:
        if r.kind == Kind.NETWORK:  # a subnet being written, or the ingress network being created
            subnet = parse_network(str((r.obj.get("ipam") or {}).get("subnet") or ""))
            if subnet is not None:
                self.subnets.reserve(subnet, r.id)
        elif r.kind == Kind.SERVICE:
            self._hold_endpoint(r.id, r.obj)
        elif r.kind == Kind.TASK:
            for nid, addr in task_holds(r.obj):
                info = self.networks.get(nid)
                if info is not None and info.pool is not None:
                    info.pool.reserve(addr)
        elif r.kind == Kind.NODE:
            self._hold_node(r.id, r.obj)

    # ---- lookups --------------------------------------------------------------------------------------------
    def service_of(self, task: Obj) -> Obj | None:
        return None if self.services is None else self.services.get(str(task.get("service_id")))

    def service_name(self, sid: str) -> str:
        svc = (self.services or {}).get(sid)
        return str(svc["spec"]["name"]) if svc is not None else sid

    def take(self, allocation: Allocation) -> None:
        """Count an allocation (the voters already took their addresses from the pools)."""
        self.allocated += 1


def task_holds(task: Obj) -> tuple[tuple[str, int], ...]:
    """(network id, address) of every address a task holds: none once it is dead."""
    atts = task.get("networks")
    if not atts or task_dead(task):
        return ()
    out = []
    for att in atts:
        nid = str(att.get("network_id"))
        for text in att.get("addresses") or ():
            addr = parse_address(str(text))
            if addr is not None:
                out.append((nid, addr[1]))
    return tuple(out)


def node_holds(node: Obj) -> tuple[tuple[str, int], ...]:
    """(network id, address) of a node's load-balancer IPs (`node.attachments`)."""
    out = []
    for att in node.get("attachments") or ():
        addr = parse_address(str(att.get("address") or ""))
        if addr is not None:
            out.append((str(att.get("network_id")), addr[1]))
    return tuple(out)


Holds = tuple[tuple[str, int], ...]


class HoldCache:
    """What each task holds (`task_holds`) and on which node, remembered by task id and `meta.version`, so a
    pass re-reads only the tasks that changed since the previous one (parsing every address was most of a
    pass's cost). Tasks without a version are always re-read; the answer never depends on the cache."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, str, Holds]] = {}

    def holds(self, tasks: Iterable[Obj]) -> Iterable[tuple[str, Holds]]:
        """(node id or "", what it holds) of every task that holds something."""
        old, new = self._entries, {}
        out = []
        for task in tasks:
            version = (task.get("meta") or {}).get("version")
            entry = old.get(task["id"]) if version is not None else None
            if entry is None or entry[0] != version:
                held = task_holds(task)
                node_id = str(task.get("node_id") or "")
                if version is not None:
                    new[task["id"]] = (version, node_id, held)
            else:
                _, node_id, held = entry
                new[task["id"]] = entry
            if held:
                out.append((node_id, held))
        self._entries = new
        return out


def _pool(subnet: IPNetwork, gateway: object) -> AddressPool:
    """The address pool of an allocated network (its gateway reserved)."""
    gw = parse_address(str(gateway)) if gateway else None
    if gw is not None and gw[0] == subnet.version:
        ip = ipaddress.IPv4Address(gw[1]) if gw[0] == 4 else ipaddress.IPv6Address(gw[1])
        return AddressPool(subnet, ip)
    return AddressPool(subnet)


class _Budget:
    """At most `limit` groups per pass (one bounded transaction)."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True
