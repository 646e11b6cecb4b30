"""Leases: one active instance per leader-only subsystem, with fencing (ARCHITECTURE principle 4).

A lease is a store object `{id: <subsystem>, holder, term, expires_at, duration}`. The active instance renews
it every `duration/3` with a version precondition; a standby takes it over (term + 1) once `expires_at` has
passed. Every write of the active instance carries `fence()` — a `check` op on the lease's holder and term — so
an instance that was paused past its lease (SIGSTOP, GC, partition) cannot write anything after a takeover."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from shoal.clock import Clock, SystemClock
from shoal.errors import AlreadyExists, Conflict, NotFound, ShoalError
from shoal.models.kinds import Kind
from shoal.store import txn as t
from shoal.store.protocol import Store
from shoal.store.txn import Op

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, store: Store, name: str, holder: str, *, duration: float = 1.5,
                 clock: Clock | None = None) -> None:
        self.store = store
        self.name = name
        self.holder = holder
        self.duration = duration
        self.clock = clock or SystemClock()
        self.term = 0
        self.active = asyncio.Event()
        self.lost = asyncio.Event()
        self._obj: dict[str, Any] | None = None
        self._stopped = False

    @property
    def is_active(self) -> bool:
        return self.active.is_set() and not self.lost.is_set()

    def fence(self) -> Op:
        """The precondition every write of the active instance must include."""
        return t.check(Kind.LEASE, self.name, holder=self.holder, term=self.term)

    def _lease(self, term: int) -> dict[str, Any]:
        return {"id": self.name, "holder": self.holder, "term": term,
                "expires_at": self.clock.now() + self.duration, "duration": self.duration}

    async def try_acquire(self) -> bool:
        """One attempt to become (or stay) the active instance."""
        try:
            cur = await self.store.get(Kind.LEASE, self.name)
        except NotFound:
            cur = None
        try:
            if cur is None:
                res = await self.store.txn([t.create(Kind.LEASE, self._lease(1))])
            elif cur["holder"] == self.holder and cur["term"] == self.term and self.term > 0:
                res = await self.store.txn([t.update(Kind.LEASE, {**cur, **self._lease(self.term)})])
            elif cur["expires_at"] < self.clock.now():
                res = await self.store.txn([t.update(Kind.LEASE, {**cur, **self._lease(cur["term"] + 1)})])
            else:
                return False
        except (AlreadyExists, Conflict):
            return False
        self._obj = res.objects[0]
        self.term = int(self._obj["term"])
        return True

    async def run(self) -> None:
        """Campaign until active, then renew; on losing the lease set `lost` and return (the process should
        stop acting: its writes would be fenced anyway)."""
        renewed_at = self.clock.monotonic()
        while not self._stopped:
            try:
                ok = await self.try_acquire()
            except ShoalError as e:
                # Unreachable store: keep trying while the lease may still be ours; past its duration, another
                # instance may hold it, so stand down (our writes would be fenced anyway).
                log.warning("lease %s: store unavailable: %s", self.name, e)
                ok = self.active.is_set() and self.clock.monotonic() - renewed_at < self.duration
            else:
                if ok:
                    renewed_at = self.clock.monotonic()
            if ok and not self.active.is_set():
                log.info("lease %s: %s is active with term %d", self.name, self.holder, self.term)
                self.active.set()
            elif not ok and self.active.is_set():
                log.warning("lease %s: lost (term %d); standing down", self.name, self.term)
                self.lost.set()
                return
            await self.clock.sleep(self.duration / 3 if self.active.is_set() else self.duration / 4)

    def stop(self) -> None:
        self._stopped = True
