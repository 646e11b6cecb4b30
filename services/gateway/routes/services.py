"""`/v1/services`: create, list, inspect, update, roll back and delete services (the gateway owns service
specs). Specs are validated by the pydantic models before any store access; the cross-object checks (unique
name, network references, published port conflicts) run on what the store holds, and each write is one
all-or-nothing transaction."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field

from services.gateway import lookup
from services.gateway.context import GatewayContext, get_context
from services.gateway.core import (
    already_exists_message,
    check_port_conflicts,
    name_taken,
    new_service,
    normalised_previous_spec,
    resolve,
    resolve_service_networks,
    rolled_back_service,
    service_names,
    service_network_ids,
    updated_service,
    with_counted_status,
    with_status,
)
from services.gateway.payloads import resolve_refs
from shoal.errors import AlreadyExists, NotFound, VersionConflict
from shoal.models.kinds import DEFAULT_CLUSTER_ID, Kind
from shoal.models.specs import ServiceSpec
from shoal.planning.dryrun import plan_change
from shoal.planning.orchestrator.draft import View
from shoal.store import txn as t
from shoal.store.protocol import Store
from shoal.store.rmw import read_modify_write
from shoal.store.txn import Obj, Op, TxnResult

router = APIRouter(prefix="/v1/services", tags=["services"])
Ctx = Annotated[GatewayContext, Depends(get_context)]
NETWORK_RACE_ATTEMPTS = 5

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


class ServiceRollback(BaseModel):
    """`POST /v1/services/{ref}/rollback`: optionally the `meta.version` read (409 if it moved on)."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, ge=0,
                                description="meta.version of the service as last read; omitted = as read now")


async def find_service(store: Store, ref: str) -> Obj:
    """The service `ref` names: an id, a name (case-insensitive) or a unique id prefix (store-side lookups)."""
    return await lookup.find(store, Kind.SERVICE, ref, "service")


async def counted_status(store: Store, service: Obj) -> Obj:
    """`service` with its replica status, from the store's task counts (no task is read)."""
    _, groups = await store.counts(Kind.TASK, service_id=service["id"])
    return with_counted_status(service, groups)


async def _networks_moved(store: Store, touched: list[Obj], checked: list[tuple[str, Obj]] | None = None) -> bool:
    """Whether one of the networks we rewrote (or the secrets and configs we checked) changed or went away
    since we read it (then our transaction failed because of it, not because of the service: read again and
    retry)."""
    pairs = [(str(Kind.NETWORK), n) for n in touched] + list(checked or [])
    for kind in {k for k, _ in pairs}:
        _, objs = await store.list(kind)
        now = {o["id"]: o["meta"]["version"] for o in objs}
        if any(now.get(o["id"]) != o["meta"]["version"] for k, o in pairs if k == kind):
            return True
    return False


@dataclass
class Refs:
    """The secrets and configs `write_service` read for one attempt, and the (kind, object) pairs the spec
    being built references (checked at their version in the same transaction)."""

    secrets: list[Obj] = field(default_factory=list)
    configs: list[Obj] = field(default_factory=list)
    used: list[tuple[str, Obj]] = field(default_factory=list)

    def resolve(self, spec: Obj, where: str = "") -> Obj:
        """`spec` with its secret and config references resolved (400 for an unknown name)."""
        resolved, self.used = resolve_refs(spec, self.secrets, self.configs, where)
        return resolved


async def write_service(ctx: GatewayContext, build: Callable[[list[Obj], list[Obj]], tuple[Op, Obj]],
                        refs: Refs | None = None) -> TxnResult:
    """Read services and networks, let `build(services, networks)` validate and return the service op and its
    spec, then commit it together with a version-checked rewrite of every network the spec references.

    Rewriting the networks serialises this write with `DELETE /v1/networks/{ref}` (which expects the network's
    version it read): a network cannot disappear under a service that references it. When only a network moved
    on in between, the whole read-check-write is retried; a conflict on the service itself is raised.

    `refs` (filled here with the secrets and configs read, for `refs.resolve` inside `build`): the secrets and
    configs the spec references are checked at the version read (their removal first moves that version, see
    services/gateway/payloads.py), so a service never commits a reference to a removed one."""
    touched: list[Obj] = []
    checked: list[tuple[str, Obj]] = []

    async def plan() -> list[Op]:
        nonlocal touched, checked
        _, services = await ctx.store.list(Kind.SERVICE)
        _, networks = await ctx.store.list(Kind.NETWORK)
        if refs is not None:
            refs.secrets = (await ctx.store.list(Kind.SECRET))[1]
            refs.configs = (await ctx.store.list(Kind.CONFIG))[1]
            refs.used = []
        op, spec = build(services, networks)
        referenced = service_network_ids(spec)
        touched = [n for n in networks if n["id"] in referenced]
        checked = list(refs.used) if refs is not None else []
        checks = [t.check(k, o["id"], expect_version=o["meta"]["version"]) for k, o in checked]
        return [op, *(t.update(Kind.NETWORK, n) for n in touched), *checks]

    async def references_moved(_: Exception) -> bool:
        return await _networks_moved(ctx.store, touched, checked)

    return await read_modify_write(ctx.store, plan, attempts=NETWORK_RACE_ATTEMPTS, should_retry=references_moved,
                                   conflict="the networks, secrets or configs this service references kept "
                                            "changing while it was being written; retry")


