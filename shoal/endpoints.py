"""The endpoint table: which tasks stand behind each service's VIPs and published ports, as the data plane
(the agents' routing mesh and service listeners, `agent/mesh.py`) and `GET /v1/networks/{ref}` need it.

Pure: computed from store objects (services, tasks, nodes); no I/O, no clock. docs/networking.md has the
mechanism and why.

A task is a **backend** of its service while it is RUNNING, its desired state is still RUNNING (a task being
shut down stops receiving connections before its workload is stopped), and its node is READY. RUNNING already
means healthy: a task with a health check stays STARTING until its first healthy probe and is stopped and
FAILED once unhealthy (docs/agent-protocol.md, Executors), so leaving RUNNING removes it from the table at once.

A backend is reached from another node at `<node address>:<host port>`: the node address is the one the node
registered with (`node.status.addr`, `SHOAL_ADDR`), the host port is what the agent gave the task for each
target port and reported in the task status (`status.port_status.ports[]`, SwarmKit's PortStatus). A task that
reported no host port for a target port is not a backend of that port; its network addresses are still
listed (`addresses`, the allocator's: containers on overlay networks are reached by them across nodes,
agent/overlay.py).

The table a node receives (`node_table`) carries the services it needs: every service publishing an ingress
port (the routing mesh listens on every node), and every service attached to a network one of the node's own
live tasks is attached to (service discovery). It is bounded (`MAX_SERVICES`, `MAX_BACKENDS`) and versioned by
a digest of its contents, so every dispatcher computes the same version for the same table."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping

from shoal.models.objects import Obj
from shoal.models.states import NodeState, TaskState

MAX_SERVICES = 1000  # services a node's table carries (the rest are left out and `truncated` says so)
MAX_BACKENDS = 500  # backends listed per service
#: the loopback block service listeners take their per-service address from (`local_vip`); 127.0.0.0/10 stays
#: free for nodes' own addresses (127.0.0.N)
LOCAL_VIP_BLOCK = ipaddress.ip_network("127.64.0.0/10")


def _running(task: Obj) -> bool:
    status = task.get("status") or {}
    return status.get("state") == TaskState.RUNNING.value and \
        (task.get("desired_state") or TaskState.RUNNING.value) == TaskState.RUNNING.value


def _node_ready(node: Obj | None) -> bool:
    return node is not None and (node.get("status") or {}).get("state") == NodeState.READY.value


def port_key(protocol: str, target_port: int) -> str:
    return f"{target_port}/{protocol}"


def host_ports(task: Obj) -> dict[str, int]:
    """`{"8080/tcp": host port}`: what the task's agent reported it can be reached on, per target port."""
    out: dict[str, int] = {}
    ports = (((task.get("status") or {}).get("port_status") or {}).get("ports")) or []
    for p in ports:
        try:
            target, published = int(p["target_port"]), int(p["published_port"])
        except (KeyError, TypeError, ValueError):
            continue
        if 0 < published < 65536 and 0 < target < 65536:
            out[port_key(str(p.get("protocol") or "tcp"), target)] = published
    return out


def _addresses(task: Obj) -> dict[str, str]:
    """The task's address on each network (`network_id` → IP without prefix length), the allocator's."""
    out: dict[str, str] = {}
    for att in task.get("networks") or []:
        addrs = att.get("addresses") or []
        if addrs:
            out[str(att.get("network_id"))] = str(addrs[0]).split("/")[0]
    return out


def backend(task: Obj, node: Obj) -> Obj:
    return {"task_id": task["id"], "node_id": task.get("node_id"),
            "node_addr": (node.get("status") or {}).get("addr"),
            "addresses": _addresses(task), "ports": host_ports(task)}


def service_networks(service: Obj) -> list[str]:
    """The ids of the networks the service's tasks attach to (as the allocator resolved them), plus the
    networks of its VIPs (the ingress network when it publishes ingress ports)."""
    ids: list[str] = []
    for v in (service.get("endpoint") or {}).get("virtual_ips") or []:
        ids.append(str(v.get("network_id")))
    for a in ((service.get("spec") or {}).get("task") or {}).get("networks") or []:
        target = str(a.get("target") or "")
        if target and target not in ids:
            ids.append(target)
    return ids


def published_ports(service: Obj) -> list[Obj]:
    """The service's ports as allocated (`endpoint.ports`: ingress ports carry the published port the
    allocator chose), falling back to the spec's while the allocator has not written them."""
    endpoint = service.get("endpoint") or {}
    ports = endpoint.get("ports")
    if ports is None:
        ports = ((service.get("spec") or {}).get("endpoint") or {}).get("ports") or []
    return [{"protocol": str(p.get("protocol") or "tcp"), "target_port": int(p.get("target_port") or 0),
             "published_port": int(p.get("published_port") or 0),
             "publish_mode": str(p.get("publish_mode") or "ingress")} for p in ports]


