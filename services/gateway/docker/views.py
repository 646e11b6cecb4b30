"""Pure views: shoal's stored objects as the Docker Engine API (v1.41) shows them, and Docker's filters.

PascalCase keys, RFC 3339 times, durations in nanoseconds, `Version.Index` = shoal's `meta.version` (what the
CLI sends back as `?version=`). Specs go through `shoal.models.dockerspec`, the one translation."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from shoal.errors import InvalidArgument
from shoal.models.dockerspec import NS, template_to_docker, to_docker
from shoal.models.objects import is_attachment
from shoal.models.specs import mode_kind

Obj = dict[str, Any]
API_VERSION = "1.41"
MIN_API_VERSION = "1.24"
INGRESS_ID = "ingress"
_ZERO_TIME = "0001-01-01T00:00:00Z"
#: `Spec.Mode` kinds for the `mode` filter of `GET /services`
_MODE_NAMES = {"replicated": "replicated", "global": "global", "replicated_job": "replicated-job",
               "global_job": "global-job"}


def rfc3339(ts: Any) -> str:
    if not isinstance(ts, int | float) or isinstance(ts, bool) or ts <= 0:
        return _ZERO_TIME
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _meta(obj: Obj) -> Obj:
    meta = obj.get("meta") or {}
    return {"ID": obj["id"], "Version": {"Index": int(meta.get("version") or 0)},
            "CreatedAt": rfc3339(meta.get("created_at")), "UpdatedAt": rfc3339(meta.get("updated_at"))}


# ---- filters ---------------------------------------------------------------------------------------------------
def parse_filters(raw: str | None, allowed: Iterable[str]) -> dict[str, list[str]]:
    """Docker's `filters` query parameter: `{"key": {"value": true}}` or the legacy `{"key": ["value"]}`;
    400 `Invalid filter 'k'` for a key the endpoint does not know (dockerd's wording)."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidArgument("invalid filter: not JSON") from None
    if not isinstance(data, dict):
        raise InvalidArgument("invalid filter: a JSON object is expected")
    keys = set(allowed)
    out: dict[str, list[str]] = {}
    for key, values in data.items():
        if key not in keys:
            raise InvalidArgument(f"Invalid filter '{key}'")
        if isinstance(values, dict):
            out[key] = [str(v) for v, on in values.items() if on]
        elif isinstance(values, list):
            out[key] = [str(v) for v in values]
        else:
            raise InvalidArgument(f"invalid filter '{key}': an object or a list of values is expected")
    return out


def label_match(labels: Obj, wanted: list[str]) -> bool:
    """Every `k` or `k=v` of `wanted` holds for `labels`."""
    for w in wanted:
        key, eq, value = w.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


def prefix_match(value: str, wanted: list[str]) -> bool:
    return any(value.startswith(w) for w in wanted)


# ---- nodes -----------------------------------------------------------------------------------------------------
def node_view(node: Obj, leader_id: str | None = None) -> Obj:
    spec = node.get("spec") or {}
    desc = node.get("description") or {}
    platform = desc.get("platform") or {}
    res = desc.get("resources") or {}
    status = node.get("status") or {}
    role = str(spec.get("role") or node.get("role") or "worker")
    out = {**_meta(node),
           "Spec": {"Labels": dict(spec.get("labels") or {}), "Role": role,
                    "Availability": str(spec.get("availability") or "active"),
                    **({"Name": spec["name"]} if spec.get("name") else {})},
           "Description": {"Hostname": str(desc.get("hostname") or ""),
                           "Platform": {"Architecture": str(platform.get("arch") or ""),
                                        "OS": str(platform.get("os") or "")},
                           "Resources": {"NanoCPUs": int(res.get("nano_cpus") or 0),
                                         "MemoryBytes": int(res.get("memory_bytes") or 0)},
                           "Engine": {"EngineVersion": "shoal",
                                      "Labels": dict((desc.get("engine") or {}).get("labels") or {})}},
           "Status": {"State": str(status.get("state") or "unknown"), "Message": str(status.get("message") or ""),
                      "Addr": str(status.get("addr") or "")}}
    if role == "manager":
        out["ManagerStatus"] = {"Leader": node["id"] == leader_id, "Reachability": "reachable",
                                "Addr": f"{status.get('addr') or '127.0.0.1'}:2377"}
    return out


def node_filter(nodes: list[Obj], f: dict[str, list[str]]) -> list[Obj]:
    out = []
    for n in nodes:
        v = node_view(n)
        if "id" in f and not prefix_match(n["id"], f["id"]):
            continue
        names = [v["Description"]["Hostname"], v["Spec"].get("Name", "")]
        if "name" in f and not any(prefix_match(x, f["name"]) for x in names if x):
            continue
        if "role" in f and v["Spec"]["Role"] not in f["role"]:
            continue
        if "membership" in f and "accepted" not in f["membership"]:
            continue
        if "label" in f and not label_match(v["Description"]["Engine"]["Labels"], f["label"]):
            continue
        if "node.label" in f and not label_match(v["Spec"]["Labels"], f["node.label"]):
            continue
        out.append(n)
    return out


def self_node(nodes: list[Obj]) -> Obj | None:
    """The node the gateway answers as ("self", `Swarm.NodeID`): the first manager, else the first node."""
    ordered = sorted(nodes, key=lambda n: (str((n.get("spec") or {}).get("role") or n.get("role")) != "manager",
                                           n["id"]))
    return ordered[0] if ordered else None


# ---- services and tasks ----------------------------------------------------------------------------------------
def _update_status(us: Obj | None) -> Obj | None:
    if not us:
        return None
    out: Obj = {"State": str(us.get("state") or ""), "Message": str(us.get("message") or "")}
    if us.get("started_at"):
        out["StartedAt"] = rfc3339(us["started_at"])
    if us.get("completed_at"):
        out["CompletedAt"] = rfc3339(us["completed_at"])
    return out


def _port_view(p: Obj) -> Obj:
    return {"Protocol": p.get("protocol", "tcp"), "TargetPort": p.get("target_port"),
            "PublishedPort": p.get("published_port", 0), "PublishMode": p.get("publish_mode", "ingress"),
            **({"Name": p["name"]} if p.get("name") else {})}


def service_view(service: Obj, status: Obj | None = None) -> Obj:
    spec = to_docker(service["spec"])
    out = {**_meta(service), "Spec": spec}
    if service.get("previous_spec"):
        out["PreviousSpec"] = to_docker(service["previous_spec"])
    endpoint = service.get("endpoint") or {}
    out["Endpoint"] = {"Spec": spec["EndpointSpec"],
                       "Ports": [_port_view(p) for p in endpoint.get("ports") or []],
                       "VirtualIPs": [{"NetworkID": v.get("network_id", ""), "Addr": v.get("addr", "")}
                                      for v in endpoint.get("virtual_ips") or []]}
    us = _update_status(service.get("update_status"))
    if us is not None:
        out["UpdateStatus"] = us
    if service.get("job_status") is not None:
        out["JobStatus"] = {"JobIteration": {"Index": int(service["job_status"].get("job_iteration") or 0)},
                            "LastExecution": rfc3339(service["job_status"].get("last_execution"))}
    if status is not None:
        out["ServiceStatus"] = {"RunningTasks": status["running"], "DesiredTasks": status["desired"],
                                "CompletedTasks": status["completed"]}
    return out


def service_filter(services: list[Obj], f: dict[str, list[str]]) -> list[Obj]:
    out = []
    for s in services:
        spec = s["spec"]
        if "id" in f and not prefix_match(s["id"], f["id"]):
            continue
        if "name" in f and not prefix_match(spec["name"], f["name"]):
            continue
        if "label" in f and not label_match(spec.get("labels") or {}, f["label"]):
            continue
        if "mode" in f and _MODE_NAMES[mode_kind(spec)] not in f["mode"]:
            continue
        if "runtime" in f and "container" not in f["runtime"]:
            continue
        out.append(s)
    return out


def up_to_date(task: Obj, service: Obj | None) -> bool:
    """SwarmKit's `!IsTaskDirty`: the task runs the service's current task spec (and endpoint)."""
    if service is None:
        return False
    if task.get("spec") != service["spec"]["task"]:
        return False
    ep = task.get("endpoint_spec")
    return ep is None or ep == service["spec"].get("endpoint")


def task_view(task: Obj) -> Obj:
    status = task.get("status") or {}
    container_id = str(status.get("container_id") or "")
    out = {**_meta(task), "Labels": {}, "ServiceID": task.get("service_id") or "",
           "Slot": int(task.get("slot") or 0), "NodeID": task.get("node_id") or "",
           "DesiredState": str(task.get("desired_state") or ""),
           "Status": {"Timestamp": rfc3339(status.get("timestamp")), "State": str(status.get("state") or "new"),
                      "Message": str(status.get("message") or ""),
                      **({"Err": str(status["err"])} if status.get("err") else {}),
                      "ContainerStatus": {"ContainerID": container_id, "PID": int(status.get("pid") or 0),
                                          "ExitCode": int(status.get("exit_code") or 0)}},
           "NetworksAttachments": [{"Network": {"ID": n.get("network_id", "")},
                                    "Addresses": list(n.get("addresses") or [])}
                                   for n in task.get("networks") or []]}
    if is_attachment(task):
        out["Spec"] = {"NetworkAttachmentSpec": {"ContainerID": (task["spec"].get("attachment") or {})
                                                 .get("container_id", "")}, "Runtime": "attachment"}
    else:
        out["Spec"] = template_to_docker(task["spec"])
    if task.get("job_iteration") is not None:
        out["JobIteration"] = {"Index": int(task["job_iteration"])}
    return out


# ---- secrets, configs, networks --------------------------------------------------------------------------------
def payload_view(obj: Obj, with_data: bool) -> Obj:
    spec = obj.get("spec") or {}
    out_spec: Obj = {"Name": spec.get("name", ""), "Labels": dict(spec.get("labels") or {})}
    if with_data and spec.get("data") is not None:
        out_spec["Data"] = spec["data"]
    return {**_meta(obj), "Spec": out_spec}


def payload_spec(body: Obj, kind: str) -> Obj:
    """Docker's SecretSpec/ConfigSpec → shoal's (`name`, `labels`, base64 `data`); refuses drivers and
    templating, which shoal does not have."""
    if not isinstance(body, dict):
        raise InvalidArgument(f"{kind} spec: an object is expected")
    for key in ("Driver", "Templating"):
        if body.get(key):
            raise InvalidArgument(f"{key} is not supported by shoal")
    unknown = sorted(k for k in body if k not in ("Name", "Labels", "Data", "Driver", "Templating"))
    if unknown:
        raise InvalidArgument(f"{unknown[0]} is not supported by shoal")
    return {"name": body.get("Name") or "", "labels": dict(body.get("Labels") or {}), "data": body.get("Data") or ""}


def network_view(net: Obj) -> Obj:
    spec = net.get("spec") or {}
    ipam = net.get("ipam") or spec.get("ipam") or {}
    config = [{"Subnet": ipam["subnet"], **({"Gateway": ipam["gateway"]} if ipam.get("gateway") else {})}] \
        if ipam.get("subnet") else []
    created = rfc3339((net.get("meta") or {}).get("created_at"))
    return {"Name": spec.get("name", ""), "Id": net["id"], "Created": created,
            "Scope": "swarm", "Driver": spec.get("driver", "overlay"), "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": config},
            "Internal": bool(spec.get("internal")), "Attachable": bool(spec.get("attachable")),
            "Ingress": bool(spec.get("ingress")), "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
            "Containers": None, "Options": dict(spec.get("options") or {}), "Labels": dict(spec.get("labels") or {})}


