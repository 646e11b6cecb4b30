"""The driver's order of persisting and sending (services/raftstore/driver.py `_handle_ready`), on three real
drivers (real WALs on disk, real cores) wired by an in-process network that records, per member, every WAL
save and every message handed to the network in the order they happened:

- the leader's appends (APP) of a write leave *before* its own WAL save of those entries (the followers persist
  in parallel: one fsync less on the write path), and only APP does;
- a follower's ack (APP_RESP) leaves only after the entries it acknowledges are saved;
- a vote (VOTE_RESP granted) or a campaign (VOTE) leaves only after the hard state holding its term (and vote)
  is saved — never early, whatever the Ready also carries."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from services.raftstore.atrest import Sealer
from services.raftstore.driver import Driver, DriverConfig
from services.raftstore.fsm import FSM, encode_txn
from services.raftstore.raft import Entry, HardState, Message, MsgType
from services.raftstore.raft.progress import ProgressState
from services.raftstore.wal import WAL

SEALER = Sealer({1: bytes(32)}, 1)
Event = tuple[str, Any]


class Net:
    """Delivers each message on the next loop turn (like a socket would) and records what each member did."""

    def __init__(self) -> None:
        self.drivers: dict[int, Driver] = {}
        self.events: dict[int, list[Event]] = {}

    def sender(self, member: int) -> Any:
        net = self

        class _Sender:
            def send(self, msgs: Sequence[Message]) -> None:
                loop = asyncio.get_running_loop()
                for m in msgs:
                    net.events[member].append(("send", m))
                    target = net.drivers.get(m.to)
                    if target is not None:
                        loop.call_soon(target.receive, m)

        return _Sender()


def recording_wal(path: Path, events: list[Event]) -> tuple[WAL, Any]:
    wal, replayed = WAL.open(path, SEALER)
    save = wal.save

    def recorded(hard_state: HardState | None, entries: Sequence[Entry], *, sync: bool = True) -> None:
        events.append(("save-start", (tuple(entries), threading.get_ident())))
        save(hard_state, entries, sync=sync)
        events.append(("save", (hard_state, tuple(entries), sync)))

    wal.save = recorded  # type: ignore[method-assign]
    return wal, replayed

@contextlib.asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[Net]:
    """Three drivers over recording WALs, running until the block ends."""
    net = Net()
    for i in (1, 2, 3):
        net.events[i] = []
        (tmp_path / str(i)).mkdir()
        wal, replayed = recording_wal(tmp_path / str(i), net.events[i])
        net.drivers[i] = Driver(i, [1, 2, 3], wal, replayed, FSM(), net.sender(i),
                                DriverConfig(tick=0.01, election_ticks=10), rng=random.Random(i))
    tasks = [asyncio.create_task(d.run()) for d in net.drivers.values()]
    try:
        yield net
    finally:
        for d in net.drivers.values():
            d.stop()
        await asyncio.gather(*tasks, return_exceptions=True)


async def leader_of(net: Net, timeout: float = 10.0) -> Driver:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        leaders = [d for d in net.drivers.values() if d.is_leader]
        if len(leaders) == 1 and all(d.leader_id == leaders[0].id for d in net.drivers.values()):
            return leaders[0]
        assert asyncio.get_running_loop().time() < deadline, "no leader elected"
        await asyncio.sleep(0.01)


async def replicating(leader: Driver) -> None:
    """Wait until the leader streams appends to every follower: right after an election each is probed (one
    append until it answers), and a write proposed before the answer would go out only after the leader's save,
    whatever the driver's order."""
    raft = leader.node.raft
    for _ in range(500):
        if all(raft.prs[f].state is ProgressState.REPLICATE for f in raft.others()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the leader never replicated to every follower")


def saved_index(event: Event, index: int) -> bool:
    return event[0] == "save" and any(e.index == index for e in event[1][1])


def saved_term(event: Event, term: int) -> bool:
    return event[0] == "save" and event[1][0] is not None and event[1][0].term >= term


def write(key: str) -> bytes:
    return encode_txn({"ops": [{"op": "create", "kind": "config", "object": {"id": key, "data": "x"}}]})


async def test_leader_sends_appends_before_its_own_save_and_followers_ack_after_theirs(tmp_path: Path) -> None:
    async with cluster(tmp_path) as net:
        leader = await leader_of(net)
        await replicating(leader)
        results = await asyncio.wait_for(asyncio.gather(*(leader.propose(write(f"k{n}")) for n in range(5))), 10)
        assert [r.revision for r in results] == sorted(r.revision for r in results)
        indexes = sorted(k for k in (max(e.index for e in ev[1][1]) for ev in net.events[leader.id]
                                     if ev[0] == "save" and ev[1][1]))
        last = indexes[-1]
        mine = net.events[leader.id]
        # the leader: an APP carrying entry `last` precedes its own save of that entry
        first_app = next(i for i, ev in enumerate(mine) if ev[0] == "send" and ev[1].type is MsgType.APP
                         and any(e.index == last for e in ev[1].entries))
        own_save = next(i for i, ev in enumerate(mine) if saved_index(ev, last))
        assert first_app < own_save, "the leader's append waited for its own fsync"
        # ... and its write began before that append was handed over, on a worker thread (a send may cost the
        # leader its core for a while; the disk works meanwhile)
        start = next(i for i, ev in enumerate(mine) if ev[0] == "save-start" and any(e.index == last for e in ev[1][0]))
        assert start < first_app, "the leader's WAL write started only after its appends were sent"
        assert mine[start][1][1] != threading.get_ident(), "the leader's WAL write ran on the event loop's thread"
        # followers: every APP_RESP acknowledging index i comes after their save of i
        for fid in (i for i in net.drivers if i != leader.id):
            theirs = net.events[fid]
            acks = [(n, ev[1]) for n, ev in enumerate(theirs) if ev[0] == "send"
                    and ev[1].type is MsgType.APP_RESP and not ev[1].reject and ev[1].index > 0]
            assert acks, f"member {fid} acknowledged nothing"
            for n, m in acks:
                assert any(saved_index(ev, m.index) for ev in theirs[:n]), \
                    f"member {fid} acked index {m.index} before saving it"


async def test_votes_and_campaigns_leave_only_after_their_term_is_saved(tmp_path: Path) -> None:
    async with cluster(tmp_path) as net:
        await leader_of(net)
        for member, events in net.events.items():
            for n, ev in enumerate(events):
                if ev[0] != "send":
                    continue
                m: Message = ev[1]
                if m.type is MsgType.VOTE or (m.type is MsgType.VOTE_RESP and not m.reject):
                    assert any(saved_term(prev, m.term) for prev in events[:n]), \
                        f"member {member} sent {m.type.name} for term {m.term} before saving that term"


async def test_a_commit_index_alone_is_written_without_an_fsync(tmp_path: Path) -> None:
    """A Ready that only moves the commit index is written but not fsynced (etcd's MustSync): Raft does not
    need it durable, but a restarted member, and a force-new-cluster recovery that keeps only committed
    entries, knows the commit only from the WAL — once it was not written at all, and a survivor recovered
    without a write it had applied. Every member's WAL reaches the last write's index within a heartbeat."""
    async with cluster(tmp_path) as net:
        leader = await leader_of(net)
        last = 0
        for n in range(4):
            last = (await asyncio.wait_for(leader.propose(write(f"k{n}")), 10)).revision

        def saved_commit(member: int) -> int:
            return max((ev[1][0].commit for ev in net.events[member] if ev[0] == "save" and ev[1][0] is not None),
                       default=0)
        for _ in range(300):  # a heartbeat (0.1 s) carries the commit to the followers
            if all(saved_commit(m) >= last for m in net.drivers):
                break
            await asyncio.sleep(0.01)
        assert all(saved_commit(m) >= last for m in net.drivers), ({m: saved_commit(m) for m in net.drivers}, last)
        for member, events in net.events.items():
            on_disk = HardState()
            for hs, entries, sync in (ev[1] for ev in events if ev[0] == "save"):
                if hs is not None and not entries and (hs.term, hs.vote) == (on_disk.term, on_disk.vote):
                    assert not sync, f"member {member} fsynced a hard state that only moved the commit to {hs.commit}"
                if hs is not None:
                    on_disk = hs


async def test_a_committed_write_is_answered_while_the_next_batch_is_being_saved(tmp_path: Path) -> None:
    """The leader applies (and answers) entries committed before a Ready while that Ready's own entries are still
    being written and fsynced on its worker thread: a write waits for one fsync, not for the next batch's too.
    Write `a` is acknowledged by both followers while the leader's save of it is held; `b` is proposed meanwhile;
    `a` must be answered while the save of `b` is held."""
    async with cluster(tmp_path) as net:
        leader = await leader_of(net)
        await asyncio.wait_for(leader.propose(write("warm")), 10)
        gates = [threading.Event(), threading.Event()]
        held = list(gates)
        started: list[int] = []  # the last index of each save begun
        save = leader.wal.save

        def gated(hard_state: HardState | None, entries: Sequence[Entry], *, sync: bool = True) -> None:
            if entries and held:
                started.append(entries[-1].index)
                held.pop(0).wait(10)
            save(hard_state, entries, sync=sync)

        leader.wal.save = gated  # type: ignore[method-assign]
        try:
            a = asyncio.ensure_future(leader.propose(write("a")))
            await asyncio.sleep(0.02)
            a_index = leader.node.raft.log.last_index()
            for _ in range(500):  # both followers saved and acknowledged `a`
                if all(any(ev[0] == "send" and ev[1].type is MsgType.APP_RESP and ev[1].index >= a_index
                           for ev in net.events[f]) for f in net.drivers if f != leader.id):
                    break
                await asyncio.sleep(0.01)
            b = asyncio.ensure_future(leader.propose(write("b")))
            await asyncio.sleep(0.02)
            gates[0].set()  # `a` is durable on the leader; `b`'s save is held next
            done = (await asyncio.wait_for(a, 3)).revision
            assert done == a_index
            assert not b.done() and not gates[1].is_set()
            assert started and started[-1] > a_index, "b's save had not begun: the test proves nothing"
        finally:
            for g in gates:
                g.set()
        assert (await asyncio.wait_for(b, 5)).revision > a_index


async def test_a_lone_member_answers_a_write_only_once_it_is_durable(tmp_path: Path) -> None:
    """A one-member cluster commits what it appends at once, so its Ready holds the same entries to save and to
    apply: with the fsync on a worker thread (SHOAL_FSYNC_IN_THREAD) none of them may be applied — answered —
    before that save is done. Only entries saved before the Ready are applied while it is written."""
    events: list[Event] = []
    wal, replayed = recording_wal(tmp_path, events)
    save = wal.save
    gate = threading.Event()
    started: list[int] = []

    def gated(hard_state: HardState | None, entries: Sequence[Entry], *, sync: bool = True) -> None:
        if entries:
            started.append(entries[-1].index)
            if len(started) > 1:  # the election's no-op passes; the write's save is held
                gate.wait(10)
        save(hard_state, entries, sync=sync)

    wal.save = gated  # type: ignore[method-assign]
    driver = Driver(1, [1], wal, replayed, FSM(), Net().sender(1),
                    DriverConfig(tick=0.01, election_ticks=10, fsync_in_thread=True), rng=random.Random(1))
    task = asyncio.create_task(driver.run())
    try:
        for _ in range(500):
            if driver.is_leader and driver.applied_index >= 1:
                break
            await asyncio.sleep(0.01)
        assert driver.is_leader
        w = asyncio.ensure_future(driver.propose(write("solo")))
        for _ in range(300):
            if len(started) > 1:
                break
            await asyncio.sleep(0.01)
        assert len(started) > 1, "the write's save never began"
        await asyncio.sleep(0.1)
        assert not w.done(), "a lone member answered a write before its fsync"
        gate.set()
        assert (await asyncio.wait_for(w, 5)).revision == started[-1]
    finally:
        gate.set()
        driver.stop()
        await asyncio.gather(task, return_exceptions=True)
