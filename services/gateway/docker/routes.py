"""The Docker Engine API's swarm subset (v1.41) as routes of the gateway, over the same store operations as
`/v1` (most handlers call the `/v1` route functions with the spec translated by `shoal.models.dockerspec`).
Answers and errors follow dockerd (docs/docker-api.md); these routes are kept out of shoal's OpenAPI document."""

from __future__ import annotations

import platform
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError

from services.gateway.context import GatewayContext, get_context
from services.gateway.core import (
    ClusterUpdate,
    NodeUpdate,
    network_names,
    node_names,
    resolve,
    service_names,
    service_status,
)
from services.gateway.docker import views as v
from services.gateway.payloads import names_of, new_payload_object
from services.gateway.routes import logs as log_routes
from services.gateway.routes import networks as net_routes
from services.gateway.routes import nodes as node_routes
from services.gateway.routes import services as svc_routes
from services.gateway.routes.cluster import _cluster_object, patch_cluster
from services.gateway.routes.payloads import _remove
from shoal import logs
from shoal.errors import AlreadyExists, InvalidArgument, NotFound, ShoalError, Unavailable, VersionConflict
from shoal.models.dockerspec import from_docker
from shoal.models.kinds import Kind
from shoal.models.network_spec import NetworkSpec
from shoal.models.secrets import ConfigSpec, SecretSpec
from shoal.models.specs import NodeSpec, ServiceSpec
from shoal.store import txn as t
from shoal.store.txn import Obj

Ctx = Annotated[GatewayContext, Depends(get_context)]
OUT_OF_SEQUENCE = "rpc error: code = Unknown desc = update out of sequence"
#: Docker Engine API areas shoal does not serve: a clear 501 instead of Docker's "page not found"
ENGINE_ONLY = ("containers", "images", "build", "volumes", "plugins", "exec", "events", "system", "session",
               "commit", "auth", "grpc", "swarm/leave", "swarm/unlock")
NOT_SUPPORTED = ("{what}: not supported by shoal. The gateway serves the Docker Engine API's swarm subset "
                 "(services, tasks, nodes, secrets, configs, networks, swarm); see docs/docker-api.md")
#: dockerd's answer to `swarm init`/`swarm join` on a node already in a swarm (503, errSwarmExists), which the
#: gateway always is; the second sentence says how shoal nodes join instead
SWARM_EXISTS = ("This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join "
                "another one. (shoal: this endpoint is the gateway of a running shoal cluster; add nodes with "
                "`shoal swarm join-token worker|manager` and `shoal swarm join`)")


class DockerError(ShoalError):
    """An error answered with dockerd's status and wording (`{"message": ...}`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[misc]


def _docker_message(kind: str, ref: str, e: ShoalError) -> DockerError:
    if isinstance(e, NotFound):
        return DockerError(404, f"{kind} {ref} not found")
    if isinstance(e, InvalidArgument) and "ambiguous" in e.message:
        count = re.search(r"(\d+) ", e.message)
        return DockerError(400, f"{kind} {ref} is ambiguous ({count.group(1) if count else 'several'} matches found)")
    return DockerError(e.status, e.message)


class DockerRoute(APIRoute):
    """Rewrites shoal's errors into dockerd's: a stale version, a name clash, a spec pydantic refuses."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except VersionConflict:
                raise DockerError(409, OUT_OF_SEQUENCE) from None
            except ValidationError as e:
                raise InvalidArgument(_validation_message(e)) from None
        return handler


def _validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", "")))
    return "invalid spec: " + "; ".join(parts)


router = APIRouter(route_class=DockerRoute, include_in_schema=False)


def ok(status: int = 200) -> Response:
    return Response(status_code=status)


async def _find(ctx: GatewayContext, kind: Kind, ref: str, names: Callable[[Obj], Any]) -> Obj:
    _, objs = await ctx.store.list(kind)
    try:
        return resolve(objs, ref, str(kind), names)
    except ShoalError as e:
        raise _docker_message(str(kind), ref, e) from None


