"""`GET /v1/events?since=REV&until=REV&kind=&action=`: what changed in the cluster, when and by whom, as NDJSON
(one record per changed object, services/gateway/events.py), followed from the store's watch.

Without `since` the stream starts now; with it, at the first change after revision `since`. A `since` older
than the store's retained history (the last 10,000 transactions, up to 16 MiB of them compressed) starts with a
`compacted` notice and goes on from the oldest retained revision. The stream stays open until the client leaves,
or ends once revision `until` is reached."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import Field

from services.gateway import events
from services.gateway.context import GatewayContext, get_context
from shoal.errors import Compacted, ShoalError
from shoal.models.kinds import Kind

log = logging.getLogger(__name__)

router = APIRouter(tags=["events"])
Ctx = Annotated[GatewayContext, Depends(get_context)]
#: one long poll of the store's watch (the stream notices a client that left at least this often)
WATCH_WAIT = 10.0
#: pause before asking again when the store does not answer
RETRY_DELAY = 1.0
NDJSON: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/x-ndjson": {}}, "description": "one event per line"}}


def _line(record: events.Record) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


async def follow(ctx: GatewayContext, after: int, until: int | None, kinds: frozenset[str],
                 actions: frozenset[str]) -> AsyncIterator[bytes]:
    """The records after revision `after` (until `until`, if given) as NDJSON lines."""
    since = after
    while until is None or after < until:
        try:
            batch = await ctx.store.watch(after, wait=WATCH_WAIT)
        except Compacted as e:
            oldest = int(e.details.get("compact_revision", after))
            yield _line(events.compaction_notice(since, oldest, time.time()))
            after = max(after, oldest)
            continue
        except (ShoalError, httpx.HTTPError, OSError) as e:  # the store is away: keep the stream, ask again
            log.debug("gateway: events: the store's watch failed (%s); retrying", e)
            await asyncio.sleep(RETRY_DELAY)
            continue
        for event in batch.events:
            if until is not None and event.revision > until:
                return
            for record in events.records(event, kinds, actions):
                yield _line(record)
        after = max(after, batch.revision)


def _any_of(values: tuple[str, ...]) -> str:
    """A comma-separated list of `values`, as a pattern for the OpenAPI schema (events.parse_filters checks
    it, naming the accepted values)."""
    one = "(" + "|".join(values) + ")"
    return f"^{one}(,{one})*$"


@router.get("/v1/events", summary="Stream the cluster's events (NDJSON)", responses=NDJSON)
async def get_events(
        ctx: Ctx,
        since: Annotated[int | None, Query(ge=0, description="start after this store revision (default: now)")]
        = None,
        until: Annotated[int | None, Query(ge=0, description="end the stream once this revision is reached")]
        = None,
        kind: Annotated[list[Annotated[str, Field(json_schema_extra={"pattern": _any_of(events.KINDS)})]] | None,
                        Query(description="only these kinds (repeat, or comma-separated)")] = None,
        action: Annotated[list[Annotated[str, Field(json_schema_extra={"pattern": _any_of(events.ACTIONS)})]] | None,
                          Query(description="only create, update or delete (repeatable)")] = None) -> StreamingResponse:
    kinds, actions = events.parse_filters(kind or [], action or [])
    if since is None:
        since, _ = await ctx.store.list(Kind.CLUSTER)
    return StreamingResponse(follow(ctx, since, until, kinds, actions), media_type="application/x-ndjson")
