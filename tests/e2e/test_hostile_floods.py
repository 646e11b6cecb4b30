"""Issue 16, hostile input on a real `shoal up` cluster, the part that floods: fuzzed NATS payloads on every
subject a process subscribes to (store events, node heartbeats, instance heartbeats) from a client holding
valid NATS credentials, thousands of half-open (slowloris) connections and a flood of bodies over the limit on
the gateway, the dispatcher and a raftstore member. Afterwards: every process alive with no supervisor
restarts, RSS within a bound, logs of bounded size, real requests served during and after, the cluster
converging a service. A bounded run here; the soak tier runs it larger (SHOAL_SOAK=1)."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from shoal import transport
from shoal.bus import subjects
from tests.e2e.harness import Cluster, converged_hash, eventually, items

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

#: the processes watched, and the most each may grow (RSS) over the whole run
WATCHED = ("gateway", "dispatcher", "orchestrator", "scheduler", "allocator", "ca", "raftstore-1")
MAX_GROWTH = 150 * 1024 * 1024
MAX_LOGS = 8 * 1024 * 1024
#: what one half-open connection may cost a server (asyncio's own 256 KiB TLS buffer made it ~300 KiB)
MAX_PER_CONNECTION = 160 * 1024


@dataclass(frozen=True)
class Scale:
    nats_rounds: int  # fuzzed messages per subject
    instances: int  # distinct forged instance announcements
    slow: int  # half-open connections, split over the three ports
    bodies: int  # requests over the body limit


FAST = Scale(nats_rounds=300, instances=5000, slow=1500, bodies=60)
SOAK = Scale(nats_rounds=5000, instances=40000, slow=9000, bodies=600)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def rss_of(cluster: Cluster) -> dict[str, int]:
    out = {}
    for name in WATCHED:
        pid = cluster.sup.children[name].pid
        assert pid is not None and cluster.sup.children[name].alive(), f"{name} is not running"
        out[name] = rss(pid)
    return out


# ---- NATS payloads -----------------------------------------------------------------------------------------------
EXTREMES: list[Any] = [None, True, 0, -1, 2**63, 10**400, 1e308, -1e308, "x", "", "\n\x00\u2028", [], {}, [1] * 50,
                       "a" * 70_000]


def raw_payloads(rng: random.Random) -> list[bytes]:
    """Bytes that are not a message at all, or only nearly one."""
    return [b"", b"\xff\xfe\xfd", b"\xc3\x28" * 100, b"null", b"[]", b"1e999", b"NaN", b"Infinity",
            b'{"at": Infinity}', b'{"at": NaN}', b'{"revision": -Infinity}', b"[" * 200_000, b'{"a":' * 50_000,
            b"{" + b" " * 900_000 + b"}", bytes(rng.getrandbits(8) for _ in range(512)),
            json.dumps({"x": "y" * 900_000}).encode(), b'{"revision": 1' + b"0" * 5000 + b"}"]


def field_payloads(subject: str, rng: random.Random, now: float) -> dict[str, Any]:
    """One message of the subject's shape, each field replaced (or not) by an extreme value of any type."""
    if subject == subjects.NODE_HEARTBEAT:
        base: dict[str, Any] = {"node_id": "n" * rng.randint(1, 30), "at": now}
    elif subject == subjects.INSTANCE_HEARTBEAT:
        base = {"role": rng.choice(["gateway", "dispatcher", "orchestrator", "nope"]), "instance": "i",
                "host": "h", "port": 1, "pid": 1, "at": now, "interval": 1.0, "active": True, "term": 1}
    else:
        base = {"revision": 1, "changes": [{"kind": "service", "action": "create", "id": "x", "version": 1}]}
    return {k: (rng.choice(EXTREMES) if rng.random() < 0.6 else v) for k, v in base.items()}


def dumps(value: Any) -> bytes:
    try:
        return json.dumps(value).encode()  # NaN/Infinity as JSON's non-standard literals, like an attacker would
    except (ValueError, OverflowError):
        return b"{}"


