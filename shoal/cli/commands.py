"""The user commands of the `shoal` CLI (service, node, network, cluster): argument parsers, flag -> spec
mapping, and a small synchronous client of the gateway's REST API (docs/api.md).

Every command is `cmd_*(args) -> int`; errors are raised as CliError and printed by `shoal.cli.main`."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from shoal import logs
from shoal.cli import identity, table
from shoal.models.duration import parse_duration
from shoal.models.specs import MIN_NODE_CERT_EXPIRY
from shoal.transport import sync_http_client

DEFAULT_URL = "https://127.0.0.1:4242"
SCALE_ATTEMPTS = 5
Spec = dict[str, Any]


class CliError(Exception):
    """A failure to report on stderr (exit status 1)."""


class ApiError(CliError):
    """The gateway answered with an error status; `message` is its `{"message": ...}`, `code` its `code`."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    @property
    def stale(self) -> bool:
        """A stale-version refusal (re-read and retry), as opposed to another conflict (name, port, in use)."""
        return self.status == 409 and self.code in (None, "version_conflict")


# ---- gateway client ----------------------------------------------------------------------------------------
class Gateway:
    """Synchronous client of the gateway over mutual TLS with the admin client bundle (shoal.cli.identity).
    `http` may be injected (tests use a MockTransport or TestClient)."""

    def __init__(self, url: str, http: httpx.Client | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._owned = http is None
        self.http = http or admin_client(self.url, timeout)

    def request(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None) -> Any:
        try:
            resp = self.http.request(method, path, json=body, params=params)
        except httpx.ConnectError as e:
            raise CliError(f"cannot reach the shoal gateway at {self.url} ({e}); is the cluster running "
                           "(`shoal up`)? Point SHOAL_URL or --url at a gateway.") from e
        except httpx.TimeoutException as e:
            raise CliError(f"the shoal gateway at {self.url} did not answer in time ({type(e).__name__})") from e
        except httpx.HTTPError as e:
            raise CliError(f"talking to the shoal gateway at {self.url} failed: {e}") from e
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, _error_message(resp), _error_code(resp))
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as e:
            raise CliError(f"the gateway at {self.url} sent something that is not JSON: {resp.text[:200]!r}") from e

    def get(self, path: str, **params: str) -> Any:
        return self.request("GET", path, params=params or None)

    def items(self, path: str, **params: str) -> list[dict[str, Any]]:
        """A list endpoint's items (`{"items": [...]}` or a bare array)."""
        d = self.get(path, **params)
        items: list[dict[str, Any]] = d.get("items", []) if isinstance(d, dict) else list(d or [])
        return items

    def close(self) -> None:
        if self._owned:
            self.http.close()


def admin_client(url: str, timeout: float) -> httpx.Client:
    """An https client presenting the admin bundle; plaintext URLs are refused (the gateway only speaks TLS)."""
    if not url.startswith("https://"):
        raise CliError(f"the gateway URL {url!r} is not https: shoal speaks only mutual TLS (SHOAL_URL, --url; "
                       f"default {DEFAULT_URL})")
    try:
        creds = identity.load_bundle(identity.cert_path())
    except identity.IdentityError as e:
        raise CliError(str(e)) from None
    return sync_http_client(creds, timeout=timeout, base_url=url)


def _error_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"HTTP {resp.status_code} from the gateway: {resp.text[:200]}"


def _error_code(resp: httpx.Response) -> str | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    return str(body["code"]) if isinstance(body, dict) and body.get("code") else None


def gateway_of(args: argparse.Namespace) -> Gateway:
    return Gateway(args.url, getattr(args, "http", None))


# ---- flag parsing ------------------------------------------------------------------------------------------
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_BYTE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_bytes(text: str) -> int:
    """Docker's memory sizes: binary units, case-insensitive, optional `b`/`ib` suffix ("64M", "1.5g",
    "512MiB", "4096")."""
    m = _BYTES.match(text)
    if not m:
        raise CliError(f"invalid size {text!r}: use a number with an optional unit b, k, m, g, t (e.g. 64M)")
    return int(float(m.group(1)) * _BYTE_UNITS[m.group(2).lower()])


def parse_cpus(text: str) -> int:
    """CPUs as a decimal ("0.5") -> nano CPUs (SwarmKit's unit)."""
    try:
        value = float(text)
    except ValueError:
        raise CliError(f"invalid CPU amount {text!r}: use a decimal number of CPUs such as 0.5") from None
    if value < 0:
        raise CliError(f"invalid CPU amount {text!r}: must not be negative")
    return round(value * 1e9)


