"""`shoal service create|update|ls|ps|logs|inspect|scale|rollback|rm`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from shoal import logs
from shoal.cli import payloads, plans, table
from shoal.cli.client import (
    SCALE_ATTEMPTS,
    ApiError,
    CliError,
    Gateway,
    gateway_of,
    read_modify_write,
)
from shoal.cli.flags import Spec, SubParsers, add_ls, add_on_refs, help_of
from shoal.cli.follow import add_follow_flags, follow_service
from shoal.cli.output import for_each, inspect, list_objects, remove
from shoal.cli.service_spec import NetworkResolver, add_shared_flags, apply_update, build_spec, parse_scale


def modify_service(gw: Gateway, ref: str, mutate: Callable[[Spec], Spec], *,
                   attempts: int = SCALE_ATTEMPTS) -> dict[str, Any]:
    """Read the service, change its spec, write it back with the version read; on a stale-version 409
    (someone else wrote in between) read again and retry, up to `attempts` times. Other conflicts (a port in
    use...) are reported at once."""
    return read_modify_write(gw, f"/v1/services/{ref}", "PUT",
                              lambda current: {"version": current["meta"]["version"],
                                               "spec": mutate(json.loads(json.dumps(current["spec"])))},
                              attempts=attempts, write_path=lambda current: f"/v1/services/{current['id']}")


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


def cmd_service_create(a: argparse.Namespace) -> int:
    """Create, print the id, then follow the service until it has converged (unless `--detach`)."""
    spec = build_spec(a)
    gw = gateway_of(a)
    try:
        if a.dry_run:
            return plans.show(gw, a, plans.plan_new(gw, spec))
        created = gw.request("POST", "/v1/services", body=spec)
        print(created["id"], flush=True)
        follow_service(gw, a, created["id"])
    finally:
        gw.close()
    return 0


def cmd_service_ls(a: argparse.Namespace) -> int:
    return list_objects(a, "/v1/services", table.SERVICE_HEADERS, table.service_rows)


#: what `service ps` shows of a task (the rest — above all the copy of the service's task spec — stays home)
PS_FIELDS = "id,meta,service_id,service_name,slot,node_id,desired_state,status"


def service_tasks(gw: Gateway, refs: list[str], fields: str | None = PS_FIELDS) -> list[dict[str, Any]]:
    """Every task of the services `refs` (only `fields` of each): one streamed `GET /v1/tasks?service=` each
    (NDJSON, decoded as it arrives; a 100k-task service is one answer, not 20 pages), following `Shoal-Next`
    should the gateway ever cut the answer into pages."""
    tasks: list[dict[str, Any]] = []
    for ref in refs:
        token: str | None = ""
        while token is not None:
            headers: dict[str, str] = {}
            params = {"service": ref, **({"fields": fields} if fields else {}), **({"next": token} if token else {})}
            tasks.extend(gw.stream_records("/v1/tasks", params, "task list", headers))
            token = headers.get("shoal-next")
    return tasks


def cmd_service_ps(a: argparse.Namespace) -> int:
    """`shoal service ps [-q] [--no-trunc] SERVICE...`: docker's rows, built from only the fields they show and
    written in one piece (a 100k-task service is 100k lines)."""
    gw = gateway_of(a)
    try:
        if a.quiet:  # ids only: the gateway sends only ids
            ids = sorted(t["id"] for t in service_tasks(gw, a.services, fields="id"))
            if ids:
                sys.stdout.write("\n".join(ids) + "\n")
            return 0
        tasks = service_tasks(gw, a.services)
        nodes = {n["id"]: table.hostname(n) or table.short_id(n["id"]) for n in gw.items("/v1/nodes")}
    finally:
        gw.close()
    sys.stdout.write(table.task_table(tasks, nodes, time.time(), no_trunc=a.no_trunc) + "\n")
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
        for _, rec in gw.stream_lines(path, params, "log"):
            text = logs.text_line(rec, timestamps=a.timestamps,
                                  prefix=prefix.get(rec["task_id"], rec["task_id"][:12]))
            print(text, file=sys.stderr if rec["stream"] != "stdout" else sys.stdout, flush=True)
    except KeyboardInterrupt:
        return 130
    finally:
        gw.close()
    return 0


def cmd_service_inspect(a: argparse.Namespace) -> int:
    return inspect(a, "/v1/services")


def cmd_service_rm(a: argparse.Namespace) -> int:
    return remove(a, "/v1/services")


def cmd_service_scale(a: argparse.Namespace) -> int:
    replicas = dict(parse_scale(a.specs))
    gw = gateway_of(a)

    scaled: list[str] = []

    def scale(ref: str) -> None:
        modify_service(gw, ref, _set_replicas(replicas[ref], ref))
        print(f"{ref} scaled to {replicas[ref]}", flush=True)
        scaled.append(ref)

    try:
        status = for_each(list(replicas), scale)
        return for_each(scaled, lambda ref: follow_service(gw, a, ref)) or status
    finally:
        gw.close()


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
        if a.dry_run:
            current = gw.get(f"/v1/services/{a.service}")
            spec = apply_update(json.loads(json.dumps(current["spec"])), a, resolver)
            return plans.show(gw, a, plans.plan_update(gw, current, spec))
        modify_service(gw, a.service, lambda spec: apply_update(spec, a, resolver))
        print(a.service, flush=True)
        follow_service(gw, a, a.service)
    finally:
        gw.close()
    return 0


def cmd_service_rollback(a: argparse.Namespace) -> int:
    gw = gateway_of(a)
    try:
        gw.request("POST", f"/v1/services/{a.service}/rollback")
        print(a.service, flush=True)
        follow_service(gw, a, a.service, rollback=True)
    finally:
        gw.close()
    return 0


def add_service_create(ssub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
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
    payloads.add_service_flags(c, update=False)
    add_shared_flags(c)
    c.add_argument("command", nargs="*", metavar="COMMAND", help="command and arguments, after `--`")
    plans.add_plan_flags(c)
    add_follow_flags(c)
    c.set_defaults(func=cmd_service_create)


def add_service_update(ssub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    u = ssub.add_parser(
        "update", parents=[parent], help="change a service (read, modify, write back; retried on conflicts)",
        usage="shoal service update [options] SERVICE",
    )
    add_update_flags(u)
    plans.add_plan_flags(u)
    add_follow_flags(u)
    u.set_defaults(func=cmd_service_update)
    p = ssub.add_parser(
        "plan", parents=[parent], help="what `service update` with these flags would do, writing nothing",
        usage="shoal service plan [update options] [--json] SERVICE",
        description="Tasks that would be created, stopped or replaced (and on which nodes), and which would stay "
        "pending and why — computed by the orchestrator's and scheduler's own logic over the cluster's state.",
    )
    add_update_flags(p)
    plans.add_plan_flags(p, command=True)
    p.set_defaults(func=cmd_service_update, dry_run=True)


def add_update_flags(u: argparse.ArgumentParser) -> None:
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
    payloads.add_service_flags(u, update=True)
    add_shared_flags(u)
    u.add_argument("service", metavar="SERVICE")


def add_parsers(sub: SubParsers, parent: argparse.ArgumentParser) -> None:
    """`shoal service ...`."""
    service = sub.add_parser("service", aliases=["svc"], help="manage services")
    service.set_defaults(func=help_of(service))
    ssub = service.add_subparsers(title="service commands", metavar="COMMAND")
    add_service_create(ssub, parent)
    add_service_update(ssub, parent)

    add_ls(ssub, parent, "services", cmd_service_ls, "do not truncate ids and commands")

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

    add_on_refs(ssub, parent, "inspect", "SERVICE", "show services as JSON", cmd_service_inspect)

    scale = ssub.add_parser("scale", parents=[parent],
                            help="set the replicas of replicated services (total completions of jobs)")
    scale.add_argument("specs", nargs="+", metavar="SERVICE=REPLICAS")
    add_follow_flags(scale)
    scale.set_defaults(func=cmd_service_scale)

    rollback = ssub.add_parser("rollback", parents=[parent], help="revert a service to its previous spec")
    rollback.add_argument("service", metavar="SERVICE")
    add_follow_flags(rollback)
    rollback.set_defaults(func=cmd_service_rollback)

    add_on_refs(ssub, parent, "rm", "SERVICE", "remove services", cmd_service_rm, aliases=("remove",))
