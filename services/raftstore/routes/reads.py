"""Reads: objects (linearizable through ReadIndex unless `stale=true`), the watch (long-polls this member's
applied events; kind-`ca` objects redacted for everyone but the CA, secret and config payloads for everyone
but the gateway and dispatcher) and this member's raft status."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from services.raftstore.access import check_kind as check_kind_allowed
from services.raftstore.access import redact_objects, scope_component
from services.raftstore.encoded import Encoded
from services.raftstore.routes.context import KINDS, Context, check_kind, json_response
from services.raftstore.status import status_of
from services.raftstore.watchbytes import WatchBytes
from shoal.errors import InvalidArgument, ShoalError
from shoal.models.stored import Readable
from shoal.store import wire
from shoal.store.txn import Event, continue_after, continue_token

MAX_WATCH_WAIT = 60.0
#: changes one watch answer carries, about (whole events: at least one): a watcher far behind is answered in
#: slices, each decoded and encoded in bounded time on the member's loop, and asks again from the last one
WATCH_MAX_CHANGES = 10_000
#: an object kind in a path: the schema names them (check_kind refuses others, saying which exist)
KindParam = Annotated[str, Path(json_schema_extra={"enum": sorted(KINDS)})]


def _limit(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if limit < 1:
        raise InvalidArgument(f"store: limit must be a whole number of at least 1, not {raw!r}")
    return limit


@dataclass
class _ListQuery:
    """A list's query: the page (`limit`, `continue`), the store-side filters and the `fields` projection."""
    stale: str | None
    limit: int | None
    after: str | None
    name: str | None
    id_prefix: str | None
    fields: tuple[str, ...] | None
    filters: dict[str, str]

    @classmethod
    def parse(cls, filters: dict[str, str]) -> _ListQuery:
        stale = filters.pop("stale", None)
        for reserved in ("kind", "after"):
            if reserved in filters:
                raise InvalidArgument(f"store: {reserved!r} is not a filterable field")
        limit = _limit(filters.pop("limit", None))
        token = filters.pop("continue", None)
        after = continue_after(token) if token else None
        name, id_prefix = filters.pop("name", None), filters.pop("id_prefix", None)
        try:
            fields = wire.parse_fields(filters.pop("fields", None))
        except ValueError as e:
            raise InvalidArgument(f"store: {e}") from None
        return cls(stale, limit, after, name, id_prefix, fields, filters)


async def _watched_events(ctx: Context, after: int, wait: float, upto: int) -> list[Event]:
    """The events after `after`, waiting up to `wait` s for the first; a member that has not applied `upto` (a
    revision known committed) confirms the commit index with the leader first."""
    mem = ctx.driver.fsm.mem
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    if upto > mem.revision and wait > 0:
        with contextlib.suppress(ShoalError):  # no leader, or too slow: wait as without `upto`
            await ctx.driver.read_barrier(max(deadline - loop.time(), 0.001))
    events = mem.events_since(after, WATCH_MAX_CHANGES)
    while not events and (left := deadline - loop.time()) > 0:
        await ctx.driver.wait_applied(left)
        events = mem.events_since(after, WATCH_MAX_CHANGES)
    return events


async def _joined(batches: Iterable[list[bytes]]) -> bytes:
    """The encoded objects joined for a JSON list, a batch at a time, letting the loop turn between batches:
    100,000 tasks encoded in one turn held a member's loop 4-9 s (raft heartbeats unanswered: elections; issue
    13). The objects were taken by reference at the page's revision, so the answer is the same."""
    parts = []
    for b in batches:
        if b:
            parts.append(b",".join(b))
        await asyncio.sleep(0)
    return b",".join(parts)


def answered_revision(revision: int, events: list[Event]) -> int:
    """The revision a watch answer names: the member's, unless the answer was cut (`WATCH_MAX_CHANGES`) —
    then its last event's, so the watcher's next `after` is where this answer stopped."""
    if events and events[-1].revision < revision and sum(len(e.changes) for e in events) >= WATCH_MAX_CHANGES:
        return events[-1].revision
    return revision


