"""`/v1/nodes`: list nodes and inspect one by id, hostname or unique id prefix. Read-only for now: node
objects are written by the dispatcher (registration, READY/DOWN)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from services.gateway.context import GatewayContext, get_context
from services.gateway.core import node_names, resolve
from shoal.models.kinds import Kind
from shoal.store.protocol import Store
from shoal.store.txn import Obj

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])
Ctx = Annotated[GatewayContext, Depends(get_context)]


async def find_node(store: Store, ref: str) -> Obj:
    _, nodes = await store.list(Kind.NODE)
    return resolve(nodes, ref, "node", node_names)


def _hostname(node: Obj) -> str:
    return str(node.get("description", {}).get("hostname") or "")


@router.get("", summary="List nodes")
async def list_nodes(ctx: Ctx) -> dict[str, Any]:
    revision, nodes = await ctx.store.list(Kind.NODE)
    nodes.sort(key=lambda n: (_hostname(n).lower(), n["id"]))
    return {"revision": revision, "items": nodes}


@router.get("/{ref}", summary="Inspect a node (id, hostname or unique id prefix)")
async def get_node(ref: str, ctx: Ctx) -> Obj:
    return await find_node(ctx.store, ref)
