"""`/v1/swarm/join-tokens`: the join tokens, relayed to the CA service (only the CA reads kind `ca`). As
Docker's `docker swarm join-token`: show them, or rotate one role's (nodes already joined are unaffected; the
old token stops working). Tokens are secrets: admins only (the gateway's policy), never logged.
`/v1/swarm/unlock-key` (and `/rotate`): the autolock unlock key, likewise relayed to the CA and admins only.

`/v1/swarm/ca`: the current root and a root rotation's progress; `POST /v1/swarm/ca/rotate` starts one
(Docker's `docker swarm ca --rotate`; docs/security.md, "Root rotation")."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from services.gateway.context import GatewayContext, get_context

router = APIRouter(prefix="/v1/swarm", tags=["swarm"])
Ctx = Annotated[GatewayContext, Depends(get_context)]


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["worker", "manager"]


@router.get("/join-tokens", summary="The worker and manager join tokens, and the address to join at")
async def join_tokens(ctx: Ctx) -> Any:
    return await ctx.ca_request("GET", "/v1/tokens")


@router.get("/unlock-key", summary="The managers' unlock key while autolock is on (\"\" when it is off)")
async def unlock_key(ctx: Ctx) -> Any:
    return await ctx.ca_request("GET", "/v1/unlock-key")


@router.post("/unlock-key/rotate", summary="Replace the unlock key (autolock must be on)")
async def rotate_unlock_key(ctx: Ctx) -> Any:
    return await ctx.ca_request("POST", "/v1/unlock-key/rotate", {})


@router.post("/join-tokens/rotate", summary="Replace one role's join token (the old one stops working)")
async def rotate_join_token(body: RotateRequest, ctx: Ctx) -> Any:
    res = await ctx.ca_request("POST", "/v1/tokens/rotate", {"role": body.role})
    ctx.metrics.inc("gateway_join_token_rotations_total", help="join-token rotations relayed to the CA")
    return res


@router.get("/ca", summary="The cluster's root certificate and the progress of a root rotation")
async def ca_status(ctx: Ctx) -> Any:
    return await ctx.ca_request("GET", "/v1/ca")


@router.post("/ca/rotate", summary="Rotate the cluster's root CA (409 while a rotation is in progress)")
async def ca_rotate(ctx: Ctx) -> Any:
    res = await ctx.ca_request("POST", "/v1/ca/rotate")
    ctx.metrics.inc("gateway_root_rotations_total", help="root rotations relayed to the CA")
    return res
