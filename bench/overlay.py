"""The containers' overlay data path (kernel: veth + bridge + VXLAN, agent/overlay.py) against a same-node bridge
and against plain loopback, in the same run, with the same server and load generator.

    sudo python bench/overlay.py             # 5 s per measurement, 32 concurrent clients, median of 3 rounds
    sudo python bench/overlay.py --quick     # 2 s per measurement, one round

Built with the agent's own plans (agent/overlay_plan.py), no Docker: two "nodes" (namespaces, as
`agent/overlay.py` makes them: bridge with the gateway, VXLAN on the node's loopback address 127.0.0.2 / .3 with
its derived port, neighbour/FDB entries for the other node's endpoints) and three "containers" (namespaces with a
sleeping process, plumbed like a container's: a on node A, b on node B, c on node A). Paths:
- `loopback`: generator and server in the host's namespace over 127.0.0.1 (the reference: no veth, no bridge);
- `bridge`: a → c on one node (veth, bridge, veth);
- `vxlan`: a → b across nodes (veth, bridge, VXLAN encapsulation over the underlay, bridge, veth);
- `vxlan+esp`: the same with the encrypted network's IPsec (agent/ipsec_plan.py: ESP transport mode, AES-GCM,
  SAs and policies of both nodes for a fresh key ring), installed for this path's measurements only and removed
  after each (the policies match all VXLAN between the two node addresses). Skipped, saying what the kernel
  lacks, where it has no ESP or AES-GCM. The xfrm state lives in the host's namespace, for 127.0.0.2/.3: do not
  run the bench while a local cluster uses those addresses;
- `vxlan+uesp`: where the kernel lacks ESP, the same path through the userspace ESP engines
  (agent/esp_user.py, one process per node as the agents run them): the nodes' FDB entries point at the
  engines' TUN relay addresses for this path's measurements only.
Note: with both nodes on loopback addresses of one namespace, the kernel's VXLAN hands frames to the other
node's VXLAN device directly (`vxlan_encap_bypass`: a local destination), so `vxlan` measures the encapsulation
without a UDP round through the IP stack; `vxlan+uesp` does go through IP (TUN, ESP over lo, UDP back in).
For each: short requests (C clients, a connection per request, `GET /` answered with 2 bytes): requests/s,
p50/p99; bulk (one connection writing 64 KiB chunks): MB/s. The generator is Python and shares 2 cores with
everything else, so the figures are the generator's ceiling as much as the kernel's: compare the ratios. The
VIP balancers are the routing mesh's listener (bench/mesh.py measures it). Needs root; cleans up after itself
(every namespace and link starts with `sh-bench`/`sh-`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import ipsec_plan  # noqa: E402
from agent import overlay_plan as plan  # noqa: E402
from bench.loadgen import HANDLERS, bench_parser, bulk, median_row, requests  # noqa: E402
from shoal import netkeys  # noqa: E402

NET = "benchnet"
NODES = {"A": ("sh-bench-nA", "127.0.0.2"), "B": ("sh-bench-nB", "127.0.0.3")}
ENDPOINTS = {"a": ("A", "10.203.0.3"), "b": ("B", "10.203.0.4"), "c": ("A", "10.203.0.5")}
HTTP, SINK = 8080, 9000

SERVER = HANDLERS + r"""
async def main():
    host, http_port, sink_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    await asyncio.start_server(http, host, http_port, backlog=1024)
    await asyncio.start_server(sink, host, sink_port)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def sh(*argv: str, check: bool = True) -> None:
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"bench: `{' '.join(argv)}` failed: {r.stderr.strip()}")


def ep_ns(name: str) -> str:
    return f"sh-bench-{name}"


def setup(procs: list[subprocess.Popen[str]]) -> None:
    subnet_gateway, prefix = "10.203.0.1", 24
    for node, (ns, addr) in NODES.items():
        for argv in plan.network_commands(ns, plan.vxlan_link("bench" + node, NET), plan.vni(NET), addr,
                                          plan.vxlan_port(addr), subnet_gateway, prefix):
            sh(*argv)
    for name, (node, address) in ENDPOINTS.items():
        sh("ip", "netns", "add", ep_ns(name))
        sleeper = subprocess.Popen(["ip", "netns", "exec", ep_ns(name), "sleep", "3600"], text=True)
        procs.append(sleeper)
        time.sleep(0.1)  # `ip netns exec` has entered the namespace and exec'd sleep (same pid)
        att = plan.Attachment(NET, 0, address, prefix, subnet_gateway)
        host_end, ct_end = plan.veth_names("bench", name, 0)
        for argv in plan.attach_commands(NODES[node][0], sleeper.pid, host_end, ct_end, att):
            sh(*argv)
    for node, (ns, _addr) in NODES.items():
        peers = {plan.Peer(a, plan.mac(a), NODES[n][1], plan.vxlan_port(NODES[n][1]))
                 for n, a in ENDPOINTS.values() if n != node}
        for argv in plan.neighbour_commands(ns, peers, set()):
            sh(*argv)


