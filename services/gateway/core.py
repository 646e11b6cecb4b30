"""The gateway's pure core: resolving user references to objects, the REPLICAS status of a service, building
the service, node, cluster and network objects written to the store, and the cross-object checks (published
port conflicts, network references, networks in use). No I/O: the routes read the store and call these."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shoal.errors import Conflict, InvalidArgument, NotFound, PermissionDenied, VersionConflict
from shoal.ids import new_id
from shoal.models.cluster_spec import CAConfig, ClusterSpec, DispatcherConfig, EncryptionConfig, OrchestrationConfig
from shoal.models.network_spec import NetworkSpec
from shoal.models.objects import (
    is_attachment,
    job_iteration,
    new_attachment_task,
    status_state,
    task_status,
)
from shoal.models.specs import (
    ALIAS_PATTERN,
    JOB_MODES,
    MAX_ITEMS,
    MAX_KEY_LEN,
    AvailabilityName,
    Key,
    Labels,
    NetworkAttachment,
    NodeSpec,
    RoleName,
    ServiceSpec,
    Text,
    mode_kind,
)
from shoal.models.states import NodeState, TaskState
from shoal.store.txn import Obj

MANUAL_ROLLBACK_MESSAGE = "manually requested rollback"  # SwarmKit's UpdateStatus message
ORPHANED_MESSAGE = "task belonged to a node that has been deleted"


class PortInUse(Conflict):
    """409: a published port is already taken by another service."""

    code = "port_in_use"


class InUse(Conflict):
    """409: the object is still referenced (a network used by a service or task)."""

    code = "in_use"


class FailedPrecondition(Conflict):
    """409: the object is not in a state that allows the operation (e.g. removing a READY node)."""

    code = "failed_precondition"



def resolve(objs: Iterable[Obj], ref: str, kind: str, names: Callable[[Obj], Iterable[str]]) -> Obj:
    """The object `ref` designates, in docker's order: an exact id, then a name (case-insensitive), then a
    unique id prefix. NotFound when nothing matches; InvalidArgument when a name or prefix is ambiguous."""
    items = list(objs)
    for o in items:
        if o["id"] == ref:
            return o
    wanted = ref.lower()
    by_name = [o for o in items if any(n.lower() == wanted for n in names(o) if n)]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        raise InvalidArgument(f"{kind} {ref!r} is ambiguous: {len(by_name)} {kind}s have that name; use an id")
    by_prefix = [o for o in items if o["id"].startswith(ref)] if ref else []
    if len(by_prefix) == 1:
        return by_prefix[0]
    if len(by_prefix) > 1:
        raise InvalidArgument(f"{kind} {ref!r} is ambiguous: it prefixes {len(by_prefix)} {kind} ids; "
                              "use a longer prefix")
    raise NotFound(f"{kind} {ref!r} not found")


def service_names(service: Obj) -> list[str]:
    return [service["spec"]["name"]]


def node_names(node: Obj) -> list[str]:
    """A node answers to its hostname and to its optional spec name."""
    return [str(node.get("description", {}).get("hostname") or ""), str(node.get("spec", {}).get("name") or "")]


def network_names(network: Obj) -> list[str]:
    return [network["spec"]["name"]]


def mode_of(spec: dict[str, Any]) -> str:
    """`replicated`, `global`, `replicated_job` or `global_job`."""
    return mode_kind(spec)


def _observed(task: Obj) -> str:
    return status_state(task) or ""


#: the task fields a service's status counts by: the store keeps live counts of these (`COUNTED_FIELDS`)
STATUS_FIELDS = ("service_id", "desired_state", "status.state", "job_iteration")


def task_groups(tasks: Iterable[Obj]) -> list[dict[str, Any]]:
    """`tasks` counted the way the store counts them (`GET /v1/counts/task`): `[{"values", "count"}]`."""
    counts: Counter[tuple[Any, ...]] = Counter(
        (t.get("service_id"), t.get("desired_state"), (t.get("status") or {}).get("state"), t.get("job_iteration"))
        for t in tasks)
    return [{"values": dict(zip(STATUS_FIELDS, key, strict=True)), "count": n} for key, n in counts.items()]


def service_status(service: Obj, tasks: Iterable[Obj]) -> dict[str, int]:
    """`status_from_counts` of a service's task objects."""
    return status_from_counts(service, task_groups(tasks))


