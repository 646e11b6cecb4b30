"""Secrets and configs on the node (issue 10): held in memory as the dispatcher sends them, written to a private
directory per task while the task needs them, removed when it ends.

- `Payloads`: the secrets and configs this node was sent (SwarmKit's agent/secrets and agent/configs), by id.
  In memory only: never part of the agent's state files, so a payload lives on the node only in the task's
  files (on tmpfs by default) and in the agent process.
- `TaskFiles`: `<base>/<task id>/{secrets,configs}/…` (directories 0700, files with the reference's mode:
  0400 by default for process tasks, 0444 for containers as Docker's), owned by the reference's uid/gid when
  given (the agent must be root to give them away). A container gets each file bind-mounted read-only at its
  target (`/run/secrets/<target>`, a config at its path) from `host_base` — the same directory as the
  Docker engine's host sees it (under compose the agent is a container itself). A process task gets the
  directories in `SHOAL_SECRETS_DIR` and `SHOAL_CONFIGS_DIR`.

What is written for a task is described in the task copy its controller receives, under `files`:
`{"dir", "secrets_dir", "configs_dir", "entries": [{"kind", "path" (on this host), "host_path" (the engine's),
"target" (in a container), "uid", "gid", "mode"}]}` — paths only, never data."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import posixpath
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shoal.models.secrets import DEFAULT_PROCESS_MODE, DEFAULT_SECRET_MODE, config_path, secret_path

log = logging.getLogger(__name__)

Obj = dict[str, Any]
KINDS = ("secret", "config")
REF_FIELDS = {"secret": ("secrets", "secret_id"), "config": ("configs", "config_id")}
SHM = Path("/dev/shm")


class PayloadError(Exception):
    """A task's secrets or configs cannot be provided (not delivered, or not writable): the task is rejected."""


def references(task: Obj) -> list[tuple[str, Obj]]:
    """(kind, reference) of every secret and config a task's spec references."""
    spec = task.get("spec") or {}
    out: list[tuple[str, Obj]] = []
    for kind, (field, _) in REF_FIELDS.items():
        out.extend((kind, r) for r in spec.get(field) or [] if isinstance(r, dict))
    return out


def referenced_ids(task: Obj) -> dict[str, set[str]]:
    """The ids of the secrets and configs a task references, per kind."""
    out: dict[str, set[str]] = {k: set() for k in KINDS}
    for kind, ref in references(task):
        rid = ref.get(REF_FIELDS[kind][1])
        if rid:
            out[kind].add(str(rid))
    return out


class Payloads:
    """The secrets and configs the dispatcher sent this node, by kind and id (in memory only)."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Obj]] = {k: {} for k in KINDS}

    def replace(self, kind: str, objs: Iterable[Obj]) -> None:
        self.items[kind] = {o["id"]: o for o in objs}

    def update(self, kind: str, obj: Obj) -> None:
        self.items[kind][obj["id"]] = obj

    def remove(self, kind: str, obj_id: str) -> None:
        self.items[kind].pop(obj_id, None)

    def data(self, kind: str, obj_id: str) -> bytes:
        obj = self.items[kind].get(obj_id)
        if obj is None:
            raise PayloadError(f"agent: {kind} {obj_id} was not delivered to this node")
        try:
            return base64.b64decode(str(obj.get("spec", {}).get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            raise PayloadError(f"agent: {kind} {obj_id} arrived with unreadable data") from None


def _relative(target: str) -> str:
    parts = [p for p in target.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise PayloadError(f"agent: invalid target {target!r}")
    return "/".join(parts)


def default_base(state_dir: Path, hostname: str) -> Path:
    """`/dev/shm/shoal-<hostname>-<uid>-<8 hex of the state dir's digest>` (tmpfs: payloads never touch a disk)
    when /dev/shm is usable, else `<state dir>/task-files`. The digest keeps two agents of one host and user
    apart (two `shoal up` clusters both have an `<host>-agent-1`): each sweeps its base of the directories of
    tasks it does not run, so a shared base would lose the other's files."""
    if SHM.is_dir() and os.access(SHM, os.W_OK | os.X_OK):
        digest = hashlib.sha256(str(state_dir.absolute()).encode()).hexdigest()[:8]
        return SHM / f"shoal-{hostname}-{os.getuid()}-{digest}"
    return state_dir / "task-files"


