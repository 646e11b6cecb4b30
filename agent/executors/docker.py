"""The `docker` executor: a task's `spec.container` runs as a container of the node's Docker engine (SwarmKit's
`swarmd/dockerexec`), through `agent.executors.docker_engine` (the Engine API over its unix socket).

Controller operations, as the driver calls them:

    prepare    pull the image when the engine lacks it (a failed pull → REJECTED with the engine's reason), then
               create the container `<service>.<slot>.<task id>` (REJECTED when the engine refuses the config)
    start      start it; with a health check (the spec's or the image's) return only once it is healthy — the
               task stays STARTING — and fail (FAILED) if it turns unhealthy or exits first
    wait       until it exits (the node's one engine event stream tells, agent/executors/docker_events.py): 0 →
               COMPLETE, else FAILED with the exit code; an unhealthy container is stopped and FAILED
    shutdown   the stop signal (`stop_signal`, else the image's), SIGKILL after `stop_grace_period` (both done
               by the engine), then the container is removed
    remove     force-remove (kill first if needed), with its anonymous volumes

Every container carries labels `shoal.task.id`, `shoal.task.name`, `shoal.service.id`, `shoal.service.name`,
`shoal.slot`, `shoal.node.id`, `shoal.cluster.id` and `shoal.node.host` (`shoal.workloads`). A restarted agent
adopts its containers (by the saved id, else by name — also those its saved state lacks) instead of starting
duplicates, and learns their exit codes even if they ended meanwhile; `sweep` removes this host's containers
of tasks no longer assigned to its node, and those of earlier node ids of the host. Containers outlive the
agent process (unlike process tasks) unless `SHOAL_STOP_TASKS_ON_EXIT=true` (see `agent.settings`).

Mapping of `ContainerSpec` (SwarmKit's containerConfig/hostConfig): `command` → Entrypoint, `args` → Cmd
(each left to the image when empty), `env` (after `SHOAL_TASK_ID`, `SHOAL_TASK_NAME`, `SHOAL_TASK_SLOT`,
`SHOAL_SERVICE_ID`, `SHOAL_SERVICE_NAME`, `SHOAL_NODE_ID`), `dir`, `user`, `hostname`, `labels`, `mounts`
(bind, volume — named or anonymous —, tmpfs), `stop_signal`, `stop_grace_period` (StopTimeout), `healthcheck`
(empty test or zero durations inherit the image's), `read_only`, `init`; `resources.limits` → NanoCpus and
Memory; the task's `endpoint.ports` → bindings on the node: `host` publish mode as given (`published_port` 0:
the engine picks), `ingress` mode on a port the engine picks (the routing mesh forwards the published port
there; reported as `status.port_status`, docs/networking.md). No restart policy: the orchestrator replaces
failed tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from agent.executors.base import (
    BaseController,
    BaseExecutor,
    ExecutorError,
    ExitError,
    Obj,
    RetryableError,
    task_spec,
)
from agent.executors.docker_engine import DEFAULT_HOST, DockerEngine, EngineError, EngineUnavailable, NotFoundError
from agent.executors.docker_events import ExitStream
from agent.executors.docker_events import exit_message as _exit_message
from agent.executors.docker_events import never_started as _never_started
from agent.overlay import Overlay, OverlayError
from shoal.models.objects import task_name
from shoal.models.specs import ContainerSpec, HealthCheck, Resources
from shoal.workloads import LABEL_CLUSTER, LABEL_HOST, Owner

log = logging.getLogger(__name__)

LABEL_TASK = "shoal.task.id"
LABEL_TASK_NAME = "shoal.task.name"
LABEL_SERVICE = "shoal.service.id"
LABEL_SERVICE_NAME = "shoal.service.name"
LABEL_SLOT = "shoal.slot"
LABEL_NODE = "shoal.node.id"
HEALTH_POLL = 0.25  # seconds between health checks of a STARTING container
RUNNING_HEALTH_POLL = 1.0  # ... and of a RUNNING one
NANO = 1_000_000_000
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_.-]")


def container_name(task: Obj) -> str:
    """SwarmKit's container name `<service>.<slot>.<task id>`, restricted to what the engine accepts."""
    name = _NAME_BAD.sub("-", task_name(task))
    return name if name[:1].isalnum() else "t" + name


def _ns(seconds: float) -> int:
    return round(seconds * NANO)


