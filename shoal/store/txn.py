"""Transaction and watch wire types (plain dicts on the wire; these helpers build and read them).

A transaction is `{"ops": [op...], "time": float}` applied all-or-nothing. Ops:

- `{"op": "create", "kind": k, "object": {...}}`                         object must carry `id`
- `{"op": "update", "kind": k, "object": {...}, "expect_version": v?}`   replaces the object
- `{"op": "delete", "kind": k, "id": i, "expect_version": v?}`
- `{"op": "check",  "kind": k, "id": i, "expect_version": v?, "expect_fields": {...}?}`  precondition only
  (lease fencing: `{"op": "check", "kind": "lease", "id": "scheduler", "expect_fields": {"term": 7}}`)

`expect_version` of an update/delete/check refers to `object["meta"]["version"]`; omitted = unconditional.
The store sets `meta.version` to the revision (Raft index) of the committing entry and stamps
`meta.created_at` / `meta.updated_at` from the transaction's `time` (chosen by the proposer, so every
replica applies the same bytes)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from shoal.errors import InvalidArgument, Unavailable
from shoal.store.shared import SHARED_FIELDS
from shoal.wire import dumps

Obj = dict[str, Any]
Op = dict[str, Any]
Action = Literal["create", "update", "delete"]

MAX_TXN_OPS = 1000
MAX_TXN_BYTES = 1_572_864  # 1.5 MiB, SwarmKit's MaxTransactionBytes


@dataclass
class Txn:
    ops: list[Op]
    time: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"ops": self.ops, "time": self.time}


def create(kind: str, obj: Obj) -> Op:
    return {"op": "create", "kind": kind, "object": obj}


def update(kind: str, obj: Obj, expect_version: int | None = None) -> Op:
    """Replace `obj`; by default expect the version it was read at (`obj.meta.version`)."""
    if expect_version is None:
        expect_version = obj.get("meta", {}).get("version")
    return {"op": "update", "kind": kind, "object": obj, "expect_version": expect_version}


def delete(kind: str, obj_id: str, expect_version: int | None = None) -> Op:
    return {"op": "delete", "kind": kind, "id": obj_id, "expect_version": expect_version}


def check(kind: str, obj_id: str, *, expect_version: int | None = None, **fields: Any) -> Op:
    return {"op": "check", "kind": kind, "id": obj_id, "expect_version": expect_version,
            "expect_fields": fields}


@dataclass(frozen=True)
class Change:
    """One object changed by a committed transaction. `object` is the new value (the old one for deletes)."""

    action: Action
    kind: str
    id: str
    object: Obj

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "kind": self.kind, "id": self.id, "object": self.object}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Change:
        return Change(d["action"], d["kind"], d["id"], d["object"])


@dataclass(frozen=True)
class Event:
    """All changes of one committed transaction, at its revision; `time` is the transaction's (stamped by the
    Raft leader) and `actor` who wrote it, `"<component>@<node id>"` from the writer's certificate as the
    raftstore saw it (None when unknown: an in-process store, or an entry written before actors were kept)."""

    revision: int
    changes: tuple[Change, ...]
    time: float = 0.0
    actor: str | None = None

    def to_json(self, shared: bool = False) -> dict[str, Any]:
        """The event's JSON; with `shared`, the watch's compact form (`factor_shared`)."""
        changes, table = changes_json(self.changes, shared)
        out: dict[str, Any] = {"revision": self.revision, "changes": changes}
        if self.time:
            out["time"] = self.time
        if self.actor is not None:
            out["actor"] = self.actor
        if table:
            out[SHARED_KEY] = table
        return out

    @staticmethod
    def from_json(d: dict[str, Any]) -> Event:
        """An event in either form (`to_json`'s, with or without `shared`)."""
        actor = d.get("actor")
        return Event(int(d["revision"]), tuple(Change.from_json(c) for c in changes_read(d)),
                     float(d.get("time") or 0.0), None if actor is None else str(actor))


#: The watch's compact form (`GET /v1/watch?shared=true`, what StoreClient asks for; a transaction's answer too,
#: when its body says `"shared": true`). An event's changes repeat
#: what their objects have in common — each task carries its service's task spec, most of its bytes — and every
#: follower decoded each copy only to share it again (shoal.store.shared.Sharer). In the compact form a value of
#: a kind's `SHARED_FIELDS` that occurs in more than one change of the event is written once, in the event's
#: `"shared"` list; in each change holding it the object keeps the field, in its place, as null, and the change
#: says where the value is: `"refs": {"spec": 0}` (an index into `"shared"`). A reader puts the values back
#: (`Event.from_json`): every change comes out as the plain form had it, its spec one object for all of them. An
#: event without `"shared"` is the plain form, so a reader of the compact form reads both.
SHARED_KEY = "shared"
REFS_KEY = "refs"


def _shareable(c: Change) -> list[tuple[str, Any]]:
    """The (field, value) pairs of `c`'s object that the compact form may hold once (structured values only)."""
    fields = SHARED_FIELDS.get(c.kind)
    if not fields:
        return []
    obj = c.object
    return [(f, v) for f in fields if type(v := obj.get(f)) is dict or type(v) is list]


def factor_shared(changes: tuple[Change, ...] | list[Change]) -> tuple[list[dict[str, Any]], list[Any]]:
    """The changes' JSON in the compact form and the event's table of shared values. Values are the same when
    their JSON is (key order included); each distinct object is encoded once to find out — an event as applied
    holds one spec object for all its tasks (the store shares them, shoal.store.shared), one the history packed
    and decoded again (shoal/store/history.py: a watcher far behind) holds a copy per task."""
    pairs = [_shareable(c) for c in changes]
    key_of: dict[int, bytes] = {}  # id(value) -> its JSON (the values live as long as `changes`)
    count: dict[bytes, int] = {}
    for ps in pairs:
        for _, v in ps:
            k = key_of.get(id(v))
            if k is None:
                k = key_of[id(v)] = dumps(v)
            count[k] = count.get(k, 0) + 1
    table: list[Any] = []
    index: dict[bytes, int] = {}
    out: list[dict[str, Any]] = []
    for c, ps in zip(changes, pairs, strict=True):
        refs: dict[str, int] = {}
        for f, v in ps:
            k = key_of[id(v)]
            if count[k] < 2:
                continue
            i = index.get(k)
            if i is None:
                i = index[k] = len(table)
                table.append(v)
            refs[f] = i
        d = c.to_json()
        if refs:
            d["object"] = obj = c.object.copy()  # the fields keep their places
            for f in refs:
                obj[f] = None
            d[REFS_KEY] = refs
        out.append(d)
    return out, table


def changes_json(changes: tuple[Change, ...] | list[Change], shared: bool) -> tuple[list[dict[str, Any]], list[Any]]:
    """The changes' JSON and the table of shared values: the compact form with `shared`, else the plain one (no
    table). What an event and a transaction's answer both write."""
    if shared:
        return factor_shared(changes)
    return [c.to_json() for c in changes], []


def changes_read(d: dict[str, Any]) -> list[dict[str, Any]]:
    """The plain-form changes of an event's or an answer's JSON `d`, in either form."""
    changes: list[dict[str, Any]] = d["changes"]
    if (table := d.get(SHARED_KEY)) is not None:
        changes = unfactor_shared(changes, table)
    return changes


def unfactor_shared(changes: list[dict[str, Any]], table: Any) -> list[dict[str, Any]]:
    """Compact-form changes with their shared values put back (in place: `changes` were just decoded).
    Unavailable (a reader retries) for a table or reference that does not fit: a broken answer, not data."""
    if type(table) is not list:
        raise Unavailable("store: a watch event's shared values are not a list")
    try:
        for c in changes:
            refs = c.get(REFS_KEY)
            if refs is not None:
                obj = c["object"]
                for f, i in refs.items():
                    if i < 0 or type(i) is not int:
                        raise IndexError(i)
                    obj[f] = table[i]
    except (AttributeError, TypeError, IndexError, KeyError) as e:
        raise Unavailable(f"store: a watch change's shared reference does not fit ({type(e).__name__}: {e}; "
                          f"{len(table)} shared values)") from None
    return changes


@dataclass(frozen=True)
class TxnResult:
    """The revision a transaction committed at and what it changed (deleted objects as they were)."""

    revision: int
    changes: list[Change] = field(default_factory=list)

    @property
    def objects(self) -> list[Obj]:
        return [c.object for c in self.changes]

    def to_json(self, shared: bool = False) -> dict[str, Any]:
        """The answer's JSON; with `shared`, in the compact form of the watch (`factor_shared`)."""
        changes, table = changes_json(self.changes, shared)
        out: dict[str, Any] = {"revision": self.revision, "changes": changes}
        if table:
            out[SHARED_KEY] = table
        return out

    @staticmethod
    def from_json(d: dict[str, Any]) -> TxnResult:
        """An answer in either form."""
        return TxnResult(int(d["revision"]), [Change.from_json(c) for c in changes_read(d)])


@dataclass(frozen=True)
class WatchBatch:
    """Events after a revision, up to `revision` (the store's applied revision when answered)."""

    revision: int
    events: list[Event]

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "events": [e.to_json() for e in self.events]}

    @staticmethod
    def from_json(d: dict[str, Any]) -> WatchBatch:
        return WatchBatch(int(d["revision"]), [Event.from_json(e) for e in d["events"]])