def builtin_ingress() -> Obj:
    """The `ingress` network before the allocator made it (it does when a service first publishes a port)."""
    return {"id": INGRESS_ID, "spec": {"name": "ingress", "driver": "overlay", "ingress": True, "labels": {}},
            "ipam": {"subnet": "10.255.0.0/16", "gateway": "10.255.0.1"}}


def network_filter(nets: list[Obj], f: dict[str, list[str]]) -> list[Obj]:
    out = []
    for n in nets:
        v = network_view(n)
        if "driver" in f and v["Driver"] not in f["driver"]:
            continue
        if "id" in f and not prefix_match(n["id"], f["id"]):
            continue
        if "name" in f and not any(w in v["Name"] for w in f["name"]):
            continue
        if "scope" in f and "swarm" not in f["scope"]:
            continue
        if "type" in f and "custom" not in f["type"] and not v["Ingress"]:
            continue
        if "label" in f and not label_match(v["Labels"], f["label"]):
            continue
        out.append(n)
    return out


def network_spec(body: Obj) -> Obj:
    """Docker's network create body → shoal's NetworkSpec fields (overlay only)."""
    if not isinstance(body, dict):
        raise InvalidArgument("network: an object is expected")
    driver = body.get("Driver") or "overlay"
    if driver != "overlay":
        raise InvalidArgument(f"Driver: network driver {driver!r} is not supported by shoal (overlay only)")
    for key in ("EnableIPv6", "Ingress", "ConfigOnly"):
        if body.get(key):
            raise InvalidArgument(f"{key} is not supported by shoal")
    if (body.get("ConfigFrom") or {}).get("Network"):
        raise InvalidArgument("ConfigFrom is not supported by shoal")
    out: Obj = {"name": body.get("Name") or "", "labels": dict(body.get("Labels") or {}), "driver": "overlay",
                "attachable": bool(body.get("Attachable")), "internal": bool(body.get("Internal"))}
    if body.get("Options"):
        if not isinstance(body["Options"], dict):
            raise InvalidArgument("Options: an object of driver options is expected")
        out["options"] = {str(k): str(v) for k, v in body["Options"].items()}  # validated by NetworkSpec
    configs = (body.get("IPAM") or {}).get("Config") or []
    if len(configs) > 1:
        raise InvalidArgument("IPAM.Config: more than one subnet is not supported by shoal")
    if configs:
        c = configs[0]
        out["ipam"] = {"subnet": c.get("Subnet") or "", **({"gateway": c["Gateway"]} if c.get("Gateway") else {})}
    return out


