"""ReadOnly: the leader's queue of read-index requests waiting for a heartbeat round (dissertation §6.4).

A request is recorded with the commit index at the time it arrived; once a majority acknowledged a heartbeat
carrying its context, the leader knows it was still leader then, so that index is safe to read at. Requests are
confirmed in order: a later confirmed round also confirms every earlier one."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from services.raftstore.raft.quorum import has_quorum


@dataclass
class ReadRequest:
    context: bytes
    index: int
    frm: int  # who asked: the leader itself or a follower that forwarded it
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    def __init__(self) -> None:
        self._pending: dict[bytes, ReadRequest] = {}  # insertion order = arrival order

    def add(self, context: bytes, index: int, frm: int, self_id: int) -> None:
        if context not in self._pending:
            self._pending[context] = ReadRequest(context, index, frm, {self_id})

    def ack(self, context: bytes, frm: int, voters: Collection[int]) -> list[ReadRequest]:
        """Record a heartbeat ack; return the requests now confirmed (possibly none)."""
        req = self._pending.get(context)
        if req is None:
            return []
        req.acks.add(frm)
        if not has_quorum(voters, req.acks):
            return []
        done: list[ReadRequest] = []
        for ctx in list(self._pending):
            done.append(self._pending.pop(ctx))
            if ctx == context:
                break
        return done

    def last_context(self) -> bytes:
        return next(reversed(self._pending)) if self._pending else b""

    def __len__(self) -> int:
        return len(self._pending)

    def reset(self) -> None:
        self._pending.clear()
