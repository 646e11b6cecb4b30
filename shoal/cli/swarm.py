"""`shoal swarm join-token`, `shoal swarm update` (the second name of `shoal cluster update`), and `shoal env`
(shell exports pointing the CLI and Docker's client at the local cluster with its admin bundle)."""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import urlsplit

from shoal.cli import identity
from shoal.cli.commands import CliError, add_cluster_update_flags, gateway_of

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
    from shoal.cli import swarm_ca, swarm_node

    swarm_node.add_parsers(ssub)
    swarm_ca.add_parser(ssub, parent)

    env = sub.add_parser("env", help="print shell exports for the local cluster: eval $(shoal env)")
    env.add_argument("--data-dir", help="the cluster's data directory (default $SHOAL_DATA_DIR or ~/.shoal)")
    env.set_defaults(func=cmd_env)