# ---- system --------------------------------------------------------------------------------------------------
PING_HEADERS = {"API-Version": v.API_VERSION, "OSType": "linux", "Docker-Experimental": "false",
                "Swarm": "active/manager", "Cache-Control": "no-cache, no-store, must-revalidate",
                "Pragma": "no-cache"}


@router.api_route("/_ping", methods=["GET", "HEAD"])
async def ping(request: Request) -> Response:
    body = b"" if request.method == "HEAD" else b"OK"
    return Response(body, headers=PING_HEADERS, media_type="text/plain; charset=utf-8")


def version_body() -> Obj:
    from shoal import __version__ as shoal_version

    return {"Platform": {"Name": "shoal"}, "Version": str(shoal_version), "ApiVersion": v.API_VERSION,
            "MinAPIVersion": v.MIN_API_VERSION, "Os": "linux", "Arch": _arch(), "GitCommit": "",
            "GoVersion": "", "KernelVersion": platform.release(), "BuildTime": "",
            "Components": [{"Name": "Engine", "Version": str(shoal_version),
                            "Details": {"ApiVersion": v.API_VERSION, "MinAPIVersion": v.MIN_API_VERSION,
                                        "Os": "linux", "Arch": _arch()}}]}


def _arch() -> str:
    m = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


@router.get("/version")
async def version() -> Obj:
    return version_body()


async def _trust_root(ctx: GatewayContext) -> str:
    if not ctx.settings.cert_dir:
        return ""
    path = Path(ctx.settings.cert_dir) / "ca.pem"
    try:
        return path.read_text()
    except OSError:
        return ""


async def _tokens(ctx: GatewayContext) -> Obj | None:
    try:
        data = await ctx.ca_request("GET", "/v1/tokens")
    except (Unavailable, ShoalError, Exception):
        return None
    return data if isinstance(data, dict) else None


@router.get("/info")
async def info(ctx: Ctx) -> Obj:
    _, nodes = await ctx.store.list(Kind.NODE)
    me = v.self_node(nodes)
    cluster = await _cluster_object(ctx)
    managers = [n for n in nodes if v.node_view(n)["Spec"]["Role"] == "manager"]
    cluster_info = v.swarm_view(cluster, "default", await _trust_root(ctx), None)
    return {"ID": "shoal", "Name": "shoal-gateway", "ServerVersion": version_body()["Version"], "OSType": "linux",
            "OperatingSystem": "shoal", "Architecture": platform.machine(), "NCPU": 0, "MemTotal": 0,
            "Driver": "shoal", "Containers": 0, "Images": 0,
            "Plugins": {"Volume": None, "Network": ["overlay"], "Log": None},
            "Swarm": {"NodeID": me["id"] if me else "", "NodeAddr": "127.0.0.1", "LocalNodeState": "active",
                      "ControlAvailable": True, "Error": "",
                      "RemoteManagers": [{"NodeID": n["id"], "Addr": v.node_view(n)["ManagerStatus"]["Addr"]}
                                         for n in managers],
                      "Nodes": len(nodes), "Managers": len(managers), "Cluster": cluster_info}}


# ---- swarm -----------------------------------------------------------------------------------------------------
@router.get("/swarm")
async def swarm(ctx: Ctx) -> Obj:
    cluster = await _cluster_object(ctx)
    return v.swarm_view(cluster, "default", await _trust_root(ctx), await _tokens(ctx) or {})


@router.post("/swarm/init")
@router.post("/swarm/join")
async def swarm_init_or_join(request: Request) -> Response:
    """dockerd answers 503 when the node is already part of a swarm; the gateway always is one's."""
    await request.body()  # read the request fully: the CLI keeps the connection alive
    return JSONResponse({"message": SWARM_EXISTS}, status_code=503)


@router.get("/swarm/unlockkey")
async def unlock_key() -> Obj:
    return {"UnlockKey": ""}


