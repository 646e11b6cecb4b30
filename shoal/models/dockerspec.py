"""The one translation between shoal's service spec (the wire form of `shoal.models.specs.ServiceSpec`) and the
Docker Engine API's `ServiceSpec` (API v1.41: PascalCase, durations in integer nanoseconds, `TaskTemplate`,
`Mode`, `EndpointSpec`, resources in NanoCPUs/bytes, env as `K=V` lists).

- `to_docker(spec)`: a stored (wire) shoal spec → Docker's ServiceSpec.
- `from_docker(body)`: Docker's ServiceSpec → a shoal spec dict, to be validated by `ServiceSpec` like every
  other spec. A Docker field shoal cannot honour is refused with `Unsupported` (400) naming its path
  (`TaskTemplate.ContainerSpec.Privileges`), never dropped; a field left at its zero value (`"TTY": false`,
  `"DNSConfig": {}`, `"Isolation": "default"`, which the CLI always sends) is accepted.

Process services have no ContainerSpec in Docker's model, and `docker service ps` needs one. They appear as a
ContainerSpec with image `PROCESS_IMAGE` (`shoal/process`) and the label `io.shoal.runtime=process`; `Command`
+`Args` is the process's command line. The same form sent back (or written by `docker service create
--container-label io.shoal.runtime=process shoal/process CMD...`) makes a process service again.

Pure: no I/O, no pydantic; the only state is the data passed in."""

from __future__ import annotations

from typing import Any

from shoal.errors import InvalidArgument

Obj = dict[str, Any]
NS = 1_000_000_000
PROCESS_IMAGE = "shoal/process"
RUNTIME_LABEL = "io.shoal.runtime"
#: values Docker sends for fields it always fills in; anything else in a field shoal ignores is refused
_ZERO_STRINGS = frozenset({"", "default"})


class Unsupported(InvalidArgument):
    """400: a Docker field shoal cannot honour (named by its path)."""

    code = "unsupported_field"


# ---- helpers -------------------------------------------------------------------------------------------------
def _ns(seconds: float | None) -> int:
    return round(float(seconds or 0.0) * NS)


def _seconds(ns: Any, path: str) -> float:
    if isinstance(ns, bool) or not isinstance(ns, int):
        raise InvalidArgument(f"{path}: a duration in integer nanoseconds is expected (got {ns!r})")
    if ns < 0:
        raise InvalidArgument(f"{path}: a duration must not be negative")
    return ns / NS


def _is_zero(v: Any) -> bool:
    if v is None or v is False or v == 0:
        return True
    if isinstance(v, str):
        return v in _ZERO_STRINGS
    if isinstance(v, dict):
        return all(_is_zero(x) for x in v.values())
    if isinstance(v, list):
        return not v
    return False


class _Reader:
    """Takes the known keys out of one Docker object; `done()` refuses whatever is left with a value."""

    def __init__(self, obj: Any, path: str) -> None:
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            raise InvalidArgument(f"{path or 'spec'}: an object is expected")
        self.rest = dict(obj)
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def take(self, key: str, default: Any = None) -> Any:
        v = self.rest.pop(key, None)
        return default if v is None else v

    def obj(self, key: str) -> _Reader:
        return _Reader(self.take(key), self.at(key))

    def items(self, key: str) -> list[_Reader]:
        v = self.take(key, [])
        if not isinstance(v, list):
            raise InvalidArgument(f"{self.at(key)}: a list is expected")
        return [_Reader(x, f"{self.at(key)}[{i}]") for i, x in enumerate(v)]

    def done(self) -> None:
        for key, v in self.rest.items():
            if not _is_zero(v):
                raise Unsupported(f"{self.at(key)} is not supported by shoal")


def _put(out: Obj, key: str, value: Any) -> None:
    """Set `key` unless `value` is empty (Docker's omitempty)."""
    if value not in (None, "", [], {}):
        out[key] = value


# ---- shoal → Docker --------------------------------------------------------------------------------------------
def _health_to(h: Obj | None) -> Obj | None:
    if h is None:
        return None
    out: Obj = {"Test": list(h.get("test") or [])}
    for src, dst in (("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod")):
        if h.get(src):
            out[dst] = _ns(h[src])
    if h.get("retries"):
        out["Retries"] = int(h["retries"])
    return out


