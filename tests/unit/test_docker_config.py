"""The docker executor without an engine: ContainerSpec → the Engine API's create body, image references,
version negotiation over a fake engine, node advertisement when the engine is missing, and the agent's
expansion of a dispatcher name into every address (scaled compose services)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.agent import Agent
from agent.executors.base import ExecutorError
from agent.executors.docker import (
    LABEL_NODE,
    LABEL_TASK,
    DockerController,
    DockerExecutor,
    container_config,
    container_name,
)
from agent.executors.docker_engine import DockerEngine, EngineError, parse_version, split_reference
from agent.session import expand_url
from agent.settings import AgentSettings
from shoal.models.specs import ContainerSpec
from shoal.workloads import LABEL_CLUSTER, LABEL_HOST, Owner

pytestmark = pytest.mark.timeout(30)


def task(container: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": "tid1", "service_id": "sid1", "service_name": "web", "slot": 2, "node_id": "n1",
            "desired_state": "running", "runtime": "container", "spec": {"container": container, **extra},
            "status": {"state": "assigned"}}


def config_of(container: dict[str, Any], **extra: Any) -> dict[str, Any]:
    t = task(container, **{k: v for k, v in extra.items() if k != "endpoint"})
    if "endpoint" in extra:
        t["endpoint"] = extra["endpoint"]
    return container_config(t, ContainerSpec.model_validate(container), "n1", publish_ip="127.0.0.1")


def test_minimal_spec_leaves_entrypoint_cmd_and_health_to_the_image() -> None:
    cfg = config_of({"image": "busybox"})
    assert cfg["Image"] == "busybox"
    assert "Entrypoint" not in cfg and "Cmd" not in cfg and "Healthcheck" not in cfg
    assert cfg["StopTimeout"] == 10  # SwarmKit's default stop grace period
    assert cfg["HostConfig"]["RestartPolicy"] == {"Name": "no"}
    assert cfg["Labels"][LABEL_TASK] == "tid1" and cfg["Labels"][LABEL_NODE] == "n1"
    assert "SHOAL_TASK_ID=tid1" in cfg["Env"] and "SHOAL_TASK_NAME=web.2.tid1" in cfg["Env"]


def test_full_spec_maps_every_field() -> None:
    cfg = config_of(
        {"image": "busybox:1.36", "command": ["sh", "-c"], "args": ["echo hi"], "env": {"A": "1"}, "dir": "/w",
         "user": "nobody", "hostname": "h1", "labels": {"team": "a", LABEL_TASK: "forged"},
         "mounts": [{"type": "bind", "source": "/srv", "target": "/data", "read_only": True},
                    {"type": "volume", "target": "/cache"}, {"type": "tmpfs", "target": "/scratch"}],
         "stop_signal": "SIGUSR1", "stop_grace_period": "1500ms", "read_only": True, "init": True,
         "healthcheck": {"test": ["CMD-SHELL", "true"], "interval": "2s", "timeout": "1s", "retries": 4,
                         "start_period": "3s"}},
        resources={"limits": {"nano_cpus": 500_000_000, "memory_bytes": 64 * 1024 * 1024}},
        endpoint={"ports": [{"target_port": 80, "published_port": 8080, "protocol": "tcp", "publish_mode": "host"},
                            {"target_port": 53, "protocol": "udp", "publish_mode": "host"},
                            {"target_port": 443, "published_port": 30443, "publish_mode": "ingress"}]})
    assert cfg["Entrypoint"] == ["sh", "-c"] and cfg["Cmd"] == ["echo hi"]
    assert cfg["Env"][-1] == "A=1"
    assert (cfg["WorkingDir"], cfg["User"], cfg["Hostname"], cfg["StopSignal"]) == ("/w", "nobody", "h1", "SIGUSR1")
    assert cfg["StopTimeout"] == 2  # whole seconds, rounded up
    assert cfg["Labels"]["team"] == "a" and cfg["Labels"][LABEL_TASK] == "tid1"  # ours win
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 2_000_000_000,
                                  "Timeout": 1_000_000_000, "Retries": 4, "StartPeriod": 3_000_000_000}
    host = cfg["HostConfig"]
    assert host["Mounts"] == [{"Type": "bind", "Target": "/data", "ReadOnly": True, "Source": "/srv"},
                              {"Type": "volume", "Target": "/cache", "ReadOnly": False},
                              {"Type": "tmpfs", "Target": "/scratch", "ReadOnly": False}]
    assert host["ReadonlyRootfs"] is True and host["Init"] is True
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 64 * 1024 * 1024
    # Host-mode ports are bound as given (0 lets the engine choose); ingress ones on a port the engine picks
    # (the mesh owns the published port 30443 and forwards to it).
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "443/tcp": {}}
    assert host["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                                    "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
                                    "443/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}


def test_health_none_disables_and_empty_test_inherits() -> None:
    assert config_of({"image": "x", "healthcheck": {"test": ["NONE"]}})["Healthcheck"]["Test"] == ["NONE"]
    inherit = config_of({"image": "x", "healthcheck": {"interval": "5s"}})["Healthcheck"]
    assert inherit["Test"] == [] and inherit["Interval"] == 5_000_000_000 and inherit["Timeout"] == 0


def test_invalid_mounts_are_refused() -> None:
    with pytest.raises(ExecutorError, match="needs a source"):
        config_of({"image": "x", "mounts": [{"type": "bind", "target": "/data"}]})
    with pytest.raises(ExecutorError, match="takes no source"):
        config_of({"image": "x", "mounts": [{"type": "tmpfs", "source": "a", "target": "/t"}]})


def test_container_name_is_swarmkits_and_valid() -> None:
    assert container_name(task({"image": "x"})) == "web.2.tid1"
    assert container_name({"id": "t", "service_id": "s", "service_name": "we b", "slot": 1}) == "we-b.1.t"


def test_image_references() -> None:
    assert split_reference("busybox") == ("busybox", "latest")
    assert split_reference("busybox:1.36") == ("busybox", "1.36")
    assert split_reference("127.0.0.1:5000/team/app") == ("127.0.0.1:5000/team/app", "latest")
    assert split_reference("127.0.0.1:5000/app:v2") == ("127.0.0.1:5000/app", "v2")
    assert split_reference("app@sha256:abc") == ("app", "sha256:abc")
    assert parse_version("1.41") == (1, 41) and parse_version("1.9") < parse_version("1.41")


class FakeEngine:
    """A tiny Engine API stand-in for negotiation and error mapping."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.paths: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path == "/_ping":
            return httpx.Response(200, text="OK", headers={"API-Version": self.api})
        if request.url.path == "/version":
            return httpx.Response(200, json={"ApiVersion": self.api, "Version": "fake"})
        if request.url.path.endswith("/containers/nope/json"):
            return httpx.Response(404, json={"message": "No such container: nope"})
        if request.url.path.endswith("/containers/create"):
            return httpx.Response(400, json={"message": "invalid mount config"})
        return httpx.Response(500, json={"message": "unexpected"})


