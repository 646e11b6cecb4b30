"""`shoal.store.rmw.read_modify_write`, the one optimistic retry loop of the gateway routes and the dispatcher:
a commit that loses a race re-plans from fresh reads; errors of the plan itself pass through untouched; a plan
with nothing to write commits nothing; the attempts are bounded and end in one error (409 or 503)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shoal.errors import Conflict, InvalidArgument, NotFound, Unavailable, VersionConflict
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.store.rmw import Retry, read_modify_write
from shoal.store.txn import Op, TxnResult

KIND = "network"


class Racing(LocalStore):
    """A store whose first `races` commits find the object bumped by someone else in between."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races

    async def txn(self, ops: list[Op]) -> TxnResult:
        if self.races > 0:
            self.races -= 1
            cur = await self.get(KIND, "n1")
            await super().txn([t.update(KIND, {**cur, "bumped": cur.get("bumped", 0) + 1})])
        return await super().txn(ops)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _seed(store: LocalStore) -> None:
    await LocalStore.txn(store, [t.create(KIND, {"id": "n1", "spec": {"name": "front"}})])


def _renamer(store: LocalStore, reads: list[int]) -> Any:
    async def plan() -> list[Op]:
        cur = await store.get(KIND, "n1")
        reads.append(cur["meta"]["version"])
        return [t.update(KIND, {**cur, "spec": {"name": "back"}})]
    return plan


def test_a_lost_race_replans_from_a_fresh_read_and_commits() -> None:
    async def go() -> tuple[TxnResult, list[int], Racing]:
        store = Racing(races=2)
        await _seed(store)
        reads: list[int] = []
        res = await read_modify_write(store, _renamer(store, reads), attempts=5, conflict="x")
        return res, reads, store
    res, reads, _ = run(go())
    assert res.objects[0]["spec"]["name"] == "back" and res.objects[0]["bumped"] == 2
    assert len(reads) == 3 and reads[0] < reads[1] < reads[2]  # each attempt read the version the race left


def test_running_out_of_attempts_ends_in_the_one_error_chained_to_the_last_conflict() -> None:
    async def go(exhausted: type[Conflict] | type[Unavailable]) -> BaseException:
        store = Racing(races=10)
        await _seed(store)
        with pytest.raises(exhausted) as e:
            await read_modify_write(store, _renamer(store, []), attempts=3, conflict="front kept changing; retry",
                                    exhausted=exhausted)
        assert store.races == 10 - 3  # exactly `attempts` commits were tried
        return e.value
    err = run(go(Conflict))
    assert type(err) is Conflict and err.status == 409 and err.message == "front kept changing; retry"
    assert isinstance(err.__cause__, VersionConflict)
    assert run(go(Unavailable)).status == 503


def test_errors_of_the_plan_pass_through_at_once_even_not_found() -> None:
    calls = 0

    async def plan() -> list[Op]:
        nonlocal calls
        calls += 1
        raise NotFound("network 'x' not found")

    with pytest.raises(NotFound):
        run(read_modify_write(LocalStore(), plan, attempts=5, conflict="x"))
    assert calls == 1


def test_a_commit_error_not_retried_passes_through() -> None:
    async def go() -> None:
        store = LocalStore()

        async def plan() -> list[Op]:
            return [t.update(KIND, {"id": "missing", "meta": {"version": 1}})]

        with pytest.raises(NotFound):  # retry_on excludes NotFound here
            await read_modify_write(store, plan, attempts=5, conflict="x", retry_on=(VersionConflict,))
    run(go())


def test_should_retry_decides_whether_a_conflict_is_a_race_or_final() -> None:
    async def go(verdict: bool) -> int:
        store = Racing(races=10)
        await _seed(store)
        asked: list[Exception] = []

        async def moved(e: Exception) -> bool:
            asked.append(e)
            return verdict

        with pytest.raises(Conflict):
            await read_modify_write(store, _renamer(store, []), attempts=4, conflict="x", should_retry=moved)
        return len(asked)
    assert run(go(False)) == 1  # the conflict itself is raised (a VersionConflict, not the exhausted Conflict)
    assert run(go(True)) == 4


def test_nothing_to_write_commits_nothing_and_retry_from_the_plan_counts_as_an_attempt() -> None:
    async def go() -> tuple[TxnResult | None, int]:
        store = LocalStore()
        tries = 0

        async def plan() -> list[Op] | None:
            nonlocal tries
            tries += 1
            if tries < 3:
                raise Retry("my first write lost a race")
            return None

        return await read_modify_write(store, plan, attempts=3, conflict="x"), tries
    assert run(go()) == (None, 3)

    async def always_retry() -> list[Op]:
        raise Retry("again")

    with pytest.raises(Conflict):
        run(read_modify_write(LocalStore(), always_retry, attempts=2, conflict="x"))
    with pytest.raises(ValueError):
        run(read_modify_write(LocalStore(), always_retry, attempts=0, conflict="x"))


def test_rule_errors_are_not_confused_with_races() -> None:
    async def plan() -> list[Op]:
        raise InvalidArgument("bad spec")

    with pytest.raises(InvalidArgument):
        run(read_modify_write(LocalStore(), plan, attempts=5, conflict="x"))
