"""Config: everything a RawNode is built from. Randomness comes only from the injected `rng`."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Config:
    id: int
    #: the bootstrap voters, this one included; they apply until a snapshot or a committed membership change in
    #: the log says otherwise. Empty for a member that joins an existing cluster: it learns the membership
    #: from the leader's snapshot and never campaigns before it is a voter.
    peers: tuple[int, ...]
    #: ticks without hearing from a leader before campaigning; randomized in [election_tick, 2*election_tick)
    election_tick: int = 10
    #: ticks between leader heartbeats (must be well below election_tick, §5.6 broadcastTime << electionTimeout)
    heartbeat_tick: int = 1
    #: a leader that has not heard from a quorum for an election timeout steps down (dissertation §6.2)
    check_quorum: bool = True
    #: campaign only after a pre-vote round shows we could win (dissertation §9.6)
    pre_vote: bool = True
    #: bytes of entry data per AppendEntries message (at least one entry is always sent)
    max_size_per_msg: int = 1 << 20
    #: unacknowledged AppendEntries messages per follower in the REPLICATE state
    max_inflight: int = 256
    #: bytes of committed entry data handed out per Ready (a restart re-applies a long log in slices)
    max_committed_size_per_ready: int = 8 << 20
    #: heartbeat answers from a follower that was sent a snapshot but has not acknowledged it, before the leader
    #: assumes the snapshot was lost and sends it again
    snapshot_retry: int = 30
    rng: random.Random = field(default_factory=lambda: random.Random(0), compare=False, repr=False)

    def validate(self) -> None:
        if self.id <= 0:
            raise ValueError("raft: member id must be positive")
        if self.peers and self.id not in self.peers:
            raise ValueError(f"raft: member {self.id} is not among the peers {list(self.peers)}")
        if len(set(self.peers)) != len(self.peers) or any(p <= 0 for p in self.peers):
            raise ValueError(f"raft: peer ids must be distinct and positive: {list(self.peers)}")
        if self.heartbeat_tick <= 0:
            raise ValueError("raft: heartbeat_tick must be positive")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("raft: election_tick must be greater than heartbeat_tick")
        if self.max_inflight <= 0:
            raise ValueError("raft: max_inflight must be positive")
