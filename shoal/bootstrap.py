"""`init` for a machine's first manager: the cluster's root CA, the first manager's per-process identities, the
admin client bundle, the join tokens, and the one-time hand-over of the root key to the CA service.

What it writes under `certificates/` (directory 0700, keys and secrets 0600):
- `<process>/{swarm-node.crt, swarm-node.key, swarm-root-ca.crt}` for each process it starts;
- `cluster.json`: the cluster id and the node ids (nothing secret);
- `ca-bootstrap.json`: root certificate, root key and token secrets, read once by the CA service, which stores
  them in the store (kind `ca`) and deletes the file — after that the root key lives only in the store;
- `worker-token`: the worker join token, so the supervisor can start agents that join (readable by the same
  user that holds the admin bundle, which can read the token from the API anyway).
The admin bundle goes to `client/{ca.pem, cert.pem, key.pem}` (DOCKER_CERT_PATH layout)."""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shoal import pki
from shoal.certs import LOCAL_HOSTS, Signer
from shoal.ids import new_id

CA_BOOTSTRAP = "ca-bootstrap.json"
CLUSTER_FILE = "cluster.json"
WORKER_TOKEN_FILE = "worker-token"
MANAGER_PROCESSES = ("nats", "ca", "gateway", "orchestrator", "allocator", "scheduler", "dispatcher")


class BootstrapError(RuntimeError):
    """The data directory cannot be used as it is; the message says what to do."""


@dataclass(frozen=True)
class LocalIdentities:
    cluster_id: str
    manager_node: str
    raft_nodes: list[str]  # node id of raft member i+1
    worker_token: str


def read_local(cert_root: Path) -> LocalIdentities:
    try:
        info = json.loads((cert_root / CLUSTER_FILE).read_text())
    except (OSError, ValueError) as e:
        raise BootstrapError(f"bootstrap: {cert_root / CLUSTER_FILE} is missing or unreadable ({e}); the cluster "
                             "was not initialised") from None
    token_file = cert_root / WORKER_TOKEN_FILE
    token = token_file.read_text().strip() if token_file.is_file() else ""
    return LocalIdentities(str(info["cluster_id"]), str(info["manager_node"]),
                           [str(x) for x in info["raft_nodes"]], token)


def private_dirs(*dirs: Path) -> None:
    """Create `dirs` (and their parents) readable by this user only; existing ones are narrowed to 0700."""
    for private in dirs:
        private.mkdir(parents=True, exist_ok=True, mode=0o700)
        private.chmod(0o700)


def hand_over_ca(cert_root: Path, signer: Signer, holders: Mapping[str, list[str]]) -> tuple[str, str]:
    """Write `ca-bootstrap.json` (root certificate and key, fresh join-token secrets, and the certificates
    issued before the CA service ran: `holders` maps node id to components, so a root rotation waits for them
    too — the CA records the ones it issues itself) and return the (worker, manager) join tokens."""
    tokens = {"worker": pki.new_token_secret(), "manager": pki.new_token_secret()}
    pki.write_private(cert_root / CA_BOOTSTRAP, json.dumps({
        "cluster_id": signer.cluster_id, "root_cert": signer.root_pem.decode(), "root_key": signer.key_pem.decode(),
        "tokens": tokens, "holders": dict(holders)}).encode())
    return pki.make_token(signer.root, tokens["worker"]), pki.make_token(signer.root, tokens["manager"])


def init_local(data_dir: Path, cert_root: Path, client_dir: Path, *, raft_members: int,
               hosts: tuple[str, ...] = LOCAL_HOSTS, lifetime: dt.timedelta | None = None) -> LocalIdentities:
    """Initialise the cluster's identities once; later calls return what the first one made. A data directory
    from before certificates existed (raft data but no identities) is refused with what to do."""
    if (cert_root / CLUSTER_FILE).is_file():
        return read_local(cert_root)
    if (data_dir / "raft").exists():
        raise BootstrapError(
            f"bootstrap: {data_dir} holds a cluster made before shoal required certificates (raft data without "
            f"{cert_root}). Its members cannot be given identities in place: export what you need "
            "(`shoal service ls`), stop it, and start a new cluster with another --data-dir (or remove this one)")
    private_dirs(data_dir, cert_root)
    signer = Signer.new()
    if lifetime is not None:
        signer.lifetime = lifetime
    manager = new_id()
    raft_nodes = [manager, *(new_id() for _ in range(raft_members - 1))]
    all_hosts = tuple(dict.fromkeys((*hosts, *LOCAL_HOSTS)))
    for name in MANAGER_PROCESSES:
        signer.issue_dir(cert_root / name, node_id=manager, role=pki.MANAGER, component=name, hosts=all_hosts)
    for i, node in enumerate(raft_nodes, start=1):
        signer.issue_dir(cert_root / f"raftstore-{i}", node_id=node, role=pki.MANAGER, component="raftstore",
                         hosts=all_hosts)
    write_admin_bundle(signer, client_dir)
    holders: dict[str, list[str]] = {manager: list(MANAGER_PROCESSES)}
    for node in raft_nodes:
        holders.setdefault(node, []).append("raftstore")
    worker_token, _ = hand_over_ca(cert_root, signer, holders)
    pki.write_private(cert_root / WORKER_TOKEN_FILE, worker_token.encode())
    info = {"cluster_id": signer.cluster_id, "manager_node": manager, "raft_nodes": raft_nodes}
    pki.write_private(cert_root / CLUSTER_FILE, json.dumps(info, indent=2).encode())
    return LocalIdentities(signer.cluster_id, manager, raft_nodes, worker_token)


