"""The `process` executor: a task's `spec.process` runs as a local process group (development clusters and
tests; the `container` runtime is the production one).

Each task runs in its own session and process group (start_new_session), so stopping it signals the whole
group: SIGTERM, then SIGKILL after `stop_grace_period` (SwarmKit's container stop). stdout and stderr go to
`<log_dir>/<task id>.log`. The environment is built from nothing — never the agent's, which holds its
certificate paths and join token — : PATH, HOME, USER, LOGNAME, LANG, `SHOAL_TASK_ID`, `SHOAL_TASK_NAME`,
`SHOAL_TASK_SLOT`, `SHOAL_SERVICE_ID`, `SHOAL_SERVICE_NAME`, `SHOAL_NODE_ID`, then the spec's `env`. The spec's
`user` (name or uid, optionally `:group`) runs the task as that user (the agent must be root to switch).
Isolation stops there: a process task shares the node's filesystem, network and process table
(docs/security.md).

Every task's processes carry a mark made before the first of them starts (`shoal.workloads`: the task's own
cgroup v2, else a durable record plus an environment mark): the controller finds the task's processes through
it — after an agent restart, even one whose saved state lacks the task — instead of starting a duplicate, and
stopping a task kills everything in its mark (also what escaped its process group). A restarted agent cannot
learn the exit status of a process it did not start. `ProcessExecutor.sweep` kills the marked processes of
tasks no longer assigned to the node (see `agent.worker`)."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import shutil
import signal
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.executors.base import BaseController, BaseExecutor, ExecutorError, ExitError, Obj, task_spec
from agent.executors.health import Health, HealthConfig, HealthTracker, probe
from agent.payloads import give_to
from shoal.models.objects import task_name
from shoal.models.specs import ProcessSpec
from shoal.workloads import TaskMarks

log = logging.getLogger(__name__)

ADOPTED_POLL = 0.2  # seconds between liveness checks of a process started by an earlier agent


def proc_start_time(pid: int) -> int | None:
    """The kernel start time of `pid` (clock ticks since boot), or None if it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # after "pid (comm) ": state is field 3 of the whole line
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of the whole line


def describe_exit(returncode: int) -> tuple[int, str]:
    """(exit code, message) in the shell's convention: a signal N is exit code 128+N."""
    if returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return 128 + sig, f"killed by signal {sig} ({name})"
    return returncode, f"exit status {returncode}"


#: a task's PATH (Docker's default for containers): the agent's own is not passed on
TASK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class RunAs:
    """Who a task runs as: `uid`/`gid` (None: the agent's own), and that user's name and home."""

    uid: int | None
    gid: int | None
    name: str
    home: str


def resolve_user(user: str | None) -> RunAs:
    """`user` of a process spec (`name`, `uid`, `name:group`, `uid:gid`) → ids; raises ExecutorError for an
    unknown name, or when switching user needs root and the agent is not."""
    if user is None:
        me = _passwd(os.geteuid())
        return RunAs(None, None, me.pw_name if me else str(os.geteuid()), me.pw_dir if me else "/")
    name, _, group = user.partition(":")
    try:
        pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        if not name.isdigit():
            raise ExecutorError(f"process executor: unknown user {name!r}") from None
        pw = None
    uid = int(name) if name.isdigit() else pw.pw_uid if pw else 0
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ExecutorError(f"process executor: unknown group {group!r}") from None
    else:
        gid = pw.pw_gid if pw else uid
    if os.geteuid() != 0 and (uid != os.geteuid() or gid != os.getegid()):
        raise ExecutorError(f"process executor: running a task as {user!r} needs an agent running as root")
    return RunAs(uid, gid, pw.pw_name if pw else str(uid), pw.pw_dir if pw else "/")


