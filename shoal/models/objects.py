"""Constructors and accessors for stored objects (plain dicts on the wire and in the store).

Shapes (every object also has `id` and `meta {version, created_at, updated_at}`):

service  {spec: ServiceSpec, spec_version: int (1 on create, +1 per spec update or manual rollback),
          previous_spec: spec|None, update_status: {state, message, started_at, completed_at?}|None (reset to
          None by a user update; "rollback_started" on a manual rollback),
          job_status: {job_iteration: int (0 on create, +1 per spec change), last_execution}  (jobs only),
          endpoint: {spec: EndpointSpec, ports: [PortConfig with published_port filled for ingress],
                     virtual_ips: [{network_id, addr: "10.0.0.2/24"}]}  (written by the allocator)}
task     {service_id, service_name, slot, node_id, desired_state, spec_version, spec: TaskSpec, runtime,
          status: {state, message, err, timestamp, pid, exit_code},
          job_iteration: int (job tasks: the service's job_status.job_iteration when created),
          created_by: "update"|"restart" (optional: the orchestrator's update or restart supervisor made it),
          endpoint_spec: the service's spec.endpoint when the task was made (the update supervisor's dirty check),
          networks: [{network_id, addresses: ["10.0.1.5/24"], aliases}]  (attachments, ingress first),
          endpoint: {ports: [...]}  (the service's published ports; both written by the allocator),
          assigned_generic_resources: [{kind, named: [ids]} | {kind, value: n}]  (written by the scheduler)}
         A network attachment task (SwarmKit's AttachNetwork, made by the gateway) has `service_id: ""`,
         `service_name: ""`, `slot: 0`, `node_id` set at creation, `runtime: "attachment"` and `spec:
         {attachment: {container_id}, networks: [{target, aliases}]}`.
node     {spec: {name, labels, role, availability}, role, status: {state, message, addr, timestamp},
          description: {hostname, platform: {os, arch}, resources: {nano_cpus, memory_bytes, generic?: [{kind,
                        value: n} | {kind, named: [ids]}]}, executors: [...], engine?: {labels}},
          attachments: [{network_id, address: "10.0.1.3/24"}]  (load-balancer IPs, written by the allocator)}
cluster  {id: "default", spec: {name: "default", dispatcher: {heartbeat_period}, orchestration:
          {task_history_retention_limit}}}
network  {spec: NetworkSpec {name, labels, driver, ipam?: {subnet, gateway?}, attachable, internal,
                ingress?: true (only the ingress network, created by the allocator)},
          ipam: {subnet, gateway}|None (filled by the allocator)}
lease    {id: subsystem name, holder, term, expires_at, duration}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shoal.ids import new_id
from shoal.models.states import TaskState

Obj = dict[str, Any]

#: `task.runtime` of a network attachment task (SwarmKit's NetworkAttachmentSpec runtime): it runs nothing, it
#: holds an address on an attachable network for a container the cluster does not manage.
ATTACHMENT_RUNTIME = "attachment"


def task_status(state: TaskState | str, now: float, message: str = "", **extra: Any) -> dict[str, Any]:
    return {"state": str(TaskState(state)), "message": message, "err": extra.pop("err", None),
            "timestamp": now, "pid": extra.pop("pid", None), "exit_code": extra.pop("exit_code", None),
            **extra}


def new_task(service: Obj, slot: int, now: float, *, desired: TaskState = TaskState.RUNNING,
             node_id: str | None = None, ids: Callable[[], str] | None = None) -> Obj:
    """A task in state NEW for `slot` of `service`, copying its current task spec (SwarmKit's NewTask). `ids`
    makes its id (default: `shoal.ids.new_id`, looked up at call time)."""
    tspec = service["spec"]["task"]
    return {
        "id": (ids or new_id)(),
        "service_id": service["id"],
        "service_name": service["spec"]["name"],
        "slot": slot,
        "node_id": node_id,
        "desired_state": str(desired),
        "spec_version": service.get("spec_version", 1),
        "spec": tspec,
        "runtime": spec_runtime(tspec),
        "status": task_status(TaskState.NEW, now, "created"),
    }


def new_attachment_task(network_id: str, node_id: str, now: float, *, container_id: str = "",
                        aliases: list[str] | None = None, ids: Callable[[], str] | None = None) -> Obj:
    """A network attachment task (SwarmKit's `ResourceAllocator.AttachNetwork`): no service, bound to `node_id`,
    desired RUNNING, runtime `attachment`; the allocator gives it an address on `network_id` like any task."""
    return {
        "id": (ids or new_id)(),
        "service_id": "",
        "service_name": "",
        "slot": 0,
        "node_id": node_id,
        "desired_state": str(TaskState.RUNNING),
        "spec_version": 0,
        "spec": {"attachment": {"container_id": container_id},
                 "networks": [{"target": network_id, "aliases": list(aliases or [])}]},
        "runtime": ATTACHMENT_RUNTIME,
        "status": task_status(TaskState.NEW, now, "created"),
    }


def is_attachment(task: Obj) -> bool:
    """A serviceless network attachment task: no orchestrator owns it (it is never restarted or rescheduled)."""
    return not task.get("service_id")


def task_name(task: Obj) -> str:
    """`<service>.<slot>.<id>` like SwarmKit's naming (global tasks use the node id as the slot); attachment
    tasks: `attachment.<node id>.<id>`."""
    slot = task.get("slot") or task.get("node_id") or 0
    service = task.get("service_name") or task.get("service_id") or ATTACHMENT_RUNTIME
    return f"{service}.{slot}.{task['id']}"


def status_state(obj: Obj) -> str | None:
    """`status.state` of a task or node as stored, None when it has none (objects written by older versions,
    or test fixtures, may lack a status)."""
    state = (obj.get("status") or {}).get("state")
    return state if state is None or isinstance(state, str) else str(state)


def spec_runtime(task_spec: Obj) -> str:
    """The runtime a task spec asks for: `process` or `container`."""
    return "process" if "process" in task_spec else "container"


def runtime_of(task: Obj) -> str:
    """A task's runtime: its `runtime` field, else what its spec asks for."""
    return str(task.get("runtime") or spec_runtime(task.get("spec") or {}))


def service_runtime(service: Obj) -> str:
    """The runtime of a service's tasks."""
    return spec_runtime(service["spec"].get("task") or {})


def job_iteration(service: Obj) -> int:
    """The current iteration of a job service (0 at creation, +1 on every spec change)."""
    return int((service.get("job_status") or {}).get("job_iteration") or 0)


def task_iteration(task: Obj) -> int:
    """The job iteration a task was created for (0 for tasks of non-job services, or created before jobs)."""
    return int(task.get("job_iteration") or 0)


def state_of(task: Obj) -> TaskState:
    return TaskState(task["status"]["state"])


def desired_of(task: Obj) -> TaskState:
    return TaskState(task["desired_state"])
