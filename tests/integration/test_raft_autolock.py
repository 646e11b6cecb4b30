"""Autolock and encryption at rest with real member processes over mutual TLS: the CA puts an unlock key in
the store, every member re-wraps its data keys and its TLS key under it; a member killed with SIGKILL comes back
locked — no TLS port at all, only its local unlock socket — refuses a wrong key (counted), and with the right one
rejoins and catches up. No file of any member holds a value written to the store, nor a member's TLS key in the
clear."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.raftstore import atrest, locked
from services.raftstore.atrest import DataKeys
from shoal import keyfile, pki, unlockkey
from shoal.transport import Credentials, TransportError, sync_http_client
from tests.e2e.harness import eventually
from tests.integration.raftprocs import RaftProcs, running_raft

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RaftProcs]:
    yield from running_raft(tmp_path, 3)


def txn(op: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"ops": [{"op": op, "kind": kind, "object": obj}]}


def write(http: httpx.Client, url: str, body: dict[str, Any]) -> None:
    r = http.post(url + "/v1/txn", json=body)
    assert r.status_code == 200, r.text


def keys_mode(cluster: RaftProcs, i: int) -> str:
    return str(json.loads((cluster.data_dir(i) / "keys.json").read_text())["kek"])


def key_file(cluster: RaftProcs, i: int) -> Path:
    return cluster.certs.member_dir(i) / pki.KEY_FILE


def local(cluster: RaftProcs, i: int) -> httpx.Client:
    """The member's unlock socket, as `shoal swarm unlock` on its machine reaches it."""
    sock = locked.socket_path(cluster.certs.member_dir(i))
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://locked", timeout=30)


def locked_now(cluster: RaftProcs, i: int) -> bool:
    if not locked.socket_path(cluster.certs.member_dir(i)).exists():
        return False
    try:
        with local(cluster, i) as http:
            r = http.get("/healthz")
    except httpx.HTTPError:
        return False
    return r.status_code == 503 and r.json()["code"] == "locked"


def tls_refused(cluster: RaftProcs, i: int) -> bool:
    try:
        cluster.http.get(cluster.url(i) + "/healthz")
    except httpx.HTTPError:
        return True
    return False


def test_a_killed_autolocked_member_is_locked_until_unlocked_then_catches_up(cluster: RaftProcs) -> None:
    secret = os.urandom(16).hex()
    key = unlockkey.new()
    lead = cluster.wait_leader(15)
    plain_keys = {i: key_file(cluster, i).read_bytes() for i in cluster.ids}
    with sync_http_client(cluster.certs.client("ca"), timeout=10) as ca, \
            sync_http_client(cluster.certs.client("gateway"), timeout=10) as gw:
        write(gw, cluster.url(lead), txn("create", "config", {"id": "c1", "data": secret}))
        write(ca, cluster.url(lead), txn("create", unlockkey.KIND, {"id": unlockkey.OBJECT_ID, "key": key}))
        # keys.json is rewritten first, then the TLS key, and the old KEK file is removed last (a crash in
        # between is finished at the next start): wait for all three
        eventually(lambda: all(keys_mode(cluster, i) == "autolock"
                               and keyfile.is_encrypted(key_file(cluster, i).read_bytes())
                               and not (cluster.certs.member_dir(i) / "swarm-node.kek").exists()
                               for i in cluster.ids), 20,
                   "every member to wrap its data keys and TLS key under the unlock key and drop its KEK file")
        write(gw, cluster.url(lead), txn("create", "config", {"id": "c1b", "data": "after"}))  # still serving

        victim = next(i for i in cluster.ids if i != lead)
        cluster.kill(victim)
        write(gw, cluster.url(lead), txn("create", "config", {"id": "c2", "data": "while-down"}))
        cluster.start(victim)

        eventually(lambda: locked_now(cluster, victim), 30, "the restarted member to say it is locked")
        sock = locked.socket_path(cluster.certs.member_dir(victim))
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        # serving nothing of the store, to anyone: no TLS port (its key is encrypted), so clients move on
        assert tls_refused(cluster, victim)
        with local(cluster, victim) as http:
            assert http.post("/v1/unlock", json={"key": "nonsense"}).status_code == 400
            r = http.post("/v1/unlock", json={"key": unlockkey.new()})
            assert r.status_code == 401 and r.json()["failed_unlocks"] == 1
            r = http.get("/v1/objects/config/c1")
            assert r.status_code == 503 and secret not in r.text
            assert http.get("/v1/status").json() == {"id": victim, "role": "locked", "locked": True,
                                                     "failed_unlocks": 1}
            assert tls_refused(cluster, victim)
            t0 = time.monotonic()
            r = http.post("/v1/unlock", json={"key": key})
            assert r.status_code == 200, r.text
        url = cluster.url(victim)

        def caught_up() -> bool:
            try:
                r = ca.get(url + "/v1/objects/config/c2", params={"stale": "1"})
            except httpx.HTTPError:
                return False
            return r.status_code == 200 and r.json()["data"] == "while-down"

        eventually(caught_up, 30, "the unlocked member to rejoin and catch up")
        print(f"unlocked member caught up {time.monotonic() - t0:.2f} s after the unlock")
        assert not sock.exists()
    cluster.stop_all()
    for path in cluster.base.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data, path
            for i, pem in plain_keys.items():  # no member's TLS key in the clear, anywhere (its PEM body lines)
                assert not any(line in data for line in pem.splitlines()[1:-1] if len(line) > 40), (i, path)