def _env_to(env: Obj) -> list[str]:
    return [f"{k}={v}" for k, v in env.items()]


def _ref_to(ref: Obj, kind: str) -> Obj:
    file: Obj = {"Name": ref.get("target") or ref["source"]}
    for src, dst in (("uid", "UID"), ("gid", "GID"), ("mode", "Mode")):
        if ref.get(src) is not None:
            file[dst] = ref[src]
    cap = kind.capitalize()
    return {"File": file, f"{cap}ID": ref.get(f"{kind}_id") or "", f"{cap}Name": ref["source"]}


def _container_to(task: Obj) -> Obj:
    if "process" in task:
        p = task["process"]
        c: Obj = {"Image": PROCESS_IMAGE, "Labels": {RUNTIME_LABEL: "process"}, "Command": list(p["command"])}
        _put(c, "Env", _env_to(p.get("env") or {}))
        _put(c, "Dir", p.get("dir"))
        _put(c, "User", p.get("user"))
    else:
        s = task["container"]
        c = {"Image": s["image"]}
        _put(c, "Labels", dict(s.get("labels") or {}))
        _put(c, "Command", list(s.get("command") or []))
        _put(c, "Args", list(s.get("args") or []))
        _put(c, "Hostname", s.get("hostname"))
        _put(c, "Env", _env_to(s.get("env") or {}))
        _put(c, "Dir", s.get("dir"))
        _put(c, "User", s.get("user"))
        _put(c, "Mounts", [{"Type": m.get("type", "volume"), **({"Source": m["source"]} if m.get("source") else {}),
                            "Target": m["target"], **({"ReadOnly": True} if m.get("read_only") else {})}
                           for m in s.get("mounts") or []])
        _put(c, "StopSignal", s.get("stop_signal"))
        if s.get("read_only"):
            c["ReadOnly"] = True
        if s.get("init") is not None:
            c["Init"] = bool(s["init"])
        p = s
    c["StopGracePeriod"] = _ns(p.get("stop_grace_period", 10.0))
    health = _health_to(p.get("healthcheck"))
    if health is not None:
        c["Healthcheck"] = health
    _put(c, "Secrets", [_ref_to(r, "secret") for r in task.get("secrets") or []])
    _put(c, "Configs", [_ref_to(r, "config") for r in task.get("configs") or []])
    return c


def _resources_to(r: Obj) -> Obj:
    lim, res = r.get("limits") or {}, r.get("reservations") or {}
    limits: Obj = {}
    _put(limits, "NanoCPUs", lim.get("nano_cpus") or None)
    _put(limits, "MemoryBytes", lim.get("memory_bytes") or None)
    reservations: Obj = {}
    _put(reservations, "NanoCPUs", res.get("nano_cpus") or None)
    _put(reservations, "MemoryBytes", res.get("memory_bytes") or None)
    _put(reservations, "GenericResources", [{"DiscreteResourceSpec": {"Kind": g["kind"], "Value": g["value"]}}
                                            for g in res.get("generic") or []])
    return {"Limits": limits, "Reservations": reservations}


def _rolling_to(u: Obj | None) -> Obj | None:
    if u is None:
        return None
    return {"Parallelism": u.get("parallelism", 1), "Delay": _ns(u.get("delay")),
            "FailureAction": u.get("failure_action", "pause"), "Monitor": _ns(u.get("monitor", 5.0)),
            "MaxFailureRatio": u.get("max_failure_ratio", 0.0), "Order": u.get("order", "stop-first")}


def _mode_to(mode: Obj) -> Obj:
    if "global" in mode:
        return {"Global": {}}
    if "replicated_job" in mode:
        j = mode["replicated_job"]
        return {"ReplicatedJob": {"MaxConcurrent": j.get("max_concurrent", 1),
                                  "TotalCompletions": j.get("total_completions", j.get("max_concurrent", 1))}}
    if "global_job" in mode:
        return {"GlobalJob": {}}
    return {"Replicated": {"Replicas": (mode.get("replicated") or {}).get("replicas", 1)}}


