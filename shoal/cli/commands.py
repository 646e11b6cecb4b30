"""The user commands of the `shoal` CLI (service, node, cluster): argument parsers, flag -> spec mapping, and
a small synchronous client of the gateway's REST API (docs/api.md).

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

from shoal.cli import table

DEFAULT_URL = "http://127.0.0.1:4242"
SCALE_ATTEMPTS = 5
Spec = dict[str, Any]


class CliError(Exception):
    """A failure to report on stderr (exit status 1)."""


class ApiError(CliError):
    """The gateway answered with an error status; `message` is its `{"message": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---- gateway client ----------------------------------------------------------------------------------------
class Gateway:
    """Synchronous client of the gateway. `http` may be injected (tests use a MockTransport or TestClient)."""

    def __init__(self, url: str, http: httpx.Client | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._owned = http is None
        self.http = http or httpx.Client(base_url=self.url, timeout=timeout)

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
            raise ApiError(resp.status_code, _error_message(resp))
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


def _error_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"HTTP {resp.status_code} from the gateway: {resp.text[:200]}"


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
    task: Spec = {"container" if a.image else "process": runtime}
    resources: Spec = {}
    if reservations := _resources(a.reserve_cpu, a.reserve_memory):
        resources["reservations"] = reservations
    if limits := _resources(a.limit_cpu, a.limit_memory):
        resources["limits"] = limits
    if resources:
        task["resources"] = resources
    restart: Spec = {k: v for k, v in (("condition", a.restart_condition), ("delay", a.restart_delay),
                                       ("max_attempts", a.restart_max_attempts), ("window", a.restart_window))
                     if v is not None}
    if restart:
        task["restart"] = restart
    placement: Spec = {}
    if a.constraint:
        placement["constraints"] = list(a.constraint)
    if a.replicas_max_per_node is not None:
        placement["max_replicas"] = a.replicas_max_per_node
    if placement:
        task["placement"] = placement
    if a.mode == "global":
        if a.replicas is not None:
            raise CliError("--replicas can only be used with replicated mode")
        mode: Spec = {"global": {}}
    else:
        mode = {"replicated": {"replicas": 1 if a.replicas is None else a.replicas}}
    spec: Spec = {"name": a.name, "mode": mode, "task": task}
    if a.label:
        spec["labels"] = parse_pairs(a.label, "--label")
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
    """Read the service, change its spec, write it back with the version read; on 409 (someone else wrote
    in between) read again and retry, up to `attempts` times."""
    for attempt in range(1, attempts + 1):
        current = gw.get(f"/v1/services/{ref}")
        spec = mutate(json.loads(json.dumps(current["spec"])))
        try:
            result: dict[str, Any] = gw.request("PUT", f"/v1/services/{current['id']}",
                                                body={"version": current["meta"]["version"], "spec": spec})
            return result
        except ApiError as e:
            if e.status != 409 or attempt == attempts:
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def _set_replicas(n: int, ref: str) -> Callable[[Spec], Spec]:
    def mutate(spec: Spec) -> Spec:
        if "replicated" not in spec.get("mode", {}):
            raise CliError(f"{ref}: scale can only be used with replicated mode")
        spec["mode"]["replicated"]["replicas"] = n
        return spec

    return mutate


# ---- commands ----------------------------------------------------------------------------------------------
def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=4, sort_keys=False))


def cmd_service_create(a: argparse.Namespace) -> int:
    spec = build_spec(a)
    gw = gateway_of(a)
    try:
        service = gw.request("POST", "/v1/services", body=spec)
    finally:
        gw.close()
    print(service["id"])
    return 0


def cmd_service_ls(a: argparse.Namespace) -> int:
    gw = gateway_of(a)
    try:
        services = gw.items("/v1/services")
    finally:
        gw.close()
    if a.quiet:
        for row in table.service_rows(services, no_trunc=True):
            print(row[0])
        return 0
    print(table.format_table(table.SERVICE_HEADERS, table.service_rows(services, no_trunc=a.no_trunc)))
    return 0


def cmd_service_ps(a: argparse.Namespace) -> int:
    gw = gateway_of(a)
    try:
        tasks: list[dict[str, Any]] = []
        for ref in a.services:
            tasks += gw.items("/v1/tasks", service=ref)
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
    gw = gateway_of(a)

    def remove(ref: str) -> None:
        gw.request("DELETE", f"/v1/services/{ref}")
        print(ref)

    try:
        return _for_each(a.refs, remove)
    finally:
        gw.close()


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


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`service`, `node` and `cluster` under the top-level subcommands."""
    parent = _url_parent()
    service = sub.add_parser("service", aliases=["svc"], help="manage services")
    service.set_defaults(func=_help_of(service))
    ssub = service.add_subparsers(title="service commands", metavar="COMMAND")
    _add_service_create(ssub, parent)

    ls = ssub.add_parser("ls", aliases=["list"], parents=[parent], help="list services")
    ls.add_argument("-q", "--quiet", action="store_true", help="only print ids")
    ls.add_argument("--no-trunc", action="store_true", help="do not truncate ids and commands")
    ls.set_defaults(func=cmd_service_ls)

    ps = ssub.add_parser("ps", parents=[parent], help="list the tasks of services")
    ps.add_argument("services", nargs="+", metavar="SERVICE")
    ps.add_argument("-q", "--quiet", action="store_true", help="only print task ids")
    ps.add_argument("--no-trunc", action="store_true", help="do not truncate ids and errors")
    ps.set_defaults(func=cmd_service_ps)

    inspect = ssub.add_parser("inspect", parents=[parent], help="show services as JSON")
    inspect.add_argument("refs", nargs="+", metavar="SERVICE")
    inspect.set_defaults(func=cmd_service_inspect)

    scale = ssub.add_parser("scale", parents=[parent], help="set the replicas of replicated services")
    scale.add_argument("specs", nargs="+", metavar="SERVICE=REPLICAS")
    scale.set_defaults(func=cmd_service_scale)

    rm = ssub.add_parser("rm", aliases=["remove"], parents=[parent], help="remove services")
    rm.add_argument("refs", nargs="+", metavar="SERVICE")
    rm.set_defaults(func=cmd_service_rm)

    node = sub.add_parser("node", help="inspect nodes")
    node.set_defaults(func=_help_of(node))
    nsub = node.add_subparsers(title="node commands", metavar="COMMAND")
    nls = nsub.add_parser("ls", aliases=["list"], parents=[parent], help="list nodes")
    nls.add_argument("-q", "--quiet", action="store_true", help="only print ids")
    nls.add_argument("--no-trunc", action="store_true", help="do not truncate ids")
    nls.set_defaults(func=cmd_node_ls)
    ninspect = nsub.add_parser("inspect", parents=[parent], help="show nodes as JSON")
    ninspect.add_argument("refs", nargs="+", metavar="NODE")
    ninspect.set_defaults(func=cmd_node_inspect)

    cluster = sub.add_parser("cluster", parents=[parent],
                             help="raft members, leader, term, commit index; subsystem leases")
    cluster.add_argument("--json", action="store_true", help="print the gateway's JSON")
    cluster.set_defaults(func=cmd_cluster)


def _add_service_create(ssub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    c = ssub.add_parser(
        "create", parents=[parent], help="create a service",
        usage="shoal service create --name NAME [options] [--image IMAGE] [-- COMMAND [ARG...]]",
        description="Without --image the command after `--` runs as a local process (process runtime); with "
        "--image it runs in a container and the words after `--` are the container's arguments.",
    )
    c.add_argument("--name", required=True, help="service name (unique, case-insensitive)")
    c.add_argument("--mode", choices=["replicated", "global"], default="replicated")
    c.add_argument("--replicas", type=int, help="number of tasks (replicated mode; default 1)")
    c.add_argument("--image", help="container image (container runtime)")
    c.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="environment variable")
    c.add_argument("-w", "--workdir", help="working directory of the command")
    c.add_argument("-l", "--label", action="append", metavar="KEY=VALUE", help="service label")
    c.add_argument("--container-label", action="append", metavar="KEY=VALUE", help="container label")
    c.add_argument("--constraint", action="append", metavar="EXPR", help="placement constraint (node.x==y)")
    c.add_argument("--replicas-max-per-node", type=int, metavar="N", help="at most N tasks per node")
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
    c.add_argument("command", nargs="*", metavar="COMMAND", help="command and arguments, after `--`")
    c.set_defaults(func=cmd_service_create)


def default_url() -> str:
    return os.environ.get("SHOAL_URL") or DEFAULT_URL
