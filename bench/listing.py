"""Listing at scale (issue 13, item 3): the gateway's task and service reads over a real raftstore holding N tasks,
paged and counted in the store, against the full reads the gateway did before (the peer, measured in the same run).

    python bench/listing.py                          # 100,000 tasks of one service, 3 rounds
    python bench/listing.py --tasks 2000 --rounds 1  # CI-sized (tests/integration/test_bench_listing.py)

One raftstore member runs as its own process (`python -m services.raftstore`, fsync on, mutual TLS); the gateway
runs in this process over a StoreClient with the gateway's certificate (the same store path a gateway process
uses; its HTTP answers are taken through httpx's ASGI transport, JSON encoding included). The tasks are written
straight to the store, 500 per transaction, as the orchestrator would (state RUNNING, one service, `--services`
spreads them). Measured, best of `--rounds` after a warm-up read:

- `GET /v1/tasks` (every task in one answer) and a paged walk `GET /v1/tasks?service=S&limit=5000&next=...`
  (what `shoal service ps S` does), against the peer: one full store list of the kind (the old route);
- `GET /v1/services/{name}` (store-side name lookup + task counts) against the old way: list every service,
  resolve in the gateway, list the service's tasks and count them;
- `GET /v1/services` (counts of every service) against the old way: list every task and count them.

Ratios are shoal-now / old-way (below 1 is faster)."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from fastapi import FastAPI

from services.gateway.app import create_app
from services.gateway.core import resolve, service_names, with_status
from services.gateway.settings import GatewaySettings
from shoal import pki
from shoal.cli import table
from shoal.cli.client import Gateway
from shoal.cli.services import service_tasks
from shoal.models.kinds import Kind
from shoal.models.objects import new_task, task_status
from shoal.models.states import TaskState
from shoal.store import txn as t
from shoal.store import wire
from shoal.store.client import StoreClient
from shoal.transport import sync_http_client
from tests.integration.raftprocs import RaftProcs, free_ports

PAGE = 5000
TARGET = 2.0  # seconds: issue 13 item 3
PS, OLD_PS = "TLS: shoal service ps S (stream + table)", "old: service ps (pages of 5,000 + table)"
SHOAL_ALL = "TLS: GET /v1/tasks (all), shoal client (GC paused)"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


CPU: dict[str, float] = {}  # operation -> best CPU seconds (this process + the raftstore member + gateway process)
HOPS: dict[str, tuple[float, ...]] = {}  # operation -> that run's CPU seconds per process (this, store, gateway)
STORE_PID: list[int] = []  # the raftstore member, then the gateway process


def _cpu_hops() -> tuple[float, ...]:
    """CPU seconds so far of this process, the raftstore member and the gateway process (when started)."""
    out = [time.process_time()]
    for pid in STORE_PID:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return tuple(out)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_now() -> float:
    return sum(_cpu_hops())


def start_gateway(cluster: RaftProcs, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_ports(1)[0]
    env = {**os.environ, "SHOAL_CERT_DIR": str(cluster.certs.dir("gateway-bench", node_id="gwbench",
                                                                   component="gateway")),
           "SHOAL_STORE_MEMBERS": ",".join(cluster.urls), "SHOAL_HOST": "127.0.0.1", "SHOAL_PORT": str(port),
           "SHOAL_UI": "false", "SHOAL_NATS_URL": f"nats://127.0.0.1:{free_ports(1)[0]}",
           "SHOAL_STORE_TIMEOUT": "120", "SHOAL_LOG_LEVEL": "WARNING"}
    log = open(tmp / "gateway.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "services.gateway"], env=env, stdout=log, stderr=log)
    url = f"https://127.0.0.1:{port}"
    http = sync_http_client(cluster.certs.client("admin", pki.ADMIN), base_url=url, timeout=5.0)
    deadline = time.monotonic() + 60
    while True:
        try:
            if http.get("/readyz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the gateway process did not get ready: {(tmp / 'gateway.log').read_text()[-2000:]}")
        time.sleep(0.2)
    http.close()
    return proc, url


def old_app(store: StoreClient) -> FastAPI:
    """The task list as the gateway answered it before streaming: the store's JSON page decoded into objects,
    returned as a dict for FastAPI to encode (its route, minus the reference resolution)."""
    app = FastAPI()

    @app.get("/v1/tasks")
    async def list_tasks(service_id: str | None = None, limit: int | None = None,
                         next_token: str | None = None) -> dict[str, Any]:
        page = await store.page(Kind.TASK, limit=limit, cont=next_token, service_id=service_id)
        return {"revision": page.revision, "items": page.items, "next": page.next}

    return app


async def best(rounds: int, fn: Callable[[], Awaitable[Any]], name: str = "") -> float:
    """Best wall time of `rounds` runs after a warm-up; the best CPU time (this process, which runs the
    gateway and the client, plus the raftstore member) goes to CPU[name]: on a loaded machine the wall time
    is mostly waiting for a core, the CPU time is what the operation costs."""
    await fn()  # warm-up
    times, hops = [], []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), _cpu_hops()
        await fn()
        times.append(time.perf_counter() - t0)
        hops.append(tuple(b - a for a, b in zip(c0, _cpu_hops(), strict=True)))
    CPU[name], HOPS[name] = min((sum(h), h) for h in hops)
    return min(times)


async def run(tasks: int, services: int, rounds: int, only_tasks: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="shoal-bench-listing-") as tmp:
        cluster = RaftProcs(Path(tmp), 1).start_all()
        try:
            cluster.wait_leader(30)
            STORE_PID[:] = [cluster.procs[1].pid]
            gw_proc, gw_url = start_gateway(cluster, Path(tmp))
            STORE_PID.append(gw_proc.pid)
            store = StoreClient(cluster.urls, creds=cluster.certs.client("gateway"), timeout=120.0)
            app = create_app(GatewaySettings(store_members=cluster.urls), store=store)
            cli = Gateway(gw_url, http=sync_http_client(cluster.certs.client("admin", pki.ADMIN), base_url=gw_url,
                                                        timeout=120.0))
            try:
                async with app.router.lifespan_context(app):
                    gw = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                                           timeout=120.0)
                    old = httpx.AsyncClient(transport=httpx.ASGITransport(app=old_app(store)),
                                            base_url="http://gateway", timeout=120.0)
                    return await measure(gw, old, cli, store, tasks, services, rounds, only_tasks)
            finally:
                cli.close()
                gw_proc.terminate()
                gw_proc.wait(10)
        finally:
            cluster.close()


async def measure(gw: httpx.AsyncClient, old: httpx.AsyncClient, cli: Gateway, store: StoreClient, tasks: int,
                  services: int, rounds: int, only_tasks: bool = False) -> dict[str, float]:
    made = []
    for i in range(services):
        spec = {"name": f"svc{i}", "mode": {"replicated": {"replicas": tasks // services}},
                "task": {"process": {"command": ["sleep", "300"]}}}
        r = await gw.post("/v1/services", json=spec)
        r.raise_for_status()
        made.append(r.json())
    t0 = time.perf_counter()
    batch: list[dict[str, Any]] = []
    for n in range(tasks):
        service = made[n % services]
        task = new_task(service, n // services + 1, time.time(), node_id=f"node{n % 1000:04d}")
        task["status"] = task_status(TaskState.RUNNING, time.time())
        batch.append(t.create(Kind.TASK, task))
        if len(batch) == 500 or n == tasks - 1:
            await store.txn(batch)
            batch = []
    print(f"wrote {tasks} tasks in {time.perf_counter() - t0:.1f} s (load {loadavg()}); raftstore member RSS "
          f"{rss_mib(STORE_PID[0]):.0f} MiB", flush=True)
    name = made[0]["spec"]["name"]
    per_service = tasks // services

    service_id = made[0]["id"]

    async def all_tasks() -> None:
        r = await gw.get("/v1/tasks")
        assert len(r.json()["items"]) == tasks

    async def old_all_tasks() -> None:
        r = await old.get("/v1/tasks")
        assert len(r.json()["items"]) == tasks

    def ps_rows(got: list[dict[str, Any]]) -> None:
        assert len(got) == per_service, len(got)
        with open(os.devnull, "w") as out:
            out.write(table.task_table(got, {}, time.time()) + "\n")

    async def service_ps() -> None:
        await asyncio.to_thread(lambda: ps_rows(service_tasks(cli, [name])))

    async def old_service_ps() -> None:
        got, token = [], None
        while True:
            r = await old.get("/v1/tasks", params={"service_id": service_id, "limit": PAGE,
                                                   **({"next_token": token} if token else {})})
            body = r.json()
            got += body["items"]
            token = body["next"]
            if token is None:
                break
        ps_rows(got)

    async def e2e_all() -> None:
        def read() -> None:
            r = cli.http.get("/v1/tasks")
            assert len(r.json()["items"]) == tasks
        await asyncio.to_thread(read)

    async def e2e_all_orjson() -> None:
        def read() -> None:
            r = cli.http.get("/v1/tasks")
            assert len(wire.loads(r.content)["items"]) == tasks
        await asyncio.to_thread(read)

    async def e2e_all_shoal_client() -> None:
        def read() -> None:  # the CLI's client: orjson with the cyclic collector paused (shoal/cli/client.py)
            assert len(cli.items("/v1/tasks")) == tasks
        await asyncio.to_thread(read)

    async def old_full_list() -> None:
        _, items = await store.list(Kind.TASK)
        assert len(items) == tasks

    async def inspect() -> None:
        r = await gw.get(f"/v1/services/{name}")
        assert r.json()["status"]["running"] == per_service

    async def old_inspect() -> None:
        _, svcs = await store.list(Kind.SERVICE)
        service = resolve(svcs, name, "service", service_names)
        _, own = await store.list(Kind.TASK, service_id=service["id"])
        assert with_status(service, own)["status"]["running"] == per_service

    async def services_ls() -> None:
        r = await gw.get("/v1/services")
        assert sum(s["status"]["running"] for s in r.json()["items"]) == tasks

    async def old_services_ls() -> None:
        _, svcs = await store.list(Kind.SERVICE)
        _, items = await store.list(Kind.TASK)
        by: dict[str, list[Any]] = defaultdict(list)
        for x in items:
            by[x["service_id"]].append(x)
        assert sum(with_status(s, by[s["id"]])["status"]["running"] for s in svcs) == tasks

    ops: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("GET /v1/tasks (all)", all_tasks),
        ("old: GET /v1/tasks (all)", old_all_tasks),
        ("TLS: GET /v1/tasks (all), gateway process", e2e_all),
        ("TLS: GET /v1/tasks (all), decoded by orjson", e2e_all_orjson),
        (SHOAL_ALL, e2e_all_shoal_client),
        (PS, service_ps),
        (OLD_PS, old_service_ps),
        ("old: store list of every task", old_full_list),
        ("GET /v1/services/{name}", inspect),
        ("old: inspect by listing", old_inspect),
        ("GET /v1/services", services_ls),
        ("old: services by listing every task", old_services_ls),
    ]
    if only_tasks:
        ops = [(k, f) for k, f in ops if "services" not in k and "inspect" not in k]
    out = {}
    for label, fn in ops:
        out[label] = await best(rounds, fn, label)
    print(f"raftstore member RSS after the reads: {rss_mib(STORE_PID[0]):.0f} MiB (its encoded-object cache "
          "holds each listed view's bytes)", flush=True)
    return out


def listing_cpu(name: str) -> float:
    return CPU.get(name, float("nan"))


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--services", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only-tasks", action="store_true", help="only the task lists (skip the service reads)")
    a = p.parse_args(argv)
    print(f"listing: {a.tasks} tasks, {a.services} service(s), best of {a.rounds}; load {loadavg()}", flush=True)
    r = asyncio.run(run(a.tasks, a.services, a.rounds, a.only_tasks))
    print(f"  {'operation':45s} {'wall':>10s} {'CPU (all processes)':>20s}   CPU per process: this (in-process "
          "gateway, client), store, gateway process")
    for k, v in r.items():
        hops = " / ".join(f"{h * 1e3:.0f}" for h in HOPS.get(k, ()))
        print(f"  {k:45s} {v * 1e3:7.1f} ms {listing_cpu(k) * 1e3:17.1f} ms   {hops} ms")
    c = CPU
    ps, generic = r[PS], r["TLS: GET /v1/tasks (all), gateway process"]
    all_e2e = r[SHOAL_ALL]
    print(f"GET /v1/tasks over TLS: the shoal client (GC paused) / a generic client (httpx .json()) in this run: "
          f"wall {all_e2e / generic:.2f}x, CPU {c[SHOAL_ALL] / c['TLS: GET /v1/tasks (all), gateway process']:.2f}x")
    print(f"vs the {TARGET:.0f} s target: GET /v1/tasks over TLS (shoal client) {all_e2e / TARGET:.2f}x, service ps "
          f"{ps / TARGET:.2f}x ({'met' if max(ps, all_e2e) <= TARGET else 'MISSED'} at {a.tasks} tasks)")
    if a.only_tasks:
        print(f"CPU ratios (now / old): all tasks {c['GET /v1/tasks (all)'] / c['old: GET /v1/tasks (all)']:.2f}x, "
              f"service ps {c[PS] / c[OLD_PS]:.2f}x; wall: all tasks "
              f"{r['GET /v1/tasks (all)'] / r['old: GET /v1/tasks (all)']:.2f}x, service ps {ps / r[OLD_PS]:.2f}x "
              f"(load {loadavg()})", flush=True)
        return r
    print(f"CPU ratios (now / old): all tasks {c['GET /v1/tasks (all)'] / c['old: GET /v1/tasks (all)']:.2f}x, "
          f"service ps {c[PS] / c[OLD_PS]:.2f}x, "
          f"inspect {c['GET /v1/services/{name}'] / c['old: inspect by listing']:.3f}x, "
          f"service ls {c['GET /v1/services'] / c['old: services by listing every task']:.3f}x")
    print(f"wall ratios (now / old): all tasks {r['GET /v1/tasks (all)'] / r['old: GET /v1/tasks (all)']:.2f}x, "
          f"service ps {ps / r[OLD_PS]:.2f}x, "
          f"inspect {r['GET /v1/services/{name}'] / r['old: inspect by listing']:.3f}x, "
          f"service ls {r['GET /v1/services'] / r['old: services by listing every task']:.3f}x "
          f"(load {loadavg()})", flush=True)
    return r


if __name__ == "__main__":
    main()
