"""Fast JSON for the hot wire paths (issue 13): the raftstore's answers (watch batches, pages, objects) and the
StoreClient's reading of them — every subsystem follows the store, so each task change is encoded by a member
and decoded by every follower. orjson encodes about 5x and decodes about 1.8x faster than the standard library
(bench/wire.py, docs/performance.md). Encoding what orjson refuses (integers beyond 64 bits, keys that are not
strings or enums) falls back to `json`, as does decoding NaN/Infinity literals. One difference remains: orjson
reads an integer beyond 64 bits as a float — no stored object has one (every integer field of the models is
bounded well inside 64 bits, and the store refuses objects its consumers could not read)."""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTS = orjson.OPT_NON_STR_KEYS


def dumps(body: Any) -> bytes:
    """Compact JSON (`separators=(",", ":")`) of `body` as UTF-8 bytes."""
    try:
        return orjson.dumps(body, option=_OPTS)
    except TypeError:  # > 64-bit integers and other types orjson refuses: the standard encoder decides
        return json.dumps(body, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    """Parse JSON; a document orjson refuses (NaN/Infinity literals, huge integers) is parsed by `json`."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