def router(ctx: Context) -> APIRouter:
    r = APIRouter()
    mem = ctx.driver.fsm.mem
    hash_cache: dict[str, Any] = {"revision": -1, "hash": ""}
    readable = Readable()  # streamed pages skip unreadable objects here, as StoreClient.page does client-side
    # each listed object's JSON per version and view: a list concatenates bytes
    encoded = Encoded(readable, budget=max(ctx.settings.list_cache_bytes, 0))
    # each watch event's JSON encoded once for every follower, in the plain and the compact form
    watch_bytes = {False: WatchBytes(), True: WatchBytes(shared=True)}

    @r.get("/v1/objects/{kind}")
    async def list_objects(kind: KindParam, request: Request) -> Response:
        check_kind(kind)
        component = scope_component(request.scope)
        check_kind_allowed(component, kind)
        q = _ListQuery.parse(dict(request.query_params))
        fields = q.fields
        await ctx.barrier(q.stale)
        objs, last = mem.page(kind, limit=q.limit, after=q.after, name=q.name, id_prefix=q.id_prefix, **q.filters)
        token = continue_token(last) if last is not None else None
        encoded.prune(kind, mem.count(kind), lambda oid: mem.find(kind, oid) is not None)
        if wire.NDJSON in request.headers.get("accept", ""):
            # Streamed: the objects were taken by reference at this revision (the store replaces an object on
            # write, never changes one in place), so the answer is this page as of now however long the
            # client takes; each chunk is joined (from the cached encodings) when the client is ready for it.
            headers = {wire.REVISION_HEADER: str(mem.revision)}
            if token is not None:
                headers[wire.CONTINUE_HEADER] = token
            return StreamingResponse(wire.ndjson_batches(encoded.batches(component, kind, objs, fields)),
                                     media_type=wire.NDJSON, headers=headers)
        # the JSON answer wire.dumps would write for {"revision", "items", "continue"}, items from the cache;
        # unreadable objects are kept (StoreClient skips and counts them)
        items = await _joined(encoded.batches(component, kind, objs, fields, unreadable=True))
        return Response(b'{"revision":%d,"items":[%b],"continue":%b}' % (mem.revision, items, wire.dumps(token)),
                        media_type="application/json")

    @r.get("/v1/counts/{kind}")
    async def count_objects(kind: KindParam, request: Request) -> Response:
        check_kind(kind)
        check_kind_allowed(scope_component(request.scope), kind)
        filters = dict(request.query_params)
        stale = filters.pop("stale", None)
        await ctx.barrier(stale)
        return json_response({"revision": mem.revision, "groups": mem.counts(kind, **filters)})

    @r.get("/v1/objects/{kind}/{obj_id}")
    async def get_object(kind: KindParam, obj_id: str, request: Request, stale: str | None = None) -> Response:
        check_kind(kind)
        component = scope_component(request.scope)
        check_kind_allowed(component, kind)
        await ctx.barrier(stale)
        return json_response(redact_objects(component, kind, [mem.get(kind, obj_id)])[0])

    @r.get("/v1/watch")
    async def watch(request: Request, after: int = Query(0, ge=0), wait: float = Query(0.0, ge=0.0),
                    upto: int = Query(0, ge=0), shared: bool = Query(False)) -> Response:
        """Events after `after`, waiting up to `wait` s for one. `upto`: a revision the caller knows committed
        (a NATS hint). A follower learns of a commit only from the leader's next append or heartbeat (up to a
        heartbeat interval later, raft/roles.py); a member that has not applied `upto` yet confirms the
        commit index with the leader (ReadIndex: one round trip) instead of waiting for that. `shared`: the
        compact form (a value several changes of an event hold written once)."""
        events = await _watched_events(ctx, after, min(wait, MAX_WATCH_WAIT), upto)
        body = watch_bytes[shared].answer(scope_component(request.scope), answered_revision(mem.revision, events),
                                          events)
        return Response(body, media_type="application/json")

    @r.get("/v1/status")
    async def status(state_hash: bool = Query(False, alias="hash")) -> Response:
        """`hash=true` adds `state_hash`, a digest of every object (O(objects): computed only when asked and
        cached per revision — the gateway's readiness probe and `shoal cluster` poll this route, and at 100k
        tasks hashing on every poll was most of a member's CPU)."""
        if state_hash and hash_cache["revision"] != mem.revision:
            hash_cache.update(revision=mem.revision, hash=mem.state_hash())
        return json_response(status_of(ctx.member, str(hash_cache["hash"]) if state_hash else None).to_json())

    return r
