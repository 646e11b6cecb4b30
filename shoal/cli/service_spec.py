"""`shoal service create|update` flags -> ServiceSpec JSON: `build_spec` for create, `apply_update` for the
read-modify-write of update; the flags both share. Pure: no gateway calls."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from shoal.cli import payloads
from shoal.cli.client import CliError
from shoal.cli.flags import (
    Spec,
    health_changes,
    parse_generic,
    parse_network,
    parse_pairs,
    parse_placement_pref,
    parse_publish,
    resources_of,
    restart_policy,
    rolling_config,
)


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
    reservations: Spec = dict(resources_of(a.reserve_cpu, a.reserve_memory))
    if a.generic_resource:
        reservations["generic"] = [parse_generic(g) for g in a.generic_resource]
    if reservations:
        resources["reservations"] = reservations
    if limits := resources_of(a.limit_cpu, a.limit_memory):
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


def _update_mode(mode: Spec, a: argparse.Namespace) -> None:
    """`--replicas` and `--max-concurrent` on the current mode."""
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


def _update_placement(placement: Spec, a: argparse.Namespace) -> None:
    """`--constraint-add/-rm`, `--placement-pref-add/-rm`, `--replicas-max-per-node`."""
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


def _update_endpoint(endpoint: Spec, a: argparse.Namespace) -> None:
    """`--endpoint-mode`, `--publish-add/-rm`."""
    if a.endpoint_mode is not None:
        endpoint["mode"] = a.endpoint_mode
    ports = [p for p in endpoint.get("ports") or []
             if not any(_port_rm_matches(rm, p) for rm in a.publish_rm or [])]
    for text in a.publish_add or []:
        new = parse_publish(text, "--publish-add")
        ports = [p for p in ports if not _same_port(new, p)] + [new]
    endpoint["ports"] = ports


def _update_networks(nets: list[Spec], a: argparse.Namespace, network_id: NetworkResolver | None) -> list[Spec]:
    """`--network-add/-rm` (references resolved to ids)."""
    resolve = network_id or (lambda ref: ref)
    gone_ids = {resolve(ref) for ref in a.network_rm or []} | set(a.network_rm or [])
    nets = [n for n in nets if n.get("target") not in gone_ids]
    for text in a.network_add or []:
        att = parse_network(text, "--network-add")
        att["target"] = resolve(att["target"])
        nets = [n for n in nets if n.get("target") != att["target"]] + [att]
    return nets


def _edited(current: dict[str, str] | None, rm: list[str] | None, add: list[str] | None,
            flag: str) -> dict[str, str]:
    """A copy of a map (env, labels) with the `--*-rm` keys removed, then the `--*-add` KEY=VALUE pairs set."""
    out = dict(current or {})
    for key in rm or []:
        out.pop(key, None)
    out.update(parse_pairs(add, flag))
    return out


def apply_update(spec: Spec, a: argparse.Namespace, network_id: NetworkResolver | None = None) -> Spec:
    """`shoal service update` flags applied to the current spec (read-modify-write). `network_id(ref)` maps a
    network reference to its id (the gateway stores ids), used by `--network-add/--network-rm`."""
    task = spec.setdefault("task", {})
    kind, runtime = _runtime_of(spec)
    if a.image is not None:
        if kind != "container":
            raise CliError("--image: this service runs a process (process runtime), not a container image")
        runtime["image"] = a.image
    _update_mode(spec.setdefault("mode", {}), a)
    if a.env_add or a.env_rm:
        runtime["env"] = _edited(runtime.get("env"), a.env_rm, a.env_add, "--env-add")
    if a.workdir is not None:
        runtime["dir"] = a.workdir
    if a.stop_grace_period is not None:
        runtime["stop_grace_period"] = a.stop_grace_period
    if (health := health_changes(a)) is not None:
        runtime["healthcheck"] = health if health.get("test") == ["NONE"] else \
            {**(runtime.get("healthcheck") or {}), **health}
    if a.label_add or a.label_rm:
        spec["labels"] = _edited(spec.get("labels"), a.label_rm, a.label_add, "--label-add")
    _update_placement(task.setdefault("placement", {}), a)
    resources = task.setdefault("resources", {})
    for section, cpu, memory in (("reservations", a.reserve_cpu, a.reserve_memory),
                                 ("limits", a.limit_cpu, a.limit_memory)):
        if changed := resources_of(cpu, memory):
            resources[section] = {**(resources.get(section) or {}), **changed}
    if restart := restart_policy(a):
        task["restart"] = {**(task.get("restart") or {}), **restart}
    for prefix, field in (("update", "update_config"), ("rollback", "rollback_config")):
        if changes := rolling_config(a, prefix):
            spec[field] = {**(spec.get(field) or {}), **changes}
    if a.endpoint_mode is not None or a.publish_add or a.publish_rm:
        _update_endpoint(spec.setdefault("endpoint", {}), a)
    if a.network_add or a.network_rm:
        task["networks"] = _update_networks(task.get("networks") or [], a, network_id)
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


def add_rolling_flags(c: argparse.ArgumentParser, prefix: str) -> None:
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


def add_shared_flags(c: argparse.ArgumentParser) -> None:
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
    add_rolling_flags(c, "update")
    add_rolling_flags(c, "rollback")