def _port_to(p: Obj) -> Obj:
    out: Obj = {"Protocol": p.get("protocol", "tcp"), "TargetPort": p["target_port"],
                "PublishedPort": p.get("published_port", 0), "PublishMode": p.get("publish_mode", "ingress")}
    _put(out, "Name", p.get("name"))
    return out


def template_to_docker(task: Obj) -> Obj:
    """Docker's TaskSpec (`TaskTemplate`, and a task's `Spec`) for a shoal task spec."""
    placement = task.get("placement") or {}
    pl: Obj = {}
    _put(pl, "Constraints", list(placement.get("constraints") or []))
    _put(pl, "Preferences", [{"Spread": {"SpreadDescriptor": p["spread"]}} for p in placement.get("preferences") or []])
    _put(pl, "MaxReplicas", placement.get("max_replicas") or None)
    _put(pl, "Platforms", [{k: v for k, v in (("Architecture", p.get("arch")), ("OS", p.get("os"))) if v}
                           for p in placement.get("platforms") or []])
    restart = task.get("restart") or {}
    template: Obj = {
        "ContainerSpec": _container_to(task),
        "Resources": _resources_to(task.get("resources") or {}),
        "RestartPolicy": {"Condition": restart.get("condition", "any"), "Delay": _ns(restart.get("delay", 5.0)),
                          "MaxAttempts": restart.get("max_attempts", 0), "Window": _ns(restart.get("window"))},
        "Placement": pl,
        "ForceUpdate": task.get("force_update", 0),
        "Runtime": "container",
    }
    _put(template, "Networks", [{"Target": n["target"], **({"Aliases": list(n["aliases"])} if n.get("aliases") else {})}
                                for n in task.get("networks") or []])
    return template


def to_docker(spec: Obj) -> Obj:
    """Docker's ServiceSpec for a stored shoal service spec."""
    template = template_to_docker(spec["task"])
    endpoint = spec.get("endpoint") or {}
    out: Obj = {"Name": spec["name"], "Labels": dict(spec.get("labels") or {}), "TaskTemplate": template,
                "Mode": _mode_to(spec.get("mode") or {}),
                "EndpointSpec": {"Mode": endpoint.get("mode", "vip")}}
    _put(out["EndpointSpec"], "Ports", [_port_to(p) for p in endpoint.get("ports") or []])
    for src, dst in (("update_config", "UpdateConfig"), ("rollback_config", "RollbackConfig")):
        rolling = _rolling_to(spec.get(src))
        if rolling is not None:
            out[dst] = rolling
    return out


# ---- Docker → shoal --------------------------------------------------------------------------------------------
def _env_from(items: list[str], path: str) -> Obj:
    env: Obj = {}
    if not isinstance(items, list):
        raise InvalidArgument(f"{path}: a list of KEY=VALUE strings is expected")
    for i, item in enumerate(items):
        if not isinstance(item, str) or "=" not in item:
            raise Unsupported(f"{path}[{i}]: {str(item)[:64]!r} has no '=': inheriting variables from the "
                              "engine's environment is not supported by shoal")
        key, _, value = item.partition("=")
        env[key] = value
    return env


def _health_from(r: _Reader) -> Obj | None:
    if not r.rest:
        return None
    out: Obj = {"test": r.take("Test", [])}
    for src, dst in (("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period")):
        v = r.take(src)
        if v is not None:
            out[dst] = _seconds(v, r.at(src))
    retries = r.take("Retries")
    if retries is not None:
        out["retries"] = retries
    r.done()
    return out


def _ref_from(r: _Reader, kind: str) -> Obj:
    cap = kind.capitalize()
    name = r.take(f"{cap}Name") or r.take(f"{cap}ID")
    r.take(f"{cap}ID")
    if not name:
        raise InvalidArgument(f"{r.path}.{cap}Name: a {kind} name or id is required")
    out: Obj = {"source": name}
    f = r.obj("File")
    target = f.take("Name")
    if target is not None and target != name:
        out["target"] = target
    for src, dst in (("UID", "uid"), ("GID", "gid"), ("Mode", "mode")):
        v = f.take(src)
        if v is not None:
            out[dst] = v
    f.done()
    r.done()
    return out


