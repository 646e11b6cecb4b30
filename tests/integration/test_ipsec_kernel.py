"""Encrypted networks on the real kernel (agent/overlay.py, agent/ipsec_plan.py; docs/networking.md,
"Encrypted networks"), two network namespaces as two machines joined by a veth pair.

- The agent's start check agrees with an independent probe (a raw `ip xfrm state add … proto esp` in a scratch
  namespace): on a kernel without ESP or AES-GCM it names what is missing (logged, and in `/v1/status` under
  `overlay.encryption.missing`) while plain networks stay available; on a kernel with them it reports nothing.
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
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("10.77.0.2", 4789)); s.settimeout(5)
n = int(sys.argv[1]); got = 0
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
    s.sendto(b"SECRET-BODY-%d" % i, ("10.77.0.2", 4789)); time.sleep(0.01)
"""
CAPTURE = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)); s.bind(("vb", 0)); s.settimeout(0.2)
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


@pytest.mark.skipif(os.geteuid() == 0 and esp_probe() is not None,
                    reason="this kernel has no ESP/AES-GCM (the check above proves it is reported)")
async def test_vxlan_port_traffic_crosses_as_esp_and_survives_rotation() -> None:
    a, b = f"sh-ta{uuid.uuid4().hex[:6]}", f"sh-tb{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", a)
    sh("ip", "netns", "add", b)
    try:
        sh("ip", "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b)
        sh("ip", "-n", a, "addr", "add", "10.77.0.1/24", "dev", "va")
        sh("ip", "-n", b, "addr", "add", "10.77.0.2/24", "dev", "vb")
        for ns, dev in ((a, "va"), (b, "vb")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        ring = netkeys.rotate(None, 0.0, os.urandom)
        assert ring is not None
        plans = {}
        for ns, local, peer in ((a, "10.77.0.1", "10.77.0.2"), (b, "10.77.0.2", "10.77.0.1")):
            want = ipsec_plan.peer_plan(local, peer, ring["keys"])
            plans[ns] = want
            for argv in ipsec_plan.transition(local, 4789, ipsec_plan.PeerNode(peer, 4789), None, want):
                sh("ip", "-n", ns, *argv[1:])

        def exchange(n: int) -> tuple[int, int, int]:
            cap = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-c", CAPTURE, "3"],
                                   stdout=subprocess.PIPE, text=True)
            rcv = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-c", RECEIVER, str(n)],
                                   stdout=subprocess.PIPE, text=True)
            sh("ip", "netns", "exec", a, sys.executable, "-c", SENDER, str(n))
            got = int((rcv.communicate(timeout=15)[0] or "0").strip())
            esp, clear = map(int, cap.communicate(timeout=15)[0].split())
            return got, esp, clear

        got, esp, clear = exchange(20)
        assert got == 20 and esp >= 20 and clear == 0, (got, esp, clear)
        counters = sh("ip", "-n", a, "-s", "xfrm", "state").stdout
        assert "bytes" in counters and " 0(bytes)" not in counters.split("lifetime current:")[1][:60]
        # rotation on both ends (receiver first, as the table may reach it last: both accept the new key already)
        later = netkeys.rotate(ring, netkeys.ROTATION_INTERVAL, os.urandom)
        assert later is not None
        for ns, local, peer in ((b, "10.77.0.2", "10.77.0.1"), (a, "10.77.0.1", "10.77.0.2")):
            want = ipsec_plan.peer_plan(local, peer, later["keys"])
            for argv in ipsec_plan.transition(local, 4789, ipsec_plan.PeerNode(peer, 4789), plans[ns], want):
                sh("ip", "-n", ns, *argv[1:])
        got, esp, clear = exchange(20)
        assert got == 20 and esp >= 20 and clear == 0, (got, esp, clear)
    finally:
        sh("ip", "netns", "del", a, check=False)
        sh("ip", "netns", "del", b, check=False)
