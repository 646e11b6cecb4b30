"""Encrypted networks on the real kernel (agent/overlay.py, agent/ipsec_plan.py; docs/networking.md,
"Encrypted networks"), two network namespaces as two machines joined by a veth pair.

- The agent's start check agrees with an independent probe (a raw `ip xfrm state add … proto esp` in a scratch
  namespace): on a kernel without ESP or AES-GCM it names what is missing (logged, and in `/v1/status` under
  `overlay.encryption.missing`) while plain networks stay available; on a kernel with them it reports nothing.
- On any kernel with xfrm (this one too): the plans' policies are accepted as written, and they are what keeps
  an encrypted network's VXLAN from ever crossing in the clear — a datagram to the peer's VXLAN port under the
  outbound policy with no SA never leaves, one arriving in the clear against the inbound policy is dropped,
  while other ports are untouched; every SA command parses (the kernel, not `ip`, is what refuses it here).
- The userspace ESP engine (agent/esp_user.py, for kernels without ESP — this one), one per "machine" with a
  VXLAN device in each: a plain VXLAN datagram is seen in the clear on the receiving machine's underlay (the
  capture works), the same through the engines arrives while the underlay carries only ESP and never its bytes,
  and a rotation (receiver first) keeps it arriving.
- With ESP and AES-GCM (skipped otherwise, saying why): the plans installed on both "machines" carry a UDP
  datagram to the peer's VXLAN port, the SAs' counters rise, and an AF_PACKET capture on the receiving side's
  underlay sees ESP and never the datagram's bytes; a rotation keeps datagrams flowing."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agent import ipsec_plan
from agent.overlay import Overlay
from shoal import netkeys

pytestmark = [pytest.mark.timeout(60)]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def esp_probe() -> str | None:
    """Why this kernel cannot do rfc4106 ESP (None: it can), asked of the kernel directly."""
    ns = f"sh-t{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", ns)
    try:
        r = sh("ip", "-n", ns, "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi",
               "0x2000", "mode", "transport", "aead", netkeys.ALGORITHM, "0x" + "44" * 20, "128", check=False)
        return None if r.returncode == 0 else r.stderr.strip()
    finally:
        sh("ip", "netns", "del", ns, check=False)


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, xfrm)")


async def test_the_start_check_names_what_the_kernel_lacks(tmp_path: Path) -> None:
    ov = Overlay(tmp_path, node_id=lambda: "n1", addr="127.0.0.2")
    await ov.check()
    why = esp_probe()
    assert ov.missing == []  # plain overlay networks are unaffected either way
    status = ov.status()["encryption"]
    if why is None:
        assert ov.ipsec_missing == [] and status["missing"] == []
    else:
        assert ov.ipsec_missing and status["missing"] == ov.ipsec_missing
        text = "; ".join(ov.ipsec_missing)
        assert "ESP" in text or "AES-GCM" in text, text
        print(f"this kernel: {text}")


RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[2], int(sys.argv[3]))); s.settimeout(2)
n = int(sys.argv[1]); got = 0
print("ready", flush=True)
for _ in range(n):
    try:
        data, _ = s.recvfrom(2048)
    except TimeoutError:
        break
    got += data.startswith(b"SECRET-BODY")
print(got)
"""
SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[1])):
    try:
        s.sendto(b"SECRET-BODY-%d" % i, (sys.argv[2], int(sys.argv[3])))
    except OSError:
        pass  # refused by an outbound policy without an SA
    time.sleep(0.01)
"""
CAPTURE = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)); s.bind(("vb", 0)); s.settimeout(0.2)
print("ready", flush=True)
end = time.time() + float(sys.argv[1]); esp = clear = 0
while time.time() < end:
    try:
        f = s.recv(4096)
    except TimeoutError:
        continue
    if f[12:14] == b"\\x08\\x00" and f[23] == 50: esp += 1
    if b"SECRET-BODY" in f: clear += 1
print(esp, clear)
"""