@router.post("/swarm/update")
async def swarm_update(ctx: Ctx, body: Annotated[Obj, Body()], version: int = 0,
                       rotateWorkerToken: bool = False, rotateManagerToken: bool = False,
                       rotateManagerUnlockKey: bool = False) -> Response:
    if rotateManagerUnlockKey:
        raise InvalidArgument("rotating the unlock key is not supported by shoal (autolock is not enabled)")
    cluster = await _cluster_object(ctx)
    changes = v.swarm_changes(cluster, body)
    if changes:
        await patch_cluster(ClusterUpdate.model_validate({"version": version, **changes}), ctx)
    for role, rotate in (("worker", rotateWorkerToken), ("manager", rotateManagerToken)):
        if rotate:
            await ctx.ca_request("POST", "/v1/tokens/rotate", {"role": role})
    return ok()


# ---- nodes -----------------------------------------------------------------------------------------------------
def _leader(nodes: list[Obj]) -> str | None:
    me = v.self_node(nodes)
    return me["id"] if me else None


@router.get("/nodes")
async def list_nodes(ctx: Ctx, filters: str | None = None) -> list[Obj]:
    f = v.parse_filters(filters, ("id", "name", "label", "role", "membership", "node.label"))
    _, nodes = await ctx.store.list(Kind.NODE)
    leader = _leader(nodes)
    return [v.node_view(n, leader) for n in v.node_filter(nodes, f)]


@router.get("/nodes/{ref}")
async def get_node(ref: str, ctx: Ctx) -> Obj:
    _, nodes = await ctx.store.list(Kind.NODE)
    if ref == "self":
        me = v.self_node(nodes)
        ref = me["id"] if me else ref
    node = await _find(ctx, Kind.NODE, ref, node_names)
    return v.node_view(node, _leader(nodes))


@router.post("/nodes/{ref}/update")
async def update_node(ref: str, ctx: Ctx, body: Annotated[Obj, Body()], version: int) -> Response:
    node = await _find(ctx, Kind.NODE, ref, node_names)
    unknown = sorted(k for k in body if k not in ("Name", "Labels", "Role", "Availability"))
    if unknown:
        raise InvalidArgument(f"{unknown[0]} is not supported by shoal")
    spec = NodeSpec.model_validate({"labels": dict(body.get("Labels") or {}),
                                    "role": body.get("Role") or "worker",
                                    "availability": body.get("Availability") or "active",
                                    **({"name": body["Name"]} if body.get("Name") else {})})
    await node_routes.update_node(node["id"], NodeUpdate(version=version, spec=spec), ctx)
    return ok()


@router.delete("/nodes/{ref}")
async def delete_node(ref: str, ctx: Ctx, force: bool = False) -> Response:
    node = await _find(ctx, Kind.NODE, ref, node_names)
    await node_routes.delete_node(node["id"], ctx, force)
    return ok()


# ---- services --------------------------------------------------------------------------------------------------
def _spec(body: Any) -> ServiceSpec:
    return ServiceSpec.model_validate(from_docker(body))


@router.post("/services/create", status_code=201)
async def create_service(ctx: Ctx, body: Annotated[Obj, Body()]) -> Obj:
    spec = _spec(body)
    try:
        created = await svc_routes.create_service(spec, ctx)
    except AlreadyExists:
        raise DockerError(409, "rpc error: code = AlreadyExists desc = name conflicts with an existing object: "
                               f"service {spec.name} already exists") from None
    return {"ID": created["id"], "Warnings": None}


@router.get("/services")
async def list_services(ctx: Ctx, filters: str | None = None, status: bool = False) -> list[Obj]:
    f = v.parse_filters(filters, ("id", "name", "label", "mode", "runtime"))
    _, services = await ctx.store.list(Kind.SERVICE)
    services = v.service_filter(services, f)
    by_service: dict[str, list[Obj]] = defaultdict(list)
    if status:
        _, tasks = await ctx.store.list(Kind.TASK)
        for task in tasks:
            by_service[task.get("service_id") or ""].append(task)
    return [v.service_view(s, service_status(s, by_service[s["id"]]) if status else None) for s in services]