def status_from_counts(service: Obj, groups: Iterable[dict[str, Any]]) -> dict[str, int]:
    """`docker service ls` REPLICAS from task counts (`task_groups`, or the store's): desired tasks, tasks
    running that should run, and completed tasks.

    - replicated: desired = `replicas`; running = tasks desired *and* observed running; completed = tasks
      observed complete;
    - global: desired = its tasks the orchestrator wants running (one per eligible node);
    - jobs: only tasks of the current `job_iteration` count (a task without one counts as iteration 0).
      replicated_job: desired = `total_completions`; global_job: desired = its tasks of this iteration that
      are meant to complete (one per eligible node). running = observed running and desired ≤ complete;
      completed = observed complete."""
    own = [(g["values"], int(g["count"])) for g in groups if g["values"].get("service_id") == service["id"]]

    def count(pred: Callable[[dict[str, Any]], bool]) -> int:
        return sum(n for v, n in own if pred(v))

    def observed(v: dict[str, Any]) -> str:
        return str(v.get("status.state") or "")

    spec = service["spec"]
    kind = mode_of(spec)
    completed = count(lambda v: observed(v) == TaskState.COMPLETE)
    if kind in JOB_MODES:
        it = job_iteration(service)

        def current(v: dict[str, Any]) -> bool:
            return int(v.get("job_iteration") or 0) == it

        def meant(v: dict[str, Any]) -> bool:
            return current(v) and v.get("desired_state") in (TaskState.RUNNING, TaskState.COMPLETE)

        running = count(lambda v: meant(v) and observed(v) == TaskState.RUNNING)
        completed = count(lambda v: current(v) and observed(v) == TaskState.COMPLETE)
        if kind == "replicated_job":
            job = spec["mode"]["replicated_job"]
            desired = int(job.get("total_completions", job.get("max_concurrent", 1)))
        else:
            desired = count(meant)
        return {"desired": desired, "running": running, "completed": completed}

    def should_run(v: dict[str, Any]) -> bool:
        return bool(v.get("desired_state") == TaskState.RUNNING)

    running = count(lambda v: should_run(v) and observed(v) == TaskState.RUNNING)
    desired = int(spec["mode"]["replicated"].get("replicas", 1)) if kind == "replicated" else count(should_run)
    return {"desired": desired, "running": running, "completed": completed}


def with_status(service: Obj, tasks: Iterable[Obj]) -> Obj:
    return {**service, "status": service_status(service, tasks)}


def with_counted_status(service: Obj, groups: Iterable[dict[str, Any]]) -> Obj:
    return {**service, "status": status_from_counts(service, groups)}


def name_taken(services: Iterable[Obj], name: str, except_id: str | None = None) -> bool:
    key = name.lower()
    return any(s["spec"]["name"].lower() == key and s["id"] != except_id for s in services)


def already_exists_message(name: str) -> str:
    return f"service {name!r} already exists"


def new_service(spec: Obj, now: float) -> Obj:
    """A service object as first written (`spec` is the validated wire spec, networks resolved): spec version
    1, no previous spec, no update status; jobs start at iteration 0."""
    obj: Obj = {"id": new_id(), "spec": spec, "spec_version": 1, "previous_spec": None, "update_status": None}
    if mode_of(spec) in JOB_MODES:
        obj["job_status"] = {"job_iteration": 0, "last_execution": now}
    return obj


def check_version(kind: str, name: str, current: Obj, version: int | None) -> None:
    """VersionConflict unless `version` (when given) is the object's `meta.version`."""
    at = current["meta"]["version"]
    if version is not None and version != at:
        raise VersionConflict(
            f"{kind} {name!r} is at version {at}, not {version}: it changed since it was read; "
            "re-read it and retry", current_version=at)


def _next_job_status(current: Obj, spec: Obj, now: float) -> Obj | None:
    """Every spec change of a job starts a new iteration (the job runs again), like SwarmKit."""
    if mode_of(spec) not in JOB_MODES:
        return current.get("job_status")
    return {"job_iteration": job_iteration(current) + 1, "last_execution": now}


