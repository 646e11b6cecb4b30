"""What the driver checks in a peer's message before the core sees it: the payloads the core keeps opaque but
the driver will decode when it applies them — a snapshot's state (the store and the membership table) and the
addresses in a membership change. A payload the driver could not load would otherwise fail after the snapshot
replaced the log, or when the change is applied, in the middle of a Ready (issue 16). The raft-level claims of a
message are checked by the core itself (raft/sanity.py)."""

from __future__ import annotations

import json
import struct
from typing import Any

from services.raftstore.membership import Membership
from services.raftstore.raft import ConfChange, ConfChangeType, EntryType, Message, MsgType
from services.raftstore.settings import parse_peer
from shoal.store.memory import MemoryStore


def payload_problem(m: Message) -> str | None:
    """Why the driver could not load `m`'s payload, or None."""
    if m.type == MsgType.SNAP and m.snapshot is not None:
        return snapshot_problem(m.snapshot.data)
    for e in m.entries:
        if e.type == EntryType.CONF_CHANGE:
            why = conf_change_problem(e.data)
            if why is not None:
                return f"entry {e.index}: {why}"
    return None


def snapshot_problem(data: bytes) -> str | None:
    try:
        body = json.loads(data)
        if not isinstance(body, dict) or not isinstance(body.get("store"), dict) \
                or not isinstance(body.get("membership"), dict):
            return "a snapshot whose state is not {store, membership}"
        Membership.from_json(body["membership"])
        MemoryStore().restore(body["store"])  # what _load_state will do, on a throwaway store
    except Exception as e:  # any way a hostile document can fail to load
        return f"a snapshot whose state does not load: {type(e).__name__}: {str(e)[:200]}"
    return None


def conf_change_problem(data: bytes) -> str | None:
    try:
        cc = ConfChange.decode(data)
        if cc.type == ConfChangeType.ADD_LEARNER and cc.context:
            ctx: Any = json.loads(cc.context)
            parse_peer(ctx["peer_addr"])
            if not isinstance(ctx["api_url"], str):
                return "a membership change whose api_url is not a string"
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"a membership change that does not decode: {type(e).__name__}: {str(e)[:200]}"
    return None