def parse_pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _resources(cpu: str | None, memory: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    if cpu is not None:
        out["nano_cpus"] = parse_cpus(cpu)
    if memory is not None:
        out["memory_bytes"] = parse_bytes(memory)
    return out


_PORT_SHORT = re.compile(r"^(?:(\d+):)?(\d+)(?:/(tcp|udp|sctp))?$")
_PUBLISH_KEYS = {"published": "published_port", "target": "target_port", "protocol": "protocol",
                 "mode": "publish_mode", "name": "name"}


def _port_number(text: str, what: str, flag: str) -> int:
    if not text.isdigit():
        raise CliError(f"{flag} {what} {text!r}: expected a port number")
    return int(text)


def parse_publish(text: str, flag: str = "--publish") -> Spec:
    """Docker's `--publish`: `published=8080,target=80,protocol=udp,mode=host` or the short
    `[PUBLISHED:]TARGET[/PROTOCOL]` -> a PortConfig (the gateway fills protocol tcp and mode ingress)."""
    port: Spec = {}
    if "=" in text:
        for part in text.split(","):
            key, sep, value = part.strip().partition("=")
            if not sep or key not in _PUBLISH_KEYS:
                raise CliError(f"{flag} {text!r}: unknown field {key!r} (use published=, target=, protocol=, "
                               "mode=)")
            field = _PUBLISH_KEYS[key]
            port[field] = _port_number(value, key, flag) if field.endswith("_port") else value
    else:
        m = _PORT_SHORT.match(text.strip())
        if not m:
            raise CliError(f"{flag} {text!r}: expected published=P,target=T[,protocol=tcp|udp|sctp]"
                           "[,mode=ingress|host] or [PUBLISHED:]TARGET[/PROTOCOL]")
        if m.group(1):
            port["published_port"] = int(m.group(1))
        port["target_port"] = int(m.group(2))
        if m.group(3):
            port["protocol"] = m.group(3)
    if "target_port" not in port:
        raise CliError(f"{flag} {text!r}: the target port is required (target=PORT)")
    return port


def parse_network(text: str, flag: str = "--network") -> Spec:
    """Docker's `--network`: `NAME` or `name=NAME,alias=A,alias=B` -> a network attachment."""
    if "=" not in text:
        if not text.strip():
            raise CliError(f"{flag}: a network name is required")
        return {"target": text.strip()}
    att: Spec = {}
    aliases: list[str] = []
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if key in ("name", "target") and sep:
            att["target"] = value
        elif key == "alias" and sep:
            aliases.append(value)
        else:
            raise CliError(f"{flag} {text!r}: unknown field {key!r} (use name= and alias=)")
    if not att.get("target"):
        raise CliError(f"{flag} {text!r}: name=NETWORK is required")
    if aliases:
        att["aliases"] = aliases
    return att


def parse_placement_pref(text: str) -> Spec:
    """`spread=node.labels.zone` -> a placement preference."""
    key, sep, value = text.partition("=")
    if key != "spread" or not sep or not value:
        raise CliError(f"--placement-pref {text!r}: expected spread=node.labels.KEY")
    return {"spread": value}


def parse_generic(text: str) -> Spec:
    """`gpu=2` -> a discrete generic resource request."""
    kind, sep, value = text.partition("=")
    if not sep or not kind or not value.isdigit():
        raise CliError(f"--generic-resource {text!r}: expected KIND=COUNT (e.g. gpu=1)")
    return {"kind": kind, "value": int(value)}


_ROLL_FIELDS = (("parallelism", "parallelism"), ("delay", "delay"), ("failure_action", "failure_action"),
                ("monitor", "monitor"), ("max_failure_ratio", "max_failure_ratio"), ("order", "order"))


def rolling_config(a: argparse.Namespace, prefix: str) -> Spec:
    """The `--update-*` (prefix `update`) or `--rollback-*` flags given, as UpdateConfig fields."""
    out: Spec = {}
    for attr, field in _ROLL_FIELDS:
        value = getattr(a, f"{prefix}_{attr}", None)
        if value is not None:
            out[field] = value
    return out


def restart_policy(a: argparse.Namespace) -> Spec:
    return {k: v for k, v in (("condition", a.restart_condition), ("delay", a.restart_delay),
                              ("max_attempts", a.restart_max_attempts), ("window", a.restart_window))
            if v is not None}


def health_changes(a: argparse.Namespace) -> Spec | None:
    """The health check fields the `--health-*` flags set (`--health-cmd` -> `["CMD-SHELL", cmd]`), or
    `{"test": ["NONE"]}` for `--no-healthcheck`; None when no health flag is given."""
    if getattr(a, "no_healthcheck", False):
        if any(getattr(a, f, None) is not None for f in ("health_cmd", "health_interval", "health_timeout",
                                                         "health_retries", "health_start_period")):
            raise CliError("--no-healthcheck conflicts with the --health-* options")
        return {"test": ["NONE"]}
    out: Spec = {}
    if getattr(a, "health_cmd", None) is not None:
        out["test"] = ["CMD-SHELL", a.health_cmd]
    for attr, field in (("health_interval", "interval"), ("health_timeout", "timeout"),
                        ("health_retries", "retries"), ("health_start_period", "start_period")):
        value = getattr(a, attr, None)
        if value is not None:
            out[field] = value
    return out or None


def _job_mode(a: argparse.Namespace) -> Spec:
    """`--mode replicated-job`: `--replicas`/`--total-completions` = total completions, `--max-concurrent`
    (default: the total, like docker); both absent = the gateway's defaults (1 and 1)."""
    total = a.total_completions if a.total_completions is not None else a.replicas
    if a.total_completions is not None and a.replicas is not None and a.total_completions != a.replicas:
        raise CliError("--replicas and --total-completions disagree (for jobs they are the same setting)")
    job: Spec = {}
    if a.max_concurrent is not None:
        job["max_concurrent"] = a.max_concurrent
    elif total:
        job["max_concurrent"] = total
    if total is not None:
        job["total_completions"] = total
    return job


def build_mode(a: argparse.Namespace) -> Spec:
    mode = a.mode.replace("-", "_")
    if mode != "replicated_job" and (a.max_concurrent is not None or a.total_completions is not None):
        raise CliError("--max-concurrent and --total-completions can only be used with replicated-job mode")
    if mode in ("global", "global_job"):
        if a.replicas is not None:
            raise CliError("--replicas can only be used with replicated or replicated-job mode")
        return {mode: {}}
    if mode == "replicated_job":
        return {"replicated_job": _job_mode(a)}
    return {"replicated": {"replicas": 1 if a.replicas is None else a.replicas}}


def build_spec(a: argparse.Namespace) -> Spec:
    """The ServiceSpec JSON for `shoal service create`. Only given flags are set; the gateway fills defaults
    and validates (its message names the offending field)."""
    command: list[str] = list(a.command or [])
    env = parse_pairs(a.env, "--env")
    runtime: Spec
    if a.image:
        # docker: `service create IMAGE [COMMAND] [ARG...]` puts the trailing words in ContainerSpec.args
        runtime = {"image": a.image}
        if command:
            runtime["args"] = command
        if a.container_label:
            runtime["labels"] = parse_pairs(a.container_label, "--container-label")
    else:
        if not command:
            raise CliError("service create: give the command to run after `--` (process runtime), "
                           "or --image IMAGE (container runtime)")
        runtime = {"command": command}
    if env:
        runtime["env"] = env
    if a.workdir:
        runtime["dir"] = a.workdir
    if a.stop_grace_period is not None:
        runtime["stop_grace_period"] = a.stop_grace_period
    if (health := health_changes(a)) is not None:
        runtime["healthcheck"] = health
    task: Spec = {"container" if a.image else "process": runtime}
    resources: Spec = {}
    reservations: Spec = dict(_resources(a.reserve_cpu, a.reserve_memory))
    if a.generic_resource:
        reservations["generic"] = [parse_generic(g) for g in a.generic_resource]
    if reservations:
        resources["reservations"] = reservations
    if limits := _resources(a.limit_cpu, a.limit_memory):
        resources["limits"] = limits
    if resources:
        task["resources"] = resources
    if restart := restart_policy(a):
        task["restart"] = restart
    placement: Spec = {}
    if a.constraint:
        placement["constraints"] = list(a.constraint)
    if a.placement_pref:
        placement["preferences"] = [parse_placement_pref(p) for p in a.placement_pref]
    if a.replicas_max_per_node is not None:
        placement["max_replicas"] = a.replicas_max_per_node
    if placement:
        task["placement"] = placement
    if a.network:
        task["networks"] = [parse_network(n) for n in a.network]
    from shoal.cli import payloads  # imports this module

    payloads.apply_to_task(task, a)
    spec: Spec = {"name": a.name, "mode": build_mode(a), "task": task}
    if a.label:
        spec["labels"] = parse_pairs(a.label, "--label")
    if update := rolling_config(a, "update"):
        spec["update_config"] = update
    if rollback := rolling_config(a, "rollback"):
        spec["rollback_config"] = rollback
    endpoint: Spec = {}
    if a.endpoint_mode is not None:
        endpoint["mode"] = a.endpoint_mode
    if a.publish:
        endpoint["ports"] = [parse_publish(p) for p in a.publish]
    if endpoint:
        spec["endpoint"] = endpoint
    return spec


def _runtime_of(spec: Spec) -> tuple[str, Spec]:
    task = spec.setdefault("task", {})
    kind = "container" if "container" in task else "process"
    return kind, task.setdefault(kind, {})


def _same_port(a: Spec, b: Spec) -> bool:
    """Whether port `b` is replaced by `a` in `--publish-add`: the same published port and protocol, or (for
    ports without a published port) the same target, protocol and mode."""
    proto_a, proto_b = a.get("protocol", "tcp"), b.get("protocol", "tcp")
    if proto_a != proto_b:
        return False
    if a.get("published_port"):
        return bool(a.get("published_port") == b.get("published_port"))
    return bool(a["target_port"] == b.get("target_port")
                and a.get("publish_mode", "ingress") == b.get("publish_mode", "ingress"))


def _port_rm_matches(text: str, port: Spec) -> bool:
    """`--publish-rm TARGET[/PROTOCOL]` (docker removes by target port)."""
    target, _, proto = text.partition("/")
    return str(port.get("target_port")) == target and (not proto or port.get("protocol", "tcp") == proto)


NetworkResolver = Callable[[str], str]


def apply_update(spec: Spec, a: argparse.Namespace, network_id: NetworkResolver | None = None) -> Spec:
    """`shoal service update` flags applied to the current spec (read-modify-write). `network_id(ref)` maps a
    network reference to its id (the gateway stores ids), used by `--network-add/--network-rm`."""
    task = spec.setdefault("task", {})
    kind, runtime = _runtime_of(spec)
    mode = spec.setdefault("mode", {})
    if a.image is not None:
        if kind != "container":
            raise CliError("--image: this service runs a process (process runtime), not a container image")
        runtime["image"] = a.image
    if a.replicas is not None:
        if "replicated" in mode:
            mode["replicated"]["replicas"] = a.replicas
        elif "replicated_job" in mode:
            mode["replicated_job"]["total_completions"] = a.replicas
        else:
            raise CliError("--replicas can only be used with replicated or replicated-job mode")
    if a.max_concurrent is not None:
        if "replicated_job" not in mode:
            raise CliError("--max-concurrent can only be used with replicated-job mode")
        mode["replicated_job"]["max_concurrent"] = a.max_concurrent
    if a.env_add or a.env_rm:
        env = dict(runtime.get("env") or {})
        for key in a.env_rm or []:
            env.pop(key, None)
        env.update(parse_pairs(a.env_add, "--env-add"))
        runtime["env"] = env
    if a.workdir is not None:
        runtime["dir"] = a.workdir
    if a.stop_grace_period is not None:
        runtime["stop_grace_period"] = a.stop_grace_period
    if (health := health_changes(a)) is not None:
        runtime["healthcheck"] = health if health.get("test") == ["NONE"] else \
            {**(runtime.get("healthcheck") or {}), **health}
    if a.label_add or a.label_rm:
        labels = dict(spec.get("labels") or {})
        for key in a.label_rm or []:
            labels.pop(key, None)
        labels.update(parse_pairs(a.label_add, "--label-add"))
        spec["labels"] = labels
    placement = task.setdefault("placement", {})
    if a.constraint_add or a.constraint_rm:
        gone = {c.replace(" ", "") for c in a.constraint_rm or []}
        constraints = [c for c in placement.get("constraints") or [] if c.replace(" ", "") not in gone]
        constraints += [c for c in a.constraint_add or [] if c not in constraints]
        placement["constraints"] = constraints
    if a.placement_pref_add or a.placement_pref_rm:
        gone_prefs = {parse_placement_pref(p)["spread"] for p in a.placement_pref_rm or []}
        prefs = [p for p in placement.get("preferences") or [] if p.get("spread") not in gone_prefs]
        prefs += [parse_placement_pref(p) for p in a.placement_pref_add or []]
        placement["preferences"] = prefs
    if a.replicas_max_per_node is not None:
        placement["max_replicas"] = a.replicas_max_per_node
    resources = task.setdefault("resources", {})
    for section, cpu, memory in (("reservations", a.reserve_cpu, a.reserve_memory),
                                 ("limits", a.limit_cpu, a.limit_memory)):
        if changed := _resources(cpu, memory):
            resources[section] = {**(resources.get(section) or {}), **changed}
    if restart := restart_policy(a):
        task["restart"] = {**(task.get("restart") or {}), **restart}
    for prefix, field in (("update", "update_config"), ("rollback", "rollback_config")):
        if changes := rolling_config(a, prefix):
            spec[field] = {**(spec.get(field) or {}), **changes}
    if a.endpoint_mode is not None or a.publish_add or a.publish_rm:
        endpoint = spec.setdefault("endpoint", {})
        if a.endpoint_mode is not None:
            endpoint["mode"] = a.endpoint_mode
        ports = [p for p in endpoint.get("ports") or []
                 if not any(_port_rm_matches(rm, p) for rm in a.publish_rm or [])]
        for text in a.publish_add or []:
            new = parse_publish(text, "--publish-add")
            ports = [p for p in ports if not _same_port(new, p)] + [new]
        endpoint["ports"] = ports
    if a.network_add or a.network_rm:
        resolve = network_id or (lambda ref: ref)
        gone_ids = {resolve(ref) for ref in a.network_rm or []} | set(a.network_rm or [])
        nets = [n for n in task.get("networks") or [] if n.get("target") not in gone_ids]
        for text in a.network_add or []:
            att = parse_network(text, "--network-add")
            att["target"] = resolve(att["target"])
            nets = [n for n in nets if n.get("target") != att["target"]] + [att]
        task["networks"] = nets
    from shoal.cli import payloads  # imports this module

    payloads.apply_to_task(task, a)
    if a.force:
        task["force_update"] = int(task.get("force_update") or 0) + 1
    return spec


def parse_scale(items: list[str]) -> list[tuple[str, int]]:
    """`web=5 api=2` -> [("web", 5), ("api", 2)], all validated before anything is changed."""
    out = []
    for item in items:
        name, sep, n = item.partition("=")
        if not sep or not name or not n.isdigit():
            raise CliError(f"invalid scale specifier {item!r}: expected SERVICE=REPLICAS (e.g. web=5)")
        out.append((name, int(n)))
    return out


# ---- read-modify-write -------------------------------------------------------------------------------------
def modify_service(gw: Gateway, ref: str, mutate: Callable[[Spec], Spec], *,
                   attempts: int = SCALE_ATTEMPTS) -> dict[str, Any]:
    """Read the service, change its spec, write it back with the version read; on a stale-version 409
    (someone else wrote in between) read again and retry, up to `attempts` times. Other conflicts (a port in
    use...) are reported at once."""
    return _read_modify_write(gw, f"/v1/services/{ref}", "PUT",
                              lambda current: {"version": current["meta"]["version"],
                                               "spec": mutate(json.loads(json.dumps(current["spec"])))},
                              attempts=attempts, write_path=lambda current: f"/v1/services/{current['id']}")


def _read_modify_write(gw: Gateway, path: str, method: str, body_of: Callable[[dict[str, Any]], Any], *,
                       attempts: int = SCALE_ATTEMPTS,
                       write_path: Callable[[dict[str, Any]], str] | None = None) -> dict[str, Any]:
    """GET `path`, then `method` the body built from what was read; retried on stale-version conflicts."""
    for attempt in range(1, attempts + 1):
        current = gw.get(path)
        body = body_of(current)
        try:
            result: dict[str, Any] = gw.request(method, write_path(current) if write_path else path, body=body)
            return result
        except ApiError as e:
            if not e.stale or attempt == attempts:
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def _set_replicas(n: int, ref: str) -> Callable[[Spec], Spec]:
    def mutate(spec: Spec) -> Spec:
        mode = spec.get("mode", {})
        if "replicated" in mode:
            mode["replicated"]["replicas"] = n
        elif "replicated_job" in mode:
            mode["replicated_job"]["total_completions"] = n
        else:
            raise CliError(f"{ref}: scale can only be used with replicated or replicated-job mode")
        return spec

    return mutate


# ---- commands ----------------------------------------------------------------------------------------------
def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=4, sort_keys=False))


