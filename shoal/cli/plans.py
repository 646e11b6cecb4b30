"""`shoal service plan SERVICE [update flags]`, `shoal service update --dry-run` and `shoal service create
--dry-run`: what the change would do, asked of the gateway's plan routes (`POST /v1/services/plan`,
`POST /v1/services/{ref}/plan`), which write nothing. A summary (create/stop/replace/unchanged, per node, pending
with the scheduler's reason) or, with `--json`, the gateway's plan."""

from __future__ import annotations

import argparse
import json
from typing import Any

from shoal.cli import table
from shoal.cli.client import Gateway

Plan = dict[str, Any]


def plan_new(gw: Gateway, spec: dict[str, Any]) -> Plan:
    out: Plan = gw.request("POST", "/v1/services/plan", body=spec)
    return out


def plan_update(gw: Gateway, current: dict[str, Any], spec: dict[str, Any]) -> Plan:
    out: Plan = gw.request("POST", f"/v1/services/{current['id']}/plan",
                           body={"version": current["meta"]["version"], "spec": spec})
    return out


def node_names(gw: Gateway) -> dict[str, str]:
    return {n["id"]: table.hostname(n) or table.short_id(n["id"]) for n in gw.items("/v1/nodes")}


def render(plan: Plan, nodes: dict[str, str]) -> str:
    """The plan as text: one summary line, then per node, then the moves and the pending tasks with why."""
    s = plan["summary"]
    name = plan["service"]["name"]
    lines = [f"plan for service {name} (spec version {plan['service']['spec_version']}): "
             f"create {s['create']}, stop {s['stop']}, replace {s['replace']}, unchanged {s['unchanged']}"
             + (f", pending {s['pending']}" if s["pending"] else "")]
    if not plan.get("converged", True):
        lines.append("warning: the simulation did not settle within its rounds; the plan is partial")

    def host(node_id: str | None) -> str:
        return nodes.get(node_id or "", table.short_id(node_id)) if node_id else "-"

    if plan["nodes"]:
        lines.append("")
        rows = [[host(n), str(c["create"]), str(c["stop"]), str(c["replace"]), str(c["unchanged"])]
                for n, c in sorted(plan["nodes"].items(), key=lambda kv: host(kv[0]))]
        lines.append(table.format_table(["NODE", "CREATE", "STOP", "REPLACE", "UNCHANGED"], rows))
    moved = [r for r in plan["replace"] if r["moved"]]
    if moved:
        lines.append("")
        lines += [f"move slot {r['new']['slot']}: {host(r['old']['node_id'])} -> {host(r['new']['node_id'])}"
                  for r in moved]
    if plan["pending"]:
        lines.append("")
        lines += [f"pending slot {p['slot']}: {p['reason']}" for p in plan["pending"]]
    return "\n".join(lines)


def show(gw: Gateway, a: argparse.Namespace, plan: Plan) -> int:
    """Print the plan; exit status 0 (a plan with pending tasks is still a plan: the change would be accepted)."""
    if getattr(a, "json", False):
        print(json.dumps(plan, indent=2, sort_keys=True))
    else:
        print(render(plan, node_names(gw)))
    return 0


def add_plan_flags(p: argparse.ArgumentParser, *, command: bool = False) -> None:
    if not command:
        p.add_argument("--dry-run", action="store_true",
                       help="print what the change would do (tasks created, stopped, replaced, pending) and write "
                            "nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run / plan: print the gateway's full plan")
