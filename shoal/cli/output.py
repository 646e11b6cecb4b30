"""What the commands print: JSON, tables of list endpoints, ids of created/removed objects; and the
generic create/ls/inspect/rm verbs every resource shares (one gateway call, one printed result)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from shoal.cli import table
from shoal.cli.client import CliError, gateway_of
from shoal.cli.flags import Spec


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=4, sort_keys=False))


def create(a: argparse.Namespace, path: str, spec: Spec) -> int:
    """POST the spec; print the new object's id."""
    gw = gateway_of(a)
    try:
        created = gw.request("POST", path, body=spec)
    finally:
        gw.close()
    print(created["id"])
    return 0


Rows = Callable[..., list[list[str]]]


def list_objects(a: argparse.Namespace, path: str, headers: tuple[str, ...], rows: Rows) -> int:
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


def remove(a: argparse.Namespace, path: str, params: dict[str, str] | None = None) -> int:
    """DELETE each reference in `a.refs`, printing those removed; failures are reported and the rest go on."""
    gw = gateway_of(a)

    def remove(ref: str) -> None:
        gw.request("DELETE", f"{path}/{ref}", params=params)
        print(ref)

    try:
        return for_each(a.refs, remove)
    finally:
        gw.close()


def for_each(refs: list[str], action: Callable[[str], None]) -> int:
    """Apply `action` to every reference, reporting failures on stderr and carrying on (like docker)."""
    status = 0
    for ref in refs:
        try:
            action(ref)
        except CliError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
    return status


def inspect(a: argparse.Namespace, path: str) -> int:
    gw = gateway_of(a)
    found: list[Any] = []
    try:
        status = for_each(a.refs, lambda ref: found.append(gw.get(f"{path}/{ref}")))
    finally:
        gw.close()
    print_json(found)
    return status