def _create(a: argparse.Namespace, path: str, spec: Spec) -> int:
    """POST the spec; print the new object's id."""
    gw = gateway_of(a)
    try:
        created = gw.request("POST", path, body=spec)
    finally:
        gw.close()
    print(created["id"])
    return 0


Rows = Callable[..., list[list[str]]]


def _list(a: argparse.Namespace, path: str, headers: tuple[str, ...], rows: Rows) -> int:
    """A listing as a table (`-q`: the first column, untruncated ids, only)."""
    gw = gateway_of(a)
    try:
        objs = gw.items(path)
    finally:
        gw.close()
    if a.quiet:
        for row in rows(objs, no_trunc=True):
            print(row[0])
        return 0
    print(table.format_table(headers, rows(objs, no_trunc=a.no_trunc)))
    return 0


def _remove(a: argparse.Namespace, path: str, params: dict[str, str] | None = None) -> int:
    """DELETE each reference in `a.refs`, printing those removed; failures are reported and the rest go on."""
    gw = gateway_of(a)

    def remove(ref: str) -> None:
        gw.request("DELETE", f"{path}/{ref}", params=params)
        print(ref)

    try:
        return _for_each(a.refs, remove)
    finally:
        gw.close()


def cmd_service_create(a: argparse.Namespace) -> int:
    return _create(a, "/v1/services", build_spec(a))


