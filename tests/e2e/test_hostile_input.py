"""Issue 16, the fast part of the hostile-input suite on a real `shoal up` cluster (mutual TLS everywhere):
hostile specs, a write straight to the raftstore that skips the gateway, bodies over the limit, a flood of
connections that never send a request, unknown routes and cluster updates without a version — and afterwards
every process alive with no restarts, the cluster converging a service, logs small and files private."""

from __future__ import annotations

import socket
import ssl
import stat
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shoal import transport
from tests.e2e.harness import Cluster, items

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture
def cluster(shared: Cluster) -> Iterator[Cluster]:
    """The session's shared cluster (tests/e2e/conftest.py), its heartbeat period put back after the test (which
    changes it)."""
    period = shared.http.get("/v1/cluster").json()["spec"]["dispatcher"]["heartbeat_period"]
    yield shared
    shared.cli("cluster", "update", "--heartbeat-period", f"{period:g}s")


PROC = {"process": {"command": ["sleep", "300"]}}
HOSTILE_SPECS: list[tuple[dict[str, Any], str]] = [
    ({"name": "h", "mode": {"replicated": {"replicas": "3"}}, "task": PROC}, "replicas"),
    ({"name": "h", "mode": {"replicated": {"replicas": 2**63 - 1}}, "task": PROC}, "replicas"),
    ({"name": "h", "task": {**PROC, "resources": {"limits": {"memory_bytes": 10**30}}}}, "memory_bytes"),
    ({"name": "h", "task": {**PROC, "restart": {"delay": 1e308}}}, "restart.delay"),
    ({"name": "h", "task": {"process": {"command": ["sleep", "3\u00000"]}}}, "NUL"),
    ({"name": "h", "task": {"process": {"command": ["x"], "env": {"A=B": "1"}}}}, "environment variable name"),
    ({"name": "h", "labels": {"a": "b\nc"}, "task": PROC}, "control characters"),
]


def test_hostile_input_is_refused_and_the_cluster_keeps_working(cluster: Cluster) -> None:
    http = cluster.http
    # unknown routes and refusals: {message, code}
    r = http.get("/v1/no-such-thing")
    assert r.status_code == 404 and r.json() == {"message": "Not Found", "code": "not_found"}
    for spec, word in HOSTILE_SPECS:
        r = http.post("/v1/services", json=spec)
        assert r.status_code == 400 and word in r.json()["message"] and r.json()["code"] == "invalid_argument", \
            (spec, r.text)
    r = http.post("/v1/networks", json={"name": "everything", "ipam": {"subnet": "0.0.0.0/0"}})
    assert r.status_code == 400 and "too large" in r.json()["message"]

    # a body over the limit is refused before it is read whole
    r = http.post("/v1/services", content=b"{" + b" " * (5 * 1024 * 1024) + b"}",
                  headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"

    # the store refuses what the gateway would refuse, whoever writes (here: a manager's identity)
    url = cluster.layout.store_members[0]
    r = cluster.manager_http.post(url + "/v1/txn", json={"ops": [
        {"op": "create", "kind": "service", "object": {"id": "x" * 25, "spec": {"name": "raw"}}}]}, timeout=10)
    assert r.status_code == 400 and "spec.task" in r.json()["message"], r.text
    assert http.get("/v1/services").status_code == 200

    # the cluster object changes only at the version read
    r = http.patch("/v1/cluster", json={"dispatcher": {"heartbeat_period": "2s"}})
    assert r.status_code == 400 and "version" in r.json()["message"]
    r = http.patch("/v1/cluster", json={"version": 0, "dispatcher": {"heartbeat_period": "1ms"}})
    assert r.status_code == 400 and "heartbeat_period" in r.json()["message"]
    cluster.cli("cluster", "update", "--heartbeat-period", "2s")
    assert http.get("/v1/cluster").json()["spec"]["dispatcher"]["heartbeat_period"] == 2.0

    # 300 connections that complete TLS and never send a request: real requests are still served at once
    creds = transport.Credentials.client_bundle(cluster.layout.client_dir)
    ctx: ssl.SSLContext = creds.context("peer-client")
    host, port = "127.0.0.1", int(cluster.layout.gateway_url.rsplit(":", 1)[1])
    idle = []
    for _ in range(300):
        s = ctx.wrap_socket(socket.create_connection((host, port), timeout=5), server_hostname=host)
        idle.append(s)
    t0 = time.monotonic()
    assert http.get("/v1/services").status_code == 200
    assert time.monotonic() - t0 < 2.0
    for s in idle:
        s.close()

    # afterwards: the cluster converges a service, nothing restarted, logs small, files private
    cluster.create_service("after", 2)
    cluster.wait_running("after", 2)
    restarted = {name: c.restarts for name, c in cluster.sup.children.items() if c.restarts}
    assert restarted == {}, restarted
    logs = list(cluster.sup.log_dir.glob("*.log"))
    assert logs and sum(p.stat().st_size for p in logs) < 5 * 1024 * 1024
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in logs} == {"0o600"}
    raft_dirs = [p for p in cluster.layout.data_dir.rglob("*") if p.is_dir() and "raft" in p.name]
    assert raft_dirs and all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in raft_dirs)
    assert len(items(http.get("/v1/services").json())) == 1
