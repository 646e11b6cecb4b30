"""`shoal swarm join-token`, `shoal swarm update` (the second name of `shoal cluster update`), `shoal swarm
unlock-key` and `shoal swarm unlock` (autolock), and `shoal env`
(shell exports pointing the CLI and Docker's client at the local cluster with its admin bundle)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from shoal import unlockkey
from shoal.cli import identity
from shoal.cli.client import CliError, gateway_of
from shoal.cli.cluster import add_cluster_update_flags, is_locked, local_unlock_sockets, unlock_key_text

ROLES = ("worker", "manager")


def join_token_text(role: str, token: str, address: str, *, rotated: bool = False) -> str:
    """Docker's wording (`docker swarm join-token`)."""
    head = f"Successfully rotated {role} join token.\n\n" if rotated else ""
    return (f"{head}To add a {role} to this swarm, run the following command:\n\n"
            f"    shoal swarm join --token {token} {address}\n")


def cmd_join_token(a: argparse.Namespace) -> int:
    gw = gateway_of(a)
    try:
        if a.rotate:
            tokens = gw.request("POST", "/v1/swarm/join-tokens/rotate", body={"role": a.role})
            if not isinstance(tokens, dict) or not tokens.get(a.role):
                tokens = gw.get("/v1/swarm/join-tokens")
        else:
            tokens = gw.get("/v1/swarm/join-tokens")
    finally:
        gw.close()
    token = tokens.get(a.role) if isinstance(tokens, dict) else None
    if not token:
        raise CliError(f"the gateway's answer has no {a.role} join token")
    if a.quiet:
        print(token)
        return 0
    parts = urlsplit(a.url)
    address = str(tokens.get("join_addr") or f"{parts.hostname}:4325")
    print(join_token_text(a.role, str(token), address, rotated=a.rotate))
    return 0


def cmd_unlock_key(a: argparse.Namespace) -> int:
    gw = gateway_of(a)
    try:
        res = gw.request("POST", "/v1/swarm/unlock-key/rotate", body={}) if a.rotate else \
            gw.get("/v1/swarm/unlock-key")
    finally:
        gw.close()
    key = res.get("unlock_key") if isinstance(res, dict) else None
    if not key:
        raise CliError("no unlock key is set: autolock is off (`shoal swarm update --autolock=true`)")
    print(key if a.quiet else unlock_key_text(str(key), rotated=a.rotate))
    return 0


def cmd_unlock(a: argparse.Namespace) -> int:
    """Give this machine's locked managers the unlock key (read from stdin, never from argv), over their local
    sockets: a locked manager has no TLS (its key is encrypted under the unlock key), and reaching the socket —
    0600 in its 0700 certificate directory — is what being an admin of this machine means."""
    if sys.stdin.isatty():
        print("Enter unlock key: ", end="", file=sys.stderr, flush=True)
    text = sys.stdin.readline().strip()
    try:
        unlockkey.parse(text)
    except ValueError as e:
        raise CliError(f"invalid unlock key: {e}") from None
    data = Path(a.data_dir) if a.data_dir else identity.data_dir()
    sockets = [Path(s) for s in a.socket] if a.socket else local_unlock_sockets(data.resolve())
    unlocked = locked = 0
    for sock in sockets:
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://locked",
                              timeout=60.0) as http:
                health = http.get("/healthz")
                if not is_locked(health):
                    continue
                locked += 1
                r = http.post("/v1/unlock", json={"key": text})
        except httpx.HTTPError as e:
            if not a.socket:  # a stale socket of a process that just went away
                continue
            raise CliError(f"cannot reach the locked manager at {sock}: {e}") from None
        if r.status_code != 200:
            raise CliError(f"{sock.parent.name}: {_message(r)}")
        unlocked += 1
    if not locked:
        raise CliError("no locked manager here: nothing to unlock")
    print(f"unlocked {unlocked} manager process(es)")
    return 0


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("message"))
    except ValueError:
        return f"HTTP {resp.status_code}"


def cmd_env(a: argparse.Namespace) -> int:
    data = Path(a.data_dir) if a.data_dir else identity.data_dir()
    try:
        lines = identity.env_lines(data.resolve())
    except identity.IdentityError as e:
        raise CliError(str(e)) from None
    print("\n".join(lines))
    return 0


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    swarm = sub.add_parser("swarm", help="manage the swarm: join tokens, cluster-wide settings")
    swarm.set_defaults(func=lambda _a: swarm.print_help() or 2)
    ssub = swarm.add_subparsers(title="swarm commands", metavar="COMMAND")
    jt = ssub.add_parser("join-token", parents=[parent], help="show or rotate a join token")
    jt.add_argument("role", choices=ROLES)
    jt.add_argument("-q", "--quiet", action="store_true", help="only print the token")
    jt.add_argument("--rotate", action="store_true", help="replace the token (the old one stops working)")
    jt.set_defaults(func=cmd_join_token)
    update = ssub.add_parser("update", parents=[parent], help="change the cluster spec (= `shoal cluster update`)")
    add_cluster_update_flags(update)
    uk = ssub.add_parser("unlock-key", parents=[parent], help="show or rotate the managers' unlock key (autolock)")
    uk.add_argument("-q", "--quiet", action="store_true", help="only print the key")
    uk.add_argument("--rotate", action="store_true", help="replace the key (managers down now need the old one)")
    uk.set_defaults(func=cmd_unlock_key)
    ul = ssub.add_parser("unlock", help="unlock this machine's restarted managers (the key on stdin)")
    ul.add_argument("--socket", action="append", metavar="PATH",
                    help="a locked process's unlock socket (default: every <cert dir>/unlock.sock of the local "
                         "data directory)")
    ul.add_argument("--data-dir", help="the local cluster's data directory (default $SHOAL_DATA_DIR or ~/.shoal)")
    ul.set_defaults(func=cmd_unlock)
    from shoal.cli import swarm_ca, swarm_node

    swarm_node.add_parsers(ssub)
    swarm_ca.add_parser(ssub, parent)

    env = sub.add_parser("env", help="print shell exports for the local cluster: eval $(shoal env)")
    env.add_argument("--data-dir", help="the cluster's data directory (default $SHOAL_DATA_DIR or ~/.shoal)")
    env.set_defaults(func=cmd_env)