def _passwd(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


def task_ports(task: Obj) -> list[Obj]:
    """The ports of the task's service endpoint (copied to `task.endpoint.ports` by the allocator)."""
    return [p for p in ((task.get("endpoint") or {}).get("ports") or []) if int(p.get("target_port") or 0) > 0]


def assign_host_ports(ports: list[Obj], bind_ip: str = "") -> dict[str, int]:
    """A host port for each of the task's ports (`"8080/tcp"` → port), the node-side end of the routing mesh
    (docs/networking.md): a host-mode port with a published port is that port (the task binds it itself);
    every other one gets a port the kernel reports free on `bind_ip` (all addresses by default). The ports are
    held until all are chosen, so one task never gets the same one twice."""
    out: dict[str, int] = {}
    held: list[socket.socket] = []
    try:
        for p in ports:
            proto = str(p.get("protocol") or "tcp")
            key = f"{int(p['target_port'])}/{proto}"
            if key in out:
                continue
            if (p.get("publish_mode") or "ingress") == "host" and int(p.get("published_port") or 0):
                out[key] = int(p["published_port"])
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
            held.append(s)
            s.bind((bind_ip, 0))
            out[key] = int(s.getsockname()[1])
    finally:
        for s in held:
            s.close()
    return out


def port_env(host_ports: Mapping[str, int], bind_ip: str = "") -> dict[str, str]:
    """`SHOAL_PORT_<target>` (tcp; `SHOAL_PORT_<target>_UDP` for udp) = the host port to listen on, `PORT` the
    first tcp one, `SHOAL_BIND_ADDR` the node's address when known (docs/networking.md)."""
    env: dict[str, str] = {}
    for key, port in host_ports.items():
        target, proto = key.split("/")
        env[f"SHOAL_PORT_{target}" + ("" if proto == "tcp" else f"_{proto.upper()}")] = str(port)
        if proto == "tcp":
            env.setdefault("PORT", str(port))
    if host_ports and bind_ip:
        env["SHOAL_BIND_ADDR"] = bind_ip
    return env


def task_env(task: Obj, node_id: str, spec_env: Mapping[str, str], run_as: RunAs | None = None, *,
             host_ports: Mapping[str, int] | None = None, bind_ip: str = "",
             extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A task's whole environment, built from nothing (issue 9: tasks hold no cluster credentials): a minimal
    PATH/HOME/USER/LANG, the task's SHOAL_TASK_* names, its ports and the node's discovery files (`extra`),
    then the spec's `env`. Never the agent's environment (its certificate directory, join token or anything
    else it was started with)."""
    who = run_as or resolve_user(None)
    env = {"PATH": TASK_PATH, "HOME": who.home, "USER": who.name, "LOGNAME": who.name, "LANG": "C.UTF-8",
           "SHOAL_TASK_ID": task["id"],
           "SHOAL_TASK_NAME": task_name(task),
           "SHOAL_TASK_SLOT": str(task.get("slot") or ""),
           "SHOAL_SERVICE_ID": str(task.get("service_id") or ""),
           "SHOAL_SERVICE_NAME": str(task.get("service_name") or ""),
           "SHOAL_NODE_ID": node_id}
    env.update(port_env(host_ports or {}, bind_ip))
    env.update(extra or {})
    env.update(spec_env)
    files = task.get("files")
    if files:  # the task's own secrets and configs (agent/payloads.py)
        env["SHOAL_SECRETS_DIR"] = str(files["secrets_dir"])
        env["SHOAL_CONFIGS_DIR"] = str(files["configs_dir"])
    return env


def drop_privileges(command: list[str], uid: int, gid: int | None) -> tuple[list[str], dict[str, object]]:
    """Run `command` as uid:gid. With util-linux's setpriv the switch happens inside the task's mark, after the
    wrapper joined it (joining a cgroup needs the agent's privileges); without it, the process is started as
    the user directly (a cgroup mark then cannot be joined, and the task fails saying so)."""
    setpriv = shutil.which("setpriv")
    if setpriv:
        ids = [f"--reuid={uid}", f"--regid={gid if gid is not None else uid}", "--clear-groups"]
        return [setpriv, *ids, "--", *command], {}
    return command, {"user": uid, "group": gid, "extra_groups": []}


class ProcessController(BaseController):
    def __init__(self, task: Obj, *, node_id: str, log_dir: Path, marks: TaskMarks,
                 saved: Mapping[str, Any] | None = None, kill_timeout: float = 5.0, bind_ip: str = "",
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.task = task
        self.bind_ip = bind_ip
        self.extra_env = dict(extra_env or {})
        #: host port per target port ("8080/tcp"), chosen at prepare, kept across agent restarts (saved)
        self.host_ports: dict[str, int] = {str(k): int(v) for k, v in ((saved or {}).get("host_ports") or {}).items()}
        self.node_id = node_id
        self.marks = marks
        self.log_path = log_dir / f"{task['id']}.log"
        self.kill_timeout = kill_timeout
        self._spec: ProcessSpec | None = None
        self._run_as: RunAs | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._pid: int | None = None
        self._start_time: int | None = None
        self._exit_code: int | None = None
        self._returncode: int | None = None
        self._ended = False
        self._adopted = False
        self._health: HealthTracker | None = None
        if saved and saved.get("pid"):
            self._pid = int(saved["pid"])
            self._start_time = saved.get("start_time")
            self._adopted = True

    # ---- Controller --------------------------------------------------------------------------------------
    @property
    def health(self) -> str | None:
        """The health check state (starting/healthy/unhealthy), None without a health check."""
        return str(self._health.state) if self._health is not None else None

    def saved(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pid": self._pid, "start_time": self._start_time} if self._pid else {}
        if self.host_ports:
            out["host_ports"] = dict(self.host_ports)
        return out

    @property
    def port_status(self) -> dict[str, Any] | None:
        """Where the task's ports are reached on this node (reported in the task status: shoal/endpoints.py)."""
        if not self.host_ports:
            return None
        modes = {f"{int(p['target_port'])}/{p.get('protocol') or 'tcp'}": str(p.get("publish_mode") or "ingress")
                 for p in task_ports(self.task)}
        return {"ports": [{"protocol": k.split("/")[1], "target_port": int(k.split("/")[0]), "published_port": v,
                           "publish_mode": modes.get(k, "ingress")} for k, v in sorted(self.host_ports.items())]}

    def _env(self, run_as: RunAs | None) -> dict[str, str]:
        return task_env(self.task, self.node_id, self.spec.env, run_as, host_ports=self.host_ports,
                        bind_ip=self.bind_ip, extra=self.extra_env)

    @property
    def spec(self) -> ProcessSpec:
        if self._spec is None:
            self._spec = task_spec(self.task, "process", ProcessSpec, "process executor")
        return self._spec

    async def prepare(self) -> None:
        spec = self.spec
        self._run_as = resolve_user(spec.user)
        if self._run_as.uid is not None and self.task.get("files"):
            try:  # its secrets and configs are the task user's alone
                give_to(self.task["files"], self._run_as.uid,
                        self._run_as.gid if self._run_as.gid is not None else -1)
            except OSError as e:
                raise ExecutorError(f"process executor: cannot give the task's secrets to its user: {e}") from e
        if not self.host_ports and task_ports(self.task):
            try:
                self.host_ports = assign_host_ports(task_ports(self.task), self.bind_ip)
            except OSError as e:
                raise ExecutorError(f"process executor: cannot find free host ports for the task: {e}") from e
        env = self._env(self._run_as)
        exe = spec.command[0]
        if os.sep in exe:
            path = exe if os.path.isabs(exe) or spec.dir is None else os.path.join(spec.dir, exe)
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                raise ExecutorError(f"process executor: {exe!r} is not an executable file")
        elif shutil.which(exe, path=env.get("PATH")) is None:
            raise ExecutorError(f"process executor: executable {exe!r} not found in PATH")
        if spec.dir is not None and not os.path.isdir(spec.dir):
            raise ExecutorError(f"process executor: working directory {spec.dir!r} does not exist")
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ExecutorError(f"process executor: cannot create the log directory: {e}") from e

    async def start(self) -> None:
        """Start the process (unless it runs already) and, with a health check, return once it is healthy:
        SwarmKit keeps a task STARTING until then."""
        if self._proc is None and not self._adopt():
            await self._spawn()
        cfg = self._health_config()
        if cfg is None:
            return
        if self._health is None:
            self._health = HealthTracker(cfg, asyncio.get_running_loop().time())
        while self._health.state == Health.STARTING:
            if await self._probe_after_interval(cfg) is None:
                await self._exit_status()  # it exited before it was ever healthy
                raise ExitError("process exited before its first healthy check", self._exit_code)
        if self._health.state == Health.UNHEALTHY:
            await self.shutdown()
            raise ExecutorError(f"process unhealthy: {cfg.retries} consecutive health checks failed")

    def _adopt(self) -> bool:
        """Whether the task's mark holds processes already (started by an earlier agent, saved or not): then
        they are the task's workload, watched through the mark."""
        if self._proc is not None:
            return True
        if self._ended or not self.marks.pids(self.node_id, self.task["id"]):
            return False
        if not self._adopted:
            log.info("process: task %s runs already; adopting it", self.task["id"])
        self._adopted = True
        pids = self.marks.pids(self.node_id, self.task["id"])
        if pids and self._pid not in pids:  # no saved pid, or it is gone: report the oldest in the mark
            self._pid = min(pids)
            self._start_time = proc_start_time(self._pid)
        return True

    async def _spawn(self) -> None:
        spec = self.spec
        run_as = self._run_as or resolve_user(spec.user)
        command, switch = list(spec.command), dict[str, object]()
        if run_as.uid is not None and os.geteuid() == 0:  # as itself, an unprivileged agent switches nothing
            command, switch = drop_privileges(command, run_as.uid, run_as.gid)
        tid = self.task["id"]
        try:
            self.marks.create(self.node_id, tid)  # the durable trace, before anything runs
        except OSError as e:
            raise ExecutorError(f"process executor: cannot mark the task's processes: {e}") from e
        argv, env = self.marks.wrap(self.node_id, tid, command, self._env(run_as))
        try:
            with open(self.log_path, "ab") as log:
                self._proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                    cwd=spec.dir, env=env, start_new_session=True,
                    **switch,  # type: ignore[arg-type]
                )
        except OSError as e:
            raise ExecutorError(f"process executor: cannot start {spec.command[0]!r}: {e}") from e
        self.marks.started(self.node_id, tid, self._proc.pid)
        # The shell enters the mark before it execs the command; once start() returns, the mark holds it.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.kill_timeout
        while (self._proc.pid not in self.marks.pids(self.node_id, tid) and self._proc.returncode is None
               and loop.time() < deadline):
            await asyncio.sleep(0.005)
        self._adopted = False
        self._pid = self._proc.pid
        self._start_time = proc_start_time(self._proc.pid)

    async def wait(self) -> None:
        if not self._adopt() and not self._adopted:
            raise ExitError("process is not running (it was never started by this agent)", None)
        cfg = self._health_config()
        if cfg is not None:
            if self._health is None:  # found again after an agent restart: it was healthy then
                self._health = HealthTracker(cfg, asyncio.get_running_loop().time(), Health.HEALTHY)
            while (state := await self._probe_after_interval(cfg)) is not None:
                if state == Health.UNHEALTHY:
                    await self.shutdown()  # like SwarmKit's controller: an unhealthy workload is stopped
                    raise ExecutorError(f"process unhealthy: {cfg.retries} consecutive health checks failed")
        await self._exit_status()

    async def _exit_status(self) -> None:
        """Wait for the exit; return on exit 0, raise ExitError otherwise."""
        if self._proc is not None:
            self._finish(await self._proc.wait())
        else:
            while self._alive():
                await asyncio.sleep(ADOPTED_POLL)
            self._finish(None)
            raise ExitError("process exited while no agent was watching it; exit status unknown", None)
        if self._exit_code != 0:
            raise ExitError(describe_exit(self._returncode or 0)[1], self._exit_code)

    def _health_config(self) -> HealthConfig | None:
        return HealthConfig.from_spec(self.spec.healthcheck)

    async def _probe_after_interval(self, cfg: HealthConfig) -> Health | None:
        """Sleep one interval, then probe; None if the process exited meanwhile."""
        assert self._health is not None
        if await self._wait_exit(cfg.interval):
            return None
        ok = await probe(cfg, self._env(self._run_as), self.spec.dir)
        if not self._alive():
            return None
        return self._health.record(ok, asyncio.get_running_loop().time())

    async def shutdown(self) -> None:
        if self._alive():
            self._signal(signal.SIGTERM)
            if not await self._wait_exit(self.spec.stop_grace_period if self._spec_ok() else 0.0):
                self._signal(signal.SIGKILL)
                await self._wait_exit(self.kill_timeout)
        self.marks.remove(self.node_id, self.task["id"])  # only once empty: the mark outlives nothing it holds

    async def terminate(self) -> None:
        if self._alive():
            self._signal(signal.SIGKILL)
            await self._wait_exit(self.kill_timeout)
        self.marks.remove(self.node_id, self.task["id"])

    async def remove(self) -> None:
        await self.terminate()
        await asyncio.to_thread(self.marks.kill_and_remove, self.node_id, self.task["id"], self.kill_timeout)
        with contextlib.suppress(OSError):
            self.log_path.unlink()

    # ---- helpers -----------------------------------------------------------------------------------------
    def _spec_ok(self) -> bool:
        try:
            _ = self.spec
        except ExecutorError:
            return False
        return True

    def _alive(self) -> bool:
        if self._ended:
            return False
        if self._proc is not None:
            if self._proc.returncode is not None:  # exited, and nobody has handled it yet
                self._finish(self._proc.returncode)
                return False
            return True
        if not self._adopted:
            return False
        # Found through the mark: the task lives while anything in it does (its leader's exit kills the rest).
        return bool(self.marks.pids(self.node_id, self.task["id"]))

    def _signal(self, sig: int) -> None:
        """Signal every process in the task's mark (its process group and whatever left it). The mark never
        holds another task's processes, so a reused pid is never signalled."""
        if self._ended:
            return
        if sig == signal.SIGKILL:
            self.marks.kill(self.node_id, self.task["id"])
        else:
            self.marks.signal(self.node_id, self.task["id"], sig)

    def _finish(self, returncode: int | None) -> None:
        """Record the leader's exit and kill what is left in the task's mark (children it forked), the way a
        container's processes all die with its main process. Runs once, right after the exit is seen."""
        if self._ended:
            return
        self._signal(signal.SIGKILL)
        self._ended = True
        self._returncode = returncode
        if returncode is not None:
            self._exit_code = describe_exit(returncode)[0]

    async def _wait_exit(self, timeout: float) -> bool:
        """Whether the process ended within `timeout`."""
        if self._proc is not None:
            try:
                returncode = await asyncio.wait_for(self._proc.wait(), timeout)
            except TimeoutError:
                return False
            self._finish(returncode)
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._alive():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        self._finish(None)
        return True


class ProcessExecutor(BaseExecutor):
    """Runs `process` tasks; logs under `log_dir`."""

    name = "process"
    sweeps = True

    def __init__(self, log_dir: Path, *, marks: TaskMarks, kill_timeout: float = 5.0, bind_ip: str = "",
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.bind_ip = bind_ip  # the node's address (SHOAL_ADDR): host ports are checked free there
        self.extra_env = extra_env or {}  # the node's discovery files (agent/mesh.py), for every task
        self.marks = marks
        self.kill_timeout = kill_timeout

    @property
    def runtimes(self) -> tuple[str, ...]:
        return ("process",)

    def controller(self, task: Obj, *, node_id: str, saved: Mapping[str, Any] | None = None) -> ProcessController:
        return ProcessController(task, node_id=node_id, log_dir=self.log_dir, marks=self.marks, saved=saved,
                                 kill_timeout=self.kill_timeout, bind_ip=self.bind_ip, extra_env=self.extra_env)

    async def sweep(self, node_id: str, keep: Callable[[str], bool]) -> list[str]:
        """Kill the marked processes of tasks this node no longer runs (`keep(task_id)` false, asked just
        before each kill), and every task of an earlier node id of this host (the agent was given a new id:
        its node was removed, or its state lost). Only with a complete assignment set from a live session.
        Returns the task ids whose processes were killed."""
        if not node_id:
            return []
        stopped = []
        for node in self.marks.nodes():
            for tid in self.marks.tasks(node):
                if node == node_id and keep(tid):
                    continue
                pids = await asyncio.to_thread(self.marks.kill_and_remove, node, tid, self.kill_timeout)
                if pids:
                    log.warning("process: killed %s of task %s (node %s): not assigned to this node", pids, tid,
                                node)
                    stopped.append(tid)
        return stopped
