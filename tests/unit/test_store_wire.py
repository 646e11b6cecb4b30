"""shoal.store.wire: NDJSON chunks encoded once, and the byte-level conversions the gateway and the CLI apply
without decoding (a JSON array's inside; lines from arbitrary chunks)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.store import wire

values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                      max_leaves=8)
objects = st.lists(st.dictionaries(st.text(), values, max_size=4), max_size=12)


async def _aiter(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c


async def _collect(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in it])


def _recut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(objects, st.integers(1, 5), st.lists(st.integers(0, 10_000), max_size=8))
def test_ndjson_round_trips_through_any_chunking(objs: list[dict[str, Any]], per_chunk: int,
                                                 cuts: list[int]) -> None:
    data = b"".join(wire.ndjson_chunks(objs, per_chunk))
    assert data.count(b"\n") == len(objs)  # one line per object: no raw newline inside a value
    pieces = _recut(data, cuts)
    assert [wire.loads(x) for x in wire.split_lines(pieces)] == objs
    inner = asyncio.run(_collect(wire.as_json_items(_aiter(pieces))))
    assert json.loads(b"[" + inner + b"]") == objs


def test_what_orjson_refuses_falls_back_to_the_standard_library() -> None:
    assert json.loads(wire.dumps({"big": 2**70})) == {"big": 2**70}
    assert wire.dumps({"a": "x\ny"}) == b'{"a":"x\\ny"}'


@pytest.mark.parametrize("size", [1, 7, 100, 10_000])
async def test_coalesce_keeps_the_bytes_and_sends_fewer_larger_pieces(size: int) -> None:
    """The gateway's relay (`wire.coalesce`): the same bytes in pieces of at least `size` (but the last)."""
    pieces = [bytes([65 + i % 26]) * (i % 13) for i in range(300)]

    async def source() -> AsyncIterator[bytes]:
        for p in pieces:
            yield p

    out = [c async for c in wire.coalesce(source(), size)]
    assert b"".join(out) == b"".join(pieces)
    assert all(len(c) >= size for c in out[:-1]) and all(out)
    assert len(out) <= max(1, sum(map(len, pieces)) // size + 1)
