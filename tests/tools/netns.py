"""Simulated machines: one network namespace each, with its own address on a bridge in the root namespace
(which also gets an address, so the test process reaches every machine). Needs root and iproute2."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field


def available() -> str:
    """'' when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"shoalprobe{secrets.token_hex(3)}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Machines:
    """`n` machines at 10.<a>.<b>.1 .. n on bridge `br`; the root namespace is .254."""

    n: int
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        r = secrets.randbelow(200) + 20
        self.prefix = f"10.{r}.{secrets.randbelow(250)}"
        self.bridge = f"shbr{self.tag}"

    def addr(self, i: int) -> str:
        return f"{self.prefix}.{i}"

    def ns(self, i: int) -> str:
        return f"shoal{self.tag}m{i}"

    def up(self) -> Machines:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.prefix}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        # With a Docker engine on the machine, bridged traffic goes through iptables' FORWARD chain (policy
        # DROP, br_netfilter): let the machines' own bridge through.
        if shutil.which("iptables"):
            subprocess.run(["iptables", "-I", "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"],
                           capture_output=True)
        for i in range(1, self.n + 1):
            ns, host_end, ns_end = self.ns(i), f"sh{self.tag}h{i}", f"sh{self.tag}n{i}"
            _ip("netns", "add", ns)
            self.names.append(ns)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _ip("link", "set", host_end, "master", self.bridge)
            _ip("link", "set", host_end, "up")
            _ip("link", "set", ns_end, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", ns_end)
            _ip("-n", ns, "link", "set", ns_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        return self

    def run(self, i: int, argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        """Run a command on machine `i` (inside its namespace)."""
        return subprocess.run(["ip", "netns", "exec", self.ns(i), *argv], text=True, capture_output=True,
                              **kw)  # type: ignore[call-overload]

    def down(self) -> None:
        for ns in self.names:
            kill_all(ns)  # every process still inside dies with its machine
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        if shutil.which("iptables"):
            subprocess.run(["iptables", "-D", "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"],
                           capture_output=True)


def kill_all(ns: str) -> int:
    """SIGKILL every process inside namespace `ns` (a machine's power cut); returns how many."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass
    return len(pids)
