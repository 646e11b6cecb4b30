"""Write throughput of a local 3-member raftstore cluster: C concurrent StoreClient writers for D seconds.

    python -m bench.raftstore_writes --clients 16 --seconds 10 --target leader|follower

Prints writes/s, latency percentiles, and from the leader's /metrics the mean proposal batch and the fsyncs per
write (group commit). The client runs in this process and competes for the same cores as the members, so on a
small machine the numbers are a floor, not a ceiling."""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from pathlib import Path

import httpx

from shoal.errors import ShoalError
from shoal.store import txn as t
from shoal.store.client import StoreClient
from tests.integration.raftprocs import RaftProcs


def metric(text: str, name: str) -> float:
    m = re.search(rf"^shoal_{name} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def run(clients: int, seconds: float, target: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = RaftProcs(Path(tmp), 3).start_all()
        try:
            lead = cluster.wait_leader(15)
            member = lead if target == "leader" else next(i for i in cluster.ids if i != lead)
            url = cluster.url(member)
            before = cluster.http.get(cluster.url(lead) + "/metrics").text
            latencies: list[float] = []
            errors = 0
            stop_at = time.monotonic() + seconds

            async def writer(k: int) -> None:
                nonlocal errors
                client = StoreClient([url], creds=cluster.certs.client(), timeout=30.0)
                n = 0
                try:
                    while time.monotonic() < stop_at:
                        started = time.perf_counter()
                        try:
                            await client.txn([t.create("task", {"id": f"b{k}-{n}", "service_id": "bench",
                                                                "node_id": None, "desired_state": "running"})])
                        except (ShoalError, httpx.HTTPError):
                            errors += 1
                            continue
                        finally:
                            n += 1
                        latencies.append(time.perf_counter() - started)
                finally:
                    await client.close()

            began = time.monotonic()
            await asyncio.gather(*(writer(k) for k in range(clients)))
            elapsed = time.monotonic() - began
            after = cluster.http.get(cluster.url(lead) + "/metrics").text
        finally:
            cluster.close()
    latencies.sort()
    n = len(latencies)
    proposals = metric(after, "raft_proposals_total") - metric(before, "raft_proposals_total")
    batches = metric(after, "raft_proposal_batches_total") - metric(before, "raft_proposal_batches_total")
    fsyncs = metric(after, "raft_fsyncs_total") - metric(before, "raft_fsyncs_total")
    print(f"{clients} clients -> {target}: {n / elapsed:.0f} writes/s over {elapsed:.1f}s, "
          f"p50 {latencies[n // 2] * 1000:.1f} ms, p99 {latencies[int(n * 0.99)] * 1000:.1f} ms, "
          f"errors {errors}; leader: mean batch {proposals / max(batches, 1):.1f}, "
          f"fsyncs/write {fsyncs / max(proposals, 1):.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--target", choices=["leader", "follower"], default="leader")
    a = p.parse_args()
    asyncio.run(run(a.clients, a.seconds, a.target))


if __name__ == "__main__":
    main()
