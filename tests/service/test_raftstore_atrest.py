"""Encryption at rest with a real member (WAL, snapshots and compaction on disk): a known random value never
appears in any file of its data or certificate directories; a data-key rotation re-encrypts everything and
forgets the old key; tampered data refuses to start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.raftstore import atrest
from services.raftstore.app import create_app
from services.raftstore.member import Member
from services.raftstore.settings import RaftstoreSettings
from services.raftstore.wal import WalCorrupt
from shoal.bus.memory import MemoryBus
from shoal.clock import FakeClock
from shoal.store import txn as t
from shoal.store.client import StoreClient
from tests.integration.raftprocs import ClusterCerts, free_ports

pytestmark = pytest.mark.timeout(60)


def settings_for(tmp: Path) -> RaftstoreSettings:
    api, peer = free_ports(2)
    return RaftstoreSettings(raft_id=1, raft_members=f"1=https://127.0.0.1:{api},127.0.0.1:{peer},node-1",
                             data_dir=tmp / "data", raft_tick=0.02, nats_url="", snapshot_interval=20,
                             snapshot_tail=5)


@pytest.fixture
def certs(tmp_path: Path) -> ClusterCerts:
    return ClusterCerts(tmp_path)


@contextlib.asynccontextmanager
async def running(settings: RaftstoreSettings, certs: ClusterCerts) -> AsyncIterator[tuple[Member, StoreClient]]:
    member = Member(settings, certs.member(1), rng=random.Random(1))
    app = create_app(member.settings, member, MemoryBus(), clock=FakeClock(1000.0))
    async with app.router.lifespan_context(app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://store")
        try:
            for _ in range(200):
                if member.driver.is_leader:
                    break
                await asyncio.sleep(0.01)
            yield member, StoreClient(["http://store"], client=http, retry_for=2.0)
        finally:
            await http.aclose()


def files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_a_secret_value_is_in_no_file_after_writes_snapshots_compaction_and_restarts(
        tmp_path: Path, certs: ClusterCerts) -> None:
    secret = os.urandom(16).hex()
    settings = settings_for(tmp_path)
    async with running(settings, certs) as (member, client):
        await client.txn([t.create("secret", {"id": "s1", "spec": {"name": "pw"}, "data": secret})])
        for i in range(60):  # past the snapshot interval: snapshots and compactions happen
            await client.txn([t.create("service", {"id": f"x{i}", "spec": {"name": f"x{i}", "v": secret}})])
        assert member.driver.storage.snapshot().index > 0 and member.driver.storage.first_index() > 1
    async with running(settings, certs) as (_, client):  # restarts and reads it back
        assert (await client.get("secret", "s1"))["data"] == secret
    assert files_holding(tmp_path, secret.encode()) == []
    assert files_holding(tmp_path, b"x59") == []  # not a word of the plaintext either


async def test_a_rotated_data_key_re_encrypts_everything_and_the_old_key_is_forgotten(
        tmp_path: Path, certs: ClusterCerts) -> None:
    settings = settings_for(tmp_path)
    async with running(settings, certs) as (member, client):
        for i in range(30):
            await client.txn([t.create("service", {"id": f"a{i}", "spec": {"name": f"a{i}"}})])
        member.rotate_data_key()
        for _ in range(200):
            if member.keys.deks.keys() == {2}:
                break
            await asyncio.sleep(0.02)
        assert member.keys.deks.keys() == {2}
        await client.txn([t.create("service", {"id": "after", "spec": {"name": "after"}})])
    async with running(settings, certs) as (_, client):  # everything opens under key 2 alone
        assert len((await client.list("service"))[1]) == 31


async def test_a_tampered_wal_refuses_to_start_and_says_where(tmp_path: Path, certs: ClusterCerts) -> None:
    settings = settings_for(tmp_path)
    async with running(settings, certs) as (_, client):
        await client.txn([t.create("service", {"id": "a", "spec": {"name": "a"}})])
    path = settings.data_dir / "wal.log"
    buf = bytearray(path.read_bytes())
    buf[40] ^= 0x01  # inside the first record
    path.write_bytes(bytes(buf))
    with pytest.raises(WalCorrupt, match=f"wal: {path}: .*offset 12"):
        Member(settings, certs.member(1))


async def test_an_autolocked_member_will_not_start_without_its_key(tmp_path: Path, certs: ClusterCerts) -> None:
    settings = settings_for(tmp_path)
    key = atrest.new_unlock_key()
    async with running(settings, certs) as (member, client):
        await client.txn([t.create("service", {"id": "a", "spec": {"name": "a"}})])
        member.keys.set_autolock(atrest.parse_unlock_key(key))
    with pytest.raises(atrest.Locked):
        Member(settings, certs.member(1))
    with pytest.raises(atrest.WrongKey):
        Member(settings, certs.member(1), unlock_key=atrest.parse_unlock_key(atrest.new_unlock_key()))
    m = Member(settings, certs.member(1), unlock_key=atrest.parse_unlock_key(key))
    assert m.driver.fsm is not None
    m.wal.close()