@router.get("/services/{ref}")
async def get_service(ref: str, ctx: Ctx, insertDefaults: bool = False) -> Obj:
    service = await _find(ctx, Kind.SERVICE, ref, service_names)
    return v.service_view(service)


@router.post("/services/{ref}/update")
async def update_service(ref: str, ctx: Ctx, body: Annotated[Obj, Body()], version: int,
                         rollback: str | None = None, registryAuthFrom: str | None = None) -> Obj:
    service = await _find(ctx, Kind.SERVICE, ref, service_names)
    if rollback is not None and rollback != "previous":
        raise InvalidArgument(f"unrecognized rollback option {rollback}")
    if rollback == "previous":
        await svc_routes.rollback_service(service["id"], ctx, svc_routes.ServiceRollback(version=version))
    else:
        spec = _spec(body)
        await svc_routes.update_service(service["id"], svc_routes.ServiceUpdate(version=version, spec=spec), ctx)
    return {"Warnings": None}


@router.delete("/services/{ref}")
async def delete_service(ref: str, ctx: Ctx) -> Response:
    service = await _find(ctx, Kind.SERVICE, ref, service_names)
    await svc_routes.delete_service(service["id"], ctx)
    return ok()


class LogParams:
    """The query of dockerd's log endpoints the CLI sends: `stdout=1&stderr=1&details=1&tail=…[&follow=1]
    [&timestamps=1][&since=…]` (`--raw` drops `details`)."""

    def __init__(self, follow: bool = False, tail: str | None = None, since: str | None = None,
                 timestamps: bool = False, details: bool = False, stdout: bool = False,
                 stderr: bool = False) -> None:
        if not (stdout or stderr):
            raise DockerError(400, "Bad parameters: you must choose at least one stream")
        self.follow, self.tail, self.since, self.timestamps, self.details = follow, tail, since, timestamps, details
        self.streams = {"shoal"} | ({"stdout"} if stdout else set()) | ({"stderr"} if stderr else set())


LogQueryParams = Annotated[LogParams, Depends()]


async def _docker_logs(ctx: GatewayContext, tasks: list[Obj], q: LogParams) -> StreamingResponse:
    """dockerd's swarm log stream: stdcopy frames of `[<time> ]<details> <line>` (shoal's own lines, such as
    a node being down, on stderr, whatever streams were asked for). `docker service logs` then inspects each
    node, service and task named."""
    where = {t["id"]: (t.get("node_id") or "", t.get("service_id") or "") for t in tasks}
    records = log_routes.stream(ctx, tasks, q.tail, q.since, q.follow)

    async def frames() -> AsyncIterator[bytes]:
        async for rec in records:
            if rec["stream"] not in q.streams:
                continue
            node_id, service_id = where.get(rec["task_id"], ("", ""))
            yield logs.docker_log_frame(rec, node_id=node_id, service_id=service_id, timestamps=q.timestamps,
                                        details=q.details)

    return StreamingResponse(frames(), media_type="application/vnd.docker.multiplexed-stream")


@router.get("/services/{ref}/logs")
async def service_logs(ref: str, ctx: Ctx, q: LogQueryParams) -> Response:
    service = await _find(ctx, Kind.SERVICE, ref, service_names)
    _, tasks = await ctx.store.list(Kind.TASK, service_id=service["id"])
    return await _docker_logs(ctx, tasks, q)


