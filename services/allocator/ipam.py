"""Address management for the allocator, pure: subnets for networks, addresses inside a network, ingress ports.

- `SubnetPool`: the subnets in use cluster-wide; hands out /24s from the default pool 10.0.0.0/8 (SwarmKit's
  `inbuiltDefaultAddressPool` and `inbuiltSubnetSize`), lowest free first, never one overlapping a subnet in
  use. The default ingress subnet 10.255.0.0/16 (Docker's) is kept out of the pool so the ingress network can
  always be created there. User-given subnets are taken as given when they overlap nothing in use.
- `AddressPool`: the host addresses of one network. The network and (IPv4) broadcast addresses are never
  handed out and the gateway is reserved; `take` returns the lowest free address at or after a cursor that
  only moves forward within a pass, so filling a pool costs O(addresses) per pass, not O(addresses²).
- `PortSpace`: published ingress ports, cluster-wide per protocol; `take` picks the lowest free port of the
  dynamic range 30000-32767 that no service publishes (in either mode).

Everything is rebuilt from the store by `services.allocator.core.AllocatorState.build`, so nothing here is
persisted: what the store holds is what is in use."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_POOL = "10.0.0.0/8"
DEFAULT_SUBNET_SIZE = 24
#: Docker's default ingress subnet; kept out of the default pool.
INGRESS_SUBNET = "10.255.0.0/16"
#: SwarmKit's dynamic range for ingress ports published without a number (`portallocator.go`).
DYNAMIC_PORT_START = 30000
DYNAMIC_PORT_END = 32767


@lru_cache(maxsize=65536)
def parse_address(text: str) -> tuple[int, int] | None:
    """(IP version, address as an int) of "10.0.1.5/24" or "10.0.1.5"; None when it is not an address."""
    try:
        ip = ipaddress.ip_interface(text.strip()).ip
    except ValueError:
        return None
    return ip.version, int(ip)


@lru_cache(maxsize=4096)
def parse_network(text: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def first_host(net: IPNetwork) -> IPAddress:
    """The default gateway of a subnet: its first host address."""
    return net.network_address + 1


class SubnetPool:
    """Subnets in use (allocated networks and subnets being allocated in this pass) and the default pool."""

    def __init__(self, pool: str = DEFAULT_POOL, size: int = DEFAULT_SUBNET_SIZE,
                 excluded: Iterable[str] = (INGRESS_SUBNET,)) -> None:
        self.pool = ipaddress.ip_network(pool)
        self.size = size
        self.taken: list[tuple[IPNetwork, str]] = []  # (subnet, owner network id)
        self._base = int(self.pool.network_address)
        self._shift = self.pool.max_prefixlen - size
        self._count = 1 << (size - self.pool.prefixlen)
        self._blocked: set[int] = set()  # indexes of pool subnets that overlap something taken or excluded
        self._cursor = 0
        for text in excluded:
            net = parse_network(text)
            if net is not None:
                self._block(net)

    def _block(self, net: IPNetwork) -> None:
        if net.version != self.pool.version:
            return
        lo = max(int(net.network_address), self._base)
        hi = min(int(net.broadcast_address), int(self.pool.broadcast_address))
        if lo <= hi:
            self._blocked.update(range((lo - self._base) >> self._shift, ((hi - self._base) >> self._shift) + 1))

    def overlapping(self, net: IPNetwork) -> tuple[IPNetwork, str] | None:
        """The subnet in use that `net` overlaps (with its owner), if any."""
        for other, owner in self.taken:
            if other.version == net.version and other.overlaps(net):  # type: ignore[arg-type]
                return other, owner
        return None

    def reserve(self, net: IPNetwork, owner: str) -> tuple[IPNetwork, str] | None:
        """Take `net` for `owner`; refused (returns the clash) when it overlaps a subnet owned by another."""
        clash = self.overlapping(net)
        if clash is not None and clash[1] != owner:
            return clash
        if clash is None:
            self.taken.append((net, owner))
            self._block(net)
        return None

    def take(self, owner: str) -> IPNetwork | None:
        """The lowest free subnet of the pool (None when the pool is exhausted), now taken by `owner`."""
        i = self._cursor
        while i < self._count and i in self._blocked:
            i += 1
        self._cursor = i
        if i >= self._count:
            return None
        net = ipaddress.ip_network((self._base + (i << self._shift), self.size))
        self.taken.append((net, owner))
        self._blocked.add(i)
        return net

    def is_free(self, net: IPNetwork) -> bool:
        return self.overlapping(net) is None


class AddressPool:
    """The host addresses of one network's subnet: gateway, network and broadcast addresses excluded."""

    def __init__(self, subnet: IPNetwork, gateway: IPAddress | None = None) -> None:
        self.subnet = subnet
        self.version = subnet.version
        self.prefixlen = subnet.prefixlen
        start, end = int(subnet.network_address), int(subnet.broadcast_address)
        self.first = start + 1
        self.last = end - 1 if subnet.version == 4 else end
        self.used: set[int] = set()
        self.gateway = gateway if gateway is not None else first_host(subnet)
        self.used.add(int(self.gateway))
        self._cursor = self.first

    def __contains__(self, addr: int) -> bool:
        return self.first <= addr <= self.last

    def reserve(self, addr: int) -> bool:
        """Mark `addr` used; False when it is outside the pool or already used."""
        if addr not in self or addr in self.used:
            return False
        self.used.add(addr)
        return True

    def reserve_many(self, addrs: Iterable[int]) -> None:
        """Mark addresses used (those outside the pool are ignored)."""
        lo, hi = self.first, self.last
        self.used.update(a for a in addrs if lo <= a <= hi)

    def release(self, addr: int) -> None:
        self.used.discard(addr)
        if addr < self._cursor and addr in self:
            self._cursor = addr

    def take(self) -> int | None:
        """The lowest free address at or after the cursor (None when the pool is full)."""
        a = self._cursor
        used = self.used
        while a <= self.last and a in used:
            a += 1
        if a > self.last:
            return None
        used.add(a)
        self._cursor = a + 1
        return a

    def text(self, addr: int) -> str:
        """"10.0.1.5/24": the address with the subnet's prefix length, as SwarmKit stores it."""
        return f"{ipaddress.ip_address(addr)}/{self.prefixlen}"

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class PortSpace:
    """Published ports cluster-wide: ingress ports per (protocol, port) with their owning service, and the
    host-mode ports some service publishes (never picked for a dynamic ingress port)."""

    def __init__(self, start: int = DYNAMIC_PORT_START, end: int = DYNAMIC_PORT_END) -> None:
        self.start = start
        self.end = end
        self.ingress: dict[tuple[str, int], str] = {}
        self.host: set[tuple[str, int]] = set()
        self._cursor: dict[str, int] = {}

    def owner(self, protocol: str, port: int) -> str | None:
        return self.ingress.get((protocol, port))

    def reserve(self, protocol: str, port: int, owner: str) -> str | None:
        """Take an ingress port for `owner`; refused (returns the current owner) when another service has it."""
        current = self.ingress.setdefault((protocol, port), owner)
        return None if current == owner else current

    def release(self, protocol: str, port: int, owner: str) -> None:
        if self.ingress.get((protocol, port)) == owner:
            del self.ingress[(protocol, port)]
            if port < self._cursor.get(protocol, self.start):
                self._cursor[protocol] = port

    def take(self, protocol: str, owner: str) -> int | None:
        """The lowest free port of the dynamic range for `protocol`, now owned by `owner` (None if full)."""
        p = self._cursor.get(protocol, self.start)
        while p <= self.end and ((protocol, p) in self.ingress or (protocol, p) in self.host):
            p += 1
        if p > self.end:
            self._cursor[protocol] = p
            return None
        self.ingress[(protocol, p)] = owner
        self._cursor[protocol] = p + 1
        return p
