"""The pure half of the container overlay (agent/overlay.py; docs/networking.md, "Containers on overlay
networks"): names, derived identifiers, and the plans of links, addresses, neighbour and FDB entries a node
needs for a network, computed from the task's attachments and the endpoint table (shoal/endpoints.py). No I/O.

The realisation of network N on node X is a network namespace `ns_name(X, N)` holding a bridge `br0` with the
network's gateway address (and every VIP of the network, /32), a VXLAN device `vx0` (VNI `vni(N)`, UDP port
`vxlan_port(X's address)`, `nolearning proxy`) joined to the bridge, and one veth pair per container (`sh-v…`
in the namespace on the bridge, `eth<i>` in the container with the task's address, a MAC derived from it and a
default route via the gateway). The control plane knows every RUNNING task's address and node; from it each node
writes, for every remote task of the network, a permanent neighbour entry (address → derived MAC) on `vx0`
and an FDB entry (MAC → the task's node address and VXLAN port), as Docker's overlay driver does. With `proxy`
ARP requests are answered on the node from those entries and never cross the VXLAN, so the gateway and VIP
addresses every node's bridge carries stay local."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any

from shoal import endpoints

Obj = dict[str, Any]
Argv = list[str]

DEFAULT_VXLAN_PORT = 4789  # IANA's VXLAN port, what a node with a routable address uses
LOOPBACK_PORT_BASE = 4790  # nodes with loopback addresses (a local cluster on one machine) each get their own
VNI_BASE = 4096  # Docker's overlay driver starts its VNIs there too
MTU = 1450  # the containers' and the VXLAN's MTU: 1500 of an Ethernet underlay less VXLAN's 50 bytes (Docker's)
PREFIX = "sh-"  # every link and namespace the agent creates starts with it (find leaks with `ip link | grep sh-`)


def _h(*parts: str, n: int = 8) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:n]


def vni(network_id: str) -> int:
    """The network's VXLAN id, derived from its id (the same on every node): 4096 .. 2^24-1."""
    span = (1 << 24) - VNI_BASE
    return VNI_BASE + int(_h(network_id, n=8), 16) % span


def vxlan_port(node_addr: str, base: int = DEFAULT_VXLAN_PORT) -> int:
    """The UDP port a node's VXLAN devices receive on, derived from its address so every node computes every
    peer's. Nodes of one machine (loopback addresses 127.x.y.z) share one network namespace, where the kernel
    allows one VXLAN device per (VNI, port): each gets a port of its own, 4790 + the low 10 bits of its address."""
    try:
        ip = ipaddress.ip_address(node_addr)
    except ValueError:
        return base
    if ip.is_loopback and ip.version == 4:
        return LOOPBACK_PORT_BASE + (int(ip) & 0x3FF)
    return base


def mac(address: str) -> str:
    """The MAC of a task's interface, derived from its IPv4 address as Docker does (02:42:a:b:c:d)."""
    b = ipaddress.IPv4Address(address).packed
    return "02:42:" + ":".join(f"{x:02x}" for x in b)


def ns_name(node_id: str, network_id: str) -> str:
    return f"{PREFIX}{node_id[:10]}-{network_id[:10]}"


def vxlan_link(node_id: str, network_id: str) -> str:
    """The VXLAN device's name while it is created in the agent's namespace (renamed `vx0` in the network's)."""
    return f"{PREFIX}x{_h(node_id, network_id)}"


def veth_names(node_id: str, task_id: str, index: int) -> tuple[str, str]:
    """(the end on the bridge, the end moved into the container) — 12 characters, under IFNAMSIZ."""
    h = _h(node_id, task_id, str(index))
    return f"{PREFIX}v{h}", f"{PREFIX}c{h}"


@dataclass(frozen=True)
class Attachment:
    """One of a task's networks as the container gets it."""
    network_id: str
    index: int  # eth<index> in the container
    address: str  # without prefix length
    prefixlen: int
    gateway: str

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"

    @property
    def subnet(self) -> str:
        return str(ipaddress.ip_interface(self.cidr).network)


