"""Containers on overlay networks, kernel path (docs/networking.md, "Containers on overlay networks"): the
per-node realisation of each network a container task of this node is attached to, its VXLAN link to the
other nodes, the containers' veths and addresses, their /etc/hosts, the VIP balancers and the host ports the
routing mesh reaches them on. The plans are pure (agent/overlay_plan.py); this module runs them with iproute2
and keeps them in step with the endpoint table (shoal/endpoints.py).

- `check()` at agent start: root, `ip`/`bridge`/`nsenter`, and that the kernel creates a namespace, a bridge,
  a veth pair and a VXLAN device (tried in a scratch namespace). What is missing is logged as an error and
  shown in `/v1/status`; container tasks then stay on the engine's default bridge (the userspace path).
- `attach(task, pid)` once the container runs (created with network mode `none`): the network's namespace
  (`sh-<node>-<net>`: bridge `br0` with the gateway, `vx0`) on first use, a veth pair into the container
  with the task's address, MAC (derived from it) and default route, the neighbour/FDB entries and VIPs of the
  last table, and a **host forwarder** per declared TCP port: a listener on the node address (a port the
  kernel picks; host mode: the published port) connecting inside the namespace to `<task address>:<target
  port>`, reported as the task's `port_status` so the routing mesh and the VIP balancers reach the container.
- `apply(table)` with every table: neighbour/FDB entries for the RUNNING tasks on other nodes, the VIPs on the
  bridge, one **VIP balancer** per (VIP, declared TCP port) listening inside the namespace (agent/mesh.py's
  Listener, sockets made in the namespace) and forwarding to the service's tasks at `<node address>:<host
  port>`, and every attached container's /etc/hosts (bind-mounted; rewritten in place).
- `detach(task_id)` when the container goes: its forwarders, its veth, its hosts file, and the network's
  namespace (with the bridge and the VXLAN device) once no container of this node uses the network."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import ipsec_plan
from agent import overlay_plan as plan
from agent.mesh import Listener
from agent.netns import Forwarder, OverlayError, run, socket_in
from agent.overlay_plan import Argv, Attachment, Peer
from shoal import netkeys

if TYPE_CHECKING:  # cryptography's AES-GCM, loaded only when an agent encrypts in userspace
    from agent.esp_user import Engine

log = logging.getLogger(__name__)

Obj = dict[str, Any]
NETNS_DIR = Path("/var/run/netns")


@dataclass
class _Net:
    network_id: str
    ns: str
    peers: set[Peer] = field(default_factory=set)
    vips: set[str] = field(default_factory=set)
    tasks: set[str] = field(default_factory=set)
    balancers: dict[tuple[str, int], Listener] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.ns


@dataclass
class _Attached:
    task: Obj
    pid: int
    attachments: list[Attachment]
    forwarders: list[Forwarder] = field(default_factory=list)
    port_status: Obj | None = None


class Overlay:
    def __init__(self, state_dir: Path, *, node_id: Callable[[], str], addr: str | None = None,
                 base_port: int = plan.DEFAULT_VXLAN_PORT, esp_userspace: bool = False) -> None:
        self.dir = state_dir / "overlay"
        self.node_id = node_id
        self.addr = addr  # SHOAL_ADDR: the VXLAN's local address and where host forwarders listen
        self.base_port = base_port
        self.missing: list[str] | None = None  # None: not checked yet
        self.table: Obj = {}
        self.nets: dict[str, _Net] = {}
        self.attached: dict[str, _Attached] = {}
        self._lock = asyncio.Lock()
        #: what the kernel lacks for encrypted networks (IPsec ESP via xfrm); None: not checked yet
        self.ipsec_missing: list[str] | None = None
        #: the ESP state installed towards each peer node of an encrypted network (memory only, like the keys)
        self.secured: dict[ipsec_plan.PeerNode, ipsec_plan.PeerPlan] = {}
        #: how encrypted networks are encrypted here: "kernel" (xfrm SAs), "userspace" (agent/esp_user.py, opted
        #: in for kernels without ESP), None (they cannot be: their containers fail)
        self.esp_mode: str | None = None
        self.esp_userspace = esp_userspace
        self.engine: Engine | None = None

    # ---- availability ------------------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return self.missing == []

    async def check(self) -> list[str]:
        """What this machine lacks for the kernel path (empty: nothing). Logged loudly when something is."""
        missing: list[str] = []
        if os.geteuid() != 0:
            missing.append("root (CAP_NET_ADMIN and CAP_SYS_ADMIN: namespaces and links)")
        for tool in ("ip", "bridge", "nsenter"):
            if shutil.which(tool) is None:
                missing.append(f"the `{tool}` command (iproute2 / util-linux)")
        if not missing:
            scratch = f"{plan.PREFIX}probe-{os.getpid()}"
            trials: list[tuple[str, Argv]] = [
                ("network namespaces", ["ip", "netns", "add", scratch]),
                ("bridges", ["ip", "-n", scratch, "link", "add", "br0", "type", "bridge"]),
                ("veth pairs", ["ip", "-n", scratch, "link", "add", "va", "type", "veth", "peer", "name", "vb"]),
                ("VXLAN devices (the vxlan module)",
                 ["ip", "-n", scratch, "link", "add", "vx0", "type", "vxlan", "id", "4096", "dstport", "4789",
                  "nolearning", "proxy"]),
            ]
            for what, argv in trials:
                try:
                    await run(argv)
                except (OverlayError, OSError) as e:
                    missing.append(f"kernel support for {what}: {e}")
                    break
            await run(["ip", "netns", "del", scratch], check=False)
        if not missing:
            await self._check_ipsec()
        self.missing = missing
        if missing:
            log.error("overlay: containers cannot be attached to overlay networks on this node; missing: %s. "
                      "Container tasks stay on the engine's default bridge, reached through host ports (the "
                      "routing mesh keeps working)", "; ".join(missing))
        else:
            log.info("overlay: kernel path available (namespaces, bridges, veths, VXLAN)")
        return missing

    async def _check_ipsec(self) -> None:
        """What encrypted networks need of the kernel (xfrm, ESP, AES-GCM), tried in a scratch namespace; every
        missing piece is named. Not fatal for plain networks: only a container of an encrypted network then
        fails (never its traffic in the clear)."""
        scratch = f"{plan.PREFIX}probe-ipsec-{os.getpid()}"
        missing: list[str] = []
        try:
            await run(["ip", "netns", "add", scratch])
            for what, argv in ipsec_plan.probe_commands("192.0.2.1", "192.0.2.2"):
                try:
                    await run(["ip", "-n", scratch, *argv[1:]])
                except (OverlayError, OSError) as e:  # the kernel's words, not the whole command
                    missing.append(f"kernel support for {what}: {str(e).rpartition('failed: ')[2]}")
        except (OverlayError, OSError) as e:
            missing.append(f"a scratch namespace for the IPsec check: {e}")
        finally:
            await run(["ip", "netns", "del", scratch], check=False)
        self.ipsec_missing = missing
        if not missing:
            self.esp_mode = "kernel"
        elif self.esp_userspace and not any("xfrm framework" in m for m in missing):
            self.esp_mode = "userspace"
            log.warning("overlay: the kernel lacks %s; encrypted networks are encrypted by the agent "
                        "(SHOAL_ESP_USERSPACE: userspace ESP; a blackhole route drops their frames while "
                        "the engine is down)", "; ".join(missing))
            return
        if missing:
            log.error("overlay: encrypted networks cannot be used on this node; missing: %s. Containers of "
                      "encrypted networks fail here (their traffic is never sent in the clear); plain networks "
                      "are unaffected", "; ".join(missing))
        else:
            log.info("overlay: encrypted networks available (xfrm, ESP, %s)", netkeys.ALGORITHM)

    def attachments(self, task: Obj) -> list[Attachment]:
        """The networks the container is attached to by this overlay (none when it is unavailable)."""
        return plan.attachments(task) if self.available else []

    def hosts_file(self, task_id: str) -> Path:
        return self.dir / "hosts" / task_id

    def write_hosts(self, task: Obj) -> Path:
        """Write the task's hosts file from the last table (before the container is created: it is bind-
        mounted on /etc/hosts). Rewritten in place later, so the mount keeps seeing it."""
        path = self.hosts_file(str(task["id"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        text = plan.hosts_text(task, self.table)
        try:
            if path.read_text() == text:
                return path
        except OSError:
            pass
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
        return path

    # ---- containers ---------------------------------------------------------------------------------------
    def is_attached(self, task_id: str) -> bool:
        return task_id in self.attached

    async def attach(self, task: Obj, pid: int, previous: Obj | None = None) -> Obj | None:
        """Plumb the running container (`pid`) into its networks (what it already has is kept: an agent restart
        adopting it); returns its port_status (host forwarders, on the ports of `previous` when it is given and
        they are free, so the routing mesh's view stays valid across an agent restart)."""
        tid = str(task["id"])
        atts = self.attachments(task)
        encrypted = {str(a.get("network_id")) for a in task.get("networks") or [] if a.get("encrypted")}
        if encrypted & {a.network_id for a in atts} and self.ipsec_missing and self.esp_mode is None:
            raise OverlayError(f"network(s) {', '.join(sorted(encrypted))} are encrypted and this node cannot "
                               f"encrypt: missing {'; '.join(self.ipsec_missing)}")
        async with self._lock:
            node = self.node_id()
            local = self._local_addr()
            if not local:
                raise OverlayError("the node has no address yet (SHOAL_ADDR, or the dispatcher's table)")
            netns_path = f"/proc/{pid}/ns/net"
            present = await run(["nsenter", f"--net={netns_path}", "ip", "-o", "link", "show"])
            for att in atts:
                net = await self._ensure_net(att, node, local)
                net.tasks.add(tid)
                if f": eth{att.index}:" in present or f": eth{att.index}@" in present:
                    continue  # plumbed before (an agent restart adopting the container)
                host_end, ct_end = plan.veth_names(node, tid, att.index)
                await run(["ip", "link", "del", host_end], check=False)
                for argv in plan.attach_commands(net.ns, pid, host_end, ct_end, att):
                    await run(argv)
                log.info("overlay: task %s attached to network %s as %s (namespace %s)", tid, att.network_id,
                         att.cidr, net.ns)
            old = self.attached.pop(tid, None)
            if old is not None:
                for fw in old.forwarders:
                    await fw.close()
            entry = self.attached[tid] = _Attached(task, pid, atts)
            if atts:
                await self._forward(entry, self.nets[atts[0].network_id], previous)
            for att in atts:
                try:
                    await self._sync(self.nets[att.network_id])
                except OverlayError as e:  # the entries follow with the next table; the container is plumbed
                    log.warning("overlay: network %s: %s", att.network_id, e)
            self.write_hosts(task)
            return entry.port_status

    async def detach(self, task_id: str) -> None:
        """Release what the task's container held: forwarders, veths, hosts file; a network's namespace once
        no container of the node is on it."""
        async with self._lock:
            entry = self.attached.pop(task_id, None)
            node = self.node_id()
            if entry is not None:
                for fw in entry.forwarders:
                    await fw.close()
            for net in list(self.nets.values()):
                if task_id not in net.tasks:
                    continue
                net.tasks.discard(task_id)
                for i in range(len(entry.attachments) if entry is not None else 4):
                    host_end, _ = plan.veth_names(node, task_id, i)
                    await run(["ip", "-n", net.ns, "link", "del", host_end], check=False)
                    await run(["ip", "link", "del", host_end], check=False)  # a plumbing that failed half-way
                if not net.tasks:
                    await self._drop_net(net)
            with contextlib.suppress(OverlayError):
                await self._sync_ipsec()
            with contextlib.suppress(OSError):
                self.hosts_file(task_id).unlink()

    # ---- tables -------------------------------------------------------------------------------------------
    async def apply(self, table: Obj) -> None:
        async with self._lock:
            self.table = table
            await self._sweep()
            for net in list(self.nets.values()):
                try:
                    await self._sync(net)
                except OverlayError as e:
                    log.warning("overlay: network %s: %s", net.network_id, e)
            for entry in self.attached.values():
                try:
                    self.write_hosts(entry.task)
                except OSError as e:
                    log.warning("overlay: cannot write the hosts file of task %s: %s", entry.task["id"], e)

    async def close(self) -> None:
        """At agent exit: the balancers and forwarders stop; namespaces of networks without containers go (those
        of containers that outlive the agent stay, for the next agent process)."""
        async with self._lock:
            for entry in self.attached.values():
                for fw in entry.forwarders:
                    await fw.close()
            for net in list(self.nets.values()):
                for lst in net.balancers.values():
                    await lst.close()
                net.balancers.clear()
                if not net.tasks:
                    await self._drop_net(net)
            with contextlib.suppress(OverlayError):
                await self._sync_ipsec()  # ESP towards peers only of the networks gone with this exit
            if self.engine is not None:  # userspace ESP stops with the agent (the blackhole route stays)
                self.engine.close()
                self.engine = None

    def status(self) -> Obj:
        return {"available": self.available, "missing": self.missing,
                "encryption": {"missing": self.ipsec_missing, "mode": self.esp_mode,
                               "engine": self.engine.status() if self.engine is not None else None,
                               "key_lamports": sorted(int(k.get("lamport") or 0)
                                                      for k in self.table.get("network_keys") or []),
                               "peers": [{"node": p.addr, "port": p.port, "out_spi": f"0x{pp.out_spi:08x}"}
                                         for p, pp in sorted(self.secured.items())]},
                "networks": [{"network_id": n.network_id, "namespace": n.ns, "tasks": sorted(n.tasks),
                              "peers": [f"{p.address}@{p.node_addr}:{p.port}" for p in sorted(n.peers)],
                              "vips": sorted(n.vips),
                              "balancers": [lst.describe() for lst in n.balancers.values()]}
                             for n in self.nets.values()]}

    # ---- helpers ------------------------------------------------------------------------------------------
    def _local_addr(self) -> str:
        return str(self.addr or self.table.get("node_addr") or "")

    async def _ensure_net(self, att: Attachment, node: str, local: str) -> _Net:
        net = self.nets.get(att.network_id)
        if net is not None:
            return net
        ns = plan.ns_name(node, att.network_id)
        net = _Net(att.network_id, ns)
        if not (NETNS_DIR / ns).exists():
            vx = plan.vxlan_link(node, att.network_id)
            await run(["ip", "link", "del", vx], check=False)
            try:
                for argv in plan.network_commands(ns, vx, plan.vni(att.network_id), local,
                                                  plan.vxlan_port(local, self.base_port), att.gateway,
                                                  att.prefixlen):
                    await run(argv)
            except OverlayError:
                await run(["ip", "netns", "del", ns], check=False)
                await run(["ip", "link", "del", vx], check=False)
                raise
            log.info("overlay: network %s realised in namespace %s (VNI %d, VXLAN port %d on %s)", att.network_id,
                     ns, plan.vni(att.network_id), plan.vxlan_port(local, self.base_port), local)
        else:
            await self._read_back(net)
        self.nets[att.network_id] = net
        return net

    async def _read_back(self, net: _Net) -> None:
        """A namespace left by the previous agent process: learn its entries so the next sync is a diff."""
        try:
            neigh = json.loads(await run(["ip", "-j", "-n", net.ns, "neigh", "show", "dev", "vx0"]) or "[]")
            fdb = json.loads(await run(["bridge", "-j", "-n", net.ns, "fdb", "show", "dev", "vx0"]) or "[]")
            addrs = json.loads(await run(["ip", "-j", "-n", net.ns, "addr", "show", "dev", "br0"]) or "[]")
        except (OverlayError, ValueError):
            return
        where = {str(f.get("mac")): (str(f.get("dst")), int(f.get("port") or self.base_port)) for f in fdb
                 if f.get("dst")}
        for n in neigh:
            m = str(n.get("lladdr"))
            if m in where:
                net.peers.add(Peer(str(n.get("dst")), m, *where[m]))
        for a in addrs:
            for info in a.get("addr_info") or []:
                if info.get("prefixlen") == 32:
                    net.vips.add(str(info.get("local")))

    async def _sweep(self) -> None:
        """Delete this node's namespaces that this process does not use and no container is plugged into (no
        `sh-v…` veth left: a container's end goes with its namespace when it dies) — left by an agent that
        crashed after its containers went. Other nodes' namespaces (agents sharing the machine) are not
        touched: one may be between creating its namespace and plugging the first veth."""
        node = self.node_id()
        if not node:
            return
        mine = plan.ns_name(node, "")
        try:
            listed = await run(["ip", "netns", "list"])
        except (OverlayError, OSError):
            return
        for line in listed.splitlines():
            ns = line.split(" ", 1)[0]
            if not ns.startswith(mine) or any(n.ns == ns for n in self.nets.values()):
                continue
            links = await run(["ip", "-n", ns, "-o", "link", "show"], check=False)
            if f": {plan.PREFIX}v" in links:
                continue
            await run(["ip", "netns", "del", ns], check=False)
            log.info("overlay: removed namespace %s, left by an earlier agent process with no container", ns)

    async def _drop_net(self, net: _Net) -> None:
        for lst in net.balancers.values():
            await lst.close()
        net.balancers.clear()
        await run(["ip", "netns", "del", net.ns], check=False)  # takes its bridge and VXLAN device with it
        self.nets.pop(net.network_id, None)
        log.info("overlay: network %s removed from this node (namespace %s)", net.network_id, net.ns)

    def _encrypted(self, network_id: str) -> bool:
        return network_id in (self.table.get("encrypted_networks") or ())

    async def _sync_ipsec(self, *, removals: bool = True) -> None:
        """The ESP SAs and policies towards every peer node of this node's encrypted networks, from the last
        table's peers and key ring (agent/ipsec_plan.py): added before any FDB entry sends a frame there,
        rotated in the no-loss order, removed with the last encrypted network towards the peer — only after its
        FDB entries went (`removals=False` first, the full pass after the neighbour diff)."""
        local = self._local_addr()
        local_port = plan.vxlan_port(local, self.base_port)
        keys = list(self.table.get("network_keys") or [])
        wanted: set[ipsec_plan.PeerNode] = set()
        if self.esp_mode is not None and keys:
            for net in self.nets.values():
                if self._encrypted(net.network_id):
                    wanted |= {ipsec_plan.PeerNode(p.node_addr, p.port) for p in
                               plan.peers(self.table, net.network_id, local, base_port=self.base_port)}
        for peer in sorted(wanted | set(self.secured)):
            have = self.secured.get(peer)
            want = ipsec_plan.peer_plan(local, peer.addr, keys) if peer in wanted else None
            if have == want or (want is None and not removals):
                continue
            cmds = ipsec_plan.transition(local, local_port, peer, have, want)
            try:
                if self.esp_mode == "userspace":  # the engine holds the SAs; no kernel policy (see esp_user.py)
                    cmds = []
                    if want is not None:
                        if self.engine is None:
                            from agent.esp_user import Engine

                            self.engine = Engine(local, local_port)
                        await self.engine.set_peer(peer, want, run)
                for argv in cmds:
                    try:
                        await run(argv, check="delete" not in argv)
                    except OverlayError as e:
                        if "File exists" not in str(e):  # agents of one machine share the SAs they both derive
                            raise
                if want is None and self.engine is not None:
                    self.engine.drop_peer(peer)
            except (OverlayError, OSError) as e:
                self.secured.pop(peer, None)  # installed again from scratch with the next table
                raise OverlayError(f"ESP towards node {peer.addr}: {e}") from e
            if want is None:
                self.secured.pop(peer, None)
                log.info("overlay: ESP towards node %s removed", peer.addr)
            else:
                self.secured[peer] = want
                log.info("overlay: ESP towards node %s installed (sending with SPI 0x%08x)", peer.addr, want.out_spi)

    def _via(self, p: Peer) -> Peer:
        """Where the VXLAN sends a remote task's frames: its node, or (userspace ESP) the relay address the
        agent's engine reads them from."""
        if self.esp_mode != "userspace" or self.engine is None:
            return p
        relay = self.engine.relay_addr(ipsec_plan.PeerNode(p.node_addr, p.port))
        return p if relay is None else Peer(p.address, p.mac, relay, p.port)

    async def _sync(self, net: _Net) -> None:
        """Neighbour/FDB entries, VIPs and balancers of the network from the last table. For an encrypted
        network, frames go only to peer nodes whose ESP state is installed (none without keys or kernel
        support): nothing of it ever crosses in the clear."""
        want_peers = plan.peers(self.table, net.network_id, self._local_addr(), base_port=self.base_port)
        if self._encrypted(net.network_id):
            await self._sync_ipsec(removals=False)
            want_peers = {self._via(p) for p in want_peers
                          if ipsec_plan.PeerNode(p.node_addr, p.port) in self.secured}
        add, remove = want_peers - net.peers, net.peers - want_peers
        for argv in plan.neighbour_commands(net.ns, add, remove):
            await run(argv, check="del" not in argv)
        net.peers = want_peers
        if self._encrypted(net.network_id):
            await self._sync_ipsec()  # ESP towards peers whose entries just went
        want_vips = plan.vips(self.table, net.network_id)
        for argv in plan.vip_commands(net.ns, want_vips - net.vips, net.vips - want_vips):
            await run(argv, check="del" not in argv)
        net.vips = want_vips
        routes = plan.vip_routes(self.table, net.network_id)
        for key in list(net.balancers):
            if key not in routes:
                await net.balancers.pop(key).close()
        for (vip, port), (sid, backends) in routes.items():
            lst = net.balancers.get((vip, port))
            if lst is None:
                lst = net.balancers[(vip, port)] = Listener("overlay-vip", vip, port, connect_timeout=2.0,
                                                            reuse_port=False,
                                                            sock_factory=self._listening(net.path, vip, port))
            await lst.update(sid, backends)

    @staticmethod
    def _listening(netns: Path, host: str, port: int) -> Callable[[], socket.socket]:
        def make() -> socket.socket:
            sock = socket_in(netns)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(128)
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            return sock
        return make

    async def _forward(self, entry: _Attached, net: _Net, previous: Obj | None) -> None:
        """A host forwarder per declared TCP port of the task, into its first network's namespace."""
        att = entry.attachments[0]
        before = {int(p["target_port"]): int(p["published_port"]) for p in (previous or {}).get("ports") or []
                  if p.get("protocol") == "tcp"}
        out = []
        seen: set[int] = set()
        for p in (entry.task.get("endpoint") or {}).get("ports") or []:
            target = int(p.get("target_port") or 0)
            if str(p.get("protocol") or "tcp") != "tcp" or not target or target in seen:
                continue
            seen.add(target)
            mode = str(p.get("publish_mode") or "ingress")
            published = int(p.get("published_port") or 0) if mode == "host" else 0
            fw = Forwarder(net.path, att.address, target)
            try:
                try:
                    await fw.open(self._local_addr() or "0.0.0.0", published or before.get(target, 0))
                except OSError:
                    if published or not before.get(target):
                        raise
                    await fw.open(self._local_addr() or "0.0.0.0", 0)  # the earlier port was taken meanwhile
            except OSError as e:
                raise OverlayError(f"cannot open host port {published or '(any)'} for target port {target}: {e}")\
                    from e
            entry.forwarders.append(fw)
            out.append({"protocol": "tcp", "target_port": target, "published_port": fw.port, "publish_mode": mode})
        entry.port_status = {"ports": out} if out else None
