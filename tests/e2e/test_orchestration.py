"""Orchestration end to end on real `shoal up` processes (process runtime): a rolling update replaces every task,
one at a time, with processes that really run the new spec; a global service runs one task on each agent."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.harness import Cluster, eventually, pid_alive

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def cluster(shared: Cluster) -> Cluster:
    """The session's shared cluster (tests/e2e/conftest.py): this module only creates its own objects and reads."""
    return shared


def env_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [p.split(b"=", 1) for p in f.read().split(b"\0") if b"=" in p]
    return {k.decode(): v.decode() for k, v in pairs}


def service(cluster: Cluster, name: str) -> dict[str, Any]:
    r = cluster.http.get(f"/v1/services/{name}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_rolling_update_one_at_a_time_and_a_global_service_on_each_agent(cluster: Cluster) -> None:
    spec = {"name": "web", "mode": {"replicated": {"replicas": 3}},
            "task": {"process": {"command": ["sleep", "300"], "env": {"V": "1"}, "stop_grace_period": "1s"},
                     "restart": {"delay": "1s"}},
            "update_config": {"parallelism": 1, "monitor": "1s"}}
    r = cluster.http.post("/v1/services", json=spec)
    assert r.status_code == 201, r.text
    before = cluster.wait_running("web", 3, timeout=30)

    svc = service(cluster, "web")
    spec = {**svc["spec"], "task": {**svc["spec"]["task"], "process": {**svc["spec"]["task"]["process"],
                                                                       "env": {"V": "2"}}}}
    r = cluster.http.put("/v1/services/web", json={"version": svc["meta"]["version"], "spec": spec})
    assert r.status_code == 200, r.text
    version = r.json()["spec_version"]
    assert version == 2

    # One at a time: never more than one task of the new version on its way up.
    deadline = time.monotonic() + 45
    most_starting = 0
    while time.monotonic() < deadline:
        tasks = cluster.tasks("web")
        starting = [t for t in tasks if t["spec_version"] == version and t["desired_state"] in ("ready", "running")
                    and t["status"]["state"] != "running"]
        most_starting = max(most_starting, len(starting))
        if (service(cluster, "web").get("update_status") or {}).get("state") == "completed":
            break
        time.sleep(0.1)
    assert most_starting <= 1
    status = service(cluster, "web")["update_status"]
    assert status["state"] == "completed", status

    after = cluster.wait_running("web", 3, timeout=15)
    assert all(t["spec_version"] == version for t in after)
    assert not {t["id"] for t in after} & {t["id"] for t in before}  # every task was replaced
    assert all(env_of(t["status"]["pid"]).get("V") == "2" for t in after)  # really running the new spec
    eventually(lambda: not any(pid_alive(t["status"]["pid"]) for t in before), 15, "the old processes to exit")

    r = cluster.http.post("/v1/services", json={"name": "agentd", "mode": {"global": {}},
                                                "task": {"process": {"command": ["sleep", "300"]}}})
    assert r.status_code == 201, r.text
    nodes = {n["id"] for n in cluster.nodes()}
    assert len(nodes) == 2
    on_each = cluster.wait_running("agentd", 2, timeout=30)
    assert {t["node_id"] for t in on_each} == nodes
