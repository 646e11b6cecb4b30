"""The `shoal` command line: `main(argv) -> int` builds the argparse tree and runs the chosen command.

Commands register themselves through `add_parsers(subparsers)` and `set_defaults(func=cmd)` where
`cmd(args) -> int`: the user commands (service, node, cluster) live in `shoal.cli.commands`; `shoal up` /
`shoal down` in `shoal.cli.up` (loaded when present). `--url` / SHOAL_URL selects the gateway."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import httpx

from shoal.cli import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoal", description="Drive a shoal cluster through its gateway.")
    parser.add_argument("--url", default=commands.default_url(),
                        help=f"gateway URL (env SHOAL_URL, default {commands.DEFAULT_URL})")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    commands.add_parsers(sub)
    from shoal.cli import ui

    ui.add_parsers(sub, commands._url_parent())
    try:
        from shoal.cli import up
    except ImportError:  # `shoal up` / `shoal down` ship separately; the rest works without them
        pass
    else:
        up.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, http: httpx.Client | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 failed, 2 usage). `http` replaces the HTTP client
    used to reach the gateway (tests)."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as e:  # --help or a usage error: argparse already printed why
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    args.http = http
    try:
        return int(func(args) or 0)
    except commands.CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `shoal service ls | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


__all__ = ["build_parser", "main"]
