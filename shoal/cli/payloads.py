"""`shoal secret|config create NAME FILE|-`, `ls`, `inspect`, `rm`; and the service flags referencing them:
`--secret NAME` / `--secret source=NAME,target=T,uid=U,gid=G,mode=0400` (and `--config`) on create,
`--secret-add/--secret-rm/--config-add/--config-rm` on update (Docker's forms)."""

from __future__ import annotations

import argparse
import base64
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from shoal.cli import output, table
from shoal.cli.client import CliError
from shoal.cli.flags import Spec, parse_pairs

REF_KEYS = ("source", "target", "uid", "gid", "mode")
HEADERS = ("ID", "NAME", "CREATED", "UPDATED")


def parse_ref(text: str, flag: str, kind: str) -> Spec:
    """`NAME` or `source=NAME,target=T,uid=U,gid=G,mode=0400` (mode in octal, as Docker's) -> a reference."""
    if "=" not in text:
        if not text:
            raise CliError(f"{flag}: a {kind} name is required")
        return {"source": text}
    ref: Spec = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or (key not in REF_KEYS and key not in ("src", "dst", "destination")):
            raise CliError(f"{flag}: unknown field {part!r}; expected {', '.join(REF_KEYS)}")
        key = {"src": "source", "dst": "target", "destination": "target"}.get(key, key)
        if key == "mode":
            try:
                ref["mode"] = int(value, 8)
            except ValueError:
                raise CliError(f"{flag}: mode {value!r} is not an octal number (e.g. 0400)") from None
        else:
            ref[key] = value
    if not ref.get("source"):
        raise CliError(f"{flag}: source=NAME is required")
    return ref


def refs_of(items: Iterable[str] | None, flag: str, kind: str) -> list[Spec]:
    return [parse_ref(x, flag, kind) for x in items or []]


def updated_refs(current: list[Spec], add: list[str] | None, rm: list[str] | None, kind: str) -> list[Spec]:
    """A reference list after `--<kind>-rm NAME|ID` and `--<kind>-add REF` (an added one replaces one with the
    same target)."""
    gone = {r.lower() for r in rm or []}
    out = [r for r in current
           if str(r.get("source", "")).lower() not in gone and str(r.get(f"{kind}_id", "")).lower() not in gone]
    for ref in refs_of(add, f"--{kind}-add", kind):
        target = ref.get("target") or ref["source"]
        out = [r for r in out if (r.get("target") or r.get("source")) != target] + [ref]
    return out


def apply_to_task(task: Spec, a: argparse.Namespace) -> None:
    """`--secret`/`--config` of `service create`, or the add/rm flags of `service update`, on a task spec."""
    for kind in ("secret", "config"):
        field = kind + "s"
        created = getattr(a, kind, None)
        if created:
            task[field] = refs_of(created, f"--{kind}", kind)
        add, rm = getattr(a, f"{kind}_add", None), getattr(a, f"{kind}_rm", None)
        if add or rm:
            task[field] = updated_refs(list(task.get(field) or []), add, rm, kind)


def add_service_flags(p: argparse.ArgumentParser, *, update: bool) -> None:
    form = "NAME or source=NAME,target=FILE,uid=UID,gid=GID,mode=0400"
    if update:
        for kind in ("secret", "config"):
            p.add_argument(f"--{kind}-add", action="append", metavar=kind.upper(), help=f"add a {kind}: {form}")
            p.add_argument(f"--{kind}-rm", action="append", metavar="NAME", help=f"remove a {kind} (name or id)")
    else:
        p.add_argument("--secret", action="append", metavar="SECRET",
                       help=f"give the tasks a secret (/run/secrets/TARGET; SHOAL_SECRETS_DIR for processes): {form}")
        p.add_argument("--config", action="append", metavar="CONFIG",
                       help=f"give the tasks a config (at TARGET, default /NAME; SHOAL_CONFIGS_DIR): {form}")


def read_data(source: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as e:
        raise CliError(f"cannot read {source}: {e.strerror or e}") from None


def rows(objs: Iterable[dict[str, Any]], *, no_trunc: bool = False) -> list[list[str]]:
    ordered = sorted(objs, key=lambda o: str(o["spec"]["name"]).lower())
    meta = [o.get("meta") or {} for o in ordered]
    now = time.time()
    return [[table.short_id(o["id"], no_trunc=no_trunc), o["spec"]["name"], table.ago(m.get("created_at"), now),
             table.ago(m.get("updated_at"), now)] for o, m in zip(ordered, meta, strict=True)]


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser,  # type: ignore[type-arg]
                help_of: Callable[[argparse.ArgumentParser], Any]) -> None:
    for kind in ("secret", "config"):
        path = f"/v1/{kind}s"
        top = sub.add_parser(kind, help=f"manage {kind}s")
        top.set_defaults(func=help_of(top))
        ksub = top.add_subparsers(title=f"{kind} commands", metavar="COMMAND")
        create = ksub.add_parser("create", parents=[parent], help=f"create a {kind} from a file or stdin (-)")
        create.add_argument("-l", "--label", action="append", metavar="KEY=VALUE", help=f"{kind} label")
        create.add_argument("name", metavar="NAME")
        create.add_argument("file", metavar="FILE|-")

        def cmd_create(a: argparse.Namespace, path: str = path) -> int:
            spec = {"name": a.name, "labels": parse_pairs(a.label, "--label"),
                    "data": base64.b64encode(read_data(a.file)).decode()}
            return output.create(a, path, spec)

        create.set_defaults(func=cmd_create)
        ls = ksub.add_parser("ls", aliases=["list"], parents=[parent], help=f"list {kind}s")
        ls.add_argument("-q", "--quiet", action="store_true", help="only print ids")
        ls.add_argument("--no-trunc", action="store_true", help="do not truncate ids")
        ls.set_defaults(func=lambda a, path=path: output.list_objects(a, path, HEADERS, rows))
        for name, aliases, text, func in (
                ("inspect", (), f"show {kind}s as JSON" + (" (never their data)" if kind == "secret" else ""),
                 lambda a, path=path: output.inspect(a, path)),
                ("rm", ("remove",), f"remove {kind}s (refused while a service uses one)",
                 lambda a, path=path: output.remove(a, path))):
            cmd = ksub.add_parser(name, aliases=list(aliases), parents=[parent], help=text)
            cmd.add_argument("refs", nargs="+", metavar=kind.upper())
            cmd.set_defaults(func=func)
