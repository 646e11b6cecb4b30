"""The store seam every subsystem depends on: `StoreClient` (HTTP to raftstore) and `LocalStore` (in-memory)
both satisfy it."""

from __future__ import annotations

import builtins
from typing import Any, Protocol

from shoal.store.txn import Obj, Op, Page, TxnResult, WatchBatch
from shoal.store.wire import StreamedPage


class Store(Protocol):
    async def txn(self, ops: list[Op]) -> TxnResult:
        """Apply `ops` all-or-nothing; returns once committed. Raises Conflict/NotFound/… (nothing applied),
        Unavailable (nothing applied), or OutcomeUnknown (may have applied: re-read to find out)."""

    async def get(self, kind: str, obj_id: str) -> Obj:
        """Linearizable read of one object; NotFound if absent."""

    async def list(self, kind: str, **filters: Any) -> tuple[int, list[Obj]]:
        """(revision, objects): a linearizable list; watching from `revision` misses nothing after it."""

    async def page(self, kind: str, *, limit: int | None = None, cont: str | None = None, name: str | None = None,
                   id_prefix: str | None = None, **filters: Any) -> Page:
        """A linearizable page of `list`: up to `limit` objects in id order after the `cont` token of the
        previous page, filtered in the store (fields, `name` through the name index, `id_prefix`). Pages are
        read one by one, each at its own revision: an object that exists throughout a walk appears exactly
        once (in the version its page read); one created or removed during the walk may or may not."""

    async def page_stream(self, kind: str, *, limit: int | None = None, cont: str | None = None,
                          fields: tuple[str, ...] | None = None, **filters: Any) -> StreamedPage:
        """`page` (field filters only) as NDJSON bytes to pass on without decoding them: one object per line
        (with `fields`, only those top-level fields and `id`: a list view's projection), the whole page read
        at one revision (`StreamedPage.revision`), `next` known before the first byte. Unreadable objects are
        left out by the store."""

    async def counts(self, kind: str, **filters: Any) -> tuple[int, builtins.list[dict[str, Any]]]:
        """(revision, groups): linearizable counts of `kind` by its counted fields (MemoryStore.counts)."""

    async def watch(self, after: int, wait: float = 0.0, upto: int = 0) -> WatchBatch:
        """Committed events with revision > `after`, waiting up to `wait` seconds for the first one.
        `upto`: a revision the caller knows has committed (a hint): a member that has not applied it yet asks
        the leader where the commit stands instead of waiting for the next heartbeat to tell it.
        Raises Compacted when `after` is older than the retained history."""

    async def status(self) -> dict[str, Any]:
        """Raft status of the member answering (id, role, leader, term, commit_index, members)."""

    async def close(self) -> None: ...