async def fuzz_nats(cluster: Cluster, scale: Scale) -> int:
    """Publish with the dispatcher's NATS user (node and instance heartbeats) and raftstore-1's (store events):
    valid credentials, hostile bytes. Returns the number of messages sent."""
    rng = random.Random(16)
    sent = 0
    plan = [("dispatcher", subjects.NODE_HEARTBEAT), ("dispatcher", subjects.INSTANCE_HEARTBEAT),
            ("raftstore-1", subjects.STORE_EVENTS)]
    for component, subject in plan:
        creds = transport.Credentials(cluster.layout.cert_dir(component))
        nc = await nats.connect(servers=[cluster.layout.nats_url], name=f"fuzz-{component}",
                                max_reconnect_attempts=3, **transport.nats_options(creds))
        try:
            for payload in raw_payloads(rng):
                await nc.publish(subject, payload)
                sent += 1
            for _ in range(scale.nats_rounds):
                await nc.publish(subject, dumps(field_payloads(subject, rng, time.time())))
                sent += 1
            if subject == subjects.INSTANCE_HEARTBEAT:  # many distinct instances that promise to live forever
                for i in range(scale.instances):
                    await nc.publish(subject, dumps({"role": "orchestrator", "instance": f"forged-{i}",
                                                     "at": time.time(), "interval": 1e300}))
                    sent += 1
            if subject == subjects.NODE_HEARTBEAT:  # a dead node kept alive forever / unknown nodes
                for i in range(scale.nats_rounds):
                    await nc.publish(subject, dumps({"node_id": f"ghost-{i}", "at": time.time()}))
                    await nc.publish(subject, dumps({"node_id": f"ghost-{i}", "at": float("inf")}))
                    sent += 2
            await nc.flush(timeout=10)
        finally:
            await nc.close()
    return sent


# ---- floods -----------------------------------------------------------------------------------------------------
def flood_targets(cluster: Cluster) -> list[int]:
    return [cluster.layout.gateway_port, cluster.layout.port_of("dispatcher"), cluster.layout.port_of("raftstore-1")]


def half_open(ports: list[int], n: int) -> list[socket.socket]:
    """`n` connections that send a few bytes of a TLS hello (or nothing) and then stall."""
    held = []
    for i in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", ports[i % len(ports)]), timeout=5)
        except OSError:
            continue  # refused or reset: the server is shedding, which is allowed
        if i % 2:
            try:
                s.send(b"\x16\x03\x01\x00")  # the start of a TLS record, never finished
            except OSError:
                pass
        held.append(s)
    return held


async def body_flood(cluster: Cluster, n: int) -> list[int]:
    """`n` concurrent requests with bodies over the limit on the three ports (streamed without a length, and
    declared too large): every answer must be a 413 (or the connection cut), never a 5xx."""
    gw_creds = transport.Credentials.client_bundle(cluster.layout.client_dir)
    mgr_creds = transport.Credentials(cluster.layout.cert_dir("gateway"))
    urls = [(gw_creds, cluster.layout.gateway_url + "/v1/services"),
            (mgr_creds, cluster.layout.url_of("dispatcher") + "/v1/logs"),
            (mgr_creds, cluster.layout.url_of("raftstore-1") + "/v1/txn")]
    chunk = b" " * (256 * 1024)

    async def chunks() -> Any:
        for _ in range(24):  # 6 MiB, over the 4 MiB limit
            yield chunk

    statuses: list[int] = []
    clients = {id(c): transport.http_client(c, timeout=30) for c, _ in urls}
    try:
        async def one(i: int) -> None:
            creds, url = urls[i % len(urls)]
            h = clients[id(creds)]
            try:
                if i % 2:
                    r = await h.post(url, content=chunks(), headers={"content-type": "application/json"})
                else:
                    r = await h.post(url, content=b"{", headers={"content-type": "application/json",
                                                                 "content-length": str(100 * 1024 * 1024)})
                statuses.append(r.status_code)
            except Exception:
                statuses.append(0)  # connection cut while sending: allowed

        sem = asyncio.Semaphore(30)

        async def bounded(i: int) -> None:
            async with sem:
                await one(i)

        await asyncio.gather(*(bounded(i) for i in range(n)))
    finally:
        for c in clients.values():
            await c.aclose()
    return statuses


