"""`shoal cluster` (raft members, leader, leases), `shoal cluster update` (also `shoal swarm update`) and the
membership commands of shoal.cli.members."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import httpx

from shoal.cli import identity, members, table
from shoal.cli.client import CliError, gateway_of
from shoal.cli.flags import Spec, SubParsers, parse_bool
from shoal.cli.output import print_json
from shoal.models.cluster_spec import MIN_NODE_CERT_EXPIRY
from shoal.models.duration import parse_duration


def cmd_cluster(a: argparse.Namespace) -> int:
    with gateway_of(a) as gw:
        cluster = gw.get("/v1/cluster")
    if a.json:
        print_json(cluster)
    else:
        print(table.cluster_text(cluster, time.time()))
        # a locked manager has no TLS port (its key is encrypted): the gateway sees it unreachable; this
        # machine can tell why
        for sock in locked_here(identity.data_dir()):
            print(f"{sock.parent.name} on this machine is locked (autolock): run `shoal swarm unlock`")
    return 0


#: where the manager processes of a data directory keep their certificates (`shoal up` and `shoal swarm
#: init/join`: certificates/<process>); a locked process listens on `<cert dir>/unlock.sock`
CERT_ROOTS = ("certificates",)
UNLOCK_SOCKET = "unlock.sock"


def local_unlock_sockets(data: Path) -> list[Path]:
    """The unlock sockets of this machine's locked manager processes under `data`."""
    return sorted(p for root in CERT_ROOTS for p in (data / root).glob(f"*/{UNLOCK_SOCKET}") if p.is_socket())


def is_locked(resp: httpx.Response) -> bool:
    try:
        return resp.status_code == 503 and bool(resp.json().get("locked"))
    except ValueError:
        return False


def locked_here(data: Path) -> list[Path]:
    """The sockets under `data` whose process answers that it is locked."""
    out = []
    for sock in local_unlock_sockets(data):
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://locked",
                              timeout=2.0) as http:
                if is_locked(http.get("/healthz")):
                    out.append(sock)
        except (httpx.HTTPError, OSError):
            continue
    return out


def cluster_changes(a: argparse.Namespace) -> Spec:
    """The PATCH body of `shoal cluster update`."""
    body: Spec = {}
    if a.heartbeat_period is not None:
        body["dispatcher"] = {"heartbeat_period": a.heartbeat_period}
    if a.task_history_limit is not None:
        body["orchestration"] = {"task_history_retention_limit": a.task_history_limit}
    if getattr(a, "cert_expiry", None) is not None:
        body["ca_config"] = {"node_cert_expiry": parse_cert_expiry(a.cert_expiry)}
    if getattr(a, "autolock", None) is not None:
        body["encryption_config"] = {"auto_lock_managers": a.autolock}
    if not body:
        raise CliError("cluster update: nothing to change (use --heartbeat-period, --task-history-limit, "
                       "--cert-expiry, --autolock)")
    return body


_DAYS = re.compile(r"^\s*(\d+(?:\.\d+)?)d\s*$")


def parse_cert_expiry(text: str) -> float:
    """`--cert-expiry`: a duration ("90d", "2160h", "1h30m"; days are allowed here) of at least an hour."""
    m = _DAYS.match(text)
    try:
        seconds = float(m.group(1)) * 86400 if m else parse_duration(text)
    except ValueError as e:
        raise CliError(f"--cert-expiry {text!r}: {e}; e.g. 90d, 720h") from None
    if seconds < MIN_NODE_CERT_EXPIRY:
        raise CliError(f"--cert-expiry {text!r}: certificates must be valid for at least 1h")
    return seconds


def cmd_cluster_update(a: argparse.Namespace) -> int:
    body = cluster_changes(a)
    gw = gateway_of(a)
    try:
        # the gateway requires the version read (optimistic concurrency); 0: the object is not created yet
        current = gw.request("GET", "/v1/cluster")
        body["version"] = int(((current or {}).get("meta") or {}).get("version") or 0)
        gw.request("PATCH", "/v1/cluster", body=body)
        key = gw.get("/v1/swarm/unlock-key").get("unlock_key") if getattr(a, "autolock", None) else None
    finally:
        gw.close()
    print("cluster updated")
    if key:
        print(unlock_key_text(str(key)))
    return 0


def unlock_key_text(key: str, *, rotated: bool = False) -> str:
    """Docker's wording (`docker swarm unlock-key`)."""
    head = "Successfully rotated manager unlock key.\n\n" if rotated else ""
    return (f"{head}To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\n"
            "command and provide the following key:\n\n"
            f"    {key}\n\n"
            "Please remember to store this key in a password manager, since without it you\n"
            "will not be able to restart the manager.")


def add_cluster_update_flags(p: argparse.ArgumentParser) -> None:
    """The flags of `shoal cluster update` and of its second name `shoal swarm update`."""
    p.add_argument("--heartbeat-period", metavar="DURATION",
                   help="agent heartbeat period (e.g. 10s; a node is down after 3 missed)")
    p.add_argument("--task-history-limit", type=int, metavar="N",
                   help="terminal tasks kept per slot (negative = all)")
    p.add_argument("--cert-expiry", metavar="DURATION",
                   help="validity of node certificates issued from now on (e.g. 90d, 720h; at least 1h)")
    p.add_argument("--autolock", type=parse_bool, metavar="true|false",
                   help="lock restarted managers until `shoal swarm unlock` (prints the unlock key)")
    p.set_defaults(func=cmd_cluster_update)


def add_parsers(sub: SubParsers, parent: argparse.ArgumentParser) -> None:
    """`shoal cluster` (the overview), `cluster update`, `cluster member ...`, `cluster leader-transfer`."""
    cluster = sub.add_parser("cluster", parents=[parent],
                             help="raft members, leader, term, commit index; subsystem leases")
    cluster.add_argument("--json", action="store_true", help="print the gateway's JSON")
    cluster.set_defaults(func=cmd_cluster)
    csub = cluster.add_subparsers(title="cluster commands", metavar="COMMAND")
    cupdate = csub.add_parser("update", parents=[parent], help="change the cluster spec")
    add_cluster_update_flags(cupdate)
    members.add_parsers(csub, parent)
