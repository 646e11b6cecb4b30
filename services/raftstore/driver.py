"""Driver: the asyncio shell around the pure RawNode. One coroutine owns the node; everything else (HTTP
handlers, the peer transport, the ticker) only queues work for it and wakes it.

Each turn: feed ticks, received messages, proposals and read requests to the node, then handle every Ready in
the order Raft needs — persist (one fsync for the whole batch), send, apply, advance. Proposals from many
concurrent requests that arrive while the previous batch is being fsynced go into the next Ready together:
one fsync and one AppendEntries per follower for all of them (group commit).

Every `snapshot_interval` applied entries the driver snapshots the state machine and the membership to
`snapshot.bin` on a worker thread (driver_snapshots.py), then compacts: the log and the WAL keep the last
`snapshot_tail` entries. A snapshot received from the leader replaces the log and the state machine.
Membership changes are log entries applied in order (one at a time); leadership can be handed to a voter.

A proposal has no timeout (SwarmKit design/raft.md): its future resolves when its entry is applied, and fails
only when leadership is lost — with OutcomeUnknown if it reached the log (a new leader may still commit it) or
NotLeader if it never did. Linearizable reads use ReadIndex (dissertation §6.4) and then wait until this member
has applied up to the read index."""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.raftstore import snapfile
from services.raftstore.driver_config import DriverConfig
from services.raftstore.driver_persist import DriverPersist, Sender
from services.raftstore.driver_snapshots import DriverSnapshots
from services.raftstore.driver_state import DriverState
from services.raftstore.fsm import FSM
from services.raftstore.membership import Membership
from services.raftstore.raft import (
    NONE,
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageRefused,
    MsgType,
    ProposalDropped,
    RawNode,
    Ready,
    Role,
    Snapshot,
)
from services.raftstore.wal import WAL, Replayed, WalCorrupt
from services.raftstore.wirecheck import payload_problem
from shoal.errors import Conflict, InvalidArgument, NotLeader, OutcomeUnknown, ShoalError, Unavailable
from shoal.metrics import Registry
from shoal.store.txn import TxnResult

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    term: int
    future: asyncio.Future[Any]
    parsed: dict[str, Any] | None = None  # the transaction, already decoded by the API handler
    proposed: float = 0.0  # perf_counter() when proposed: for the commit latency histogram