@dataclass(frozen=True)
class Page:
    """One page of a filtered list: the objects, in id order, and the token that continues after them (None
    on the last page). Each page is read on its own (linearizable, at `revision`); see `Store.page`."""

    revision: int
    items: list[Obj]
    next: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "items": self.items, "continue": self.next}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Page:
        return Page(int(d["revision"]), list(d["items"]), d.get("continue"))


#: what a continue token looks like (unpadded base64url), for the OpenAPI schemas of the routes taking one
CONTINUE_PATTERN = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3})?$"
_CONTINUE_RE = re.compile(CONTINUE_PATTERN)
MAX_CONTINUE = 1024


def continue_token(after_id: str) -> str:
    """The token a page hands out to continue after the object `after_id`: that id, base64url (opaque to
    clients, but only a position: any well-formed token continues after the id it spells, so a listing can
    never be broken by a token, only started at another place)."""
    return base64.urlsafe_b64encode(after_id.encode()).decode().rstrip("=")


def continue_after(token: str) -> str:
    """The id a `continue_token` continues after; InvalidArgument for a token that is not unpadded base64url."""
    if not token or len(token) > MAX_CONTINUE or not _CONTINUE_RE.match(token):
        raise InvalidArgument(f"store: continue token {token[:40]!r} is not one a page handed out; start the "
                              "listing again without it")
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8", "replace")
