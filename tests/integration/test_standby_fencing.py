"""Standbys with fencing, on a real local cluster (every process of `shoal up`, plus a second orchestrator and a
second scheduler): each role has one active instance; when the active one is frozen (SIGSTOP, as a long GC
pause or a partition would), the standby takes over within about two seconds and acts; the frozen ex-active's
write — caught in flight and delivered only after the takeover — carries its old fence and the store refuses
it; resumed (SIGCONT), the ex-active commits nothing and stands down. `GET /v1/cluster` lists both instances of
each role and which one is active.

Each orchestrator reaches the store through its own small recording proxy (in this test process), which can
hold the next write that touches anything but the lease: that is how a write is made to be in flight exactly
while its sender is frozen."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shoal import transport
from shoal.child import ProcSpec
from shoal.supervisor import Layout
from tests.e2e.harness import Cluster, eventually, pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TAKEOVER_TARGET = 2.0  # seconds from the active instance's death to the standby holding the lease
TOLERANCE = 0.5  # measurement (50 ms polls through the gateway) and a loaded CI machine
ORCHESTRATORS = {"orchestrator": "orchestrator-1", "orchestrator-b": "orchestrator-b"}  # process -> instance


class StoreProxy:
    """Forwards every request to a raftstore member (members forward writes to their leader) and records
    transactions; once `hold_next()` is called, the next transaction with a non-lease op waits for
    `release()` before it is forwarded. It terminates TLS with a manager certificate and forwards with the
    orchestrator's own, so the store sees the orchestrator as the caller."""

    def __init__(self, member: str = "") -> None:
        self.member = member  # may be set later, before the first request
        self.txns: list[dict[str, Any]] = []  # {"ops", "status", "body"} in arrival order
        self._hold = threading.Event()
        self._release = threading.Event()
        self.held = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._client_creds: transport.Credentials | None = None

    def start(self, server_creds: transport.Credentials, client_creds: transport.Credentials) -> None:
        self._client_creds = client_creds
        app = Starlette(routes=[Route("/{path:path}", self._forward, methods=["GET", "POST", "PUT", "DELETE"])])
        self._server = uvicorn.Server(transport.server_config(app, "127.0.0.1", 0, server_creds,
                                                              lambda *_: None, lifespan="off"))
        server = self._server
        self._thread = threading.Thread(target=lambda: server.run(sockets=[self._sock]), daemon=True)
        self._thread.start()

    def hold_next(self) -> None:
        self._release.clear()
        self.held.clear()
        self._hold.set()

    def release(self) -> None:
        self._release.set()

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        record: dict[str, Any] | None = None
        if request.url.path == "/v1/txn":
            ops = (await request.json()).get("ops") or []
            record = {"ops": ops}
            self.txns.append(record)
            if self._hold.is_set() and any(op.get("kind") != "lease" for op in ops):
                self._hold.clear()
                record["held"] = True
                self.held.set()
                while not self._release.is_set():
                    await asyncio.sleep(0.01)
        async with transport.http_client(self._client_creds, timeout=None) as http:
            resp = await http.request(request.method, self.member + request.url.path, params=request.query_params,
                                      content=body, headers={"content-type": request.headers.get("content-type",
                                                                                                 "")})
        if record is not None:
            record.update(status=resp.status_code, body=resp.text)
        return Response(resp.content, status_code=resp.status_code,
                        media_type=resp.headers.get("content-type"))

    def close(self) -> None:
        self._release.set()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)


class StandbyLayout(Layout):
    """`shoal up`'s processes plus a standby orchestrator and scheduler; each orchestrator talks to the store
    through its own proxy."""

    proxies: dict[str, StoreProxy] = {}

    def port_of(self, name: str) -> int:
        extra = {"orchestrator-b": 26, "scheduler-b": 27}
        return self.base_port + extra[name] if name in extra else super().port_of(name)

    def specs(self) -> list[ProcSpec]:
        specs = super().specs()
        common = next(s for s in specs if s.name == "orchestrator").env
        for name, module in (("orchestrator-b", "services.orchestrator"), ("scheduler-b", "services.scheduler")):
            env = {**common, "SHOAL_PORT": str(self.port_of(name)), "SHOAL_INSTANCE": ORCHESTRATORS.get(name, name)}
            specs.append(ProcSpec(name, [sys.executable, "-m", module], env, self.url_of(name) + "/healthz"))
        for s in specs:
            if s.name in self.proxies:
                s.env["SHOAL_STORE_MEMBERS"] = self.proxies[s.name].url
        return specs


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    # The proxies bind their ports first, so the cluster's port block (chosen next) cannot include them.
    proxies = {name: StoreProxy() for name in ORCHESTRATORS}
    c = Cluster(tmp_path / "shoal", agents=1)
    layout = StandbyLayout(c.layout.data_dir, base_port=c.layout.base_port, gateway_port=c.layout.gateway_port,
                           agents=1, heartbeat_period=1.0)
    for proxy in proxies.values():
        proxy.member = layout.raft_api(1)
    layout.proxies = proxies
    c.layout = c.sup.layout = layout
    c.sup.init()  # the identities exist before the proxies serve with them
    for proxy in proxies.values():
        proxy.start(transport.Credentials(layout.cert_dir("gateway")),
                    transport.Credentials(layout.cert_dir("orchestrator")))
    try:
        c.start()
        yield c
    finally:
        for child in c.sup.children.values():  # never leave a frozen process behind
            if child.pid and pid_alive(child.pid):
                os.kill(child.pid, signal.SIGCONT)
        c.stop()
        for proxy in layout.proxies.values():
            proxy.close()


