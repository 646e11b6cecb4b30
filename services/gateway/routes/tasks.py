"""`/v1/tasks`: list tasks (by service, node and desired state) and inspect one. Read-only: tasks are written
by the orchestrator, allocator, scheduler and dispatcher."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from services.gateway import lookup
from services.gateway.context import GatewayContext, get_context
from services.gateway.routes.nodes import find_node
from services.gateway.routes.services import find_service
from shoal.errors import InvalidArgument, NotFound
from shoal.ids import ID_LENGTH
from shoal.models.kinds import Kind
from shoal.models.objects import task_name
from shoal.models.states import TaskState
from shoal.store import wire
from shoal.store.txn import CONTINUE_PATTERN, MAX_CONTINUE, Obj

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
Ctx = Annotated[GatewayContext, Depends(get_context)]


MAX_PAGE = 10_000
#: the top-level fields of a task (docs/api.md), which `fields=` may name
TASK_FIELDS = frozenset({"id", "meta", "service_id", "service_name", "slot", "node_id", "desired_state",
                         "spec_version", "spec", "runtime", "status", "endpoint_spec", "job_iteration",
                         "created_by", "networks", "endpoint", "assigned_generic_resources"})
REVISION_HEADER = "Shoal-Revision"
NEXT_HEADER = "Shoal-Next"
LISTED: dict[int | str, dict[str, Any]] = {200: {
    "description": "`{revision, items, next}` (application/json), or with `Accept: application/x-ndjson` one task "
                   "per line (revision and next in the `Shoal-Revision` and `Shoal-Next` headers)",
    "content": {"application/json": {"schema": {"type": "object"}}, wire.NDJSON: {}}}}


@router.get("", summary="List tasks (filtered in the store; `limit` and `next` page through; streamed)",
            response_model=None, responses=LISTED)
async def list_tasks(
    request: Request,
    ctx: Ctx,
    service: Annotated[str | None, Query(description="service id, name or unique id prefix")] = None,
    node: Annotated[str | None, Query(description="node id, hostname or unique id prefix")] = None,
    desired_state: Annotated[TaskState | None, Query(description="only tasks with this desired state")] = None,
    state: Annotated[TaskState | None, Query(description="only tasks observed in this state")] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE,
                                       description="at most this many tasks (then `next` continues)")] = None,
    next_token: Annotated[str | None, Query(alias="next", description="the `next` token of the previous page",
                                            pattern=CONTINUE_PATTERN, min_length=1,
                                            max_length=MAX_CONTINUE)] = None,
    fields: Annotated[str | None, Query(description="only these top-level task fields (comma-separated; `id` "
                                        "always): a list view's projection, e.g. `shoal service ps`'s",
                                        max_length=64 * 65,  # the pattern documents; parse_fields names a bad field
                                        json_schema_extra={"pattern": wire.fields_pattern(TASK_FIELDS)})] = None,
) -> StreamingResponse:
    """Tasks in id order. Without `limit`: all that match, in one answer. With it: one page and `next`, the
    token for the following page (null on the last). Each page is a linearizable read of its own: a task that
    exists throughout a walk appears exactly once; one created or removed during it may or may not.

    The store's encoded tasks are passed through as they arrive (never decoded here): `{"revision", "items",
    "next"}` built around them as a chunked answer, or the store's NDJSON as it is when the client asks for
    `application/x-ndjson` (what `shoal service ps` reads)."""
    try:
        wanted = wire.parse_fields(fields, TASK_FIELDS)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None
    filters: dict[str, str] = {}
    # A deleted service's tasks live on until the reaper deletes them, so a full object id that no longer
    # resolves still filters by that literal id (yielding [] when nothing matches); a name that does not
    # resolve stays a 404, since it is most likely a typo.
    if service:
        filters["service_id"] = await _resolved_or_literal(find_service, ctx, service)
    if node:
        filters["node_id"] = await _resolved_or_literal(find_node, ctx, node)
    if desired_state is not None:
        filters["desired_state"] = str(desired_state)
    if state is not None:
        filters["status.state"] = str(state)
    page = await ctx.store.page_stream(Kind.TASK, limit=limit, cont=next_token, fields=wanted, **filters)
    if wire.NDJSON in request.headers.get("accept", ""):
        headers = {REVISION_HEADER: str(page.revision)}
        if page.next is not None:
            headers[NEXT_HEADER] = page.next
        return StreamingResponse(_closing(page, wire.coalesce(page.chunks)), media_type=wire.NDJSON,
                                 headers=headers)
    return StreamingResponse(_closing(page, _json_page(page)), media_type="application/json")


async def _json_page(page: wire.StreamedPage) -> AsyncIterator[bytes]:
    yield b'{"revision":%d,"items":[' % page.revision
    async for c in wire.as_json_items(wire.coalesce(page.chunks)):
        yield c
    yield b'],"next":' + wire.dumps(page.next) + b"}"


async def _closing(page: wire.StreamedPage, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`body`, then the store's answer released — also when the client leaves half-way."""
    try:
        async for c in body:
            yield c
    finally:
        await page.aclose()


async def _resolved_or_literal(find: Any, ctx: GatewayContext, ref: str) -> str:
    try:
        found: Obj = await find(ctx.store, ref)
    except NotFound:
        if len(ref) == ID_LENGTH and ref.isalnum() and ref.islower():
            return ref
        raise
    return str(found["id"])


@router.get("/{ref}", summary="Inspect a task (id, full task name, or unique id prefix)")
async def get_task(ref: str, ctx: Ctx) -> Obj:
    found = await lookup.get_if_exists(ctx.store, Kind.TASK, ref)
    if found is None and ref.count(".") >= 2:
        # a task's name is `<service>.<slot>.<id>`: read the task its last part names, compare the whole name
        named = await lookup.get_if_exists(ctx.store, Kind.TASK, ref.rsplit(".", 1)[1])
        if named is not None and task_name(named).lower() == ref.lower():
            found = named
    if found is None:
        found = await lookup.by_prefix(ctx.store, Kind.TASK, ref, "task")
    if found is None:
        raise NotFound(f"task {ref!r} not found")
    return found