def service_entry(service: Obj, tasks: Iterable[Obj], nodes: Mapping[str, Obj]) -> Obj:
    """One service's row: name, endpoint mode, VIPs, ports and its backends (sorted by task id)."""
    spec = service.get("spec") or {}
    backends = []
    for task in sorted(tasks, key=lambda t: str(t["id"])):
        node = nodes.get(str(task.get("node_id")))
        if _running(task) and _node_ready(node):
            assert node is not None
            backends.append(backend(task, node))
    return {"id": service["id"], "name": spec.get("name"),
            "mode": str((spec.get("endpoint") or {}).get("mode") or "vip"),
            "networks": service_networks(service),
            "vips": [{"network_id": str(v.get("network_id")), "addr": str(v.get("addr") or "").split("/")[0]}
                     for v in (service.get("endpoint") or {}).get("virtual_ips") or []],
            "ports": published_ports(service),
            "backends": backends[:MAX_BACKENDS],
            "backends_truncated": len(backends) > MAX_BACKENDS}


def distributed(service: Obj) -> bool:
    """Whether any node's table can carry the service (`wanted_by` some node): it publishes an ingress port or
    is attached to a network. Rows of other services — process tasks without ports, say — reach no node, so a
    dispatcher need not compute them, nor recompute anything when only their tasks change."""
    if service_networks(service):
        return True
    return any(p["publish_mode"] == "ingress" and p["published_port"] for p in published_ports(service))


def table(services: Iterable[Obj], tasks: Iterable[Obj], nodes: Iterable[Obj]) -> list[Obj]:
    """Every service's entry, by name. Tasks without a service (network attachments) are not backends."""
    by_service: dict[str, list[Obj]] = {}
    for task in tasks:
        sid = task.get("service_id")
        if sid:
            by_service.setdefault(str(sid), []).append(task)
    node_map = {str(n["id"]): n for n in nodes}
    rows = [service_entry(s, by_service.get(str(s["id"]), ()), node_map) for s in services]
    rows.sort(key=lambda r: (str(r["name"]), str(r["id"])))
    return rows


def _live(task: Obj) -> bool:
    status = (task.get("status") or {}).get("state") or TaskState.NEW.value
    desired = task.get("desired_state") or TaskState.RUNNING.value
    return TaskState(status) <= TaskState.RUNNING and TaskState(desired) <= TaskState.RUNNING


def node_networks(node_id: str, tasks: Iterable[Obj]) -> set[str]:
    """The networks the node's live tasks are attached to."""
    out: set[str] = set()
    for task in tasks:
        if task.get("node_id") == node_id and _live(task):
            out.update(str(a.get("network_id")) for a in task.get("networks") or [])
    return out


def networks_by_node(tasks: Iterable[Obj]) -> dict[str, set[str]]:
    """`node_networks` of every node whose live tasks are on some network (the others are left out, so only
    the tasks with `networks` need be given)."""
    out: dict[str, set[str]] = {}
    for task in tasks:
        node = task.get("node_id")
        if node and task.get("networks") and _live(task):
            out.setdefault(str(node), set()).update(str(a.get("network_id")) for a in task["networks"])
    return out


def wanted_by(entry: Obj, networks: set[str]) -> bool:
    """Whether a node whose tasks are on `networks` needs the entry: ingress ports, or a shared network."""
    if any(p["publish_mode"] == "ingress" and p["published_port"] for p in entry["ports"]):
        return True
    return bool(networks.intersection(entry["networks"]))


def node_table(rows: Iterable[Obj], node_id: str, node_addr: str | None, tasks: Iterable[Obj]) -> Obj:
    """The versioned table node `node_id` receives (docs/agent-protocol.md, "Endpoints")."""
    nets = node_networks(node_id, tasks)
    chosen = [r for r in rows if wanted_by(r, nets)]
    body: Obj = {"node_addr": node_addr, "services": chosen[:MAX_SERVICES],
                 "truncated": len(chosen) > MAX_SERVICES}
    return {"version": digest(body), **body}


def encrypted_networks(node_id: str, tasks: Iterable[Obj]) -> set[str]:
    """The encrypted networks (attachments the allocator marked `encrypted`) of the node's live tasks."""
    return {str(a.get("network_id")) for task in tasks if task.get("node_id") == node_id and _live(task)
            for a in task.get("networks") or [] if a.get("encrypted")}


def with_keys(table: Obj, encrypted: set[str], keys: Obj | None) -> Obj:
    """The table of a node with tasks on encrypted networks: those networks' ids and the key ring (keys and
    Lamport times only), versioned anew so a rotation reaches the node on its long poll. A node without such a
    task gets the table unchanged: no key leaves the dispatcher for it."""
    if not encrypted:
        return table
    ring = [{"key": k["key"], "lamport": k["lamport"]} for k in (keys or {}).get("keys") or []]
    extra: Obj = {"encrypted_networks": sorted(encrypted), "network_keys": ring}
    # versioned by the ring's Lamport times (every rotation moves them), not by the keys themselves
    seen = {"table": table["version"], "encrypted_networks": extra["encrypted_networks"],
            "lamports": [k["lamport"] for k in ring]}
    return {**table, **extra, "version": digest(seen)}


def digest(body: Obj) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


# ---- what a node does with a table -------------------------------------------------------------------------