def cmd_service_ls(a: argparse.Namespace) -> int:
    return _list(a, "/v1/services", table.SERVICE_HEADERS, table.service_rows)


def cmd_service_ps(a: argparse.Namespace) -> int:
    gw = gateway_of(a)
    try:
        tasks: list[dict[str, Any]] = []
        for ref in a.services:  # paged: a 100k-task service is read 5,000 tasks at a time
            token: str | None = ""
            while token is not None:
                d = gw.get("/v1/tasks", service=ref, limit="5000", **({"next": token} if token else {}))
                tasks += d["items"]
                token = d.get("next")
        nodes = {n["id"]: table.hostname(n) or table.short_id(n["id"]) for n in gw.items("/v1/nodes")}
    finally:
        gw.close()
    rows = table.task_rows(tasks, nodes, time.time(), no_trunc=a.no_trunc)
    if a.quiet:
        for t in sorted(tasks, key=lambda t: t["id"]):
            print(t["id"])
        return 0
    print(table.format_table(table.TASK_HEADERS, rows))
    return 0


def cmd_service_logs(a: argparse.Namespace) -> int:
    """`shoal service logs [-f] [--tail N] [-t] [--since S] SERVICE|TASK`: a service's (or one task's) output,
    each line prefixed `<service>.<slot>.<task>@<node> |` like `docker service logs`."""
    gw = gateway_of(a)
    try:
        try:
            gw.get(f"/v1/services/{a.ref}")
            path, tasks = f"/v1/services/{a.ref}/logs", gw.items("/v1/tasks", service=a.ref)
        except ApiError as e:
            if e.status != 404:
                raise
            try:
                task = gw.get(f"/v1/tasks/{a.ref}")
            except ApiError as e2:
                if e2.status == 404:
                    raise CliError(f"no such task or service: {a.ref}") from None
                raise
            path, tasks = f"/v1/tasks/{task['id']}/logs", [task]
        nodes = {n["id"]: table.hostname(n) or table.short_id(n["id"]) for n in gw.items("/v1/nodes")}
        prefix = {t["id"]: f"{t.get('service_name') or 'task'}.{t.get('slot') or t.get('node_id')}."
                           f"{t['id'][:12]}@{nodes.get(t.get('node_id') or '', '?')}" for t in tasks}
        params = {"follow": str(a.follow).lower(), "tail": a.tail, "timestamps": str(a.timestamps).lower()}
        if a.since:
            params["since"] = a.since
        try:
            with gw.http.stream("GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise ApiError(resp.status_code, _error_message(resp), _error_code(resp))
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    rec = json.loads(line)
                    text = logs.text_line(rec, timestamps=a.timestamps,
                                          prefix=prefix.get(rec["task_id"], rec["task_id"][:12]))
                    print(text, file=sys.stderr if rec["stream"] != "stdout" else sys.stdout, flush=True)
        except httpx.HTTPError as e:
            raise CliError(f"the log stream from {gw.url} broke: {e}") from e
    except KeyboardInterrupt:
        return 130
    finally:
        gw.close()
    return 0


def _for_each(refs: list[str], action: Callable[[str], None]) -> int:
    """Apply `action` to every reference, reporting failures on stderr and carrying on (like docker)."""
    status = 0
    for ref in refs:
        try:
            action(ref)
        except CliError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
    return status


def _inspect(a: argparse.Namespace, path: str) -> int:
    gw = gateway_of(a)
    found: list[Any] = []
    try:
        status = _for_each(a.refs, lambda ref: found.append(gw.get(f"{path}/{ref}")))
    finally:
        gw.close()
    _print_json(found)
    return status


def cmd_service_inspect(a: argparse.Namespace) -> int:
    return _inspect(a, "/v1/services")


def cmd_service_rm(a: argparse.Namespace) -> int:
    return _remove(a, "/v1/services")


def cmd_service_scale(a: argparse.Namespace) -> int:
    replicas = dict(parse_scale(a.specs))
    gw = gateway_of(a)

    def scale(ref: str) -> None:
        modify_service(gw, ref, _set_replicas(replicas[ref], ref))
        print(f"{ref} scaled to {replicas[ref]}")

    try:
        return _for_each(list(replicas), scale)
    finally:
        gw.close()


def cmd_node_ls(a: argparse.Namespace) -> int:
    gw = gateway_of(a)
    try:
        nodes = gw.items("/v1/nodes")
    finally:
        gw.close()
    if a.quiet:
        for n in nodes:
            print(n["id"])
        return 0
    print(table.format_table(table.NODE_HEADERS, table.node_rows(nodes, no_trunc=a.no_trunc)))
    return 0


def cmd_node_inspect(a: argparse.Namespace) -> int:
    return _inspect(a, "/v1/nodes")


def cmd_cluster(a: argparse.Namespace) -> int:
    gw = gateway_of(a)
    try:
        cluster = gw.get("/v1/cluster")
    finally:
        gw.close()
    if a.json:
        _print_json(cluster)
    else:
        print(table.cluster_text(cluster, time.time()))
    return 0


def _network_resolver(gw: Gateway) -> NetworkResolver:
    """Network reference -> id, asking the gateway once per reference."""
    cache: dict[str, str] = {}

    def network_id(ref: str) -> str:
        if ref not in cache:
            cache[ref] = str(gw.get(f"/v1/networks/{ref}")["id"])
        return cache[ref]

    return network_id


def cmd_service_update(a: argparse.Namespace) -> int:
    gw = gateway_of(a)
    try:
        resolver = _network_resolver(gw)
        modify_service(gw, a.service, lambda spec: apply_update(spec, a, resolver))
    finally:
        gw.close()
    print(a.service)
    return 0


def cmd_service_rollback(a: argparse.Namespace) -> int:
    gw = gateway_of(a)
    try:
        gw.request("POST", f"/v1/services/{a.service}/rollback")
    finally:
        gw.close()
    print(a.service)
    return 0


def node_changes(a: argparse.Namespace) -> Spec:
    """The PATCH body of `shoal node update` (without the version)."""
    body: Spec = {}
    if a.availability is not None:
        body["availability"] = a.availability
    if a.role is not None:
        body["role"] = a.role
    if a.label_add:
        body["labels_add"] = parse_pairs([x if "=" in x else x + "=" for x in a.label_add], "--label-add")
    if a.label_rm:
        body["labels_rm"] = list(a.label_rm)
    if not body:
        raise CliError("node update: nothing to change (use --availability, --role, --label-add, --label-rm)")
    return body


def cmd_node_update(a: argparse.Namespace) -> int:
    changes = node_changes(a)
    gw = gateway_of(a)
    try:
        _read_modify_write(gw, f"/v1/nodes/{a.node}", "PATCH",
                           lambda current: {"version": current["meta"]["version"], **changes},
                           write_path=lambda current: f"/v1/nodes/{current['id']}")
    finally:
        gw.close()
    print(a.node)
    return 0


def cmd_node_role(role: str) -> Callable[[argparse.Namespace], int]:
    """`shoal node promote|demote NODE...` (Docker's): `node update --role` on each node. The CA issues the
    new role when the node next renews its certificate (docs/security.md, "Promotion and demotion")."""
    def run(a: argparse.Namespace) -> int:
        gw = gateway_of(a)
        try:
            for ref in a.nodes:
                _read_modify_write(gw, f"/v1/nodes/{ref}", "PATCH",
                                   lambda current: {"version": current["meta"]["version"], "role": role},
                                   write_path=lambda current: f"/v1/nodes/{current['id']}")
                word = "promoted to a manager" if role == "manager" else "demoted to a worker"
                print(f"Node {ref} {word} in the swarm.")
        finally:
            gw.close()
        return 0
    return run


def cmd_node_rm(a: argparse.Namespace) -> int:
    return _remove(a, "/v1/nodes", {"force": "true"} if a.force else None)


def cluster_changes(a: argparse.Namespace) -> Spec:
    """The PATCH body of `shoal cluster update`."""
    body: Spec = {}
    if a.heartbeat_period is not None:
        body["dispatcher"] = {"heartbeat_period": a.heartbeat_period}
    if a.task_history_limit is not None:
        body["orchestration"] = {"task_history_retention_limit": a.task_history_limit}
    if getattr(a, "cert_expiry", None) is not None:
        body["ca_config"] = {"node_cert_expiry": parse_cert_expiry(a.cert_expiry)}
    if getattr(a, "autolock", None) is not None:
        body["encryption_config"] = {"auto_lock_managers": a.autolock}
    if not body:
        raise CliError("cluster update: nothing to change (use --heartbeat-period, --task-history-limit, "
                       "--cert-expiry, --autolock)")
    return body


_DAYS = re.compile(r"^\s*(\d+(?:\.\d+)?)d\s*$")


def parse_cert_expiry(text: str) -> float:
    """`--cert-expiry`: a duration ("90d", "2160h", "1h30m"; days are allowed here) of at least an hour."""
    m = _DAYS.match(text)
    try:
        seconds = float(m.group(1)) * 86400 if m else parse_duration(text)
    except ValueError as e:
        raise CliError(f"--cert-expiry {text!r}: {e}; e.g. 90d, 720h") from None
    if seconds < MIN_NODE_CERT_EXPIRY:
        raise CliError(f"--cert-expiry {text!r}: certificates must be valid for at least 1h")
    return seconds


def cmd_cluster_update(a: argparse.Namespace) -> int:
    body = cluster_changes(a)
    gw = gateway_of(a)
    try:
        # the gateway requires the version read (optimistic concurrency); 0: the object is not created yet
        current = gw.request("GET", "/v1/cluster")
        body["version"] = int(((current or {}).get("meta") or {}).get("version") or 0)
        gw.request("PATCH", "/v1/cluster", body=body)
        key = gw.get("/v1/swarm/unlock-key").get("unlock_key") if getattr(a, "autolock", None) else None
    finally:
        gw.close()
    print("cluster updated")
    if key:
        print(unlock_key_text(str(key)))
    return 0


def unlock_key_text(key: str, *, rotated: bool = False) -> str:
    """Docker's wording (`docker swarm unlock-key`)."""
    head = "Successfully rotated manager unlock key.\n\n" if rotated else ""
    return (f"{head}To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\n"
            "command and provide the following key:\n\n"
            f"    {key}\n\n"
            "Please remember to store this key in a password manager, since without it you\n"
            "will not be able to restart the manager.")


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def network_spec(a: argparse.Namespace) -> Spec:
    """The NetworkSpec JSON of `shoal network create`."""
    spec: Spec = {"name": a.name}
    if a.driver is not None:
        spec["driver"] = a.driver
    if a.gateway is not None and a.subnet is None:
        raise CliError("--gateway needs --subnet")
    if a.subnet is not None:
        spec["ipam"] = {"subnet": a.subnet, **({"gateway": a.gateway} if a.gateway is not None else {})}
    if a.attachable:
        spec["attachable"] = True
    if a.internal:
        spec["internal"] = True
    if a.label:
        spec["labels"] = parse_pairs(a.label, "--label")
    return spec


def cmd_network_create(a: argparse.Namespace) -> int:
    return _create(a, "/v1/networks", network_spec(a))


def cmd_network_ls(a: argparse.Namespace) -> int:
    return _list(a, "/v1/networks", table.NETWORK_HEADERS, table.network_rows)


def cmd_network_inspect(a: argparse.Namespace) -> int:
    return _inspect(a, "/v1/networks")


def cmd_network_rm(a: argparse.Namespace) -> int:
    return _remove(a, "/v1/networks")


def attach_request(a: argparse.Namespace) -> Spec:
    """The body of `shoal network attach`: the node, and the container and aliases when given."""
    body: Spec = {"node_id": a.node}
    if a.container:
        body["container_id"] = a.container
    if a.alias:
        body["aliases"] = list(a.alias)
    return body


def cmd_network_attach(a: argparse.Namespace) -> int:
    """Create an attachment task on the node; print its id."""
    return _create(a, f"/v1/networks/{a.network}/attachments", attach_request(a))


def cmd_network_detach(a: argparse.Namespace) -> int:
    return _remove(a, f"/v1/networks/{a.network}/attachments")


# ---- parsers -----------------------------------------------------------------------------------------------
def _url_parent() -> argparse.ArgumentParser:
    """`--url` accepted after any subcommand too (without overriding the top-level value when absent)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--url", default=argparse.SUPPRESS, help="gateway URL (env SHOAL_URL)")
    return p


def _help_of(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(_: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


SubParsers = argparse._SubParsersAction  # type: ignore[type-arg]


def _add_ls(sub: SubParsers, parent: argparse.ArgumentParser, what: str, func: Callable[[argparse.Namespace], int],
            no_trunc_help: str = "do not truncate ids") -> None:
    """`ls` / `list` with `-q` and `--no-trunc`."""
    ls = sub.add_parser("ls", aliases=["list"], parents=[parent], help=f"list {what}")
    ls.add_argument("-q", "--quiet", action="store_true", help="only print ids")
    ls.add_argument("--no-trunc", action="store_true", help=no_trunc_help)
    ls.set_defaults(func=func)


def _add_on_refs(sub: SubParsers, parent: argparse.ArgumentParser, name: str, metavar: str, help_text: str,
                 func: Callable[[argparse.Namespace], int], aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """A command on one or more references (`inspect`, `rm`): their list is `refs`."""
    cmd = sub.add_parser(name, aliases=list(aliases), parents=[parent], help=help_text)
    cmd.add_argument("refs", nargs="+", metavar=metavar)
    cmd.set_defaults(func=func)
    return cmd


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`service`, `node`, `network`, `cluster`, `swarm` and `env` under the top-level subcommands."""
    parent = _url_parent()
    service = sub.add_parser("service", aliases=["svc"], help="manage services")
    service.set_defaults(func=_help_of(service))
    ssub = service.add_subparsers(title="service commands", metavar="COMMAND")
    _add_service_create(ssub, parent)
    _add_service_update(ssub, parent)

    _add_ls(ssub, parent, "services", cmd_service_ls, "do not truncate ids and commands")

    ps = ssub.add_parser("ps", parents=[parent], help="list the tasks of services")
    ps.add_argument("services", nargs="+", metavar="SERVICE")
    ps.add_argument("-q", "--quiet", action="store_true", help="only print task ids")
    ps.add_argument("--no-trunc", action="store_true", help="do not truncate ids and errors")
    ps.set_defaults(func=cmd_service_ps)

    lg = ssub.add_parser("logs", parents=[parent], help="show the output of a service's tasks (or one task's)")
    lg.add_argument("ref", metavar="SERVICE|TASK")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    lg.add_argument("--tail", default="all", help="lines per task from the end (default all)")
    lg.add_argument("-t", "--timestamps", action="store_true", help="show each line's time")
    lg.add_argument("--since", default=None, help="only lines since a time (epoch, RFC 3339) or duration (10m)")
    lg.set_defaults(func=cmd_service_logs)

    _add_on_refs(ssub, parent, "inspect", "SERVICE", "show services as JSON", cmd_service_inspect)

    scale = ssub.add_parser("scale", parents=[parent],
                            help="set the replicas of replicated services (total completions of jobs)")
    scale.add_argument("specs", nargs="+", metavar="SERVICE=REPLICAS")
    scale.set_defaults(func=cmd_service_scale)

    rollback = ssub.add_parser("rollback", parents=[parent], help="revert a service to its previous spec")
    rollback.add_argument("service", metavar="SERVICE")
    rollback.set_defaults(func=cmd_service_rollback)

    _add_on_refs(ssub, parent, "rm", "SERVICE", "remove services", cmd_service_rm, aliases=("remove",))

    node = sub.add_parser("node", help="manage nodes")
    node.set_defaults(func=_help_of(node))
    nsub = node.add_subparsers(title="node commands", metavar="COMMAND")
    _add_ls(nsub, parent, "nodes", cmd_node_ls)
    _add_on_refs(nsub, parent, "inspect", "NODE", "show nodes as JSON", cmd_node_inspect)
    nupdate = nsub.add_parser("update", parents=[parent], help="change a node's availability, role or labels")
    nupdate.add_argument("--availability", choices=["active", "pause", "drain"],
                         help="active, pause (no new tasks) or drain (tasks move elsewhere)")
    nupdate.add_argument("--role", choices=["worker", "manager"], help="desired role")
    nupdate.add_argument("--label-add", action="append", metavar="KEY=VALUE", help="add or change a label")
    nupdate.add_argument("--label-rm", action="append", metavar="KEY", help="remove a label")
    nupdate.add_argument("node", metavar="NODE")
    nupdate.set_defaults(func=cmd_node_update)
    for verb, role in (("promote", "manager"), ("demote", "worker")):
        p = nsub.add_parser(verb, parents=[parent], help=f"make nodes {role}s (their desired role)")
        p.add_argument("nodes", nargs="+", metavar="NODE")
        p.set_defaults(func=cmd_node_role(role))
    nrm = _add_on_refs(nsub, parent, "rm", "NODE", "remove nodes from the cluster", cmd_node_rm,
                       aliases=("remove",))
    nrm.add_argument("-f", "--force", action="store_true", help="remove a node even if it is ready")

    network = sub.add_parser("network", help="manage networks")
    network.set_defaults(func=_help_of(network))
    wsub = network.add_subparsers(title="network commands", metavar="COMMAND")
    wcreate = wsub.add_parser("create", parents=[parent], help="create a network")
    wcreate.add_argument("--driver", "-d", help="network driver (default overlay)")
    wcreate.add_argument("--subnet", metavar="CIDR", help="subnet, e.g. 10.20.0.0/24 (default: from the pool)")
    wcreate.add_argument("--gateway", metavar="IP", help="gateway address inside the subnet")
    wcreate.add_argument("--attachable", action="store_true", help="let standalone containers attach")
    wcreate.add_argument("--internal", action="store_true", help="no access to the outside")
    wcreate.add_argument("--label", action="append", metavar="KEY=VALUE", help="network label")
    wcreate.add_argument("name", metavar="NAME")
    wcreate.set_defaults(func=cmd_network_create)
    _add_ls(wsub, parent, "networks", cmd_network_ls)
    _add_on_refs(wsub, parent, "inspect", "NETWORK", "show networks as JSON", cmd_network_inspect)
    _add_on_refs(wsub, parent, "rm", "NETWORK", "remove networks", cmd_network_rm, aliases=("remove",))
    wattach = wsub.add_parser("attach", parents=[parent],
                              help="attach a standalone container on a node to an attachable network")
    wattach.add_argument("--node", required=True, metavar="NODE", help="the node (id, hostname or id prefix)")
    wattach.add_argument("--container", metavar="ID", help="the container this attachment is for")
    wattach.add_argument("--alias", action="append", metavar="ALIAS", help="extra DNS name on the network")
    wattach.add_argument("network", metavar="NETWORK")
    wattach.set_defaults(func=cmd_network_attach)
    wdetach = wsub.add_parser("detach", parents=[parent], help="detach attachments (by task id) from a network")
    wdetach.add_argument("network", metavar="NETWORK")
    wdetach.add_argument("refs", nargs="+", metavar="TASK")
    wdetach.set_defaults(func=cmd_network_detach)

    cluster = sub.add_parser("cluster", parents=[parent],
                             help="raft members, leader, term, commit index; subsystem leases")
    cluster.add_argument("--json", action="store_true", help="print the gateway's JSON")
    cluster.set_defaults(func=cmd_cluster)
    csub = cluster.add_subparsers(title="cluster commands", metavar="COMMAND")
    cupdate = csub.add_parser("update", parents=[parent], help="change the cluster spec")
    add_cluster_update_flags(cupdate)
    from shoal.cli import members, payloads, swarm  # import this module: loaded once the parsers are built

    members.add_parsers(csub, parent)
    swarm.add_parsers(sub, parent)
    payloads.add_parsers(sub, parent, _help_of)


def _add_rolling_flags(c: argparse.ArgumentParser, prefix: str) -> None:
    """`--update-*` / `--rollback-*` (docker's names; SwarmKit's defaults in the help)."""
    what = "update" if prefix == "update" else "rollback"
    actions = ["pause", "continue", "rollback"] if prefix == "update" else ["pause", "continue"]
    c.add_argument(f"--{prefix}-parallelism", type=int, metavar="N",
                   help=f"tasks to {what} at once (default 1; 0 = all)")
    c.add_argument(f"--{prefix}-delay", metavar="DURATION", help=f"delay between {what} batches (default 0s)")
    c.add_argument(f"--{prefix}-failure-action", choices=actions, help=f"on {what} failure (default pause)")
    c.add_argument(f"--{prefix}-monitor", metavar="DURATION",
                   help="time to watch each new task for failure (default 5s)")
    c.add_argument(f"--{prefix}-max-failure-ratio", type=float, metavar="RATIO",
                   help="failure ratio tolerated, 0..1 (default 0)")
    c.add_argument(f"--{prefix}-order", choices=["stop-first", "start-first"],
                   help="stop the old task first, or start the new one first (default stop-first)")


def _add_shared_flags(c: argparse.ArgumentParser) -> None:
    """Flags `service create` and `service update` share."""
    c.add_argument("-w", "--workdir", help="working directory of the command")
    c.add_argument("--replicas-max-per-node", type=int, metavar="N", help="at most N tasks per node (0 = any)")
    c.add_argument("--reserve-cpu", metavar="CPUS", help="CPUs reserved per task (e.g. 0.5)")
    c.add_argument("--reserve-memory", metavar="SIZE", help="memory reserved per task (e.g. 64M)")
    c.add_argument("--limit-cpu", metavar="CPUS", help="CPU limit per task")
    c.add_argument("--limit-memory", metavar="SIZE", help="memory limit per task")
    c.add_argument("--restart-condition", choices=["any", "on-failure", "none"],
                   help="when to replace a task that exits (default any)")
    c.add_argument("--restart-delay", metavar="DURATION", help="delay between restarts (default 5s)")
    c.add_argument("--restart-max-attempts", type=int, metavar="N", help="give up after N restarts")
    c.add_argument("--restart-window", metavar="DURATION", help="window used to count restarts")
    c.add_argument("--stop-grace-period", metavar="DURATION", help="time to wait before killing (default 10s)")
    c.add_argument("--max-concurrent", type=int, metavar="N", help="replicated-job: tasks run at once")
    c.add_argument("--endpoint-mode", choices=["vip", "dnsrr"], help="vip (default) or dnsrr")
    c.add_argument("--health-cmd", metavar="CMD", help="health check command (run with /bin/sh -c)")
    c.add_argument("--health-interval", metavar="DURATION", help="time between health checks")
    c.add_argument("--health-timeout", metavar="DURATION", help="time one check may take")
    c.add_argument("--health-retries", type=int, metavar="N", help="failures before unhealthy")
    c.add_argument("--health-start-period", metavar="DURATION",
                   help="start-up time during which failures do not count")
    c.add_argument("--no-healthcheck", action="store_true", help="disable the health check")
    _add_rolling_flags(c, "update")
    _add_rolling_flags(c, "rollback")


def _add_service_create(ssub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    c = ssub.add_parser(
        "create", parents=[parent], help="create a service",
        usage="shoal service create --name NAME [options] [--image IMAGE] [-- COMMAND [ARG...]]",
        description="Without --image the command after `--` runs as a local process (process runtime); with "
        "--image it runs in a container and the words after `--` are the container's arguments.",
    )
    c.add_argument("--name", required=True, help="service name (unique, case-insensitive)")
    c.add_argument("--mode", choices=["replicated", "global", "replicated-job", "global-job"],
                   default="replicated")
    c.add_argument("--replicas", type=int,
                   help="number of tasks (replicated mode; default 1) or of completions (replicated-job)")
    c.add_argument("--total-completions", type=int, metavar="N",
                   help="replicated-job: completions needed (same as --replicas; default --max-concurrent)")
    c.add_argument("--image", help="container image (container runtime)")
    c.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="environment variable")
    c.add_argument("-l", "--label", action="append", metavar="KEY=VALUE", help="service label")
    c.add_argument("--container-label", action="append", metavar="KEY=VALUE", help="container label")
    c.add_argument("--constraint", action="append", metavar="EXPR", help="placement constraint (node.x==y)")
    c.add_argument("--placement-pref", action="append", metavar="spread=LABEL",
                   help="spread tasks over a label's values (spread=node.labels.zone)")
    c.add_argument("--generic-resource", action="append", metavar="KIND=N", help="reserve N units of KIND")
    c.add_argument("-p", "--publish", action="append", metavar="PORT",
                   help="publish a port: published=8080,target=80[,protocol=tcp][,mode=ingress|host] or 8080:80")
    c.add_argument("--network", action="append", metavar="NETWORK",
                   help="attach to a network: NAME or name=NAME,alias=ALIAS")
    from shoal.cli import payloads  # imports this module

    payloads.add_service_flags(c, update=False)
    _add_shared_flags(c)
    c.add_argument("command", nargs="*", metavar="COMMAND", help="command and arguments, after `--`")
    c.set_defaults(func=cmd_service_create)


def _add_service_update(ssub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    u = ssub.add_parser(
        "update", parents=[parent], help="change a service (read, modify, write back; retried on conflicts)",
        usage="shoal service update [options] SERVICE",
    )
    u.add_argument("--image", help="new container image (container runtime)")
    u.add_argument("--replicas", type=int, help="replicas (replicated) or total completions (replicated-job)")
    u.add_argument("--env-add", action="append", metavar="KEY=VALUE", help="add or change a variable")
    u.add_argument("--env-rm", action="append", metavar="KEY", help="remove a variable")
    u.add_argument("--label-add", action="append", metavar="KEY=VALUE", help="add or change a service label")
    u.add_argument("--label-rm", action="append", metavar="KEY", help="remove a service label")
    u.add_argument("--constraint-add", action="append", metavar="EXPR", help="add a placement constraint")
    u.add_argument("--constraint-rm", action="append", metavar="EXPR", help="remove a placement constraint")
    u.add_argument("--placement-pref-add", action="append", metavar="spread=LABEL", help="add a preference")
    u.add_argument("--placement-pref-rm", action="append", metavar="spread=LABEL", help="remove a preference")
    u.add_argument("--publish-add", "--publish", "-p", action="append", metavar="PORT",
                   help="publish a port (replaces one with the same published port and protocol)")
    u.add_argument("--publish-rm", action="append", metavar="TARGET[/PROTOCOL]",
                   help="stop publishing the ports with this target port")
    u.add_argument("--network-add", "--network", action="append", metavar="NETWORK",
                   help="attach to a network: NAME or name=NAME,alias=ALIAS")
    u.add_argument("--network-rm", action="append", metavar="NETWORK", help="detach from a network")
    u.add_argument("--force", action="store_true", help="redeploy the tasks even if nothing changed")
    from shoal.cli import payloads  # imports this module

    payloads.add_service_flags(u, update=True)
    _add_shared_flags(u)
    u.add_argument("service", metavar="SERVICE")
    u.set_defaults(func=cmd_service_update)


def add_cluster_update_flags(p: argparse.ArgumentParser) -> None:
    """The flags of `shoal cluster update` and of its second name `shoal swarm update`."""
    p.add_argument("--heartbeat-period", metavar="DURATION",
                   help="agent heartbeat period (e.g. 10s; a node is down after 3 missed)")
    p.add_argument("--task-history-limit", type=int, metavar="N",
                   help="terminal tasks kept per slot (negative = all)")
    p.add_argument("--cert-expiry", metavar="DURATION",
                   help="validity of node certificates issued from now on (e.g. 90d, 720h; at least 1h)")
    p.add_argument("--autolock", type=parse_bool, metavar="true|false",
                   help="lock restarted managers until `shoal swarm unlock` (prints the unlock key)")
    p.set_defaults(func=cmd_cluster_update)


def default_url() -> str:
    return os.environ.get("SHOAL_URL") or DEFAULT_URL