def test_a_member_down_during_a_key_rotation_unlocks_with_the_old_key_then_follows_the_new(
        cluster: RaftProcs) -> None:
    old, new = unlockkey.new(), unlockkey.new()
    lead = cluster.wait_leader(15)
    with sync_http_client(cluster.certs.client("ca"), timeout=10) as ca:
        write(ca, cluster.url(lead), txn("create", unlockkey.KIND, {"id": unlockkey.OBJECT_ID, "key": old}))
        eventually(lambda: all(keys_mode(cluster, i) == "autolock"
                               and keyfile.is_encrypted(key_file(cluster, i).read_bytes()) for i in cluster.ids),
                   20, "autolock everywhere")
        victim = next(i for i in cluster.ids if i != lead)
        cluster.kill(victim)
        current = ca.get(cluster.url(lead) + f"/v1/objects/{unlockkey.KIND}/{unlockkey.OBJECT_ID}").json()
        write(ca, cluster.url(lead), txn("update", unlockkey.KIND, {**current, "key": new}))  # rotated while down
        cluster.start(victim)
        eventually(lambda: locked_now(cluster, victim), 30, "the member to be locked")
        with local(cluster, victim) as http:
            assert http.post("/v1/unlock", json={"key": new}).status_code == 401  # its keys predate the rotation
            assert http.post("/v1/unlock", json={"key": old}).status_code == 200
        eventually(lambda: cluster.healthy(victim), 30, "the member to serve again")

        # it learned the new key from the log and re-wrapped its data keys and TLS key under it
        def wrapped_by_new() -> bool:
            try:
                DataKeys.load(cluster.data_dir(victim), cluster.certs.member_dir(victim), unlockkey.parse(new))
                Credentials(cluster.certs.member_dir(victim), kek=unlockkey.parse(new))
            except (atrest.WrongKey, TransportError):
                return False
            return True

        eventually(wrapped_by_new, 30, "the member to re-wrap its keys under the new key")
        cluster.kill(victim)
        cluster.start(victim)
        eventually(lambda: locked_now(cluster, victim), 30, "locked again")
        with local(cluster, victim) as http:
            assert http.post("/v1/unlock", json={"key": old}).status_code == 401
            assert http.post("/v1/unlock", json={"key": new}).status_code == 200
        eventually(lambda: cluster.healthy(victim), 30, "the member to serve again")
