"""MemoryStore: the deterministic object-store state machine.

The raftstore applies each committed log entry here (`apply(txn, revision)`); unit and service tests use it
directly. No I/O, no clock: the transaction carries its timestamp and the caller gives the revision. Applying the
same entries in the same order gives the same state on every replica (checked by `state_hash`)."""

from __future__ import annotations

import builtins
import copy
import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sortedcontainers import SortedList

from shoal.errors import (
    AlreadyExists,
    Compacted,
    InvalidArgument,
    NotFound,
    PreconditionFailed,
    TxnTooLarge,
    VersionConflict,
)
from shoal.models.kinds import COUNTED_FIELDS, INDEXED_FIELDS, NAMED_KINDS, Kind
from shoal.store.history import DEFAULT_BYTES, DEFAULT_EVENTS, History
from shoal.store.shared import Sharer
from shoal.store.txn import MAX_TXN_BYTES, MAX_TXN_OPS, Change, Event, Obj, TxnResult

_KINDS = frozenset(k.value for k in Kind)
_OPS = frozenset({"create", "update", "delete", "check"})


def validate_txn(txn: Mapping[str, Any], *, encoded_size: int | None = None) -> None:
    """Shape and bound checks done before proposing, so a bad transaction never reaches the log."""
    ops = txn.get("ops")
    if not isinstance(ops, list) or not ops:
        raise InvalidArgument("store: transaction needs a non-empty 'ops' list")
    if len(ops) > MAX_TXN_OPS:
        raise TxnTooLarge(f"store: transaction has {len(ops)} ops; the limit is {MAX_TXN_OPS}")
    size = encoded_size if encoded_size is not None else len(json.dumps(txn, separators=(",", ":")))
    if size > MAX_TXN_BYTES:
        raise TxnTooLarge(f"store: transaction is {size} bytes; the limit is {MAX_TXN_BYTES}")
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or op.get("op") not in _OPS:
            raise InvalidArgument(f"store: ops[{i}].op must be one of {sorted(_OPS)}")
        if op.get("kind") not in _KINDS:
            raise InvalidArgument(f"store: ops[{i}].kind must be one of {sorted(_KINDS)}")
        if op["op"] in ("create", "update"):
            obj = op.get("object")
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not obj["id"]:
                raise InvalidArgument(f"store: ops[{i}].object must be an object with a string 'id'")
        elif not isinstance(op.get("id"), str):
            raise InvalidArgument(f"store: ops[{i}].id must be a string")


def _field(obj: Obj, dotted: str) -> Any:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _always(obj: Obj) -> bool:
    return True


def _matcher(wanted: Mapping[str, Any]) -> Callable[[Obj], bool]:
    """Whether an object's fields equal every filter (`_field(obj, f) == v` for each), with the common cases —
    no filter, one top-level field (a page of one service's tasks) — as one call without walking dotted
    names."""
    if not wanted:
        return _always
    if len(wanted) == 1:
        ((f, v),) = wanted.items()
        if "." not in f:
            return lambda o: o.get(f) == v
    return lambda o: all(_field(o, f) == v for f, v in wanted.items())


