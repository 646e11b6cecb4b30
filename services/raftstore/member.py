"""Member: one raftstore member composed from its parts — WAL replay, FSM, Driver and PeerTransport — with
start/stop. `__main__` builds one from settings; tests build several in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from services.raftstore.driver import Driver, DriverConfig
from services.raftstore.fsm import FSM
from services.raftstore.settings import MemberInfo, RaftstoreSettings
from services.raftstore.transport import PeerTransport
from services.raftstore.wal import WAL
from shoal.metrics import Registry

log = logging.getLogger(__name__)


class Member:
    def __init__(self, settings: RaftstoreSettings, *, rng: random.Random | None = None,
                 metrics: Registry | None = None) -> None:
        self.settings = settings
        self.members: list[MemberInfo] = settings.members()
        self.me = settings.me()
        self.metrics = metrics or Registry()
        self.wal, replayed = WAL.open(settings.data_dir)
        log.info("raftstore %d: replayed %d entries from %s (term %d, commit %d)", self.me.id,
                 len(replayed.entries), self.wal.path, replayed.hard_state.term, replayed.hard_state.commit)
        peers = {m.id: (m.peer_host, m.peer_port) for m in self.members}
        self.transport = PeerTransport(self.me.id, peers, deliver=lambda _m: None, metrics=self.metrics)
        cfg = DriverConfig(tick=settings.raft_tick, election_ticks=settings.raft_election_ticks,
                           heartbeat_ticks=settings.raft_heartbeat_ticks, read_timeout=settings.read_timeout)
        self.driver = Driver(self.me.id, [m.id for m in self.members], self.wal, replayed, FSM(),
                             self.transport, cfg, rng=rng, metrics=self.metrics)
        self.transport.deliver = self.driver.receive
        self._task: asyncio.Task[None] | None = None
        #: called if the driver dies of an exception (a broken invariant): its state can no longer be trusted
        self.on_crash: Callable[[BaseException], None] | None = None

    def member(self, member_id: int | None) -> MemberInfo | None:
        return next((m for m in self.members if m.id == member_id), None)

    async def start(self) -> None:
        await self.transport.start(self.me.peer_host, self.me.peer_port)
        self._task = asyncio.create_task(self.driver.run(), name="raft.driver")
        self._task.add_done_callback(self._driver_done)

    def _driver_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        err = task.exception()
        assert err is not None
        log.critical("raftstore %d: the raft driver failed: %r", self.me.id, err, exc_info=err)
        if self.on_crash is not None:
            self.on_crash(err)

    async def stop(self) -> None:
        self.driver.stop()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task
        await self.transport.stop()
        self.wal.close()