class Driver(DriverState, DriverSnapshots, DriverPersist):
    def __init__(self, node_id: int, peers: Sequence[int], wal: WAL, replayed: Replayed, fsm: FSM,
                 sender: Sender, cfg: DriverConfig | None = None, *, rng: random.Random | None = None,
                 metrics: Registry | None = None, snapshot: Snapshot | None = None,
                 membership: Membership | None = None) -> None:
        """`peers`: the bootstrap voters (empty for a member joining an existing cluster); `snapshot` and
        `replayed`: what the member's data directory holds."""
        self.cfg = cfg or DriverConfig()
        self.id = node_id
        self.wal = wal
        self.fsm = fsm
        self.sender = sender
        self.metrics = metrics or Registry()
        self.membership = membership or Membership()
        self.storage = MemoryStorage()
        self._restore(snapshot, replayed)
        raft_cfg = Config(id=node_id, peers=tuple(peers), election_tick=self.cfg.election_ticks,
                          heartbeat_tick=self.cfg.heartbeat_ticks, rng=rng or random.Random())
        self.node = RawNode(raft_cfg, self.storage)
        # The membership table follows the changes committed after the snapshot at once, like the core does.
        log_ = self.node.raft.log
        for e in log_.slice(log_.first_index(), log_.committed + 1):
            if e.type == EntryType.CONF_CHANGE:
                self.membership.apply(ConfChange.decode(e.data))
        #: called with each transaction this member applied while leading (for NATS hints)
        self.on_leader_commit: Callable[[TxnResult], None] | None = None
        #: called after the membership changed (a change applied, or a snapshot installed)
        self.on_membership: Callable[[Membership], None] | None = None
        #: called on every member with each applied transaction that changed something
        self.on_commit: Callable[[TxnResult], None] | None = None
        #: after `reseal()`: called once the snapshot file and the WAL hold nothing sealed under older keys
        self.on_resealed: Callable[[], None] | None = None
        self._reseal = False
        #: this member applied its own removal: it no longer takes part in the cluster
        self.removed = self.id in self.membership.removed
        self._inbox: deque[Message] = deque()
        self._proposals: deque[tuple[bytes, asyncio.Future[TxnResult]]] = deque()
        self._conf_proposals: deque[tuple[ConfChange, asyncio.Future[Any]]] = deque()
        self._parsed: dict[int, dict[str, Any]] = {}  # id(future) -> decoded transaction, until proposed
        self._transfers: deque[int] = deque()
        self._heard: dict[int, int] = {}  # member id -> tick count when we last heard from it
        self._pending: dict[int, _Pending] = {}
        self._reads: list[asyncio.Future[int]] = []
        self._read_ctx: dict[bytes, list[asyncio.Future[int]]] = {}
        self._read_ctx_issued: dict[bytes, int] = {}  # tick count at which each read request was (re)sent
        self._tick_count = 0
        self._read_wait: list[tuple[int, int, list[asyncio.Future[int]]]] = []  # heap by read index
        self._ctx_seq = 0
        self._ticks_due = 0
        self._wake = asyncio.Event()
        self._applied = asyncio.Event()
        self._stopped = False
        self.lead = NONE
        self.role = Role.FOLLOWER

    def _restore(self, snap: Snapshot | None, replayed: Replayed) -> None:
        """Load the snapshot (if any) into storage and the state machine, then the WAL's entries after it."""
        entries = replayed.entries
        hs = replayed.hard_state
        if snap is None:
            if replayed.base_index:
                raise WalCorrupt(f"wal: {self.wal.path} starts after entry {replayed.base_index} but there is no "
                                 "snapshot file; refusing to start")
        else:
            if replayed.base_index > snap.index:
                raise WalCorrupt(f"wal: {self.wal.path} starts after entry {replayed.base_index}, past the "
                                 f"snapshot at {snap.index}; refusing to start")
            self.storage.apply_snapshot(snap)
            self._load_state(snap)
            at = next((e for e in entries if e.index == snap.index), None)
            if at is not None and at.term != snap.term:
                entries = []  # a crash while installing a leader's snapshot: the old log diverged from it
            entries = [e for e in entries if e.index > snap.index]
            if entries and entries[0].index != snap.index + 1:
                raise WalCorrupt(f"wal: {self.wal.path} resumes at {entries[0].index} after the snapshot at "
                                 f"{snap.index}; refusing to start")
            hs = HardState(hs.term, hs.vote, min(max(hs.commit, snap.index),
                                                  entries[-1].index if entries else snap.index))
        self.storage.append(entries)
        self.storage.set_hard_state(hs)

    def _load_state(self, snap: Snapshot) -> None:
        body = json.loads(snap.data)
        self.fsm.mem.restore(body["store"])
        self.membership = Membership.from_json(body["membership"])
        log.info("raftstore %d: loaded the snapshot at index %d (term %d, %d bytes, voters %s, learners %s)",
                 self.id, snap.index, snap.term, len(snap.data), list(snap.conf.voters),
                 list(snap.conf.learners))

    # ---- inputs (any coroutine) ---------------------------------------------------------------------------
    def receive(self, msg: Message) -> None:
        """A message from a peer (called by the transport)."""
        self._inbox.append(msg)
        self._wake.set()

    async def propose(self, data: bytes, *, parsed: dict[str, Any] | None = None) -> TxnResult:
        """Replicate and apply one transaction; returns its result or raises its error (see module doc).
        `parsed`: `data` already decoded (the leader then applies it without decoding its own bytes again)."""
        if not self.is_leader:
            raise self._not_leader()
        fut: asyncio.Future[TxnResult] = asyncio.get_running_loop().create_future()
        if parsed is not None:
            self._parsed[id(fut)] = parsed
        self._proposals.append((data, fut))
        self._wake.set()
        return await fut

    async def change_membership(self, cc: ConfChange) -> ConfState:
        """Propose a membership change and wait until it is applied here (leader only, one at a time)."""
        if not self.is_leader:
            raise self._not_leader()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._conf_proposals.append((cc, fut))
        self._wake.set()
        result: ConfState = await fut
        return result

    async def transfer_leadership(self, to: int | None = None, timeout: float | None = None) -> int:
        """Hand leadership to voter `to` (default: the most up-to-date other voter) and wait until someone else
        leads; returns the new leader's id."""
        if not self.is_leader:
            raise self._not_leader()
        raft = self.node.raft
        if to is None:
            others = [v for v in raft.voters if v != self.id]
            if not others:
                raise Conflict("store: this is the only voter; there is no member to hand leadership to")
            to = max(others, key=lambda v: (raft.prs[v].match, -v))
        elif to not in raft.voters or to == self.id:
            raise InvalidArgument(f"store: member {to} is not another voter; voters are {list(raft.voters)}")
        self._transfers.append(to)
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or 2 * self.cfg.election_ticks * self.cfg.tick + 1.0)
        while loop.time() < deadline:
            await asyncio.sleep(self.cfg.tick / 2)
            if self.lead not in (NONE, self.id):
                return self.lead
        raise Unavailable(f"store: leadership did not move to member {to} in time; this member still leads"
                          if self.is_leader else "store: leadership is moving; no leader yet, retry")

    async def read_barrier(self, timeout: float | None = None) -> int:
        """Wait until this member's state is at least as new as any write acknowledged before the call
        (ReadIndex). Returns the read index. Raises NotLeader/Unavailable (both safe to retry)."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads.append(fut)
        self._wake.set()
        try:
            return await asyncio.wait_for(fut, timeout or self.cfg.read_timeout)
        except TimeoutError:
            raise Unavailable(
                f"store: member {self.id} could not confirm a linearizable read with the raft leader within "
                f"{timeout or self.cfg.read_timeout}s; retry, or read with stale=true"
            ) from None

    async def wait_applied(self, timeout: float) -> None:
        """Return after the next batch of entries is applied, or after `timeout`."""
        ev = self._applied
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            pass

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    # ---- the loop -----------------------------------------------------------------------------------------
    async def run(self) -> None:
        ticker = asyncio.create_task(self._ticker(), name="raft.ticker")
        try:
            while not self._stopped:
                await self._wake.wait()
                self._wake.clear()
                self._intake()
                while self.node.has_ready() and not self._stopped:
                    await self._handle_ready(self.node.ready())
                    await asyncio.sleep(0)  # let requests and peer messages in between Readies
                    self._intake()
                if self._reseal and not self._stopped:  # between Readies: everything durable is in storage
                    await self.settle_snapshot()
                    self.take_snapshot()
        finally:
            ticker.cancel()
            if self._snap_job is not None:  # its thread still writes into this member's data directory
                await asyncio.wait([self._snap_job])
            self._fail_all(Unavailable(f"store: member {self.id} is shutting down"))

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.cfg.tick
            await asyncio.sleep(max(0.0, due - loop.time()))
            if loop.time() - due > self.cfg.tick:
                due = loop.time()  # the loop stalled: do not replay a burst of missed ticks
            self._ticks_due += 1
            self._wake.set()

    def _intake(self) -> None:
        self.finish_snapshot()  # between Readies: a snapshot written meanwhile goes into the storage
        node = self.node
        ticks, self._ticks_due = self._ticks_due, 0
        for _ in range(ticks):
            node.tick()
        self._tick_count += ticks
        if ticks and self._read_ctx:
            self._resend_reads()
        blocked = self.membership.removed
        while self._inbox:
            m = self._inbox.popleft()
            if m.frm not in blocked:
                self._step(m)
        if self._transfers:
            self._take_transfers()
        if self._conf_proposals:
            self._take_conf_proposals()
        if self._proposals:
            self._take_proposals()
        if self._reads:
            self._take_reads()

    def _step(self, m: Message) -> None:
        """Hand a peer's message to the core. Whatever it claims, the member goes on: a message that cannot be
        true is dropped and counted (raft/sanity.py, wirecheck.py), never allowed to stop the loop (issue 16)."""
        try:
            why = payload_problem(m)
            if why is not None:
                raise MessageRefused(f"raft: {m.type.name} from member {m.frm} refused: {why}")
            self.node.step(m)
            self._heard[m.frm] = self._tick_count
        except MessageRefused as e:
            self.metrics.inc("raft_messages_refused_total", 1, "peer messages that could not be true, dropped")
            log.warning("raftstore %d: %s", self.id, e)
        except ProposalDropped:
            pass
        except Exception:
            self.metrics.inc("raft_messages_failed_total", 1, "peer messages whose handling failed, dropped")
            log.exception("raftstore %d: handling a %s from member %d failed; dropped", self.id, m.type.name, m.frm)

    def _take_proposals(self) -> None:
        batch: list[tuple[bytes, asyncio.Future[TxnResult]]] = []
        size = 0
        while self._proposals and len(batch) < self.cfg.max_batch_entries and size < self.cfg.max_batch_bytes:
            data, fut = self._proposals.popleft()
            if not fut.done():
                batch.append((data, fut))
                size += len(data)
            else:
                self._parsed.pop(id(fut), None)
        if not batch:
            return
        full = self.disk_full()
        if full is not None:
            self.metrics.inc("raft_proposals_refused_disk_full_total", len(batch), "writes refused: disk full")
            for _, fut in batch:
                _settle(fut, exc=Unavailable(full))
            return
        try:
            indexes = self.node.propose_many([d for d, _ in batch])
        except ProposalDropped:
            for _, fut in batch:
                _settle(fut, exc=self._not_leader())
            return
        term = self.node.term
        now = time.perf_counter()
        for index, (_, fut) in zip(indexes, batch, strict=True):
            self._pending[index] = _Pending(term, fut, self._parsed.pop(id(fut), None), now)
        self.metrics.inc("raft_proposals_total", len(batch), "transactions proposed by this member")
        self.metrics.inc("raft_proposal_batches_total", 1, "proposal batches (one Ready each)")
        if self._proposals:
            self._wake.set()  # more than one batch queued: the next turn takes the rest

    def _take_conf_proposals(self) -> None:
        while self._conf_proposals:
            cc, fut = self._conf_proposals.popleft()
            if fut.done():
                continue
            try:
                index = self.node.propose_conf_change(cc)
            except ProposalDropped as e:
                _settle(fut, exc=self._not_leader() if not self.is_leader else Conflict(
                    f"store: {e}".replace("raft: ", "")))
                continue
            except ValueError as e:
                _settle(fut, exc=Conflict(f"store: {e}".replace("raft: ", "")))
                continue
            self._pending[index] = _Pending(self.node.term, fut)

    def _take_transfers(self) -> None:
        while self._transfers:
            to = self._transfers.popleft()
            try:
                self.node.transfer_leader(to)
            except (ProposalDropped, ValueError) as e:
                log.info("raftstore %d: leadership transfer to %d not started: %s", self.id, to, e)

    def _take_reads(self) -> None:
        futs = [f for f in self._reads if not f.done()]
        self._reads = []
        if not futs:
            return
        if len(self._read_ctx) > 64:  # requests whose answer was lost: their waiters timed out long ago
            self._read_ctx = {c: fs for c, fs in self._read_ctx.items() if not all(f.done() for f in fs)}
            self._read_ctx_issued = {c: t for c, t in self._read_ctx_issued.items() if c in self._read_ctx}
        self._ctx_seq += 1
        ctx = self._ctx_seq.to_bytes(8, "big")
        try:
            self.node.read_index(ctx)
        except ProposalDropped:
            for f in futs:
                _settle(f, exc=self._not_leader())
            return
        self._read_ctx[ctx] = futs  # one heartbeat round confirms every read that queued this turn
        self._read_ctx_issued[ctx] = self._tick_count

    def _resend_reads(self) -> None:
        """Re-send read-index requests unanswered for a few ticks. A follower's request can be lost (a dropped
        peer message, or a new leader that has not yet committed an entry of its term), and nothing else would
        ever answer it: the waiters would sit until the read timeout under no fault at all."""
        for ctx, futs in list(self._read_ctx.items()):
            if all(f.done() for f in futs):
                del self._read_ctx[ctx]
                self._read_ctx_issued.pop(ctx, None)
            elif self._tick_count - self._read_ctx_issued.get(ctx, 0) >= self.cfg.read_resend_ticks:
                try:
                    self.node.read_index(ctx)
                except ProposalDropped:
                    continue  # no leader known yet: try again after the next ticks
                self._read_ctx_issued[ctx] = self._tick_count

    # ---- one Ready ----------------------------------------------------------------------------------------
    async def _handle_ready(self, rd: Ready) -> None:
        if rd.snapshot is not None:  # 0. a snapshot from the leader replaces the log and the state machine
            await self.settle_snapshot()  # ours, older, must not land in snapshot.bin after the leader's
            self._install(rd)
        late: Sequence[Message] = rd.messages
        early: list[Message] = []
        if rd.messages and rd.entries and self._may_send_before_persist(rd):
            # The leader's appends go out before its own fsync, so the followers write theirs meanwhile
            # (dissertation §10.2.1; etcd-io/raft: messages may be sent while the entries of the same Ready are
            # persisted). The leader counts itself in the quorum only for what it has appended, and a commit is
            # acted on only in a later Ready, after this one's fsync. Nothing else may leave before the disk
            # has it: a follower's ack or a vote speaks for what this member has persisted.
            early = [m for m in rd.messages if m.type is MsgType.APP]
            if early:
                late = [m for m in rd.messages if m.type is not MsgType.APP]
        committed: Sequence[Entry] = rd.committed_entries
        if rd.entries or rd.hard_state is not None:  # 1. persist (one fsync for the whole batch)
            # While the leader's fsync runs on its worker thread, the entries that were committed — and durable
            # here — before this Ready are applied and answered (as etcd's server does): a write then waits for
            # one fsync, not for the next batch's too. Only those up to what this member had saved before this
            # Ready (a one-member cluster commits what it appends at once: that waits for the fsync), and none
            # past a membership change (applied in order after the disk, as before).
            ready_now = self._durably_committed(rd)
            if await self._persist(rd, early, (lambda: self._apply(ready_now)) if ready_now else None):
                committed = committed[len(ready_now):]
        if late:  # 2. send
            self.sender.send(late)
        if rd.messages:
            self.metrics.inc("raft_messages_sent_total", len(rd.messages), "raft messages handed to peers")
        if committed:  # 3. apply
            self._apply(committed)
        if rd.want_snapshot:  # a new member waits for a snapshot that holds the membership
            await self.settle_snapshot()
            self.take_snapshot(compact=False)
        elif self.snapshot_due(rd.committed_entries):
            self.start_snapshot()
        for rs in rd.read_states:
            futs = self._read_ctx.pop(rs.context, None)
            self._read_ctx_issued.pop(rs.context, None)
            if futs:
                heapq.heappush(self._read_wait, (rs.index, id(futs), futs))
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.lead, rd.soft_state.role)
        self.node.advance(rd)  # 4. advance
        self._release_reads()

    def _durably_committed(self, rd: Ready) -> Sequence[Entry]:
        """The committed entries of `rd` that may be applied before its own persist finishes: the leading ones
        this member had already saved before this Ready, and no membership change nor anything after one."""
        if rd.snapshot is not None or not rd.committed_entries:
            return ()
        durable = self.storage.last_index()
        if rd.entries:  # this Ready (re)writes from its first entry on: what was saved there may be replaced
            durable = min(durable, rd.entries[0].index - 1)
        n = 0
        for e in rd.committed_entries:
            if e.index > durable or e.type == EntryType.CONF_CHANGE:
                break
            n += 1
        return rd.committed_entries[:n]

    def _may_send_before_persist(self, rd: Ready) -> bool:
        """A leader's Ready whose hard state changes at most the commit index: its term and vote are on disk
        already, so appends of that term may leave while its entries are being written."""
        if rd.snapshot is not None or not self.is_leader:
            return False
        hs, on_disk = rd.hard_state, self.storage.initial_state()
        return hs is None or (hs.term == on_disk.term and hs.vote == on_disk.vote)

    def _install(self, rd: Ready) -> None:
        snap = rd.snapshot
        assert snap is not None
        snapfile.save(self.wal.path.parent, snap, self.wal.sealer)
        hs = rd.hard_state or self.storage.initial_state()
        self.wal.rewrite(snap.index, snap.term, hs, [])
        self.storage.apply_snapshot(snap)
        self.storage.set_hard_state(hs)
        self._load_state(snap)
        self.metrics.inc("raft_snapshots_installed_total", 1, "snapshots received from the leader and installed")
        self._membership_changed()

    def _membership_changed(self) -> None:
        if self.id in self.membership.removed and not self.removed:
            self.removed = True
            log.warning("raftstore %d: this member was removed from the cluster; it no longer takes part "
                        "(its id will not come back: wipe its data to reuse the machine under a new id)", self.id)
        if self.on_membership is not None:
            self.on_membership(self.membership)

    def _apply(self, entries: Sequence[Entry]) -> None:
        leading = self.role == Role.LEADER
        for e in entries:
            result: Any
            pending = self._pending.pop(e.index, None)
            if e.type == EntryType.CONF_CHANGE:
                cc = ConfChange.decode(e.data)
                result = self.node.apply_conf_change(cc)
                self.membership.apply(cc)
                self.fsm.mem.skip(e.index)
                log.info("raftstore %d: membership change %s %d applied at %d: voters %s, learners %s", self.id,
                         cc.type.name.lower(), cc.node_id, e.index, list(result.voters), list(result.learners))
                self._membership_changed()
            else:
                ours = pending is not None and pending.term == e.term
                result = self.fsm.apply(e, pending.parsed if ours and pending is not None else None)
            if pending is not None:
                if pending.proposed and pending.term == e.term:
                    self.metrics.observe("raft_commit_duration_seconds", time.perf_counter() - pending.proposed,
                                         "a transaction proposed by this member: proposed to committed and applied")
                if pending.term != e.term:
                    # Another entry committed at this index: ours was overwritten and can never commit.
                    _settle(pending.future, exc=NotLeader(
                        f"store: the proposal at index {e.index} was superseded by a new raft leader; "
                        "it was not applied"))
                elif isinstance(result, ShoalError):
                    _settle(pending.future, exc=result)
                elif isinstance(result, (TxnResult, ConfState)):
                    _settle(pending.future, result)
            if isinstance(result, TxnResult) and result.changes:
                if leading and self.on_leader_commit:
                    self.on_leader_commit(result)
                if self.on_commit is not None:
                    self.on_commit(result)
        self.metrics.inc("raft_applied_entries_total", len(entries), "committed entries applied")
        self._applied.set()
        self._applied = asyncio.Event()

    def _release_reads(self) -> None:
        applied = self.applied_index
        while self._read_wait and self._read_wait[0][0] <= applied:
            _, _, futs = heapq.heappop(self._read_wait)
            for f in futs:
                _settle(f, applied)

    def _on_soft_state(self, lead: int, role: Role) -> None:
        was_leader = self.role == Role.LEADER
        if lead != self.lead or role != self.role:
            log.info("raft: member %d is %s in term %d (leader: %s)", self.id, role.label, self.node.term,
                     lead or "none")
        self.lead, self.role = lead, role
        if was_leader and role != Role.LEADER:
            self.metrics.inc("raft_leadership_lost_total", 1, "times this member stopped leading")
            for index, p in sorted(self._pending.items()):
                _settle(p.future, exc=OutcomeUnknown(
                    f"store: raft leadership was lost before the entry at index {index} was known committed; "
                    "it may still commit: re-read to find out"))
            self._pending.clear()
            while self._proposals:
                _settle(self._proposals.popleft()[1], exc=self._not_leader())
            while self._conf_proposals:
                _settle(self._conf_proposals.popleft()[1], exc=self._not_leader())
        # Read-index requests in flight are tied to the old leader: fail them now (reads are safe to retry)
        # rather than let them time out.
        for futs in self._read_ctx.values():
            for f in futs:
                _settle(f, exc=Unavailable("store: raft leadership changed during a read; retry"))
        self._read_ctx.clear()
        self._read_ctx_issued.clear()

    def _not_leader(self) -> NotLeader:
        if self.lead == NONE:
            return NotLeader(f"store: there is no raft leader right now (member {self.id} is "
                             f"{self.role.label}); retry shortly", leader=None)
        return NotLeader(f"store: member {self.id} is not the raft leader; member {self.lead} is",
                         leader=self.lead)

    def _fail_all(self, err: ShoalError) -> None:
        for p in self._pending.values():
            _settle(p.future, exc=OutcomeUnknown(f"{err.message}; a write in flight may still commit"))
        self._pending.clear()
        for _, fut in self._proposals:
            _settle(fut, exc=err)
        self._proposals.clear()
        for _, cfut in self._conf_proposals:
            _settle(cfut, exc=err)
        self._conf_proposals.clear()
        for f in self._reads:
            _settle(f, exc=err)
        for futs in self._read_ctx.values():
            for f in futs:
                _settle(f, exc=err)
        for _, _, futs in self._read_wait:
            for f in futs:
                _settle(f, exc=err)


def _settle(fut: asyncio.Future[Any], value: object = None, *,
            exc: BaseException | None = None) -> None:
    """Resolve a future unless its waiter already gave up (a cancelled HTTP request)."""
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)