def fake_engine(api: str) -> tuple[DockerEngine, FakeEngine]:
    fake = FakeEngine(api)
    engine = DockerEngine("http://engine")
    engine._http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handler), base_url="http://engine")
    return engine, fake


async def test_api_version_is_negotiated_down_to_what_both_speak() -> None:
    engine, fake = fake_engine("1.41")
    assert await engine.inspect("nope") is None
    assert engine.api_version == "1.41" and fake.paths[-1] == "/v1.41/containers/nope/json"
    with pytest.raises(EngineError, match="invalid mount config") as e:
        await engine.create("x", {})
    assert e.value.status == 400
    newer, fake2 = fake_engine("1.52")
    await newer.inspect("nope")
    assert newer.api_version == "1.43" and fake2.paths[-1].startswith("/v1.43/")
    old, _ = fake_engine("1.24")
    assert not await old.ping()


async def test_no_engine_means_no_container_runtime_advertised(tmp_path: Path) -> None:
    settings = AgentSettings(dispatchers=["http://127.0.0.1:9"], state_dir=tmp_path, hostname="n",
                             executors=["process", "docker"], docker_host=f"unix://{tmp_path}/no.sock")
    agent = Agent(settings)
    assert agent.description["executors"] == ["process"]
    assert not await agent.executors["container"].probe()  # type: ignore[attr-defined]
    assert isinstance(agent.executors["container"], DockerExecutor)  # still drives restored container tasks
    await agent.session.close()


