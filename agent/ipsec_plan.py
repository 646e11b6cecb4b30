"""The pure half of encrypted overlay networks (docs/networking.md, "Encrypted networks"): which IPsec (ESP,
transport mode) security associations and policies a node needs towards each peer node, and the `ip xfrm`
commands that move the kernel from what it has to that — in the no-packet-loss order. No I/O.

Between this node L and a peer node P (their node addresses), for each key of the ring (shoal/netkeys.py):
- an outbound SA L→P and an inbound SA P→L, SPIs and AES-GCM keys derived from the key and the two addresses
  (both ends compute the same; every direction its own key);
- one outbound policy: UDP from L to P's VXLAN port goes through ESP with the **primary** key's SA (its SPI);
- one inbound policy: UDP from P to L's VXLAN port must have come through ESP (any of the ring's SAs), so a
  plaintext VXLAN packet from P is dropped, never delivered.

A rotation is applied as: add the new SAs (inbound first), then point the outbound policy at the new primary,
then delete the SAs of the dropped key."""

from __future__ import annotations

from dataclasses import dataclass

from shoal import netkeys

Argv = list[str]


@dataclass(frozen=True, order=True)
class PeerNode:
    """A peer node of an encrypted network: its address and the UDP port its VXLAN devices receive on."""
    addr: str
    port: int


@dataclass(frozen=True, order=True)
class SA:
    src: str
    dst: str
    spi: int
    key: str  # hex, rfc4106: AES key and salt

    def add(self) -> Argv:
        return ["ip", "xfrm", "state", "add", *self._id(), "reqid", str(reqid(self.src, self.dst)), "mode",
                "transport", "aead", netkeys.ALGORITHM, "0x" + self.key, str(netkeys.ICV_BITS),
                "sel", "src", self.src, "dst", self.dst, "proto", "udp"]

    def delete(self) -> Argv:
        return ["ip", "xfrm", "state", "delete", *self._id()]

    def _id(self) -> list[str]:
        return ["src", self.src, "dst", self.dst, "proto", "esp", "spi", f"0x{self.spi:08x}"]


def reqid(src: str, dst: str) -> int:
    """The reqid tying a direction's SAs to its policy (the same for every key of the ring)."""
    return netkeys.spi("00" * 32, src, dst) & 0x7FFFFFFF or 1


@dataclass(frozen=True)
class PeerPlan:
    """What one (local, peer) pair needs: its SAs, and the SPI the outbound policy sends with."""
    sas: frozenset[SA]
    out_spi: int


def peer_plan(local: str, peer: str, keys: list[dict[str, object]]) -> PeerPlan | None:
    accept, primary = netkeys.ring(keys)
    if primary is None:
        return None
    sas: set[SA] = set()
    for k in accept:
        secret = str(k["key"])
        sas.add(SA(local, peer, netkeys.spi(secret, local, peer), netkeys.aead_key(secret, local, peer)))
        sas.add(SA(peer, local, netkeys.spi(secret, peer, local), netkeys.aead_key(secret, peer, local)))
    return PeerPlan(frozenset(sas), netkeys.spi(str(primary["key"]), local, peer))


def policy_commands(local: str, local_port: int, peer: PeerNode, out_spi: int, verb: str = "update") -> list[Argv]:
    """The outbound (through the SA with `out_spi`) and inbound (ESP required) policies of one peer;
    `verb` "add" or "update" (xfrm's replace)."""
    tmpl_out = ["tmpl", "src", local, "dst", peer.addr, "proto", "esp", "spi", f"0x{out_spi:08x}",
                "reqid", str(reqid(local, peer.addr)), "mode", "transport"]
    tmpl_in = ["tmpl", "src", peer.addr, "dst", local, "proto", "esp", "reqid", str(reqid(peer.addr, local)),
               "mode", "transport"]
    return [
        ["ip", "xfrm", "policy", verb, "src", f"{peer.addr}/32", "dst", f"{local}/32", "proto", "udp", "dport",
         str(local_port), "dir", "in", *tmpl_in],
        ["ip", "xfrm", "policy", verb, "src", f"{local}/32", "dst", f"{peer.addr}/32", "proto", "udp", "dport",
         str(peer.port), "dir", "out", *tmpl_out],
    ]


def policy_delete_commands(local: str, local_port: int, peer: PeerNode) -> list[Argv]:
    return [
        ["ip", "xfrm", "policy", "delete", "src", f"{local}/32", "dst", f"{peer.addr}/32", "proto", "udp",
         "dport", str(peer.port), "dir", "out"],
        ["ip", "xfrm", "policy", "delete", "src", f"{peer.addr}/32", "dst", f"{local}/32", "proto", "udp",
         "dport", str(local_port), "dir", "in"],
    ]


def transition(local: str, local_port: int, peer: PeerNode, have: PeerPlan | None,
               want: PeerPlan | None) -> list[Argv]:
    """The commands from `have` to `want` for one peer: new SAs (inbound before outbound), then the policies
    (the outbound one now sends with the new primary), then the SAs no longer wanted; everything goes when
    `want` is None (the peer left, the network went, or no key)."""
    old = have.sas if have else frozenset()
    new = want.sas if want else frozenset()
    inbound_first = sorted(new - old, key=lambda sa: (sa.src == local, sa))
    cmds = [sa.add() for sa in inbound_first]
    if want is not None and (have is None or have.out_spi != want.out_spi):
        cmds += policy_commands(local, local_port, peer, want.out_spi, "update")
    if want is None and have is not None:
        cmds += policy_delete_commands(local, local_port, peer)
    cmds += [sa.delete() for sa in sorted(old - new)]
    return cmds


def probe_commands(src: str, dst: str) -> list[tuple[str, Argv]]:
    """What the agent's start check tries in a scratch namespace: (what it proves, command)."""
    key = "0x" + "11" * netkeys.AEAD_KEY_BYTES
    return [
        ("the xfrm framework (CONFIG_XFRM_USER)", ["ip", "xfrm", "policy", "add", "src", f"{src}/32", "dst",
                                                   f"{dst}/32", "proto", "udp", "dir", "out", "tmpl", "src", src,
                                                   "dst", dst, "proto", "esp", "mode", "transport"]),
        ("ESP (CONFIG_INET_ESP)", ["ip", "xfrm", "state", "add", "src", src, "dst", dst, "proto", "esp", "spi",
                                   "0x1000", "mode", "transport", "enc", "cbc(aes)", "0x" + "22" * 16,
                                   "auth-trunc", "hmac(sha256)", "0x" + "33" * 32, "128"]),
        (f"AES-GCM for ESP ({netkeys.ALGORITHM}, CONFIG_CRYPTO_GCM)",
         ["ip", "xfrm", "state", "add", "src", src, "dst", dst, "proto", "esp", "spi", "0x1001", "mode",
          "transport", "aead", netkeys.ALGORITHM, key, str(netkeys.ICV_BITS)]),
    ]