def metric_values(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


def served_quickly(cluster: Cluster, limit: float) -> float:
    t0 = time.monotonic()
    r = cluster.http.get("/v1/services")
    took = time.monotonic() - t0
    assert r.status_code == 200, r.text
    assert took < limit, f"a real request took {took:.1f}s during the flood"
    return took


def same_state(cluster: Cluster) -> str | None:
    """The members' common state hash once all applied the same index (nothing forged applied on one), else None."""
    return converged_hash([member_status(cluster, url) for url in cluster.layout.store_members])


def member_status(cluster: Cluster, url: str) -> dict[str, Any] | None:
    try:
        r = cluster.manager_http.get(url + "/v1/status", params={"hash": "true"})
    except httpx.HTTPError:
        return None
    return dict(r.json()) if r.status_code == 200 else None


def run_hostile(cluster: Cluster, scale: Scale) -> dict[str, Any]:
    http = cluster.http
    cluster.create_service("before", 1)
    cluster.wait_running("before", 1, timeout=60)
    time.sleep(2)
    before = rss_of(cluster)
    #: restarts while the cluster started (another process on a free port it picked) are not the hostile input's
    restarts = {name: c.restarts for name, c in cluster.sup.children.items()}
    logs_before = sum(p.stat().st_size for p in cluster.sup.log_dir.glob("*.log"))

    phases: dict[str, dict[str, int]] = {"start": before}
    sent = asyncio.run(fuzz_nats(cluster, scale))
    time.sleep(2)
    phases["nats"] = rss_of(cluster)
    instances = http.get("/v1/cluster").json()["instances"]
    assert len(instances) <= 1024 + 50, f"{len(instances)} instances kept from forged announcements"
    ready = [n for n in cluster.nodes() if n["status"]["state"] == "ready"]
    assert len(ready) >= cluster.layout.agents, cluster.nodes()  # forged heartbeats changed nobody's state

    baseline = served_quickly(cluster, 30.0)
    held = half_open(flood_targets(cluster), scale.slow)
    during = served_quickly(cluster, 30.0)
    phases["slow"] = rss_of(cluster)
    per_port = max(1, len(held) // 3)
    for name in ("gateway", "dispatcher", "raftstore-1"):  # a half-open connection is cheap (limits.TLS_READ_BUFFER)
        cost = (phases["slow"][name] - phases["nats"][name]) / per_port
        assert cost < MAX_PER_CONNECTION, f"{name}: {cost / 1024:.0f} KiB per half-open connection"
    statuses = asyncio.run(body_flood(cluster, scale.bodies))
    assert all(s in (413, 0) for s in statuses), sorted(set(statuses))
    assert statuses.count(413) >= len(statuses) // 2, statuses
    phases["bodies"] = rss_of(cluster)
    for s in held:
        s.close()
    time.sleep(1)
    served_quickly(cluster, 3.0)

    cluster.create_service("after", 2)
    cluster.wait_running("after", 2, timeout=60)
    assert {s["spec"]["name"] for s in items(http.get("/v1/services").json())} == {"before", "after"}
    restarted = {name: c.restarts - restarts.get(name, 0) for name, c in cluster.sup.children.items()
                 if c.restarts != restarts.get(name, 0)}
    assert restarted == {}, restarted
    eventually(lambda: same_state(cluster), 30, "every raftstore member at the same index with the same state hash")
    after = rss_of(cluster)
    growth = {n: after[n] - before[n] for n in WATCHED}
    mb = {phase: {n: v // 2**20 for n, v in r.items()} for phase, r in phases.items()}
    print({"baseline": baseline, "during": during, "rss_mb": mb})
    # what the half-open connections cost stays as the process's high-water mark after they close (the
    # allocator keeps it): the bound is the fixed one or the per-connection budget times the connections a
    # server held, whichever is larger (the soak flood: ~3,000 per server, ~100 KiB each, ~300 MB)
    bound = max(MAX_GROWTH, per_port * MAX_PER_CONNECTION)
    assert all(g < bound for g in growth.values()), (growth, mb, bound)
    # what was refused is counted (docs/operations.md): the bodies, the fuzzed NATS messages
    gw = metric_values(cluster.http.get("/metrics").text)
    disp = metric_values(cluster.manager_http.get(cluster.layout.url_of("dispatcher") + "/metrics").text)
    assert gw["shoal_server_bodies_refused"] > 0 and gw["shoal_nats_messages_dropped"] > 0, gw
    assert disp["shoal_nats_messages_dropped"] > 0 and disp["shoal_dispatcher_heartbeat_messages_dropped_total"] > 0
    logs_after = sum(p.stat().st_size for p in cluster.sup.log_dir.glob("*.log"))
    assert logs_after - logs_before < MAX_LOGS, logs_after - logs_before
    return {"baseline_s": round(baseline, 3), "nats_messages": sent, "slow_connections": len(held),
            "bodies": len(statuses),
            "during_s": round(during, 3), "rss_growth_mb": {n: round(g / 2**20, 1) for n, g in growth.items()},
            "log_growth_kb": (logs_after - logs_before) // 1024}


def test_hostile_nats_and_floods_leave_the_cluster_working(cluster: Cluster) -> None:
    print(run_hostile(cluster, FAST))


@pytest.mark.soak
def test_hostile_nats_and_floods_at_length(cluster: Cluster) -> None:
    print(run_hostile(cluster, SOAK))
