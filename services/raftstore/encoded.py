"""Each listed object's JSON, encoded once per stored version (issue 13, listing at scale).

A list of 100,000 tasks used to cost the member an orjson `dumps`, a projection (`fields=`) and a readability
check per object on every read, although the objects rarely change between two reads. `Encoded` keeps, per
kind and view (the `fields` projection, and whether the reader gets payloads redacted), each object's bytes
with the object's `meta.version`: the store replaces an object on every write and gives it the write's
revision as its version (shoal.store.memory), so a version names one content for good, and an entry whose
version is not the stored object's is simply re-encoded. A list is then a concatenation of cached bytes.

Only readable objects (shoal.models.stored.Readable) are cached, so a cache hit also stands for the
readability verdict; an unreadable object is encoded on every read (the JSON list still carries it, for the
client to skip and count as before; the NDJSON list skips it here).

Memory is bounded by `budget` bytes of encoded objects summed over every view (what does not fit is encoded
per read, as without the cache), views are at most `max_views` per kind (least recently used dropped), and
entries of deleted objects are pruned when a view holds more entries than the kind has objects. Pure: no I/O,
the caller passes the objects and the store's live ids."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from services.raftstore.access import redact_objects
from shoal.models.stored import Readable
from shoal.store import wire

DEFAULT_BUDGET = 256 * 1024 * 1024
#: views (field projections) kept per kind besides the full objects: `service ps`'s, a UI's, ...
MAX_VIEWS = 4
PRUNE_SLACK = 1024  # entries of deleted objects tolerated per view before a prune pass

Fields = tuple[str, ...] | None
ViewKey = tuple[str, Fields, bool]  # kind, projection, payloads redacted


class Encoded:
    def __init__(self, readable: Readable, *, budget: int = DEFAULT_BUDGET, max_views: int = MAX_VIEWS) -> None:
        self.readable = readable
        self.budget = budget
        self.max_views = max_views
        self.size = 0  # bytes held, over every view
        self.misses = 0  # objects encoded (not found, or found at another version)
        self._views: OrderedDict[ViewKey, dict[str, tuple[Any, bytes]]] = OrderedDict()

    def _view(self, key: ViewKey) -> dict[str, tuple[Any, bytes]]:
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = {}
            kind = key[0]
            same_kind = [k for k in self._views if k[0] == kind and k[1] is not None]
            if len(same_kind) > self.max_views:  # the least recently used projection of this kind goes
                self._drop(same_kind[0])
        else:
            self._views.move_to_end(key)
        return view

    def _drop(self, key: ViewKey) -> None:
        view = self._views.pop(key)
        self.size -= sum(len(b) for _, b in view.values())

    def lines(self, component: str, kind: str, objs: Iterable[dict[str, Any]], fields: Fields, *,
              unreadable: bool = False) -> Iterator[bytes]:
        """Each object's JSON as `component` may see it (payloads redacted) and projected to `fields`, in order.
        Unreadable objects are left out, or with `unreadable` encoded (uncached) in their place."""
        for batch in self.batches(component, kind, objs, fields, unreadable=unreadable):
            yield from batch

    def batches(self, component: str, kind: str, objs: Iterable[dict[str, Any]], fields: Fields, *,
                unreadable: bool = False, size: int = wire.CHUNK) -> Iterator[list[bytes]]:
        """`lines` in lists of up to `size` (fewer where unreadable objects were left out): the cached ones
        gathered in one comprehension per list, the others encoded in their place."""
        key: ViewKey = (kind, fields, _redacts(component, kind))
        view = self._view(key)
        encode = _encoder(component, kind, fields)
        get = view.get
        it = iter(objs)
        while batch := list(itertools.islice(it, size)):
            try:  # the usual case: per object one dictionary lookup and a version compare
                got: list[bytes | None] = [h[1] if (h := get(o["id"])) is not None and h[0] == o["meta"]["version"]
                                           else None for o in batch]
            except (KeyError, TypeError):  # no id or meta: an object stored before the store validated writes
                got = [_cached(view, o) for o in batch]
            if None in got:
                got = [line if line is not None else self._miss(key, view, o, encode, unreadable)
                       for o, line in zip(batch, got, strict=True)]
                yield [line for line in got if line is not None]
            else:
                yield got  # type: ignore[misc]  # no None left

    def _miss(self, key: ViewKey, view: dict[str, tuple[Any, bytes]], o: Any, encode: Callable[[Any], bytes],
              unreadable: bool) -> bytes | None:
        kind = key[0]
        self.misses += 1
        if unreadable:  # kept in the answer either way; cached only when readable
            readable = self.readable.reason(kind, o) is None
        else:  # left out, logged and counted as StoreClient does
            readable = bool(self.readable.filter(kind, [o]))
            if not readable:
                return None
        line = encode(o)
        oid = o.get("id") if isinstance(o, dict) else None
        meta = o.get("meta") if isinstance(o, dict) else None
        version = meta.get("version") if isinstance(meta, dict) else None
        # a streamed answer outlives its request's turn: the view may have been dropped meanwhile (more
        # projections in use than `max_views`), and bytes put in it would be counted but never released
        if readable and version is not None and isinstance(oid, str) and self._views.get(key) is view:
            old = view.pop(oid, None)
            if old is not None:
                self.size -= len(old[1])
            if self.size + len(line) <= self.budget:
                view[oid] = (version, line)
                self.size += len(line)
        return line

    def prune(self, kind: str, count: int, exists: Callable[[str], bool]) -> int:
        """Drop the entries of `kind`'s views whose object is gone (`count`: how many objects of the kind the
        store holds, `exists`: whether it holds this id) once a view holds more entries than that; how many
        were dropped."""
        dropped = 0
        for key, view in self._views.items():
            if key[0] != kind or len(view) <= count + PRUNE_SLACK:
                continue
            for oid in [oid for oid in view if not exists(oid)]:
                self.size -= len(view.pop(oid)[1])
                dropped += 1
        return dropped


def _cached(view: dict[str, tuple[Any, bytes]], o: Any) -> bytes | None:
    try:
        hit = view.get(o["id"])
        return hit[1] if hit is not None and hit[0] == o["meta"]["version"] else None
    except (KeyError, TypeError):
        return None


def _redacts(component: str, kind: str) -> bool:
    probe = {"spec": {"data": ""}}
    return redact_objects(component, kind, [probe])[0] is not probe


def _encoder(component: str, kind: str, fields: Fields) -> Callable[[dict[str, Any]], bytes]:
    def encode(o: dict[str, Any]) -> bytes:
        shown = redact_objects(component, kind, [o])
        # an exact-size copy: the bytes orjson returns keep its whole working buffer (4 KB and more) allocated,
        # which, held for 100,000 objects, was 400 MB of RSS for 33 MB of JSON
        return memoryview(wire.dumps(next(iter(wire.project(shown, fields))))).tobytes()
    return encode