def health_config(check: HealthCheck | None) -> Obj | None:
    """The engine's Healthcheck; None leaves the image's check in place. An empty test and zero durations
    inherit the image's values (the engine merges them)."""
    if check is None:
        return None
    return {"Test": list(check.test), "Interval": _ns(check.interval), "Timeout": _ns(check.timeout),
            "Retries": int(check.retries), "StartPeriod": _ns(check.start_period)}


def published_ports(task: Obj) -> list[Obj]:
    """Every port of the task's service endpoint: host-mode ones are bound on the node as given; ingress-mode
    ones on a port the engine picks, where the routing mesh of every node reaches them (docs/networking.md)."""
    ports = (task.get("endpoint") or {}).get("ports") or []
    return [p for p in ports if isinstance(p, dict) and p.get("target_port")]


def port_status(task: Obj, ct: Obj) -> dict[str, Any] | None:
    """SwarmKit's PortStatus from the engine's view of the container (`NetworkSettings.Ports`): the host port
    each target port is bound to on the node."""
    bound = ((ct.get("NetworkSettings") or {}).get("Ports")) or {}
    out = []
    for p in published_ports(task):
        proto = str(p.get("protocol") or "tcp")
        key = f"{int(p['target_port'])}/{proto}"
        for b in bound.get(key) or []:
            if str(b.get("HostPort") or "").isdigit():
                out.append({"protocol": proto, "target_port": int(p["target_port"]),
                            "published_port": int(b["HostPort"]), "publish_mode": str(p.get("publish_mode")
                                                                                       or "ingress")})
                break
    return {"ports": out} if out else None


def task_env(task: Obj, node_id: str, spec_env: Mapping[str, str]) -> list[str]:
    env = {
        "SHOAL_TASK_ID": str(task["id"]),
        "SHOAL_TASK_NAME": task_name(task),
        "SHOAL_TASK_SLOT": str(task.get("slot") or ""),
        "SHOAL_SERVICE_ID": str(task.get("service_id") or ""),
        "SHOAL_SERVICE_NAME": str(task.get("service_name") or ""),
        "SHOAL_NODE_ID": node_id,
        **spec_env,
    }
    return [f"{k}={v}" for k, v in env.items()]


def task_labels(task: Obj, node_id: str, user: Mapping[str, str], owner: Owner | None = None) -> dict[str, str]:
    labels = {**user, LABEL_TASK: str(task["id"]), LABEL_TASK_NAME: task_name(task),
              LABEL_SERVICE: str(task.get("service_id") or ""), LABEL_SERVICE_NAME: str(task.get("service_name") or ""),
              LABEL_SLOT: str(task.get("slot") or ""), LABEL_NODE: node_id}
    if owner is not None:
        labels.update({LABEL_CLUSTER: owner.cluster, LABEL_HOST: owner.host})
    return labels


