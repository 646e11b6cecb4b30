"""SimNetwork: many RawNodes in one process over a seeded, fault-injecting in-memory network.

Each member has durable state (a MemoryStorage standing in for its WAL) and, while up, a RawNode. Processing a
Ready follows the driver's order — persist, send, apply, advance — so a crash between steps loses exactly what
a real crash would: unstable entries and unsent messages. Messages can be dropped, duplicated, delayed (and so
reordered) and cut by partitions. `check()` asserts Raft's safety properties (§5.2 election safety, §5.3 log
matching, §5.4 leader completeness, state-machine safety) plus durable-state monotonicity.

With `snapshot_every`, members snapshot their state machine (the list of applied entries) and compact their
log to `snapshot_tail` entries, as the driver does; a lagging member then catches up by InstallSnapshot (§7).
Membership changes (`change`) are applied as their entries are. As in the real transport (driver.py drops what
a removed id sends, transport.py hangs up on it), each member cuts off the ids whose removal *it* has applied —
in both directions — and nobody else's view counts: a member that has not applied a removal yet still hears
the removed member (it may need its vote to elect the leader that brings it the change)."""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.raftstore.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageRefused,
    MsgType,
    ProposalDropped,
    RawNode,
    Role,
    Snapshot,
)


class SafetyViolation(AssertionError):
    pass


@dataclass
class Member:
    id: int
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    node: RawNode | None = None
    applied: list[Entry] = field(default_factory=list)  # what its state machine applied since (re)start
    removed: set[int] = field(default_factory=set)  # ids whose removal this member applied (its member table)
    read_states: list[tuple[int, bytes]] = field(default_factory=list)
    started: bool = False  # it ran once: it has a data directory, and its supervisor brings it back after a crash
    leading: bool = False  # the role of the last soft state it handled was leader (the driver's `is_leader`)


