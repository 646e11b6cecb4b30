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
import math
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
#: bounds on what a heartbeat (remote input) can make a gateway hold (issue 16): the interval an instance claims
#: (so it cannot stay listed for ever), how many instances are listed, and the size of each field
MIN_INTERVAL, MAX_INTERVAL = 0.1, 10.0
MAX_INSTANCES = 1024
MAX_FIELD_LEN = 255
ROLES = frozenset({"orchestrator", "allocator", "scheduler", "dispatcher", "gateway", "ca", "raftstore"})
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
        self.dropped = 0  # heartbeats refused: malformed, or the registry full of live instances

    async def attach(self, bus: Bus) -> None:
        await bus.subscribe(INSTANCE_HEARTBEAT, self.record)
        self.attached = True

    async def record(self, data: Obj) -> None:
        rec = heartbeat_record(data)
        if rec is None:
            self.dropped += 1
            return
        now = self.clock()
        key = (rec["role"], rec["instance"])
        if key not in self._seen and len(self._seen) >= MAX_INSTANCES:
            self._expire(now)
            if len(self._seen) >= MAX_INSTANCES:
                self.dropped += 1
                return
        self._seen[key] = {**rec, "last_seen": now}

    def _expire(self, now: float) -> None:
        for key, rec in list(self._seen.items()):
            if now - rec["last_seen"] > EXPIRY_PERIODS * rec["interval"]:
                del self._seen[key]

    def instances(self) -> list[Obj]:
        """Live instances (expired ones are dropped), by role then name."""
        self._expire(self.clock())
        return [self._seen[k] for k in sorted(self._seen)]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_FIELD_LEN and value.isprintable() else None


def _number(value: Any, lo: float, hi: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and abs(value) > 2**64:  # math.isfinite cannot even convert 10**400
        return None
    if not math.isfinite(value):
        return None
    return value if lo <= value <= hi else None


def heartbeat_record(data: Any) -> Obj | None:
    """The fields of an instance heartbeat a gateway keeps, validated and bounded; None when it cannot be one
    (an unknown role, a name that is not printable text, ...). The interval is clamped to [0.1 s, 10 s]."""
    if not isinstance(data, dict) or data.get("role") not in ROLES:
        return None
    instance = _text(data.get("instance"))
    if instance is None:
        return None
    interval = _number(data.get("interval"), 0.0, math.inf) or ANNOUNCE_INTERVAL
    port, pid, term = data.get("port"), data.get("pid"), data.get("term")
    rec: Obj = {"role": data["role"], "instance": instance, "host": _text(data.get("host")),
                "port": port if _number(port, 0, 65535) is not None and isinstance(port, int) else None,
                "pid": pid if _number(pid, 0, 2**32) is not None and isinstance(pid, int) else None,
                "interval": min(max(float(interval), MIN_INTERVAL), MAX_INTERVAL),
                "active": data.get("active") is True,
                "term": term if isinstance(term, int) and _number(term, 0, 2**63) is not None else None}
    return rec


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