# ---- swarm -----------------------------------------------------------------------------------------------------
def swarm_spec(cluster: Obj) -> Obj:
    spec = cluster.get("spec") or {}
    ca = spec.get("ca_config") or {}
    return {"Name": "default", "Labels": {},
            "Orchestration": {"TaskHistoryRetentionLimit":
                              int((spec.get("orchestration") or {}).get("task_history_retention_limit", 5))},
            "Raft": {"SnapshotInterval": 10000, "KeepOldSnapshots": 0, "LogEntriesForSlowFollowers": 500,
                     "ElectionTick": 10, "HeartbeatTick": 1},
            "Dispatcher": {"HeartbeatPeriod": round(float((spec.get("dispatcher") or {})
                                                          .get("heartbeat_period", 5.0)) * NS)},
            "CAConfig": {"NodeCertExpiry": round(float(ca.get("node_cert_expiry", 90 * 24 * 3600.0)) * NS)},
            "TaskDefaults": {}, "EncryptionConfig": {"AutoLockManagers": False}}


def swarm_view(cluster: Obj, cluster_id: str, trust_root: str, tokens: Obj | None) -> Obj:
    out = {**_meta({**cluster, "id": cluster_id}), "Spec": swarm_spec(cluster),
           "TLSInfo": {"TrustRoot": trust_root, "CertIssuerSubject": "", "CertIssuerPublicKey": ""},
           "RootRotationInProgress": False, "DefaultAddrPool": ["10.0.0.0/8"], "SubnetSize": 24,
           "DataPathPort": 4789}
    if tokens is not None:
        out["JoinTokens"] = {"Worker": str(tokens.get("worker") or ""), "Manager": str(tokens.get("manager") or "")}
    return out


