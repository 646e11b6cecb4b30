"""Structured concurrency helpers: tasks that belong to a lifetime run in an `asyncio.TaskGroup`, so none
outlives the call that started them (trio's rule, STYLE.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


async def until_first_failure(*coros: Coroutine[Any, Any, None]) -> None:
    """Run `coros` together until one raises: the others are cancelled and awaited, and that exception is raised
    as itself, not inside an ExceptionGroup, so callers keep catching what the work raises (a session's
    `SessionInvalid`, an HTTP error). Returns when all return. Cancelling the caller cancels them all."""
    try:
        async with asyncio.TaskGroup() as tg:
            for coro in coros:
                tg.create_task(coro)
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None


@contextlib.asynccontextmanager
async def task_scope() -> AsyncIterator[asyncio.TaskGroup]:
    """An `asyncio.TaskGroup` whose one failure is raised as itself, not inside an ExceptionGroup: the body's own
    exception, or the first task's (which cancels the body and the other tasks). The body cancels what it no
    longer needs before it ends; leaving the scope waits for every task."""
    try:
        async with asyncio.TaskGroup() as tg:
            yield tg
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
