"""`/v1/services`: create, list, inspect, update and delete services (the gateway owns service specs)."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.context import GatewayContext, get_context
from services.gateway.core import (
    already_exists_message,
    name_taken,
    new_service,
    resolve,
    service_names,
    updated_service,
    with_status,
)
from shoal.errors import AlreadyExists, NotFound, VersionConflict
from shoal.models.kinds import Kind
from shoal.models.specs import ServiceSpec
from shoal.store import txn as t
from shoal.store.protocol import Store
from shoal.store.txn import Obj

router = APIRouter(prefix="/v1/services", tags=["services"])
Ctx = Annotated[GatewayContext, Depends(get_context)]

EXAMPLE_SPEC: dict[str, Any] = {
    "name": "web",
    "mode": {"replicated": {"replicas": 3}},
    "task": {
        "process": {"command": ["sleep", "300"], "env": {"GREETING": "hi"}},
        "resources": {"reservations": {"nano_cpus": 500000000, "memory_bytes": 67108864}},
        "restart": {"condition": "on-failure", "delay": "5s", "max_attempts": 3},
        "placement": {"constraints": ["node.labels.zone==a"]},
    },
}


class ServiceUpdate(BaseModel):
    """`PUT /v1/services/{ref}`: the full new spec and the `meta.version` it was derived from."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=0, description="meta.version of the service as last read (optimistic concurrency)")
    spec: ServiceSpec


async def find_service(store: Store, ref: str) -> Obj:
    """The service `ref` names: an id, a name (case-insensitive) or a unique id prefix."""
    _, services = await store.list(Kind.SERVICE)
    return resolve(services, ref, "service", service_names)


@router.post("", status_code=201, summary="Create a service")
async def create_service(
    spec: Annotated[ServiceSpec, Body(openapi_examples={"process": {"value": EXAMPLE_SPEC}})], ctx: Ctx,
) -> Obj:
    # Checking the name first keeps an obvious duplicate from costing a Raft log entry; the store's unique
    # name index still decides races between gateways.
    _, services = await ctx.store.list(Kind.SERVICE)
    if name_taken(services, spec.name):
        raise AlreadyExists(already_exists_message(spec.name))
    try:
        res = await ctx.store.txn([t.create(Kind.SERVICE, new_service(spec))])
    except AlreadyExists as e:
        raise AlreadyExists(already_exists_message(spec.name)) from e
    ctx.metrics.inc("gateway_services_created_total", help="services created through this gateway")
    return with_status(res.objects[0], [])


@router.get("", summary="List services with their task counts")
async def list_services(ctx: Ctx) -> dict[str, Any]:
    revision, services = await ctx.store.list(Kind.SERVICE)
    _, tasks = await ctx.store.list(Kind.TASK)
    by_service: dict[str, list[Obj]] = defaultdict(list)
    for task in tasks:
        by_service[task.get("service_id", "")].append(task)
    services.sort(key=lambda s: s["spec"]["name"].lower())
    return {"revision": revision, "items": [with_status(s, by_service[s["id"]]) for s in services]}


@router.get("/{ref}", summary="Inspect a service (id, name or unique id prefix)")
async def get_service(ref: str, ctx: Ctx) -> Obj:
    service = await find_service(ctx.store, ref)
    _, tasks = await ctx.store.list(Kind.TASK, service_id=service["id"])
    return with_status(service, tasks)


@router.put("/{ref}", summary="Replace a service's spec (send the version you read)")
async def update_service(ref: str, body: ServiceUpdate, ctx: Ctx) -> Obj:
    current = await find_service(ctx.store, ref)
    new = updated_service(current, body.version, body.spec)
    name = current["spec"]["name"]
    try:
        res = await ctx.store.txn([t.update(Kind.SERVICE, new, expect_version=body.version)])
    except VersionConflict as e:
        raise VersionConflict(f"service {name!r} changed since version {body.version} was read; "
                              "re-read it and retry", **e.details) from e
    except NotFound as e:
        raise NotFound(f"service {name!r} not found (it was removed)") from e
    ctx.metrics.inc("gateway_services_updated_total", help="service specs updated through this gateway")
    _, tasks = await ctx.store.list(Kind.TASK, service_id=current["id"])
    return with_status(res.objects[0], tasks)


@router.delete("/{ref}", summary="Remove a service (the orchestrator then removes its tasks)")
async def delete_service(ref: str, ctx: Ctx) -> Obj:
    service = await find_service(ctx.store, ref)
    try:
        res = await ctx.store.txn([t.delete(Kind.SERVICE, service["id"])])
    except NotFound as e:
        raise NotFound(f"service {service['spec']['name']!r} not found (it was already removed)") from e
    ctx.metrics.inc("gateway_services_removed_total", help="services removed through this gateway")
    return res.objects[0]
