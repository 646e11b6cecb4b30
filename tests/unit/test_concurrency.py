"""`shoal.concurrency`: `until_first_failure` — the first failure ends the others and is raised as itself (no
ExceptionGroup); work that returns lets the rest go on; cancelling the caller cancels every task it started.
`task_scope` — the body's own exception, or a task's, comes out as itself; leaving the scope waits for its tasks."""

from __future__ import annotations

import asyncio

import pytest

from shoal.concurrency import task_scope, until_first_failure

pytestmark = pytest.mark.timeout(10)


class Boom(Exception):
    pass


def test_the_first_failure_cancels_the_others_and_is_raised_as_itself() -> None:
    ended: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            ended.append(name)

    async def fails() -> None:
        await asyncio.sleep(0.01)
        raise Boom("why the session ended")

    with pytest.raises(Boom, match="why the session ended"):
        asyncio.run(until_first_failure(forever("a"), fails(), forever("b")))
    assert sorted(ended) == ["a", "b"]


def test_work_that_returns_lets_the_rest_finish() -> None:
    done: list[str] = []

    async def after(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        done.append(name)

    asyncio.run(until_first_failure(after("quick", 0.0), after("slow", 0.05)))
    assert done == ["quick", "slow"]


def test_cancelling_the_caller_cancels_every_task() -> None:
    cancelled: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def go() -> None:
        outer = asyncio.create_task(until_first_failure(forever("a"), forever("b")))
        await asyncio.sleep(0.02)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer

    asyncio.run(go())
    assert sorted(cancelled) == ["a", "b"]


def test_a_scope_raises_the_body_error_as_itself_after_its_tasks_end() -> None:
    ended: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            ended.append("task")

    async def go() -> None:
        async with task_scope() as tg:
            task = tg.create_task(forever())
            try:
                await asyncio.sleep(0.01)
                raise Boom("the body failed")
            finally:
                task.cancel()

    with pytest.raises(Boom, match="the body failed"):
        asyncio.run(go())
    assert ended == ["task"]


def test_a_scope_raises_a_task_error_as_itself_and_returns_the_body_value() -> None:
    async def fails() -> None:
        raise Boom("a task failed")

    async def failing() -> None:
        async with task_scope() as tg:
            tg.create_task(fails())
            await asyncio.sleep(3600)

    async def returning() -> int:
        async with task_scope() as tg:
            tg.create_task(asyncio.sleep(0.01))
            return 7

    with pytest.raises(Boom, match="a task failed"):
        asyncio.run(failing())
    assert asyncio.run(returning()) == 7