def container_config(task: Obj, spec: ContainerSpec, node_id: str, *, publish_ip: str = "",
                     owner: Owner | None = None, hosts_file: str | None = None) -> Obj:
    """The body of `POST /containers/create` for a task (pure; unit-tested without an engine). With
    `hosts_file` the task is attached to overlay networks by the agent (agent/overlay.py): network mode `none`
    (the agent plumbs its interfaces once it runs), no engine port bindings (the agent's host forwarders), and
    the hosts file bind-mounted on /etc/hosts (service discovery)."""
    resources = Resources.model_validate((task.get("spec") or {}).get("resources") or {})
    mounts = []
    for m in spec.mounts:
        if m.type == "bind" and not m.source:
            raise ExecutorError(f"docker executor: bind mount on {m.target!r} needs a source path")
        if m.type == "tmpfs" and m.source:
            raise ExecutorError(f"docker executor: tmpfs mount on {m.target!r} takes no source")
        mount: Obj = {"Type": m.type, "Target": m.target, "ReadOnly": m.read_only}
        if m.source:
            mount["Source"] = m.source
        mounts.append(mount)
    for f in (task.get("files") or {}).get("entries", []):
        # the task's secrets and configs (agent/payloads.py), from the host directory the engine sees
        mounts.append({"Type": "bind", "Source": f["host_path"], "Target": f["target"], "ReadOnly": True})
    if hosts_file is not None:
        mounts.append({"Type": "bind", "Source": hosts_file, "Target": "/etc/hosts", "ReadOnly": True})
    exposed: dict[str, Obj] = {}
    bindings: dict[str, list[Obj]] = {}
    for p in published_ports(task) if hosts_file is None else []:
        key = f"{int(p['target_port'])}/{p.get('protocol') or 'tcp'}"
        if key in bindings:
            continue
        exposed[key] = {}
        host_mode = (p.get("publish_mode") or "ingress") == "host"
        published = int(p.get("published_port") or 0) if host_mode else 0  # ingress: the mesh owns the port
        bindings[key] = [{"HostIp": publish_ip, "HostPort": str(published) if published else ""}]
    host: Obj = {
        "RestartPolicy": {"Name": "no"},
        "ReadonlyRootfs": spec.read_only,
        "Mounts": mounts,
        "PortBindings": bindings,
        "NanoCpus": resources.limits.nano_cpus,
        "Memory": resources.limits.memory_bytes,
    }
    if spec.init is not None:
        host["Init"] = spec.init
    if hosts_file is not None:
        host["NetworkMode"] = "none"
    config: Obj = {
        "Image": spec.image,
        "Env": task_env(task, node_id, spec.env),
        "Labels": task_labels(task, node_id, spec.labels, owner),
        "StopTimeout": math.ceil(spec.stop_grace_period),
        "ExposedPorts": exposed,
        "HostConfig": host,
    }
    if spec.command:
        config["Entrypoint"] = list(spec.command)
    if spec.args:
        config["Cmd"] = list(spec.args)
    optional = {"WorkingDir": spec.dir, "User": spec.user, "Hostname": spec.hostname, "StopSignal": spec.stop_signal,
                "Healthcheck": health_config(spec.healthcheck)}
    config.update({k: v for k, v in optional.items() if v})
    return config


