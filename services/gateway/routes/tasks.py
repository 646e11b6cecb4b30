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
    if service:
        filters["service_id"] = (await find_service(ctx.store, service))["id"]
    if node:
        filters["node_id"] = (await find_node(ctx.store, node))["id"]
    if desired_state is not None:
        filters["desired_state"] = str(desired_state)
    revision, tasks = await ctx.store.list(Kind.TASK, **filters)
    return {"revision": revision, "items": tasks}


@router.get("/{ref}", summary="Inspect a task (id, unique id prefix, or full task name)")
async def get_task(ref: str, ctx: Ctx) -> Obj:
    try:
        return await ctx.store.get(Kind.TASK, ref)
    except NotFound:
        pass
    _, tasks = await ctx.store.list(Kind.TASK)
    return resolve(tasks, ref, "task", lambda task: [task_name(task)])