def swarm_changes(current: Obj, body: Obj) -> Obj:
    """`POST /swarm/update` body (Docker's swarm Spec) → the `PATCH /v1/cluster` sections it changes; a field
    shoal has no equivalent for is refused when it differs from what `GET /swarm` shows."""
    if not isinstance(body, dict):
        raise InvalidArgument("swarm spec: an object is expected")
    shown = swarm_spec(current)
    changes: Obj = {}
    for key, value in body.items():
        if key == "Orchestration":
            limit = (value or {}).get("TaskHistoryRetentionLimit")
            if limit is not None:
                changes["orchestration"] = {"task_history_retention_limit": limit}
        elif key == "Dispatcher":
            hb = (value or {}).get("HeartbeatPeriod")
            if hb is not None:
                changes["dispatcher"] = {"heartbeat_period": hb / NS}
        elif key == "CAConfig":
            value = dict(value or {})
            expiry = value.pop("NodeCertExpiry", None)
            if expiry is not None:
                changes["ca_config"] = {"node_cert_expiry": expiry / NS}
            if any(v for v in value.values()):
                raise InvalidArgument(f"CAConfig.{next(k for k, v in value.items() if v)} is not supported by shoal")
        elif key in ("Name", "Labels", "Raft", "TaskDefaults", "EncryptionConfig"):
            if value and value != shown.get(key) and not (key == "Labels" and not value):
                raise InvalidArgument(f"{key} is not supported by shoal")
        elif value:
            raise InvalidArgument(f"{key} is not supported by shoal")
    return changes


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