def lease(cluster: Cluster, role: str) -> dict[str, Any]:
    body = cluster.http.get("/v1/cluster").json()
    return dict(next(x for x in body["subsystems"] if x["name"] == role))


def metric(cluster: Cluster, url: str, name: str) -> float:
    for line in cluster.manager_http.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(f"shoal_{name} "):
            return float(line.split()[1])
    return 0.0


def running_wanted(cluster: Cluster, service: str) -> int:
    return len([x for x in cluster.tasks(service) if x["desired_state"] == "running"])


def test_a_frozen_active_instance_is_replaced_and_its_fenced_write_refused(cluster: Cluster) -> None:
    # Both instances of each role are listed; exactly one of each is active.
    def listed() -> dict[str, list[dict[str, Any]]] | None:
        by_role: dict[str, list[dict[str, Any]]] = {}
        for x in cluster.http.get("/v1/cluster").json()["instances"]:
            by_role.setdefault(str(x["role"]), []).append(x)
        ok = all(len(by_role.get(r, [])) == 2 and sum(bool(x["active"]) for x in by_role[r]) == 1
                 for r in ("orchestrator", "scheduler"))
        return by_role if ok else None

    by_role = eventually(listed, 20, "two orchestrators and two schedulers listed, one active each")
    active = next(x["instance"] for x in by_role["orchestrator"] if x["active"])
    name = next(p for p, i in ORCHESTRATORS.items() if i == active)
    standby = next(i for i in ORCHESTRATORS.values() if i != active)
    proxy = cluster.layout.proxies[name]  # type: ignore[attr-defined]
    url = cluster.layout.url_of(name)

    cluster.create_service("web", 1)
    cluster.wait_running("web", 1)
    before = lease(cluster, "orchestrator")
    assert before["holder"] == active
    txns_before = metric(cluster, url, "txns_total")

    # The active orchestrator's next write (the task of a scale-up) is caught in flight; then it freezes.
    proxy.hold_next()
    cluster.scale("web", 2)
    eventually(proxy.held.is_set, 10, "the active orchestrator's write to be in flight")
    pid = cluster.sup.pid(name)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    after = eventually(lambda: (x := lease(cluster, "orchestrator"))["holder"] != before["holder"] and x, 10,
                       "the standby to take the lease", interval=0.05)
    takeover = time.monotonic() - frozen_at
    print(f"\norchestrator takeover after SIGSTOP: {takeover:.2f}s (term {before['term']} -> {after['term']})")
    assert after["holder"] == standby and after["term"] == before["term"] + 1
    assert takeover <= TAKEOVER_TARGET + TOLERANCE, f"takeover took {takeover:.2f}s"

    # The standby acts: the scale-up converges without the frozen one.
    cluster.wait_running("web", 2, timeout=30)

    # The frozen instance's write goes through now: it carries the old fence, and the store refuses it.
    proxy.release()
    held = eventually(lambda: next((x for x in proxy.txns if x.get("held") and "status" in x), None), 10,
                      "the held write to be answered")
    fence = held["ops"][0]
    assert fence["op"] == "check" and fence["kind"] == "lease" and fence["id"] == "orchestrator"
    assert fence["expect_fields"] == {"holder": before["holder"], "term": before["term"]}
    assert held["status"] == 409 and "precondition" in held["body"].lower(), held
    print(f"held write of the frozen ex-active refused: {held['status']} {held['body'][:160]}")

    # Resumed far past its lease, it commits nothing and stands down; the cluster keeps its state.
    os.kill(pid, signal.SIGCONT)
    eventually(lambda: cluster.manager_http.get(url + "/v1/status", timeout=5).json()["active"] is False, 10,
               "the resumed ex-active to stand down")
    time.sleep(1.5)
    assert metric(cluster, url, "txns_total") == txns_before, "the resumed ex-active committed a transaction"
    late = [x for x in proxy.txns[proxy.txns.index(held) + 1:] if any(op.get("kind") != "lease" for op in x["ops"])]
    assert all(x.get("status") != 200 for x in late), late
    assert lease(cluster, "orchestrator")["holder"] == standby
    assert running_wanted(cluster, "web") == 2
    cluster.wait_running("web", 2, timeout=10)
