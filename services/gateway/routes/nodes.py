"""`/v1/nodes`: list nodes, inspect one by id, hostname or unique id prefix, change a node's spec
(availability, labels, role) and remove a node. Node objects are created and kept READY/DOWN by the
dispatcher; the gateway only writes their `spec`, and deletes them (orphaning their tasks)."""

from __future__ import annotations

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
from shoal.cluster import default_cluster, with_removed_node
from shoal.errors import AlreadyExists, NotFound, VersionConflict
from shoal.models.kinds import DEFAULT_CLUSTER_ID, Kind
from shoal.store import txn as t
from shoal.store.protocol import Store
from shoal.store.rmw import read_modify_write
from shoal.store.txn import Obj, Op

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
    state `orphaned` and add its id to the cluster object's `removed_nodes` (SwarmKit's RemoveNode: an agent
    still holding the id joins again as a new node, it never brings the removed one back). Retried when the
    node, one of its tasks or the cluster object changes in between (e.g. the dispatcher writing a status)."""
    orphans: list[Obj] = []

    async def plan() -> list[Op]:
        nonlocal orphans
        node = await find_node(ctx.store, ref)
        check_node_removable(node, force)
        _, tasks = await ctx.store.list(Kind.TASK, node_id=node["id"])
        now = ctx.clock.now()
        orphans = orphaned_tasks(node["id"], tasks, now)
        try:
            cluster: Obj | None = await ctx.store.get(Kind.CLUSTER, DEFAULT_CLUSTER_ID)
        except NotFound:
            cluster = None
        remember = (t.create(Kind.CLUSTER, with_removed_node(default_cluster(), node["id"], now)) if cluster is None
                    else t.update(Kind.CLUSTER, with_removed_node(cluster, node["id"], now)))
        return [t.delete(Kind.NODE, node["id"], expect_version=node["meta"]["version"]),
                *(t.update(Kind.TASK, task) for task in orphans), remember]

    res = await read_modify_write(ctx.store, plan, attempts=REMOVE_ATTEMPTS,
                                  retry_on=(VersionConflict, NotFound, AlreadyExists),
                                  conflict=f"node {ref!r} kept changing while being removed; retry")
    ctx.metrics.inc("gateway_nodes_removed_total", help="nodes removed through this gateway")
    return {**res.objects[0], "orphaned_tasks": [x["id"] for x in orphans]}
