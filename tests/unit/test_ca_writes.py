"""The CA's optimistic writes go through `shoal.store.rmw.read_modify_write`: a holder record or a token rotation
that loses a race re-reads and commits; one that keeps losing ends in 503 with the CA's message after its bounded
attempts (10 for a holder record, 5 for a token rotation), and writes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.ca import core
from services.ca.authority import CertificateAuthority
from services.ca.settings import CASettings
from shoal.errors import Unavailable
from shoal.models.kinds import Kind
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.store.txn import Op, TxnResult

pytestmark = pytest.mark.timeout(30)


class Racing(LocalStore):
    """A store in which someone else bumps the object each of the first `races` commits write, just before."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races
        self.commits = 0

    async def txn(self, ops: list[Op]) -> TxnResult:
        self.commits += 1
        if self.races > 0:
            self.races -= 1
            op: Any = ops[0]
            cur = await self.get(op["kind"], op["object"]["id"])
            await super().txn([t.update(op["kind"], {**cur, "bumped": cur.get("bumped", 0) + 1})])
        return await super().txn(ops)


def authority(store: LocalStore) -> CertificateAuthority:
    return CertificateAuthority(CASettings(), store=store)


async def _seed_holder(store: LocalStore) -> None:
    await LocalStore.txn(store, [t.create(Kind.CA, core.holder_record(None, "n1", {"agent": "old"}))])


def test_a_holder_record_that_loses_races_is_written_from_a_fresh_read() -> None:
    async def go() -> tuple[dict[str, Any], int]:
        store = Racing(races=3)
        await _seed_holder(store)
        await authority(store)._record("n1", {"gateway": "new"})
        return await store.get(Kind.CA, core.holder_id("n1")), store.commits
    holder, commits = asyncio.run(go())
    assert holder["issuers"] == {"agent": "old", "gateway": "new"} and holder["bumped"] == 3
    assert commits == 4


def test_a_holder_record_that_keeps_losing_is_a_503_after_ten_attempts() -> None:
    async def go() -> tuple[Unavailable, dict[str, Any], int]:
        store = Racing(races=100)
        await _seed_holder(store)
        with pytest.raises(Unavailable) as info:
            await authority(store)._record("n1", {"gateway": "new"})
        return info.value, await store.get(Kind.CA, core.holder_id("n1")), store.commits
    err, holder, commits = asyncio.run(go())
    assert err.status == 503 and err.message == "ca: could not record the certificates of node n1; retry"
    assert commits == 10 and holder["issuers"] == {"agent": "old"}


def test_an_unchanged_holder_record_commits_nothing() -> None:
    async def go() -> int:
        store = Racing(races=0)
        await _seed_holder(store)
        await authority(store)._record("n1", {"agent": "old"})
        return store.commits
    assert asyncio.run(go()) == 0


def test_a_token_rotation_that_keeps_losing_is_a_503_after_five_attempts() -> None:
    async def go() -> tuple[Unavailable, dict[str, Any], int]:
        store = Racing(races=100)
        await LocalStore.txn(store, [t.create(Kind.CA, {"id": core.CA_OBJECT_ID,
                                                         "tokens": {"worker": "w0", "manager": "m0"}})])
        with pytest.raises(Unavailable) as info:
            await authority(store).rotate("worker")
        return info.value, await store.get(Kind.CA, core.CA_OBJECT_ID), store.commits
    err, obj, commits = asyncio.run(go())
    assert err.status == 503 and err.message == "ca: the ca object kept changing; retry the rotation"
    assert commits == 5 and obj["tokens"] == {"worker": "w0", "manager": "m0"}
