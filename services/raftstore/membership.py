"""Membership: who is in the raftstore cluster and where to reach them, replicated through the log.

The Raft core knows member ids (voters and learners); this table adds each member's API URL and peer address
and the ids that were removed (never to come back). It starts from SHOAL_RAFT_MEMBERS at bootstrap, changes
only by applying committed membership changes (whose context carries the new member's addresses), and travels
inside snapshots, so every replica holds the same table at the same index."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from services.raftstore.raft import ConfChange, ConfChangeType
from services.raftstore.raft.quorum import majority
from services.raftstore.settings import MemberInfo, parse_peer
from shoal.errors import Conflict, NotFound


def member_context(api_url: str, peer_addr: str, node_id: str) -> bytes:
    """The ConfChange context of an added member. Contexts written before mutual TLS have no `node_id`: they
    are still read (WAL compatibility), but such a member cannot be peered with until it is re-added."""
    return json.dumps({"api_url": api_url, "peer_addr": peer_addr, "node_id": node_id},
                      separators=(",", ":")).encode()


class Membership:
    def __init__(self, infos: Iterable[MemberInfo] = (), removed: Iterable[int] = ()) -> None:
        self.infos: dict[int, MemberInfo] = {m.id: m for m in infos}
        self.removed: set[int] = set(removed)

    def get(self, member_id: int | None) -> MemberInfo | None:
        return self.infos.get(member_id) if member_id else None

    def all(self) -> list[MemberInfo]:
        return [self.infos[i] for i in sorted(self.infos)]

    def apply(self, cc: ConfChange) -> None:
        """Follow a committed change (idempotent, like the core's)."""
        if cc.type == ConfChangeType.ADD_LEARNER and cc.context:
            ctx = json.loads(cc.context)
            host, port = parse_peer(ctx["peer_addr"])
            self.infos[cc.node_id] = MemberInfo(cc.node_id, ctx["api_url"].rstrip("/"), host, port,
                                                str(ctx.get("node_id", "")))
        elif cc.type == ConfChangeType.REMOVE:
            self.infos.pop(cc.node_id, None)
            self.removed.add(cc.node_id)
        elif cc.type == ConfChangeType.FORCE_NEW_CLUSTER:
            others = [i for i in self.infos if i != cc.node_id]
            for i in others:
                del self.infos[i]
            self.removed.update(others)

    def ids_of_node(self, node_id: str) -> frozenset[int]:
        """The member ids a certificate with this CN may speak for (none for an empty node id)."""
        return frozenset(i for i, m in self.infos.items() if node_id and m.node_id == node_id)

    def next_id(self) -> int:
        """An id never used in this cluster."""
        return max([0, *self.infos, *self.removed]) + 1

    def to_json(self) -> dict[str, Any]:
        return {"members": [m.to_json() for m in self.all()], "removed": sorted(self.removed)}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Membership:
        infos = []
        for m in body.get("members", []):
            host, port = parse_peer(m["peer_addr"])
            infos.append(MemberInfo(int(m["id"]), m["api_url"], host, port, str(m.get("node_id", ""))))
        return cls(infos, body.get("removed", []))


# ---- policy: what a membership change may do (pure; the routes in services/raftstore/routes/members.py) -------
def check_addable(ms: Membership, new_id: int, api_url: str, peer_addr: str, node_id: str) -> None:
    """Conflict when `new_id` was removed (ids never come back) or is taken, or when a member already uses
    the address, peer address or node id."""
    if new_id in ms.removed:
        raise Conflict(f"store: member id {new_id} was removed and can never come back; add the member "
                       "under a new id (omit 'id' to get one)")
    if ms.get(new_id) is not None:
        raise Conflict(f"store: member id {new_id} is already in the cluster")
    for m in ms.all():
        if m.peer_addr == peer_addr or m.api_url == api_url or m.node_id == node_id:
            raise Conflict(f"store: member {m.id} already uses {m.api_url} / {m.peer_addr} / node "
                           f"{m.node_id}; remove it first to replace it")


def check_removable(voters: Collection[int], learners: Collection[int], ms: Membership, member_id: int,
                    reachable: Callable[[int], bool]) -> None:
    """NotFound for a member that is not in the configuration; Conflict when removing a voter would leave
    no voter, or fewer reachable voters than a quorum of the rest (the cluster would stop)."""
    if member_id not in voters and member_id not in learners:
        if member_id in ms.removed:
            raise NotFound(f"store: member {member_id} was already removed")
        raise NotFound(f"store: member {member_id} is not in the cluster; members are "
                       f"{[m.id for m in ms.all()]}")
    if member_id in voters:
        remaining = [v for v in voters if v != member_id]
        if not remaining:
            raise Conflict("store: cannot remove the last voter")
        up = [v for v in remaining if reachable(v)]
        if len(up) < majority(len(remaining)):
            raise Conflict(
                f"store: removing member {member_id} would leave {len(up)} reachable voter(s) of "
                f"{len(remaining)} ({sorted(up)}), short of the quorum of {majority(len(remaining))}: the "
                "cluster would stop. Bring the other members back first")


def promotable(learners: Collection[int], match: Mapping[int, int], commit_index: int, lag: int) -> int | None:
    """The first learner that holds the log to within `lag` entries of the commit index (one change at a
    time), or None."""
    for lid in learners:
        m = match.get(lid)
        if m is not None and m + lag >= commit_index and m > 0:
            return lid
    return None
