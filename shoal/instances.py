"""Instance discovery for `GET /v1/cluster`: which processes of each role are alive, and which one is active.

Every control-plane process (orchestrator, allocator, scheduler, dispatcher, gateway) runs an `Announcer`
that publishes a small heartbeat on NATS `shoal.instance.heartbeat` every second: its role, instance name,
host, port, pid, and — for leader-only subsystems — whether it believes it holds the lease and its term.
Each gateway runs an `InstanceRegistry` that collects them and forgets an instance after three missed
heartbeats; `/v1/cluster` joins that with the lease objects in the store, which stay the authority on who is
active (an instance's own claim can be stale, e.g. while it is paused).

Why NATS and not store objects: registrations are soft state that needs no consensus, and a heartbeat per
instance per second through Raft would cost every replica a disk write for nothing. The price is a gateway
that just started (or lost NATS) lists no instances for about one heartbeat period; the leases, read from
the store, are always shown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from shoal.bus.base import Bus
from shoal.bus.subjects import INSTANCE_HEARTBEAT

log = logging.getLogger(__name__)

ANNOUNCE_INTERVAL = 1.0
EXPIRY_PERIODS = 3  # an instance is forgotten after this many missed heartbeats
LEADER_ROLES = frozenset({"orchestrator", "allocator", "scheduler"})

Obj = dict[str, Any]


class Announcer:
    """Publishes this instance's heartbeat every `interval` seconds until stopped. `status()` adds fields
    (leader-only subsystems: `active`, `term`)."""

    def __init__(self, bus: Bus, role: str, instance: str, *, port: int = 0,
                 status: Callable[[], Obj] | None = None, interval: float = ANNOUNCE_INTERVAL) -> None:
        self.bus = bus
        self.role = role
        self.instance = instance
        self.port = port
        self.status = status or dict
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def message(self) -> Obj:
        try:
            extra = self.status()
        except Exception as e:  # a status that cannot be read must not stop the heartbeat
            extra = {"error": str(e)}
        return {"role": self.role, "instance": self.instance, "host": socket.gethostname(), "port": self.port,
                "pid": os.getpid(), "at": time.time(), "interval": self.interval, **extra}

    async def run(self) -> None:
        while True:
            await self.bus.publish(INSTANCE_HEARTBEAT, self.message())
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"announce.{self.role}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None


class InstanceRegistry:
    """The instances heard from recently (gateway side)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._seen: dict[tuple[str, str], Obj] = {}
        self.attached = False

    async def attach(self, bus: Bus) -> None:
        await bus.subscribe(INSTANCE_HEARTBEAT, self.record)
        self.attached = True

    async def record(self, data: Obj) -> None:
        role, instance = data.get("role"), data.get("instance")
        if not isinstance(role, str) or not isinstance(instance, str) or not role or not instance:
            return
        try:
            interval = float(data.get("interval") or ANNOUNCE_INTERVAL)
        except (TypeError, ValueError):
            interval = ANNOUNCE_INTERVAL
        self._seen[(role, instance)] = {**data, "interval": interval, "last_seen": self.clock()}

    def instances(self) -> list[Obj]:
        """Live instances (expired ones are dropped), by role then name."""
        now = self.clock()
        for key, rec in list(self._seen.items()):
            if now - rec["last_seen"] > EXPIRY_PERIODS * rec["interval"]:
                del self._seen[key]
        return [self._seen[k] for k in sorted(self._seen)]


def instance_view(instances: Iterable[Obj], leases: Iterable[Obj] | None, now: float) -> list[Obj]:
    """What `/v1/cluster` shows per instance: role, instance, host, port, `active` and `term`. For leader-only
    roles the lease decides (`active` = it holds an unexpired lease, `term` = the lease's term), when the
    leases could be read; otherwise the instance's own claim. Other roles are all active (no lease)."""
    by_name = {str(x.get("id") or x.get("name")): x for x in leases or []}
    out = []
    for rec in instances:
        role = str(rec["role"])
        view: Obj = {"role": role, "instance": rec["instance"], "host": rec.get("host"), "port": rec.get("port"),
                     "pid": rec.get("pid"), "last_seen": rec.get("last_seen"),
                     "age": max(0.0, now - float(rec.get("last_seen") or now))}
        if role in LEADER_ROLES:
            lease = by_name.get(role)
            if leases is not None:
                holds = (lease is not None and lease.get("holder") == rec["instance"]
                         and float(lease.get("expires_at") or 0.0) >= now)
                view["active"] = holds
                view["term"] = lease.get("term") if holds and lease is not None else None
            else:
                view["active"] = bool(rec.get("active"))
                view["term"] = rec.get("term") if rec.get("active") else None
            view["state"] = "active" if view["active"] else "standby"
        else:
            view["active"] = True
            view["term"] = None
            view["state"] = "serving"
        out.append(view)
    return out