class Pair:
    """Two namespaces as two machines, 10.77.0.1 (a, link va) and 10.77.0.2 (b, link vb)."""

    def __init__(self) -> None:
        self.a, self.b = f"sh-ta{uuid.uuid4().hex[:6]}", f"sh-tb{uuid.uuid4().hex[:6]}"

    def __enter__(self) -> Pair:
        sh("ip", "netns", "add", self.a)
        sh("ip", "netns", "add", self.b)
        sh("ip", "-n", self.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", self.b)
        sh("ip", "-n", self.a, "addr", "add", "10.77.0.1/24", "dev", "va")
        sh("ip", "-n", self.b, "addr", "add", "10.77.0.2/24", "dev", "vb")
        for ns, dev in ((self.a, "va"), (self.b, "vb")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        sh("ip", "netns", "del", self.a, check=False)
        sh("ip", "netns", "del", self.b, check=False)

    def exchange(self, n: int, port: int = 4789, inner: bool = False) -> tuple[int, int, int]:
        """(datagrams received by b on `port` — of its underlay address, or `inner`: of its VXLAN device's
        10.99.0.2 on port 7000 —, ESP frames and frames with the payload seen on b's underlay link)."""
        to = ["10.99.0.2", "7000"] if inner else ["10.77.0.2", str(port)]
        cap = subprocess.Popen(["ip", "netns", "exec", self.b, sys.executable, "-c", CAPTURE, "2.5"],
                               stdout=subprocess.PIPE, text=True)
        rcv = subprocess.Popen(["ip", "netns", "exec", self.b, sys.executable, "-c", RECEIVER, str(n), *to],
                               stdout=subprocess.PIPE, text=True)
        for proc in (cap, rcv):  # both bound before the first datagram
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        sh("ip", "netns", "exec", self.a, sys.executable, "-c", SENDER, str(n), *to, check=False)
        got = int((rcv.communicate(timeout=15)[0] or "0").strip())
        esp, clear = map(int, cap.communicate(timeout=15)[0].split())
        return got, esp, clear


ENGINE = """
import asyncio, json, sys
from agent import ipsec_plan
from agent.esp_user import Engine
from agent.netns import run
async def main():
    local, peer = sys.argv[1], sys.argv[2]
    engine = Engine(local, 4789)
    node = ipsec_plan.PeerNode(peer, 4789)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.strip():
            break
        relay = await engine.set_peer(node, ipsec_plan.peer_plan(local, peer, json.loads(line)), run)
        print(relay, json.dumps(engine.status()), flush=True)
    engine.close()
asyncio.run(main())
"""
VX_MAC = {"a": "02:42:0a:63:00:01", "b": "02:42:0a:63:00:02"}


def _vxlan(p: Pair) -> None:
    """A VXLAN device in each machine (no bridge: the device carries 10.99.0.1 / .2 itself), entries to the
    other's address over the underlay."""
    for ns, name, addr, inner, peer, peer_inner in ((p.a, "a", "10.77.0.1", "10.99.0.1", "b", "10.99.0.2"),
                                                  (p.b, "b", "10.77.0.2", "10.99.0.2", "a", "10.99.0.1")):
        sh("ip", "-n", ns, "link", "add", "vx", "address", VX_MAC[name], "mtu", "1400", "type", "vxlan", "id",
           "42", "local", addr, "dstport", "4789", "nolearning")
        sh("ip", "-n", ns, "addr", "add", f"{inner}/24", "dev", "vx")
        sh("ip", "-n", ns, "link", "set", "vx", "up")
        sh("ip", "-n", ns, "neigh", "replace", peer_inner, "lladdr", VX_MAC[peer], "dev", "vx", "nud", "permanent")
        sh("bridge", "-n", ns, "fdb", "replace", VX_MAC[peer], "dev", "vx", "dst",
           "10.77.0.2" if name == "a" else "10.77.0.1", "port", "4789", "self", "permanent")


def test_userspace_esp_between_two_machines_carries_vxlan_as_esp_only() -> None:
    import json
    with Pair() as p:
        _vxlan(p)
        # the negative control: plain VXLAN crosses the underlay with the payload in the clear
        got, esp, clear = p.exchange(5, inner=True)
        assert got == 5 and esp == 0 and clear == 5, (got, esp, clear)
        ring = netkeys.rotate(None, 0.0, os.urandom)
        assert ring is not None
        engines = {}
        try:
            for ns, local, peer in ((p.a, "10.77.0.1", "10.77.0.2"), (p.b, "10.77.0.2", "10.77.0.1")):
                proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", ENGINE, local, peer],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(json.dumps(ring["keys"]) + "\n")
                proc.stdin.flush()
                relay = proc.stdout.readline().split()[0]
                engines[ns] = proc
                # the peer's frames go to the engine's relay address, as the agent's FDB entries do
                other = VX_MAC["b"] if ns == p.a else VX_MAC["a"]
                sh("bridge", "-n", ns, "fdb", "replace", other, "dev", "vx", "dst", relay, "port", "4789", "self",
                   "permanent")
            got, esp, clear = p.exchange(20, inner=True)
            assert got == 20 and esp >= 20 and clear == 0, (got, esp, clear)
            # rotation, the receiver first
            later = netkeys.rotate(ring, netkeys.ROTATION_INTERVAL, os.urandom)
            assert later is not None
            for ns in (p.b, p.a):
                proc = engines[ns]
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(json.dumps(later["keys"]) + "\n")
                proc.stdin.flush()
                proc.stdout.readline()
            got, esp, clear = p.exchange(20, inner=True)
            assert got == 20 and esp >= 20 and clear == 0, (got, esp, clear)
            # the engines die (an agent down, its containers still running) while a's default route leads to
            # b: the frames for the relay addresses are dropped, not routed on in the clear
            sh("ip", "-n", p.a, "route", "add", "default", "via", "10.77.0.2")
            for proc in engines.values():
                proc.kill()
                proc.wait()
            got, esp, clear = p.exchange(5, inner=True)
            assert (got, esp, clear) == (0, 0, 0), (got, esp, clear)
        finally:
            for proc in engines.values():
                proc.kill()
                proc.wait()


def test_the_policies_keep_vxlan_from_crossing_in_clear() -> None:
    local, peer = "10.77.0.1", ipsec_plan.PeerNode("10.77.0.2", 4789)
    ring = netkeys.rotate(None, 0.0, os.urandom)
    assert ring is not None
    want = ipsec_plan.peer_plan(local, peer.addr, ring["keys"])
    assert want is not None
    with Pair() as p:
        assert p.exchange(5) == (5, 0, 5)  # no policy: in the clear (what a plain network does)
        # b requires ESP from a on its VXLAN port: a's datagram in the clear is dropped there, other ports pass
        for argv in ipsec_plan.policy_commands(peer.addr, 4789, ipsec_plan.PeerNode(local, 4789), want.out_spi):
            if "in" in argv[argv.index("dir") + 1:argv.index("dir") + 2]:
                sh("ip", "-n", p.b, *argv[1:])
        got, _, clear = p.exchange(5)
        assert got == 0 and clear == 5, (got, clear)
        assert p.exchange(5, port=4790)[0] == 5
        # a sends under its outbound policy: with no SA nothing leaves a at all
        for argv in ipsec_plan.policy_commands(local, 4789, peer, want.out_spi):
            sh("ip", "-n", p.a, *argv[1:])
        assert p.exchange(5)[1:] == (0, 0)
        policies = sh("ip", "-n", p.a, "xfrm", "policy").stdout
        assert f"spi 0x{want.out_spi:08x}" in policies and "dport 4789" in policies and "proto udp" in policies
        # a rotation moves the outbound policy to the new primary in place (`update`), removal deletes both
        later = netkeys.rotate(ring, netkeys.ROTATION_INTERVAL, os.urandom)
        assert later is not None
        want2 = ipsec_plan.peer_plan(local, peer.addr, later["keys"])
        assert want2 is not None
        for argv in ipsec_plan.policy_commands(local, 4789, peer, want2.out_spi):
            sh("ip", "-n", p.a, *argv[1:])
        assert f"spi 0x{want2.out_spi:08x}" in sh("ip", "-n", p.a, "xfrm", "policy").stdout
        for argv in ipsec_plan.policy_delete_commands(local, 4789, peer):
            sh("ip", "-n", p.a, *argv[1:])
        assert sh("ip", "-n", p.a, "xfrm", "policy").stdout.strip() == ""
        # every SA command parses; where the kernel refuses, it is for ESP or the algorithm, nothing else
        for sa in sorted(want.sas):
            r = sh("ip", "-n", p.a, *sa.add()[1:], check=False)
            if r.returncode != 0:
                assert "Requested type not found" in r.stderr or "AEAD algorithm not found" in r.stderr, r.stderr


@pytest.mark.skipif(os.geteuid() == 0 and esp_probe() is not None,
                    reason="this kernel has no ESP/AES-GCM (the check above proves it is reported)")
def test_vxlan_port_traffic_crosses_as_esp_and_survives_rotation() -> None:
    with Pair() as p:
        ring = netkeys.rotate(None, 0.0, os.urandom)
        assert ring is not None
        ends = ((p.a, "10.77.0.1", "10.77.0.2"), (p.b, "10.77.0.2", "10.77.0.1"))
        plans = {}
        for ns, local, peer in ends:
            plans[ns] = ipsec_plan.peer_plan(local, peer, ring["keys"])
            for argv in ipsec_plan.transition(local, 4789, ipsec_plan.PeerNode(peer, 4789), None, plans[ns]):
                sh("ip", "-n", ns, *argv[1:])
        got, esp, clear = p.exchange(20)
        assert got == 20 and esp >= 20 and clear == 0, (got, esp, clear)
        counters = sh("ip", "-n", p.a, "-s", "xfrm", "state").stdout
        assert "proto esp" in counters, counters
        # rotation, the receiver first (the table may reach the sender first too: both accept the new key)
        later = netkeys.rotate(ring, netkeys.ROTATION_INTERVAL, os.urandom)
        assert later is not None
        for ns, local, peer in reversed(ends):
            want = ipsec_plan.peer_plan(local, peer, later["keys"])
            for argv in ipsec_plan.transition(local, 4789, ipsec_plan.PeerNode(peer, 4789), plans[ns], want):
                sh("ip", "-n", ns, *argv[1:])
        got, esp, clear = p.exchange(20)
        assert got == 20 and esp >= 20 and clear == 0, (got, esp, clear)
