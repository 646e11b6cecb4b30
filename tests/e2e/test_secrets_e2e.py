"""Issue 10's proof on a whole `shoal up` cluster (real processes, mutual TLS everywhere): a known random secret
value, after its creation, its use by a service on one of two agents, a restart of the whole cluster (`shoal
down`/`up` with the same data directory), snapshots and compactions, is in no byte of any file under the data
directory (WALs, snapshots, agents' state, every log) nor the agents' task-files directories once the service is
removed; it is never in what the orchestrator, allocator and scheduler read from the store's watch (their own
certificates, from the cluster's certificates directory) nor in `GET /v1/secrets`; a worker node with no task
that references it never receives it in its assignment stream; the task that references it reads it (and the
config) with the modes asked for."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent import payloads
from shoal import enroll, transport
from shoal.supervisor import Layout, Supervisor
from tests.e2e.harness import Cluster, eventually, items

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

WATCHERS = ("orchestrator", "allocator", "scheduler", "dispatcher")  # the dispatcher: the control, it may read


class StoreWatch(threading.Thread):
    """Follows the raftstore's /v1/watch with one component's certificate and keeps every byte it answered,
    across members and restarts (a member that does not answer is skipped; a compacted revision re-lists the
    secrets, which it keeps too, and follows on from the list's revision)."""

    def __init__(self, cluster: Cluster, component: str) -> None:
        super().__init__(name=f"watch-{component}", daemon=True)
        self.members = cluster.layout.store_members
        self.creds = transport.Credentials(cluster.layout.cert_dir(component))
        self.raw: list[bytes] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.revision = 0
        self.relists = 0

    def run(self) -> None:
        with transport.sync_http_client(self.creds, timeout=5.0) as http:
            i = 0
            while not self.stop.is_set():
                url = self.members[i % len(self.members)]
                try:
                    r = http.get(url + "/v1/watch", params={"after": self.revision, "wait": 1.0})
                except httpx.HTTPError as e:
                    self.errors.append(f"{url}: {type(e).__name__}")
                    i += 1
                    self.stop.wait(0.3)
                    continue
                self.raw.append(r.content)
                if r.status_code == 410:  # compacted past our revision (a restart, a snapshot): re-list, go on
                    r = http.get(url + "/v1/objects/secret")
                    self.raw.append(r.content)
                    if r.status_code == 200:
                        self.relists += 1
                        self.revision = int(r.json()["revision"])
                        continue
                if r.status_code != 200:  # locked or starting: another member
                    self.errors.append(f"{url}: {r.status_code}")
                    i += 1
                    self.stop.wait(0.3)
                    continue
                self.revision = max(self.revision, int(r.json()["revision"]))

    def seen(self) -> bytes:
        return b"".join(self.raw)


class Observer(threading.Thread):
    """A third worker node, joined with the worker token through the CA like an agent, that runs no tasks: it
    registers a session, heartbeats and keeps every byte of its assignment stream."""

    def __init__(self, cluster: Cluster, cert_dir: Path) -> None:
        super().__init__(name="observer", daemon=True)
        token = cluster.http.get("/v1/swarm/join-tokens").json()["worker"]
        self.identity = asyncio.run(enroll.join(cluster.layout.ca_urls(), token, cert_dir, hostname="observer",
                                             hosts=["127.0.0.1"]))
        self.creds = transport.Credentials(cert_dir)
        self.url = cluster.layout.url_of("dispatcher")
        self.raw: list[bytes] = []
        self.messages = 0
        self.stop = threading.Event()

    def run(self) -> None:
        desc = {"hostname": "observer", "executors": []}
        with transport.sync_http_client(self.creds, base_url=self.url, timeout=10.0) as http:
            while not self.stop.is_set():
                try:
                    sid = http.post("/v1/sessions", json={"description": desc}).json()["session_id"]
                    beat = threading.Thread(target=self._beat, args=(http, sid), daemon=True)
                    beat.start()
                    seq = 0
                    while not self.stop.is_set():
                        r = http.get(f"/v1/sessions/{sid}/assignments", params={"after": seq, "wait": 1.0})
                        if r.status_code != 200:
                            break
                        self.raw.append(r.content)
                        msg = r.json()
                        if msg.get("seq") is not None:
                            self.messages += 1
                            seq = int(msg["seq"])
                except (httpx.HTTPError, KeyError, ValueError):
                    self.stop.wait(0.5)

    def _beat(self, http: httpx.Client, sid: str) -> None:
        while not self.stop.is_set():
            try:
                if http.post(f"/v1/sessions/{sid}/heartbeat").status_code != 200:
                    return
            except httpx.HTTPError:
                return
            self.stop.wait(0.5)


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    """Every regular file under `root` whose bytes hold one of `needles`."""
    found = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                data = p.read_bytes()
            except OSError:
                continue
            found.extend(f"{p}: {n[:8]!r}…" for n in needles if n in data)
    return found


def task_files_dir(cluster: Cluster, agent: str) -> Path:
    """Where an agent of the cluster writes its tasks' files (the default: SHOAL_TASK_FILES_DIR is not set)."""
    return payloads.default_base(cluster.layout.data_dir / "agents" / agent, f"{Layout._hostname()}-{agent}")


def restart(cluster: Cluster) -> None:
    """`shoal down` then `shoal up` with the same data directory (and ports)."""
    cluster.sup.stop()
    cluster.sup = Supervisor(cluster.layout)
    cluster.start()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "shoal", agents=2)
    # snapshots (and the compaction of the log behind them) every 20 applied entries
    c.layout.extra_env.update({"SHOAL_SNAPSHOT_INTERVAL": "20", "SHOAL_SNAPSHOT_TAIL": "5"})
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_a_secret_reaches_only_its_task_and_no_file_log_or_foreign_stream(cluster: Cluster, tmp_path: Path) -> None:
    value = secrets.token_hex(24).encode()
    encoded = base64.b64encode(value)
    config = b"listen " + secrets.token_hex(8).encode() + b"\n"
    needles = [value, encoded]
    data = cluster.layout.data_dir
    hostnames = {n["description"]["hostname"]: n["id"] for n in cluster.nodes()}
    first = next(nid for host, nid in hostnames.items() if host.endswith("-agent-1"))
    other_files = task_files_dir(cluster, "agent-2")
    own_files = task_files_dir(cluster, "agent-1")

    watches = {c: StoreWatch(cluster, c) for c in WATCHERS}
    observer = Observer(cluster, tmp_path / "observer-certs")
    for th in [*watches.values(), observer]:
        th.start()
    try:
        made = cluster.cli("secret", "create", "db-password", "-", input=value.decode())
        secret_id = made.stdout.strip().splitlines()[-1]
        assert value not in made.stdout.encode() + made.stderr.encode()
        r = cluster.http.post("/v1/configs", json={"name": "app.conf", "data": base64.b64encode(config).decode()})
        assert r.status_code == 201, r.text

        out = tmp_path / "out"  # what the task read: the modes, the secret's digest (never the value), the config
        script = ('stat -c %a "$SHOAL_SECRETS_DIR/db-password" "$SHOAL_CONFIGS_DIR/etc/app.conf" > "$OUT.tmp";'
                  ' sha256sum < "$SHOAL_SECRETS_DIR/db-password" | cut -c1-64 >> "$OUT.tmp";'
                  ' cat "$SHOAL_CONFIGS_DIR/etc/app.conf" >> "$OUT.tmp"; mv "$OUT.tmp" "$OUT"; exec sleep 300')
        spec = {"name": "db", "mode": {"replicated": {"replicas": 1}},
                "task": {"process": {"command": ["sh", "-c", script], "env": {"OUT": str(out)},
                                     "stop_grace_period": "2s"},
                         "restart": {"condition": "any", "delay": "1s"},
                         "placement": {"constraints": [f"node.id=={first}"]},
                         "secrets": [{"source": "db-password", "mode": 0o440}],
                         "configs": [{"source": "app.conf", "target": "/etc/app.conf"}]}}
        r = cluster.http.post("/v1/services", json=spec)
        assert r.status_code == 201, r.text
        expected = ["440", "400", hashlib.sha256(value).hexdigest(), config.decode().strip()]

        def task_read_it() -> bool:
            (task,) = cluster.wait_running("db", 1, timeout=60)
            assert task["node_id"] == first
            return out.exists() and out.read_text().split("\n")[:4] == expected

        eventually(task_read_it, 60, "the task to read its secret (0440) and config (default 0400)")
        assert any(value in p.read_bytes() for p in own_files.rglob("*") if p.is_file())
        assert not other_files.exists() or not any(other_files.iterdir())

        restart(cluster)  # down and up, same data dir: the task starts again and gets its secret again
        out.unlink()
        eventually(task_read_it, 90, "the task, after shoal down/up, to read its secret again")

        for i in range(30):  # label updates: the raft log moves past several snapshots (data kept each time)
            r = cluster.http.put(f"/v1/secrets/{secret_id}",
                                 json={"version": cluster.http.get(f"/v1/secrets/{secret_id}").json()["meta"]
                                       ["version"], "labels": {"n": str(i)}})
            assert r.status_code == 200, r.text
            assert value not in r.content and encoded not in r.content
        eventually(lambda: len(sts := cluster.raft_status()) == 3 and all(
            s["snapshot_index"] > 0 and s["first_index"] > 1 for s in sts), 30, "snapshots and compactions")
        listed = cluster.http.get("/v1/secrets")
        one = cluster.http.get(f"/v1/secrets/{secret_id}")
        inspected = cluster.cli("secret", "inspect", "db-password").stdout.encode()
        assert listed.status_code == one.status_code == 200
        for answer in (listed.content, one.content, inspected):
            assert value not in answer and encoded not in answer and b'"data"' not in answer
        assert items(listed.json())[0]["spec"]["labels"] == {"n": "29"}

        cluster.cli("service", "rm", "db")
        eventually(lambda: not any(own_files.rglob("*")) if own_files.exists() else True, 30,
                   "the task's files to leave the node after service rm")
    finally:
        for th in [*watches.values(), observer]:
            th.stop.set()
        for th in [*watches.values(), observer]:
            th.join(10)

    for component in ("orchestrator", "allocator", "scheduler"):
        seen = watches[component].seen()
        assert secret_id.encode() in seen, f"{component}'s watch never saw the secret: the check would be empty"
        assert value not in seen and encoded not in seen, f"{component}'s watch stream carried the payload"
        # it followed on after the restart and through the snapshots: the last label update is there
        assert b'"n":"29"' in seen.replace(b" ", b""), (component, watches[component].errors[-5:])
    assert encoded in watches["dispatcher"].seen()  # the one reader that must have it (control)
    assert observer.messages > 0 and observer.identity.role == "swarm-worker"
    stream = b"".join(observer.raw)
    assert value not in stream and encoded not in stream and secret_id.encode() not in stream
    assert not other_files.exists() or not any(other_files.iterdir())

    cluster.sup.stop()  # every log flushed and closed; then every byte of every file
    assert (data / "raft" / "1" / "snapshot.bin").is_file() and (data / "logs" / "dispatcher.log").is_file()
    assert files_holding(data, needles) == []
    for d in (own_files, other_files):
        assert not d.exists() or files_holding(d, needles) == []