def attachments(task: Obj) -> list[Attachment]:
    """The task's overlay attachments (allocator's `task.networks`), IPv4 only. The ingress network is left out
    (the routing mesh reaches containers through host ports, docs/networking.md): it is the attachment the
    allocator puts first when the task's own spec does not name it. The gateway is the subnet's first host
    address (the allocator's default; a user-given gateway is not known to the agent)."""
    wanted = {str(a.get("target")) for a in ((task.get("spec") or {}).get("networks") or [])}
    out: list[Attachment] = []
    for i, att in enumerate(task.get("networks") or []):
        nid = str(att.get("network_id") or "")
        addrs = att.get("addresses") or []
        if not nid or not addrs or (i == 0 and nid not in wanted):
            continue
        try:
            iface = ipaddress.ip_interface(str(addrs[0]))
        except ValueError:
            continue
        if iface.version != 4 or iface.network.prefixlen >= 31:
            continue
        gateway = str(next(iface.network.hosts()))
        out.append(Attachment(nid, len(out), str(iface.ip), iface.network.prefixlen, gateway))
    return out


@dataclass(frozen=True, order=True)
class Peer:
    """A remote task's address on a network, and where its frames go."""
    address: str
    mac: str
    node_addr: str
    port: int


def peers(table: Obj, network_id: str, own_addr: str, *, base_port: int = DEFAULT_VXLAN_PORT) -> set[Peer]:
    """Every backend (RUNNING task) of the table's services with an address on the network, on another node."""
    out: set[Peer] = set()
    for entry in table.get("services") or []:
        for b in entry.get("backends") or []:
            addr = (b.get("addresses") or {}).get(network_id)
            node = b.get("node_addr")
            if not addr or not node or node == own_addr:
                continue
            try:
                out.add(Peer(str(addr), mac(str(addr)), str(node), vxlan_port(str(node), base_port)))
            except ValueError:
                continue
    return out


def vips(table: Obj, network_id: str) -> set[str]:
    """The VIPs of the VIP-mode services on the network (each node's bridge carries them)."""
    return {v["addr"] for entry in table.get("services") or [] if entry.get("mode") == "vip"
            for v in entry.get("vips") or [] if v.get("network_id") == network_id and v.get("addr")}


def vip_routes(table: Obj, network_id: str) -> dict[tuple[str, int], tuple[str, list[tuple[str, int]]]]:
    """`(VIP, target port)` → (service id, backends reached at `<node address>:<host port>`) for the VIP-mode
    services of the network with declared TCP ports: the balancers a node runs inside its namespace."""
    out: dict[tuple[str, int], tuple[str, list[tuple[str, int]]]] = {}
    for entry in table.get("services") or []:
        if entry.get("mode") != "vip":
            continue
        for v in entry.get("vips") or []:
            if v.get("network_id") != network_id or not v.get("addr"):
                continue
            for p in entry.get("ports") or []:
                if p["protocol"] != "tcp":
                    continue
                reached = [a for b in entry["backends"] if (a := endpoints.reach(b, "tcp", p["target_port"]))]
                out.setdefault((v["addr"], int(p["target_port"])), (str(entry["id"]), reached))
    return out