def esp_missing() -> list[str]:
    """What the kernel lacks for the encrypted path (the agent's own probe, in a scratch namespace)."""
    scratch = "sh-bench-probe"
    sh("ip", "netns", "add", scratch, check=False)
    missing = []
    for what, argv in ipsec_plan.probe_commands("192.0.2.1", "192.0.2.2"):
        r = subprocess.run(["ip", "-n", scratch, *argv[1:]], capture_output=True, text=True)
        if r.returncode != 0:
            missing.append(f"{what}: {r.stderr.strip()}")
    sh("ip", "netns", "del", scratch, check=False)
    return missing


def esp(keys: list[dict[str, Any]], up: bool) -> None:
    """Install (or remove) both nodes' ESP state towards each other; the nodes share the host's namespace, so
    the SAs both derive are installed once."""
    done: set[tuple[str, ...]] = set()
    addrs = [addr for _, addr in NODES.values()]
    for local, peer in (addrs, addrs[::-1]):
        want = ipsec_plan.peer_plan(local, peer, keys)
        have, want = (None, want) if up else (want, None)
        for argv in ipsec_plan.transition(local, plan.vxlan_port(local), ipsec_plan.PeerNode(
                peer, plan.vxlan_port(peer)), have, want):
            if tuple(argv) not in done:
                done.add(tuple(argv))
                sh(*argv, check=up)


ENGINE = """
import asyncio, json, sys
from agent import ipsec_plan
from agent.esp_user import Engine
from agent.netns import run
async def main():
    local, port, peer, peer_port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    engine = Engine(local, port)
    relay = await engine.set_peer(ipsec_plan.PeerNode(peer, peer_port),
                                  ipsec_plan.peer_plan(local, peer, json.loads(sys.stdin.readline())), run)
    print(relay, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(json.dumps(engine.status()), flush=True)
    engine.close()
asyncio.run(main())
"""


def userspace_esp(keys: list[dict[str, Any]]) -> tuple[list[subprocess.Popen[str]], dict[str, str]]:
    """One userspace ESP engine per node (in the host's namespace, as the agents); node -> relay address."""
    procs, relays = [], {}
    addrs = {node: addr for node, (_, addr) in NODES.items()}
    for node, other in (("A", "B"), ("B", "A")):
        proc = subprocess.Popen([sys.executable, "-c", ENGINE, addrs[node], str(plan.vxlan_port(addrs[node])),
                                 addrs[other], str(plan.vxlan_port(addrs[other]))], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(keys) + "\n")
        proc.stdin.flush()
        relays[node] = proc.stdout.readline().strip()
        if not relays[node]:
            raise SystemExit("bench: the userspace ESP engine did not start")
        procs.append(proc)
    return procs, relays


def via_relays(relays: dict[str, str] | None) -> None:
    """Point every node's FDB entries for the other node's endpoints at its engine's relay (None: back)."""
    for node, (ns, _addr) in NODES.items():
        remote = [(n, a) for n, a in ENDPOINTS.values() if n != node]
        direct = {plan.Peer(a, plan.mac(a), NODES[n][1], plan.vxlan_port(NODES[n][1])) for n, a in remote}
        relayed = {plan.Peer(p.address, p.mac, relays[node], p.port) for p in direct} if relays else set()
        for argv in plan.neighbour_commands(ns, relayed or direct, set()):
            sh(*argv)