def _mount_from(r: _Reader) -> Obj:
    out: Obj = {"type": r.take("Type", "volume"), "target": r.take("Target")}
    source = r.take("Source")
    if source:
        out["source"] = source
    if r.take("ReadOnly"):
        out["read_only"] = True
    r.done()
    return out


def _task_from(r: _Reader) -> Obj:
    runtime = r.take("Runtime", "container")
    if runtime not in ("", "container"):
        raise Unsupported(f"{r.at('Runtime')}: runtime {runtime!r} is not supported by shoal")
    c = r.obj("ContainerSpec")
    task: Obj = {}
    labels = dict(c.take("Labels", {}))
    image = c.take("Image")
    command, args = c.take("Command", []), c.take("Args", [])
    env = _env_from(c.take("Env", []), c.at("Env"))
    grace = c.take("StopGracePeriod")
    hc = c.obj("Healthcheck")
    health = _health_from(hc)
    if labels.get(RUNTIME_LABEL) == "process":
        del labels[RUNTIME_LABEL]
        if labels:
            raise Unsupported(f"{c.at('Labels')}: labels on a process service are not supported by shoal")
        proc: Obj = {"command": [*command, *args], "env": env}
        for src, dst in (("Dir", "dir"), ("User", "user")):
            v = c.take(src)
            if v:
                proc[dst] = v
        if grace is not None:
            proc["stop_grace_period"] = _seconds(grace, c.at("StopGracePeriod"))
        if health is not None:
            proc["healthcheck"] = health
        task["process"] = proc
    else:
        if not image:
            raise InvalidArgument(f"{c.at('Image')}: an image is required")
        cont: Obj = {"image": image, "command": command, "args": args, "env": env, "labels": labels}
        for src, dst in (("Dir", "dir"), ("User", "user"), ("Hostname", "hostname"), ("StopSignal", "stop_signal")):
            v = c.take(src)
            if v:
                cont[dst] = v
        cont["mounts"] = [_mount_from(m) for m in c.items("Mounts")]
        if c.take("ReadOnly"):
            cont["read_only"] = True
        init = c.take("Init")
        if init is not None:
            cont["init"] = init
        if grace is not None:
            cont["stop_grace_period"] = _seconds(grace, c.at("StopGracePeriod"))
        if health is not None:
            cont["healthcheck"] = health
        task["container"] = cont
    task["secrets"] = [_ref_from(x, "secret") for x in c.items("Secrets")]
    task["configs"] = [_ref_from(x, "config") for x in c.items("Configs")]
    c.done()

    task["resources"] = _resources_from(r.obj("Resources"))
    task["restart"] = _restart_from(r.obj("RestartPolicy"))
    task["placement"] = _placement_from(r.obj("Placement"))
    task["networks"] = [_network_from(n) for n in r.items("Networks")]
    task["force_update"] = r.take("ForceUpdate", 0)
    r.done()
    return task


def _resources_from(res: _Reader) -> Obj:
    lim, rsv = res.obj("Limits"), res.obj("Reservations")
    out: Obj = {
        "limits": {"nano_cpus": lim.take("NanoCPUs", 0), "memory_bytes": lim.take("MemoryBytes", 0)},
        "reservations": {"nano_cpus": rsv.take("NanoCPUs", 0), "memory_bytes": rsv.take("MemoryBytes", 0),
                         "generic": [_generic_from(g) for g in rsv.items("GenericResources")]},
    }
    lim.done()
    rsv.done()
    res.done()
    return out


def _restart_from(rp: _Reader) -> Obj:
    restart: Obj = {"condition": rp.take("Condition", "any")}
    for src, dst, default in (("Delay", "delay", 5 * NS), ("Window", "window", 0)):
        restart[dst] = _seconds(rp.take(src, default), rp.at(src))
    restart["max_attempts"] = rp.take("MaxAttempts", 0)
    rp.done()
    return restart


