"""Membership: who is in the raftstore cluster and where to reach them, replicated through the log.

The Raft core knows member ids (voters and learners); this table adds each member's API URL and peer address
and the ids that were removed (never to come back). It starts from SHOAL_RAFT_MEMBERS at bootstrap, changes
only by applying committed membership changes (whose context carries the new member's addresses), and travels
inside snapshots, so every replica holds the same table at the same index."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from services.raftstore.raft import ConfChange, ConfChangeType
from services.raftstore.settings import MemberInfo, parse_peer


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
