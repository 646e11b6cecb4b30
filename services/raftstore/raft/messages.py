"""Raft's vocabulary: log entries, the durable hard state, and the messages members exchange.

Everything here is a frozen dataclass so a message handed to the transport, or an entry handed to the WAL,
cannot change under it. Field names follow the Raft paper (§5) and etcd-io/raft's Message."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

#: "no node": no vote cast, no leader known. Member ids are positive.
NONE = 0
#: the context of an append rejection from a member that knows no membership yet: it needs a snapshot
NEED_SNAPSHOT = b"need-snapshot"


class MsgType(IntEnum):
    """Message kinds. Local ones (HUP, BEAT, CHECK_QUORUM, PROP, READ_INDEX from the app) never cross the wire
    except PROP/READ_INDEX forwarded from a follower to its leader."""

    HUP = 0  # local: election timeout elapsed, start a campaign
    BEAT = 1  # local: heartbeat timeout elapsed, leader sends heartbeats
    CHECK_QUORUM = 2  # local: leader checks it heard from a quorum during the last election timeout
    PROP = 3  # append entries to the leader's log
    APP = 4  # AppendEntries RPC (§5.3)
    APP_RESP = 5
    VOTE = 6  # RequestVote RPC (§5.2)
    VOTE_RESP = 7
    PRE_VOTE = 8  # PreVote (dissertation §9.6): would you vote for me at term+1?
    PRE_VOTE_RESP = 9
    HEARTBEAT = 10  # an empty AppendEntries carrying only the commit index (§5.2)
    HEARTBEAT_RESP = 11
    READ_INDEX = 12  # ReadIndex request (dissertation §6.4)
    READ_INDEX_RESP = 13
    SNAP = 14  # InstallSnapshot (§7): the leader's snapshot, for a follower that needs compacted entries
    TIMEOUT_NOW = 15  # leadership transfer (dissertation §3.10): campaign now, the leader steps aside


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1  # a single-server membership change (dissertation §4.3), data = ConfChange.encode()


class ConfChangeType(IntEnum):
    ADD_LEARNER = 0  # a new member that receives the log but neither votes nor counts for commit
    PROMOTE = 1  # a caught-up learner becomes a voter
    REMOVE = 2  # a voter or learner leaves; its id never comes back
    FORCE_NEW_CLUSTER = 3  # recovery: this member alone is the cluster (written only by --force-new-cluster)


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership in force: who votes and who only learns. Empty voters means "not known from the log"
    (the bootstrap peers of the Config apply)."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()

    def members(self) -> tuple[int, ...]:
        return tuple(sorted((*self.voters, *self.learners)))


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One membership change. `context` is opaque to the core (the driver keeps the member's addresses
    there, so every replica learns them from the same log entry)."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        return _CC.pack(self.type, self.node_id) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        t, node = _CC.unpack_from(data, 0)
        return cls(ConfChangeType(t), node, bytes(data[_CC.size:]))


_CC = struct.Struct("<BQ")


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. `data == b""` is a leader's no-op (§8: a new leader commits a blank entry of its term)."""

    term: int
    index: int
    data: bytes = b""
    type: EntryType = EntryType.NORMAL


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on stable storage before a member answers any RPC (Figure 2: currentTerm, votedFor), plus
    the commit index so a restart re-applies exactly what was committed."""

    term: int = 0
    vote: int = NONE
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == NONE and self.commit == 0


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting when it changes (who leads, which role we play)."""

    lead: int
    role: Role


@dataclass(frozen=True, slots=True)
class ReadState:
    """A confirmed read: once the state machine has applied `index`, a read tagged `context` is linearizable."""

    index: int
    context: bytes


@dataclass(frozen=True, slots=True)
class Message:
    """One Raft message. `index`/`log_term` are prevLogIndex/prevLogTerm for APP, lastLogIndex/lastLogTerm for
    votes, the matched index for APP_RESP and the read index for READ_INDEX_RESP; `context` tags heartbeats
    and read-index requests (dissertation §6.4)."""

    type: MsgType
    to: int = NONE
    frm: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = field(default=())
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: Snapshot | None = None  # SNAP only


#: the context of vote requests sent on a leader's behalf (TIMEOUT_NOW): voters drop their leader stickiness
CAMPAIGN_TRANSFER = b"transfer"


def vote_response_type(t: MsgType) -> MsgType:
    if t == MsgType.VOTE:
        return MsgType.VOTE_RESP
    if t == MsgType.PRE_VOTE:
        return MsgType.PRE_VOTE_RESP
    raise ValueError(f"raft: {t.name} is not a vote request")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine up to `index` (whose entry had `term`) and the membership in force there (§7).
    `data` is opaque to the core. Index 0 is "no snapshot": the log starts at index 1."""

    index: int = 0
    term: int = 0
    data: bytes = b""
    conf: ConfState = field(default_factory=ConfState)