def reach(b: Obj, protocol: str, target_port: int) -> tuple[str, int] | None:
    """Where a backend is reached for a target port from any node: (node address, host port), or None."""
    port = (b.get("ports") or {}).get(port_key(protocol, target_port))
    addr = b.get("node_addr")
    if not port or not addr:
        return None
    return str(addr), int(port)


def ingress_routes(t: Obj) -> dict[tuple[str, int], tuple[str, list[tuple[str, int]]]]:
    """`(protocol, published port)` → (service id, the backends' reachable addresses) for every ingress
    published port of the table (the routing mesh listens on each, on every node)."""
    out: dict[tuple[str, int], tuple[str, list[tuple[str, int]]]] = {}
    for entry in t.get("services") or []:
        for p in entry["ports"]:
            if p["publish_mode"] != "ingress" or not p["published_port"]:
                continue
            addrs = [a for b in entry["backends"] if (a := reach(b, p["protocol"], p["target_port"]))]
            out[(p["protocol"], p["published_port"])] = (entry["id"], addrs)
    return out


def local_vip(service_id: str) -> str:
    """The loopback address a node's service listener for `service_id` binds (in `LOCAL_VIP_BLOCK`): the same
    on every node, so names resolve alike everywhere. Derived from the service id; docs/networking.md."""
    size = LOCAL_VIP_BLOCK.num_addresses
    n = int.from_bytes(hashlib.sha256(service_id.encode()).digest()[:4], "big") % (size - 2) + 1
    return str(LOCAL_VIP_BLOCK.network_address + n)


def vip_routes(t: Obj) -> dict[tuple[str, int], tuple[str, list[tuple[str, int]]]]:
    """`(local VIP, target port)` → (service id, reachable backends) for every VIP-mode service with declared
    TCP ports: a node's service listeners (VIP-style access for process tasks)."""
    out: dict[tuple[str, int], tuple[str, list[tuple[str, int]]]] = {}
    for entry in t.get("services") or []:
        if entry["mode"] != "vip":
            continue
        addr = local_vip(entry["id"])
        for p in entry["ports"]:
            if p["protocol"] != "tcp":
                continue
            addrs = [a for b in entry["backends"] if (a := reach(b, "tcp", p["target_port"]))]
            out.setdefault((addr, p["target_port"]), (entry["id"], addrs))
    return out


def hosts_lines(t: Obj) -> list[str]:
    """A hosts(5) file for process tasks: `<name>` → the service's local VIP (VIP mode) or each backend's node
    address (dnsrr), and `tasks.<name>` → each backend's node address."""
    lines: list[str] = []
    for entry in t.get("services") or []:
        name = entry["name"]
        addrs = sorted({str(b["node_addr"]) for b in entry["backends"] if b.get("node_addr")})
        if entry["mode"] == "vip":
            lines.append(f"{local_vip(entry['id'])}\t{name}")
        else:
            lines.extend(f"{a}\t{name}" for a in addrs)
        lines.extend(f"{a}\ttasks.{name}" for a in addrs)
    return lines


def discovery(t: Obj) -> Obj:
    """The endpoints file for process tasks (`SHOAL_ENDPOINTS_FILE`): per service name its VIP-style address
    and, per target port, the tasks' reachable `host:port` (dnsrr clients pick from these)."""
    out: Obj = {}
    for entry in t.get("services") or []:
        tasks: dict[str, list[str]] = {}
        for p in entry["ports"]:
            key = port_key(p["protocol"], p["target_port"])
            tasks[key] = [f"{a}:{port}" for b in entry["backends"]
                          if (r := reach(b, p["protocol"], p["target_port"])) for a, port in [r]]
        out[entry["name"]] = {"mode": entry["mode"],
                              "vip": local_vip(entry["id"]) if entry["mode"] == "vip" else None,
                              "ports": [port_key(p["protocol"], p["target_port"]) for p in entry["ports"]],
                              "tasks": tasks,
                              "addresses": sorted({a for b in entry["backends"] for a in b["addresses"].values()})}
    return out


# ---- observability -----------------------------------------------------------------------------------------

def network_view(network: Obj, services: Iterable[Obj], tasks: Iterable[Obj], nodes: Iterable[Obj]) -> Obj:
    """What `GET /v1/networks/{ref}` adds to the network object: each node's attachment (its load-balancer
    address on the network, its node address) and the endpoints of the services on it — their VIP on this
    network, their ports and the backends currently behind them."""
    nid = str(network["id"])
    node_list = list(nodes)
    attached = []
    for n in sorted(node_list, key=lambda x: str(x["id"])):
        for att in n.get("attachments") or []:
            if str(att.get("network_id")) == nid:
                attached.append({"node_id": n["id"], "hostname": (n.get("description") or {}).get("hostname"),
                                 "node_addr": (n.get("status") or {}).get("addr"), "address": att.get("address")})
    rows = []
    for row in table(services, tasks, node_list):
        if nid not in row["networks"]:
            continue
        rows.append({**row, "vips": [v for v in row["vips"] if v["network_id"] == nid]})
    return {"nodes": attached, "endpoints": rows}
