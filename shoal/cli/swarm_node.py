"""`shoal swarm init`, `shoal swarm join`, `shoal swarm leave`: this machine as a node of a swarm (shoal.node),
run by a long-lived node supervisor in the background (`python -m shoal.daemon --node`)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from shoal import daemon, transport
from shoal.node import NodeConfig, NodeError, NodeLayout, Ports, init, join
from shoal.supervisor import read_state, wait_healthy

DEFAULT_NODE_DIR = Path(os.environ.get("SHOAL_NODE_DIR", Path.home() / ".shoal-swarm"))


def add_parsers(swarm_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds init, join and leave under `shoal swarm`."""
    p = swarm_sub.add_parser("init", help="make this machine the first manager of a new swarm")
    _common(p)
    p.set_defaults(func=cmd_init)
    j = swarm_sub.add_parser("join", help="join a swarm as a worker or a manager")
    _common(j)
    j.add_argument("--token", required=True, help="the join token (`shoal swarm join-token worker|manager`)")
    j.add_argument("--roles", default=None,
                   help="manager only: the roles this machine runs, comma-separated (default: all of "
                        "nats,raftstore,ca,gateway,orchestrator,allocator,scheduler,dispatcher)")
    j.add_argument("remote", metavar="HOST[:PORT]", help="a manager's address (its CA port, 4325 by default)")
    j.set_defaults(func=cmd_join)
    leave = swarm_sub.add_parser("leave", help="stop this node's processes and leave the swarm")
    leave.add_argument("--data-dir", type=Path, default=DEFAULT_NODE_DIR)
    leave.add_argument("--force", "-f", action="store_true", help="leave even as a manager")
    leave.set_defaults(func=cmd_leave)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--advertise-addr", default=None, help="the address other machines reach this one at")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_NODE_DIR, help=f"node state (default {DEFAULT_NODE_DIR})")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the node's processes")


def default_advertise() -> str:
    """The address of the interface the default route leaves by (no packet is sent), else loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def cmd_init(a: argparse.Namespace) -> int:
    data: Path = a.data_dir.resolve()
    advertise = a.advertise_addr or default_advertise()
    try:
        cfg, worker, _manager = init(data, advertise, Ports())
    except NodeError as e:
        print(f"shoal: {e}", file=sys.stderr)
        return 1
    if _start(data, a.timeout) != 0:
        return 1
    print(f"Swarm initialized: current node ({cfg.node_id}) is now a manager.\n")
    print("To add a worker to this swarm, run the following command:\n")
    print(f"    shoal swarm join --token {worker} {advertise}:{cfg.ports.ca}\n")
    print("To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n")
    print(f"The admin client bundle is in {data / 'client'}: eval \"$(shoal env --data-dir {data})\"")
    return 0


def cmd_join(a: argparse.Namespace) -> int:
    data: Path = a.data_dir.resolve()
    advertise = a.advertise_addr or default_advertise()
    roles = [r.strip() for r in a.roles.split(",") if r.strip()] if a.roles else None
    try:
        cfg = join(data, a.token, a.remote, advertise, roles, Ports())
    except NodeError as e:
        print(f"shoal: {e}", file=sys.stderr)
        shutil.rmtree(data / "certificates", ignore_errors=True)  # nothing half-joined is left behind
        return 1
    if _start(data, a.timeout) != 0:
        return 1
    print(f"This node joined a swarm as a {'manager' if cfg.manager else 'worker'} ({cfg.node_id}).")
    return 0


def _start(data: Path, timeout: float) -> int:
    """Start the node supervisor in the background and wait for its processes."""
    deadline = time.monotonic() + timeout
    code = daemon.start(["--node", "--data-dir", str(data)], data, deadline)
    if code is not None:
        print(f"shoal: the node supervisor exited (code {code}); see {data / 'logs'}", file=sys.stderr)
        return 1
    layout = NodeLayout.for_node(data)
    try:
        wait_healthy(layout, layout.specs(), max(1.0, deadline - time.monotonic()))
    except TimeoutError as e:
        print(f"shoal: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_leave(a: argparse.Namespace) -> int:
    from shoal.cli.up import _stop

    data: Path = a.data_dir.resolve()
    try:
        cfg = NodeConfig.load(data)
    except NodeError as e:
        print(f"shoal: {e}", file=sys.stderr)
        return 1
    if cfg.manager and not a.force:
        print("shoal: you are attempting to leave the swarm on a node that is a manager. Removing it may "
              "lose the quorum of the raft store; demote it first, or use --force to leave anyway.",
              file=sys.stderr)
        return 1
    if cfg.manager and cfg.raft_id is not None and "raftstore" in cfg.roles:
        _leave_raft(cfg, data)
    if read_state(data) is not None:
        _stop(data)
    for name in ("certificates", "raft", "agent", "nats", "client", "node.json", "supervisor.json"):
        path = data / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    print("Node left the swarm.")
    return 0


def _leave_raft(cfg: NodeConfig, data: Path) -> None:
    """Remove this machine's raft member first, so the remaining members' quorum counts without it."""
    try:
        creds = transport.Credentials(data / "certificates" / "raftstore")
    except transport.CredentialsLocked:  # autolock: its key is encrypted; the gateway may change membership too
        creds = transport.Credentials(data / "certificates" / "gateway")
    with transport.sync_http_client(creds, timeout=30.0) as http:
        for m in cfg.managers:
            try:
                r = http.delete(f"https://{m}:{cfg.ports.raft_api}/v1/members/{cfg.raft_id}")
            except Exception as e:  # a dead manager: try the next one
                print(f"shoal: {m}: {e}", file=sys.stderr)
                continue
            if r.status_code < 300 or r.status_code == 404:
                return
            print(f"shoal: removing raft member {cfg.raft_id}: {json.dumps(r.json())[:300]}", file=sys.stderr)
