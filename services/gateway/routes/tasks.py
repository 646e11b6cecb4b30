"""`/v1/tasks`: list tasks (by service, node and desired state) and inspect one. Read-only: tasks are written
by the orchestrator, allocator, scheduler and dispatcher."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from services.gateway import lookup
from services.gateway.context import GatewayContext, get_context
from services.gateway.routes.nodes import find_node
from services.gateway.routes.services import find_service
from shoal.errors import NotFound
from shoal.ids import ID_LENGTH
from shoal.models.kinds import Kind
from shoal.models.objects import task_name
from shoal.models.states import TaskState
from shoal.store.txn import CONTINUE_PATTERN, MAX_CONTINUE, Obj

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
Ctx = Annotated[GatewayContext, Depends(get_context)]


MAX_PAGE = 10_000


@router.get("", summary="List tasks (filtered in the store; `limit` and `next` page through)")
async def list_tasks(
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
) -> dict[str, Any]:
    """Tasks in id order. Without `limit`: all that match, in one answer. With it: one page and `next`, the
    token for the following page (null on the last). Each page is a linearizable read of its own: a task that
    exists throughout a walk appears exactly once; one created or removed during it may or may not."""
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
    page = await ctx.store.page(Kind.TASK, limit=limit, cont=next_token, **filters)
    return {"revision": page.revision, "items": page.items, "next": page.next}


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
