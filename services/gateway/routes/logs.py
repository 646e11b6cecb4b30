"""`GET /v1/services/{ref}/logs` and `GET /v1/tasks/{ref}/logs`: task output as NDJSON records
(`{"task_id", "node_id", "service_id", "stream", "time", "line"}`), streamed from the agents through the
dispatchers holding their sessions (services/gateway/logs.py). `follow` keeps the stream open until the client
goes away (or every followed task ends); `tail` (lines per task, or `all`), `since` (epoch seconds, RFC 3339 or
a duration like `10m`). `timestamps` is accepted for symmetry with Docker: every record carries its time."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from services.gateway.context import GatewayContext, get_context
from services.gateway.logs import task_records
from services.gateway.routes.services import find_service
from services.gateway.routes.tasks import get_task
from shoal import logs
from shoal.models.kinds import Kind
from shoal.store.txn import Obj

router = APIRouter(tags=["logs"])
Ctx = Annotated[GatewayContext, Depends(get_context)]
Follow = Annotated[bool, Query(description="keep streaming new lines until the client goes away")]
Tail = Annotated[str | None, Query(description="lines per task from the end (a number or `all`)")]
Since = Annotated[str | None, Query(description="epoch seconds, RFC 3339, or a duration before now (`10m`)")]
Timestamps = Annotated[bool, Query(description="accepted for compatibility: every record has its `time`")]
NDJSON: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/x-ndjson": {}}, "description": "one JSON record per line"}}


async def service_tasks(ctx: GatewayContext, ref: str) -> tuple[Obj, list[Obj]]:
    service = await find_service(ctx.store, ref)
    _, tasks = await ctx.store.list(Kind.TASK, service_id=service["id"])
    return service, tasks


def stream(ctx: GatewayContext, tasks: list[Obj], tail: str | None, since: str | None,
           follow: bool) -> AsyncIterator[logs.Record]:
    return task_records(ctx, tasks, tail=logs.parse_tail(tail), since=logs.parse_since(since, ctx.clock.now()),
                        follow=follow)


async def ndjson(records: AsyncIterator[logs.Record], tasks: list[Obj]) -> AsyncIterator[bytes]:
    where = {t["id"]: (t.get("node_id") or "", t.get("service_id") or "") for t in tasks}
    async for rec in records:
        node_id, service_id = where.get(rec["task_id"], ("", ""))
        yield (json.dumps({**rec, "node_id": node_id, "service_id": service_id}) + "\n").encode()


@router.get("/v1/services/{ref}/logs", summary="Stream the logs of a service's tasks (NDJSON)", responses=NDJSON)
async def service_logs(ref: str, ctx: Ctx, follow: Follow = False, tail: Tail = None, since: Since = None,
                       timestamps: Timestamps = False) -> StreamingResponse:
    _, tasks = await service_tasks(ctx, ref)
    records = stream(ctx, tasks, tail, since, follow)
    return StreamingResponse(ndjson(records, tasks), media_type="application/x-ndjson")


@router.get("/v1/tasks/{ref}/logs", summary="Stream the logs of one task (NDJSON)", responses=NDJSON)
async def task_logs(ref: str, ctx: Ctx, follow: Follow = False, tail: Tail = None, since: Since = None,
                    timestamps: Timestamps = False) -> StreamingResponse:
    task = await get_task(ref, ctx)
    records = stream(ctx, [task], tail, since, follow)
    return StreamingResponse(ndjson(records, [task]), media_type="application/x-ndjson")
