"""LocalStore: the Store protocol over an in-process MemoryStore, for unit, service and simulation tests."""

from __future__ import annotations

import asyncio
import builtins
import copy
import time
from collections.abc import Callable
from typing import Any

from shoal.store import wire
from shoal.store.memory import MemoryStore, validate_txn
from shoal.store.txn import Obj, Op, Page, TxnResult, WatchBatch, continue_after, continue_token


class LocalStore:
    def __init__(self, store: MemoryStore | None = None, now: Callable[[], float] = time.time) -> None:
        self.mem = store or MemoryStore()
        self._now = now
        self._changed = asyncio.Event()
        self.listeners: list[Callable[[int], None]] = []  # called with each new revision (bus stand-in)

    async def txn(self, ops: list[Op]) -> TxnResult:
        body = {"ops": copy.deepcopy(ops), "time": self._now()}
        validate_txn(body)
        try:
            result = self.mem.apply(body, self.mem.revision + 1)
        finally:
            self._changed.set()
            self._changed = asyncio.Event()
        for cb in self.listeners:
            cb(result.revision)
        return copy.deepcopy(result)

    async def get(self, kind: str, obj_id: str) -> Obj:
        return copy.deepcopy(self.mem.get(kind, obj_id))

    async def list(self, kind: str, **filters: Any) -> tuple[int, list[Obj]]:
        return self.mem.revision, copy.deepcopy(self.mem.list(kind, **filters))

    async def page(self, kind: str, *, limit: int | None = None, cont: str | None = None, name: str | None = None,
                   id_prefix: str | None = None, **filters: Any) -> Page:
        after = continue_after(cont) if cont else None
        items, last = self.mem.page(kind, limit=limit, after=after, name=name, id_prefix=id_prefix, **filters)
        return Page(self.mem.revision, copy.deepcopy(items), continue_token(last) if last is not None else None)

    async def page_stream(self, kind: str, *, limit: int | None = None, cont: str | None = None,
                          fields: tuple[str, ...] | None = None, **filters: Any) -> wire.StreamedPage:
        after = continue_after(cont) if cont else None
        items, last = self.mem.page(kind, limit=limit, after=after, **filters)
        return wire.StreamedPage(self.mem.revision, continue_token(last) if last is not None else None,
                                 wire.ndjson_stream(wire.dumps(o) for o in wire.project(items, fields)))

    async def counts(self, kind: str, **filters: Any) -> tuple[int, builtins.list[dict[str, Any]]]:
        return self.mem.revision, copy.deepcopy(self.mem.counts(kind, **filters))

    async def watch(self, after: int, wait: float = 0.0, upto: int = 0) -> WatchBatch:
        events = self.mem.events_since(after)
        if not events and wait > 0:
            try:
                await asyncio.wait_for(self._changed.wait(), wait)
            except TimeoutError:
                pass
            events = self.mem.events_since(after)
        return WatchBatch(self.mem.revision, copy.deepcopy(events))

    async def status(self) -> dict[str, Any]:
        r = self.mem.revision
        return {"id": 1, "role": "leader", "leader": 1, "term": 1, "commit_index": r, "applied_index": r,
                "members": [{"id": 1, "address": "local"}]}

    async def close(self) -> None:
        return None
