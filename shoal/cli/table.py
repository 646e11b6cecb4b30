"""Output formatting for the CLI: docker-style tables (uppercase headers, left-aligned columns, two-space gaps)
and the rows of each listing. Pure functions of the gateway's JSON, so they are tested without a cluster."""

from __future__ import annotations

import functools
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Obj = Mapping[str, Any]

GAP = "  "
ID_WIDTH = 12  # docker shows ids truncated to 12 characters unless --no-trunc
TEXT_WIDTH = 40


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns as wide as their widest cell, separated by two spaces; no trailing blanks; ends without a
    newline (print adds it). None is an empty cell, anything else its `str`."""
    return format_text_table(headers, [["" if c is None else str(c) for c in r] for r in rows])


def format_text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """`format_table` of rows that are text already (a 100k-row `service ps`: no conversion pass)."""
    if any(len(row) != len(headers) for row in rows):
        raise ValueError("format_table: every row needs one cell per header")
    head = [str(h).upper() for h in headers]
    widths = [max(len(h), max(map(len, column), default=0))
              for h, column in zip(head, zip(*rows, strict=True) if rows else [()] * len(head), strict=True)]
    line = GAP.join(f"{{:<{w}}}" for w in widths).format  # one format call per row
    return "\n".join([line(*head).rstrip(), *(line(*row).rstrip() for row in rows)])


def truncate(text: str, width: int = TEXT_WIDTH, *, enabled: bool = True) -> str:
    if not enabled or len(text) <= width:
        return text
    return text[: width - 1] + "…"


def short_id(obj_id: str | None, *, no_trunc: bool = False) -> str:
    if not obj_id:
        return ""
    return obj_id if no_trunc else obj_id[:ID_WIDTH]


def human_duration(seconds: float) -> str:
    """Coarse, docker-like wording of a duration: "Less than a second", "5 seconds", "About a minute",
    "3 hours", "2 weeks"..."""
    s = int(max(seconds, 0.0))
    if s < 1:
        return "Less than a second"
    if s < 60:
        return "1 second" if s == 1 else f"{s} seconds"
    minutes = s // 60
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    hours = round(s / 3600)
    if hours < 2:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 14:
        return f"{hours // 24} days"
    if hours < 24 * 60:
        return f"{hours // (24 * 7)} weeks"
    if hours < 24 * 730:
        return f"{hours // (24 * 30)} months"
    return f"{hours // (24 * 365)} years"


@functools.lru_cache(maxsize=4096)
def _ago_seconds(seconds: int) -> str:
    return human_duration(seconds).lower() + " ago"


def ago(timestamp: float | None, now: float) -> str:
    if not timestamp:
        return ""
    return _ago_seconds(int(max(now - float(timestamp), 0.0)))


@functools.lru_cache(maxsize=256)
def _title(word: str) -> str:
    return word.replace("_", " ").capitalize()


def title(word: str | None) -> str:
    """`running` -> `Running` (docker capitalises states, availability and roles)."""
    return _title(word) if isinstance(word, str) else ""


# ---- services ----------------------------------------------------------------------------------------------
_MODE_NAMES = {"replicated": "replicated", "global": "global", "replicated_job": "replicated job",
               "global_job": "global job"}


def mode_key(spec: Obj) -> str:
    """The mode of a service spec as stored: replicated, global, replicated_job or global_job."""
    mode = spec.get("mode") or {}
    return next((k for k in _MODE_NAMES if k in mode), "replicated")


def mode_name(spec: Obj) -> str:
    """The MODE column, worded like docker: `replicated`, `global`, `replicated job`, `global job`."""
    return _MODE_NAMES[mode_key(spec)]


def replicas_text(service: Obj) -> str:
    """`running/desired` (docker's REPLICAS); jobs add `(completed/desired completed)`, e.g.
    `1/5 (3/5 completed)`; plus docker's "(max N per node)" when a placement limit is set."""
    status = service.get("status") or {}
    spec = service.get("spec", {})
    mode = spec.get("mode", {})
    running = status.get("running", 0)
    if "desired" in status:
        desired = status["desired"]
    elif "replicated_job" in mode:
        desired = mode["replicated_job"].get("total_completions", "?")
    else:
        desired = mode.get("replicated", {}).get("replicas", "?")
    text = f"{running}/{desired}"
    if mode_key(spec).endswith("_job"):
        text += f" ({status.get('completed', 0)}/{desired} completed)"
    max_per_node = spec.get("task", {}).get("placement", {}).get("max_replicas") or 0
    if max_per_node:
        text += f" (max {max_per_node} per node)"
    return text


def workload_text(spec: Obj) -> str:
    """The IMAGE/COMMAND column: the image of a container service, the command line of a process service."""
    task = spec.get("task", {})
    if "container" in task:
        c = task["container"]
        return " ".join([c.get("image", ""), *(shlex.quote(x) for x in [*c.get("command", []), *c.get("args", [])])])
    return shlex.join(task.get("process", {}).get("command", []))


SERVICE_HEADERS = ("ID", "NAME", "MODE", "REPLICAS", "IMAGE/COMMAND")


def service_rows(services: Iterable[Obj], *, no_trunc: bool = False) -> list[list[str]]:
    ordered = sorted(services, key=lambda s: str(s["spec"]["name"]).lower())
    return [[short_id(s["id"], no_trunc=no_trunc), s["spec"]["name"], mode_name(s["spec"]), replicas_text(s),
             truncate(workload_text(s["spec"]), enabled=not no_trunc)] for s in ordered]


# ---- tasks -------------------------------------------------------------------------------------------------
TASK_HEADERS = ("ID", "NAME", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR")


def task_slot(task: Obj) -> str:
    """The slot a task fills: its number for replicated services, its node for global ones (slot 0)."""
    if task.get("slot"):
        return str(task["slot"])
    return short_id(task.get("node_id")) or "0"


def task_display_name(task: Obj) -> str:
    """`web.1` (docker's `service ps` NAME column: service name and slot, without the task id)."""
    return f"{task.get('service_name') or short_id(task.get('service_id'))}.{task_slot(task)}"


def _slot_order(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if key.isdigit() else (1, key)


def _recency(task: Obj) -> tuple[bool, float, float]:
    """Newest first within a slot: the task meant to run, then by creation, then by last status change."""
    meta = task.get("meta") or {}
    return (task.get("desired_state") == "running", float(meta.get("created_at") or 0.0),
            float((task.get("status") or {}).get("timestamp") or 0.0))


def task_rows(tasks: Iterable[Obj], nodes: Mapping[str, str], now: float, *,
              no_trunc: bool = False) -> list[tuple[str, str, str, str, str, str]]:
    """Rows of `service ps`: per service and slot, the newest task first, then its history as ` \\_ web.1`
    (like docker). `nodes` maps node ids to hostnames.

    One pass groups the tasks, one sort of plain tuples orders the groups (services by name, case-insensitive,
    slots by number, node-bound slots after them by node; equal keys in the order first seen), and the
    cells that repeat across rows (node, state, "n minutes ago") are computed once per distinct value: a
    100k-task service is 100k rows, as with docker."""
    groups: dict[tuple[str, str], list[Obj]] = {}
    # per service name (case-insensitive): its numbered slots as (number, first seen, key) and its other
    # slots as (text, first seen, key) — flat tuples whose first item decides almost every comparison
    by_name: dict[str, tuple[list[tuple[int, int, tuple[str, str]]], list[tuple[str, int, tuple[str, str]]]]] = {}
    for t in tasks:
        slot = t.get("slot")
        text = str(slot) if slot else (short_id(t.get("node_id")) or "0")
        key = (str(t.get("service_name") or t.get("service_id")), text)
        group = groups.get(key)
        if group is not None:
            group.append(t)
            continue
        groups[key] = [t]
        lower = key[0].lower()
        slots = by_name.get(lower)
        if slots is None:
            slots = by_name[lower] = ([], [])
        if type(slot) is int and slot > 0:
            slots[0].append((slot, len(groups), key))
        elif text.isdigit():
            slots[0].append((int(text), len(groups), key))
        else:
            slots[1].append((text, len(groups), key))
    order: list[tuple[str, str]] = []
    for lower in sorted(by_name):
        numbered, named = by_name[lower]
        numbered.sort()
        named.sort()
        order += [k for *_, k in numbered]
        order += [k for *_, k in named]
    node_cells: dict[Any, str] = {}
    state_cells: dict[str | None, str] = {}
    current_cells: dict[tuple[str | None, int], str] = {}
    rows: list[tuple[str, str, str, str, str, str]] = []
    add = rows.append
    for key in order:
        group = groups[key]
        history = sorted(group, key=_recency, reverse=True) if len(group) > 1 else group
        name = task_display_name(history[0])  # one service and slot: one name for the whole group
        for i, t in enumerate(history):
            status = t.get("status") or {}
            node_id = t.get("node_id")
            node = node_cells.get(node_id)
            if node is None:
                node = node_cells[node_id] = (nodes.get(node_id, short_id(node_id, no_trunc=no_trunc))
                                              if node_id else "")
            state = status.get("state")
            state = state if isinstance(state, str) else None  # title() shows anything else as ""
            timestamp = status.get("timestamp")
            seconds = int(max(now - float(timestamp), 0.0)) if timestamp else -1
            current = current_cells.get((state, seconds))
            if current is None:
                current = current_cells[(state, seconds)] = f"{title(state)} {ago(timestamp, now)}".rstrip()
            desired = t.get("desired_state")
            desired = desired if isinstance(desired, str) else None
            wanted = state_cells.get(desired)
            if wanted is None:
                wanted = state_cells[desired] = title(desired)
            err = status.get("err")
            tid = t["id"]
            add((
                tid if no_trunc else tid[:ID_WIDTH],
                (" \\_ " + name) if i else name,
                node,
                wanted,
                current,
                truncate(f'"{err}"', enabled=not no_trunc) if err else "",
            ))
    return rows


def task_table(tasks: Iterable[Obj], nodes: Mapping[str, str], now: float, *, no_trunc: bool = False) -> str:
    """`shoal service ps`'s table: `task_rows` under `TASK_HEADERS`."""
    return format_text_table(TASK_HEADERS, task_rows(tasks, nodes, now, no_trunc=no_trunc))


# ---- nodes -------------------------------------------------------------------------------------------------
NODE_HEADERS = ("ID", "HOSTNAME", "STATUS", "AVAILABILITY", "ROLE")


def hostname(node: Obj) -> str:
    return str((node.get("description") or {}).get("hostname") or (node.get("spec") or {}).get("name") or "")


def node_rows(nodes: Iterable[Obj], *, no_trunc: bool = False) -> list[list[str]]:
    ordered = sorted(nodes, key=lambda n: (hostname(n).lower(), n["id"]))
    return [[short_id(n["id"], no_trunc=no_trunc), hostname(n), title((n.get("status") or {}).get("state")),
             title((n.get("spec") or {}).get("availability") or "active"),
             title(n.get("role") or (n.get("spec") or {}).get("role"))] for n in ordered]


# ---- networks ----------------------------------------------------------------------------------------------
NETWORK_HEADERS = ("NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET", "ATTACHABLE")


def network_subnet(network: Obj) -> str:
    """The subnet in use (the allocator's `ipam`), else the one asked for in the spec, else empty."""
    ipam = network.get("ipam") or (network.get("spec") or {}).get("ipam") or {}
    if isinstance(ipam, dict):
        if ipam.get("subnet"):
            return str(ipam["subnet"])
        configs = ipam.get("configs") or []
        if configs and isinstance(configs[0], dict):
            return str(configs[0].get("subnet") or "")
    return ""


def network_rows(networks: Iterable[Obj], *, no_trunc: bool = False) -> list[list[str]]:
    ordered = sorted(networks, key=lambda n: str(n["spec"]["name"]).lower())
    return [[short_id(n["id"], no_trunc=no_trunc), n["spec"]["name"], str(n["spec"].get("driver") or ""),
             "swarm", network_subnet(n), "yes" if n["spec"].get("attachable") else "no"] for n in ordered]


# ---- cluster -----------------------------------------------------------------------------------------------
MEMBER_HEADERS = ("MEMBER", "ID", "ROLE", "TERM", "COMMIT INDEX", "APPLIED INDEX", "REACHABLE")
LEASE_HEADERS = ("SUBSYSTEM", "HOLDER", "TERM", "EXPIRES")
INSTANCE_HEADERS = ("ROLE", "INSTANCE", "ADDRESS", "STATE", "TERM", "LAST SEEN")


def _dash(v: object) -> str:
    return "-" if v is None or v == "" else str(v)


def _seconds(v: object) -> str:
    return f"{v:g}s" if isinstance(v, int | float) else _dash(v)


def member_rows(members: Iterable[Obj]) -> list[list[str]]:
    rows = []
    for m in members:
        if m.get("reachable"):
            rows.append([str(m.get("url", "")), _dash(m.get("id")), _dash(m.get("role")), _dash(m.get("term")),
                         _dash(m.get("commit_index")), _dash(m.get("applied_index")), "yes"])
        else:
            rows.append([str(m.get("url", "")), "-", "-", "-", "-", "-", "no"])
    return rows


def lease_rows(leases: Iterable[Obj], now: float) -> list[list[str]]:
    rows = []
    for lease in leases:
        expires = float(lease.get("expires_at") or 0.0)
        when = (f"in {human_duration(expires - now).lower()}" if expires >= now
                else f"expired {ago(expires, now)}")
        rows.append([str(lease.get("name") or lease.get("id")), _dash(lease.get("holder")),
                     _dash(lease.get("term")), when])
    return rows


def _availability(cluster: Obj) -> str:
    if cluster.get("available", True):
        return "available"
    return "unavailable: " + str(cluster.get("error") or "unknown").removeprefix("store unavailable: ")


def cluster_text(cluster: Obj, now: float) -> str:
    """`shoal cluster`: the cluster spec, the Raft view (leader, term, commit index, members) and the
    leases of the leader-only subsystems."""
    spec = cluster.get("spec") or {}
    raft = cluster.get("raft") or {}
    leader = raft.get("leader")
    leader_text = "none" if not leader else str(leader) + (f" ({raft['leader_url']})" if raft.get("leader_url")
                                                            else "")
    lines = [
        f"ID:                {cluster.get('id', '')}",
        f"Name:              {spec.get('name', '-')}",
        f"Heartbeat period:  {_seconds((spec.get('dispatcher') or {}).get('heartbeat_period'))}",
        f"Task history:      {_dash((spec.get('orchestration') or {}).get('task_history_retention_limit'))}",
        f"Store:             {_availability(cluster)}",
        "",
        "Raft:",
        f"  Leader:          {leader_text}",
        f"  Term:            {_dash(raft.get('term'))}",
        f"  Commit index:    {_dash(raft.get('commit_index'))}",
        "",
        format_table(MEMBER_HEADERS, member_rows(raft.get("members") or [])),
        "",
    ]
    leases = cluster.get("subsystems")
    if leases is None:
        lines.append("Subsystems: unknown (store unavailable)")
    elif not leases:
        lines.append("Subsystems: no leases yet")
    else:
        lines.append(format_table(LEASE_HEADERS, lease_rows(leases, now)))
    instances = cluster.get("instances")
    if instances:
        lines += ["", format_table(INSTANCE_HEADERS, instance_rows(instances))]
    elif instances is not None:
        lines += ["", "Instances: none heard from yet"]
    return "\n".join(lines)


def instance_rows(instances: Iterable[Obj]) -> list[list[str]]:
    """One row per live control-plane instance: which is active and under which lease term."""
    rows = []
    for x in instances:
        where = f"{x.get('host') or '-'}:{x.get('port')}" if x.get("port") else _dash(x.get("host"))
        age = x.get("age")
        rows.append([str(x.get("role", "")), str(x.get("instance", "")), where, _dash(x.get("state")),
                     _dash(x.get("term")), f"{age:.1f}s ago" if isinstance(age, int | float) else "-"])
    return rows