def _placement_from(pl: _Reader) -> Obj:
    placement: Obj = {"constraints": pl.take("Constraints", []), "max_replicas": pl.take("MaxReplicas", 0)}
    prefs = []
    for p in pl.items("Preferences"):
        spread = p.obj("Spread")
        prefs.append({"spread": spread.take("SpreadDescriptor", "")})
        spread.done()
        p.done()
    placement["preferences"] = prefs
    platforms = []
    for p in pl.items("Platforms"):
        platforms.append({k: v for k, v in (("arch", p.take("Architecture")), ("os", p.take("OS"))) if v})
        p.done()
    placement["platforms"] = platforms
    pl.done()
    return placement


def _network_from(n: _Reader) -> Obj:
    net: Obj = {"target": n.take("Target")}
    aliases = n.take("Aliases", [])
    if aliases:
        net["aliases"] = aliases
    n.done()
    return net


def _generic_from(r: _Reader) -> Obj:
    d = r.obj("DiscreteResourceSpec")
    out = {"kind": d.take("Kind"), "value": d.take("Value")}
    d.done()
    r.done()
    return out


def _mode_from(r: _Reader) -> Obj:
    given = [k for k in ("Replicated", "Global", "ReplicatedJob", "GlobalJob") if r.rest.get(k) is not None]
    if len(given) > 1:
        raise InvalidArgument(f"Mode: exactly one mode may be given (got {', '.join(given)})")
    out: Obj
    if r.rest.get("Global") is not None:
        r.obj("Global").done()
        out = {"global": {}}
    elif r.rest.get("ReplicatedJob") is not None:
        j = r.obj("ReplicatedJob")
        job: Obj = {"max_concurrent": j.take("MaxConcurrent", 1)}
        total = j.take("TotalCompletions")
        if total is not None:
            job["total_completions"] = total
        j.done()
        out = {"replicated_job": job}
    elif r.rest.get("GlobalJob") is not None:
        r.obj("GlobalJob").done()
        out = {"global_job": {}}
    else:
        rep = r.obj("Replicated")
        replicas = rep.take("Replicas")
        rep.done()
        out = {"replicated": {} if replicas is None else {"replicas": replicas}}  # Docker: absent = 1
    r.done()
    return out


def _rolling_from(r: _Reader) -> Obj | None:
    if not r.rest:
        return None
    out: Obj = {"parallelism": r.take("Parallelism", 0),  # Docker: 0 = all at once
                "delay": _seconds(r.take("Delay", 0), r.at("Delay")),
                "failure_action": r.take("FailureAction") or "pause",
                "monitor": _seconds(r.take("Monitor", 5 * NS), r.at("Monitor")),
                "max_failure_ratio": float(r.take("MaxFailureRatio", 0.0)),
                "order": r.take("Order") or "stop-first"}
    r.done()
    return out


def _port_from(r: _Reader) -> Obj:
    out: Obj = {"protocol": r.take("Protocol") or "tcp", "target_port": r.take("TargetPort"),
                "published_port": r.take("PublishedPort", 0), "publish_mode": r.take("PublishMode") or "ingress"}
    name = r.take("Name")
    if name:
        out["name"] = name
    r.done()
    return out


def from_docker(body: Any) -> Obj:
    """A shoal service spec (to validate with `ServiceSpec`) for Docker's ServiceSpec `body`; `Unsupported`
    (400) names the first field shoal cannot honour."""
    r = _Reader(body, "")
    spec: Obj = {"name": r.take("Name", ""), "labels": dict(r.take("Labels", {}))}
    spec["task"] = _task_from(r.obj("TaskTemplate"))
    spec["mode"] = _mode_from(r.obj("Mode"))
    for src, dst in (("UpdateConfig", "update_config"), ("RollbackConfig", "rollback_config")):
        rolling = _rolling_from(r.obj(src))
        if rolling is not None:
            spec[dst] = rolling
    ep = r.obj("EndpointSpec")
    spec["endpoint"] = {"mode": ep.take("Mode") or "vip", "ports": [_port_from(p) for p in ep.items("Ports")]}
    ep.done()
    r.done()
    return spec
