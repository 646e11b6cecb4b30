"""Encryption at rest with a real member (WAL, snapshots and compaction on disk): a known random value never
appears in any file of its data or certificate directories; a data-key rotation re-encrypts everything and
forgets the old key; tampered data refuses to start."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
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
from shoal import pki
from shoal.bus.memory import MemoryBus
from shoal.cli import main as cli_main
from shoal.clock import FakeClock
from shoal.store import txn as t
from shoal.store.client import StoreClient
from tests.integration.raftprocs import ClusterCerts, free_ports
from tests.service.tls_servers import TLSServer
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

    unlocker = locked.Unlocker(open_member)
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
        assert r.status_code == 503 and r.json()["code"] == "unavailable"  # store clients try another member
        assert http.get("/v1/status").json() == {"id": 0, "role": "locked", "locked": True, "failed_unlocks": 1}
        r = http.post("/v1/unlock", json={"key": key})
        assert r.status_code == 200 and unlocker.unlocked.is_set() and unlocker.member is opened[0]
    opened[0].wal.close()


def test_the_locked_policy_serves_unlock_to_admins_and_health_to_managers(certs: ClusterCerts) -> None:
    admin = certs.client("admin", role=pki.ADMIN).identity
    manager = certs.client("gateway").identity
    worker = certs.client("agent", role=pki.WORKER).identity
    assert locked.policy(admin, "POST", "/v1/unlock") is None
    assert locked.policy(manager, "GET", "/healthz") is None and locked.policy(admin, "GET", "/readyz") is None
    assert locked.policy(manager, "GET", "/v1/status") is None
    assert "only an admin" in (locked.policy(manager, "POST", "/v1/unlock") or "")
    assert locked.policy(worker, "GET", "/healthz") is not None and locked.policy(worker, "POST", "/v1/unlock")
    assert locked.policy(admin, "POST", "/v1/txn") is not None
    assert locked.policy(manager, "POST", "/v1/txn") is None  # reaches the app, which answers 503


async def test_shoal_swarm_unlock_sends_the_key_from_stdin_to_the_locked_members(
        tmp_path: Path, certs: ClusterCerts, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(tmp_path)
    key = atrest.new_unlock_key()
    atrest.DataKeys.load(settings.data_dir, certs.member(1).dir).set_autolock(atrest.parse_unlock_key(key))
    unlocker = locked.Unlocker(lambda k: Member(settings, certs.member(1), unlock_key=k))
    server = await TLSServer(locked.create_app(unlocker), certs.member(1), locked.policy).start()
    admin = certs.client("admin", role=pki.ADMIN).dir
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for src, dst in ((pki.ROOT_FILE, "ca.pem"), (pki.CERT_FILE, "cert.pem"), (pki.KEY_FILE, "key.pem")):
        (bundle / dst).write_bytes((admin / src).read_bytes())
    monkeypatch.setenv("SHOAL_CERT_PATH", str(bundle))
    (tmp_path / "supervisor.json").write_text(json.dumps({"store_members": [server.url]}))
    try:
        monkeypatch.setattr("sys.stdin", io.StringIO(atrest.new_unlock_key() + "\n"))
        code = await asyncio.to_thread(cli_main, ["swarm", "unlock", "--data-dir", str(tmp_path)])
        assert code == 1 and "not the unlock key" in capsys.readouterr().err and unlocker.failed == 1
        monkeypatch.setattr("sys.stdin", io.StringIO(key + "\n"))
        code = await asyncio.to_thread(cli_main, ["swarm", "unlock", "--data-dir", str(tmp_path)])
        assert code == 0 and "unlocked 1" in capsys.readouterr().out and unlocker.member is not None
    finally:
        await server.stop()
        if unlocker.member is not None:
            unlocker.member.wal.close()
