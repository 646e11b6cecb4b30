"""RawNode: the Raft core's public face. Feed it with tick/step/propose/read_index; collect a Ready; do its
I/O in the order persist -> send -> apply; then advance(). It never awaits, sleeps, sends or reads a clock."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.raftstore.raft.config import Config
from services.raftstore.raft.errors import MessageRefused, ProposalDropped
from services.raftstore.raft.messages import (
    ConfChange,
    ConfState,
    Entry,
    HardState,
    Message,
    MsgType,
    ReadState,
    Role,
    Snapshot,
    SoftState,
)
from services.raftstore.raft.node import Raft
from services.raftstore.raft.sanity import impossible
from services.raftstore.raft.storage import Storage

_LOCAL_ONLY = frozenset({MsgType.HUP, MsgType.BEAT, MsgType.CHECK_QUORUM, MsgType.PROP})
_LEADER_ONLY = frozenset({MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP, MsgType.TIMEOUT_NOW})
# Requests we handle whoever sends them. Vote requests included (dissertation §4.1: a server uses the latest
# configuration in *its* log, and members apply a change at different times): a voter that has not applied the
# change adding the candidate must still answer it, or a cluster whose members lag behind a change can have no
# majority that knows every voter, and no leader ever again (issue 17). Answers from strangers stay ignored.
_FROM_ANYONE = _LEADER_ONLY | {MsgType.VOTE, MsgType.PRE_VOTE}


@dataclass(frozen=True)
class Ready:
    """One batch of work for the driver.

    - `snapshot` (if not None, a snapshot received from the leader) must be made durable and loaded into the
      state machine first; it replaces the whole log before it,
    - `hard_state` (if not None) and `entries` must be written next, and fsynced (once for both) when
      `must_sync`: new entries, or a new term or vote. A hard state that only advances the commit index may
      be written without an fsync — a commit index lost in a crash is learned again from the leader,
    - then `messages` sent (a vote or an ack must never leave before what it promises is durable, §5.2/§5.3),
    - then `committed_entries` applied in order, and `read_states` served once applied reaches their index."""

    soft_state: SoftState | None
    hard_state: HardState | None
    entries: tuple[Entry, ...]
    committed_entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    read_states: tuple[ReadState, ...]
    must_sync: bool
    snapshot: Snapshot | None = None
    #: after applying this Ready, take a snapshot of the state machine (a new member needs one)
    want_snapshot: bool = False


class RawNode:
    def __init__(self, cfg: Config, storage: Storage) -> None:
        self.raft = Raft(cfg, storage)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = storage.initial_state()

    # ---- inputs -------------------------------------------------------------------------------------------
    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (tests, and leadership hand-off later)."""
        self.raft.step(Message(MsgType.HUP, frm=self.raft.id))

    def step(self, m: Message) -> None:
        """Deliver a message from a peer. Local-only kinds and messages from ourselves are ignored. A member
        not in our membership may still be the leader of a cluster we are joining, or a candidate of a
        configuration we have not applied yet; the driver drops messages from removed members before they get
        here. Raises MessageRefused for a message that cannot be true (sanity.py); the log is left as it was."""
        if m.type in _LOCAL_ONLY or m.frm == self.raft.id or m.frm <= 0:
            return
        r = self.raft
        if m.frm not in r.voters and m.frm not in r.learners and r.voters and self.id in r.voters \
                and m.type not in _FROM_ANYONE:
            return  # a stranger's answer: nothing to do with our elections or our progress
        why = impossible(r, m)
        if why is not None:
            raise MessageRefused(f"raft: {m.type.name} from member {m.frm} refused: {why}")
        self.raft.step(m)

    def propose(self, data: bytes) -> int:
        """Append `data` to the leader's log; returns its index. Raises ProposalDropped on a non-leader."""
        return self.propose_many([data])[-1]

    def propose_many(self, datas: Sequence[bytes]) -> range:
        """Append several entries in one step (one AppendEntries per follower carries them all)."""
        if not datas:
            return range(0)
        self.raft.step(Message(MsgType.PROP, frm=self.raft.id, entries=tuple(Entry(0, 0, d) for d in datas)))
        last = self.raft.log.last_index()
        return range(last - len(datas) + 1, last + 1)

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Append a membership change (leader only, one at a time); returns its index. Raises ProposalDropped
        when this member cannot take it now and ValueError when the change itself is invalid."""
        return self.raft.propose_conf_change(cc)

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Put a committed membership change in force (call in log order, as its entry is applied)."""
        return self.raft.apply_conf_change(cc)

    def transfer_leader(self, to: int) -> None:
        """Hand leadership to voter `to` (dissertation §3.10)."""
        self.raft.transfer_leader(to)

    def conf_state(self) -> ConfState:
        return self.raft.conf_state()

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; it comes back as a ReadState tagged `context` (possibly after
        a round trip to the leader). Raises ProposalDropped when no leader is known."""
        if not context:
            raise ValueError("raft: read_index needs a non-empty context")
        self.raft.step(Message(MsgType.READ_INDEX, frm=self.raft.id, context=context))

    # ---- outputs ------------------------------------------------------------------------------------------
    def has_ready(self) -> bool:
        r = self.raft
        return bool(
            r.msgs or r.read_states or r.log.unstable or r.log.has_next_committed()
            or r.log.pending_snapshot is not None or r.snapshot_wanted
            or r.soft_state() != self._prev_soft or r.hard_state() != self._prev_hard
        )

    def ready(self) -> Ready:
        r = self.raft
        soft, hard = r.soft_state(), r.hard_state()
        prev = self._prev_hard
        r.msgs_taken = len(r.msgs)
        return Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != self._prev_hard else None,
            entries=tuple(r.log.unstable),
            committed_entries=tuple(r.log.next_committed(r.cfg.max_committed_size_per_ready)),
            messages=tuple(r.msgs),
            read_states=tuple(r.read_states),
            must_sync=(bool(r.log.unstable) or hard.term != prev.term or hard.vote != prev.vote
                       or r.log.pending_snapshot is not None or r.snapshot_wanted),
            snapshot=r.log.pending_snapshot,
            want_snapshot=r.snapshot_wanted,
        )

    def advance(self, rd: Ready) -> None:
        """The Ready was fully handled: its entries are durable, messages sent, committed entries applied."""
        r = self.raft
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            r.log.snapshot_applied(rd.snapshot)
        if rd.want_snapshot:
            r.snapshot_wanted = False
        if rd.entries:
            last = rd.entries[-1]
            r.log.stable_to(last.index, last.term)
        if rd.committed_entries:
            r.log.applied_to(rd.committed_entries[-1].index)
        del r.msgs[:len(rd.messages)]
        r.msgs_taken = 0
        del r.read_states[:len(rd.read_states)]

    # ---- introspection ------------------------------------------------------------------------------------
    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def role(self) -> Role:
        return self.raft.role

    @property
    def lead(self) -> int:
        return self.raft.lead

    @property
    def term(self) -> int:
        return self.raft.term

    def status(self) -> dict[str, Any]:
        r = self.raft
        out: dict[str, Any] = {
            "id": r.id, "role": r.role.label, "leader": r.lead or None, "term": r.term, "vote": r.vote,
            "commit_index": r.log.committed, "applied_index": r.log.applied, "last_index": r.log.last_index(),
            "first_index": r.log.first_index(), "voters": list(r.voters), "learners": list(r.learners),
        }
        if r.role == Role.LEADER:
            out["progress"] = {v: {"match": p.match, "next": p.next, "state": p.state.name.lower()}
                               for v, p in r.prs.items()}
            if r.lead_transferee:
                out["transferring_to"] = r.lead_transferee
        return out


__all__ = ["MessageRefused", "ProposalDropped", "RawNode", "Ready"]
