"""Fast JSON for the hot wire paths (issue 13): the raftstore's answers (watch batches, pages, objects) and the
StoreClient's reading of them — every subsystem follows the store, so each task change is encoded by a member
and decoded by every follower. orjson encodes about 5x and decodes about 1.8x faster than the standard library
(bench/wire.py, docs/performance.md). Encoding what orjson refuses (integers beyond 64 bits, keys that are not
strings or enums) falls back to `json`, as does decoding NaN/Infinity literals. One difference remains: orjson
reads an integer beyond 64 bits as a float — no stored object has one (every integer field of the models is
bounded well inside 64 bits, and the store refuses objects its consumers could not read).

A large document is decoded with the cyclic garbage collector paused (`shoal.heap.gc_paused`): decoded JSON has
no reference cycles, yet the collector, triggered every 700 new containers, walks the young heap again and again
while a watch batch or transaction of hundreds of tasks is built — about two thirds of the decode's CPU with a
mirror of 10,000 tasks in the heap (docs/performance.md, "The collector on the store's wire"). Every follower
decodes every task change, so this is paid once per change in every subsystem."""

from __future__ import annotations

import json
from typing import Any

import orjson

from shoal import heap
from shoal.heap import gc_paused

_OPTS = orjson.OPT_NON_STR_KEYS
#: documents at least this long are decoded with the collector paused (a few dozen tasks; a smaller one makes
#: too few containers for the collector to run more than once)
GC_PAUSE_BYTES = 16 * 1024


def dumps(body: Any) -> bytes:
    """Compact JSON (`separators=(",", ":")`) of `body` as UTF-8 bytes."""
    try:
        return orjson.dumps(body, option=_OPTS)
    except TypeError:  # > 64-bit integers and other types orjson refuses: the standard encoder decides
        return json.dumps(body, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    """Parse JSON; a document orjson refuses (NaN/Infinity literals, huge integers) is parsed by `json`. One of
    `GC_PAUSE_BYTES` or more is parsed with the cyclic collector paused (the module's docstring says why)."""
    return loads_read(data)[0]


def loads_read(data: bytes | str) -> tuple[Any, bool]:
    """`loads`, and whether orjson read the document: then it holds no NaN/Infinity and no integer beyond 64
    bits (orjson reads one as a float), so orjson writes back exactly what it read — for every JSON decoder."""
    if len(data) < GC_PAUSE_BYTES:
        return _loads(data)
    with gc_paused():
        heap.decoded.before_decode()  # a store follower keeps what it decodes out of the young collections
        out = _loads(data)
        heap.decoded.after_decode()
        return out


def _loads(data: bytes | str) -> tuple[Any, bool]:
    try:
        return orjson.loads(data), True
    except orjson.JSONDecodeError:
        return json.loads(data), False
