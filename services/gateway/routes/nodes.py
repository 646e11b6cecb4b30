"""`/v1/nodes`: list nodes, inspect one by id, hostname or unique id prefix, change a node's spec
(availability, labels, role) and remove a node. Node objects are created and kept READY/DOWN by the
dispatcher; the gateway only writes their `spec`, and deletes them (orphaning their tasks)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from services.gateway.context import GatewayContext, get_context
from services.gateway.core import (
    NodeUpdate,
    check_node_removable,
    node_names,
    orphaned_tasks,
    resolve,
    updated_node,
)
from shoal.errors import NotFound, VersionConflict
from shoal.models.kinds import Kind
from shoal.store import txn as t
from shoal.store.protocol import Store
from shoal.store.txn import Obj

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])
Ctx = Annotated[GatewayContext, Depends(get_context)]
REMOVE_ATTEMPTS = 5


async def find_node(store: Store, ref: str) -> Obj:
    _, nodes = await store.list(Kind.NODE)
    return resolve(nodes, ref, "node", node_names)


def _hostname(node: Obj) -> str:
    return str(node.get("description", {}).get("hostname") or "")


def _label(node: Obj) -> str:
    return next((n for n in node_names(node) if n), node["id"])


@router.get("", summary="List nodes")
async def list_nodes(ctx: Ctx) -> dict[str, Any]:
    revision, nodes = await ctx.store.list(Kind.NODE)
    nodes.sort(key=lambda n: (_hostname(n).lower(), n["id"]))
    return {"revision": revision, "items": nodes}


@router.get("/{ref}", summary="Inspect a node (id, hostname or unique id prefix)")
async def get_node(ref: str, ctx: Ctx) -> Obj:
    return await find_node(ctx.store, ref)


@router.patch("/{ref}", summary="Change a node's availability, labels, role or name (send the version you read)")
async def update_node(ref: str, body: NodeUpdate, ctx: Ctx) -> Obj:
    _, nodes = await ctx.store.list(Kind.NODE)
    current = resolve(nodes, ref, "node", node_names)
    new = updated_node(current, body, nodes)
    try:
        res = await ctx.store.txn([t.update(Kind.NODE, new, expect_version=body.version)])
    except VersionConflict as e:
        raise VersionConflict(f"node {_label(current)!r} changed since version {body.version} was read; "
                              "re-read it and retry", **e.details) from e
    except NotFound as e:
        raise NotFound(f"node {_label(current)!r} not found (it was removed)") from e
    ctx.metrics.inc("gateway_nodes_updated_total", help="node specs updated through this gateway")
    return res.objects[0]


@router.delete("/{ref}", summary="Remove a node (READY nodes only with force); its tasks become orphaned")
async def delete_node(
    ref: str, ctx: Ctx,
    force: Annotated[bool, Query(description="remove the node even if it is READY")] = False,
) -> dict[str, Any]:
    """Delete the node and, in the same transaction, set every task on it that has not finished to observed
    state `orphaned` (SwarmKit's RemoveNode). Retried when the node or one of its tasks changes in between
    (e.g. the dispatcher writing a status)."""
    for attempt in range(1, REMOVE_ATTEMPTS + 1):
        node = await find_node(ctx.store, ref)
        check_node_removable(node, force)
        _, tasks = await ctx.store.list(Kind.TASK, node_id=node["id"])
        orphans = orphaned_tasks(node["id"], tasks, time.time())
        ops = [t.delete(Kind.NODE, node["id"], expect_version=node["meta"]["version"]),
               *(t.update(Kind.TASK, task) for task in orphans)]
        try:
            res = await ctx.store.txn(ops)
        except (VersionConflict, NotFound):
            if attempt == REMOVE_ATTEMPTS:
                raise
            continue
        ctx.metrics.inc("gateway_nodes_removed_total", help="nodes removed through this gateway")
        return {**res.objects[0], "orphaned_tasks": [x["id"] for x in orphans]}
    raise AssertionError("unreachable")