class SimNetwork:
    def __init__(self, members: int | Iterable[int] = 3, *, seed: int = 0, election_tick: int = 10,
                 heartbeat_tick: int = 1, pre_vote: bool = True, check_quorum: bool = True,
                 max_inflight: int = 256, max_size_per_msg: int = 1 << 20, spares: int = 0,
                 snapshot_every: int = 0, snapshot_tail: int = 0) -> None:
        """`members` bootstrap voters; `spares` more ids that can join later (`join`)."""
        voters = list(range(1, members + 1)) if isinstance(members, int) else list(members)
        ids = voters + [max(voters) + k for k in range(1, spares + 1)]
        self.ids = ids
        self.refused = 0  # messages the members refused as impossible (raft/sanity.py)
        self.bootstrap = tuple(voters)
        self.snapshot_every = snapshot_every
        self.snapshot_tail = snapshot_tail
        self.removed: set[int] = set()  # ids that some member applied the removal of (never started again)
        self.rng = random.Random(seed)
        self.cfg = dict(election_tick=election_tick, heartbeat_tick=heartbeat_tick, pre_vote=pre_vote,
                        check_quorum=check_quorum, max_inflight=max_inflight, max_size_per_msg=max_size_per_msg)
        self.members = {i: Member(i) for i in ids}
        # faults
        self.drop = 0.0
        self.duplicate = 0.0
        self.max_delay = 0  # extra steps a message may wait (delays reorder messages)
        self.cut: set[tuple[int, int]] = set()  # directed links that lose every message
        #: chance that a leader dies between sending its appends and persisting them (driver.py's early send)
        self.crash_before_persist = 0.0
        self.crashed_before_persist = 0
        #: entries a leader applied while its Ready's own entries were not yet persisted (with crash_before_persist)
        self.applied_before_persist = 0
        self._crash_rng = random.Random(seed * 104729 + 3)
        # in flight: (deliver_at, seq, message)
        self.now = 0
        self._seq = 0
        self._queue: list[tuple[int, int, Message]] = []
        # history for the safety checks
        self.leader_of_term: dict[int, int] = {}
        self.committed: dict[int, Entry] = {}  # index -> entry some member applied there
        self.commit_term: dict[int, int] = {}  # index -> lowest term in which a member knew it committed
        self.last_hard: dict[int, HardState] = {}
        self._seen_commit: dict[int, int] = {}
        for i in voters:
            self.start(i)

    # ---- membership of the simulation ---------------------------------------------------------------------
    def start(self, i: int) -> None:
        """Start (or restart) member i from its durable state; a spare starts empty, as a joining member."""
        m = self.members[i]
        peers = self.bootstrap if i in self.bootstrap else ()
        cfg = Config(id=i, peers=peers, rng=random.Random(self.rng.random()), **self.cfg)  # type: ignore[arg-type]
        m.node = RawNode(cfg, m.storage)
        m.started = True
        m.leading = False
        m.applied = _decode_state(m.storage.snapshot())
        # the member table of a restart: the snapshot's, plus the changes committed after it (as driver.py)
        committed = m.storage.entries(m.storage.first_index(), m.storage.initial_state().commit + 1) \
            if m.storage.initial_state().commit >= m.storage.first_index() else []
        m.removed = _removals([*m.applied, *committed])

    def crash(self, i: int) -> None:
        """Lose everything volatile: unstable entries, queued messages, the state machine."""
        self.members[i].node = None
        self._queue = [q for q in self._queue if q[2].to != i]
        heapq.heapify(self._queue)

    def up(self, i: int) -> bool:
        return self.members[i].node is not None

    def node(self, i: int) -> RawNode:
        n = self.members[i].node
        assert n is not None, f"member {i} is down"
        return n

    # ---- partitions ---------------------------------------------------------------------------------------
    def isolate(self, i: int) -> None:
        for j in self.ids:
            if j != i:
                self.cut |= {(i, j), (j, i)}

    def partition(self, *groups: Iterable[int]) -> None:
        sets = [set(g) for g in groups]
        self.cut = {(a, b) for a in self.ids for b in self.ids
                    if a != b and not any(a in s and b in s for s in sets)}

    def heal(self) -> None:
        self.cut = set()

    def calm(self) -> None:
        """No more faults: heal, stop dropping, duplicating and delaying."""
        self.heal()
        self.drop = self.duplicate = 0.0
        self.max_delay = 0
        self.crash_before_persist = 0.0

    # ---- driving ------------------------------------------------------------------------------------------
    def send(self, m: Message) -> None:
        if (m.frm, m.to) in self.cut or self.rng.random() < self.drop:
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            delay = self.rng.randint(0, self.max_delay) if self.max_delay else 0
            self._seq += 1
            heapq.heappush(self._queue, (self.now + delay, self._seq, m))

    def process(self, i: int) -> bool:
        """Handle one Ready of member i in the driver's order; False if it had nothing to do."""
        m = self.members[i]
        n = m.node
        if n is None or not n.has_ready():
            return False
        rd = n.ready()
        if rd.snapshot is not None:  # install a snapshot from the leader ...
            m.storage.apply_snapshot(rd.snapshot)
            m.applied = _decode_state(rd.snapshot)
            m.removed |= _removals(m.applied)
        messages = rd.messages
        committed = rd.committed_entries
        if self.crash_before_persist and rd.entries and m.leading and rd.snapshot is None and \
                (rd.hard_state is None or (rd.hard_state.term, rd.hard_state.vote) ==
                 (m.storage.initial_state().term, m.storage.initial_state().vote)):
            # driver.py: a leader's appends leave before its own fsync; the member may die in between, its
            # entries never persisted while a follower may have them
            for msg in messages:
                if msg.type is MsgType.APP:
                    self.send(msg)
            messages = [msg for msg in messages if msg.type is not MsgType.APP]
            # ... and what was committed and saved here before this Ready is applied while the fsync runs
            # (driver.py `_durably_committed`): up to the last entry saved before the ones this Ready writes, and
            # never a membership change or anything after one
            durable = min(m.storage.last_index(), rd.entries[0].index - 1)
            early = 0
            for e in committed:
                if e.index > durable or e.type == EntryType.CONF_CHANGE:
                    break
                self._applied(m, e, n.term)
                early += 1
            self.applied_before_persist += early
            committed = committed[early:]
            if self._crash_rng.random() < self.crash_before_persist:
                self.crash(i)
                self.crashed_before_persist += 1
                return True
        if rd.hard_state is not None:  # persist ...
            m.storage.set_hard_state(rd.hard_state)
        m.storage.append(rd.entries)
        for msg in messages:  # ... send ...
            self.send(msg)
        for e in committed:  # ... apply ...
            self._applied(m, e, n.term)
            if e.type == EntryType.CONF_CHANGE:
                cc = ConfChange.decode(e.data)
                n.apply_conf_change(cc)
                if cc.type == ConfChangeType.REMOVE:
                    self.removed.add(cc.node_id)
                    m.removed.add(cc.node_id)
        for rs in rd.read_states:
            m.read_states.append((rs.index, rs.context))
        if rd.soft_state is not None:
            m.leading = rd.soft_state.role == Role.LEADER
        n.advance(rd)  # ... advance
        applied = len(m.applied)
        if rd.want_snapshot and applied:
            m.storage.create_snapshot(applied, n.conf_state(), _encode_state(m.applied))
        if self.snapshot_every and rd.committed_entries:
            if applied - m.storage.snapshot().index >= self.snapshot_every:
                m.storage.create_snapshot(applied, n.conf_state(), _encode_state(m.applied))
                m.storage.compact(max(applied - self.snapshot_tail, m.storage.first_index() - 1))
        return True

    def deliver_due(self) -> int:
        n = 0
        while self._queue and self._queue[0][0] <= self.now:
            _, _, msg = heapq.heappop(self._queue)
            member = self.members.get(msg.to)
            sender = self.members.get(msg.frm)
            if member is None or member.node is None or msg.frm in member.removed:
                continue  # the receiver drops what an id it removed sends
            if sender is not None and msg.to in sender.removed:
                continue  # the sender hung up on an id it removed (checked at delivery: a change may be late)
            try:
                member.node.step(msg)
            except MessageRefused:
                self.refused += 1  # as the driver does: dropped and counted (raft/sanity.py)
            n += 1
        return n

    def step(self, ticks: bool = True) -> None:
        """One unit of simulated time: tick every live member, deliver what is due, handle every Ready."""
        if ticks:
            for i in self.ids:
                n = self.members[i].node
                if n is not None:
                    n.tick()
        self.deliver_due()
        for i in self.ids:
            while self.process(i):
                pass
        self.now += 1
        self.check()

    def stabilize(self, limit: int = 10_000) -> None:
        """Deliver and process until nothing is left to do, without ticking (no elections start)."""
        for _ in range(limit):
            moved = False
            for i in self.ids:
                while self.process(i):
                    moved = True
            self.now = max(self.now, self._queue[0][0]) if self._queue else self.now
            if self.deliver_due():
                moved = True
            self.check()
            if not moved and not self._queue:
                return
        raise AssertionError("simulation did not settle")

    def tick(self, i: int, n: int = 1) -> None:
        for _ in range(n):
            self.node(i).tick()

    def elect(self, i: int) -> None:
        """Make member i campaign and let the cluster settle."""
        self.node(i).campaign()
        self.stabilize()

    def propose(self, i: int, data: bytes) -> int | None:
        try:
            return self.node(i).propose(data)
        except ProposalDropped:
            return None

    def propose_and_deliver(self, i: int, count: int, prefix: bytes = b"v", *, each: bool = False) -> None:
        """Propose `count` entries `<prefix>0`, `<prefix>1`, ... at member i, then let the cluster settle (after
        each one, with `each`)."""
        for k in range(count):
            self.propose(i, prefix + b"%d" % k)
            if each:
                self.stabilize()
        if not each:
            self.stabilize()

    def change(self, i: int, type: ConfChangeType, node: int) -> int | None:
        """Propose a membership change at member i; None if it refused (not leader, one in progress...)."""
        try:
            return self.node(i).propose_conf_change(ConfChange(type, node))
        except (ProposalDropped, ValueError):
            return None

    def read_index(self, i: int, ctx: bytes) -> bool:
        try:
            self.node(i).read_index(ctx)
            return True
        except ProposalDropped:
            return False

    # ---- views --------------------------------------------------------------------------------------------
    def leaders(self) -> list[int]:
        return [i for i in self.ids if self.up(i) and self.node(i).role == Role.LEADER]

    def leader(self) -> int | None:
        """The leader of the highest term among live members, if any."""
        best = None
        for i in self.leaders():
            if best is None or self.node(i).term > self.node(best).term:
                best = i
        return best

    def log_of(self, i: int) -> list[Entry]:
        """The entries member i holds (after its snapshot, if it compacted)."""
        m = self.members[i]
        if m.node is None:
            return m.storage.all_entries()
        log = m.node.raft.log
        return log.slice(log.first_index(), log.last_index() + 1)

    def applied_data(self, i: int) -> list[bytes]:
        return [e.data for e in self.members[i].applied if e.data and e.type == EntryType.NORMAL]

    # ---- safety -------------------------------------------------------------------------------------------
    def _applied(self, m: Member, e: Entry, term: int) -> None:
        expect = len(m.applied) + 1  # the state machine holds every entry up to its last applied one
        if e.index != expect:
            raise SafetyViolation(f"member {m.id} applied index {e.index}, expected {expect}")
        have = self.committed.setdefault(e.index, e)
        if have != e:
            raise SafetyViolation(f"state machine safety: member {m.id} applied {e} at {e.index}, "
                                  f"another member applied {have}")
        self.commit_term[e.index] = min(self.commit_term.get(e.index, term), term)
        m.applied.append(e)

    def check(self) -> None:
        for i in self.ids:
            n = self.members[i].node
            hs = self.members[i].storage.initial_state()
            prev = self.last_hard.get(i)
            if prev is not None and (hs.term < prev.term or (hs.term == prev.term and prev.vote
                                                              and hs.vote != prev.vote)):
                raise SafetyViolation(f"member {i} durable term/vote went back: {prev} -> {hs}")
            self.last_hard[i] = hs
            if n is None:
                continue
            r = n.raft
            if r.role == Role.LEADER:
                # Election safety (§5.2): at most one leader per term.
                other = self.leader_of_term.setdefault(r.term, i)
                if other != i:
                    raise SafetyViolation(f"election safety: {other} and {i} both lead term {r.term}")
                self._check_leader_completeness(i)
            # Every member that knows an index committed bounds the term it was committed in.
            for idx in range(self._seen_commit.get(i, 0) + 1, r.log.committed + 1):
                self.commit_term[idx] = min(self.commit_term.get(idx, r.term), r.term)
            self._seen_commit[i] = max(self._seen_commit.get(i, 0), r.log.committed)
        self._check_log_matching()

    def _check_leader_completeness(self, i: int) -> None:
        """§5.4: an entry committed in term T is in the log of every leader of a term after T."""
        r = self.node(i).raft
        floor = r.log.first_index() - 1  # below it the leader's snapshot holds the entries
        for idx, e in self.committed.items():
            if idx < floor:
                continue
            if self.commit_term.get(idx, r.term) < r.term and not r.log.match_term(idx, e.term):
                raise SafetyViolation(f"leader completeness: leader {i} of term {r.term} lacks committed {e}")

    def _check_log_matching(self) -> None:
        """§5.3: two logs with an entry of equal index and term are identical up to that index."""
        logs = {i: {e.index: e for e in self.log_of(i)} for i in self.ids}
        ids = self.ids
        for a_pos, a in enumerate(ids):
            for b in ids[a_pos + 1:]:
                la, lb = logs[a], logs[b]
                common = sorted(set(la) & set(lb), reverse=True)
                agree = next((k for k in common if la[k].term == lb[k].term), None)
                if agree is None:
                    continue
                bad = next((k for k in common if k <= agree and la[k] != lb[k]), None)
                if bad is not None:
                    raise SafetyViolation(f"log matching: members {a} and {b} agree on term at {agree} "
                                          f"but differ at {bad}")


def _removals(entries: Iterable[Entry]) -> set[int]:
    out: set[int] = set()
    for e in entries:
        if e.type == EntryType.CONF_CHANGE:
            cc = ConfChange.decode(e.data)
            if cc.type == ConfChangeType.REMOVE:
                out.add(cc.node_id)
    return out


def _encode_state(applied: list[Entry]) -> bytes:
    """The simulated state machine's snapshot: every applied entry."""
    return json.dumps([[e.term, e.index, int(e.type), e.data.decode("latin-1")] for e in applied]).encode()


def _decode_state(snap: Snapshot) -> list[Entry]:
    if snap.index == 0:
        return []
    return [Entry(t, i, d.encode("latin-1"), EntryType(k)) for t, i, k, d in json.loads(snap.data)]
