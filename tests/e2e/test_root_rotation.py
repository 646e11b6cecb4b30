"""Root CA rotation and node removal on a real `shoal up` cluster over mutual TLS.

Rotation (SwarmKit's TestSuccessfulRootRotation): with an agent down, `shoal swarm ca --rotate` makes a new
root; every running process renews onto it (nats-server included) while the tasks keep running; the rotation
waits for the down agent, which comes back trusting only the old root, renews, and the rotation finishes.

Removal: after `shoal node rm`, the removed node's agent certificate is refused by the dispatcher, the CA
(renewal), the raftstore and the gateway — each with the revocation message, not merely a role refusal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shoal import enroll, pki, transport
from tests.e2e.harness import Cluster, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def cert_dirs(c: Cluster) -> dict[str, Path]:
    dirs = {d.name: d for d in c.layout.cert_root.iterdir() if d.is_dir()}
    dirs.update({f"agent-{i}": c.layout.cert_dir(f"agent-{i}") for i in range(1, c.layout.agents + 1)})
    return dirs


def on_root(d: Path, root: bytes) -> bool:
    return pki.issued_by(pki.load_cert((d / pki.CERT_FILE).read_bytes()), pki.load_cert(root))


@pytest.mark.soak  # ~20 s: the CI run (SHOAL_SOAK=1) has it; the rotation itself is in the default tier
def test_root_rotation_converges_after_a_down_agent_returns(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_ROOT_POLL", "1")  # the supervisor's nats-server renewal runs in this process
    c = Cluster(tmp_path / "shoal", agents=2)
    c.layout.extra_env["SHOAL_ROOT_POLL"] = "1"
    try:
        c.start()
        c.create_service("web", 2)
        up_node = transport.Credentials(c.layout.cert_dir("agent-1")).identity.node_id
        pids = {t["status"]["pid"] for t in c.wait_running("web", 2) if t.get("node_id") == up_node}
        assert pids
        old_token = c.http.get("/v1/swarm/join-tokens").json()["worker"]
        down_node = pki.identity_of(pki.load_cert((c.layout.cert_dir("agent-2") / pki.CERT_FILE).read_bytes()))
        c.sup.stop_process("agent-2")

        out = c.cli("swarm", "ca", "--rotate", "--detach").stdout
        assert "Root rotation started" in out and "Admin bundle" in out, out
        status = c.http.get("/v1/swarm/ca").json()
        new_root = status["root_cert"].encode()
        assert status["rotating"]
        assert c.http.get("/v1/swarm/join-tokens").json()["worker"] != old_token  # the digest changed

        dirs = cert_dirs(c)
        up = {name: d for name, d in dirs.items() if name != "agent-2"}

        def all_up_renewed() -> bool | None:
            left = [name for name, d in up.items() if not on_root(d, new_root)]
            assert not left, f"still on the old root: {left}"  # (eventually retries; the last is reported)
            return True
        eventually(all_up_renewed, 90, "every running process renewed onto the new root")
        assert not on_root(dirs["agent-2"], new_root)
        pending = eventually(lambda: c.http.get("/v1/swarm/ca").json()["pending"] or None, 30, "pending")
        assert pending == [{"node_id": down_node.node_id, "component": "agent"}], pending
        assert c.http.get("/v1/swarm/ca").json()["rotating"]  # held by the node that is down
        assert down_node.node_id in c.cli("swarm", "ca").stdout
        assert pids <= {t["status"]["pid"] for t in c.running("web")}, "tasks were restarted"

        c.sup.start_process("agent-2")  # trusts only the old root; renews through the cross-signed root
        eventually(lambda: not c.http.get("/v1/swarm/ca").json()["rotating"] or None, 90, "rotation finished")
        assert on_root(dirs["agent-2"], new_root)
        roots = pki.load_certs(eventually(
            lambda: (dirs["agent-1"] / pki.ROOT_FILE).read_bytes()
            if len(pki.load_certs((dirs["agent-1"] / pki.ROOT_FILE).read_bytes())) == 1 else None,
            30, "the old root dropped from agent-1's root file"))
        assert roots == [pki.load_cert(new_root)]
        eventually(lambda: all(n["status"]["state"] == "ready" for n in c.nodes()) or None, 30, "nodes ready")
        # `shoal swarm ca` after the rotation: the admin bundle it renewed trusts only the new root now.
        assert "no rotation in progress" in c.cli("swarm", "ca").stdout
        assert len(pki.load_certs((c.layout.client_dir / "ca.pem").read_bytes())) == 1
        assert "web" in c.cli("service", "ls").stdout
        c.scale("web", 4)
        c.wait_running("web", 4, timeout=60)
    finally:
        c.stop()


def test_a_removed_nodes_certificate_is_refused_everywhere(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "shoal", agents=2)
    try:
        c.start()
        agent_dir = c.layout.cert_dir("agent-1")
        node_id = transport.Credentials(agent_dir).identity.node_id
        c.sup.stop_process("agent-1")
        c.cli("node", "rm", "--force", node_id)
        creds = transport.Credentials(agent_dir)
        urls = {"dispatcher": c.layout.url_of("dispatcher") + "/v1/sessions",
                "raftstore": c.layout.url_of("raftstore-1") + "/v1/status",
                "gateway": c.layout.gateway_url + "/v1/nodes"}
        with transport.sync_http_client(creds, timeout=5.0) as http:
            def refused() -> dict[str, str] | None:
                got = {}
                for name, url in urls.items():
                    r = http.post(url, json={}) if name == "dispatcher" else http.get(url)
                    if r.status_code != 403 or "removed from the cluster" not in r.json().get("message", ""):
                        return None
                    got[name] = r.json()["message"]
                return got
            eventually(refused, 20, "the removed node's certificate refused by dispatcher, raftstore, gateway")
        with pytest.raises(enroll.CAUnavailable, match="removed from the cluster"):
            asyncio.run(enroll.renew(creds, c.layout.ca_urls()))
        # A node that was not removed still gets through (the refusal is the revocation, not a broken setup).
        other = transport.Credentials(c.layout.cert_dir("agent-2"))
        with transport.sync_http_client(other, timeout=5.0) as http:
            assert http.post(c.layout.url_of("dispatcher") + "/v1/sessions", json={}).status_code != 403
    finally:
        c.stop()
