"""`shoal network create|ls|inspect|rm|attach|detach`."""

from __future__ import annotations

import argparse

from shoal.cli import table
from shoal.cli.client import CliError
from shoal.cli.flags import Spec, SubParsers, add_ls, add_on_refs, help_of, parse_pairs
from shoal.cli.output import create, inspect, list_objects, remove


def network_spec(a: argparse.Namespace) -> Spec:
    """The NetworkSpec JSON of `shoal network create`."""
    spec: Spec = {"name": a.name}
    if a.driver is not None:
        spec["driver"] = a.driver
    if a.gateway is not None and a.subnet is None:
        raise CliError("--gateway needs --subnet")
    if a.subnet is not None:
        spec["ipam"] = {"subnet": a.subnet, **({"gateway": a.gateway} if a.gateway is not None else {})}
    if a.attachable:
        spec["attachable"] = True
    if a.internal:
        spec["internal"] = True
    if a.label:
        spec["labels"] = parse_pairs(a.label, "--label")
    if a.opt:
        spec["options"] = {k: v for k, _, v in (o.partition("=") for o in a.opt)}
    return spec


def cmd_network_create(a: argparse.Namespace) -> int:
    return create(a, "/v1/networks", network_spec(a))


def cmd_network_ls(a: argparse.Namespace) -> int:
    return list_objects(a, "/v1/networks", table.NETWORK_HEADERS, table.network_rows)


def cmd_network_inspect(a: argparse.Namespace) -> int:
    return inspect(a, "/v1/networks")


def cmd_network_rm(a: argparse.Namespace) -> int:
    return remove(a, "/v1/networks")


def attach_request(a: argparse.Namespace) -> Spec:
    """The body of `shoal network attach`: the node, and the container and aliases when given."""
    body: Spec = {"node_id": a.node}
    if a.container:
        body["container_id"] = a.container
    if a.alias:
        body["aliases"] = list(a.alias)
    return body


def cmd_network_attach(a: argparse.Namespace) -> int:
    """Create an attachment task on the node; print its id."""
    return create(a, f"/v1/networks/{a.network}/attachments", attach_request(a))


def cmd_network_detach(a: argparse.Namespace) -> int:
    return remove(a, f"/v1/networks/{a.network}/attachments")


def add_parsers(sub: SubParsers, parent: argparse.ArgumentParser) -> None:
    """`shoal network ...`."""
    network = sub.add_parser("network", help="manage networks")
    network.set_defaults(func=help_of(network))
    wsub = network.add_subparsers(title="network commands", metavar="COMMAND")
    wcreate = wsub.add_parser("create", parents=[parent], help="create a network")
    wcreate.add_argument("--driver", "-d", help="network driver (default overlay)")
    wcreate.add_argument("--subnet", metavar="CIDR", help="subnet, e.g. 10.20.0.0/24 (default: from the pool)")
    wcreate.add_argument("--gateway", metavar="IP", help="gateway address inside the subnet")
    wcreate.add_argument("--attachable", action="store_true", help="let standalone containers attach")
    wcreate.add_argument("--internal", action="store_true", help="no access to the outside")
    wcreate.add_argument("-o", "--opt", action="append", metavar="KEY[=VALUE]",
                         help="driver option; `encrypted`: node-to-node traffic is IPsec ESP (repeatable)")
    wcreate.add_argument("--label", action="append", metavar="KEY=VALUE", help="network label")
    wcreate.add_argument("name", metavar="NAME")
    wcreate.set_defaults(func=cmd_network_create)
    add_ls(wsub, parent, "networks", cmd_network_ls)
    add_on_refs(wsub, parent, "inspect", "NETWORK", "show networks as JSON", cmd_network_inspect)
    add_on_refs(wsub, parent, "rm", "NETWORK", "remove networks", cmd_network_rm, aliases=("remove",))
    wattach = wsub.add_parser("attach", parents=[parent],
                              help="attach a standalone container on a node to an attachable network")
    wattach.add_argument("--node", required=True, metavar="NODE", help="the node (id, hostname or id prefix)")
    wattach.add_argument("--container", metavar="ID", help="the container this attachment is for")
    wattach.add_argument("--alias", action="append", metavar="ALIAS", help="extra DNS name on the network")
    wattach.add_argument("network", metavar="NETWORK")
    wattach.set_defaults(func=cmd_network_attach)
    wdetach = wsub.add_parser("detach", parents=[parent], help="detach attachments (by task id) from a network")
    wdetach.add_argument("network", metavar="NETWORK")
    wdetach.add_argument("refs", nargs="+", metavar="TASK")
    wdetach.set_defaults(func=cmd_network_detach)