# ---- tasks -----------------------------------------------------------------------------------------------------
@router.get("/tasks")
async def list_tasks(ctx: Ctx, filters: str | None = None) -> list[Obj]:
    f = v.parse_filters(filters, ("id", "name", "label", "service", "node", "desired-state", "_up-to-date",
                                  "runtime"))
    _, services = await ctx.store.list(Kind.SERVICE)
    by_id = {s["id"]: s for s in services}
    service_ids: set[str] | None = None
    if "service" in f:
        service_ids = set()
        for ref in f["service"]:
            try:
                service_ids.add(resolve(services, ref, "service", service_names)["id"])
            except ShoalError as e:
                raise _docker_message("service", ref, e) from None
    node_ids: set[str] | None = None
    if "node" in f:
        node_ids = {(await _find(ctx, Kind.NODE, ref, node_names))["id"] for ref in f["node"]}
    if service_ids is not None and len(service_ids) == 1:
        _, tasks = await ctx.store.list(Kind.TASK, service_id=next(iter(service_ids)))
    else:
        _, tasks = await ctx.store.list(Kind.TASK)
    out = []
    for task in tasks:
        if service_ids is not None and task.get("service_id") not in service_ids:
            continue
        if node_ids is not None and task.get("node_id") not in node_ids:
            continue
        if "id" in f and not v.prefix_match(task["id"], f["id"]):
            continue
        if "desired-state" in f and task.get("desired_state") not in f["desired-state"]:
            continue
        if "_up-to-date" in f and not v.up_to_date(task, by_id.get(task.get("service_id") or "")):
            continue
        if "name" in f:
            name = f"{task.get('service_name')}.{task.get('slot') or task.get('node_id')}"
            if not v.prefix_match(name, f["name"]):
                continue
        if "label" in f and not v.label_match({}, f["label"]):
            continue
        out.append(v.task_view(task))
    return out


@router.get("/tasks/{ref}")
async def get_task(ref: str, ctx: Ctx) -> Obj:
    _, tasks = await ctx.store.list(Kind.TASK)
    try:
        task = resolve(tasks, ref, "task", lambda _t: [])
    except ShoalError as e:
        raise _docker_message("task", ref, e) from None
    return v.task_view(task)


@router.get("/tasks/{ref}/logs")
async def task_logs(ref: str, ctx: Ctx, q: LogQueryParams) -> Response:
    _, tasks = await ctx.store.list(Kind.TASK)
    try:
        task = resolve(tasks, ref, "task", lambda _t: [])
    except ShoalError as e:
        raise _docker_message("task", ref, e) from None
    return await _docker_logs(ctx, [task], q)


# ---- secrets and configs ---------------------------------------------------------------------------------------
def _payload_routes(kind: Kind, model: type[SecretSpec] | type[ConfigSpec]) -> None:
    plural = f"/{kind.value}s"
    with_data = kind == Kind.CONFIG

    @router.get(plural)
    async def list_payloads(ctx: Ctx, filters: str | None = None) -> list[Obj]:
        f = v.parse_filters(filters, ("id", "name", "names", "label"))
        _, objs = await ctx.store.list(kind)
        out = []
        for o in objs:
            name = o["spec"]["name"]
            if "id" in f and not v.prefix_match(o["id"], f["id"]):
                continue
            if "name" in f and not v.prefix_match(name, f["name"]):
                continue
            if "names" in f and name not in f["names"]:
                continue
            if "label" in f and not v.label_match(o["spec"].get("labels") or {}, f["label"]):
                continue
            out.append(v.payload_view(o, with_data))
        return out

    @router.post(f"{plural}/create", status_code=201)
    async def create_payload(ctx: Ctx, body: Annotated[Obj, Body()]) -> Obj:
        spec = model.model_validate(v.payload_spec(body, kind.value))
        _, objs = await ctx.store.list(kind)
        clash = f"rpc error: code = AlreadyExists desc = {kind.value} {spec.name} already exists"
        if any(o["spec"]["name"] == spec.name for o in objs):
            raise DockerError(409, clash)
        try:
            res = await ctx.store.txn([t.create(kind, new_payload_object(spec.model_dump(mode="json")))])
        except AlreadyExists:
            raise DockerError(409, clash) from None
        return {"ID": res.objects[0]["id"]}

    @router.get(plural + "/{ref}")
    async def get_payload(ref: str, ctx: Ctx) -> Obj:
        return v.payload_view(await _find(ctx, kind, ref, names_of), with_data)

    @router.delete(plural + "/{ref}")
    async def delete_payload(ref: str, ctx: Ctx) -> Response:
        obj = await _find(ctx, kind, ref, names_of)
        try:
            await _remove(ctx, kind, obj["id"])
        except ShoalError as e:
            if e.status == 409:
                raise DockerError(400, f"rpc error: code = InvalidArgument desc = {e.message}") from None
            raise
        return ok(204)


