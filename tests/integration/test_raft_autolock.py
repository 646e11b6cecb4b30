"""Autolock and encryption at rest with real member processes over mutual TLS: the CA puts an unlock key in
the store, every member re-wraps its data keys under it; a member killed with SIGKILL comes back locked and
serves nothing of the store, refuses a wrong key (counted), and with the right one rejoins and catches up. No
file of any member holds a value written to the store."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.raftstore import atrest
from services.raftstore.atrest import DataKeys
from shoal import pki, unlockkey
from shoal.transport import sync_http_client
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


def test_a_killed_autolocked_member_is_locked_until_unlocked_then_catches_up(cluster: RaftProcs) -> None:
    secret = os.urandom(16).hex()
    key = unlockkey.new()
    lead = cluster.wait_leader(15)
    with sync_http_client(cluster.certs.client("ca"), timeout=10) as ca, \
            sync_http_client(cluster.certs.client("gateway"), timeout=10) as gw, \
            sync_http_client(cluster.certs.client("admin", pki.ADMIN), timeout=10) as admin:
        write(gw, cluster.url(lead), txn("create", "config", {"id": "c1", "data": secret}))
        write(ca, cluster.url(lead), txn("create", unlockkey.KIND, {"id": unlockkey.OBJECT_ID, "key": key}))
        # keys.json is rewritten first, the old KEK file removed after it (a crash in between is cleaned up at
        # the next start): wait for both
        eventually(lambda: all(keys_mode(cluster, i) == "autolock"
                               and not (cluster.certs.member_dir(i) / "swarm-node.kek").exists()
                               for i in cluster.ids), 20,
                   "every member to wrap its keys under the unlock key and drop its KEK file")

        victim = next(i for i in cluster.ids if i != lead)
        cluster.kill(victim)
        write(gw, cluster.url(lead), txn("create", "config", {"id": "c2", "data": "while-down"}))
        cluster.start(victim)
        url = cluster.url(victim)

        def locked() -> bool:
            try:
                r = cluster.http.get(url + "/healthz")
            except httpx.HTTPError:
                return False
            return r.status_code == 503 and r.json()["code"] == "locked"

        eventually(locked, 30, "the restarted member to say it is locked")
        # serving nothing of the store, to anyone: 503, so store clients move on to another member
        r = ca.get(url + "/v1/objects/config/c1")
        assert r.status_code == 503 and r.json()["code"] == "unavailable" and secret not in r.text
        assert admin.post(url + "/v1/unlock", json={"key": "nonsense"}).status_code == 400
        r = admin.post(url + "/v1/unlock", json={"key": unlockkey.new()})
        assert r.status_code == 401 and r.json()["failed_unlocks"] == 1
        assert cluster.http.post(url + "/v1/unlock", json={"key": key}).status_code == 403  # managers may not
        assert locked()
        status = cluster.http.get(url + "/v1/status").json()  # what `shoal cluster` shows for the member
        assert status == {"id": victim, "role": "locked", "locked": True, "failed_unlocks": 1}
        t0 = time.monotonic()
        r = admin.post(url + "/v1/unlock", json={"key": key})
        assert r.status_code == 200, r.text

        def caught_up() -> bool:
            try:
                r = ca.get(url + "/v1/objects/config/c2", params={"stale": "1"})
            except httpx.HTTPError:
                return False
            return r.status_code == 200 and r.json()["data"] == "while-down"

        eventually(caught_up, 30, "the unlocked member to rejoin and catch up")
        print(f"unlocked member caught up {time.monotonic() - t0:.2f} s after the unlock")
    cluster.stop_all()
    for path in cluster.base.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_a_member_down_during_a_key_rotation_unlocks_with_the_old_key_then_follows_the_new(
        cluster: RaftProcs) -> None:
    old, new = unlockkey.new(), unlockkey.new()
    lead = cluster.wait_leader(15)
    with sync_http_client(cluster.certs.client("ca"), timeout=10) as ca, \
            sync_http_client(cluster.certs.client("admin", pki.ADMIN), timeout=10) as admin:
        write(ca, cluster.url(lead), txn("create", unlockkey.KIND, {"id": unlockkey.OBJECT_ID, "key": old}))
        eventually(lambda: all(keys_mode(cluster, i) == "autolock" for i in cluster.ids), 20, "autolock everywhere")
        victim = next(i for i in cluster.ids if i != lead)
        cluster.kill(victim)
        current = ca.get(cluster.url(lead) + f"/v1/objects/{unlockkey.KIND}/{unlockkey.OBJECT_ID}").json()
        write(ca, cluster.url(lead), txn("update", unlockkey.KIND, {**current, "key": new}))  # rotated while down
        cluster.start(victim)
        url = cluster.url(victim)
        eventually(lambda: cluster.http.get(url + "/healthz").status_code == 503, 30, "the member to be locked")
        assert admin.post(url + "/v1/unlock", json={"key": new}).status_code == 401  # its keys predate the rotation
        assert admin.post(url + "/v1/unlock", json={"key": old}).status_code == 200
        eventually(lambda: cluster.healthy(victim), 30, "the member to serve again")
        # it learned the new key from the log and re-wrapped under it: the next restart needs the new key
        def wrapped_by_new() -> bool:
            try:
                DataKeys.load(cluster.data_dir(victim), cluster.certs.member_dir(victim), unlockkey.parse(new))
            except atrest.WrongKey:
                return False
            return True

        eventually(wrapped_by_new, 30, "the member to re-wrap its keys under the new key")
        cluster.kill(victim)
        cluster.start(victim)
        eventually(lambda: cluster.http.get(url + "/healthz").status_code == 503, 30, "locked again")
        assert admin.post(url + "/v1/unlock", json={"key": old}).status_code == 401
        assert admin.post(url + "/v1/unlock", json={"key": new}).status_code == 200
        eventually(lambda: cluster.healthy(victim), 30, "the member to serve again")
