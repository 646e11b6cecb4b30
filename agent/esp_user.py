"""Userspace ESP for encrypted overlay networks on kernels without `CONFIG_INET_ESP`/`CONFIG_CRYPTO_GCM`
(docs/networking.md, "Encrypted networks"), opt-in with `SHOAL_ESP_USERSPACE=true`.

The same SAs as the kernel path (agent/ipsec_plan.py: SPIs and rfc4106 keys derived from the key ring and the
two node addresses), the same wire format (RFC 4303 ESP, transport mode, IP protocol 50, AES-GCM with a
128-bit ICV, RFC 4106 nonce = salt || 8-byte IV, AAD = SPI || sequence number, next header UDP) — only the
packet processing runs in the agent instead of the kernel:
- **out**: the agent owns a TUN device `sh-e…` with a link-local /24 (`relay_net`); each peer node gets a
  *relay address* in it, and the encrypted network's FDB entries for the peer's tasks point there (instead of
  the peer's address), so the VXLAN device's datagrams for that peer are routed into the TUN device and read by
  the agent, never leaving the node; each is sealed (a UDP header to the peer's VXLAN port + the VXLAN
  datagram, ESP-encrypted with the primary key's SA) and sent to the peer as an ESP packet through a raw
  socket. (Not a local UDP port: the kernel's VXLAN delivers frames for a local address to a local VXLAN
  device directly, without UDP — `vxlan_encap_bypass` — so a relay socket would never see them.)
- **in**: a raw IPPROTO_ESP socket receives ESP packets for this node's address; the SPI picks the SA (any key
  of the ring), the packet is authenticated and decrypted, and its VXLAN datagram delivered to this node's
  VXLAN port from the node's own address.
No xfrm policy is installed: they would match every VXLAN datagram between the two nodes, and so block the
plain networks' frames the engine does not relay. The encrypted network's frames cannot leave in the clear
because its FDB entries point only at relay addresses (added once the engine holds the peer's SAs); what is
not prevented is a forged plaintext VXLAN datagram *arriving* for the encrypted network's VNI (Docker drops
those with an iptables u32 match on the VNI; not built). Rotation is a swap of the SA tables (the new ring's
SAs in, the primary switched, the dropped key's out, at once). Costs a copy through the agent per packet (see
docs/performance.md); IPv4 only; no anti-replay window."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.ipsec_plan import SA, PeerNode, PeerPlan

log = logging.getLogger(__name__)

IPPROTO_ESP = 50
NEXT_UDP = 17
ICV = 16
RELAY_BUFFER = 1 << 21
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
Run = Callable[..., Awaitable[str]]


def relay_net(local: str) -> str:
    """The link-local /24 of a node's relay addresses (169.254.N.0/24, N from its address: agents of one
    machine get different ones)."""
    return f"169.254.{1 + int(ipaddress.IPv4Address(local)) % 250}.0/24"


def tun_name(local: str) -> str:
    return "sh-e" + hashlib.sha256(local.encode()).hexdigest()[:8]


def seal(sa: SA, seq: int, src_port: int, dst_port: int, payload: bytes, iv: bytes) -> bytes:
    """One ESP packet (without IP header) carrying a UDP datagram `src_port` → `dst_port` with `payload`."""
    key = bytes.fromhex(sa.key)
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload  # checksum 0: IPv4 allows it
    pad = (-(len(udp) + 2)) % 4
    plain = udp + bytes(range(1, pad + 1)) + bytes([pad, NEXT_UDP])
    header = struct.pack("!II", sa.spi, seq)
    return header + iv + AESGCM(key[:16]).encrypt(key[16:20] + iv, plain, header)


def open_(sa: SA, packet: bytes) -> tuple[int, bytes] | None:
    """(UDP destination port, payload) of an ESP packet (without IP header) under `sa`; None when it does not
    authenticate or is malformed."""
    if len(packet) < 8 + 8 + ICV + 2:
        return None
    key = bytes.fromhex(sa.key)
    header, iv = packet[:8], packet[8:16]
    try:
        plain = AESGCM(key[:16]).decrypt(key[16:20] + iv, packet[16:], header)
    except InvalidTag:
        return None
    pad, nxt = plain[-2], plain[-1]
    udp = plain[:len(plain) - 2 - pad]
    if nxt != NEXT_UDP or len(udp) < 8:
        return None
    return struct.unpack("!H", udp[2:4])[0], udp[8:]


@dataclass
class _Peer:
    node: PeerNode
    out: SA
    relay: str  # its relay address (the FDB entries' destination)
    seq: int = 0
    sent: int = 0


@dataclass
class Engine:
    """The userspace ESP of one node (address `local`, VXLAN port `local_port`)."""
    local: str
    local_port: int
    random_bytes: Callable[[int], bytes] = os.urandom
    peers: dict[PeerNode, _Peer] = field(default_factory=dict)
    inbound: dict[int, SA] = field(default_factory=dict)  # SPI -> SA (peer -> this node), every key of the ring
    received: int = 0
    rejected: int = 0
    _plans: dict[PeerNode, PeerPlan] = field(default_factory=dict)
    _raw: socket.socket | None = None
    _inject: socket.socket | None = None
    _tun: int | None = None
    _by_relay: dict[bytes, _Peer] = field(default_factory=dict)

    async def start(self, run: Run) -> None:
        if self._raw is not None:
            return
        name = tun_name(self.local)
        net = ipaddress.IPv4Network(relay_net(self.local))
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
            await run(["ip", "addr", "replace", f"{net[254]}/{net.prefixlen}", "dev", name])
            await run(["ip", "link", "set", name, "up"])
            # while the agent (and so its TUN) is down, frames for the relay addresses are dropped, never routed
            # on in the clear (the TUN's own route wins while it exists)
            await run(["ip", "route", "replace", "blackhole", str(net), "metric", "4096"])
            # the VXLAN's source is the node address, a loopback one in a local cluster: allowed out of the TUN
            with open(f"/proc/sys/net/ipv4/conf/{name}/route_localnet", "w") as f:
                f.write("1")
        except BaseException:
            os.close(fd)
            raise
        self._tun = fd
        asyncio.get_running_loop().add_reader(fd, self._on_tun)
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_ESP)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RELAY_BUFFER)
        raw.bind((self.local, 0))
        raw.setblocking(False)
        inject = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        inject.bind((self.local, 0))
        inject.setblocking(False)
        self._raw, self._inject = raw, inject
        asyncio.get_running_loop().add_reader(raw.fileno(), self._on_esp)

    def close(self) -> None:
        self.peers.clear()
        self._by_relay.clear()
        if self._tun is not None:  # the TUN device goes with its descriptor
            asyncio.get_running_loop().remove_reader(self._tun)
            os.close(self._tun)
            self._tun = None
        self.inbound.clear()
        if self._raw is not None:
            asyncio.get_running_loop().remove_reader(self._raw.fileno())
            self._raw.close()
        if self._inject is not None:
            self._inject.close()
        self._raw = self._inject = None

    async def set_peer(self, node: PeerNode, plan: PeerPlan, run: Run) -> str:
        """Install (or re-key) a peer; returns the relay address its FDB entries point at."""
        await self.start(run)
        out = next(sa for sa in plan.sas if sa.spi == plan.out_spi and sa.src == self.local)
        peer = self.peers.get(node)
        if peer is None:
            net = ipaddress.IPv4Network(relay_net(self.local))
            taken = {p.relay for p in self.peers.values()}
            free = next((str(a) for a in list(net.hosts())[:253] if str(a) not in taken), None)
            if free is None:
                raise OSError("no relay address left (253 peer nodes)")
            peer = self.peers[node] = _Peer(node, out, free)
            self._by_relay[socket.inet_aton(free)] = peer
        peer.out = out  # the new primary: the peer has accepted it since the previous rotation
        self._rebuild_inbound(extra={node: plan})
        return peer.relay

    def drop_peer(self, node: PeerNode) -> None:
        peer = self.peers.pop(node, None)
        if peer is not None:
            self._by_relay.pop(socket.inet_aton(peer.relay), None)
        self._plans.pop(node, None)
        self._rebuild_inbound()

    def _rebuild_inbound(self, extra: dict[PeerNode, PeerPlan] | None = None) -> None:
        self._plans.update(extra or {})
        self.inbound = {sa.spi: sa for plan in self._plans.values() for sa in plan.sas if sa.dst == self.local}

    def relay_addr(self, node: PeerNode) -> str | None:
        peer = self.peers.get(node)
        return peer.relay if peer is not None else None

    def _on_tun(self) -> None:
        """The VXLAN device's datagrams routed into the TUN device: sealed and sent to their peer."""
        assert self._tun is not None
        for _ in range(64):
            try:
                pkt = os.read(self._tun, 65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("esp: tun read: %s", e)
                return
            if len(pkt) < 28 or pkt[0] >> 4 != 4 or pkt[9] != NEXT_UDP:
                continue  # not IPv4/UDP (e.g. nothing the VXLAN sent)
            peer = self._by_relay.get(pkt[16:20])
            ihl = (pkt[0] & 0x0F) * 4
            if peer is not None:
                self.send(peer.node, pkt[ihl + 8:])

    def send(self, node: PeerNode, datagram: bytes) -> None:
        peer = self.peers.get(node)
        if peer is None or self._raw is None:
            return
        peer.seq = (peer.seq + 1) & 0xFFFFFFFF or 1
        packet = seal(peer.out, peer.seq, self.local_port, node.port, datagram, self.random_bytes(8))
        try:
            self._raw.sendto(packet, (node.addr, 0))
            peer.sent += 1
        except OSError as e:  # a full buffer: dropped, like a congested link
            log.debug("esp: send to %s: %s", node.addr, e)

    def _on_esp(self) -> None:
        assert self._raw is not None and self._inject is not None
        for _ in range(64):
            try:
                data, _ = self._raw.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("esp: receive: %s", e)
                return
            ihl = (data[0] & 0x0F) * 4
            if len(data) < ihl + 8 or socket.inet_ntoa(data[16:20]) != self.local:
                continue  # another node's (agents of one machine share the raw ESP stream)
            spi = struct.unpack("!I", data[ihl:ihl + 4])[0]
            sa = self.inbound.get(spi)
            if sa is None or sa.src != socket.inet_ntoa(data[12:16]):
                self.rejected += 1
                continue
            opened = open_(sa, data[ihl:])
            if opened is None or opened[0] != self.local_port:
                self.rejected += 1
                continue
            self.received += 1
            try:
                self._inject.sendto(opened[1], (self.local, self.local_port))
            except OSError as e:
                log.debug("esp: deliver: %s", e)

    def status(self) -> dict[str, Any]:
        return {"received": self.received, "rejected": self.rejected, "tun": tun_name(self.local),
                "peers": {p.node.addr: {"relay": p.relay, "sent": p.sent, "out_spi": f"0x{p.out.spi:08x}"}
                          for p in self.peers.values()}}
