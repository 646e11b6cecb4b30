"""Service logs end to end on a `shoal up` cluster: the agents answer log requests on their sessions, the
dispatcher brokers them, the gateway streams NDJSON (`/v1`), the CLI prints them, and the real `docker service
logs` reads the Docker stream format."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.harness import Cluster, eventually
from tests.e2e.test_docker_cli import docker, require_docker_client

pytestmark = pytest.mark.timeout(240)
PRINTER = ["/bin/sh", "-c", 'i=0; while true; do i=$((i+1)); echo "line-$i from $SHOAL_TASK_SLOT"; '
           'echo "err-$i" >&2; sleep 0.2; done']


@pytest.fixture
def cluster(shared: Cluster) -> Cluster:
    """The session's shared cluster (tests/e2e/conftest.py): this module only creates its own objects and reads."""
    return shared


def records(c: Cluster, path: str, **params: str) -> list[dict[str, object]]:
    resp = c.http.get(path, params=params, timeout=30)
    assert resp.status_code == 200, resp.text
    return [json.loads(ln) for ln in resp.text.splitlines() if ln.strip()]


def test_service_and_task_logs(cluster: Cluster) -> None:
    c = cluster
    c.create_service("talk", 2, command=PRINTER)
    tasks = c.wait_running("talk", 2)

    def both() -> list[dict[str, object]] | None:
        r = records(c, "/v1/services/talk/logs", tail="3")
        return r if len({x["task_id"] for x in r if x["stream"] == "stdout"}) == 2 else None

    got = eventually(both, 20, "lines of both tasks")
    per_task: dict[object, int] = {}
    for r in got:
        per_task[r["task_id"]] = per_task.get(r["task_id"], 0) + 1
        assert r["service_id"] == tasks[0]["service_id"] and r["node_id"]
    assert all(n <= 3 for n in per_task.values()), per_task  # tail is per task
    assert any(str(r["line"]).startswith("line-") for r in got)

    one = records(c, f"/v1/tasks/{tasks[0]['id']}/logs", tail="5")
    assert one and {r["task_id"] for r in one} == {tasks[0]["id"]}

    # follow: new lines keep coming until the client leaves
    with c.http.stream("GET", "/v1/services/talk/logs", params={"follow": "true", "tail": "0"},
                       timeout=30) as resp:
        seen = []
        for ln in resp.iter_lines():
            if ln.strip():
                seen.append(json.loads(ln))
            if len(seen) >= 6:
                break
    assert len({r["task_id"] for r in seen}) >= 1 and all(r["time"] > 0 for r in seen)

    bad = c.http.get("/v1/services/talk/logs", params={"tail": "many"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_argument"
    assert c.http.get("/v1/services/nope/logs").status_code == 404

    out = c.cli("service", "logs", "--tail", "2", "-t", "talk")
    lines = [ln for ln in out.stdout.splitlines() if "| line-" in ln]
    assert lines and all(ln.startswith("20") and "talk." in ln for ln in lines), out.stdout


def test_docker_service_logs(cluster: Cluster) -> None:
    require_docker_client()
    c = cluster
    c.create_service("chat", 1, command=PRINTER)
    c.wait_running("chat", 1)

    def shown() -> subprocess.CompletedProcess[str] | None:
        d = docker(c, "service", "logs", "--tail", "4", "chat")
        return d if "line-" in d.stdout else None

    out = eventually(shown, 20, "docker service logs to show lines")
    # a process task has one stream (its stderr goes to the same file): both show on stdout
    assert "chat.1." in out.stdout and "err-" in out.stdout, out.stdout + out.stderr
    ts = docker(c, "service", "logs", "-t", "--tail", "2", "--raw", "chat")
    assert ts.stdout.startswith("20"), ts.stdout
    # follow: the client keeps reading until it is stopped
    with pytest.raises(subprocess.TimeoutExpired) as exc:
        docker(c, "service", "logs", "-f", "--tail", "0", "chat", timeout=3)
    assert b"line-" in (exc.value.stdout or b"") or "line-" in str(exc.value.stdout or "")
    missing = docker(c, "service", "logs", "nope", check=False)
    assert missing.returncode != 0 and "no such task or service" in missing.stderr
