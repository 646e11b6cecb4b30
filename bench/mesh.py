"""shoal's routing mesh — the userspace path (agent/mesh.py) and the kernel path (iptables DNAT,
agent/kernel_mesh.py) — against a direct connection and against haproxy, in the same run, over the same
backends.

    python bench/mesh.py                 # 5 s per measurement, 32 concurrent clients, median of 3 rounds
    python bench/mesh.py --quick         # 2 s per measurement, one round
    python bench/mesh.py --seconds 10 --clients 64

Every party is its own process on loopback:
- backends: one process serving two HTTP backends (a fixed 2-byte answer, `Connection: close`) and two bulk
  sinks (read and discard);
- the mesh: `agent.mesh.Mesh` fed a table with both backends behind one ingress port (what each agent runs);
- haproxy (Debian's package, `apt-get install haproxy`): `mode tcp`, `balance leastconn`, the same backends —
  the same job as the mesh (layer-4, one backend per connection, fewest connections first);
- the kernel path: the rules `shoal.meshrules` makes for both published ports, installed in the `nat` table
  (chains `sh-m-<digest of "bench">-...`, removed at the end; root and iptables needed, else the row says why
  it is missing);
- the load generator: a separate process of asyncio clients.

Measured for each path (direct to one backend, through the mesh, through the kernel path, through haproxy):
- short requests: C clients each opening a connection, sending `GET / HTTP/1.0`, reading the answer to EOF,
  back to back for S seconds: requests/s and p50/p99 latency (one request = one connection, as a client of a
  published port without keep-alive);
- bulk: one connection writing 64 KiB chunks for S seconds: MB/s;
- CPU: utime+stime of the proxy process over each window, per request and per MB (the kernel path has no
  process: its NAT work runs in the kernel on behalf of the client's and the backend's sockets), and the
  CPU of every process of the path together (load generator + backends + proxy), per request and per MB —
  the kernel path's cost is its total less the direct path's.

The load generator is Python and shares the machine's cores with everything else, so the direct figures are a
ceiling of the generator, not of the kernel; compare ratios, which are measured in the same run. Issue 12's
targets: an in-kernel path >= 0.8x and a userspace path >= 0.3x haproxy's requests/s and bulk throughput."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.kernel_mesh import KernelMesh  # noqa: E402
from agent.kernel_mesh import check as kernel_check  # noqa: E402
from bench.loadgen import HANDLERS, bench_parser, bulk, median_row, requests  # noqa: E402
from shoal import meshrules  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

BACKENDS = HANDLERS + r"""
async def main():
    ports = [int(p) for p in sys.argv[1:]]
    servers = [await asyncio.start_server(http, "127.0.0.1", ports[0], backlog=1024),
               await asyncio.start_server(http, "127.0.0.1", ports[1], backlog=1024),
               await asyncio.start_server(sink, "127.0.0.1", ports[2]),
               await asyncio.start_server(sink, "127.0.0.1", ports[3])]
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