def updated_service(current: Obj, version: int, new: Obj, now: float = 0.0) -> Obj:
    """The service after `PUT` with `{"version", "spec"}` (`new` is the validated wire spec, networks
    resolved), or the reason it is refused.

    Like SwarmKit's UpdateService: the caller must send the version it read (optimistic concurrency), the name
    is immutable, and so is the kind of mode (SwarmKit answers Unimplemented). The old spec becomes
    `previous_spec` (for rollback), `update_status` is reset, and a job starts a new iteration."""
    name = current["spec"]["name"]
    check_version("service", name, current, version)
    if new["name"] != name:
        raise InvalidArgument(f"spec.name: renaming a service is not supported ({name!r} -> {new['name']!r})")
    old_mode, new_mode = mode_of(current["spec"]), mode_of(new)
    if old_mode != new_mode:
        raise InvalidArgument(f"spec.mode: changing the mode of a service is not supported "
                              f"({old_mode} -> {new_mode}); remove the service and create it again")
    out = {**current, "spec": new, "previous_spec": current["spec"],
           "spec_version": int(current.get("spec_version", 1)) + 1, "update_status": None}
    job_status = _next_job_status(current, new, now)
    if job_status is not None:
        out["job_status"] = job_status
    return out


def normalised_previous_spec(current: Obj) -> Obj:
    """The previous spec of a service as a valid wire spec (defaults of newer fields filled in), or 400 when
    there is none to roll back to."""
    previous = current.get("previous_spec")
    name = current["spec"]["name"]
    if not previous:
        raise InvalidArgument(f"service {name!r} has no previous spec to roll back to")
    try:
        return ServiceSpec.model_validate(previous).wire()
    except ValueError as e:
        raise InvalidArgument(f"previous_spec of service {name!r} is no longer valid: {e}") from e


def rolled_back_service(current: Obj, version: int | None, previous: Obj, now: float) -> Obj:
    """Manual rollback (SwarmKit's `UpdateService` with `rollback=PREVIOUS`): spec and previous spec swap,
    `spec_version` + 1, and `update_status` says the rollback started. `previous` is the normalised
    previous spec (networks resolved)."""
    check_version("service", current["spec"]["name"], current, version)
    out = {**current, "spec": previous, "previous_spec": current["spec"],
           "spec_version": int(current.get("spec_version", 1)) + 1,
           "update_status": {"state": "rollback_started", "message": MANUAL_ROLLBACK_MESSAGE, "started_at": now}}
    job_status = _next_job_status(current, previous, now)
    if job_status is not None:
        out["job_status"] = job_status
    return out


# ---- networks referenced by services -----------------------------------------------------------------------
def resolve_service_networks(spec: Obj, networks: Iterable[Obj], field: str = "") -> tuple[Obj, list[Obj]]:
    """`spec` with every `task.networks[].target` replaced by the network's id, and the networks it references
    (in order). 400 naming the field when a target names no network (or two), or when two targets name the
    same network. `field` prefixes the field names in messages (`spec.` for updates)."""
    nets = list(networks)
    attachments = spec.get("task", {}).get("networks") or []
    if not attachments:
        return spec, []
    resolved: list[Obj] = []
    out: list[Obj] = []
    for i, att in enumerate(attachments):
        where = f"{field}task.networks[{i}].target"
        try:
            net = resolve(nets, att["target"], "network", network_names)
        except NotFound:
            raise InvalidArgument(f"{where}: network {att['target']!r} not found") from None
        except InvalidArgument as e:
            raise InvalidArgument(f"{where}: {e.message}") from None
        if any(n["id"] == net["id"] for n in resolved):
            raise InvalidArgument(f"{where}: network {net['spec']['name']!r} is attached more than once")
        resolved.append(net)
        out.append({**att, "target": net["id"]})
    return {**spec, "task": {**spec["task"], "networks": out}}, resolved


def service_network_ids(spec: Obj | None) -> set[str]:
    return {str(a.get("target")) for a in ((spec or {}).get("task") or {}).get("networks") or []}