def hosts_text(task: Obj, table: Obj) -> str:
    """The container's /etc/hosts: localhost, and for every service on one of its networks `<name>` → the
    service's VIP on that network (dnsrr: each task's address) and `tasks.<name>` → each task's address."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for att in attachments(task):
        for entry in table.get("services") or []:
            if att.network_id not in (entry.get("networks") or []):
                continue
            name = str(entry.get("name") or "")
            if not name:
                continue
            addrs = sorted({str(a) for b in entry.get("backends") or []
                            if (a := (b.get("addresses") or {}).get(att.network_id))},
                           key=ipaddress.ip_address)
            if entry.get("mode") == "vip":
                lines.extend(f"{v['addr']}\t{name}" for v in entry.get("vips") or []
                             if v.get("network_id") == att.network_id and v.get("addr"))
            else:
                lines.extend(f"{a}\t{name}" for a in addrs)
            lines.extend(f"{a}\ttasks.{name}" for a in addrs)
    return "# shoal service discovery (agent/overlay.py); rewritten with every endpoint table\n" + \
        "".join(line + "\n" for line in dict.fromkeys(lines))


# ---- command plans (argv lists for iproute2) ----------------------------------------------------------------

def network_commands(ns: str, vx: str, vni_: int, local: str, port: int, gateway: str, prefixlen: int) -> list[Argv]:
    """Create the namespace, its bridge with the gateway address and the VXLAN device joined to it."""
    return [
        ["ip", "netns", "add", ns],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
        ["ip", "-n", ns, "link", "add", "br0", "type", "bridge"],
        ["ip", "-n", ns, "addr", "add", f"{gateway}/{prefixlen}", "dev", "br0"],
        ["ip", "-n", ns, "link", "set", "br0", "up"],
        ["ip", "link", "add", vx, "mtu", str(MTU), "type", "vxlan", "id", str(vni_), "local", local, "dstport",
         str(port), "nolearning", "proxy"],
        ["ip", "link", "set", vx, "netns", ns],
        ["ip", "-n", ns, "link", "set", vx, "name", "vx0"],
        ["ip", "-n", ns, "link", "set", "vx0", "master", "br0", "up"],
    ]


def attach_commands(ns: str, pid: int, host_end: str, ct_end: str, att: Attachment) -> list[Argv]:
    """One veth pair: `host_end` on the namespace's bridge, `ct_end` renamed `eth<i>` in the network namespace
    of the container's process `pid`, with the task's address, MAC and (first network) the default route."""
    ct = ["nsenter", f"--net=/proc/{pid}/ns/net", "ip"]
    eth = f"eth{att.index}"
    cmds = [
        ["ip", "link", "add", host_end, "mtu", str(MTU), "type", "veth", "peer", "name", ct_end, "mtu", str(MTU)],
        ["ip", "link", "set", host_end, "netns", ns],
        ["ip", "-n", ns, "link", "set", host_end, "master", "br0", "up"],
        ["ip", "link", "set", ct_end, "netns", str(pid)],
        [*ct, "link", "set", ct_end, "name", eth],
        [*ct, "link", "set", eth, "address", mac(att.address)],
        [*ct, "addr", "add", att.cidr, "dev", eth],
        [*ct, "link", "set", eth, "up"],
    ]
    if att.index == 0:
        cmds.append([*ct, "route", "replace", "default", "via", att.gateway, "dev", eth])
    return cmds


def neighbour_commands(ns: str, add: set[Peer], remove: set[Peer]) -> list[Argv]:
    """The neighbour (address → MAC) and FDB (MAC → node address, port) entries on `vx0` to add and remove."""
    cmds: list[Argv] = []
    for p in sorted(remove):
        cmds.append(["ip", "-n", ns, "neigh", "del", p.address, "dev", "vx0"])
        cmds.append(["bridge", "-n", ns, "fdb", "del", p.mac, "dev", "vx0", "dst", p.node_addr, "self"])
    for p in sorted(add):
        cmds.append(["ip", "-n", ns, "neigh", "replace", p.address, "lladdr", p.mac, "dev", "vx0", "nud", "permanent"])
        cmds.append(["bridge", "-n", ns, "fdb", "replace", p.mac, "dev", "vx0", "dst", p.node_addr, "port",
                     str(p.port), "self", "permanent"])
    return cmds


def vip_commands(ns: str, add: set[str], remove: set[str]) -> list[Argv]:
    """VIPs as /32 addresses of the bridge (answered on the node; the balancers listen on them)."""
    return [*(["ip", "-n", ns, "addr", "del", f"{v}/32", "dev", "br0"] for v in sorted(remove)),
            *(["ip", "-n", ns, "addr", "replace", f"{v}/32", "dev", "br0"] for v in sorted(add))]
