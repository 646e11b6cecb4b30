"""`/v1/networks`: create, list, inspect and remove user-defined networks (SwarmKit has no network update), and
attach standalone containers to attachable ones (`/v1/networks/{ref}/attachments`, SwarmKit's
`ResourceAllocator.AttachNetwork` / `DetachNetwork`).

A network object is `{id, spec: NetworkSpec, ipam}`; `ipam` (the subnet and gateway in use) is filled by the
allocator. Names are unique case-insensitively. A network cannot be removed while a service's task spec
attaches to it or a live task (an attachment included) is attached to it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from services.gateway.context import GatewayContext, get_context
from services.gateway.core import (
    AttachRequest,
    attachments_of,
    check_network_unused,
    detached,
    network_names,
    new_attachment,
    new_network,
    resolve,
)
from services.gateway.routes.nodes import find_node
from shoal import endpoints
from shoal.errors import AlreadyExists, NotFound
from shoal.models.kinds import Kind
from shoal.models.network_spec import NetworkSpec
from shoal.store import txn as t
from shoal.store.protocol import Store
from shoal.store.rmw import read_modify_write
from shoal.store.txn import Obj, Op

router = APIRouter(prefix="/v1/networks", tags=["networks"])
Ctx = Annotated[GatewayContext, Depends(get_context)]
REMOVE_ATTEMPTS = 5
WRITE_ATTEMPTS = 5

EXAMPLE_NETWORK: dict[str, Any] = {"name": "backend", "driver": "overlay",
                                   "ipam": {"subnet": "10.20.0.0/24", "gateway": "10.20.0.1"},
                                   "attachable": False, "labels": {"tier": "back"}}


def already_exists_message(name: str) -> str:
    return f"network {name!r} already exists"


async def find_network(store: Store, ref: str) -> Obj:
    """The network `ref` names: an id, a name (case-insensitive) or a unique id prefix."""
    _, networks = await store.list(Kind.NETWORK)
    return resolve(networks, ref, "network", network_names)


@router.post("", status_code=201, summary="Create a network")
async def create_network(
    spec: Annotated[NetworkSpec, Body(openapi_examples={"overlay": {"value": EXAMPLE_NETWORK}})], ctx: Ctx,
) -> Obj:
    _, networks = await ctx.store.list(Kind.NETWORK)
    if any(n["spec"]["name"].lower() == spec.name.lower() for n in networks):
        raise AlreadyExists(already_exists_message(spec.name))
    try:
        res = await ctx.store.txn([t.create(Kind.NETWORK, new_network(spec))])
    except AlreadyExists as e:
        raise AlreadyExists(already_exists_message(spec.name)) from e
    ctx.metrics.inc("gateway_networks_created_total", help="networks created through this gateway")
    return res.objects[0]


@router.get("", summary="List networks")
async def list_networks(ctx: Ctx) -> dict[str, Any]:
    revision, networks = await ctx.store.list(Kind.NETWORK)
    networks.sort(key=lambda n: n["spec"]["name"].lower())
    return {"revision": revision, "items": networks}


@router.get("/{ref}", summary="Inspect a network (id, name or unique id prefix), with each node's attachment "
            "and the endpoints behind each service VIP and published port")
async def get_network(ref: str, ctx: Ctx) -> Obj:
    network = await find_network(ctx.store, ref)
    _, services = await ctx.store.list(Kind.SERVICE)
    _, tasks = await ctx.store.list(Kind.TASK)
    _, nodes = await ctx.store.list(Kind.NODE)
    view = endpoints.network_view(network, services, tasks, nodes)
    return {**network, "node_attachments": view["nodes"], "endpoints": view["endpoints"]}


@router.delete("/{ref}", summary="Remove a network (409 while services or tasks use it)")
async def delete_network(ref: str, ctx: Ctx) -> Obj:
    """Check that nothing uses the network, then delete it expecting the version read. Every service write
    that references a network rewrites it (see `routes.services.write_service`), so a service attaching to the
    network after our check makes the delete fail and the check run again."""
    async def plan() -> list[Op]:
        network = await find_network(ctx.store, ref)
        _, services = await ctx.store.list(Kind.SERVICE)
        _, tasks = await ctx.store.list(Kind.TASK)
        check_network_unused(network, services, tasks)
        return [t.delete(Kind.NETWORK, network["id"], expect_version=network["meta"]["version"])]

    res = await read_modify_write(ctx.store, plan, attempts=REMOVE_ATTEMPTS,
                                  conflict=f"network {ref!r} kept changing while being removed; retry")
    ctx.metrics.inc("gateway_networks_removed_total", help="networks removed through this gateway")
    return res.objects[0]


# ---- attachments ---------------------------------------------------------------------------------------------
@router.post("/{ref}/attachments", status_code=201,
             summary="Attach a standalone container on a node to an attachable network (creates an attachment task)")
async def attach(ref: str, body: AttachRequest, ctx: Ctx) -> Obj:
    """Create a network attachment task (no service, runtime `attachment`, bound to the node, desired
    RUNNING); the allocator gives it an address and its node a load-balancer IP on the network. The network is
    rewritten (unchanged) in the same transaction and the node checked, so a removal of either in between makes
    this read again (and answer 404)."""
    async def plan() -> list[Op]:
        network = await find_network(ctx.store, ref)
        node = await find_node(ctx.store, body.node_id)
        task = new_attachment(network, node, body, ctx.clock.now())
        return [t.create(Kind.TASK, task), t.update(Kind.NETWORK, network), t.check(Kind.NODE, node["id"])]

    res = await read_modify_write(ctx.store, plan, attempts=WRITE_ATTEMPTS,
                                  conflict=f"network {ref!r} kept changing while attaching; retry")
    ctx.metrics.inc("gateway_network_attachments_created_total", help="network attachments created")
    created: Obj = res.objects[0]
    return created


@router.get("/{ref}/attachments", summary="List the attachment tasks of a network (with their addresses)")
async def list_attachments(ref: str, ctx: Ctx) -> dict[str, Any]:
    network = await find_network(ctx.store, ref)
    revision, tasks = await ctx.store.list(Kind.TASK)
    return {"revision": revision, "items": attachments_of(network, tasks)}


@router.delete("/{ref}/attachments/{task_ref}",
               summary="Detach: the attachment task is stopped, then deleted (its address is then free)")
async def detach(ref: str, task_ref: str, ctx: Ctx) -> Obj:
    """Raise the attachment task's desired state to REMOVE (SwarmKit deletes it at once; here removal is
    two-phase like every task's: the agent stops it, the reaper deletes it, and its address is free once it
    stopped). `task_ref`: the task id or a unique prefix. Repeating it answers the task as it is."""
    read: Obj = {}

    async def plan() -> list[Op] | None:
        nonlocal read
        network = await find_network(ctx.store, ref)
        _, tasks = await ctx.store.list(Kind.TASK)
        mine = attachments_of(network, tasks)
        try:
            read = resolve(mine, task_ref, "attachment", lambda x: [])
        except NotFound:
            raise NotFound(f"attachment {task_ref!r} not found on network {network['spec']['name']!r}") from None
        new = detached(read)
        return None if new is None else [t.update(Kind.TASK, new)]

    res = await read_modify_write(ctx.store, plan, attempts=WRITE_ATTEMPTS,
                                  conflict=f"attachment {task_ref!r} kept changing while being detached; retry")
    if res is None:
        return read
    ctx.metrics.inc("gateway_network_attachments_removed_total", help="network attachments detached")
    out: Obj = res.objects[0]
    return out
