"""`shoal node ls|inspect|update|promote|demote|rm`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from shoal.cli import table
from shoal.cli.client import CliError, gateway_of, read_modify_write
from shoal.cli.flags import Spec, SubParsers, add_ls, add_on_refs, help_of, parse_pairs
from shoal.cli.output import inspect, remove


def cmd_node_ls(a: argparse.Namespace) -> int:
    with gateway_of(a) as gw:
        nodes = gw.items("/v1/nodes")
    if a.quiet:
        for n in nodes:
            print(n["id"])
        return 0
    print(table.format_table(table.NODE_HEADERS, table.node_rows(nodes, no_trunc=a.no_trunc)))
    return 0


def cmd_node_inspect(a: argparse.Namespace) -> int:
    return inspect(a, "/v1/nodes")


def node_changes(a: argparse.Namespace) -> Spec:
    """The PATCH body of `shoal node update` (without the version)."""
    body: Spec = {}
    if a.availability is not None:
        body["availability"] = a.availability
    if a.role is not None:
        body["role"] = a.role
    if a.label_add:
        body["labels_add"] = parse_pairs([x if "=" in x else x + "=" for x in a.label_add], "--label-add")
    if a.label_rm:
        body["labels_rm"] = list(a.label_rm)
    if not body:
        raise CliError("node update: nothing to change (use --availability, --role, --label-add, --label-rm)")
    return body


def cmd_node_update(a: argparse.Namespace) -> int:
    changes = node_changes(a)
    gw = gateway_of(a)
    try:
        read_modify_write(gw, f"/v1/nodes/{a.node}", "PATCH",
                           lambda current: {"version": current["meta"]["version"], **changes},
                           write_path=lambda current: f"/v1/nodes/{current['id']}")
    finally:
        gw.close()
    print(a.node)
    return 0


def cmd_node_role(role: str) -> Callable[[argparse.Namespace], int]:
    """`shoal node promote|demote NODE...` (Docker's): `node update --role` on each node. The CA issues the
    new role when the node next renews its certificate (docs/security.md, "Promotion and demotion")."""
    def run(a: argparse.Namespace) -> int:
        gw = gateway_of(a)
        try:
            for ref in a.nodes:
                read_modify_write(gw, f"/v1/nodes/{ref}", "PATCH",
                                   lambda current: {"version": current["meta"]["version"], "role": role},
                                   write_path=lambda current: f"/v1/nodes/{current['id']}")
                word = "promoted to a manager" if role == "manager" else "demoted to a worker"
                print(f"Node {ref} {word} in the swarm.")
        finally:
            gw.close()
        return 0
    return run


def cmd_node_rm(a: argparse.Namespace) -> int:
    return remove(a, "/v1/nodes", {"force": "true"} if a.force else None)


def add_parsers(sub: SubParsers, parent: argparse.ArgumentParser) -> None:
    """`shoal node ...`."""
    node = sub.add_parser("node", help="manage nodes")
    node.set_defaults(func=help_of(node))
    nsub = node.add_subparsers(title="node commands", metavar="COMMAND")
    add_ls(nsub, parent, "nodes", cmd_node_ls)
    add_on_refs(nsub, parent, "inspect", "NODE", "show nodes as JSON", cmd_node_inspect)
    nupdate = nsub.add_parser("update", parents=[parent], help="change a node's availability, role or labels")
    nupdate.add_argument("--availability", choices=["active", "pause", "drain"],
                         help="active, pause (no new tasks) or drain (tasks move elsewhere)")
    nupdate.add_argument("--role", choices=["worker", "manager"], help="desired role")
    nupdate.add_argument("--label-add", action="append", metavar="KEY=VALUE", help="add or change a label")
    nupdate.add_argument("--label-rm", action="append", metavar="KEY", help="remove a label")
    nupdate.add_argument("node", metavar="NODE")
    nupdate.set_defaults(func=cmd_node_update)
    for verb, role in (("promote", "manager"), ("demote", "worker")):
        p = nsub.add_parser(verb, parents=[parent], help=f"make nodes {role}s (their desired role)")
        p.add_argument("nodes", nargs="+", metavar="NODE")
        p.set_defaults(func=cmd_node_role(role))
    nrm = add_on_refs(nsub, parent, "rm", "NODE", "remove nodes from the cluster", cmd_node_rm,
                       aliases=("remove",))
    nrm.add_argument("-f", "--force", action="store_true", help="remove a node even if it is ready")