class TaskFiles:
    def __init__(self, base: Path, host_base: Path | None = None) -> None:
        self.base = base
        self.host_base = host_base or base

    def task_dir(self, task_id: str) -> Path:
        if not task_id or "/" in task_id or task_id in (".", ".."):
            raise PayloadError(f"agent: invalid task id {task_id!r}")
        return self.base / task_id

    def layout(self, task: Obj, runtime: str) -> Obj | None:
        """Where `task`'s files go (no data needed): None when it references no secret or config."""
        refs = references(task)
        if not refs:
            return None
        root = self.task_dir(str(task["id"]))
        default_mode = DEFAULT_PROCESS_MODE if runtime == "process" else DEFAULT_SECRET_MODE
        entries = []
        for kind, ref in refs:
            field, id_field = REF_FIELDS[kind]
            target = str(ref.get("target") or ref.get("source") or "")
            rel = posixpath.join(field, _relative(target))
            entries.append({"kind": kind, "id": str(ref.get(id_field) or ""), "path": str(root / rel),
                            "host_path": str(self.host_base / str(task["id"]) / rel),
                            "target": secret_path(target) if kind == "secret" else config_path(target),
                            "uid": ref.get("uid"), "gid": ref.get("gid"),
                            "mode": int(ref["mode"]) if ref.get("mode") is not None else default_mode})
        return {"dir": str(root), "secrets_dir": str(root / "secrets"), "configs_dir": str(root / "configs"),
                "entries": entries}

    def write(self, task: Obj, payloads: Payloads, runtime: str) -> Obj | None:
        """Write the files of every secret and config `task` references (its `layout`); None when none."""
        files = self.layout(task, runtime)
        if files is None:
            return None
        root = Path(files["dir"])
        try:
            self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.base, 0o700)
            shutil.rmtree(root, ignore_errors=True)  # a previous attempt's files: written afresh
            root.mkdir(mode=0o700)
            for e in files["entries"]:
                path = Path(e["path"])
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                _write_file(path, payloads.data(e["kind"], e["id"]), e["mode"])
                uid = int(e["uid"]) if e["uid"] is not None else -1
                gid = int(e["gid"]) if e["gid"] is not None else -1
                if uid != -1 or gid != -1:
                    os.chown(path, uid, gid)
        except PermissionError as e:
            self.remove(str(task["id"]))
            raise PayloadError(f"agent: cannot write the task's secrets and configs as asked ({e}); owners "
                               "other than the agent's user need the agent to run as root") from None
        except OSError as e:
            self.remove(str(task["id"]))
            raise PayloadError(f"agent: cannot write the task's secrets and configs: {e}") from None
        except PayloadError:
            self.remove(str(task["id"]))
            raise
        return files

    def remove(self, task_id: str) -> None:
        with contextlib.suppress(PayloadError):
            shutil.rmtree(self.task_dir(task_id), ignore_errors=True)

    def sweep(self, keep: Mapping[str, Any] | set[str]) -> list[str]:
        """Remove the directories of tasks not in `keep` (left by an earlier agent process)."""
        removed = []
        with contextlib.suppress(OSError):
            for d in self.base.iterdir():
                if d.is_dir() and d.name not in keep:
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(d.name)
        return removed


def _write_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def give_to(files: Mapping[str, Any] | None, uid: int, gid: int) -> None:
    """Hand a process task's directories and files (those without an explicit uid/gid) to the user it runs as
    (the agent is root then): the task reads them, other users' tasks cannot."""
    if not files:
        return
    root = Path(str(files["dir"]))
    explicit = {e["path"] for e in files.get("entries", []) if e.get("uid") is not None or e.get("gid") is not None}
    for dirpath, _, names in os.walk(root):
        os.chown(dirpath, uid, gid)
        for n in names:
            p = os.path.join(dirpath, n)
            if p not in explicit:
                os.chown(p, uid, gid)