def _task_network_ids(task: Obj) -> set[str]:
    """Networks a task is attached to (`task.networks[]`, the allocator's attachments: `network.id` or
    `network_id`) or asks for (`task.spec.networks[].target`, before the allocator served it)."""
    ids = {str(a.get("target")) for a in (task.get("spec") or {}).get("networks") or [] if isinstance(a, dict)}
    for att in task.get("networks") or []:
        if isinstance(att, str):
            ids.add(att)
        elif isinstance(att, dict):
            net = att.get("network")
            if isinstance(net, dict) and net.get("id"):
                ids.add(str(net["id"]))
            for key in ("network_id", "id", "target"):
                if att.get(key):
                    ids.add(str(att[key]))
    return ids


def check_network_unused(network: Obj, services: Iterable[Obj], tasks: Iterable[Obj]) -> None:
    """InUse (409) while a service's task spec attaches to `network`, or a task that may still use it (not
    terminal, and not being shut down) is attached to it; like SwarmKit's RemoveNetwork."""
    nid, name = network["id"], network["spec"]["name"]
    users = sorted(s["spec"]["name"] for s in services if nid in service_network_ids(s.get("spec")))
    if users:
        raise InUse(f"network {name!r} is in use by service {users[0]!r}"
                    + (f" (and {len(users) - 1} more)" if len(users) > 1 else "")
                    + "; remove the network from those services first", services=users)
    for task in tasks:
        if nid not in _task_network_ids(task):
            continue
        observed = _observed(task) or TaskState.NEW
        desired = str(task.get("desired_state") or TaskState.RUNNING)
        if TaskState(observed) <= TaskState.RUNNING and TaskState(desired) <= TaskState.COMPLETE:
            if is_attachment(task):
                raise InUse(f"network {name!r} is in use by task {task['id']} (an attachment on node "
                            f"{task.get('node_id')}, {observed}); detach it first", task=task["id"])
            raise InUse(f"network {name!r} is in use by task {task['id']} "
                        f"({task.get('service_name') or 'no service'}, {observed})", task=task["id"])


# ---- network attachments (SwarmKit's ResourceAllocator.AttachNetwork / DetachNetwork) ------------------------
class AttachRequest(BaseModel):
    """`POST /v1/networks/{ref}/attachments`: attach a container the cluster does not manage, on `node_id`, to
    an attachable network."""

    model_config = ConfigDict(extra="forbid", strict=True)

    node_id: Key = Field(description="the node: id, hostname or unique id prefix")
    container_id: Annotated[Text, Field(max_length=MAX_KEY_LEN)] = Field(
        default="", description="the standalone container this attachment is for")
    aliases: list[Annotated[Key, Field(json_schema_extra={"pattern": ALIAS_PATTERN})]] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="extra DNS names on the network")

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, v: list[str]) -> list[str]:
        return NetworkAttachment.model_validate({"target": "-", "aliases": v}).aliases


def check_attachable(network: Obj) -> None:
    """PermissionDenied (403) unless standalone containers may attach to `network` (SwarmKit's AttachNetwork:
    "network not manually attachable"). The ingress network never is."""
    spec = network.get("spec") or {}
    name = spec.get("name") or network["id"]
    if spec.get("ingress"):
        raise PermissionDenied(f"network {name!r} is the ingress network: containers cannot be attached to it")
    if not spec.get("attachable"):
        raise PermissionDenied(f"network {name!r} is not attachable: only networks created with attachable "
                               "(shoal network create --attachable) take standalone containers")


def new_attachment(network: Obj, node: Obj, body: AttachRequest, now: float) -> Obj:
    """The attachment task for `body` (checked: the network is attachable)."""
    check_attachable(network)
    return new_attachment_task(network["id"], node["id"], now, container_id=body.container_id,
                               aliases=body.aliases)


def attachments_of(network: Obj, tasks: Iterable[Obj]) -> list[Obj]:
    """The attachment tasks on `network`, oldest first."""
    nid = network["id"]
    mine = [x for x in tasks if is_attachment(x) and nid in _task_network_ids(x)]
    return sorted(mine, key=lambda x: ((x.get("meta") or {}).get("created_at") or 0.0, x["id"]))