class DockerController(BaseController):
    """Drives one task's container. Stateless beyond the container id: every decision is made from what the
    engine reports, so a restarted agent (or a repeated operation) picks up where it was."""

    #: containers keep running when the agent exits (unless SHOAL_STOP_TASKS_ON_EXIT=true), to be adopted
    survives_agent_exit = True

    def __init__(self, task: Obj, *, node_id: str, engine: DockerEngine, exits: ExitStream,
                 saved: Mapping[str, Any] | None = None, publish_ip: str = "", owner: Owner | None = None,
                 overlay: Overlay | None = None) -> None:
        self.task = task
        self.exits = exits  # the node's one engine event stream: tells wait() when the container exits
        self._overlay = overlay
        self.node_id = node_id
        self.owner = owner
        self.engine = engine
        self.publish_ip = publish_ip
        self.name = container_name(task)
        self.container_id: str | None = str(saved["container_id"]) if saved and saved.get("container_id") else None
        self._spec: ContainerSpec | None = None
        self._pid: int | None = None
        self._exit_code: int | None = None
        self._health: str | None = None
        self._unhealthy = False
        #: prepare created the container (it has never run): start need not inspect it first
        self._created = False
        #: start's last inspect of the container, for the wait that follows at once (then dropped), and the
        #: event stream's epoch read before it (docker_events.py)
        self._started: Obj | None = None
        self._epoch = 0
        #: where the task's ports are bound on the node, once the engine (or the overlay's host forwarders) said
        #: (shoal/endpoints.py); kept across agent restarts for the overlay's forwarders to reopen the same ports
        self.port_status: dict[str, Any] | None = dict(saved["port_status"]) \
            if saved and isinstance(saved.get("port_status"), dict) else None

    @property
    def overlay(self) -> Overlay | None:
        """Attaches the container to the task's overlay networks; None without any, or when the kernel path
        is unavailable (the container then stays on the engine's default bridge)."""
        overlay = self._overlay
        return overlay if overlay is not None and overlay.attachments(self.task) else None

    # ---- Controller --------------------------------------------------------------------------------------
    @property
    def health(self) -> str | None:
        """The engine's health status (starting/healthy/unhealthy), None without a health check."""
        return self._health

    def saved(self) -> dict[str, Any]:
        out: dict[str, Any] = {"container_id": self.container_id} if self.container_id else {}
        if self.port_status and self.overlay is not None:
            out["port_status"] = self.port_status
        return out

    @property
    def spec(self) -> ContainerSpec:
        if self._spec is None:
            self._spec = task_spec(self.task, "container", ContainerSpec, "docker executor")
        return self._spec

    async def prepare(self) -> None:
        """Create the container, adopting one of this task's that exists already (a repeated prepare, an agent
        restart). The create is tried first, as the docker CLI does: the image is pulled only when the engine
        answers that it does not have it, and an existing container shows as a name conflict — so the common
        case costs the engine one call, not an inspect of the name and of the image before it."""
        spec = self.spec
        try:
            if self.container_id is not None and await self._find() is not None:
                return  # we know its id (saved by a previous agent run): adopt it
            hosts = str(self.overlay.write_hosts(self.task)) if self.overlay is not None else None
            config = container_config(self.task, spec, self.node_id, publish_ip=self.publish_ip, owner=self.owner,
                                      hosts_file=hosts)
            try:
                self.container_id = await self.engine.create(self.name, config)
            except NotFoundError as e:  # no such image (or a network the config names is gone)
                if await self.engine.image_inspect(spec.image) is not None:
                    raise ExecutorError(f"docker: creating the container failed: {e.message}") from e
                log.info("docker: pulling %s for task %s", spec.image, self.task["id"])
                try:
                    await self.engine.pull(spec.image)
                except EngineError as e:
                    raise ExecutorError(f"docker: pulling image {spec.image!r} failed: {e.message}") from e
                await self._create(config)
            except EngineError as e:
                if e.status == 409 and await self._find() is not None:
                    return  # created before (a repeated prepare, an agent restart, a concurrent create): adopt it
                raise ExecutorError(f"docker: creating the container failed: {e.message}") from e
            else:
                self._created = True
        except EngineUnavailable as e:
            raise RetryableError(str(e)) from e

    async def _create(self, config: Obj) -> None:
        try:
            self.container_id = await self.engine.create(self.name, config)
        except EngineError as e:
            if e.status == 409 and await self._find() is not None:
                return
            raise ExecutorError(f"docker: creating the container failed: {e.message}") from e
        self._created = True

    async def start(self) -> None:
        try:
            self._epoch = await self.exits.ready()  # before the container is seen running: no exit unseen
            if self._created:  # this controller created it a moment ago: it has never run, no need to look
                self._created = False
                fresh = True
            else:
                ct = await self._require()
                state = ct.get("State") or {}
                fresh = not state.get("Running") and _never_started(state)
            if fresh:
                try:
                    await self.engine.start(self.container_id or self.name)
                except EngineError as e:
                    raise ExecutorError(f"docker: starting the container failed: {e.message}") from e
                ct = await self._require()
            await self._attach(ct)
            self._observe_ports(ct)
            self._started = await self._until_healthy(ct)
        except EngineUnavailable as e:
            raise RetryableError(str(e)) from e

    async def _until_healthy(self, ct: Obj) -> Obj:
        """SwarmKit's Start waits for health: return (the last inspect) once healthy, or at once without a
        check."""
        while True:
            state = ct.get("State") or {}
            self._observe(state)
            if not state.get("Running"):
                if state.get("Health") is None and not _never_started(state):
                    return ct  # ran and ended already: wait() reports how
                raise ExitError(f"container exited before its first healthy check: {_exit_message(state)}",
                                int(state.get("ExitCode") or 0))
            health = (state.get("Health") or {}).get("Status")
            if health is None or health == "healthy":
                return ct
            if health == "unhealthy":
                await self._stop_and_remove()
                raise ExecutorError(f"container unhealthy: {self._last_probe(state)}")
            await asyncio.sleep(HEALTH_POLL)
            ct = await self._require()

    async def wait(self) -> None:
        try:
            # Right after start, its inspect is fresh enough (an exit since then shows in the event stream):
            # not asking again spares the engine a call per container while it starts the others.
            ct, self._started = self._started, None
            if ct is None:
                self._epoch = await self.exits.ready()
                ct = await self._find()
            if ct is None:
                raise ExitError("container is gone (removed outside shoal)", None)
            if self.overlay is not None and not self.overlay.is_attached(str(self.task["id"])):
                await self._attach(ct)  # adopted by a restarted agent: its forwarders, entries and hosts file
            self._observe(ct.get("State") or {})
            self._observe_ports(ct)
            waiter = asyncio.create_task(self._exited(ct))
            watcher = asyncio.create_task(self._watch_health()) if self._health is not None else None
            try:
                pending = {waiter} | ({watcher} if watcher is not None else set())
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if watcher is not None and (watcher in done or self._unhealthy):
                    await watcher  # raises once an unhealthy container is stopped and removed
                await waiter
            finally:
                for job in (waiter, watcher):
                    if job is not None and not job.done():
                        job.cancel()
                        with contextlib.suppress(BaseException):
                            await job
            ct = await self._find()
        except EngineUnavailable as e:
            raise RetryableError(str(e)) from e
        except EngineError as e:
            if await self._find_quietly() is None:
                raise ExitError("container is gone (removed outside shoal)", None) from e
            raise RetryableError(f"docker: waiting for the container: {e.message}") from e
        if ct is None:
            raise ExitError("container is gone (removed outside shoal)", None)
        state = ct.get("State") or {}
        self._observe(state)
        if self._exit_code != 0:
            raise ExitError(_exit_message(state), self._exit_code)

    async def _exited(self, ct: Obj) -> None:
        if (ct.get("State") or {}).get("Running"):
            await self.exits.wait(str(ct["Id"]), self._epoch)

    async def _watch_health(self) -> None:
        """While running: an unhealthy container is stopped and the task fails (SwarmKit's Wait)."""
        while True:
            await asyncio.sleep(RUNNING_HEALTH_POLL)
            ct = await self._find()
            if ct is None:
                return
            state = ct.get("State") or {}
            self._observe(state)
            if not state.get("Running"):
                return
            if (state.get("Health") or {}).get("Status") == "unhealthy":
                self._unhealthy = True  # the exit the stop causes is not the story
                await self._stop_and_remove()
                raise ExecutorError(f"container unhealthy: {self._last_probe(state)}")

    async def shutdown(self) -> None:
        try:
            await self._stop_and_remove()
        except EngineUnavailable as e:
            raise RetryableError(str(e)) from e

    async def terminate(self) -> None:
        try:
            ct = await self._find()
            if ct is not None:
                await self.engine.kill(self.container_id or self.name)
                await self._remove_recording_exit()
        except EngineUnavailable as e:
            raise RetryableError(str(e)) from e

    async def remove(self) -> None:
        try:
            await self._remove_recording_exit()
        except EngineUnavailable as e:
            raise RetryableError(str(e)) from e

    # ---- helpers -----------------------------------------------------------------------------------------
    async def _stop_and_remove(self) -> None:
        ct = await self._find()
        if ct is None:
            return
        if (ct.get("State") or {}).get("Running"):
            grace = self.spec.stop_grace_period if self._spec_ok() else 0.0
            try:
                await self.engine.stop(self.container_id or self.name, math.ceil(grace))
            except EngineError as e:
                if e.status != 404:
                    raise ExecutorError(f"docker: stopping the container failed: {e.message}") from e
        await self._remove_recording_exit()

    async def _remove_recording_exit(self) -> None:
        ct = await self._find()
        if ct is None:
            if self.overlay is not None:
                await self.overlay.detach(str(self.task["id"]))
            return
        state = ct.get("State") or {}
        if not state.get("Running") and not _never_started(state):
            self._observe(state)
        try:
            await self.engine.remove(self.container_id or self.name)
        except EngineError as e:
            raise ExecutorError(f"docker: removing the container failed: {e.message}") from e
        if self.overlay is not None:
            await self.overlay.detach(str(self.task["id"]))

    async def _attach(self, ct: Obj) -> None:
        """Plumb the running container into its overlay networks (agent/overlay.py); its host forwarders are
        its port_status. A container that cannot be attached is stopped and the task fails."""
        state = ct.get("State") or {}
        if self.overlay is None or not state.get("Running") or not state.get("Pid"):
            return
        try:
            self.port_status = await self.overlay.attach(self.task, int(state["Pid"]), self.port_status)
        except (OverlayError, OSError) as e:
            await self.overlay.detach(str(self.task["id"]))
            await self._stop_and_remove()
            raise ExecutorError(f"overlay: attaching the container to its networks failed: {e}") from e

    def _observe_ports(self, ct: Obj) -> None:
        if self.overlay is not None:
            return  # the agent's host forwarders, not the engine's bindings
        found = port_status(self.task, ct)
        if found is not None:
            self.port_status = found

    def _observe(self, state: Obj) -> None:
        if state.get("Pid"):
            self._pid = int(state["Pid"])
        health = state.get("Health")
        self._health = str(health.get("Status")) if isinstance(health, dict) and health.get("Status") else None
        if not state.get("Running") and not _never_started(state) and state.get("Status") in ("exited", "dead"):
            self._exit_code = int(state.get("ExitCode") or 0)

    @staticmethod
    def _last_probe(state: Obj) -> str:
        health = state.get("Health") or {}
        logs = health.get("Log") or []
        failing = health.get("FailingStreak")
        out = str(logs[-1].get("Output") or "").strip() if logs else ""
        return f"{failing} consecutive health checks failed" + (f" (last output: {out[:200]})" if out else "")

    def _spec_ok(self) -> bool:
        try:
            _ = self.spec
        except ExecutorError:
            return False
        return True

    async def _find(self) -> Obj | None:
        """This task's container (by id, else by name), or None. A container of that name belonging to another
        task is an error rather than something to adopt."""
        ct = None
        if self.container_id:
            ct = await self.engine.inspect(self.container_id)
        if ct is None:
            ct = await self.engine.inspect(self.name)
        if ct is None:
            return None
        labels = (ct.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_TASK) != str(self.task["id"]):
            raise ExecutorError(f"docker: a container named {self.name!r} exists and is not this task's")
        self.container_id = str(ct["Id"])
        return ct

    async def _find_quietly(self) -> Obj | None:
        try:
            return await self._find()
        except (EngineError, EngineUnavailable, ExecutorError):
            return None

    async def _require(self) -> Obj:
        ct = await self._find()
        if ct is None:
            raise ExecutorError(f"docker: container {self.name!r} is gone (removed outside shoal)")
        return ct


