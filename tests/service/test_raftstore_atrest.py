"""Encryption at rest with a real member (WAL, snapshots and compaction on disk): a known random value never
appears in any file of its data or certificate directories; a data-key rotation re-encrypts everything and
forgets the old key; tampered data refuses to start."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import shutil
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from services.raftstore import atrest, locked
from services.raftstore.app import create_app
from services.raftstore.fsm import encode_txn
from services.raftstore.member import UNLOCK_ID, UNLOCK_KIND, Member
from services.raftstore.settings import RaftstoreSettings
from services.raftstore.wal import WalCorrupt
from shoal import lockbox
from shoal.bus.memory import MemoryBus
from shoal.cli import main as cli_main
from shoal.clock import FakeClock
from shoal.store import txn as t
from shoal.store.client import StoreClient
from shoal.transport import Credentials, CredentialsLocked
from tests.integration.raftprocs import ClusterCerts, free_ports
from tests.specs import service_spec

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
async def running(settings: RaftstoreSettings, certs: ClusterCerts,
                  unlock: str | None = None) -> AsyncIterator[tuple[Member, StoreClient]]:
    member = Member(settings, certs.member(1), rng=random.Random(1),
                    unlock_key=atrest.parse_unlock_key(unlock) if unlock else None)
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
        # (any payload will do: secrets proper are written by the gateway's identity only)
        await client.txn([t.create("service", {"id": "s1", "spec": service_spec("pw", labels={"pw": secret})})])
        for i in range(60):  # past the snapshot interval: snapshots and compactions happen
            spec = service_spec(f"x{i}", labels={"v": secret})
            await client.txn([t.create("service", {"id": f"x{i}", "spec": spec})])
        assert member.driver.storage.snapshot().index > 0 and member.driver.storage.first_index() > 1
    async with running(settings, certs) as (_, client):  # restarts and reads it back
        assert (await client.get("service", "s1"))["spec"]["labels"]["pw"] == secret
    assert files_holding(tmp_path, secret.encode()) == []
    assert files_holding(tmp_path, b"x59") == []  # not a word of the plaintext either


async def test_a_rotated_data_key_re_encrypts_everything_and_the_old_key_is_forgotten(
        tmp_path: Path, certs: ClusterCerts) -> None:
    settings = settings_for(tmp_path)
    async with running(settings, certs) as (member, client):
        for i in range(30):
            await client.txn([t.create("service", {"id": f"a{i}", "spec": service_spec(f"a{i}")})])
        member.rotate_data_key()
        for _ in range(200):
            if member.keys.deks.keys() == {2}:
                break
            await asyncio.sleep(0.02)
        assert member.keys.deks.keys() == {2}
        await client.txn([t.create("service", {"id": "after", "spec": service_spec("after")})])
    async with running(settings, certs) as (_, client):  # everything opens under key 2 alone
        assert len((await client.list("service"))[1]) == 31


async def test_a_tampered_wal_refuses_to_start_and_says_where(tmp_path: Path, certs: ClusterCerts) -> None:
    settings = settings_for(tmp_path)
    async with running(settings, certs) as (_, client):
        await client.txn([t.create("service", {"id": "a", "spec": service_spec("a")})])
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
        await client.txn([t.create("service", {"id": "a", "spec": service_spec("a")})])
        member.keys.set_autolock(atrest.parse_unlock_key(key))
    with pytest.raises(atrest.Locked):
        Member(settings, certs.member(1))
    with pytest.raises(atrest.WrongKey):
        Member(settings, certs.member(1), unlock_key=atrest.parse_unlock_key(atrest.new_unlock_key()))
    m = Member(settings, certs.member(1), unlock_key=atrest.parse_unlock_key(key))
    assert m.driver.fsm is not None
    m.wal.close()


async def set_unlock_key(member: Member, key: str | None) -> None:
    """What the CA does (kind `ca` is the CA's alone, so not through the API here): put or delete the key."""
    op = (t.delete(UNLOCK_KIND, UNLOCK_ID) if key is None else
          t.update(UNLOCK_KIND, {"id": UNLOCK_ID, "key": key}) if member.driver.fsm.mem.find(UNLOCK_KIND, UNLOCK_ID)
          else t.create(UNLOCK_KIND, {"id": UNLOCK_ID, "key": key}))
    txn = {"ops": [op], "time": 1000.0}
    await member.driver.propose(encode_txn(txn), parsed=txn)


async def wait_for(cond: Callable[[], bool]) -> None:
    for _ in range(250):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_the_cluster_unlock_key_wraps_the_keys_rotates_the_dek_and_locks_restarts(
        tmp_path: Path, certs: ClusterCerts) -> None:
    settings = settings_for(tmp_path)
    kek_file = certs.member(1).dir / atrest.KEK_FILE
    first, second = atrest.new_unlock_key(), atrest.new_unlock_key()
    async with running(settings, certs) as (member, client):
        await client.txn([t.create("service", {"id": "a", "spec": service_spec("a")})])
        assert kek_file.exists() and member.keys.mode == atrest.KEK_FILE_MODE
        await set_unlock_key(member, first)
        await wait_for(lambda: member.keys.deks.keys() == {2})  # the DEK rotated, everything re-encrypted
        assert member.keys.mode == atrest.KEK_AUTOLOCK and not kek_file.exists()
    with pytest.raises(atrest.Locked):
        Member(settings, certs.member(1))
    async with running(settings, certs, unlock=first) as (member, client):
        assert (await client.get("service", "a"))["id"] == "a"
        await set_unlock_key(member, second)  # rotation of the unlock key: re-wrapped, same DEK
        await wait_for(lambda: member.keys.kek == atrest.parse_unlock_key(second))
    with pytest.raises(atrest.WrongKey):
        Member(settings, certs.member(1), unlock_key=atrest.parse_unlock_key(first))
    async with running(settings, certs, unlock=second) as (member, _):
        await set_unlock_key(member, None)  # autolock off: a KEK file again
        await wait_for(lambda: member.keys.mode == atrest.KEK_FILE_MODE)
    async with running(settings, certs) as (_, client):
        assert (await client.get("service", "a"))["id"] == "a"
    assert kek_file.exists()


def test_the_locked_api_counts_wrong_keys_and_opens_with_the_right_one(tmp_path: Path,
                                                                     certs: ClusterCerts) -> None:
    settings = settings_for(tmp_path)
    key = atrest.new_unlock_key()
    keys = atrest.DataKeys.load(settings.data_dir, certs.member(1).dir)
    keys.set_autolock(atrest.parse_unlock_key(key))
    opened: list[Member] = []

    def open_member(k: bytes) -> Member:
        m = Member(settings, certs.member(1), unlock_key=k)
        opened.append(m)
        return m

    unlocker = locked.member_unlocker(open_member)
    with TestClient(locked.create_app(unlocker)) as http:
        r = http.get("/healthz")
        assert r.status_code == 503 and r.json()["code"] == "locked" and r.json()["locked"] is True
        assert http.post("/v1/unlock", json={"key": "SWMKEY-1-nope"}).status_code == 400
        assert http.post("/v1/unlock", content=b"not json").status_code == 400
        r = http.post("/v1/unlock", json={"key": atrest.new_unlock_key()})
        assert r.status_code == 401 and r.json()["code"] == "wrong_unlock_key" and r.json()["failed_unlocks"] == 1
        assert key not in r.text
        assert http.get("/readyz").json()["failed_unlocks"] == 1 and not opened
        r = http.post("/v1/txn", json={"ops": []})
        assert r.status_code == 503 and r.json()["code"] == "locked"
        assert http.get("/v1/status").json() == {"id": 0, "role": "locked", "locked": True, "failed_unlocks": 1}
        r = http.post("/v1/unlock", json={"key": key})
        assert r.status_code == 200 and unlocker.unlocked.is_set() and unlocker.opened is opened[0]
    opened[0].wal.close()


async def test_the_locked_socket_is_private_and_a_too_long_path_is_refused(tmp_path: Path) -> None:
    cert_dir = tmp_path / "c"
    cert_dir.mkdir(mode=0o700)
    sock = locked.bind_socket(locked.socket_path(cert_dir))
    try:
        assert stat.S_IMODE(os.stat(locked.socket_path(cert_dir)).st_mode) == 0o600
    finally:
        sock.close()
    with pytest.raises(lockbox.SocketUnusable, match="longer than"):
        locked.bind_socket(tmp_path / ("x" * 120) / locked.SOCKET_NAME)


async def test_shoal_swarm_unlock_sends_the_key_from_stdin_to_the_locked_members(
        tmp_path: Path, certs: ClusterCerts, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Over the member's local socket (`<data>/certificates/<process>/unlock.sock`): no TLS, as its TLS key is
    encrypted under the unlock key, and no admin bundle is needed — reaching the socket is the authority."""
    settings = settings_for(tmp_path)
    key = atrest.new_unlock_key()
    cert_dir = tmp_path / "certificates" / "raftstore-1"
    shutil.copytree(certs.member(1).dir, cert_dir)
    keys = atrest.DataKeys.load(settings.data_dir, cert_dir)
    keys.set_autolock(atrest.parse_unlock_key(key), creds=keys.open_credentials(cert_dir))
    with pytest.raises(CredentialsLocked):
        Credentials(cert_dir)

    def open_member(k: bytes) -> Member:
        opened = atrest.DataKeys.load(settings.data_dir, cert_dir, k)
        return Member(settings, opened.open_credentials(cert_dir), keys=opened)

    waiting = asyncio.create_task(locked.wait_for_unlock(cert_dir, open_member, 1))
    await wait_for(lambda: locked.socket_path(cert_dir).exists())
    member = None
    try:
        monkeypatch.setattr("sys.stdin", io.StringIO(atrest.new_unlock_key() + "\n"))
        code = await asyncio.to_thread(cli_main, ["swarm", "unlock", "--data-dir", str(tmp_path)])
        assert code == 1 and "not the unlock key" in capsys.readouterr().err
        monkeypatch.setattr("sys.stdin", io.StringIO(key + "\n"))
        code = await asyncio.to_thread(cli_main, ["swarm", "unlock", "--data-dir", str(tmp_path)])
        assert code == 0 and "unlocked 1" in capsys.readouterr().out
        member = await asyncio.wait_for(waiting, 10)
        # (this store holds no ca/unlock-key object, so the member then follows its state to autolock off)
        assert not locked.socket_path(cert_dir).exists()  # the socket goes with the lock
        monkeypatch.setattr("sys.stdin", io.StringIO(key + "\n"))
        code = await asyncio.to_thread(cli_main, ["swarm", "unlock", "--data-dir", str(tmp_path)])
        assert code == 1 and "nothing to unlock" in capsys.readouterr().err
    finally:
        if not waiting.done():
            waiting.cancel()
        if member is not None:
            member.wal.close()
