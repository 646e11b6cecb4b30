"""Secure by default on a real `shoal up` cluster: every listening socket of every cluster process refuses
plaintext and TLS clients without a certificate (found by asking the kernel, so a new port cannot slip
through; the CA's join path and the gateway's dashboard login answer such a client, with 401 for all else);
a worker's certificate reaches neither the public API nor the store; a join needs the right token."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from shoal import pki, transport
from tests.e2e.harness import Cluster, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture
def cluster(shared: Cluster) -> Cluster:
    """The session's shared cluster (tests/e2e/conftest.py): this module only creates its own objects and reads."""
    return shared


def listening_ports(pids: set[int]) -> dict[int, int]:
    """port -> pid for every TCP socket the given processes listen on."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    ports: dict[int, int] = {}
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 6:
            continue
        port = int(cols[3].rsplit(":", 1)[1])
        for pid in (int(p) for p in re.findall(r"pid=(\d+)", line)):
            if pid in pids:
                ports[port] = pid
    return ports


def plaintext_answered(port: int) -> bool:
    """True if the port answered an HTTP request (or a NATS client) in plaintext."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.settimeout(3)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data = s.recv(4096)
        except (OSError, TimeoutError):
            return False
    if data.startswith(b"INFO "):  # nats-server speaks first: it must demand TLS
        return b'"tls_required":true' not in data.replace(b" ", b"")
    return data.startswith(b"HTTP/")


def certless_tls_answered(port: int, roots: Path, path: str = "/healthz") -> int | None:
    """The HTTP status a TLS client without a certificate gets (None when the connection is refused)."""
    ctx = ssl.create_default_context(cafile=str(roots))
    ctx.check_hostname = False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.settimeout(3)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = s.recv(4096)
    except (OSError, ssl.SSLError, TimeoutError):
        return None
    m = re.match(rb"HTTP/1\.[01] (\d+)", data)
    return int(m.group(1)) if m else None


def test_every_listening_socket_refuses_plaintext_and_certless_tls(cluster: Cluster) -> None:
    pids = {c.pid for c in cluster.sup.children.values() if c.pid}
    ports = listening_ports(pids)
    names = {c.pid: n for n, c in cluster.sup.children.items()}
    # every process listens somewhere, raft members twice (API and peers)
    assert len(ports) >= len(pids) + cluster.layout.raft_members, ports
    roots = cluster.layout.client_dir / "ca.pem"
    ca_port = cluster.layout.port_of("ca")
    gateway_port = int(cluster.layout.gateway_url.rsplit(":", 1)[1])
    for port, pid in sorted(ports.items()):
        who = f"{names[pid]} on port {port}"
        assert not plaintext_answered(port), f"{who} answered plaintext"
        status = certless_tls_answered(port, roots)
        if port == ca_port:
            assert status == 401, f"{who}: a caller without a certificate reaches only the join path ({status})"
        elif port == gateway_port:  # the dashboard's login path is open (a browser has no certificate)
            for path in ("/healthz", "/v1/services", "/ui/", "/ui/stream", "/ui/login?token=guess"):
                status = certless_tls_answered(port, roots, path)
                assert status == 401, f"{who}: a caller without a certificate or a session reached {path} ({status})"
        else:
            assert status is None, f"{who} served a TLS client without a certificate ({status})"


def test_a_worker_certificate_reaches_neither_the_api_nor_the_store(cluster: Cluster) -> None:
    worker = transport.Credentials(cluster.layout.cert_dir("agent-1"))
    assert worker.identity.role == pki.WORKER
    with transport.sync_http_client(worker, timeout=5) as http:
        r = http.get(cluster.layout.gateway_url + "/v1/services")
        assert r.status_code == 403, r.text
        for url in cluster.layout.store_members:
            r = http.get(url + "/v1/objects/service")
            assert r.status_code == 403, r.text
            r = http.post(url + "/v1/txn", json={"ops": []})
            assert r.status_code == 403, r.text