def _key(value: Any) -> Any:
    """An index or count key for a field's value: scalars as they are, anything else as canonical JSON."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _name_key(kind: str, obj: Obj) -> str | None:
    if kind not in NAMED_KINDS:
        return None
    name = _field(obj, "spec.name")
    return name.lower() if isinstance(name, str) and name else None


class MemoryStore:
    """Objects by kind and id, secondary indexes, unique names, live counts, and a bounded history of committed
    events.

    Every kind's ids are kept sorted, and so is each secondary index bucket (`INDEXED_FIELDS`: the ids of the
    objects with one value of the field), so a filtered page (`page`) starts where the last one ended
    (O(log n)) and reads only the objects it returns plus those its unindexed filters skip. `COUNTED_FIELDS`
    keep a count per combination of their values, updated on every write: `counts` answers "how many tasks
    of this service run" without reading a task. All of it is derived state, rebuilt by `restore`."""

    def __init__(self, history: int = DEFAULT_EVENTS, *, history_bytes: int = DEFAULT_BYTES) -> None:
        """`history`: committed events kept for watchers, at most; `history_bytes`: packed bytes of them, at
        most (shoal/store/history.py)."""
        self._objects: dict[str, dict[str, Obj]] = {k: {} for k in _KINDS}
        self._ids: dict[str, SortedList] = {k: SortedList() for k in _KINDS}
        self._names: dict[str, dict[str, str]] = {k: {} for k in _KINDS}
        self._index: dict[str, dict[str, dict[Any, SortedList]]] = {
            k: {f: {} for f in INDEXED_FIELDS.get(k, ())} for k in _KINDS
        }
        self._counted: dict[str, tuple[str, ...]] = {k: COUNTED_FIELDS.get(k, ()) for k in _KINDS}
        self._counts: dict[str, dict[tuple[Any, ...], int]] = {k: {} for k in _KINDS}
        self._history = History(history, max_bytes=history_bytes)
        self._sharer = Sharer()
        self.revision = 0

    # ---- reads -------------------------------------------------------------------------------------------
    def get(self, kind: str, obj_id: str) -> Obj:
        obj = self._objects.get(kind, {}).get(obj_id)
        if obj is None:
            raise NotFound(f"store: {kind} {obj_id!r} not found")
        return obj

    def find(self, kind: str, obj_id: str) -> Obj | None:
        return self._objects.get(kind, {}).get(obj_id)

    def by_name(self, kind: str, name: str) -> Obj | None:
        oid = self._names.get(kind, {}).get(name.lower())
        return None if oid is None else self._objects[kind][oid]

    def list(self, kind: str, **filters: Any) -> list[Obj]:
        """Objects of `kind` whose fields equal every filter (None filters are ignored); sorted by id."""
        return self.page(kind, **filters)[0]

    def page(self, kind: str, *, limit: int | None = None, after: str | None = None, name: str | None = None,
             id_prefix: str | None = None, **filters: Any) -> tuple[builtins.list[Obj], str | None]:
        """Up to `limit` objects of `kind` (all when None) with id > `after`, in id order, whose fields equal
        every filter (dotted names reach nested fields; None filters are ignored); `name`: only the object
        with that name (case-insensitive, named kinds); `id_prefix`: only ids starting with it. Returns the
        page and the id to continue after (None when nothing matching follows)."""
        if kind not in self._objects:
            raise InvalidArgument(f"store: unknown kind {kind!r}")
        if limit is not None and limit < 1:
            raise InvalidArgument(f"store: limit must be at least 1, not {limit}")
        objs = self._objects[kind]
        wanted = {k: v for k, v in filters.items() if v is not None}
        source: Iterable[str]
        if name is not None:
            if kind not in NAMED_KINDS:
                raise InvalidArgument(f"store: kind {kind!r} has no names; filter by a field instead")
            oid = self._names[kind].get(name.lower())
            source = [oid] if oid is not None and (after is None or oid > after) else []
        else:
            index = self._index[kind]
            bucket: SortedList = self._ids[kind]
            exact = None  # a filter the chosen bucket already answers exactly
            for f, v in wanted.items():
                if f in index:
                    hit = index[f].get(_key(v))
                    if hit is None:
                        return [], None
                    if len(hit) <= len(bucket):
                        bucket = hit
                        # a text value's bucket holds exactly the objects whose field is that text (numbers are
                        # other keys; only a structured value's JSON text could share it)
                        exact = f if isinstance(v, str) and not v.startswith(("{", "[")) else None
            if exact is not None:
                wanted = {f: v for f, v in wanted.items() if f != exact}
            if after is not None and (id_prefix is None or after >= id_prefix):
                source = bucket.irange(minimum=after, inclusive=(False, True))
            else:
                source = bucket.irange(minimum=id_prefix) if id_prefix else bucket
        out: builtins.list[Obj] = []
        matches = _matcher(wanted)
        if matches is _always and id_prefix is None and name is None:  # every id in the bucket, in order
            out = [objs[oid] for oid in (itertools.islice(source, limit + 1) if limit is not None else source)]
            if limit is not None and len(out) > limit:
                return out[:limit], out[limit - 1]["id"]
            return out, None
        for oid in source:
            if id_prefix is not None and not oid.startswith(id_prefix):
                if name is None:
                    break  # sorted: no later id has the prefix
                continue
            o = objs[oid]
            if matches(o):
                if limit is not None and len(out) == limit:
                    return out, out[-1]["id"]  # one more matches: there is a next page
                out.append(o)
        return out, None

    def counts(self, kind: str, **filters: Any) -> builtins.list[dict[str, Any]]:
        """How many objects of `kind` have each combination of its counted fields' values (`COUNTED_FIELDS`),
        only the combinations whose values equal every filter (compared as strings: they come from a URL)
        and with at least one object: `[{"values": {field: value}, "count": n}]`, largest count first."""
        if kind not in self._objects:
            raise InvalidArgument(f"store: unknown kind {kind!r}")
        fields = self._counted[kind]
        unknown = sorted(set(filters) - set(fields))
        if unknown:
            raise InvalidArgument(f"store: kind {kind!r} counts by {list(fields)}; cannot filter counts by "
                                  f"{unknown}")
        wanted = [(fields.index(f), str(v)) for f, v in filters.items() if v is not None]
        out: builtins.list[dict[str, Any]] = [{"values": dict(zip(fields, key, strict=True)), "count": n}
               for key, n in self._counts[kind].items()
               if all(key[i] is not None and str(key[i]) == v for i, v in wanted)]
        out.sort(key=lambda g: -g["count"])
        return out

    def count(self, kind: str) -> int:
        return len(self._objects[kind])

    @property
    def compact_revision(self) -> int:
        """Events up to this revision are no longer retained (watching from before it is Compacted)."""
        return self._history.compact_revision

    def events_since(self, revision: int, max_changes: int | None = None) -> builtins.list[Event]:
        """Committed events with revision > `revision`; Compacted if some of them are no longer retained. With
        `max_changes`, the oldest of them up to about that many changes (`History.since_bounded`): the caller
        answers the last one's revision, and the watcher asks again from there."""
        if revision < self.compact_revision:
            raise Compacted(
                f"store: revision {revision} is compacted (history starts after {self.compact_revision}); "
                "re-list and watch from the listed revision",
                compact_revision=self.compact_revision,
            )
        if revision >= self.revision:
            return []
        if max_changes is not None:
            return self._history.since_bounded(revision, max_changes)[0]
        return self._history.since(revision)

    # ---- writes ------------------------------------------------------------------------------------------
    def apply(self, txn: Mapping[str, Any], revision: int) -> TxnResult:
        """Apply a committed transaction at `revision`, all or nothing. Raises (changing nothing but the
        applied revision) when a precondition fails; every replica raises the same error for the same entry."""
        if revision <= self.revision:
            raise InvalidArgument(f"store: revision {revision} is not after {self.revision}")
        self.revision = revision
        staged = self._stage(txn, revision)
        changes: list[Change] = []
        for action, kind, obj_id, obj in staged:
            old = self._objects[kind].get(obj_id)
            if action == "delete":
                assert old is not None
                self._unindex(kind, old)
                del self._objects[kind][obj_id]
                self._ids[kind].remove(obj_id)
                changes.append(Change("delete", kind, obj_id, old))
            else:
                if old is None:
                    self._ids[kind].add(obj_id)
                    self._reindex(kind, obj)
                else:
                    self._reindex(kind, obj, old)
                self._objects[kind][obj_id] = obj
                changes.append(Change(action, kind, obj_id, obj))  # type: ignore[arg-type]
        if changes:
            actor = txn.get("actor")
            self._history.append(Event(revision, tuple(changes), float(txn.get("time") or 0.0),
                                       actor if isinstance(actor, str) else None))
        return TxnResult(revision, changes)

    def _stage(self, txn: Mapping[str, Any], revision: int) -> builtins.list[tuple[str, str, str, Obj]]:
        """Check every precondition against the state as the transaction sees it, build the new objects."""
        now = float(txn.get("time") or 0.0)
        view: dict[tuple[str, str], Obj | None] = {}
        names: dict[tuple[str, str], str | None] = {}

        def current(kind: str, oid: str) -> Obj | None:
            return view[(kind, oid)] if (kind, oid) in view else self._objects[kind].get(oid)

        def name_owner(kind: str, key: str) -> str | None:
            return names[(kind, key)] if (kind, key) in names else self._names[kind].get(key)

        staged: list[tuple[str, str, str, Obj]] = []
        for op in txn["ops"]:
            kind, kind_op = op["kind"], op["op"]
            oid = op["object"]["id"] if kind_op in ("create", "update") else op["id"]
            old = current(kind, oid)
            expect = op.get("expect_version")
            if kind_op == "create":
                if old is not None:
                    raise AlreadyExists(f"store: {kind} {oid!r} already exists")
            elif old is None:
                raise NotFound(f"store: {kind} {oid!r} not found")
            elif expect is not None and old["meta"]["version"] != expect:
                raise VersionConflict(
                    f"store: {kind} {oid!r} is at version {old['meta']['version']}, not {expect}; "
                    "re-read and retry",
                    current_version=old["meta"]["version"],
                )
            if kind_op == "check":
                for f, v in (op.get("expect_fields") or {}).items():
                    assert old is not None
                    if _field(old, f) != v:
                        raise PreconditionFailed(
                            f"store: {kind} {oid!r} has {f}={_field(old, f)!r}, expected {v!r}"
                        )
                continue
            if kind_op == "delete":
                assert old is not None
                key = _name_key(kind, old)
                if key is not None:
                    names[(kind, key)] = None
                view[(kind, oid)] = None
                staged.append(("delete", kind, oid, old))
                continue
            obj = self._sharer.object(kind, op["object"])
            meta = dict(obj.get("meta") or {})
            meta["version"] = revision
            meta["created_at"] = old["meta"]["created_at"] if old is not None else now
            meta["updated_at"] = now
            obj["meta"] = meta
            old_key = _name_key(kind, old) if old is not None else None
            new_key = _name_key(kind, obj)
            if new_key is not None and new_key != old_key:
                owner = name_owner(kind, new_key)
                if owner is not None and owner != oid:
                    raise AlreadyExists(f"store: {kind} name {obj['spec']['name']!r} is already taken")
            if old_key is not None and old_key != new_key:
                names[(kind, old_key)] = None
            if new_key is not None:
                names[(kind, new_key)] = oid
            view[(kind, oid)] = obj
            staged.append((kind_op, kind, oid, obj))
        return staged

    def _reindex(self, kind: str, obj: Obj, old: Obj | None = None) -> None:
        """Index `obj` (replacing `old`, the same object's previous version: only the entries whose value
        changed move)."""
        oid = obj["id"]
        for f, idx in self._index[kind].items():
            v = _key(_field(obj, f))
            if old is not None:
                was = _key(_field(old, f))
                if was == v:
                    continue
                self._drop(idx, was, oid)
            bucket = idx.get(v)
            if bucket is None:
                idx[v] = SortedList((oid,))
            else:
                bucket.add(oid)
        counted = self._counted[kind]
        if counted:
            key = tuple(_key(_field(obj, f)) for f in counted)
            if old is not None:
                was_key = tuple(_key(_field(old, f)) for f in counted)
                if was_key == key:
                    counted = ()
                else:
                    self._uncount(kind, was_key)
            if counted:
                self._counts[kind][key] = self._counts[kind].get(key, 0) + 1
        if old is not None:
            old_name = _name_key(kind, old)
            if old_name is not None and old_name != _name_key(kind, obj) and self._names[kind].get(old_name) == oid:
                del self._names[kind][old_name]
        key_name = _name_key(kind, obj)
        if key_name is not None:
            self._names[kind][key_name] = oid

    @staticmethod
    def _drop(idx: dict[Any, SortedList], value: Any, oid: str) -> None:
        ids = idx.get(value)
        if ids is not None:
            ids.discard(oid)
            if not ids:
                del idx[value]

    def _uncount(self, kind: str, key: tuple[Any, ...]) -> None:
        n = self._counts[kind].get(key, 0) - 1
        if n > 0:
            self._counts[kind][key] = n
        else:
            self._counts[kind].pop(key, None)

    def _unindex(self, kind: str, obj: Obj) -> None:
        for f, idx in self._index[kind].items():
            self._drop(idx, _key(_field(obj, f)), obj["id"])
        if self._counted[kind]:
            self._uncount(kind, tuple(_key(_field(obj, f)) for f in self._counted[kind]))
        key = _name_key(kind, obj)
        if key is not None and self._names[kind].get(key) == obj["id"]:
            del self._names[kind][key]

    def skip(self, revision: int) -> None:
        """Advance the applied revision over a log entry that carries no transaction (e.g. a leader no-op)."""
        if revision > self.revision:
            self.revision = revision

    # ---- snapshots ---------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"revision": self.revision, "objects": {k: list(v.values()) for k, v in self._objects.items()}}

    def restore(self, snap: Mapping[str, Any]) -> None:
        self.__init__(self._history.max_events, history_bytes=self._history.max_bytes)  # type: ignore[misc]
        for kind, objs in snap["objects"].items():
            for obj in objs:
                obj = self._sharer.object(kind, obj)
                self._objects[kind][obj["id"]] = obj
                self._reindex(kind, obj)
            self._ids[kind] = SortedList(self._objects[kind])
        self.revision = int(snap["revision"])
        self._history.compact_revision = self.revision

    def state_hash(self) -> str:
        """A digest of every object, equal on replicas that applied the same entries."""
        h = hashlib.sha256()
        for kind in sorted(self._objects):
            for oid in sorted(self._objects[kind]):
                h.update(json.dumps(self._objects[kind][oid], sort_keys=True).encode())
        return h.hexdigest()

    def copy_of(self, kind: str, obj_id: str) -> Obj:
        return copy.deepcopy(self.get(kind, obj_id))
