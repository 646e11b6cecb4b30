"""The dashboard's pure parts and its hub: login tokens and sessions (single use, expiry, bounds, only digests
kept), the snapshot (counts per service and node, recent errors, raft lag, instances), the event feed, and the
hub's bounds — one snapshot build per interval whatever the number of browsers, one store list, at most
`max_clients` browsers, a browser that does not read is dropped, the builder stops after the last one left."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from services.gateway.policy import gateway_policy
from services.gateway.ui.feed import events_of
from services.gateway.ui.hub import DashboardBusy, DashboardHub
from services.gateway.ui.sessions import COOKIE_NAME, UI_SESSION_ROLE, UiSessions, cookie_value, set_cookie_header
from services.gateway.ui.snapshot import build_snapshot, raft_members
from shoal import pki
from shoal.models.kinds import Kind
from shoal.store import txn as t
from shoal.store.local import LocalStore
from shoal.store.txn import Change, Event


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ADMIN = pki.Identity(node_id="adm", role=pki.ADMIN, cluster_id="c1", component="admin", not_before=0,
                     not_after=0, serial=1)


# ---- sessions ------------------------------------------------------------------------------------------------
def test_a_token_is_redeemed_once_for_a_session_of_the_admin() -> None:
    clock = Clock()
    s = UiSessions("c1", clock=clock)
    token, expires = s.issue_token(ADMIN)
    assert expires == clock.now + 60 and len(token) >= 43  # 32 random bytes, url-safe
    login = s.redeem(token)
    assert login is not None and login.node_id == "adm" and login.session != token
    assert s.redeem(token) is None  # once
    who = s.identity(login.session)
    assert who is not None and who.role == UI_SESSION_ROLE and who.node_id == "adm" and who.cluster_id == "c1"
    header = set_cookie_header(login)
    assert header.startswith(f"{COOKIE_NAME}={login.session};")
    assert all(a in header for a in ("HttpOnly", "Secure", "SameSite=Strict", "Max-Age=28800"))


def test_tokens_are_fresh_random_and_only_their_digests_are_kept() -> None:
    s = UiSessions("c1")
    tokens = {s.issue_token(ADMIN)[0] for _ in range(50)}
    assert len(tokens) == 50
    kept = repr(vars(s))
    assert not any(tok in kept for tok in tokens)
    login = s.redeem(next(iter(tokens)))
    assert login is not None and login.session not in repr(vars(s))


def test_tokens_and_sessions_expire() -> None:
    clock = Clock()
    s = UiSessions("c1", clock=clock, token_ttl=10, session_ttl=100)
    token, _ = s.issue_token(ADMIN)
    clock.now += 10
    assert s.redeem(token) is None
    token, _ = s.issue_token(ADMIN)
    login = s.redeem(token)
    assert login is not None
    clock.now += 99
    assert s.identity(login.session) is not None
    clock.now += 1
    assert s.identity(login.session) is None
    assert s.counts == (0, 0)  # forgotten once found expired


def test_the_tables_are_bounded_oldest_first() -> None:
    s = UiSessions("c1", max_tokens=3, max_sessions=2)
    tokens = [s.issue_token(ADMIN)[0] for _ in range(5)]
    assert s.counts[0] == 3 and s.redeem(tokens[0]) is None
    sessions = [s.redeem(tok) for tok in tokens[2:]]
    assert all(x is not None for x in sessions) and s.counts == (0, 2)
    assert s.identity(sessions[0].session) is None  # type: ignore[union-attr]
    assert s.identity(sessions[2].session) is not None  # type: ignore[union-attr]


def test_garbage_is_no_credential_and_logout_ends_a_session() -> None:
    s = UiSessions("c1")
    for junk in ("", "x", "A" * 43, "../../etc"):
        assert s.redeem(junk) is None and s.identity(junk) is None
    login = s.redeem(s.issue_token(ADMIN)[0])
    assert login is not None
    scope = {"headers": [(b"cookie", f"theme=dark; {COOKIE_NAME}={login.session}".encode())]}
    assert cookie_value(scope, COOKIE_NAME) == login.session
    assert s.authenticate(scope) is not None
    assert s.logout(login.session) and s.authenticate(scope) is None
    assert s.authenticate({"headers": []}) is None


def test_a_session_identity_reads_the_dashboard_only() -> None:
    s = UiSessions("c1")
    login = s.redeem(s.issue_token(ADMIN)[0])
    assert login is not None
    who = s.identity(login.session)
    assert who is not None
    for path in ("/", "/ui", "/ui/", "/ui/stream", "/ui/static/app.js"):
        assert gateway_policy(who, "GET", path) is None
    for method, path in (("GET", "/v1/services"), ("POST", "/v1/ui/login"), ("GET", "/metrics"),
                         ("GET", "/_ping"), ("POST", "/ui/"), ("GET", "/uix"), ("GET", "/v1.41/info")):
        assert gateway_policy(who, method, path) is not None, (method, path)


# ---- snapshot ------------------------------------------------------------------------------------------------
def node(nid: str, host: str, state: str = "ready") -> dict[str, Any]:
    return {"id": nid, "role": "worker", "spec": {"availability": "active"}, "status": {"state": state},
            "description": {"hostname": host, "resources": {"nano_cpus": 2_000_000_000, "memory_bytes": 1 << 30}}}


def task(tid: str, svc: str, slot: int, state: str, node_id: str | None, ts: float, desired: str = "running",
         err: str | None = None) -> dict[str, Any]:
    return {"id": tid, "service_id": svc, "service_name": "web", "slot": slot, "node_id": node_id,
            "desired_state": desired, "status": {"state": state, "err": err, "message": "", "timestamp": ts}}


def test_the_snapshot_counts_services_nodes_and_tasks() -> None:
    svc = {"id": "s1", "spec": {"name": "web", "mode": {"replicated": {"replicas": 3}}},
           "update_status": {"state": "updating", "message": "1 of 3"}}
    tasks = [task("t1", "s1", 1, "running", "n1", 1.0), task("t2", "s1", 2, "running", "n2", 2.0),
             task("t3", "s1", 3, "pending", None, 3.0),
             task("t0", "s1", 1, "failed", "n1", 0.5, desired="shutdown", err="task: non-zero exit (137)")]
    lease = {"id": "scheduler", "holder": "scheduler-1", "term": 4, "expires_at": 2000.0}
    inst = [{"role": "scheduler", "instance": "scheduler-1", "host": "h", "port": 1, "last_seen": 999.0},
            {"role": "scheduler", "instance": "scheduler-2", "host": "h", "port": 2, "last_seen": 999.0}]
    snap = build_snapshot([node("n1", "a"), node("n2", "b", "down")], [svc], tasks, [lease], inst,
                          raft_members(None, []), 1000.0, revision=42)
    (web,) = snap["services"]
    assert (web["desired"], web["running"], web["update"]["state"]) == (3, 2, "updating")
    assert [e["name"] for e in web["errors"]] == ["web.1"] and "137" in web["errors"][0]["err"]
    assert web["errors"][0]["node"] == "a"
    assert [(n["hostname"], n["state"], n["tasks_running"], n["tasks"]) for n in snap["nodes"]] == [
        ("a", "ready", 1, 1), ("b", "down", 1, 1)]
    assert snap["tasks"]["by_state"] == {"failed": 1, "pending": 1, "running": 2}
    assert [t["name"] for t in snap["tasks"]["not_running"]] == ["web.3"]
    assert [(i["instance"], i["state"], i["term"]) for i in snap["instances"]] == [
        ("scheduler-1", "active", 4), ("scheduler-2", "standby", None)]
    assert snap["revision"] == 42
    json.dumps(snap)


def test_raft_lag_is_the_leaders_commit_minus_each_members_applied_index() -> None:
    members = [{"url": "u1", "reachable": True, "id": 1, "role": "leader", "leader": 1, "term": 3,
                "commit_index": 100, "applied_index": 100},
               {"url": "u2", "reachable": True, "id": 2, "role": "follower", "leader": 1, "term": 3,
                "commit_index": 97, "applied_index": 90},
               {"url": "u3", "reachable": False, "error": "refused"}]
    raft = raft_members({"leader": 1, "term": 3, "commit_index": 100}, members)
    assert (raft["leader"], raft["term"], raft["commit_index"]) == (1, 3, 100)
    assert [(m["role"], m["lag"]) for m in raft["members"]] == [("leader", 0), ("follower", 10),
                                                                ("unreachable", None)]


def test_the_feed_names_objects_and_leaves_leases_out() -> None:
    svc = {"id": "s1", "spec": {"name": "web"}, "meta": {"updated_at": 5.0}}
    tk = task("t1", "s1", 2, "failed", "n1", 6.0, err="boom")
    ev = Event(7, (Change("create", Kind.SERVICE, "s1", svc), Change("update", Kind.LEASE, "scheduler", {}),
                   Change("update", Kind.TASK, "t1", tk), Change("delete", Kind.NODE, "n1", node("n1", "a"))))
    out = events_of(ev, 9.0)
    assert [(e["kind"], e["action"], e["name"], e["rev"], e["time"]) for e in out] == [
        ("service", "create", "web", 7, 5.0), ("task", "update", "web.2", 7, 9.0), ("node", "delete", "a", 7, 9.0)]
    assert "boom" in out[1]["detail"]
    assert set(out[0]) >= {"rev", "time", "kind", "action", "id", "name", "actor"}
    assert out[0]["actor"] is None  # the store did not say who wrote it
    written = Event(8, (Change("update", Kind.SERVICE, "s1", svc),), 9.5, "gateway@node-1")
    assert events_of(written, 10.0)[0]["actor"] == "gateway@node-1"


# ---- hub -----------------------------------------------------------------------------------------------------
class CountingStore(LocalStore):
    def __init__(self) -> None:
        super().__init__()
        self.lists = 0
        self.watches = 0

    async def list(self, kind: str, **filters: Any) -> Any:
        self.lists += 1
        return await super().list(kind, **filters)

    async def watch(self, after: int, wait: float = 0.0, upto: int = 0) -> Any:
        self.watches += 1
        return await super().watch(after, wait)


def hub_of(store: LocalStore, **kw: Any) -> DashboardHub:
    async def raft() -> dict[str, Any]:
        return {"status": None, "members": []}

    return DashboardHub(store, raft_status=raft, instances=list, **{"interval": 0.05, **kw})


async def test_one_builder_serves_every_browser() -> None:
    store = CountingStore()
    hub = hub_of(store, max_clients=20)
    started = time.monotonic()
    browsers = [hub.subscribe() for _ in range(20)]
    await asyncio.sleep(0.5)
    await store.txn([t.create(Kind.SERVICE, {"id": "s1", "spec": {"name": "web", "mode": {
        "replicated": {"replicas": 1}}}})])
    await asyncio.sleep(0.3)
    ticks = (time.monotonic() - started) / 0.05
    # the store was listed once (4 kinds), watched and the snapshot built once per interval — not per browser
    assert store.lists == 4
    assert 3 <= hub.builds <= ticks + 2 and store.watches <= ticks + 2, (hub.builds, store.watches, ticks)
    assert hub.workloads == 2  # the listing, then the service: the one pass over the tasks is not per second
    for b in browsers:
        got = [m for m in list(b.items) if m]
        assert got[0].startswith(b"event: snapshot") and any(m.startswith(b"event: events") for m in got)
    await hub.stop()
    assert all(b.closed for b in browsers) and not hub.running


async def test_too_many_browsers_are_refused_and_a_slow_one_is_dropped() -> None:
    store = LocalStore()
    hub = hub_of(store, max_clients=2, queue_size=3)
    slow = hub.subscribe()
    hub.subscribe()
    with pytest.raises(DashboardBusy) as e:
        hub.subscribe()
    assert e.value.status == 503 and e.value.code == "ui_busy"
    for i in range(6):  # nobody reads `slow`: its outbox fills, and it is dropped, not grown
        await store.txn([t.create(Kind.SERVICE, {"id": f"s{i}", "spec": {"name": f"web{i}", "mode": {
            "replicated": {"replicas": 1}}}})])
        await asyncio.sleep(0.12)
    assert slow.overflowed and slow.closed and slow not in hub.browsers and hub.dropped >= 1
    assert len(slow.items) == 0
    hub.subscribe()  # its place is free again
    await hub.stop()
    with pytest.raises(DashboardBusy):
        hub.subscribe()


async def test_the_builder_stops_after_the_last_browser_left() -> None:
    hub = hub_of(LocalStore(), linger=0.2)
    b = hub.subscribe()
    await asyncio.sleep(0.1)
    assert hub.running
    hub.unsubscribe(b)
    await asyncio.sleep(0.6)
    assert not hub.running and hub.snapshot is None
    b = hub.subscribe()  # and starts again for the next one
    assert hub.running
    await hub.stop()


async def test_lease_renewals_do_not_recompute_the_tasks_view() -> None:
    store = LocalStore()
    hub = hub_of(store)
    hub.subscribe()
    await asyncio.sleep(0.2)
    lease = {"id": "scheduler", "holder": "scheduler-1", "term": 1, "expires_at": time.time() + 60}
    await store.txn([t.create(Kind.LEASE, lease)])
    for i in range(5):
        current = await store.get(Kind.LEASE, "scheduler")
        await store.txn([t.update(Kind.LEASE, {**current, "expires_at": time.time() + 60 + i})])
        await asyncio.sleep(0.06)
    await asyncio.sleep(0.2)
    assert hub.workloads == 1 and hub.builds >= 8, (hub.workloads, hub.builds)
    await store.txn([t.create(Kind.TASK, {"id": "t1", "service_id": "", "node_id": None, "slot": 0,
                                          "desired_state": "running", "status": {"state": "new"}})])
    await asyncio.sleep(0.2)
    assert hub.workloads == 2 and hub.snapshot is not None and hub.snapshot["tasks"]["total"] == 1
    await hub.stop()