def detached(task: Obj) -> Obj | None:
    """The attachment task with desired state REMOVE (the agent stops it, then the reaper deletes it and its
    address is free), or None when it already is."""
    if TaskState(str(task.get("desired_state") or TaskState.RUNNING)) >= TaskState.REMOVE:
        return None
    return {**task, "desired_state": str(TaskState.REMOVE)}


def new_network(spec: NetworkSpec) -> Obj:
    """A network object as first written; `ipam` (subnet, gateway actually used) is filled by the allocator."""
    return {"id": new_id(), "spec": spec.wire(), "ipam": None}


# ---- published ports -----------------------------------------------------------------------------------------
def _published(ports: Iterable[Mapping[str, Any]]) -> list[tuple[int, str, str]]:
    """(published port, protocol, publish mode) of the ports that name a published port."""
    out = []
    for p in ports:
        port = int(p.get("published_port") or 0)
        if port:
            out.append((port, str(p.get("protocol") or "tcp"), str(p.get("publish_mode") or "ingress")))
    return out


def check_port_conflicts(spec: Obj, services: Iterable[Obj], except_id: str | None = None) -> None:
    """PortInUse (409) when a published port of `spec` clashes with another service's (SwarmKit's
    checkPortConflicts, per port and protocol): an ingress port is cluster-wide, so it clashes with the same
    port published by another service in either mode; host-mode ports only clash with ingress ports (two
    services may publish the same host port: the scheduler keeps them on different nodes). Other services'
    ports are read from their spec and from the ports the allocator assigned (`endpoint.ports`)."""
    mine = _published((spec.get("endpoint") or {}).get("ports") or [])
    if not mine:
        return
    for other in sorted(services, key=lambda s: s["spec"]["name"].lower()):
        if other["id"] == except_id:
            continue
        theirs = _published([*((other["spec"].get("endpoint") or {}).get("ports") or []),
                             *((other.get("endpoint") or {}).get("ports") or [])])
        for port, proto, mode in mine:
            for oport, oproto, omode in theirs:
                if (port, proto) != (oport, oproto) or mode == omode == "host":
                    continue
                oname = other["spec"]["name"]
                raise PortInUse(
                    f"spec.endpoint.ports: port {port}/{proto} is already in use by service {oname!r} "
                    f"({other['id']}) as {'an ingress' if omode == 'ingress' else 'a host-published'} port",
                    service=oname, service_id=other["id"], port=port, protocol=proto)


# ---- nodes ---------------------------------------------------------------------------------------------------
class NodeUpdate(BaseModel):
    """`PATCH /v1/nodes/{ref}`: the version read, and either a whole `spec` or the changes to make."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=0, description="meta.version of the node as last read (optimistic concurrency)")
    spec: NodeSpec | None = Field(default=None, description="the whole new spec (exclusive with the rest)")
    availability: AvailabilityName | None = None
    role: RoleName | None = None
    name: str | None = None
    labels_add: Labels = Field(default_factory=dict, json_schema_extra={"propertyNames": {
        "pattern": r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$", "maxLength": MAX_KEY_LEN}})
    labels_rm: list[str] = Field(default_factory=list)

    @field_validator("labels_add")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        if any(not k.strip() for k in v):
            raise ValueError("label keys must not be empty")
        return v

    @model_validator(mode="after")
    def _spec_or_changes(self) -> NodeUpdate:
        partial = [k for k in ("availability", "role", "name") if getattr(self, k) is not None]
        partial += [k for k in ("labels_add", "labels_rm") if getattr(self, k)]
        if self.spec is not None and partial:
            raise ValueError(f"give either spec or individual changes, not both (got spec and {partial[0]})")
        both = set(self.labels_add) & set(self.labels_rm)
        if both:
            raise ValueError(f"label {sorted(both)[0]!r} is both added and removed")
        return self


def updated_node(current: Obj, body: NodeUpdate, nodes: Iterable[Obj]) -> Obj:
    """The node with its spec changed as `body` asks, or why not: a stale version (409), removing a label it
    does not have (400), or demoting the last manager (400)."""
    name = next((n for n in node_names(current) if n), current["id"])
    check_version("node", name, current, body.version)
    old_spec: Obj = dict(current.get("spec") or {})
    if body.spec is not None:
        spec = body.spec.model_dump(mode="json", exclude_none=True)
    else:
        spec = {**old_spec, "labels": dict(old_spec.get("labels") or {})}
        for key in body.labels_rm:
            if key not in spec["labels"]:
                raise InvalidArgument(f"labels_rm: node {name!r} has no label {key!r}")
            del spec["labels"][key]
        spec["labels"].update(body.labels_add)
        for key in ("availability", "role", "name"):
            value = getattr(body, key)
            if value is not None:
                spec[key] = value
        try:
            spec = NodeSpec.model_validate(spec).model_dump(mode="json", exclude_none=True)
        except ValueError as e:
            raise InvalidArgument(f"spec: {e}") from e
    if old_spec.get("role") == "manager" and spec.get("role") == "worker":
        managers = [n for n in nodes if (n.get("spec") or {}).get("role") == "manager"]
        if len(managers) <= 1:
            raise InvalidArgument(f"role: node {name!r} is the last manager; promote another node first")
    return {**current, "spec": spec}


def check_node_removable(node: Obj, force: bool) -> None:
    """Like SwarmKit's RemoveNode: a READY node is only removed with force (it is still running tasks)."""
    state = status_state(node) or NodeState.UNKNOWN.value
    if state == NodeState.READY and not force:
        name = next((n for n in node_names(node) if n), node["id"])
        raise FailedPrecondition(
            f"node {name!r} is ready and cannot be removed: drain it (its tasks move elsewhere) and stop its "
            "agent so it goes down, or remove it anyway with force (`shoal node rm --force`)", state=state)


