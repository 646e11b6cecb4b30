"""Where the task workloads of a cluster can be found on a machine, whatever happened to the agents that started
them: the marks the `process` and `docker` executors put on every workload before it runs, shared by the
agent's reconciliation (`sweep`) and by `shoal down`.

Every mark names a cluster (`SHOAL_CLUSTER_ID`), a host (the agent's `SHOAL_HOSTNAME`: one agent per host name),
a node id and a task id, so one cluster (or one agent) never touches another's workloads on a shared machine:

    process tasks, cgroup v2    <cgroup v2 mount>/shoal/<cluster>/<host>/<node>/<task>/  — the task's own cgroup.
                                The process enters it before it execs the task's command (`wrap`) and cannot
                                leave it (only root moves processes between cgroups), so neither a lost agent
                                state, nor `setsid`, nor `env -i`, nor a double fork hides it; `cgroup.kill`
                                takes every process in it at once.
    process tasks, no cgroups   /run/shoal-tasks/<cluster>/<host>/<node>/<task>/ — a directory made before the
                                process starts (the durable record), `SHOAL_TASK_MARK=<cluster>/<host>/<node>/
                                <task>` in its environment, and the session id of its leader once started; the
                                processes are found by scanning /proc for either. Weaker: a task that both
                                starts a new session and clears its environment escapes.
    containers                  labels `shoal.cluster.id`, `shoal.node.host`, `shoal.node.id`, `shoal.task.id`
                                (set in the create request, so no container exists without them).

`cgroup_v2_root()` picks the mechanism; the agent logs which one it uses."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from shoal.files import write_atomic

log = logging.getLogger(__name__)

LABEL_CLUSTER = "shoal.cluster.id"
LABEL_HOST = "shoal.node.host"
MARK_ENV = "SHOAL_TASK_MARK"
RECORD_ROOT = Path("/run/shoal-tasks")
CGROUP_MOUNTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))  # pure v2, or a hybrid's v2 part
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(text: str) -> str:
    """`text` as one path component (cluster ids and host names are user-chosen)."""
    name = _UNSAFE.sub("_", text)
    return name if name not in ("", ".", "..") else "_"


def cgroup_v2_root(mounts: tuple[Path, ...] = CGROUP_MOUNTS) -> Path | None:
    """The `shoal` directory in the machine's cgroup v2 hierarchy, created if needed; None when there is no
    v2 hierarchy or we may not create cgroups in it (not root, a read-only cgroupfs in a container)."""
    for mount in mounts:
        if not (mount / "cgroup.controllers").exists():
            continue
        root = mount / "shoal"
        try:
            root.mkdir(exist_ok=True)
        except OSError:
            continue
        if os.access(root, os.W_OK):
            return root
    return None


@dataclass(frozen=True)
class Owner:
    """Whose workloads: a cluster and the host name of one agent."""

    cluster: str
    host: str


def _ints(path: Path) -> list[int]:
    try:
        return [int(x) for x in path.read_text().split()]
    except (OSError, ValueError):
        return []


def _subdirs(path: Path) -> list[str]:
    try:
        return sorted(p.name for p in path.iterdir() if p.is_dir())
    except OSError:
        return []


class TaskMarks:
    """The marks of one tree `<root>/<cluster>/<host>/<node>/<task>`. Subclasses say how a process is put in
    a task's mark and how the processes in it are found and killed."""

    kind = ""

    def __init__(self, root: Path, owner: Owner) -> None:
        self.root = root
        self.owner = owner

    def host_dir(self) -> Path:
        return self.root / safe_name(self.owner.cluster) / safe_name(self.owner.host)

    def path(self, node: str, task: str) -> Path:
        return self.host_dir() / safe_name(node) / safe_name(task)

    # ---- what every kind provides ------------------------------------------------------------------------
    def create(self, node: str, task: str) -> None:
        """The durable trace of a task, made before its process starts. Raises OSError."""
        for _ in range(3):
            try:
                self.path(node, task).mkdir(parents=True, exist_ok=True)
                return
            except FileNotFoundError:  # an empty parent was being removed (`remove`) just then
                continue
        self.path(node, task).mkdir(parents=True, exist_ok=True)

    def wrap(self, node: str, task: str, argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """The argv and environment that start `argv` inside the task's mark."""
        raise NotImplementedError

    def started(self, node: str, task: str, pid: int) -> None:
        """The task's leader process started (the record fallback remembers its session)."""

    def pids(self, node: str, task: str) -> list[int]:
        raise NotImplementedError

    def signal(self, node: str, task: str, sig: int) -> None:
        for pid in self.pids(node, task):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill(self, node: str, task: str) -> None:
        self.signal(node, task, signal.SIGKILL)

    def remove(self, node: str, task: str) -> None:
        """Drop an empty task's mark (and its node's directory once empty)."""
        with contextlib.suppress(OSError):
            self._remove_dir(self.path(node, task))
        for parent in self.path(node, task).parents[:3]:  # node, host, cluster: each once empty
            try:
                parent.rmdir()
            except OSError:
                break

    def _remove_dir(self, path: Path) -> None:
        path.rmdir()

    # ---- listing ------------------------------------------------------------------------------------------
    def nodes(self) -> list[str]:
        return _subdirs(self.host_dir())

    def tasks(self, node: str) -> list[str]:
        return _subdirs(self.host_dir() / safe_name(node))

    def kill_and_remove(self, node: str, task: str, timeout: float = 5.0) -> list[int]:
        """Kill every process of the task, wait (bounded) until they are gone, drop the mark. Returns the pids
        that were alive."""
        alive = self.pids(node, task)
        deadline = time.monotonic() + timeout
        while (left := self.pids(node, task)) and time.monotonic() < deadline:
            self.kill(node, task)
            time.sleep(0.02)
        if left:
            log.warning("workloads: processes %s of task %s survived SIGKILL", left, task)
        else:
            self.remove(node, task)
        return alive


class CgroupMarks(TaskMarks):
    """One cgroup v2 per task: the marker a process cannot lose."""

    kind = "cgroup"

    def wrap(self, node: str, task: str, argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        # The shell moves itself into the cgroup, then execs the command (same pid): nothing of the task runs
        # outside it, and if the move fails nothing runs at all.
        procs = str(self.path(node, task) / "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv], env

    def pids(self, node: str, task: str) -> list[int]:
        return _ints(self.path(node, task) / "cgroup.procs")

    def populated(self, node: str, task: str) -> bool:
        try:
            return "populated 1" in (self.path(node, task) / "cgroup.events").read_text()
        except OSError:
            return False

    def kill(self, node: str, task: str) -> None:
        try:
            (self.path(node, task) / "cgroup.kill").write_text("1")  # Linux 5.14+
        except OSError:
            super().kill(node, task)


class RecordMarks(TaskMarks):
    """Without cgroups: a directory per task written before it starts, an environment mark, and its leader's
    session id; processes found by scanning /proc."""

    kind = "record"

    def mark(self, node: str, task: str) -> str:
        return "/".join(safe_name(x) for x in (self.owner.cluster, self.owner.host, node, task))

    def wrap(self, node: str, task: str, argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        return argv, {**env, MARK_ENV: self.mark(node, task)}

    def started(self, node: str, task: str, pid: int) -> None:
        write_atomic(self.path(node, task) / "session", str(pid))

    def pids(self, node: str, task: str) -> list[int]:
        sessions = set(_ints(self.path(node, task) / "session"))
        needle = f"{MARK_ENV}={self.mark(node, task)}".encode()
        found = []
        for pid in _all_pids():
            if pid == os.getpid():
                continue
            try:
                if sessions and os.getsid(pid) in sessions and _state(pid) not in ("Z", "X"):
                    found.append(pid)
                    continue
                if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") and _state(pid) not in ("Z", "X"):
                    found.append(pid)
            except OSError:
                continue
        return found

    def _remove_dir(self, path: Path) -> None:
        (path / "session").unlink(missing_ok=True)
        path.rmdir()


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _state(pid: int) -> str:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rfind(")") + 2:][:1]


def task_marks(owner: Owner, cgroup_root: str = "") -> TaskMarks:
    """The marks the `process` executor uses: cgroups when it may create them (`cgroup_root`: a v2 mount to
    use, "" to find one, "none" to refuse cgroups), else the record fallback."""
    root = None
    if cgroup_root != "none":
        root = cgroup_v2_root((Path(cgroup_root),) if cgroup_root else CGROUP_MOUNTS)
    if root is not None:
        return CgroupMarks(root, owner)
    log.warning("workloads: no writable cgroup v2 hierarchy; process tasks are marked by a record in %s and "
                "their environment (a task that both calls setsid and clears its environment escapes)", RECORD_ROOT)
    return RecordMarks(RECORD_ROOT, owner)


# ---- a whole cluster (`shoal down`) -------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    what: str  # "process" or "container"
    host: str
    node: str
    task: str
    ref: str  # pids or container id

    def __str__(self) -> str:
        return f"{self.what} of task {self.task} (node {self.node}, host {self.host}): {self.ref}"


def _cluster_trees(cluster: str, cgroup_root: str) -> list[TaskMarks]:
    """The marks of every host of `cluster` on this machine, in the cgroup tree and the record fallback."""
    trees: list[TaskMarks] = []
    if cgroup_root != "none":
        root = cgroup_v2_root((Path(cgroup_root),) if cgroup_root else CGROUP_MOUNTS)
        if root is not None:
            trees.extend(CgroupMarks(root, Owner(cluster, h)) for h in _subdirs(root / safe_name(cluster)))
    trees.extend(RecordMarks(RECORD_ROOT, Owner(cluster, h)) for h in _subdirs(RECORD_ROOT / safe_name(cluster)))
    return trees


def cluster_processes(cluster: str, cgroup_root: str = "") -> list[Workload]:
    """Every marked task process group of `cluster` that has live processes, whichever agent started it."""
    return _process_tasks(cluster, cgroup_root, lambda marks, node, task: marks.pids(node, task))


def stop_cluster_processes(cluster: str, cgroup_root: str = "") -> list[Workload]:
    """Kill every process task of `cluster` on this machine, whichever agent (or none) started it, and drop
    the marks. Returns what was still running."""
    return _process_tasks(cluster, cgroup_root, lambda marks, node, task: marks.kill_and_remove(node, task),
                          tidy=True)


def _process_tasks(cluster: str, cgroup_root: str, act: Callable[[TaskMarks, str, str], list[int]], *,
                   tidy: bool = False) -> list[Workload]:
    """`act` on every marked process task of `cluster` on this machine (returning its live pids); the tasks that
    had some. With `tidy`, each node's and host's directory of marks is removed once emptied."""
    out = []
    for marks in _cluster_trees(cluster, cgroup_root):
        for node in marks.nodes():
            for task in marks.tasks(node):
                if pids := act(marks, node, task):
                    out.append(Workload("process", marks.owner.host, node, task, "pids " + ",".join(map(str, pids))))
            if tidy:
                with contextlib.suppress(OSError):
                    (marks.host_dir() / node).rmdir()
        for emptied in (marks.host_dir(), marks.host_dir().parent) if tidy else ():
            with contextlib.suppress(OSError):
                emptied.rmdir()
    return out


def _engine(docker_host: str) -> httpx.Client | None:
    path = docker_host.removeprefix("unix://")
    if not os.path.exists(path):
        return None
    return httpx.Client(transport=httpx.HTTPTransport(uds=path), base_url="http://docker", timeout=30)


def _containers(client: httpx.Client, cluster: str) -> list[Mapping[str, Any]]:
    listed: list[Mapping[str, Any]] = client.get("/containers/json", params={
        "all": "1", "filters": json.dumps({"label": [f"{LABEL_CLUSTER}={cluster}"]})}).json()
    return listed


def _container_workload(ct: Mapping[str, Any]) -> Workload:
    labels = ct.get("Labels") or {}
    return Workload("container", str(labels.get(LABEL_HOST, "")), str(labels.get("shoal.node.id", "")),
                    str(labels.get("shoal.task.id", "")), str(ct["Id"])[:12])


def cluster_containers(cluster: str, docker_host: str) -> list[Workload]:
    """Every container labelled with `cluster` on the engine at `docker_host` ([] when none answers)."""
    client = _engine(docker_host)
    if client is None:
        return []
    try:
        with client:
            return [_container_workload(ct) for ct in _containers(client, cluster)]
    except (httpx.HTTPError, OSError, ValueError):
        return []


def stop_cluster_containers(cluster: str, docker_host: str) -> list[Workload]:
    """Remove (force) every container labelled with `cluster` on the engine at `docker_host`."""
    client = _engine(docker_host)
    if client is None:
        return []
    out = []
    try:
        with client:
            for ct in _containers(client, cluster):
                client.delete(f"/containers/{ct['Id']}", params={"force": "1", "v": "1"})
                out.append(_container_workload(ct))
    except (httpx.HTTPError, OSError, ValueError) as e:
        log.warning("workloads: cannot sweep the containers on %s: %s", docker_host, e)
    return out


def stop_cluster(cluster: str, *, docker_host: str, cgroup_root: str = "") -> list[Workload]:
    """Everything `cluster` still runs on this machine, stopped: what `shoal down` does after the agents."""
    return stop_cluster_processes(cluster, cgroup_root) + stop_cluster_containers(cluster, docker_host)
