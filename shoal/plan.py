"""Plans: what a pure control-plane core returns (Nomad's "plan", SwarmKit's batched store updates).

A core never writes; it returns a `Plan` — groups of store ops plus an optional "wake me at T" — and the
shell (`shoal.leader_loop`) writes it. A `Group` is the unit of atomicity: its ops must commit together or not at
all (a restart = old task → SHUTDOWN *and* its replacement, in one transaction, as SwarmKit's restart supervisor
does inside one `store.Update`). `pack` puts whole groups into transactions bounded like SwarmKit's `Batch`
(200 changes, 75% of the 1.5 MiB transaction limit)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from shoal.store.txn import MAX_TXN_BYTES, Op

#: SwarmKit's `MaxChangesPerTransaction`.
MAX_CHANGES_PER_TXN = 200
#: SwarmKit splits a batch at 75% of `MaxTransactionBytes`, leaving room for envelope and metadata.
MAX_BATCH_BYTES = MAX_TXN_BYTES * 3 // 4


@dataclass
class Group:
    """Ops that must commit atomically; `note` is handed back to the shell once they did (e.g. a restart to
    record in the in-memory restart history only after it really happened)."""

    ops: list[Op]
    note: Any = None


@dataclass
class Plan:
    groups: list[Group] = field(default_factory=list)
    #: wall-clock time at which the core wants another pass even if nothing changes (timers: restart delays,
    #: debounce deadlines); None = only on change.
    wake_at: float | None = None

    def add(self, ops: list[Op], note: Any = None) -> None:
        if ops:
            self.groups.append(Group(ops, note))

    def wake(self, at: float | None) -> None:
        if at is not None and (self.wake_at is None or at < self.wake_at):
            self.wake_at = at

    def extend(self, other: Plan) -> None:
        self.groups += other.groups
        self.wake(other.wake_at)

    @property
    def ops(self) -> list[Op]:
        return [op for g in self.groups for op in g.ops]

    def __bool__(self) -> bool:
        return bool(self.groups)


def op_size(op: Op) -> int:
    """The op's size as compact JSON, as the store client sends it (orjson: a planner sizes every op it writes,
    and the standard encoder was 6-7 % of the orchestrator's and allocator's CPU at 10k tasks)."""
    try:
        return len(orjson.dumps(op, default=str, option=orjson.OPT_NON_STR_KEYS))
    except TypeError:  # beyond what orjson encodes (integers over 64 bits): the standard encoder
        return len(json.dumps(op, separators=(",", ":"), default=str))


def pack(groups: Iterable[Group], max_ops: int = MAX_CHANGES_PER_TXN,
         max_bytes: int = MAX_BATCH_BYTES) -> Iterator[list[Group]]:
    """Consecutive groups packed into batches of at most `max_ops` ops and `max_bytes` bytes; a single group
    larger than the bounds gets a batch of its own (the store still enforces its hard limits)."""
    batch: list[Group] = []
    n_ops = n_bytes = 0
    for g in groups:
        g_ops = len(g.ops)
        g_bytes = sum(op_size(op) for op in g.ops)
        if batch and (n_ops + g_ops > max_ops or n_bytes + g_bytes > max_bytes):
            yield batch
            batch, n_ops, n_bytes = [], 0, 0
        batch.append(g)
        n_ops += g_ops
        n_bytes += g_bytes
    if batch:
        yield batch
