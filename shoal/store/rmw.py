"""One optimistic read-modify-write loop for every writer that reads objects, decides, and commits with version
preconditions (SwarmKit's `store.Update` retried on `ErrSequenceConflict`).

`plan()` reads what it needs and returns the operations to commit (or None: nothing to write). When the commit
fails with one of `retry_on` — by default a stale version or an object deleted in between — and `should_retry`
(if given) agrees, the plan runs again from its reads, at most `attempts` times in all. Errors raised by the plan
itself (a 404 for what the user named, a 409 for a rule) and commit errors not retried pass through unchanged;
a plan that writes something first (a two-phase removal) raises `Retry` when that write lost a race.
When the attempts run out the caller gets one ending: `exhausted(conflict)` — `Conflict` (409: the client may
retry) by default, `Unavailable` (503) for control-plane writers that are asked again — chained to the last
failure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import overload

from shoal.errors import Conflict, NotFound, Unavailable, VersionConflict
from shoal.store.protocol import Store
from shoal.store.txn import Op, TxnResult

RETRYABLE: tuple[type[Exception], ...] = (VersionConflict, NotFound)


class Retry(Exception):
    """Raised by a plan whose own preparatory write lost a race: plan again (counts as an attempt)."""


@overload
async def read_modify_write(store: Store, plan: Callable[[], Awaitable[Sequence[Op]]], *, attempts: int,
                            conflict: str, retry_on: tuple[type[Exception], ...] = ...,
                            should_retry: Callable[[Exception], Awaitable[bool]] | None = ...,
                            exhausted: type[Conflict] | type[Unavailable] = ...) -> TxnResult: ...


@overload
async def read_modify_write(store: Store, plan: Callable[[], Awaitable[Sequence[Op] | None]], *, attempts: int,
                            conflict: str, retry_on: tuple[type[Exception], ...] = ...,
                            should_retry: Callable[[Exception], Awaitable[bool]] | None = ...,
                            exhausted: type[Conflict] | type[Unavailable] = ...) -> TxnResult | None: ...


async def read_modify_write(store: Store, plan: Callable[[], Awaitable[Sequence[Op] | None]], *, attempts: int,
                            conflict: str, retry_on: tuple[type[Exception], ...] = RETRYABLE,
                            should_retry: Callable[[Exception], Awaitable[bool]] | None = None,
                            exhausted: type[Conflict] | type[Unavailable] = Conflict) -> TxnResult | None:
    """Commit what `plan()` returns, re-planning on a retried conflict (module doc)."""
    if attempts < 1:
        raise ValueError("read_modify_write: attempts must be at least 1")
    last: Exception | None = None
    for _ in range(attempts):
        try:
            ops = await plan()
        except Retry as e:
            last = e
            continue
        if ops is None:
            return None
        try:
            return await store.txn(list(ops))
        except retry_on as e:
            if should_retry is not None and not await should_retry(e):
                raise
            last = e
    raise exhausted(conflict) from last