def created_service(spec: ServiceSpec, wire: Obj, refs: Refs, services: list[Obj], networks: list[Obj],
                    now: float) -> Obj:
    """The service `POST /v1/services` would write (and its plan simulates), or the reason it is refused."""
    # Checking the name first keeps an obvious duplicate from costing a Raft log entry; the store's unique
    # name index still decides races between gateways.
    if name_taken(services, spec.name):
        raise AlreadyExists(already_exists_message(spec.name))
    resolved, _ = resolve_service_networks(refs.resolve(wire), networks)
    check_port_conflicts(resolved, services)
    return new_service(resolved, now)


def changed_service(body: ServiceUpdate, wire: Obj, refs: Refs, current: Obj, services: list[Obj],
                    networks: list[Obj], now: float) -> Obj:
    """The service `PUT /v1/services/{ref}` would write (and its plan simulates), or the reason it is refused."""
    resolved, _ = resolve_service_networks(refs.resolve(wire, "spec."), networks, field="spec.")
    new = updated_service(current, body.version, resolved, now)
    check_port_conflicts(resolved, services, except_id=current["id"])
    return new


@router.post("", status_code=201, summary="Create a service")
async def create_service(
    spec: Annotated[ServiceSpec, Body(openapi_examples={"process": {"value": EXAMPLE_SPEC}})], ctx: Ctx,
) -> Obj:
    wire = spec.wire()
    refs = Refs()

    def build(services: list[Obj], networks: list[Obj]) -> tuple[Op, Obj]:
        service = created_service(spec, wire, refs, services, networks, ctx.clock.now())
        return t.create(Kind.SERVICE, service), service["spec"]

    try:
        res = await write_service(ctx, build, refs)
    except AlreadyExists as e:
        raise AlreadyExists(already_exists_message(spec.name)) from e
    ctx.metrics.inc("gateway_services_created_total", help="services created through this gateway")
    return with_status(res.objects[0], [])


@router.get("", summary="List services with their task counts")
async def list_services(ctx: Ctx) -> dict[str, Any]:
    # both reads at once: each is a linearizable read (a ReadIndex round with the raft leader), and under a
    # write storm those rounds wait on the leader's loop
    (revision, services), (_, groups) = await asyncio.gather(
        ctx.store.list(Kind.SERVICE), ctx.store.counts(Kind.TASK))  # counts: a few groups per service, not the tasks
    by_service: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for g in groups:
        by_service[g["values"].get("service_id") or ""].append(g)
    services.sort(key=lambda s: s["spec"]["name"].lower())
    return {"revision": revision, "items": [with_counted_status(s, by_service[s["id"]]) for s in services]}


@router.get("/{ref}", summary="Inspect a service (id, name or unique id prefix)")
async def get_service(ref: str, ctx: Ctx) -> Obj:
    return await counted_status(ctx.store, await find_service(ctx.store, ref))


async def _commit_service_change(ctx: GatewayContext, ref: str, version: int | None,
                                 change: Callable[[Obj, list[Obj], list[Obj]], Obj],
                                 refs: Refs | None = None) -> Obj:
    """Shared by update and rollback: find the service, build its new form with `change(current, services,
    networks)`, write it expecting the version read (or `version`), and answer it with its status."""
    found: dict[str, Obj] = {}

    def build(services: list[Obj], networks: list[Obj]) -> tuple[Op, Obj]:
        found.pop("built", None)
        current = resolve(services, ref, "service", service_names)
        found["current"] = current
        new = change(current, services, networks)
        found["built"] = new
        expect = current["meta"]["version"] if version is None else version
        return t.update(Kind.SERVICE, new, expect_version=expect), new["spec"]

    try:
        res = await write_service(ctx, build, refs)
    except VersionConflict as e:
        if "built" not in found:  # refused by our own check of the version
            raise
        name = found["current"]["spec"]["name"]
        raise VersionConflict(f"service {name!r} changed since version "
                              f"{version if version is not None else found['current']['meta']['version']} "
                              "was read; re-read it and retry", **e.details) from e
    except NotFound as e:
        if "built" not in found:
            raise
        raise NotFound(f"service {found['current']['spec']['name']!r} not found (it was removed)") from e
    return await counted_status(ctx.store, res.objects[0])


