"""Flag parsing shared by the resource modules (sizes, CPUs, KEY=VALUE pairs, ports, networks, placement,
restart/update/health settings) and the argparse helpers (`--url` after any subcommand, `ls`, `inspect`/`rm`)."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import Any

from shoal.cli.client import CliError

Spec = dict[str, Any]


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


def resources_of(cpu: str | None, memory: str | None) -> dict[str, int]:
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


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def url_parent() -> argparse.ArgumentParser:
    """`--url` accepted after any subcommand too (without overriding the top-level value when absent)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--url", default=argparse.SUPPRESS, help="gateway URL (env SHOAL_URL)")
    return p


def help_of(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(_: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


SubParsers = argparse._SubParsersAction  # type: ignore[type-arg]


def add_ls(sub: SubParsers, parent: argparse.ArgumentParser, what: str, func: Callable[[argparse.Namespace], int],
            no_trunc_help: str = "do not truncate ids") -> None:
    """`ls` / `list` with `-q` and `--no-trunc`."""
    ls = sub.add_parser("ls", aliases=["list"], parents=[parent], help=f"list {what}")
    ls.add_argument("-q", "--quiet", action="store_true", help="only print ids")
    ls.add_argument("--no-trunc", action="store_true", help=no_trunc_help)
    ls.set_defaults(func=func)


def add_on_refs(sub: SubParsers, parent: argparse.ArgumentParser, name: str, metavar: str, help_text: str,
                 func: Callable[[argparse.Namespace], int], aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """A command on one or more references (`inspect`, `rm`): their list is `refs`."""
    cmd = sub.add_parser(name, aliases=list(aliases), parents=[parent], help=help_text)
    cmd.add_argument("refs", nargs="+", metavar=metavar)
    cmd.set_defaults(func=func)
    return cmd
