"""Listed objects on the wire as NDJSON, encoded once.

A list of 100,000 tasks is ~86 MB of JSON. The store encodes it once (orjson: ~10x the standard library's
speed), in chunks of `CHUNK` objects so that neither the store nor anyone after it builds the whole answer in
memory, and the gateway passes the bytes through instead of decoding and re-encoding them (docs/performance.md,
"Listing at scale"). One object per line: orjson never writes a raw newline inside a value (it escapes them in
strings and writes no indentation), so a line break is always a separator and a reader may split on it.

`StreamedPage` is what `Store.page_stream` returns: the page's revision and continue token (known before the
first byte, like `Page`) and the body as NDJSON chunks."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shoal.wire import dumps as dumps  # one JSON codec for the store's wire (orjson, standard-library fallback)
from shoal.wire import loads as loads

NDJSON = "application/x-ndjson"
#: headers of a streamed page (the body is only the objects)
REVISION_HEADER = "shoal-revision"
CONTINUE_HEADER = "shoal-continue"
CHUNK = 500  # objects per encoded chunk: ~430 KB of tasks
#: bytes a relay (the gateway) gathers before sending them on: what it reads arrives a TLS record (<= 16 KB) at
#: a time, and each send costs a pass through the ASGI stack, a TLS write and a read on the other side
RELAY_BYTES = 256 * 1024


def fields_pattern(allowed: frozenset[str]) -> str:
    """What `parse_fields(raw, allowed)` accepts, as a pattern for the OpenAPI schemas of routes taking `fields`."""
    name = "(?:" + "|".join(re.escape(f) for f in sorted(allowed)) + ")"
    return rf"^ *{name} *(?:, *{name} *){{0,63}}$"


def parse_fields(raw: str | None, allowed: frozenset[str] | None = None) -> tuple[str, ...] | None:
    """The `fields` of a list request (`id,status,node_id`: top-level fields to keep of each object; `id` is
    always kept), None when not given. ValueError, saying what to fix, for an empty or malformed list or, with
    `allowed`, a field not in it."""
    if raw is None:
        return None
    names = [f.strip() for f in raw.split(",")]
    bad = [f for f in names if not f or not f.replace("_", "").isalnum() or not f.isascii() or len(f) > 64]
    if bad or len(names) > 64:
        raise ValueError(f"fields must be a comma-separated list of at most 64 top-level field names, not {raw!r}")
    if allowed is not None and (unknown := sorted(set(names) - allowed)):
        raise ValueError(f"unknown field(s) {unknown}; fields are {sorted(allowed)}")
    return tuple(dict.fromkeys(["id", *names]))


def project(objs: Iterable[dict[str, Any]], fields: tuple[str, ...] | None) -> Iterable[dict[str, Any]]:
    """Each object with only `fields` (those it has), or the objects as they are when `fields` is None."""
    if fields is None:
        return objs
    return ({f: o[f] for f in fields if f in o} for o in objs)


def ndjson_chunks(objs: Iterable[Any], chunk: int = CHUNK) -> Iterator[bytes]:
    """`objs` as NDJSON (each object and a newline), `chunk` objects per bytes value."""
    return ndjson_join((dumps(o) for o in objs), chunk)


def ndjson_join(lines: Iterable[bytes], chunk: int = CHUNK) -> Iterator[bytes]:
    """Encoded objects (one JSON value each, no line break inside) as NDJSON, `chunk` lines per bytes value."""
    buf: list[bytes] = []
    for line in lines:
        buf.append(line)
        if len(buf) == chunk:
            buf.append(b"")
            yield b"\n".join(buf)
            buf = []
    if buf:
        buf.append(b"")
        yield b"\n".join(buf)


async def ndjson_stream(lines: Iterable[bytes], chunk: int = CHUNK) -> AsyncIterator[bytes]:
    """`ndjson_join` for a streamed answer, on the event loop (one chunk, at most ~0.5 ms to encode, at a time)
    rather than a thread per chunk as a server does with a plain iterator."""
    for c in ndjson_join(lines, chunk):
        yield c


async def ndjson_batches(batches: Iterable[list[bytes]]) -> AsyncIterator[bytes]:
    """Lists of encoded objects (one JSON value each, no line break inside) as NDJSON, a chunk per list, joined
    on the event loop as the client reads (empty lists skipped)."""
    for batch in batches:
        if batch:
            batch.append(b"")
            yield b"\n".join(batch)


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Complete lines (without the newline) from NDJSON arriving in arbitrary chunks."""
    rest = b""
    for c in chunks:
        rest += c
        *lines, rest = rest.split(b"\n")
        yield from (x for x in lines if x)
    if rest:
        yield rest


async def _no_close() -> None:
    return None


@dataclass
class StreamedPage:
    """A page whose objects come as NDJSON chunks (`Store.page_stream`). `chunks` must be consumed or
    `aclose()` called (it releases the store connection)."""

    revision: int
    next: str | None
    chunks: AsyncIterator[bytes]
    aclose: Callable[[], Awaitable[None]] = field(default=_no_close)


async def coalesce(chunks: AsyncIterator[bytes], size: int = RELAY_BYTES) -> AsyncIterator[bytes]:
    """`chunks` re-cut into pieces of at least `size` bytes (the last may be shorter); the bytes unchanged."""
    buf: list[bytes] = []
    held = 0
    async for c in chunks:
        buf.append(c)
        held += len(c)
        if held >= size:
            yield b"".join(buf)
            buf, held = [], 0
    if held:
        yield b"".join(buf)


async def as_json_items(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """NDJSON chunks as the inside of a JSON array (`a,b,c`): each line break becomes a comma, except the
    last one. Byte operations only; no object is decoded."""
    pending = False  # a separator is owed before the next non-empty output
    async for c in chunks:
        if not c:
            continue
        body = c.replace(b"\n", b",")
        if pending:
            body = b"," + body
        pending = body.endswith(b",")
        if pending:
            body = body[:-1]
        if body:
            yield body