@router.put("/{ref}", summary="Replace a service's spec (send the version you read)")
async def update_service(ref: str, body: ServiceUpdate, ctx: Ctx) -> Obj:
    wire = body.spec.wire()
    refs = Refs()

    def change(current: Obj, services: list[Obj], networks: list[Obj]) -> Obj:
        return changed_service(body, wire, refs, current, services, networks, ctx.clock.now())

    out = await _commit_service_change(ctx, ref, body.version, change, refs)
    ctx.metrics.inc("gateway_services_updated_total", help="service specs updated through this gateway")
    return out


@router.post("/{ref}/rollback", summary="Roll a service back to its previous spec (manual rollback)")
async def rollback_service(ref: str, ctx: Ctx, body: Annotated[ServiceRollback | None, Body()] = None) -> Obj:
    version = body.version if body is not None else None
    refs = Refs()

    def change(current: Obj, services: list[Obj], networks: list[Obj]) -> Obj:
        previous = refs.resolve(normalised_previous_spec(current), "previous_spec.")
        resolved, _ = resolve_service_networks(previous, networks, field="previous_spec.")
        new = rolled_back_service(current, version, resolved, ctx.clock.now())
        check_port_conflicts(resolved, services, except_id=current["id"])
        return new

    out = await _commit_service_change(ctx, ref, version, change, refs)
    ctx.metrics.inc("gateway_services_rolled_back_total", help="manual rollbacks through this gateway")
    return out


@router.delete("/{ref}", summary="Remove a service (the orchestrator then removes its tasks)")
async def delete_service(ref: str, ctx: Ctx) -> Obj:
    service = await find_service(ctx.store, ref)
    try:
        res = await ctx.store.txn([t.delete(Kind.SERVICE, service["id"])])
    except NotFound as e:
        raise NotFound(f"service {service['spec']['name']!r} not found (it was already removed)") from e
    ctx.metrics.inc("gateway_services_removed_total", help="services removed through this gateway")
    return res.objects[0]


# ---- dry-run plans (shoal/planning/dryrun.py) -----------------------------------------------------------------
async def _plan_inputs(ctx: GatewayContext, refs: Refs) -> tuple[int, list[Obj], list[Obj], View]:
    """What a plan reads — services, networks, secrets, configs, tasks, nodes, the cluster — and nothing else:
    a plan never writes. Returns the store revision of the services read, the services, the networks and the
    orchestrator's view."""
    revision, services = await ctx.store.list(Kind.SERVICE)
    _, networks = await ctx.store.list(Kind.NETWORK)
    refs.secrets = (await ctx.store.list(Kind.SECRET))[1]
    refs.configs = (await ctx.store.list(Kind.CONFIG))[1]
    _, tasks = await ctx.store.list(Kind.TASK)
    _, nodes = await ctx.store.list(Kind.NODE)
    try:
        cluster: Obj | None = await ctx.store.get(Kind.CLUSTER, DEFAULT_CLUSTER_ID)
    except NotFound:
        cluster = None
    view = View(services={x["id"]: x for x in services}, tasks={x["id"]: x for x in tasks},
                nodes={x["id"]: x for x in nodes}, cluster=cluster)
    return revision, services, networks, view


@router.post("/plan", summary="Plan a new service: what creating it would do (writes nothing)")
async def plan_new_service(
    spec: Annotated[ServiceSpec, Body(openapi_examples={"process": {"value": EXAMPLE_SPEC}})], ctx: Ctx,
) -> Obj:
    refs = Refs()
    revision, services, networks, view = await _plan_inputs(ctx, refs)
    now = ctx.clock.now()
    proposed = created_service(spec, spec.wire(), refs, services, networks, now)
    return {"revision": revision, **await _simulate(view, proposed, now)}


@router.post("/{ref}/plan", summary="Plan a spec change: what `PUT /v1/services/{ref}` would do (writes nothing)")
async def plan_service_update(ref: str, body: ServiceUpdate, ctx: Ctx) -> Obj:
    refs = Refs()
    revision, services, networks, view = await _plan_inputs(ctx, refs)
    now = ctx.clock.now()
    current = resolve(services, ref, "service", service_names)
    proposed = changed_service(body, body.spec.wire(), refs, current, services, networks, now)
    return {"revision": revision, **await _simulate(view, proposed, now)}


async def _simulate(view: View, proposed: Obj, now: float) -> Obj:
    """The plan, computed off the event loop (up to a few seconds of CPU for a large rolling update, see
    `dryrun.MAX_WORK`): other requests keep being served meanwhile."""
    return await asyncio.to_thread(plan_change, view, proposed, now)
