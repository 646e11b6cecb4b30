"""A linearizability checker for register histories: Wing & Gong's search with Lowe's memoisation, split per
key (P-compositionality: a history is linearizable iff each key's sub-history is).

An operation is a `read` (output = value seen, or None if absent), a `write` (input = value), or a `cas`
(input = (expected, new), output = True/False). An operation whose outcome is unknown (the client timed out:
`ret=None`) may take effect at any point after its call, or never; unknown reads are dropped since they
constrain nothing."""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Operation:
    client: int
    key: Hashable
    kind: str  # "read" | "write" | "cas"
    input: Any
    output: Any
    call: float
    ret: float | None  # None: outcome unknown

    @property
    def end(self) -> float:
        return math.inf if self.ret is None else self.ret


def _step(state: Any, op: Operation) -> tuple[bool, Any]:
    """Apply `op` to a register in `state`; (ok, new state). ok=False means `op` could not happen here."""
    if op.kind == "write":
        return True, op.input
    if op.kind == "read":
        return op.output == state, state
    if op.kind == "cas":
        expected, new = op.input
        if op.ret is None:  # unknown outcome: only the successful branch changes anything
            return (True, new) if state == expected else (True, state)
        if op.output:
            return (state == expected), new
        return (state != expected), state
    raise ValueError(f"unknown operation kind {op.kind!r}")


def check_key(ops: list[Operation], initial: Any = None) -> bool:
    ops = [o for o in ops if not (o.ret is None and o.kind == "read")]
    ops.sort(key=lambda o: o.call)
    n = len(ops)
    required = 0
    for i, o in enumerate(ops):
        if o.ret is not None:
            required |= 1 << i
    seen: set[tuple[int, Any]] = set()
    # Iterative DFS over (linearized set, register state); Lowe's cache prunes revisited configurations.
    stack: list[tuple[int, Any]] = [(0, initial)]
    while stack:
        done, state = stack.pop()
        if done & required == required:
            return True
        pending = [i for i in range(n) if not done >> i & 1]
        horizon = min(ops[i].end for i in pending)
        for i in pending:
            op = ops[i]
            if op.call > horizon:
                break  # sorted by call: nothing later may precede the earliest pending return
            ok, new_state = _step(state, op)
            if not ok:
                continue
            key = (done | 1 << i, _freeze(new_state))
            if key not in seen:
                seen.add(key)
                stack.append((done | 1 << i, new_state))
    return False


def _freeze(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def check(history: Iterable[Operation], initial: Any = None) -> tuple[bool, Hashable | None]:
    """(True, None) if linearizable, else (False, the first key whose sub-history is not)."""
    per_key: dict[Hashable, list[Operation]] = defaultdict(list)
    for op in history:
        per_key[op.key].append(op)
    for key, ops in per_key.items():
        if not check_key(ops, initial):
            return False, key
    return True, None


if __name__ == "__main__":  # pragma: no cover - manual use on a JSON history
    import json

    hist = [Operation(**o) for o in json.load(open(sys.argv[1]))]
    print(check(hist))
