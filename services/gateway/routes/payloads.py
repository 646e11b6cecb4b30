"""`/v1/secrets` and `/v1/configs`: create (data in base64), list, inspect, update (labels only) and remove
(409 while a service references it). A secret's data is never answered; a config's is. The objects and checks
are services/gateway/payloads.py; both kinds share these routes."""

# No `from __future__ import annotations`: the create route's body type is the per-kind model, a local that
# FastAPI must see evaluated.
from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, Depends

from services.gateway.context import GatewayContext, get_context
from services.gateway.core import resolve
from services.gateway.payloads import check_unused, names_of, new_payload_object, public_view, updated_payload
from shoal.errors import AlreadyExists, Conflict, NotFound, VersionConflict
from shoal.models.kinds import Kind
from shoal.models.secrets import ConfigSpec, PayloadUpdate, SecretSpec
from shoal.store import txn as t
from shoal.store.protocol import Store
from shoal.store.rmw import Retry, read_modify_write
from shoal.store.txn import Obj, Op

Ctx = Annotated[GatewayContext, Depends(get_context)]
REMOVE_ATTEMPTS = 5


async def find_payload(store: Store, kind: str, ref: str) -> Obj:
    """The secret or config `ref` names: an id, a name (case-insensitive) or a unique id prefix."""
    _, objs = await store.list(kind)
    return resolve(objs, ref, kind, names_of)


async def _remove(ctx: GatewayContext, kind: str, ref: str) -> Obj:
    async def plan() -> list[Op]:
        obj = await find_payload(ctx.store, kind, ref)
        try:
            if not obj.get("removing"):  # phase 1: move the version, so racing service writes fail and re-read
                res = await ctx.store.txn([t.update(kind, {**obj, "removing": True})])
                obj = res.objects[0]
            _, services = await ctx.store.list(Kind.SERVICE)
            try:
                check_unused(kind, obj, services)
            except Conflict:
                await ctx.store.txn([t.update(kind, {k: v for k, v in obj.items() if k != "removing"})])
                raise
        except (VersionConflict, NotFound) as e:
            raise Retry(str(e)) from e
        return [t.delete(kind, obj["id"], expect_version=obj["meta"]["version"])]

    res = await read_modify_write(ctx.store, plan, attempts=REMOVE_ATTEMPTS,
                                  conflict=f"{kind} {ref!r} kept changing while being removed; retry")
    return public_view(kind, res.objects[0])


def build_router(kind: Kind, spec_model: type[SecretSpec] | type[ConfigSpec]) -> APIRouter:
    plural = kind.value + "s"
    router = APIRouter(prefix=f"/v1/{plural}", tags=[plural])
    example = {"name": "db-password" if kind == Kind.SECRET else "nginx.conf", "labels": {"app": "web"},
               "data": "c2VjcmV0IHZhbHVl"}

    @router.post("", status_code=201, summary=f"Create a {kind.value} (data in base64)")
    async def create(spec: Annotated[spec_model, Body(openapi_examples={"x": {"value": example}})],  # type: ignore[valid-type]
                     ctx: Ctx) -> Obj:
        wire = cast(SecretSpec, spec).wire()  # either model: the same fields and wire()
        _, objs = await ctx.store.list(kind)
        message = f"{kind.value} {wire['name']!r} already exists"
        if any(o["spec"]["name"].lower() == wire["name"].lower() for o in objs):
            raise AlreadyExists(message)
        try:
            res = await ctx.store.txn([t.create(kind, new_payload_object(wire))])
        except AlreadyExists as e:
            raise AlreadyExists(message) from e
        ctx.metrics.inc(f"gateway_{plural}_created_total", help=f"{plural} created through this gateway")
        return public_view(kind, res.objects[0])

    @router.get("", summary=f"List {plural}" + (" (never their data)" if kind == Kind.SECRET else ""))
    async def list_all(ctx: Ctx) -> dict[str, Any]:
        revision, objs = await ctx.store.list(kind)
        objs.sort(key=lambda o: o["spec"]["name"].lower())
        return {"revision": revision, "items": [public_view(kind, o) for o in objs]}

    @router.get("/{ref}", summary=f"Inspect a {kind.value} (id, name or unique id prefix)")
    async def inspect(ref: str, ctx: Ctx) -> Obj:
        return public_view(kind, await find_payload(ctx.store, kind, ref))

    @router.put("/{ref}", summary=f"Update a {kind.value}'s labels (its data is immutable)")
    async def update(ref: str, body: PayloadUpdate, ctx: Ctx) -> Obj:
        current = await find_payload(ctx.store, kind, ref)
        new = updated_payload(kind, current, body)
        try:
            res = await ctx.store.txn([t.update(kind, new, expect_version=body.version)])
        except VersionConflict as e:
            raise VersionConflict(f"{kind.value} {current['spec']['name']!r} changed since version "
                                  f"{body.version} was read; re-read it and retry") from e
        return public_view(kind, res.objects[0])

    @router.delete("/{ref}", summary=f"Remove a {kind.value} (409 while a service references it)")
    async def remove(ref: str, ctx: Ctx) -> Obj:
        out = await _remove(ctx, kind, ref)
        ctx.metrics.inc(f"gateway_{plural}_removed_total", help=f"{plural} removed through this gateway")
        return out

    return router


secrets_router = build_router(Kind.SECRET, SecretSpec)
configs_router = build_router(Kind.CONFIG, ConfigSpec)
