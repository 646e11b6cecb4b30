"""Stored objects that share what they repeat (issue 13, memory at scale).

Every task carries a copy of its service's task spec (SwarmKit's shape) and a handful of strings it has in
common with thousands of others (its service's id and name, its node's id, its states). Decoded from JSON, each
of those is a fresh object: a task was ~4 KB of Python objects per stored version, the spec most of it. `Sharer`
gives the store one object per distinct value instead: the fields in `SHARED_FIELDS` (per kind: values that
are equal across many objects) are looked up by their encoded JSON — the same bytes, so the same key order, so
every answer encodes exactly as before — and every string at the top level of an object, and of its
`INTERNED_FIELDS`, is interned. Values are shared, never changed: the store replaces an object on every write
and nothing mutates a stored one in place (LocalStore hands out deep copies; the raftstore only encodes them).
The store's followers do the same with what they decode (`StoreMirror`: the planners, the dispatcher, the
dashboard hub each hold every task; no core mutates its input).

Pure and deterministic in what it returns (equal values, whoever holds them); the table of shared values is
swept of entries nothing else holds once it has doubled since the last sweep."""

from __future__ import annotations

import sys
from typing import Any

from shoal.models.kinds import Kind
from shoal.wire import dumps

#: per kind, top-level fields whose value many objects have in common (a task's spec and its service's
#: endpoint spec and published ports): one object per distinct value
SHARED_FIELDS: dict[str, frozenset[str]] = {
    Kind.TASK: frozenset({"spec", "endpoint_spec", "endpoint"}),
}
#: per kind, top-level objects whose own strings are interned too (a task's state and message)
INTERNED_FIELDS: dict[str, frozenset[str]] = {
    Kind.TASK: frozenset({"status"}),
}
MIN_SWEEP = 256  # table entries tolerated before the first sweep
#: values recently given to `value` remembered by identity: one decoded watch event hands the same spec object
#: for each of its changes (the compact form, shoal.store.txn.factor_shared); encoded once, not once a change
RECENT = 64


class Sharer:
    def __init__(self) -> None:
        self._values: dict[bytes, Any] = {}
        self._sweep_at = MIN_SWEEP
        #: id(value) -> (value, what `value` answered for it); holding the value keeps its id its own
        self._recent: dict[int, tuple[Any, Any]] = {}
        self.hits = 0  # values found shared (for tests and benchmarks)

    def __len__(self) -> int:
        return len(self._values)

    def object(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        """`obj` (a new dict, top level only) with its shared fields and strings replaced by the store's own
        equal ones. The caller's nested values are kept where nothing equal is held yet."""
        shared = SHARED_FIELDS.get(kind, frozenset())
        interned = INTERNED_FIELDS.get(kind, frozenset())
        intern = sys.intern
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if type(v) is str:
                v = intern(v)
            elif k in shared and isinstance(v, dict | list):
                v = self.value(v)
            elif k in interned and type(v) is dict:
                v = {f: intern(x) if type(x) is str else x for f, x in v.items()}
            out[intern(k)] = v
        return out

    def value(self, v: Any) -> Any:
        """The store's object equal to `v` (same JSON, key order included), `v` itself the first time. The same
        object given again soon after is answered without encoding it again."""
        recent = self._recent.get(id(v))
        if recent is not None and recent[0] is v:
            self.hits += 1
            return recent[1]
        try:
            key = dumps(v)
        except (TypeError, ValueError):
            return v
        held = self._values.get(key)
        if held is not None:
            self.hits += 1
        else:
            held = self._values[key] = v
            if len(self._values) >= self._sweep_at:
                self.sweep()
        if len(self._recent) >= RECENT:
            self._recent.clear()
        self._recent[id(v)] = (v, held)
        return held

    def sweep(self) -> int:
        """Drop the values only the table holds; how many were dropped."""
        values = self._values
        self._recent.clear()  # its references would keep values alive
        # getrefcount counts its argument and the table's reference: 2 means nobody else holds the value
        gone = [k for k in values if sys.getrefcount(values[k]) <= 2]
        for k in gone:
            del values[k]
        self._sweep_at = max(MIN_SWEEP, 2 * len(self._values))
        return len(gone)
