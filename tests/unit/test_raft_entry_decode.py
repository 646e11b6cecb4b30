"""Raft entries are read by orjson where it reads them as the standard library does (services/raftstore/fsm.py
`decode_txn`): every member — of this version, or an older one that read every entry with `json.loads` — must
apply identical values from the same bytes, including entries written before this change (the entry format did
not change; these are bytes as both encoders of `encode_txn` wrote them)."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from services.raftstore.fsm import FSM, decode_txn, encode_txn
from services.raftstore.raft import Entry

# entries as the older members wrote them (json.dumps with compact separators, or orjson.dumps), byte for byte
OLD_ENTRIES = [
    b'{"ops":[{"op":"create","kind":"config","object":{"id":"c1","n":-9223372036854775809}}],"time":1765000000.25}',
    b'{"ops":[{"op":"create","kind":"config","object":{"id":"c2","n":18446744073709551616}}],"time":1.5}',
    b'{"ops":[{"op":"create","kind":"config","object":{"id":"c3","n":99999999999999999999,"m":-1}}],"time":2.0}',
    b'{"ops":[{"op":"create","kind":"config","object":{"id":"c4","x":NaN,"y":-Infinity}}],"time":3.0}',
    b'{"ops":[{"op":"create","kind":"config","object":{"id":"c5","s":"\\ud800"}}],"time":4.0}',
    b'{"ops":[{"op":"create","kind":"config","object":{"id":"c6","n":9223372036854775807,"f":1e+22}}],"time":5}',
    b'{"ops":[{"op":"create","kind":"config","object":{"id":"c7","u":"\\u00e9\\u0000","f":5e-324}}],"time":6}',
    b'{"ops":[{"op":"delete","kind":"config","id":"c7"}],"time":1765000000.123456,"actor":"orchestrator@n1"}',
]


def same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, an int never equal to a float (2**64 read as 1.8e19 is a different state)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_old_entries_read_as_the_standard_library_reads_them() -> None:
    for data in OLD_ENTRIES:
        assert same(decode_txn(data), json.loads(data)), data


def test_an_integer_orjson_would_read_as_a_float_stays_an_integer() -> None:
    assert orjson.loads(b"-9223372036854775809") == -9.223372036854776e18  # why decode_txn looks for them
    txn = decode_txn(OLD_ENTRIES[0])
    assert txn["ops"][0]["object"]["n"] == -2**63 - 1 and type(txn["ops"][0]["object"]["n"]) is int


def test_replicas_of_old_and_new_readers_apply_identical_state() -> None:
    """The same log applied by a member reading with json (an older version) and by this one: one state hash."""
    old, new = FSM(), FSM()
    for i, data in enumerate(OLD_ENTRIES, 1):
        entry = Entry(index=i, term=1, data=data)
        assert not isinstance(old.apply(entry, json.loads(data)), Exception)
        assert not isinstance(new.apply(entry), Exception)
    assert new.mem.revision == old.mem.revision == len(OLD_ENTRIES)
    assert new.mem.state_hash() == old.mem.state_hash()


_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text()
            | st.sampled_from([2**63 - 1, -2**63, -2**63 - 1, 2**64 - 1, 2**64, 10**19, -10**19, 10**18]))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=16)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(_values, max_size=4), t=st.floats(allow_nan=False, allow_infinity=False))
def test_decode_equals_the_standard_library_for_either_encoder(ops: list[Any], t: float) -> None:
    txn = {"ops": ops, "time": t}
    for data in (encode_txn(txn), encode_txn(txn, exact=True)):
        assert same(decode_txn(data), json.loads(data))
