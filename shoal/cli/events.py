"""`shoal events [--since REV] [--until REV] [--filter type=service] [--filter event=create] [--json]`: the
cluster's changes as they happen (`GET /v1/events`), one line each like `docker events`:

    2026-12-07T00:01:02.123456Z service create 4x8k... (name=web, actor=gateway@node-1, rev=42)"""

from __future__ import annotations

import argparse
import datetime
import sys
from typing import Any

from shoal.cli.client import CliError, gateway_of
from shoal.cli.flags import SubParsers

#: `--filter` keys -> the gateway's query parameters (Docker's names, and the gateway's own)
FILTER_KEYS = {"type": "kind", "kind": "kind", "event": "action", "action": "action"}


def parse_filters(items: list[str] | None) -> dict[str, list[str]]:
    """`--filter type=service --filter event=create` -> {"kind": ["service"], "action": ["create"]}."""
    out: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not value or key.strip().lower() not in FILTER_KEYS:
            raise CliError(f"--filter {item!r}: expected type=KIND or event=ACTION (e.g. type=service, "
                           "event=create)")
        out.setdefault(FILTER_KEYS[key.strip().lower()], []).append(value.strip())
    return out


def rfc3339(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_text(rec: dict[str, Any]) -> str:
    """One event as `docker events` prints one: time, type, action, id, then its attributes."""
    attrs = [f"name={rec['name']}"] if rec.get("name") else []
    attrs += [f"actor={rec.get('actor') or 'unknown'}", f"rev={rec['rev']}"]
    return f"{rfc3339(float(rec.get('time') or 0))} {rec['kind']} {rec['action']} {rec['id']} ({', '.join(attrs)})"


def cmd_events(a: argparse.Namespace) -> int:
    params: dict[str, Any] = dict(parse_filters(a.filter))
    if a.since is not None:
        params["since"] = a.since
    if a.until is not None:
        params["until"] = a.until
    gw = gateway_of(a)
    try:
        for line, rec in gw.stream_lines("/v1/events", params, "event"):
            if a.json:
                print(line, flush=True)
            elif rec.get("action") == "compacted" and rec.get("kind") == "events":
                print(f"warning: {rec.get('message')}", file=sys.stderr, flush=True)
            else:
                print(event_text(rec), flush=True)
    except KeyboardInterrupt:
        return 130
    finally:
        gw.close()
    return 0


def add_parsers(sub: SubParsers, parent: argparse.ArgumentParser) -> None:
    ev = sub.add_parser("events", parents=[parent], help="show the cluster's changes as they happen",
                        description="Follows the cluster's changes (who changed what, when) until interrupted, "
                                    "or until revision --until.")
    ev.add_argument("--since", type=int, metavar="REV",
                    help="start after this store revision (default: now); older than the retained history "
                         "prints a warning and starts at the oldest retained")
    ev.add_argument("--until", type=int, metavar="REV", help="stop once this store revision is reached")
    ev.add_argument("-f", "--filter", action="append", metavar="KEY=VALUE",
                    help="type=KIND (service, task, node, network, secret, config, cluster, lease, ca) or "
                         "event=ACTION (create, update, delete); repeat to allow several")
    ev.add_argument("--json", action="store_true", help="print each event as a JSON line")
    ev.set_defaults(func=cmd_events)
