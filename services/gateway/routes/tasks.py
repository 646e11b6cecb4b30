"""`/v1/tasks`: list tasks (by service, node and desired state) and inspect one. Read-only: tasks are written
by the orchestrator, allocator, scheduler and dispatcher."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from services.gateway.context import GatewayContext, get_context
from services.gateway.core import resolve
from services.gateway.routes.nodes import find_node
from services.gateway.routes.services import find_service
from shoal.errors import NotFound
from shoal.ids import ID_LENGTH
from shoal.models.kinds import Kind
from shoal.models.objects import task_name
from shoal.models.states import TaskState
from shoal.store.txn import Obj

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
Ctx = Annotated[GatewayContext, Depends(get_context)]


@router.get("", summary="List tasks")
async def list_tasks(
    ctx: Ctx,
    service: Annotated[str | None, Query(description="service id, name or unique id prefix")] = None,
    node: Annotated[str | None, Query(description="node id, hostname or unique id prefix")] = None,
    desired_state: Annotated[TaskState | None, Query(description="only tasks with this desired state")] = None,
) -> dict[str, Any]:
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
    revision, tasks = await ctx.store.list(Kind.TASK, **filters)
    return {"revision": revision, "items": tasks}


async def _resolved_or_literal(find: Any, ctx: GatewayContext, ref: str) -> str:
    try:
        found: Obj = await find(ctx.store, ref)
    except NotFound:
        if len(ref) == ID_LENGTH and ref.isalnum() and ref.islower():
            return ref
        raise
    return str(found["id"])


@router.get("/{ref}", summary="Inspect a task (id, unique id prefix, or full task name)")
async def get_task(ref: str, ctx: Ctx) -> Obj:
    try:
        return await ctx.store.get(Kind.TASK, ref)
    except NotFound:
        pass
    _, tasks = await ctx.store.list(Kind.TASK)
    return resolve(tasks, ref, "task", lambda task: [task_name(task)])
