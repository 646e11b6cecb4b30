"""A pure Raft core in the manner of etcd-io/raft: RawNode (tick/step/propose/read_index/ready/advance), the
log, progress tracking, quorum arithmetic and read-index bookkeeping. No I/O, no clock, injected randomness."""

from services.raftstore.raft.config import Config
from services.raftstore.raft.errors import LogCompacted, LogUnavailable, MessageRefused, ProposalDropped, RaftError
from services.raftstore.raft.messages import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    ReadState,
    Role,
    Snapshot,
    SoftState,
)
from services.raftstore.raft.rawnode import RawNode, Ready
from services.raftstore.raft.storage import MemoryStorage, Storage

__all__ = [
    "NONE", "ConfChange", "ConfChangeType", "ConfState", "Config", "Entry", "EntryType", "HardState", "LogCompacted",
    "LogUnavailable", "MemoryStorage", "Message", "MessageRefused", "MsgType", "ProposalDropped", "RaftError",
    "RawNode", "ReadState", "Ready", "Role", "Snapshot", "SoftState", "Storage",
]