def orphaned_tasks(node_id: str, tasks: Iterable[Obj], now: float) -> list[Obj]:
    """The non-terminal tasks of a removed node with observed state ORPHANED (SwarmKit's orphanNodeTasks):
    nobody can report on them any more."""
    out = []
    for task in tasks:
        if task.get("node_id") != node_id:
            continue
        observed = _observed(task) or TaskState.NEW
        if TaskState(observed) < TaskState.COMPLETE:
            out.append({**task, "status": task_status(TaskState.ORPHANED, now, ORPHANED_MESSAGE)})
    return out


# ---- cluster -------------------------------------------------------------------------------------------------
class ClusterUpdate(BaseModel):
    """`PATCH /v1/cluster`: the version read (required, like every update), and either a whole `spec` or the
    sections to change (`dispatcher`, `orchestration`, `ca_config`, `encryption_config`; fields left out keep
    their value)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: int = Field(ge=0, description="meta.version of the cluster as last read (optimistic concurrency); "
                                          "0 when `GET /v1/cluster` shows no meta (not created yet)")
    spec: ClusterSpec | None = None
    dispatcher: DispatcherConfig | None = None
    orchestration: OrchestrationConfig | None = None
    ca_config: CAConfig | None = None
    encryption_config: EncryptionConfig | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ClusterUpdate:
        sections = (self.dispatcher, self.orchestration, self.ca_config, self.encryption_config)
        if self.spec is not None and any(s is not None for s in sections):
            raise ValueError("give either spec or the sections to change (dispatcher, orchestration, ca_config), "
                             "not both")
        if self.spec is None and all(s is None for s in sections):
            raise ValueError("nothing to change: give spec, dispatcher, orchestration or ca_config")
        return self


def patched_cluster(current: Obj, body: ClusterUpdate) -> Obj:
    """The cluster object with `body` applied and the result validated (the name cannot change)."""
    spec: Obj = dict(current.get("spec") or {})
    if body.spec is not None:
        if body.spec.name != spec.get("name", "default"):
            raise InvalidArgument(f"spec.name: renaming the cluster is not supported ({body.spec.name!r})")
        return {**current, "spec": {**spec, **body.spec.wire()}}
    for section in ("dispatcher", "orchestration", "ca_config", "encryption_config"):
        change: BaseModel | None = getattr(body, section)
        if change is None:
            continue
        # only the fields the request named; each was validated on its own
        given = change.model_dump(mode="json", include=change.model_fields_set)
        spec[section] = {**(spec.get(section) or {}), **given}
    return {**current, "spec": spec}
