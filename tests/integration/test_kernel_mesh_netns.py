"""The routing mesh's kernel path (agent/kernel_mesh.py) on the real kernel, for clients and backends on other
machines — network namespaces standing for them, joined to this one by veth pairs:

    client machine (netns) 10.X.1.2 ── 10.X.1.1 = the node's address ── (this machine) ── 10.X.2.1 ── 10.X.2.2
    backend machine (netns)

The client connects to `<node address>:<published port>` (PREROUTING). The node's backends are a server on this
machine's 127.0.0.1 (DNAT to loopback: route_localnet) and one on the backend machine, which has no route to the
client — only MASQUERADE by the balancing node gets its answers back — and this machine's FORWARD policy may be
DROP (Docker's): the node's `-fwd` chain lets the mesh's connections through. TCP and UDP, both backends
answering; then one backend leaves the table and no new connection goes to it; then the port leaves and is
refused. Root, `ip` and iptables needed: skipped saying why otherwise, required under SHOAL_REQUIRE_DOCKER=1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.kernel_mesh import KernelMesh
from agent.kernel_mesh import check as kernel_check
from shoal import meshrules
from shoal.iptables import run as iptables_run
from shoal.iptables import save as iptables_save

pytestmark = pytest.mark.timeout(60)

SERVER = """
import socket, sys, threading
host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((host, port))
def udp():
    while True:
        _, peer = u.recvfrom(100)
        u.sendto(name, peer)
threading.Thread(target=udp, daemon=True).start()
t = socket.create_server((host, port), backlog=128)
print("ready", flush=True)
while True:
    c, _ = t.accept()
    c.sendall(name)
    c.close()
"""

CLIENT = """
import json, socket, sys
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = {"tcp": {}, "udp": {}}
def count(kind, key):
    out[kind][key] = out[kind].get(key, 0) + 1
for _ in range(n):
    try:
        with socket.create_connection((addr, port), timeout=2) as s:
            count("tcp", s.recv(100).decode() or "empty")
    except OSError as e:
        count("tcp", type(e).__name__)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.sendto(b"x", (addr, port))
        try:
            count("udp", s.recv(100).decode())
        except OSError as e:
            count("udp", type(e).__name__)
print(json.dumps(out))
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def problem() -> str | None:
    if shutil.which("ip") is None:
        return "the ip command"
    missing = kernel_check()
    return "; ".join(missing) if missing else None


@pytest.fixture
def machines() -> Iterator[dict[str, str]]:
    if (missing := problem()) is not None:
        reason = f"the kernel path of the mesh is unavailable here: missing {missing}"
        if os.environ.get("SHOAL_REQUIRE_DOCKER") == "1":
            pytest.fail(f"SHOAL_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)
    n = os.getpid() % 200 + 20
    m = {"client_ns": f"sh-k12c-{os.getpid()}", "backend_ns": f"sh-k12b-{os.getpid()}",
         "node": f"10.{n}.1.1", "client": f"10.{n}.1.2", "gw": f"10.{n}.2.1", "remote": f"10.{n}.2.2"}
    links = {"client_ns": (f"sh-kc{os.getpid()}", m["node"], m["client"]),
             "backend_ns": (f"sh-kb{os.getpid()}", m["gw"], m["remote"])}
    try:
        for key, (link, here, there) in links.items():
            ns = m[key]
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "addr", "add", f"{here}/24", "dev", link)
            sh("ip", "link", "set", link, "up")
            sh("ip", "-n", ns, "addr", "add", f"{there}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # the client machine routes everything to the node; the backend machine knows only its own link
        sh("ip", "-n", m["client_ns"], "route", "add", "default", "via", m["node"])
        yield m
    finally:
        for key, (link, _, _) in links.items():
            subprocess.run(["ip", "link", "del", link], capture_output=True)
            subprocess.run(["ip", "netns", "del", m[key]], capture_output=True)


def server(argv_prefix: list[str], host: str, port: int, name: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*argv_prefix, sys.executable, "-c", SERVER, host, str(port), name],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def ask(m: dict[str, str], port: int, n: int) -> dict[str, dict[str, int]]:
    out = subprocess.run(["ip", "netns", "exec", m["client_ns"], sys.executable, "-c", CLIENT, m["node"],
                          str(port), str(n)], capture_output=True, text=True, timeout=50, check=True)
    return dict(json.loads(out.stdout))


def test_remote_clients_reach_local_and_remote_backends_through_the_node(machines: dict[str, str],
                                                                         tmp_path: Path) -> None:
    m = machines
    published, local_port, remote_port = 38080, 39001, 39002
    procs = [server([], "127.0.0.1", local_port, "local"),
             server(["ip", "netns", "exec", m["backend_ns"]], m["remote"], remote_port, "remote")]
    kernel = KernelMesh(meshrules.tag(f"test-{os.getpid()}", "node-1"))
    both = [("127.0.0.1", local_port), (m["remote"], remote_port)]
    try:
        kernel.apply(m["node"], {("tcp", published): both, ("udp", published): both})
        assert kernel.error is None, kernel.error
        got = ask(m, published, 40)
        assert set(got["tcp"]) == {"local", "remote"} and set(got["udp"]) == {"local", "remote"}, got

        # the remote backend leaves the table: no new connection or flow goes to it
        kernel.apply(m["node"], {("tcp", published): both[:1], ("udp", published): both[:1]})
        got = ask(m, published, 20)
        assert got == {"tcp": {"local": 20}, "udp": {"local": 20}}, got

        # the port leaves the table: refused (nothing listens on the node's address)
        kernel.apply(m["node"], {})
        got = ask(m, published, 3)
        assert got["tcp"] == {"ConnectionRefusedError": 3}, got
    finally:
        kernel.remove()
        for p in procs:
            p.kill()
            p.wait()
    assert meshrules.parse_save(iptables_save(iptables_run), kernel.tag) == ([], [])
