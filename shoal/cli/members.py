"""`shoal cluster member ls|add|rm` and `shoal cluster leader-transfer`: the raftstore's membership through the
gateway (`/v1/cluster/members`, `/v1/cluster/leader/transfer`)."""

from __future__ import annotations

import argparse
from typing import Any

from shoal.cli import table
from shoal.cli.client import Gateway
from shoal.cli.output import print_json

MEMBER_HEADERS = ("id", "role", "leader", "api url", "peer address", "match index")
#: adding a member waits for it to catch up and be promoted
CHANGE_TIMEOUT = 120.0


def _gateway(a: argparse.Namespace) -> Gateway:
    return Gateway(a.url, getattr(a, "http", None), timeout=CHANGE_TIMEOUT)


def member_rows(view: dict[str, Any]) -> list[list[object]]:
    rows: list[list[object]] = []
    for m in view.get("members", []):
        rows.append([m["id"], m["role"], "*" if m.get("leader") else "", m["api_url"], m["peer_addr"],
                     m.get("match_index", "")])
    return rows


def _print_view(view: dict[str, Any]) -> None:
    print(table.format_table(MEMBER_HEADERS, member_rows(view)))
    removed = view.get("removed") or []
    if removed:
        print(f"removed ids (never reused): {', '.join(str(i) for i in removed)}")


def cmd_member_ls(a: argparse.Namespace) -> int:
    with _gateway(a) as gw:
        view = gw.get("/v1/cluster/members")
    if a.json:
        print_json(view)
    else:
        _print_view(view)
    return 0


def cmd_member_add(a: argparse.Namespace) -> int:
    body: dict[str, object] = {"api_url": a.api_url, "peer_addr": a.peer_addr, "node_id": a.node_id}
    if a.id is not None:
        body["id"] = a.id
    with _gateway(a) as gw:
        view = gw.request("POST", "/v1/cluster/members", body=body)
    added = view.get("added")
    role = next((m["role"] for m in view["members"] if m["id"] == added), "learner")
    print(f"member {added} added as a {role}")
    if view.get("message"):
        print(view["message"])
    return 0


def cmd_member_rm(a: argparse.Namespace) -> int:
    with _gateway(a) as gw:
        view = gw.request("DELETE", f"/v1/cluster/members/{a.id}")
    print(f"member {a.id} removed (its id is never reused)")
    _print_view(view)
    return 0


def cmd_leader_transfer(a: argparse.Namespace) -> int:
    with _gateway(a) as gw:
        res = gw.request("POST", "/v1/cluster/leader/transfer", body={"to": a.to} if a.to is not None else {})
    print(f"raft leadership moved from member {res['previous_leader']} to member {res['leader']} "
          f"(term {res['term']})")
    return 0


def add_parsers(csub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    member = csub.add_parser("member", parents=[parent], help="raftstore members: ls, add, rm")
    msub = member.add_subparsers(title="member commands", metavar="COMMAND", required=True)
    ls = msub.add_parser("ls", aliases=["list"], parents=[parent], help="list raftstore members")
    ls.add_argument("--json", action="store_true", help="print the gateway's JSON")
    ls.set_defaults(func=cmd_member_ls)
    add = msub.add_parser("add", parents=[parent],
                          help="add a member (start it first with SHOAL_RAFT_JOIN=1); it joins as a learner "
                               "and becomes a voter once caught up")
    add.add_argument("api_url", metavar="API_URL", help="the new member's API, e.g. https://10.0.0.4:4301")
    add.add_argument("peer_addr", metavar="PEER_ADDR", help="its raft peer address, e.g. 10.0.0.4:4311")
    add.add_argument("--id", type=int, help="its member id (default: one never used in this cluster)")
    add.add_argument("--node-id", required=True,
                     help="the node id in its raftstore certificate (raft peers are known by it)")
    add.set_defaults(func=cmd_member_add)
    rm = msub.add_parser("rm", aliases=["remove"], parents=[parent],
                         help="remove a member (refused if the rest would lose quorum; the leader hands over "
                              "first)")
    rm.add_argument("id", type=int, metavar="ID")
    rm.set_defaults(func=cmd_member_rm)
    lt = csub.add_parser("leader-transfer", parents=[parent], help="hand raft leadership to another voter")
    lt.add_argument("--to", type=int, metavar="ID", help="the voter to lead (default: the most up to date)")
    lt.set_defaults(func=cmd_leader_transfer)
