"""A container task never lands on a node without the `container` runtime: on a `shoal up` cluster whose agents
run only the process executor (no Docker needed), a container service's tasks stay pending with the reason,
while a process service beside it runs."""

from __future__ import annotations

import pytest

from tests.e2e.harness import Cluster, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def cluster(shared: Cluster) -> Cluster:
    """The session's shared cluster (tests/e2e/conftest.py): this module only creates its own objects and reads."""
    return shared


def test_container_tasks_wait_for_a_node_with_the_container_runtime(cluster: Cluster) -> None:
    assert all(n["description"]["executors"] == ["process"] for n in cluster.nodes())
    spec = {"name": "boxed", "mode": {"replicated": {"replicas": 2}},
            "task": {"container": {"image": "busybox", "command": ["sleep", "60"]}}}
    r = cluster.http.post("/v1/services", json=spec)
    assert r.status_code == 201, r.text
    cluster.create_service("plain", 1)
    cluster.wait_running("plain", 1)

    def pending() -> list[dict[str, object]] | None:
        tasks = cluster.tasks("boxed")
        ok = len(tasks) == 2 and all(t["status"]["state"] == "pending" and t.get("node_id") is None
                                     and "container" in str(t["status"].get("err")) for t in tasks)
        return tasks if ok else None

    eventually(pending, 30, "both container tasks pending, naming the missing runtime")
