"""`/v1/cluster/members` and `/v1/cluster/leader/transfer`: the raftstore's membership, relayed.

The gateway sends each request to the first raftstore member that answers (members forward membership changes
to the Raft leader themselves) and hands back its answer, errors included, so `shoal cluster member ...` reads
the store's own messages (quorum refusals, ids that can never come back...)."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Body, Depends, Response

from services.gateway.context import GatewayContext, get_context
from shoal.errors import Unavailable, error_from_response

router = APIRouter(prefix="/v1/cluster", tags=["cluster"])
Ctx = Annotated[GatewayContext, Depends(get_context)]
#: a membership change waits for the new member to catch up and be promoted (the store's default wait is 30 s)
CHANGE_TIMEOUT = 90.0


async def relay(ctx: GatewayContext, method: str, path: str, body: Any = None) -> Response:
    errors: list[str] = []
    for base in ctx.settings.store_members:
        try:
            resp = await ctx.http.request(method, base.rstrip("/") + path, json=body,
                                          timeout=httpx.Timeout(CHANGE_TIMEOUT, connect=2.0))
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            errors.append(f"{base}: {e}")
            continue  # never reached it: the next member may answer
        if resp.status_code >= 400:
            raise error_from_response(resp)
        return Response(resp.content, status_code=resp.status_code, media_type="application/json")
    raise Unavailable(f"no raftstore member answered: {'; '.join(errors)}")


@router.get("/members", summary="Raft members: voters, learners, the leader, removed ids")
async def list_members(ctx: Ctx) -> Response:
    return await relay(ctx, "GET", "/v1/members")


@router.post("/members", status_code=201, summary="Add a raftstore member (learner first, promoted when caught up)")
async def add_member(ctx: Ctx, body: Annotated[dict[str, Any], Body()]) -> Response:
    return await relay(ctx, "POST", "/v1/members", body)


@router.delete("/members/{member_id}", summary="Remove a raftstore member (refused if it would lose quorum)")
async def remove_member(member_id: int, ctx: Ctx) -> Response:
    return await relay(ctx, "DELETE", f"/v1/members/{member_id}")


@router.post("/leader/transfer", summary="Hand raft leadership to a voter (default: the most up to date)")
async def transfer_leader(ctx: Ctx, body: Annotated[dict[str, Any] | None, Body()] = None) -> Response:
    return await relay(ctx, "POST", "/v1/leader/transfer", body or {})