_payload_routes(Kind.SECRET, SecretSpec)
_payload_routes(Kind.CONFIG, ConfigSpec)


# ---- networks --------------------------------------------------------------------------------------------------
async def _networks(ctx: GatewayContext) -> list[Obj]:
    _, nets = await ctx.store.list(Kind.NETWORK)
    if not any((n.get("spec") or {}).get("ingress") for n in nets):
        nets.append(v.builtin_ingress())
    return nets


@router.get("/networks")
async def list_networks(ctx: Ctx, filters: str | None = None) -> list[Obj]:
    f = v.parse_filters(filters, ("driver", "id", "label", "name", "scope", "type", "dangling"))
    return [v.network_view(n) for n in v.network_filter(await _networks(ctx), f)]


@router.get("/networks/{ref}")
async def get_network(ref: str, ctx: Ctx, scope: str | None = None, verbose: bool = False) -> Obj:
    try:
        net = resolve(await _networks(ctx), ref, "network", network_names)
    except ShoalError as e:
        raise _docker_message("network", ref, e) from None
    return v.network_view(net)


@router.post("/networks/create", status_code=201)
async def create_network(ctx: Ctx, body: Annotated[Obj, Body()]) -> Obj:
    spec = NetworkSpec.model_validate(v.network_spec(body))
    try:
        net = await net_routes.create_network(spec, ctx)
    except AlreadyExists:
        raise DockerError(409, f"network with name {spec.name} already exists") from None
    return {"Id": net["id"], "Warning": ""}


@router.delete("/networks/{ref}")
async def delete_network(ref: str, ctx: Ctx) -> Response:
    net = resolve(await _networks(ctx), ref, "network", network_names) if ref else None
    if net is None or net["id"] == v.INGRESS_ID:
        raise DockerError(403, "the ingress network is built in and cannot be removed by shoal")
    try:
        await net_routes.delete_network(net["id"], ctx)
    except ShoalError as e:
        if e.status == 409:
            raise DockerError(400, f"rpc error: code = FailedPrecondition desc = {e.message}") from None
        raise
    return ok(204)


# ---- not served --------------------------------------------------------------------------------------------------
@router.get("/distribution/{name:path}/json")
async def distribution(name: str) -> Response:
    return JSONResponse({"message": f"shoal does not resolve image digests ({name} stays as given)"},
                        status_code=404)


def _unsupported(area: str) -> Callable[..., Awaitable[Response]]:
    async def handler(path: str = "") -> Response:
        what = {"containers": "`docker run` and the container commands", "images": "the image commands",
                "build": "`docker build`", "volumes": "the volume commands", "exec": "`docker exec`",
                "events": "`docker events`", "swarm/leave": "`docker swarm leave` (stop the node's agent "
                "and `shoal node rm` it instead)"}.get(area, f"/{area}")
        return JSONResponse({"message": NOT_SUPPORTED.format(what=what)}, status_code=501)
    return handler


for _area in ENGINE_ONLY:
    router.add_api_route(f"/{_area}", _unsupported(_area), methods=["GET", "POST", "PUT", "DELETE", "HEAD"])
    router.add_api_route(f"/{_area}/{{path:path}}", _unsupported(_area),
                         methods=["GET", "POST", "PUT", "DELETE", "HEAD"])