class DockerExecutor(BaseExecutor):
    """Runs `container` tasks on the engine at `host` (`SHOAL_DOCKER_HOST`). The node advertises the
    `container` runtime only once `probe()` found the engine answering."""

    name = "docker"
    probes = True
    sweeps = True

    def __init__(self, host: str = DEFAULT_HOST, *, publish_ip: str = "", engine: DockerEngine | None = None,
                 owner: Owner | None = None, overlay: Overlay | None = None) -> None:
        """`owner` (cluster id and host name) labels every container, so `sweep` and `shoal down` find them
        whichever node id made them; without it only this node's containers are swept."""
        self.engine = engine or DockerEngine(host)
        self._exits: dict[str, ExitStream] = {}  # node id -> its containers' exits (one stream; a new id: another)
        self.publish_ip = publish_ip
        self.owner = owner
        self.overlay = overlay  # containers attached to overlay networks (agent/overlay.py)

    @property
    def runtimes(self) -> tuple[str, ...]:
        return ("container",)

    async def probe(self) -> bool:
        """Whether the engine answers (it is then advertised)."""
        return await self.engine.ping()

    def controller(self, task: Obj, *, node_id: str, saved: Mapping[str, Any] | None = None) -> DockerController:
        exits = self._exits.get(node_id)
        if exits is None:
            exits = self._exits[node_id] = ExitStream(self.engine, {LABEL_NODE: node_id})
        return DockerController(task, node_id=node_id, engine=self.engine, exits=exits, saved=saved,
                                publish_ip=self.publish_ip, owner=self.owner, overlay=self.overlay)

    async def sweep(self, node_id: str, keep: Callable[[str], bool]) -> list[str]:
        """Remove this node's containers whose task is no longer assigned here (`keep(task_id)` false, checked
        just before each removal), and this host's containers of earlier node ids (the agent was given a new
        id: its node was removed, or its state lost). Returns the removed task ids."""
        if not node_id:
            return []
        found = {str(ct["Id"]): ct for ct in await self.engine.containers({LABEL_NODE: node_id})}
        if self.owner is not None:
            mine = {LABEL_CLUSTER: self.owner.cluster, LABEL_HOST: self.owner.host}
            found.update({str(ct["Id"]): ct for ct in await self.engine.containers(mine)})
        removed = []
        for cid, ct in found.items():
            labels = ct.get("Labels") or {}
            tid = labels.get(LABEL_TASK)
            if not tid or (labels.get(LABEL_NODE) == node_id and keep(tid)):
                continue
            log.warning("docker: removing container %s of task %s (node %s), not assigned to this node", cid[:12],
                        tid, labels.get(LABEL_NODE))
            await self.engine.remove(cid)
            removed.append(tid)
        return removed

    async def close(self) -> None:
        for exits in self._exits.values():
            await exits.close()
        await self.engine.close()
