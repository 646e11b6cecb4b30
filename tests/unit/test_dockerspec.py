"""shoal spec → Docker ServiceSpec → shoal spec is the identity for what both can express (property test), and
a Docker field shoal cannot honour is refused by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import InvalidArgument
from shoal.models.dockerspec import Unsupported, from_docker, to_docker
from shoal.models.specs import ServiceSpec

#: what CLI 28.2.2 sent for a `service create` with most flags (captured from a real engine)
SAMPLE = Path(__file__).parent / "data" / "docker_service_create_request.json"
names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
words = st.from_regex(r"[A-Za-z0-9_./-]{1,12}", fullmatch=True)
ms = st.integers(min_value=0, max_value=10**7).map(lambda n: n / 1000)  # durations to the millisecond


@st.composite
def task_specs(draw: st.DrawFn) -> dict[str, Any]:
    env = draw(st.dictionaries(st.from_regex(r"[A-Z_]{1,8}", fullmatch=True), words, max_size=3))
    health = draw(st.none() | st.fixed_dictionaries({
        "test": st.just(["CMD-SHELL", "true"]), "interval": st.sampled_from([0.0, 1.5, 30.0]),
        "timeout": st.sampled_from([0.0, 2.0]), "retries": st.integers(0, 5), "start_period": st.just(0.0)}))
    if draw(st.booleans()):
        runtime: dict[str, Any] = {"process": {"command": draw(st.lists(words, min_size=1, max_size=3)), "env": env,
                                               "stop_grace_period": draw(ms)}}
        if health:
            runtime["process"]["healthcheck"] = health
    else:
        runtime = {"container": {
            "image": draw(words), "command": draw(st.lists(words, max_size=2)),
            "args": draw(st.lists(words, max_size=3)),
            "env": env, "labels": draw(st.dictionaries(words, words, max_size=2)),
            "mounts": draw(st.lists(st.fixed_dictionaries({"type": st.sampled_from(["bind", "volume", "tmpfs"]),
                                                           "target": words.map(lambda w: "/" + w),
                                                           "read_only": st.booleans()}), max_size=2)),
            "stop_grace_period": draw(ms), "read_only": draw(st.booleans()), "init": draw(st.none() | st.booleans())}}
        if health:
            runtime["container"]["healthcheck"] = health
    return {
        **runtime,
        "resources": {"limits": {"nano_cpus": draw(st.sampled_from([0, 10**9])),
                                 "memory_bytes": draw(st.sampled_from([0, 64 << 20]))},
                      "reservations": {"nano_cpus": draw(st.sampled_from([0, 5 * 10**8])), "memory_bytes": 0,
                                       "generic": draw(st.sampled_from([[], [{"kind": "gpu", "value": 2}]]))}},
        "restart": {"condition": draw(st.sampled_from(["none", "on-failure", "any"])), "delay": draw(ms),
                    "max_attempts": draw(st.integers(0, 9)), "window": draw(ms)},
        "placement": {"constraints": draw(st.lists(st.just("node.role==manager"), max_size=1)),
                      "preferences": draw(st.lists(st.just({"spread": "node.labels.zone"}), max_size=1)),
                      "platforms": draw(st.lists(st.just({"os": "linux", "arch": "amd64"}), max_size=1)),
                      "max_replicas": draw(st.integers(0, 4))},
        "networks": draw(st.lists(st.fixed_dictionaries({"target": names, "aliases": st.lists(names, max_size=2)}),
                                  max_size=2, unique_by=lambda n: n["target"])),
        "force_update": draw(st.integers(0, 3)),
        "secrets": draw(st.lists(st.fixed_dictionaries({"source": names, "target": names.map(lambda n: n + ".txt"),
                                                        "uid": st.just("0"), "mode": st.just(0o400)}),
                                 max_size=1)),
    }


@st.composite
def service_specs(draw: st.DrawFn) -> dict[str, Any]:
    mode = draw(st.sampled_from([{"replicated": {"replicas": 3}}, {"global": {}}, {"global_job": {}},
                                 {"replicated_job": {"max_concurrent": 2, "total_completions": 4}}]))
    spec: dict[str, Any] = {"name": draw(names), "labels": draw(st.dictionaries(words, words, max_size=2)),
                            "mode": mode, "task": draw(task_specs())}
    if "replicated" in mode or "global" in mode:
        spec["update_config"] = {"parallelism": draw(st.integers(0, 3)), "delay": draw(ms),
                                 "failure_action": draw(st.sampled_from(["pause", "continue", "rollback"])),
                                 "monitor": draw(ms), "max_failure_ratio": draw(st.sampled_from([0.0, 0.25])),
                                 "order": draw(st.sampled_from(["stop-first", "start-first"]))}
        spec["endpoint"] = {"mode": "vip", "ports": draw(st.lists(st.fixed_dictionaries({
            "target_port": st.integers(1, 65535), "protocol": st.sampled_from(["tcp", "udp"]),
            "publish_mode": st.just("host"), "published_port": st.integers(0, 65535)}), max_size=2,
            unique_by=lambda p: (p["published_port"] or -p["target_port"], p["protocol"])))}
    return spec


@settings(max_examples=150, deadline=None)
@given(service_specs())
def test_shoal_to_docker_to_shoal_is_the_identity(raw: dict[str, Any]) -> None:
    wire = ServiceSpec.model_validate(raw).wire()
    docker = json.loads(json.dumps(to_docker(wire)))  # through JSON, as on the wire
    assert ServiceSpec.model_validate(from_docker(docker)).wire() == wire


def test_docker_to_shoal_to_docker_keeps_the_cli_request() -> None:
    body = json.loads(SAMPLE.read_text())
    wire = ServiceSpec.model_validate(from_docker(body)).wire()
    back = to_docker(wire)
    assert back["TaskTemplate"]["ContainerSpec"]["Args"] == ["sleep", "3600"]
    assert back["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"] == 3_000_000_000
    assert back["TaskTemplate"]["Resources"] == {"Limits": {"MemoryBytes": 67108864},
                                                 "Reservations": {"NanoCPUs": 100000000}}
    assert back["UpdateConfig"]["Delay"] == 1_000_000_000 and back["UpdateConfig"]["Parallelism"] == 2
    assert back["TaskTemplate"]["ContainerSpec"]["Secrets"][0]["SecretName"] == "probe-sec"


@pytest.mark.parametrize(("path", "value", "named"), [
    (("TaskTemplate", "ContainerSpec", "Privileges"), {"NoNewPrivileges": True},
     "TaskTemplate.ContainerSpec.Privileges"),
    (("TaskTemplate", "ContainerSpec", "TTY"), True, "TaskTemplate.ContainerSpec.TTY"),
    (("TaskTemplate", "LogDriver"), {"Name": "syslog"}, "TaskTemplate.LogDriver"),
    (("TaskTemplate", "Resources", "Limits", "Pids"), 10, "TaskTemplate.Resources.Limits.Pids"),
    (("Networks",), [{"Target": "x"}], "Networks"),
])
def test_fields_shoal_cannot_honour_are_refused_by_name(path: tuple[str, ...], value: Any, named: str) -> None:
    body: dict[str, Any] = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"},
                                                            "Resources": {"Limits": {}}}}
    at = body
    for key in path[:-1]:
        at = at.setdefault(key, {})
    at[path[-1]] = value
    with pytest.raises(Unsupported) as e:
        from_docker(body)
    assert e.value.message == f"{named} is not supported by shoal"


def test_zero_values_the_cli_always_sends_are_accepted() -> None:
    body = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "TTY": False, "DNSConfig": {},
                                                              "Isolation": "default", "Init": False},
                                            "Runtime": "container"}, "Mode": {"Replicated": {}}}
    spec = ServiceSpec.model_validate(from_docker(body))
    assert spec.mode.replicated is not None and spec.mode.replicated.replicas == 1


def test_env_without_a_value_and_bad_durations_are_refused() -> None:
    with pytest.raises(Unsupported, match=r"Env\[0\]"):
        from_docker({"Name": "w", "TaskTemplate": {"ContainerSpec": {"Image": "b", "Env": ["HOME"]}}})
    with pytest.raises(InvalidArgument, match="StopGracePeriod"):
        from_docker({"Name": "w", "TaskTemplate": {"ContainerSpec": {"Image": "b", "StopGracePeriod": "5s"}}})
