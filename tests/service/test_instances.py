"""Instance discovery (shoal/instances.py): heartbeats on the bus, the gateway's registry with expiry, and
`GET /v1/cluster` listing every instance with the lease deciding which one is active; `shoal cluster`'s table."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shoal.bus import MemoryBus
from shoal.bus.subjects import INSTANCE_HEARTBEAT
from shoal.cli.table import cluster_text
from shoal.instances import ANNOUNCE_INTERVAL, Announcer, InstanceRegistry, heartbeat_record, instance_view
from shoal.store import txn as t
from shoal.store.local import LocalStore


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_registry_collects_heartbeats_and_forgets_silent_instances() -> None:
    bus, clock = MemoryBus(), Clock()
    reg = InstanceRegistry(clock)
    await reg.attach(bus)
    a = Announcer(bus, "scheduler", "scheduler@c1:4323", port=4323, status=lambda: {"active": True, "term": 4})
    b = Announcer(bus, "scheduler", "scheduler@c2:4323", port=4323, status=lambda: {"active": False, "term": 0})
    for ann in (a, b):
        await bus.publish(INSTANCE_HEARTBEAT, ann.message())
    await bus.publish(INSTANCE_HEARTBEAT, {"role": "", "instance": "junk"})  # ignored
    assert [x["instance"] for x in reg.instances()] == ["scheduler@c1:4323", "scheduler@c2:4323"]
    clock.t += 2.5
    await bus.publish(INSTANCE_HEARTBEAT, a.message())
    clock.t += 1.0  # b silent for 3.5 s: more than three 1 s periods
    assert [x["instance"] for x in reg.instances()] == ["scheduler@c1:4323"]


async def test_announcer_publishes_every_interval() -> None:
    bus = MemoryBus()
    ann = Announcer(bus, "dispatcher", "dispatcher@h:4324", port=4324, interval=0.05)
    ann.start()
    await asyncio.sleep(0.18)
    await ann.stop()
    beats = [d for s, d in bus.published if s == INSTANCE_HEARTBEAT]
    assert len(beats) >= 3 and beats[0]["role"] == "dispatcher" and beats[0]["port"] == 4324


def test_the_lease_not_the_claim_decides_who_is_active() -> None:
    now = 100.0
    seen = [{"role": "scheduler", "instance": "s1", "active": True, "term": 3, "last_seen": now},  # stale claim
            {"role": "scheduler", "instance": "s2", "active": True, "term": 4, "last_seen": now},
            {"role": "orchestrator", "instance": "o1", "active": True, "term": 1, "last_seen": now},
            {"role": "dispatcher", "instance": "d1", "last_seen": now - 0.5}]
    leases = [{"id": "scheduler", "holder": "s2", "term": 4, "expires_at": now + 1},
              {"id": "orchestrator", "holder": "o1", "term": 1, "expires_at": now - 1}]  # expired
    view = {x["instance"]: x for x in instance_view(seen, leases, now)}
    assert (view["s1"]["state"], view["s1"]["term"]) == ("standby", None)
    assert (view["s2"]["state"], view["s2"]["term"]) == ("active", 4)
    assert view["o1"]["state"] == "standby"
    assert view["d1"]["state"] == "serving" and view["d1"]["age"] == 0.5
    # Without the leases (store down) the instances' own claims are shown.
    assert instance_view(seen, None, now)[0]["active"] is True


def test_gateway_lists_instances_in_the_cluster_view() -> None:
    store, bus = LocalStore(), MemoryBus()
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    settings = GatewaySettings(store_members=["http://store-1:4301"], ready_probe_interval=0.05, port=4242,
                               instance="gateway-a")
    with TestClient(create_app(settings, store=store, http=http, bus=bus)) as client:
        lease = {"id": "scheduler", "holder": "scheduler-b", "term": 7, "expires_at": 4e9, "duration": 1.5}
        client.portal.call(store.txn, [t.create("lease", lease)])  # type: ignore[union-attr]
        statuses: list[tuple[str, dict[str, Any]]] = [("scheduler-a", {"active": False, "term": 0}),
                                                      ("scheduler-b", {"active": True, "term": 7})]
        for name, status in statuses:
            msg = Announcer(bus, "scheduler", name, port=4323, status=status.copy).message()
            client.portal.call(bus.publish, INSTANCE_HEARTBEAT, msg)  # type: ignore[union-attr]
        body = client.get("/v1/cluster").json()
    rows = {(x["role"], x["instance"]): x for x in body["instances"]}
    assert rows[("scheduler", "scheduler-b")]["state"] == "active" and rows[("scheduler", "scheduler-b")]["term"] == 7
    assert rows[("scheduler", "scheduler-a")]["state"] == "standby"
    assert rows[("gateway", "gateway-a")]["state"] == "serving"  # the gateway announces itself too
    text = cluster_text(body, 0.0)
    assert "ROLE" in text and "scheduler-b" in text and "active" in text and "standby" in text


async def test_hostile_heartbeats_cannot_grow_the_registry_or_live_for_ever() -> None:
    """Issue 16: 20,000 announcements with a huge interval used to grow the gateway by 230 MB and never
    expire. Now the interval is clamped (10 s), the registry holds at most MAX_INSTANCES live instances, and
    fields are validated and bounded."""
    from shoal.instances import MAX_INSTANCES, MAX_INTERVAL

    bus, clock = MemoryBus(), Clock()
    reg = InstanceRegistry(clock)
    await reg.attach(bus)
    for i in range(20_000):
        await bus.publish(INSTANCE_HEARTBEAT, {"role": "gateway", "instance": f"evil{i}", "interval": 1e308,
                                               "host": "h" * 10_000, "pad": "x" * 1000})
    for junk in ({"role": "gateway", "instance": "a\nb"}, {"role": "nobody", "instance": "x"},
                 {"role": "gateway", "instance": "x" * 300}, {"role": "gateway", "instance": 7}, [1, 2]):
        await bus.publish(INSTANCE_HEARTBEAT, junk)
    for huge in (10**400, -(10**400)):  # math.isfinite cannot convert these: refused as a value, not a failure
        rec = heartbeat_record({"role": "gateway", "instance": "h", "interval": huge, "port": huge, "term": huge})
        assert rec is not None and rec["interval"] == ANNOUNCE_INTERVAL and rec["port"] is None and rec["term"] is None
    for junk in ():
        await bus.publish(INSTANCE_HEARTBEAT, junk)
    live = reg.instances()
    assert len(live) == MAX_INSTANCES and reg.dropped == 20_000 - MAX_INSTANCES + 5
    assert live[0]["interval"] == MAX_INTERVAL and live[0]["host"] is None and "pad" not in live[0]
    clock.t += 3 * MAX_INTERVAL + 1
    assert reg.instances() == []
    await bus.publish(INSTANCE_HEARTBEAT, {"role": "gateway", "instance": "real", "interval": 1.0})
    assert [x["instance"] for x in reg.instances()] == ["real"]
