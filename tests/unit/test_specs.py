"""The spec models (shoal/models/specs.py, cluster_spec, network_spec): defaults filled as SwarmKit's, and every
validation rule refused with a message naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shoal import cluster
from shoal.models.cluster_spec import ClusterSpec
from shoal.models.network_spec import NetworkSpec
from shoal.models.specs import HealthCheck, ServiceSpec, mode_kind

pytestmark = pytest.mark.timeout(30)


def svc(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "web", "task": {"process": {"command": ["sleep", "300"]}}}
    spec.update(overrides)
    return spec


def task(**extra: Any) -> dict[str, Any]:
    return {"process": {"command": ["sleep", "300"]}, **extra}


def wire(spec: dict[str, Any]) -> dict[str, Any]:
    return ServiceSpec.model_validate(spec).wire()


def refused(model: Any, data: Any) -> str:
    """The messages of the validation errors, as `loc: msg` lines (what the gateway shows)."""
    with pytest.raises(ValidationError) as e:
        model.model_validate(data)
    return "\n".join(".".join(str(x) for x in err["loc"]) + ": " + err["msg"] for err in e.value.errors())


# ---- defaults ----------------------------------------------------------------------------------------------
def test_service_defaults_are_swarmkits() -> None:
    w = wire(svc())
    assert w["mode"] == {"replicated": {"replicas": 1}}
    rolling = {"parallelism": 1, "delay": 0.0, "failure_action": "pause", "monitor": 5.0, "max_failure_ratio": 0.0,
               "order": "stop-first"}
    assert w["update_config"] == rolling
    assert w["rollback_config"] == rolling
    assert w["endpoint"] == {"mode": "vip", "ports": []}
    assert w["task"]["networks"] == []
    assert w["task"]["placement"] == {"constraints": [], "preferences": [], "platforms": [], "max_replicas": 0}
    assert w["task"]["resources"]["reservations"] == {"nano_cpus": 0, "memory_bytes": 0, "generic": []}
    assert "generic" not in w["task"]["resources"]["limits"]
    assert w["task"]["restart"] == {"condition": "any", "delay": 5.0, "max_attempts": 0, "window": 0.0}
    assert w["task"]["process"]["stop_grace_period"] == 10.0
    assert "healthcheck" not in w["task"]["process"]


def test_partial_update_config_keeps_other_defaults() -> None:
    w = wire(svc(update_config={"parallelism": 0, "order": "start-first", "failure_action": "rollback"},
                 rollback_config={"monitor": "30s"}))
    assert w["update_config"] == {"parallelism": 0, "delay": 0.0, "failure_action": "rollback", "monitor": 5.0,
                                  "max_failure_ratio": 0.0, "order": "start-first"}
    assert w["rollback_config"]["monitor"] == 30.0 and w["rollback_config"]["parallelism"] == 1


@pytest.mark.parametrize(("mode", "expected"), [
    ({"replicated_job": {}}, {"replicated_job": {"max_concurrent": 1, "total_completions": 1}}),
    ({"replicated_job": {"max_concurrent": 3}}, {"replicated_job": {"max_concurrent": 3, "total_completions": 3}}),
    ({"replicated_job": {"max_concurrent": 2, "total_completions": 10}},
     {"replicated_job": {"max_concurrent": 2, "total_completions": 10}}),
    ({"replicated_job": {"total_completions": 0}}, {"replicated_job": {"max_concurrent": 1, "total_completions": 0}}),
    ({"global_job": {}}, {"global_job": {}}),
    ({"global": {}}, {"global": {}}),
    ({}, {"replicated": {"replicas": 1}}),
])
def test_modes(mode: dict[str, Any], expected: dict[str, Any]) -> None:
    w = wire(svc(mode=mode))
    assert w["mode"] == expected
    assert mode_kind(w) == next(iter(expected))


def test_jobs_get_no_update_or_rollback_config() -> None:
    modes: list[dict[str, Any]] = [{"replicated_job": {}}, {"global_job": {}}]
    for mode in modes:
        w = wire(svc(mode=mode))
        assert "update_config" not in w and "rollback_config" not in w


def test_ports_defaults() -> None:
    w = wire(svc(endpoint={"ports": [{"target_port": 80}, {"target_port": 53, "protocol": "udp",
                                                           "published_port": 53, "publish_mode": "host"}]}))
    assert w["endpoint"]["ports"] == [
        {"protocol": "tcp", "target_port": 80, "published_port": 0, "publish_mode": "ingress"},
        {"protocol": "udp", "target_port": 53, "published_port": 53, "publish_mode": "host"},
    ]


def test_same_published_port_on_different_protocols_is_fine() -> None:
    wire(svc(endpoint={"ports": [{"target_port": 53, "published_port": 53},
                                 {"target_port": 53, "published_port": 53, "protocol": "udp"}]}))


def test_dnsrr_with_host_ports_is_fine() -> None:
    w = wire(svc(endpoint={"mode": "dnsrr", "ports": [{"target_port": 80, "publish_mode": "host"}]}))
    assert w["endpoint"]["mode"] == "dnsrr"


def test_placement_networks_generic_health() -> None:
    w = wire(svc(task=task(
        placement={"preferences": [{"spread": "node.labels.zone"}, {"spread": "engine.labels.disk"}],
                   "platforms": [{"os": "linux", "arch": "amd64"}, {"os": "linux"}]},
        networks=[{"target": "back", "aliases": ["db"]}, {"target": "front"}],
        resources={"reservations": {"generic": [{"kind": "gpu", "value": 2}]}},
        process={"command": ["x"], "healthcheck": {"test": ["CMD-SHELL", "curl -f localhost"],
                                                   "interval": "2s", "retries": 3}},
    )))
    t = w["task"]
    assert t["placement"]["preferences"] == [{"spread": "node.labels.zone"}, {"spread": "engine.labels.disk"}]
    assert t["placement"]["platforms"] == [{"os": "linux", "arch": "amd64"}, {"os": "linux", "arch": ""}]
    assert t["networks"] == [{"target": "back", "aliases": ["db"]}, {"target": "front", "aliases": []}]
    assert t["resources"]["reservations"]["generic"] == [{"kind": "gpu", "value": 2}]
    assert t["process"]["healthcheck"] == {"test": ["CMD-SHELL", "curl -f localhost"], "interval": 2.0,
                                           "timeout": 0.0, "retries": 3, "start_period": 0.0}


@pytest.mark.parametrize("test", [[], ["NONE"], ["CMD", "true"], ["CMD", "curl", "-f", "x"], ["CMD-SHELL", "exit 0"]])
def test_health_test_forms(test: list[str]) -> None:
    assert HealthCheck.model_validate({"test": test}).test == test
    wire(svc(task={"container": {"image": "nginx", "healthcheck": {"test": test}}}))


def test_cluster_spec_defaults_match_shoal_cluster() -> None:
    spec = ClusterSpec().wire()
    assert spec == cluster.default_cluster()["spec"]
    assert ClusterSpec.model_validate({"dispatcher": {"heartbeat_period": "10s"},
                                       "orchestration": {"task_history_retention_limit": -1}}).wire() == {
        "name": "default", "dispatcher": {"heartbeat_period": 10.0},
        "orchestration": {"task_history_retention_limit": -1}}


def test_network_defaults() -> None:
    assert NetworkSpec.model_validate({"name": "back"}).wire() == {
        "name": "back", "labels": {}, "driver": "overlay", "attachable": False, "internal": False}
    w = NetworkSpec.model_validate({"name": "b", "ipam": {"subnet": "10.1.0.0/16", "gateway": "10.1.0.1"},
                                    "attachable": True, "labels": {"a": "b"}}).wire()
    assert w["ipam"] == {"subnet": "10.1.0.0/16", "gateway": "10.1.0.1"}
    assert NetworkSpec.model_validate({"name": "v6", "ipam": {"subnet": "fd00::/64",
                                                              "gateway": "fd00::1"}}).wire()["ipam"]["subnet"] \
        == "fd00::/64"


# ---- refusals ----------------------------------------------------------------------------------------------
SERVICE_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("two modes", svc(mode={"replicated": {}, "global_job": {}}), "mode: Value error, exactly one mode"),
    ("job max_concurrent 0", svc(mode={"replicated_job": {"max_concurrent": 0}}),
     "mode.replicated_job.max_concurrent: Input should be greater than or equal to 1"),
    ("job negative completions", svc(mode={"replicated_job": {"total_completions": -1}}),
     "mode.replicated_job.total_completions"),
    ("global job with fields", svc(mode={"global_job": {"replicas": 1}}), "mode.global_job.replicas"),
    ("huge replicas", svc(mode={"replicated": {"replicas": 2**63}}), "mode.replicated.replicas"),
    ("replicated job with update config", svc(mode={"replicated_job": {}}, update_config={}),
     "update_config: Value error, jobs (replicated_job) may not have an update config"),
    ("global job with rollback config", svc(mode={"global_job": {}}, rollback_config={"parallelism": 2}),
     "rollback_config: Value error, jobs (global_job) may not have a rollback config"),
    ("update failure action", svc(update_config={"failure_action": "explode"}), "update_config.failure_action"),
    ("rollback cannot roll back", svc(rollback_config={"failure_action": "rollback"}),
     "rollback_config.failure_action"),
    ("ratio above 1", svc(update_config={"max_failure_ratio": 1.5}),
     "update_config.max_failure_ratio: Input should be less than or equal to 1"),
    ("negative ratio", svc(update_config={"max_failure_ratio": -0.1}), "update_config.max_failure_ratio"),
    ("negative parallelism", svc(update_config={"parallelism": -1}), "update_config.parallelism"),
    ("bad order", svc(update_config={"order": "random"}), "update_config.order"),
    ("bad delay", svc(update_config={"delay": "soon"}), "update_config.delay: Value error, invalid duration"),
    ("negative monitor", svc(rollback_config={"monitor": -1}), "rollback_config.monitor"),
    ("unknown update field", svc(update_config={"paralelism": 2}), "update_config.paralelism: Extra inputs"),
    ("endpoint mode", svc(endpoint={"mode": "round-robin"}), "endpoint.mode"),
    ("port protocol", svc(endpoint={"ports": [{"target_port": 80, "protocol": "icmp"}]}),
     "endpoint.ports.0.protocol"),
    ("target port 0", svc(endpoint={"ports": [{"target_port": 0}]}), "endpoint.ports.0.target_port"),
    ("target port missing", svc(endpoint={"ports": [{"published_port": 80}]}), "endpoint.ports.0.target_port"),
    ("target port too big", svc(endpoint={"ports": [{"target_port": 65536}]}), "endpoint.ports.0.target_port"),
    ("published port too big", svc(endpoint={"ports": [{"target_port": 80, "published_port": 70000}]}),
     "endpoint.ports.0.published_port"),
    ("publish mode", svc(endpoint={"ports": [{"target_port": 80, "publish_mode": "bridge"}]}),
     "endpoint.ports.0.publish_mode"),
    ("dnsrr with ingress", svc(endpoint={"mode": "dnsrr", "ports": [{"target_port": 80}]}),
     "endpoint: Value error, ports[0]: a port published in ingress mode cannot be used with endpoint mode dnsrr"),
    ("duplicate published", svc(endpoint={"ports": [{"target_port": 80, "published_port": 8080},
                                                    {"target_port": 81, "published_port": 8080,
                                                     "publish_mode": "host"}]}),
     "endpoint: Value error, ports[1]: published port 8080/tcp is already given by ports[0]"),
    ("network without target", svc(task=task(networks=[{"aliases": ["x"]}])), "task.networks.0.target"),
    ("network empty target", svc(task=task(networks=[{"target": ""}])), "task.networks.0.target"),
    ("network twice", svc(task=task(networks=[{"target": "a"}, {"target": "A"}])),
     "task.networks: Value error, [1]: network 'A' is attached more than once"),
    ("blank alias", svc(task=task(networks=[{"target": "a", "aliases": ["my db"]}])),
     "task.networks.0.aliases: Value error, invalid alias"),
    ("spread label", svc(task=task(placement={"preferences": [{"spread": "zone"}]})),
     "task.placement.preferences.0.spread: Value error, invalid spread descriptor 'zone'"),
    ("spread empty key", svc(task=task(placement={"preferences": [{"spread": "node.labels."}]})),
     "task.placement.preferences.0.spread"),
    ("preference kind", svc(task=task(placement={"preferences": [{"pack": "node.labels.zone"}]})),
     "task.placement.preferences.0.pack: Extra inputs"),
    ("empty platform", svc(task=task(placement={"platforms": [{}]})),
     "task.placement.platforms.0: Value error, a platform needs an os, an arch, or both"),
    ("generic zero", svc(task=task(resources={"reservations": {"generic": [{"kind": "gpu", "value": 0}]}})),
     "task.resources.reservations.generic.0.value"),
    ("generic named", svc(task=task(resources={"reservations": {"generic": [{"kind": "gpu", "value": "uuid"}]}})),
     "task.resources.reservations.generic.0.value"),
    ("generic bad kind", svc(task=task(resources={"reservations": {"generic": [{"kind": "g p u", "value": 1}]}})),
     "task.resources.reservations.generic.0.kind"),
    ("generic twice", svc(task=task(resources={"reservations": {"generic": [{"kind": "gpu", "value": 1},
                                                                            {"kind": "gpu", "value": 2}]}})),
     "task.resources.reservations.generic: Value error, generic resource kind 'gpu' is given more than once"),
    ("generic in limits", svc(task=task(resources={"limits": {"generic": [{"kind": "gpu", "value": 1}]}})),
     "task.resources.limits.generic: Extra inputs"),
    ("health test kind", svc(task=task(process={"command": ["x"], "healthcheck": {"test": ["RUN", "x"]}})),
     "task.process.healthcheck.test: Value error, test must start with one of NONE, CMD, CMD-SHELL"),
    ("health NONE args", svc(task=task(process={"command": ["x"], "healthcheck": {"test": ["NONE", "x"]}})),
     "task.process.healthcheck.test"),
    ("health CMD empty", svc(task=task(process={"command": ["x"], "healthcheck": {"test": ["CMD"]}})),
     "task.process.healthcheck.test: Value error, test [\"CMD\", ...] needs a command"),
    ("health shell two", svc(task=task(process={"command": ["x"],
                                                "healthcheck": {"test": ["CMD-SHELL", "a", "b"]}})),
     "task.process.healthcheck.test"),
    ("health interval 1us", svc(task=task(process={"command": ["x"], "healthcheck": {"interval": "1us"}})),
     "task.process.healthcheck.interval: Value error, interval must be 0 or at least 1ms"),
    ("health timeout", svc(task=task(process={"command": ["x"], "healthcheck": {"timeout": 0.0005}})),
     "task.process.healthcheck.timeout"),
    ("health start period", svc(task=task(process={"command": ["x"], "healthcheck": {"start_period": "0.5ms"}})),
     "task.process.healthcheck.start_period"),
    ("health retries", svc(task=task(process={"command": ["x"], "healthcheck": {"retries": -1}})),
     "task.process.healthcheck.retries"),
    ("container health", svc(task={"container": {"image": "x", "healthcheck": {"test": ["CMD-SHELL"]}}}),
     "task.container.healthcheck.test"),
]


@pytest.mark.parametrize(("spec", "needle"), [(s, n) for _, s, n in SERVICE_REFUSALS],
                         ids=[i for i, _, _ in SERVICE_REFUSALS])
def test_service_refusals_name_the_field(spec: dict[str, Any], needle: str) -> None:
    assert needle in refused(ServiceSpec, spec)


@pytest.mark.parametrize(("data", "needle"), [
    ({"dispatcher": {"heartbeat_period": 0}}, "dispatcher.heartbeat_period: Value error, heartbeat_period must be"),
    ({"dispatcher": {"heartbeat_period": "-1s"}}, "dispatcher.heartbeat_period"),
    ({"dispatcher": {"heartbeat_period": "often"}}, "dispatcher.heartbeat_period: Value error, invalid duration"),
    ({"orchestration": {"task_history_retention_limit": "5x"}}, "orchestration.task_history_retention_limit"),
    ({"orchestration": {"task_history_retention_limit": 1.5}}, "orchestration.task_history_retention_limit"),
    ({"raft": {}}, "raft: Extra inputs"),
])
def test_cluster_refusals(data: dict[str, Any], needle: str) -> None:
    assert needle in refused(ClusterSpec, data)


@pytest.mark.parametrize(("data", "needle"), [
    ({"name": "-x"}, "name: Value error, name must be 1-63"),
    ({"name": "x", "driver": ""}, "driver: Value error, invalid driver name"),
    ({"name": "x", "driver": "over lay"}, "driver"),
    ({"name": "x", "ipam": {"subnet": "10.0.0.0"}}, "ipam.subnet: Value error, invalid subnet '10.0.0.0': give a "
                                                    "prefix length"),
    ({"name": "x", "ipam": {"subnet": "10.0.0.0/33"}}, "ipam.subnet: Value error, invalid subnet"),
    ({"name": "x", "ipam": {"subnet": "banana"}}, "ipam.subnet: Value error, invalid subnet 'banana'"),
    ({"name": "x", "ipam": {"subnet": "10.0.0.5/24"}}, "it has host bits set; did you mean 10.0.0.0/24?"),
    ({"name": "x", "ipam": {"subnet": "10.0.0.0/31"}}, "ipam.subnet: Value error, subnet 10.0.0.0/31 is too small"),
    ({"name": "x", "ipam": {"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}},
     "ipam: Value error, gateway: 10.0.1.1 is not inside subnet 10.0.0.0/24"),
    ({"name": "x", "ipam": {"subnet": "10.0.0.0/24", "gateway": "fd00::1"}}, "ipam: Value error, gateway:"),
    ({"name": "x", "ipam": {"subnet": "10.0.0.0/24", "gateway": "10.0.0.0"}}, "is the network address"),
    ({"name": "x", "ipam": {"subnet": "10.0.0.0/24", "gateway": "10.0.0.255"}}, "is the broadcast address"),
    ({"name": "x", "ipam": {"subnet": "10.0.0.0/24", "gateway": "gw"}}, "gateway: invalid IP address 'gw'"),
    ({"name": "x", "ipam": {"gateway": "10.0.0.1"}}, "ipam.subnet: Field required"),
    ({"name": "x", "ingress": True}, "ingress: Extra inputs"),
])
def test_network_refusals(data: dict[str, Any], needle: str) -> None:
    assert needle in refused(NetworkSpec, data)


# ---- hostile input (issue 16): no coercion, values no machine has, characters no process can take -------------
def proc(**extra: Any) -> dict[str, Any]:
    return task(process={"command": ["sleep", "300"], **extra})


HOSTILE_REFUSALS: list[tuple[str, Any, dict[str, Any], str]] = [
    ("string replicas", ServiceSpec, svc(mode={"replicated": {"replicas": "3"}}),
     "mode.replicated.replicas: Input should be a valid integer"),
    ("bool replicas", ServiceSpec, svc(mode={"replicated": {"replicas": True}}), "mode.replicated.replicas"),
    ("float replicas", ServiceSpec, svc(mode={"replicated": {"replicas": 3.0}}), "mode.replicated.replicas"),
    ("int64 replicas", ServiceSpec, svc(mode={"replicated": {"replicas": 2**63 - 1}}),
     "mode.replicated.replicas: Input should be less than or equal to 100000"),
    ("huge job", ServiceSpec, svc(mode={"replicated_job": {"max_concurrent": 10**9}}),
     "mode.replicated_job.max_concurrent"),
    ("string bool", ServiceSpec, svc(task=task(container=None, process=None) | {
        "container": {"image": "x", "read_only": "yes"}}), "task.container.read_only"),
    ("memory 1e30", ServiceSpec, svc(task=task(resources={"limits": {"memory_bytes": 10**30}})),
     "task.resources.limits.memory_bytes: Input should be less than or equal to"),
    ("cpus", ServiceSpec, svc(task=task(resources={"reservations": {"nano_cpus": 10**20}})),
     "task.resources.reservations.nano_cpus"),
    ("restart delay 1e308", ServiceSpec, svc(task=task(restart={"delay": 1e308})),
     "task.restart.delay: Value error, duration 1e+308 is too long"),
    ("restart delay inf", ServiceSpec, svc(task=task(restart={"delay": float("inf")})), "task.restart.delay"),
    ("restart delay nan", ServiceSpec, svc(task=task(restart={"delay": float("nan")})), "task.restart.delay"),
    ("restart delay string", ServiceSpec, svc(task=task(restart={"delay": "99999999999h"})), "too long"),
    ("env NUL", ServiceSpec, svc(task=proc(env={"A\x00B": "1"})), "invalid environment variable name"),
    ("env =", ServiceSpec, svc(task=proc(env={"A=B": "1"})), "invalid environment variable name 'A=B'"),
    ("env empty", ServiceSpec, svc(task=proc(env={"": "1"})), "invalid environment variable name"),
    ("env value NUL", ServiceSpec, svc(task=proc(env={"A": "x\x00y"})), "must not contain NUL"),
    ("arg NUL", ServiceSpec, {"name": "web", "task": {"process": {"command": ["sleep", "3\x000"]}}},
     "task.process.command.1: Value error, must not contain NUL"),
    ("too many args", ServiceSpec, {"name": "web", "task": {"process": {"command": ["x"] * 5000}}},
     "task.process.command: List should have at most 1024 items"),
    ("huge arg", ServiceSpec, {"name": "web", "task": {"process": {"command": ["x" * (65 * 1024)]}}},
     "task.process.command.0: String should have at most 65536 characters"),
    ("label newline", ServiceSpec, svc(labels={"a": "b\nforged"}), "labels.a: Value error, must not contain control"),
    ("label key control", ServiceSpec, svc(labels={"a\tb": "c"}), "must not contain control"),
    ("label empty key", ServiceSpec, svc(labels={"": "c"}), "labels"),
    ("label number", ServiceSpec, svc(labels={"a": 1}), "labels.a: Input should be a valid string"),
    ("too many labels", ServiceSpec, svc(labels={f"k{i}": "v" for i in range(300)}),
     "labels: Dictionary should have at most 256 items"),
    ("hostname newline", ServiceSpec, svc(task={"container": {"image": "x", "hostname": "a\nb"}}),
     "task.container.hostname"),
    ("constraint newline", ServiceSpec, svc(task=task(placement={"constraints": ["node.id==a\nb"]})),
     "task.placement.constraints.0"),
    ("max replicas", ServiceSpec, svc(task=task(placement={"max_replicas": 2**62})), "task.placement.max_replicas"),
    ("port as string", ServiceSpec, svc(endpoint={"ports": [{"target_port": "80"}]}), "endpoint.ports.0.target_port"),
    ("heartbeat 1ms", ClusterSpec, {"dispatcher": {"heartbeat_period": "1ms"}},
     "dispatcher.heartbeat_period: Value error, heartbeat_period must be between 1s and 3600s"),
    ("heartbeat a week", ClusterSpec, {"dispatcher": {"heartbeat_period": "168h"}}, "between 1s and 3600s"),
    ("retention as string", ClusterSpec, {"orchestration": {"task_history_retention_limit": "5"}},
     "orchestration.task_history_retention_limit: Input should be a valid integer"),
    ("subnet /0", NetworkSpec, {"name": "x", "ipam": {"subnet": "0.0.0.0/0"}},
     "ipam.subnet: Value error, subnet 0.0.0.0/0 is too large: the prefix must be at least /8"),
    ("subnet ::/0", NetworkSpec, {"name": "x", "ipam": {"subnet": "::/0"}}, "subnet ::/0 is too large"),
    ("attachable string", NetworkSpec, {"name": "x", "attachable": "true"}, "attachable: Input should be a valid"),
]


@pytest.mark.parametrize(("model", "data", "needle"), [(m, d, n) for _, m, d, n in HOSTILE_REFUSALS],
                         ids=[i for i, _, _, _ in HOSTILE_REFUSALS])
def test_hostile_specs_are_refused(model: Any, data: dict[str, Any], needle: str) -> None:
    assert needle in refused(model, data)


def test_limits_admit_what_users_write() -> None:
    w = wire(svc(mode={"replicated": {"replicas": 100_000}}, labels={"com.example.team": "a b/c=d"},
                 task=proc(env={"PATH": "/bin:/usr/bin", "lower_case.dot": "x=y"},
                           dir="/tmp"), update_config={"delay": "10s", "max_failure_ratio": 0}))
    assert w["mode"]["replicated"]["replicas"] == 100_000
    assert w["update_config"]["delay"] == 10.0 and w["update_config"]["max_failure_ratio"] == 0.0
    assert ClusterSpec.model_validate({"dispatcher": {"heartbeat_period": 1}}).dispatcher.heartbeat_period == 1.0
    assert NetworkSpec.model_validate({"name": "x", "ipam": {"subnet": "10.0.0.0/8"}}).ipam is not None