def write_admin_bundle(signer: Signer, client_dir: Path) -> None:
    """An admin identity in the DOCKER_CERT_PATH layout (ca.pem, cert.pem, key.pem)."""
    key = pki.new_key()
    cert = signer.sign(pki.make_csr(key), node_id=f"admin-{new_id()[:12]}", role=pki.ADMIN, component="admin")
    client_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki.write_private(client_dir / "key.pem", pki.key_pem(key))
    pki.write_private(client_dir / "cert.pem", cert)
    pki.write_private(client_dir / "ca.pem", signer.roots_pem)


def fill_members(template: str, ids: LocalIdentities) -> str:
    """`1=https://raftstore-1:4301,raftstore-1:4311;2=...` with each member's node id appended."""
    out = []
    for part in (p.strip() for p in template.split(";") if p.strip()):
        rid = int(part.split("=", 1)[0])
        out.append(f"{part},{ids.raft_nodes[rid - 1]}")
    return ";".join(out)


def agent_task_files(env: Mapping[str, str], hostname: str) -> dict[str, str]:
    """Under compose an agent is a container that starts its tasks as sibling containers: their secrets and
    configs must be in a directory both it and the engine see. `SHOAL_TASK_FILES_ROOT` names a host directory
    mounted into every agent container at the same path; each agent (its container's hostname: every replica
    of a scaled service has its own) gets `<root>/<hostname>` as SHOAL_TASK_FILES_DIR and
    SHOAL_TASK_FILES_HOST_DIR — its own, as every agent removes the task directories it does not run. Settings
    given explicitly are kept."""
    root = env.get("SHOAL_TASK_FILES_ROOT", "").rstrip("/")
    if not root or "SHOAL_TASK_FILES_DIR" in env:
        return {}
    own = f"{root}/{hostname}"
    return {"SHOAL_TASK_FILES_DIR": own, "SHOAL_TASK_FILES_HOST_DIR": own}


def main(argv: list[str] | None = None) -> int:
    """`python -m shoal.bootstrap --data-dir D [--client-dir C] [--hosts a,b] [--as NAME] [-- COMMAND...]`:
    initialise the identities once, then exec COMMAND as process NAME with its identity in the environment.
    The containers of a compose cluster all start this way: the first takes the lock and makes the
    identities, the others find them. NAME `nats` gets its configuration written and `-c` appended; an
    `agent*` gets the worker token; a `raftstore-N` gets SHOAL_RAFT_MEMBERS from SHOAL_RAFT_MEMBERS_TEMPLATE
    with the members' node ids."""
    import argparse
    import fcntl
    import os

    p = argparse.ArgumentParser(prog="python -m shoal.bootstrap")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--client-dir", type=Path, default=None)
    p.add_argument("--raft-members", type=int, default=3)
    p.add_argument("--hosts", default="", help="comma-separated names and addresses servers are dialled by")
    p.add_argument("--as", dest="name", default="", help="the process about to be exec'd")
    p.add_argument("--nats-port", type=int, default=4222)
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    data: Path = a.data_dir
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    certs = data / "certificates"
    hosts = tuple(h.strip() for h in a.hosts.split(",") if h.strip())
    with open(data / ".bootstrap.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            ids = init_local(data, certs, a.client_dir or data / "client", raft_members=a.raft_members,
                             hosts=hosts)
        except BootstrapError as e:
            print(e)
            return 1
    command = [c for c in a.command if c != "--"]
    if not command:
        return 0
    env = dict(os.environ)
    name: str = a.name
    if name == "nats":
        from shoal.natsconf import render

        conf = data / "nats.conf"
        conf.write_text(render("0.0.0.0", a.nats_port, certs / "nats"))
        command += ["-c", str(conf)]
    elif name.startswith("agent"):
        env["SHOAL_JOIN_TOKEN"] = ids.worker_token
        env.update(agent_task_files(env, socket.gethostname()))
    else:
        env["SHOAL_CERT_DIR"] = str(certs / name)
        if name.startswith("raftstore-"):
            env["SHOAL_RAFT_MEMBERS"] = fill_members(env.get("SHOAL_RAFT_MEMBERS_TEMPLATE", ""), ids)
        if name == "ca" and (certs / CA_BOOTSTRAP).exists():
            env["SHOAL_CA_BOOTSTRAP"] = str(certs / CA_BOOTSTRAP)
    os.execvpe(command[0], command, env)
    return 0  # not reached


if __name__ == "__main__":  # `python -m shoal.bootstrap …`: every compose container starts this way
    raise SystemExit(main())
