"""Containers on an overlay network on real `shoal up` processes (docs/networking.md, "Containers on overlay
networks"): the allocator's subnet and addresses, the scheduler's placement, two agents advertising 127.0.0.2
and 127.0.0.3 on one Docker engine. A 2-replica busybox httpd service (one replica per node) and a client
container on the same network: the client fetches `http://web/` (the VIP: both replicas answer),
`http://tasks.web/`, and the replica on the other node by its allocated address (across VXLAN); the published
port answers on both nodes' addresses; removing the services removes every namespace and link the agents made.
Soak tier (SHOAL_SOAK=1)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import overlay_plan as plan
from tests.e2e.harness import Cluster, eventually

# about 2 minutes on a loaded machine (a whole cluster, image pulls of nothing, four containers): the soak tier;
# tests/docker/test_docker_overlay.py is the bounded variant of the default run (in-process dispatcher and agents)
pytestmark = [pytest.mark.docker, pytest.mark.soak, pytest.mark.timeout(240)]


@pytest.fixture
def docker_cluster(tmp_path: Path, task_image: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        if os.environ.get("SHOAL_REQUIRE_DOCKER") == "1":
            pytest.fail("SHOAL_REQUIRE_DOCKER=1 but not root: the overlay's kernel path needs it")
        pytest.skip("the overlay's kernel path needs root (namespaces, veths, VXLAN)")
    monkeypatch.setenv("SHOAL_EXECUTORS", "process,docker")  # what `shoal up` sets when an engine answers
    c = Cluster(tmp_path / "shoal")
    try:
        c.start()
        yield c
    finally:
        c.stop()


def sh(*argv: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def container_of(task_id: str) -> str:
    out = sh("docker", "ps", "-q", "--filter", f"label=shoal.task.id={task_id}").stdout.split()
    assert out, f"no container for task {task_id}"
    return out[0]


def fetch(container: str, url: str) -> str | None:
    """busybox wget inside the container (1.35's crashes with -T: the subprocess timeout bounds it)."""
    try:
        r = sh("docker", "exec", container, "wget", "-q", "-O", "-", url, timeout=8)
    except subprocess.TimeoutExpired:
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def http_get(addr: str, port: int) -> str | None:
    try:
        with socket.create_connection((addr, port), 3) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    return data.partition(b"\r\n\r\n")[2].decode().strip() or None


def test_containers_on_an_overlay_network(docker_cluster: Cluster, task_image: str) -> None:
    c = docker_cluster
    nodes = {n["id"]: n for n in c.nodes()}
    assert all("container" in n["description"]["executors"] for n in nodes.values()), nodes
    c.cli("network", "create", "ovl")
    net = c.http.get("/v1/networks/ovl").json()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve = ["sh", "-c", 'mkdir -p /www && echo "$SHOAL_TASK_ID" > /www/index.html; exec httpd -f -p 80 -h /www']
    r = c.http.post("/v1/services", json={
        "name": "web", "mode": {"replicated": {"replicas": 2}},
        "task": {"container": {"image": task_image, "command": serve, "init": True, "stop_grace_period": "1s"},
                 "networks": [{"target": "ovl"}], "placement": {"max_replicas": 1}},
        "endpoint": {"ports": [{"target_port": 80, "published_port": port}]}})
    assert r.status_code == 201, r.text
    r = c.http.post("/v1/services", json={
        "name": "client", "mode": {"replicated": {"replicas": 1}},
        "task": {"container": {"image": task_image, "command": ["sleep", "3600"], "init": True,
                               "stop_grace_period": "1s"},
                 "networks": [{"target": "ovl"}]}})
    assert r.status_code == 201, r.text
    web = c.wait_running("web", 2, timeout=90)
    [client] = c.wait_running("client", 1, timeout=60)
    assert len({t["node_id"] for t in web}) == 2, "one replica per node"
    ids = {t["id"] for t in web}
    addr_of = {t["id"]: t["networks"][-1]["addresses"][0].split("/")[0] for t in web}
    remote = next(t for t in web if t["node_id"] != client["node_id"])
    ct = container_of(client["id"])

    # the allocator's address on eth0, the VIP in /etc/hosts
    mine = next(a for a in client["networks"] if a["network_id"] == net["id"])["addresses"][0]
    assert mine in sh("docker", "exec", ct, "ip", "-o", "addr", "show", "eth0").stdout
    # across VXLAN: the replica on the other node by its allocated address
    assert eventually(lambda: fetch(ct, f"http://{addr_of[remote['id']]}/"), 40,
                      "the remote replica by its address") == remote["id"]
    # the VIP: both replicas answer
    seen: set[str] = set()

    def both() -> bool:
        answer = fetch(ct, "http://web/")
        if answer:
            seen.add(answer)
        return seen == ids
    eventually(both, 60, "both replicas behind the VIP")
    assert eventually(lambda: fetch(ct, "http://tasks.web/"), 30, "tasks.web") in ids
    hosts = sh("docker", "exec", ct, "cat", "/etc/hosts").stdout
    assert all(f"{a}\ttasks.web" in hosts for a in addr_of.values()), hosts
    # the routing mesh on both nodes' addresses reaches the containers through the agents' host forwarders
    for a in (c.layout.agent_addr(1), c.layout.agent_addr(2)):
        assert eventually(lambda a=a: http_get(a, port), 30, f"the published port on {a}") in ids

    # removing the services removes every namespace (with its bridge and VXLAN) and veth the agents made
    names = [plan.ns_name(n, net["id"]) for n in nodes]
    assert any(n in sh("ip", "netns", "list").stdout for n in names)
    for name in ("web", "client"):
        assert c.http.delete(f"/v1/services/{name}").status_code in (200, 204)

    def clean() -> Any:
        netns = sh("ip", "netns", "list").stdout
        links = [x for x in sh("ip", "-o", "link", "show").stdout.splitlines() if f": {plan.PREFIX}" in x]
        return not any(n in netns for n in names) and not links
    eventually(clean, 60, "no namespace or link left")