def teardown(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.kill()
        p.wait()
    for name in ENDPOINTS:
        sh("ip", "netns", "del", ep_ns(name), check=False)
    for node, (ns, _) in NODES.items():
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", plan.vxlan_link("bench" + node, NET), check=False)


def start(argv: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if "ready" not in proc.stdout.readline():
        proc.kill()
        raise SystemExit(f"bench: {argv} did not start")
    return proc


def measure(ns: str | None, host: str, args: argparse.Namespace) -> dict[str, Any]:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    row: dict[str, Any] = {}
    for kind, port in (("requests", HTTP), ("bulk", SINK)):
        out = subprocess.run([*prefix, sys.executable, __file__, "--generate", kind, "--host", host, "--port",
                              str(port), "--clients", str(args.clients), "--seconds", str(args.seconds)],
                             capture_output=True, text=True, check=True)
        row.update(json.loads(out.stdout))
    return row


def main() -> None:
    p = bench_parser(__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    if args.generate == "requests":
        print(json.dumps(asyncio.run(requests(args.host, args.port, args.clients, args.seconds))))
        return
    if args.generate == "bulk":
        print(json.dumps(asyncio.run(bulk(args.host, args.port, args.seconds))))
        return
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (namespaces, veths, VXLAN)")
    if args.quick:
        args.seconds, args.rounds = 2.0, 1
    procs: list[subprocess.Popen[str]] = []
    try:
        teardown([])  # what an interrupted run left
        setup(procs)
        procs.append(start([sys.executable, "-c", SERVER, "127.0.0.1", str(HTTP), str(SINK)]))
        for name in ("b", "c"):
            procs.append(start(["ip", "netns", "exec", ep_ns(name), sys.executable, "-c", SERVER, "0.0.0.0",
                                str(HTTP), str(SINK)]))
        paths = (("loopback", None, "127.0.0.1"), ("bridge", ep_ns("a"), ENDPOINTS["c"][1]),
                 ("vxlan", ep_ns("a"), ENDPOINTS["b"][1]))
        missing = esp_missing()
        ring = netkeys.rotate(None, time.time(), os.urandom)
        assert ring is not None
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in paths}
        if not missing:
            runs["vxlan+esp"] = []
        engines: list[subprocess.Popen[str]] = []
        relays: dict[str, str] = {}
        if missing and not any("xfrm framework" in m for m in missing):
            engines, relays = userspace_esp(ring["keys"])
            procs.extend(engines)
            runs["vxlan+uesp"] = []
        for _ in range(args.rounds):  # interleaved, so a burst of load elsewhere hits every path
            for name, ns, host in paths:
                runs[name].append(measure(ns, host, args))
            if not missing:
                esp(ring["keys"], up=True)
                try:
                    runs["vxlan+esp"].append(measure(ep_ns("a"), ENDPOINTS["b"][1], args))
                finally:
                    esp(ring["keys"], up=False)
            if relays:
                via_relays(relays)
                try:
                    runs["vxlan+uesp"].append(measure(ep_ns("a"), ENDPOINTS["b"][1], args))
                finally:
                    via_relays(None)
        med = {name: median_row(rows) for name, rows in runs.items()}
        print(f"{args.clients} clients, {args.seconds:g} s per measurement, median of {args.rounds} rounds")
        print(f"{'path':<10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'bulk MB/s':>10}")
        for name, r in med.items():
            print(f"{name:<10} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>7} "
                  f"{r['mb_per_s']:>10.0f}")
        v, b, lo = med["vxlan"], med["bridge"], med["loopback"]
        print(f"vxlan / bridge:   req/s {v['rps'] / b['rps']:.2f}x, bulk {v['mb_per_s'] / b['mb_per_s']:.2f}x")
        print(f"vxlan / loopback: req/s {v['rps'] / lo['rps']:.2f}x, bulk {v['mb_per_s'] / lo['mb_per_s']:.2f}x")
        if relays:
            u = med["vxlan+uesp"]
            print(f"vxlan+uesp / vxlan: req/s {u['rps'] / v['rps']:.2f}x, bulk {u['mb_per_s'] / v['mb_per_s']:.2f}x")
            for proc in engines:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write("\n")
                proc.stdin.flush()
                print("engine:", proc.stdout.readline().strip())
        if missing:
            print("vxlan+esp: not measured, this kernel lacks " + "; ".join(missing))
        else:
            e = med["vxlan+esp"]
            print(f"vxlan+esp / vxlan: req/s {e['rps'] / v['rps']:.2f}x, bulk {e['mb_per_s'] / v['mb_per_s']:.2f}x")
    finally:
        teardown(procs)


if __name__ == "__main__":
    main()
