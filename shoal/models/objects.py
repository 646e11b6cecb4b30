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
node     {spec: {name, labels, role, availability}, role, status: {state, message, addr, timestamp},
          description: {hostname, platform: {os, arch}, resources: {nano_cpus, memory_bytes, generic?: [{kind,
                        value: n} | {kind, named: [ids]}]}, executors: [...], engine?: {labels}}}
cluster  {id: "default", spec: {name: "default", dispatcher: {heartbeat_period}, orchestration:
          {task_history_retention_limit}}}
network  {spec: NetworkSpec {name, labels, driver, ipam?: {subnet, gateway?}, attachable, internal,
                ingress?: true (only the ingress network, created by the allocator)},
          ipam: {subnet, gateway}|None (filled by the allocator)}
lease    {id: subsystem name, holder, term, expires_at, duration}
"""

from __future__ import annotations

from typing import Any

from shoal.ids import new_id
from shoal.models.states import TaskState

Obj = dict[str, Any]


def task_status(state: TaskState | str, now: float, message: str = "", **extra: Any) -> dict[str, Any]:
    return {"state": str(TaskState(state)), "message": message, "err": extra.pop("err", None),
            "timestamp": now, "pid": extra.pop("pid", None), "exit_code": extra.pop("exit_code", None),
            **extra}


def new_task(service: Obj, slot: int, now: float, *, desired: TaskState = TaskState.RUNNING,
             node_id: str | None = None) -> Obj:
    """A task in state NEW for `slot` of `service`, copying its current task spec (SwarmKit's NewTask)."""
    tspec = service["spec"]["task"]
    return {
        "id": new_id(),
        "service_id": service["id"],
        "service_name": service["spec"]["name"],
        "slot": slot,
        "node_id": node_id,
        "desired_state": str(desired),
        "spec_version": service.get("spec_version", 1),
        "spec": tspec,
        "runtime": "process" if "process" in tspec else "container",
        "status": task_status(TaskState.NEW, now, "created"),
    }


def task_name(task: Obj) -> str:
    """`<service>.<slot>.<id>` like SwarmKit's naming (global tasks use the node id as the slot)."""
    slot = task.get("slot") or task.get("node_id") or 0
    return f"{task.get('service_name', task['service_id'])}.{slot}.{task['id']}"


def state_of(task: Obj) -> TaskState:
    return TaskState(task["status"]["state"])


def desired_of(task: Obj) -> TaskState:
    return TaskState(task["desired_state"])