async def test_a_dispatcher_name_with_several_addresses_expands_to_each(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    async def fake_getaddrinfo(host: str, port: int, **kw: Any) -> list[Any]:
        addrs = {"dispatcher": ["10.0.0.3", "10.0.0.2", "10.0.0.3"], "single": ["10.0.0.9"]}[host]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addrs]

    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo)
    assert await expand_url("http://dispatcher:4324") == ["http://10.0.0.2:4324", "http://10.0.0.3:4324"]
    assert await expand_url("http://single:4324") == ["http://single:4324"]
    assert await expand_url("http://127.0.0.1:4324") == ["http://127.0.0.1:4324"]


class SweepEngine:
    """Containers by labels, and what was removed: enough for `DockerExecutor.sweep`."""

    def __init__(self, containers: list[dict[str, Any]]) -> None:
        self.all = containers
        self.removed: list[str] = []

    async def containers(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        return [c for c in self.all if all(c["Labels"].get(k) == v for k, v in labels.items())]

    async def remove(self, ref: str) -> None:
        self.removed.append(ref)


async def test_sweep_removes_unassigned_and_earlier_node_ids_of_this_host_only() -> None:
    def ct(cid: str, task: str, node: str, cluster: str | None = "c1", host: str = "h1") -> dict[str, Any]:
        labels = {LABEL_TASK: task, LABEL_NODE: node}
        if cluster is not None:
            labels.update({LABEL_CLUSTER: cluster, LABEL_HOST: host})
        return {"Id": cid, "Labels": labels}

    engine = SweepEngine([
        ct("keep", "t1", "n1"), ct("gone", "t2", "n1"), ct("old-node", "t3", "n0"),
        ct("legacy", "t4", "n1", cluster=None),  # made before containers carried the cluster label
        ct("other-cluster", "t5", "n0", cluster="c2"), ct("other-host", "t6", "n9", host="h2"),
    ])
    ex = DockerExecutor(engine=engine, owner=Owner("c1", "h1"))  # type: ignore[arg-type]
    removed = await ex.sweep("n1", lambda tid: tid == "t1")
    assert sorted(engine.removed) == ["gone", "legacy", "old-node"]
    assert sorted(removed) == ["t2", "t3", "t4"]
    config = container_config({"id": "t1", "service_name": "web", "slot": 1},
                              ContainerSpec.model_validate({"image": "busybox"}), "n1", owner=Owner("c1", "h1"))
    assert config["Labels"][LABEL_CLUSTER] == "c1" and config["Labels"][LABEL_HOST] == "h1"


def test_overlay_attached_containers_get_no_engine_network_and_the_hosts_file() -> None:
    """A container the agent attaches to overlay networks (agent/overlay.py): network mode none, no engine port
    bindings (the agent's host forwarders stand in), the discovery hosts file on /etc/hosts."""
    t = task({"image": "busybox"})
    t["endpoint"] = {"ports": [{"protocol": "tcp", "target_port": 80, "published_port": 30001,
                                "publish_mode": "ingress"}]}
    cfg = container_config(t, ContainerSpec.model_validate({"image": "busybox"}), "n1", hosts_file="/s/hosts/tid1")
    host = cfg["HostConfig"]
    assert host["NetworkMode"] == "none" and host["PortBindings"] == {} and cfg["ExposedPorts"] == {}
    assert {"Type": "bind", "Source": "/s/hosts/tid1", "Target": "/etc/hosts", "ReadOnly": True} in host["Mounts"]
    plain = container_config(t, ContainerSpec.model_validate({"image": "busybox"}), "n1")
    assert "NetworkMode" not in plain["HostConfig"] and plain["HostConfig"]["PortBindings"]


async def test_overlay_check_names_what_is_missing_and_then_attaches_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import overlay as overlay_mod
    ov = overlay_mod.Overlay(tmp_path, node_id=lambda: "n1", addr="127.0.0.2")
    t = {"id": "t1", "spec": {"networks": [{"target": "net1"}]},
         "networks": [{"network_id": "net1", "addresses": ["10.0.1.3/24"]}]}
    assert ov.attachments(t) == []  # not checked yet: nothing attached
    monkeypatch.setattr(overlay_mod.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(overlay_mod.shutil, "which", lambda tool: None if tool == "bridge" else "/usr/bin/" + tool)
    missing = await ov.check()
    assert len(missing) == 2 and "root" in missing[0] and "`bridge`" in missing[1]
    assert not ov.available and ov.attachments(t) == [] and ov.status()["missing"] == missing
    executor = DockerExecutor("unix:///nonexistent.sock", overlay=ov)
    assert executor.controller(t, node_id="n1").overlay is None  # the engine's default bridge, host ports
    await executor.close()


class CallEngine:
    """Records each Engine API operation a controller asks for; one container that runs until `exit()`."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.exited = asyncio.Event()

    def _ct(self) -> dict[str, Any]:
        running = not self.exited.is_set()
        return {"Id": "c1", "Config": {"Labels": {LABEL_TASK: "tid1"}},
                "State": {"Running": running, "Pid": 42 if running else 0, "ExitCode": 0,
                          "StartedAt": "2026-12-07T07:00:00.1Z", "Status": "running" if running else "exited"}}

    async def create(self, name: str, config: dict[str, Any]) -> str:
        self.calls.append("create")
        return "c1"

    async def start(self, ref: str) -> None:
        self.calls.append("start")

    async def inspect(self, ref: str) -> dict[str, Any]:
        self.calls.append("inspect")
        return self._ct()

    # the node's exit event stream (agent/executors/docker_events.py): no engine call of its own per container
    async def ready(self) -> int:
        return 1

    async def wait(self, container: str, epoch: int) -> None:
        self.calls.append("wait")
        await self.exited.wait()


async def test_a_task_start_costs_the_engine_create_start_one_inspect_and_the_wait() -> None:
    """create, start, the inspect after start (pid, ports, health) and the wait: the wait reuses that inspect
    instead of asking again while the engine starts the other containers; the inspect after the exit stays."""
    engine = CallEngine()
    ctl = DockerController(task({"image": "img"}), node_id="n1", engine=engine,  # type: ignore[arg-type]
                           exits=engine)  # type: ignore[arg-type]
    await ctl.prepare()
    await ctl.start()
    assert engine.calls == ["create", "start", "inspect"] and ctl.pid == 42
    waiting = asyncio.create_task(ctl.wait())
    await asyncio.sleep(0.01)
    assert engine.calls == ["create", "start", "inspect", "wait"]
    engine.exited.set()
    await waiting
    assert engine.calls == ["create", "start", "inspect", "wait", "inspect"] and ctl.exit_code == 0
    # a wait that does not follow a start (a retry, an adopted container) looks first, as before
    engine.exited.clear()
    engine.calls.clear()
    again = asyncio.create_task(ctl.wait())
    await asyncio.sleep(0.01)
    assert engine.calls == ["inspect", "wait"]
    engine.exited.set()
    await again