def test_a_manager_component_is_not_an_admin(cluster: Cluster) -> None:
    with transport.sync_http_client(transport.Credentials(cluster.layout.cert_dir("scheduler")), timeout=5) as http:
        assert http.get(cluster.layout.gateway_url + "/v1/services").status_code == 403


def test_join_needs_the_right_token(cluster: Cluster) -> None:
    ca_url = cluster.layout.url_of("ca")
    good = (cluster.layout.cert_root / "worker-token").read_text().strip()
    ctx = ssl.create_default_context(cafile=str(cluster.layout.client_dir / "ca.pem"))
    csr = pki.make_csr(pki.new_key()).decode()
    with httpx.Client(verify=ctx, timeout=10) as http:
        wrong = good[:-25] + pki.new_token_secret()
        r = http.post(ca_url + "/v1/join", json={"token": wrong, "csrs": {"agent": csr}})
        assert r.status_code in (401, 403), r.text
        assert "token" in r.json()["message"]
        r = http.post(ca_url + "/v1/join", json={"token": "SWMTKN-1-nope", "csrs": {"agent": csr}})
        assert r.status_code == 400, r.text
        r = http.post(ca_url + "/v1/join", json={"token": good, "csrs": {"gateway": csr}})
        assert r.status_code in (400, 403), "a worker token cannot buy a manager component: " + r.text
        r = http.post(ca_url + "/v1/join", json={"token": good, "csrs": {"agent": csr}})
        assert r.status_code == 200, r.text
        cert = pki.load_cert(r.json()["certificates"]["agent"].encode())
        assert pki.identity_of(cert).role == pki.WORKER


def test_shoal_env_prints_the_bundle(cluster: Cluster) -> None:
    out = cluster.cli("env", "--data-dir", str(cluster.layout.data_dir)).stdout
    assert f"SHOAL_URL={cluster.layout.gateway_url}" in out
    assert f"SHOAL_CERT_PATH={cluster.layout.client_dir}" in out
    assert "DOCKER_TLS_VERIFY=1" in out


def serials(c: Cluster) -> dict[str, int]:
    """The serial number of every process's certificate, by its directory."""
    dirs = [d for d in c.layout.cert_root.iterdir() if d.is_dir()]
    dirs += [c.layout.cert_dir(f"agent-{i}") for i in range(1, c.layout.agents + 1)]
    return {d.name if d.parent == c.layout.cert_root else d.parent.name:
            pki.load_cert((d / pki.CERT_FILE).read_bytes()).serial_number for d in dirs}


@pytest.mark.soak  # ~40 s on 2 cores: the CI run (SHOAL_SOAK=1) has it; single renewals are in the default tier
def test_every_certificate_renews_without_interrupting_tasks_or_sessions(tmp_path: Path) -> None:
    """45-second certificates (init's and the CA's): every process, nats-server included, renews its own at
    50-80 % of the lifetime; the tasks keep their processes, the node stays READY, and new requests work."""
    c = Cluster(tmp_path / "shoal", agents=1)
    c.layout.cert_lifetime = 45
    c.layout.extra_env["SHOAL_TEST_CERT_EXPIRY"] = "45"
    try:
        c.start()
        c.create_service("web", 2)
        pids = sorted(t["status"]["pid"] for t in c.wait_running("web", 2))
        first = serials(c)
        assert set(first) >= {"nats", "ca", "gateway", "dispatcher", "raftstore-1", "agent-1"}, first

        def all_renewed() -> dict[str, int] | None:
            now = serials(c)
            return now if all(now[k] != first[k] for k in first) else None
        eventually(all_renewed, 120, "every certificate renewed at least once")
        assert sorted(t["status"]["pid"] for t in c.wait_running("web", 2)) == pids, "tasks were restarted"
        assert all(n["status"]["state"] == "ready" for n in c.nodes())
        c.scale("web", 3)  # new connections everywhere (gateway -> store -> dispatcher -> agent) still work
        c.wait_running("web", 3, timeout=60)
    finally:
        c.stop()