MESH = r"""
import asyncio, json, sys, tempfile
from pathlib import Path
from agent.mesh import Mesh
async def main():
    table = json.loads(sys.argv[1])
    mesh = Mesh(Path(tempfile.mkdtemp()))
    await mesh.apply(table)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        proc.kill()
        raise SystemExit(f"bench: {argv[0]} did not start: {line!r}")
    return proc


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: nothing listens on {port}")


def mesh_table(published: int, http_ports: list[int], bulk_published: int, bulk_ports: list[int]) -> dict[str, Any]:
    def svc(sid: str, pub: int, ports: list[int]) -> dict[str, Any]:
        return {"id": sid, "name": sid, "mode": "dnsrr", "networks": [], "vips": [],
                "ports": [{"protocol": "tcp", "target_port": 80, "published_port": pub, "publish_mode": "ingress"}],
                "backends": [{"task_id": f"{sid}{i}", "node_id": "n", "node_addr": "127.0.0.1", "addresses": {},
                              "ports": {"80/tcp": p}} for i, p in enumerate(ports)], "backends_truncated": False}
    return {"version": "bench", "node_addr": "127.0.0.1",
            "services": [svc("http", published, http_ports), svc("bulk", bulk_published, bulk_ports)]}


def haproxy_config(published: int, http_ports: list[int], bulk_published: int, bulk_ports: list[int]) -> str:
    lines = ["global", "  maxconn 4000", "defaults", "  mode tcp", "  timeout connect 2s",
             "  timeout client 30s", "  timeout server 30s", "  balance leastconn"]
    for name, pub, ports in (("http", published, http_ports), ("bulk", bulk_published, bulk_ports)):
        lines += [f"listen {name}", f"  bind 127.0.0.1:{pub}"]
        lines += [f"  server {name}{i} 127.0.0.1:{p}" for i, p in enumerate(ports)]
    return "\n".join(lines) + "\n"


# ---- load generator (bench/loadgen.py, run in a child process: `--generate`) ------------------------------------
def generate(args: argparse.Namespace) -> None:
    if args.mode == "requests":
        out = asyncio.run(requests("127.0.0.1", args.port, args.clients, args.seconds))
    else:
        out = asyncio.run(bulk("127.0.0.1", args.port, args.seconds))
    print(json.dumps(out))


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(kind: str, port: int, proxy_pid: int | None, backends_pid: int,
            args: argparse.Namespace) -> dict[str, Any]:
    cpu0 = cpu_seconds(proxy_pid) if proxy_pid else 0.0
    total0 = cpu0 + cpu_seconds(backends_pid) + children_cpu()
    out = subprocess.run([sys.executable, __file__, "--generate", kind, "--port", str(port), "--clients",
                          str(args.clients), "--seconds", str(args.seconds)], capture_output=True, text=True,
                         check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    proxy = cpu_seconds(proxy_pid) if proxy_pid else 0.0
    result["proxy_cpu_s"] = proxy - cpu0
    result["total_cpu_s"] = proxy + cpu_seconds(backends_pid) + children_cpu() - total0  # generator: a child
    return result


def main() -> None:
    p = bench_parser(__doc__)
    p.add_argument("--port", type=int)
    args = p.parse_args()
    if args.generate:
        args.mode = args.generate
        generate(args)
        return
    if args.quick:
        args.seconds, args.rounds = 2.0, 1
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(haproxy):
        raise SystemExit("bench: haproxy is not installed (apt-get install haproxy): the comparison needs it")
    ports = free_ports(10)
    http_ports, bulk_ports = ports[0:2], ports[2:4]
    mesh_http, mesh_bulk, ha_http, ha_bulk, k_http, k_bulk = ports[4:10]
    procs: list[subprocess.Popen[str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-mesh-"))
    missing = kernel_check()
    kernel = None if missing else KernelMesh(meshrules.tag("bench", f"bench-{os.getpid()}"))
    try:
        backends = start([sys.executable, "-c", BACKENDS, *map(str, http_ports + bulk_ports)])
        procs.append(backends)
        if kernel is not None:
            kernel.apply("127.0.0.1", {("tcp", k_http): [("127.0.0.1", p) for p in http_ports],
                                       ("tcp", k_bulk): [("127.0.0.1", p) for p in bulk_ports]})
            if kernel.error:
                raise SystemExit(f"bench: the kernel path's rules failed: {kernel.error}")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        mesh = start([sys.executable, "-c", MESH,
                      json.dumps(mesh_table(mesh_http, http_ports, mesh_bulk, bulk_ports))], env)
        procs.append(mesh)
        cfg = tmp / "haproxy.cfg"
        cfg.write_text(haproxy_config(ha_http, http_ports, ha_bulk, bulk_ports))
        ha = subprocess.Popen([haproxy, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL)
        procs.append(ha)  # type: ignore[arg-type]
        for port in (mesh_http, mesh_bulk, ha_http, ha_bulk, *((k_http, k_bulk) if kernel else ())):
            wait_port(port)
        paths = [("direct", http_ports[0], bulk_ports[0], None), ("mesh", mesh_http, mesh_bulk, mesh.pid),
                 ("kernel", k_http, k_bulk, None), ("haproxy", ha_http, ha_bulk, ha.pid)]
        if kernel is None:
            paths = [p for p in paths if p[0] != "kernel"]
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in paths}
        for _ in range(args.rounds):  # rounds interleave the paths, so a burst of load elsewhere hits them all
            for name, http_port, bulk_port, pid in paths:
                req = measure("requests", http_port, pid, backends.pid, args)
                blk = measure("bulk", bulk_port, pid, backends.pid, args)
                runs[name].append({**req, "mb_per_s": blk["mb_per_s"], "req_cpu_s": req["proxy_cpu_s"],
                                   "bulk_cpu_s": blk["proxy_cpu_s"], "req_total_s": req["total_cpu_s"],
                                   "bulk_total_s": blk["total_cpu_s"]})
        rows = {name: median_row(r) for name, r in runs.items()}
        print(f"{args.clients} clients, {args.seconds:g} s per measurement, median of {args.rounds} interleaved "
              f"rounds, cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
        if kernel is None:
            print(f"kernel path: not measured, unavailable here: missing {'; '.join(missing)}")
        print("CPU: proxy = the proxy process; all = load generator + backends + proxy (ms per 1k requests / "
              "per 100 MB)")
        print(f"{'path':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'bulk MB/s':>10} "
              f"{'proxy/1k':>9} {'all/1k':>8} {'proxy/100MB':>12} {'all/100MB':>10}")
        for name, r in rows.items():
            per_kreq = r["req_cpu_s"] / max(r["requests"], 1) * 1e6
            all_kreq = r["req_total_s"] / max(r["requests"], 1) * 1e6
            mb = max(r["mb_per_s"] * args.seconds, 1e-9)
            print(f"{name:<8} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>7} "
                  f"{r['mb_per_s']:>10.0f} {per_kreq:>9.1f} {all_kreq:>8.1f} {r['bulk_cpu_s'] / mb * 1e5:>12.1f} "
                  f"{r['bulk_total_s'] / mb * 1e5:>10.1f}")
        h, d = rows["haproxy"], rows["direct"]
        for name, target in (("kernel", 0.8), ("mesh", 0.3)):
            if name not in rows:
                continue
            m = rows[name]
            print(f"{name + ' / haproxy:':<18} req/s {m['rps'] / h['rps']:.2f}x, p99 {m['p99_ms'] / h['p99_ms']:.2f}x, "
                  f"bulk {m['mb_per_s'] / h['mb_per_s']:.2f}x   (target for this path: >= {target}x)")
            print(f"{name + ' / direct:':<18} req/s {m['rps'] / d['rps']:.2f}x, p99 {m['p99_ms'] / d['p99_ms']:.2f}x, "
                  f"bulk {m['mb_per_s'] / d['mb_per_s']:.2f}x")
    finally:
        if kernel is not None:
            kernel.remove()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
