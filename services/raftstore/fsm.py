"""FSM: applies committed Raft entries to the store's deterministic state machine (shoal.store.memory).

The store's revision is the entry's Raft index. An entry's data is the leader-stamped transaction as compact
JSON; an empty entry is a leader's no-op and only advances the revision. A transaction that fails its
preconditions (VersionConflict, AlreadyExists, ...) fails identically on every replica: that error is the
entry's result, handed back to the proposer, and the entry still consumes its index."""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson

from services.raftstore.raft import Entry
from shoal.errors import InvalidArgument, ShoalError
from shoal.heap import gc_paused
from shoal.store.memory import MemoryStore
from shoal.store.txn import TxnResult

log = logging.getLogger(__name__)

ApplyResult = TxnResult | ShoalError | None


def encode_txn(txn: dict[str, object], *, exact: bool = False) -> bytes:
    """The entry's bytes. Every member decodes them as the standard library would (`decode_txn`); the leader applies
    `txn` itself, so the bytes must decode to exactly `txn`. orjson (~5x faster) is used only when the caller
    knows they will (`exact`: every value in `txn` came from orjson's own reading, `shoal.wire.loads_read`, or
    is a plain string, finite float or 64-bit integer) — orjson writes NaN as null and refuses larger integers,
    which the standard encoder keeps."""
    if exact:
        try:
            # an exact-size copy: the raft log holds entries until a snapshot, and the bytes orjson returns keep
            # its whole working buffer (~1.6x an entry of 500 tasks) allocated
            return memoryview(orjson.dumps(txn)).tobytes()
        except TypeError:  # a value orjson refuses (not from its reading): the standard encoder decides
            pass
    return json.dumps(txn, separators=(",", ":")).encode()


#: every digit to "0", every other byte to ".": a run of 19 digits — which may be an integer orjson reads as a
#: float (beyond 64 bits, or below -2**63) — is then a plain substring search (~0.8 ns a byte; a regular
#: expression scanned at ~11 ns a byte, more than orjson saves over the standard library)
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))
_LONG_DIGITS = b"0" * 19


def decode_txn(data: bytes) -> Any:
    """An entry's transaction: exactly what the standard library reads from `data`, with the cyclic collector
    paused (decoded JSON has no cycles, and the collector walking an entry's hundreds of tasks again and again
    while they are built was most of the decode's CPU: docs/performance.md, "The collector on the store's wire").
    orjson reads it (~2x faster) unless the bytes hold a run of 19 digits — the only literal both encoders of
    `encode_txn` can write that orjson reads otherwise (an integer beyond 64 bits, or below -2**63, comes back a
    float); the rest of what it could read otherwise (NaN/Infinity, a lone surrogate) it refuses, and the
    standard library reads it. So every member, of this version or an older one (which read every entry with
    the standard library), applies identical values, whichever encoder wrote the entry."""
    with gc_paused():
        if _LONG_DIGITS not in data.translate(_DIGITS):
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass
        return json.loads(data)


class FSM:
    def __init__(self, mem: MemoryStore | None = None) -> None:
        self.mem = mem or MemoryStore()

    @property
    def applied_index(self) -> int:
        return self.mem.revision

    def apply(self, entry: Entry, txn: dict[str, Any] | None = None) -> ApplyResult:
        """Apply one committed entry; returns its result (None for a no-op, an error for a failed txn). `txn`:
        the entry's data already decoded (by the leader that encoded it), not decoded again."""
        if entry.index <= self.mem.revision:
            raise AssertionError(f"fsm: entry {entry.index} applied twice (store at {self.mem.revision})")
        if not entry.data:
            self.mem.skip(entry.index)
            return None
        try:
            if txn is None:
                txn = decode_txn(entry.data)
        except ValueError as e:
            # Only the leader writes entries and it encodes them itself: this is a bug, not user input. Every
            # replica skips the entry the same way, so they stay identical.
            log.error("fsm: entry %d is not a JSON transaction (%s); skipped", entry.index, e)
            self.mem.skip(entry.index)
            return InvalidArgument(f"store: entry {entry.index} is not a transaction")
        try:
            return self.mem.apply(txn, entry.index)
        except ShoalError as e:
            return e
        except Exception as e:  # deterministic too: same code, same bytes on every replica
            log.warning("fsm: entry %d failed to apply: %r", entry.index, e)
            self.mem.skip(entry.index)
            return InvalidArgument(f"store: transaction could not be applied: {e!r}")
