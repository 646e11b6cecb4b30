"""`/v1/networks`: create, list, inspect and remove user-defined networks (SwarmKit has no network update).

A network object is `{id, spec: NetworkSpec, ipam}`; `ipam` (the subnet and gateway in use) is filled by the
allocator. Names are unique case-insensitively. A network cannot be removed while a service's task spec
attaches to it or a live task is attached to it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from services.gateway.context import GatewayContext, get_context
from services.gateway.core import check_network_unused, network_names, new_network, resolve
from shoal.errors import AlreadyExists, Conflict, NotFound, VersionConflict
from shoal.models.kinds import Kind
from shoal.models.specs import NetworkSpec
from shoal.store import txn as t
from shoal.store.protocol import Store
from shoal.store.txn import Obj

router = APIRouter(prefix="/v1/networks", tags=["networks"])
Ctx = Annotated[GatewayContext, Depends(get_context)]
REMOVE_ATTEMPTS = 5

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


@router.get("/{ref}", summary="Inspect a network (id, name or unique id prefix)")
async def get_network(ref: str, ctx: Ctx) -> Obj:
    return await find_network(ctx.store, ref)


@router.delete("/{ref}", summary="Remove a network (409 while services or tasks use it)")
async def delete_network(ref: str, ctx: Ctx) -> Obj:
    """Check that nothing uses the network, then delete it expecting the version read. Every service write
    that references a network rewrites it (see `routes.services.write_service`), so a service attaching to the
    network after our check makes the delete fail and the check run again."""
    for attempt in range(1, REMOVE_ATTEMPTS + 1):
        network = await find_network(ctx.store, ref)
        _, services = await ctx.store.list(Kind.SERVICE)
        _, tasks = await ctx.store.list(Kind.TASK)
        check_network_unused(network, services, tasks)
        try:
            res = await ctx.store.txn([t.delete(Kind.NETWORK, network["id"],
                                                expect_version=network["meta"]["version"])])
        except (VersionConflict, NotFound) as e:
            if attempt == REMOVE_ATTEMPTS:
                raise Conflict(f"network {network['spec']['name']!r} kept changing while being removed; "
                               "retry") from e
            continue
        ctx.metrics.inc("gateway_networks_removed_total", help="networks removed through this gateway")
        return res.objects[0]
    raise AssertionError("unreachable")
