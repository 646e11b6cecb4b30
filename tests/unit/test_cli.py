"""The `shoal` CLI without a cluster: flags -> ServiceSpec JSON, table formatting, error reporting, and the
read-modify-write retry of `service scale` (httpx.MockTransport, or the gateway app behind a TestClient)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal import pki
from shoal.certs import Signer
from shoal.cli import build_parser, client, flags, identity, main, networks, service_spec, table
from shoal.models.specs import ServiceSpec

pytestmark = pytest.mark.timeout(30)

Handler = Callable[[httpx.Request], httpx.Response]


def spec_of(*argv: str) -> dict[str, Any]:
    args = build_parser().parse_args(["service", "create", *argv])
    return service_spec.build_spec(args)


def mock(handler: Handler) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://gateway.test")


# ---- flags -> spec -----------------------------------------------------------------------------------------
def test_create_flags_map_to_spec() -> None:
    spec = spec_of("--name", "web", "--replicas", "3", "--env", "A=1", "-e", "B=x=y", "--workdir", "/srv",
                   "--constraint", "node.labels.zone==a", "--reserve-cpu", "0.5", "--reserve-memory", "64M",
                   "--limit-memory", "1g", "--restart-condition", "on-failure", "--restart-delay", "5s",
                   "--restart-max-attempts", "3", "--label", "tier=front", "--replicas-max-per-node", "2",
                   "--", "sleep", "300")
    assert spec == {
        "name": "web",
        "labels": {"tier": "front"},
        "mode": {"replicated": {"replicas": 3}},
        "task": {
            "process": {"command": ["sleep", "300"], "env": {"A": "1", "B": "x=y"}, "dir": "/srv"},
            "resources": {"reservations": {"nano_cpus": 500_000_000, "memory_bytes": 64 * 1024 * 1024},
                          "limits": {"memory_bytes": 1 << 30}},
            "restart": {"condition": "on-failure", "delay": "5s", "max_attempts": 3},
            "placement": {"constraints": ["node.labels.zone==a"], "max_replicas": 2},
        },
    }
    ServiceSpec.model_validate(spec)  # what the CLI sends is what the gateway accepts


def test_minimal_create_defaults_to_one_replica() -> None:
    spec = spec_of("--name", "x", "--", "sh", "-c", "echo -- hi")
    assert spec == {"name": "x", "mode": {"replicated": {"replicas": 1}},
                    "task": {"process": {"command": ["sh", "-c", "echo -- hi"]}}}


def test_image_selects_the_container_runtime() -> None:
    spec = spec_of("--name", "web", "--image", "nginx:1.25", "--mode", "global", "--env", "A=1",
                   "--container-label", "x=y", "--", "nginx", "-g", "daemon off;")
    assert spec["mode"] == {"global": {}}
    assert spec["task"] == {"container": {"image": "nginx:1.25", "args": ["nginx", "-g", "daemon off;"],
                                          "labels": {"x": "y"}, "env": {"A": "1"}}}
    ServiceSpec.model_validate(spec)


@pytest.mark.parametrize(("argv", "needle"), [
    (["--name", "web"], "give the command to run after `--`"),
    (["--name", "web", "--env", "NOVALUE", "--", "x"], "--env 'NOVALUE': expected KEY=VALUE"),
    (["--name", "web", "--reserve-memory", "lots", "--", "x"], "invalid size 'lots'"),
    (["--name", "web", "--reserve-cpu", "half", "--", "x"], "invalid CPU amount 'half'"),
    (["--name", "web", "--mode", "global", "--replicas", "2", "--", "x"], "--replicas can only be used"),
])
def test_create_flag_errors(argv: list[str], needle: str) -> None:
    with pytest.raises(client.CliError) as e:
        spec_of(*argv)
    assert needle in str(e.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("64M", 64 << 20), ("64m", 64 << 20), ("512MiB", 512 << 20), ("1.5g", 3 << 29), ("4096", 4096),
    ("10k", 10 << 10), ("2GB", 2 << 30), ("100b", 100),
])
def test_parse_bytes(text: str, expected: int) -> None:
    assert flags.parse_bytes(text) == expected


def test_parse_scale() -> None:
    assert service_spec.parse_scale(["web=5", "api=0"]) == [("web", 5), ("api", 0)]
    for bad in ("web", "web=", "=3", "web=-1", "web=two"):
        with pytest.raises(client.CliError, match="invalid scale specifier"):
            service_spec.parse_scale([bad])


def test_url_from_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_URL", raising=False)
    assert build_parser().parse_args(["service", "ls"]).url == "https://127.0.0.1:4242"
    monkeypatch.setenv("SHOAL_URL", "http://gw:1")
    assert build_parser().parse_args(["service", "ls"]).url == "http://gw:1"
    assert build_parser().parse_args(["--url", "http://a:2", "service", "ls"]).url == "http://a:2"
    assert build_parser().parse_args(["service", "ls", "--url", "http://b:3"]).url == "http://b:3"


def test_up_and_down_are_registered_when_present() -> None:
    pytest.importorskip("shoal.cli.up")
    assert build_parser().parse_args(["down"]).func.__name__ == "cmd_down"


def test_usage_errors_return_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["service", "scale"]) == 2
    assert main(["service"]) == 2
    assert main([]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()


# ---- tables ------------------------------------------------------------------------------------------------
def test_format_table_is_docker_like() -> None:
    out = table.format_table(["id", "name", "replicas"], [["abc", "web", "2/3"], ["abcdef", "a", ""]])
    assert out.splitlines() == ["ID      NAME  REPLICAS", "abc     web   2/3", "abcdef  a"]


@pytest.mark.parametrize(("seconds", "text"), [
    (0.3, "Less than a second"), (1, "1 second"), (5, "5 seconds"), (59, "59 seconds"), (60, "About a minute"),
    (150, "2 minutes"), (3600, "About an hour"), (3 * 3600, "3 hours"), (3 * 86400, "3 days"),
    (20 * 86400, "2 weeks"), (90 * 86400, "3 months"), (800 * 86400, "2 years"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert table.human_duration(seconds) == text


def service(name: str, sid: str, replicas: int | None, running: int, **task: Any) -> dict[str, Any]:
    mode = {"global": {}} if replicas is None else {"replicated": {"replicas": replicas}}
    return {"id": sid, "spec": {"name": name, "mode": mode, "task": task or {"process": {"command": ["sleep", "1"]}}},
            "status": {"desired": replicas or running, "running": running, "completed": 0}}


def test_service_rows() -> None:
    rows = table.service_rows([
        service("web", "w" * 25, 3, 2),
        service("api", "a" * 25, None, 4, container={"image": "nginx:1.25", "args": ["-g", "daemon off;"]}),
        service("long", "l" * 25, 1, 1, process={"command": ["python", "-c", "x" * 60]},
                placement={"max_replicas": 2}),
    ])
    assert rows[0] == ["aaaaaaaaaaaa", "api", "global", "4/4", "nginx:1.25 -g 'daemon off;'"]
    assert rows[1][3] == "1/1 (max 2 per node)"
    assert len(rows[1][4]) == table.TEXT_WIDTH and rows[1][4].endswith("…")
    assert rows[2] == ["wwwwwwwwwwww", "web", "replicated", "2/3", "sleep 1"]


def task(tid: str, slot: int, desired: str, state: str, created: float, at: float, err: str | None = None,
         node: str | None = "n1") -> dict[str, Any]:
    return {"id": tid, "service_id": "s", "service_name": "web", "slot": slot, "node_id": node,
            "desired_state": desired, "meta": {"created_at": created},
            "status": {"state": state, "timestamp": at, "err": err}}


def test_task_rows_show_history_under_the_current_task() -> None:
    now = 1000.0
    rows = table.task_rows([
        task("t2" * 10, 2, "running", "pending", 900, 995, node=None),
        task("old1" * 5, 1, "shutdown", "failed", 100, 400, err="task: non-zero exit (1)"),
        task("new1" * 5, 1, "running", "running", 500, 995),
    ], {"n1": "host-a"}, now)
    out = table.format_table(table.TASK_HEADERS, rows).splitlines()
    assert out == [
        "ID            NAME       NODE    DESIRED STATE  CURRENT STATE          ERROR",
        "new1new1new1  web.1      host-a  Running        Running 5 seconds ago",
        "old1old1old1   \\_ web.1  host-a  Shutdown       Failed 10 minutes ago  \"task: non-zero exit (1)\"",
        "t2t2t2t2t2t2  web.2              Running        Pending 5 seconds ago",
    ]


def test_global_tasks_are_named_after_their_node() -> None:
    t = task("x" * 20, 0, "running", "running", 1, 1, node="abcdefghijklmnop")
    assert table.task_display_name(t) == "web.abcdefghijkl"


def test_node_rows() -> None:
    rows = table.node_rows([{"id": "n" * 25, "role": "worker", "spec": {"availability": "drain"},
                             "status": {"state": "down"}, "description": {"hostname": "host-b"}}])
    assert rows == [["nnnnnnnnnnnn", "host-b", "Down", "Drain", "Worker"]]


def test_cluster_text() -> None:
    text = table.cluster_text({
        "id": "default", "spec": {"name": "default", "dispatcher": {"heartbeat_period": 5.0},
                                  "orchestration": {"task_history_retention_limit": 5}},
        "available": True, "error": None,
        "raft": {"leader": 2, "leader_url": "http://m2", "term": 7, "commit_index": 120, "members": [
            {"url": "http://m1", "reachable": True, "id": 1, "role": "follower", "term": 7, "commit_index": 120,
             "applied_index": 119},
            {"url": "http://m3", "reachable": False, "error": "refused"}]},
        "subsystems": [{"name": "scheduler", "holder": "scheduler-1", "term": 3, "expires_at": 101.0}],
    }, now=100.0)
    assert "Leader:          2 (http://m2)" in text
    assert "Term:            7" in text and "Commit index:    120" in text
    assert "Heartbeat period:  5s" in text
    assert "http://m1  1   follower  7     120           119            yes" in text
    assert "http://m3  -   -         -     -             -              no" in text
    assert "scheduler  scheduler-1  3     in 1 second" in text


# ---- talking to the gateway --------------------------------------------------------------------------------
SVC = {"id": "s" * 25, "meta": {"version": 7},
       "spec": {"name": "web", "mode": {"replicated": {"replicas": 2}}, "task": {"process": {"command": ["x"]}}}}


def test_scale_retries_on_409(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[str, Any]] = []
    version = {"v": 7}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            seen.append(("GET", request.url.path))
            return httpx.Response(200, json={**SVC, "meta": {"version": version["v"]}})
        body = json.loads(request.content)
        seen.append(("PUT", body["version"]))
        if len([s for s in seen if s[0] == "PUT"]) == 1:
            version["v"] = 9  # somebody else wrote in between
            return httpx.Response(409, json={"message": "service 'web' is at version 9, not 7"})
        assert body["spec"]["mode"]["replicated"]["replicas"] == 5
        return httpx.Response(200, json={**SVC, "spec": body["spec"]})

    assert main(["service", "scale", "--detach", "web=5"], http=mock(handler)) == 0
    assert seen == [("GET", "/v1/services/web"), ("PUT", 7), ("GET", "/v1/services/web"), ("PUT", 9)]
    assert capsys.readouterr().out == "web scaled to 5\n"


def test_scale_gives_up_after_repeated_conflicts(capsys: pytest.CaptureFixture[str]) -> None:
    puts = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=SVC)
        puts.append(1)
        return httpx.Response(409, json={"message": "service 'web' is at version 8, not 7"})

    assert main(["service", "scale", "--detach", "web=5"], http=mock(handler)) == 1
    assert len(puts) == client.SCALE_ATTEMPTS
    assert "error: service 'web' is at version 8, not 7" in capsys.readouterr().err


def test_scale_does_not_retry_other_errors(capsys: pytest.CaptureFixture[str]) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if request.method == "GET":
            return httpx.Response(200, json=SVC)
        return httpx.Response(400, json={"message": "invalid request: spec.mode.replicated.replicas: too many"})

    assert main(["service", "scale", "--detach", "web=5"], http=mock(handler)) == 1
    assert calls == ["GET", "PUT"]
    assert "spec.mode.replicated.replicas" in capsys.readouterr().err


def test_bad_scale_specifier_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    assert main(["service", "scale", "--detach", "web=5", "api"], http=mock(handler)) == 1
    assert "invalid scale specifier 'api'" in capsys.readouterr().err


def test_gateway_error_message_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"message": "service 'nope' not found", "code": "not_found"})

    assert main(["service", "inspect", "nope"], http=mock(handler)) == 1
    captured = capsys.readouterr()
    assert captured.err == "error: service 'nope' not found\n"
    assert json.loads(captured.out) == []


def test_unreachable_gateway_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    client = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://127.0.0.1:9")
    assert main(["--url", "http://127.0.0.1:9", "node", "ls"], http=client) == 1
    err = capsys.readouterr().err
    assert "cannot reach the shoal gateway at http://127.0.0.1:9" in err and "SHOAL_URL" in err


def test_non_json_error_body(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="Bad Gateway")

    assert main(["service", "ls"], http=mock(handler)) == 1
    assert "HTTP 502 from the gateway: Bad Gateway" in capsys.readouterr().err


# ---- against the real gateway app --------------------------------------------------------------------------
def test_round_trip_through_the_gateway_app(capsys: pytest.CaptureFixture[str]) -> None:
    from fastapi.testclient import TestClient

    from shoal.store.local import LocalStore
    from tests.service.gateway_kit import gateway_app

    store = LocalStore()
    app = gateway_app(store)
    with TestClient(app) as gw:
        assert main(["service", "create", "-d", "--name", "web", "--replicas", "2", "--reserve-memory", "64M", "--",
                     "sleep", "300"], http=gw) == 0
        sid = capsys.readouterr().out.strip()
        assert store.mem.get("service", sid)["spec"]["task"]["resources"]["reservations"]["memory_bytes"] == 64 << 20
        assert main(["service", "create", "--detach", "--name", "WEB", "--", "x"], http=gw) == 1
        assert capsys.readouterr().err == "error: service 'WEB' already exists\n"
        assert main(["service", "scale", "--detach", "web=4"], http=gw) == 0
        assert main(["service", "ls"], http=gw) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == "web scaled to 4"
        assert out[1].split() == ["ID", "NAME", "MODE", "REPLICAS", "IMAGE/COMMAND"]
        assert out[2].split() == [sid[:12], "web", "replicated", "0/4", "sleep", "300"]
        assert main(["service", "ps", "web"], http=gw) == 0
        assert capsys.readouterr().out.split() == ["ID", "NAME", "NODE", "DESIRED", "STATE", "CURRENT", "STATE",
                                                   "ERROR"]
        assert main(["cluster"], http=gw) == 0
        assert "http://m1  -   -     -     -             -              no" in capsys.readouterr().out
        assert main(["service", "rm", "web", "web"], http=gw) == 1
        captured = capsys.readouterr()
        assert captured.out == "web\n" and captured.err == "error: service 'web' not found\n"
        assert store.mem.count("service") == 0


# ---- issue 4: modes, rolling configs, ports, networks, health ---------------------------------------------
def update_args(*argv: str) -> Any:
    return build_parser().parse_args(["service", "update", *argv, "web"])


def base_spec() -> dict[str, Any]:
    return ServiceSpec.model_validate({
        "name": "web", "labels": {"tier": "front", "old": "x"}, "mode": {"replicated": {"replicas": 2}},
        "task": {"process": {"command": ["sleep", "300"], "env": {"A": "1", "B": "2"}},
                 "placement": {"constraints": ["node.labels.zone==a", "node.role==worker"]},
                 "networks": [{"target": "n" * 25}]},
        "endpoint": {"ports": [{"published_port": 8080, "target_port": 80},
                               {"published_port": 5353, "target_port": 53, "protocol": "udp"}]},
    }).wire()


@pytest.mark.parametrize(("argv", "mode"), [
    (["--mode", "replicated-job"], {"replicated_job": {}}),
    (["--mode", "replicated-job", "--replicas", "5"], {"replicated_job": {"max_concurrent": 5,
                                                                          "total_completions": 5}}),
    (["--mode", "replicated-job", "--replicas", "5", "--max-concurrent", "2"],
     {"replicated_job": {"max_concurrent": 2, "total_completions": 5}}),
    (["--mode", "replicated-job", "--total-completions", "4"], {"replicated_job": {"max_concurrent": 4,
                                                                                   "total_completions": 4}}),
    (["--mode", "replicated-job", "--max-concurrent", "3"], {"replicated_job": {"max_concurrent": 3}}),
    (["--mode", "replicated-job", "--replicas", "0"], {"replicated_job": {"total_completions": 0}}),
    (["--mode", "global-job"], {"global_job": {}}),
    (["--mode", "global"], {"global": {}}),
])
def test_create_modes(argv: list[str], mode: dict[str, Any]) -> None:
    spec = spec_of("--name", "job", *argv, "--", "true")
    assert spec["mode"] == mode
    ServiceSpec.model_validate(spec)


@pytest.mark.parametrize(("argv", "needle"), [
    (["--mode", "global-job", "--replicas", "2"], "--replicas can only be used with replicated or replicated-job"),
    (["--max-concurrent", "2"], "--max-concurrent and --total-completions can only be used with replicated-job"),
    (["--mode", "replicated-job", "--replicas", "2", "--total-completions", "3"], "disagree"),
    (["--publish", "80:http"], "--publish '80:http': expected published=P,target=T"),
    (["--publish", "published=80"], "the target port is required"),
    (["--publish", "published=80,target=x"], "--publish target 'x': expected a port number"),
    (["--publish", "target=80,color=red"], "unknown field 'color'"),
    (["--network", "alias=x"], "name=NETWORK is required"),
    (["--network", "name=a,ip=1.2.3.4"], "unknown field 'ip'"),
    (["--placement-pref", "node.labels.zone"], "expected spread=node.labels.KEY"),
    (["--generic-resource", "gpu"], "expected KIND=COUNT"),
    (["--no-healthcheck", "--health-cmd", "true"], "--no-healthcheck conflicts"),
])
def test_create_issue4_flag_errors(argv: list[str], needle: str) -> None:
    with pytest.raises(client.CliError) as e:
        spec_of("--name", "web", *argv, "--", "x")
    assert needle in str(e.value)


def test_create_rolling_ports_networks_health_placement() -> None:
    spec = spec_of(
        "--name", "web", "--update-parallelism", "0", "--update-delay", "10s", "--update-failure-action", "rollback",
        "--update-monitor", "30s", "--update-max-failure-ratio", "0.25", "--update-order", "start-first",
        "--rollback-parallelism", "2", "--rollback-failure-action", "continue", "--rollback-order", "stop-first",
        "-p", "published=8080,target=80", "--publish", "53:53/udp", "--publish", "9000",
        "--publish", "published=8443,target=443,protocol=tcp,mode=host", "--endpoint-mode", "vip",
        "--network", "back", "--network", "name=front,alias=web,alias=www",
        "--health-cmd", "curl -f localhost", "--health-interval", "5s", "--health-timeout", "2s",
        "--health-retries", "3", "--health-start-period", "1s",
        "--placement-pref", "spread=node.labels.zone", "--generic-resource", "gpu=2", "--reserve-cpu", "1",
        "--", "server")
    assert spec["update_config"] == {"parallelism": 0, "delay": "10s", "failure_action": "rollback",
                                     "monitor": "30s", "max_failure_ratio": 0.25, "order": "start-first"}
    assert spec["rollback_config"] == {"parallelism": 2, "failure_action": "continue", "order": "stop-first"}
    assert spec["endpoint"] == {"mode": "vip", "ports": [
        {"published_port": 8080, "target_port": 80},
        {"published_port": 53, "target_port": 53, "protocol": "udp"},
        {"target_port": 9000},
        {"published_port": 8443, "target_port": 443, "protocol": "tcp", "publish_mode": "host"},
    ]}
    assert spec["task"]["networks"] == [{"target": "back"}, {"target": "front", "aliases": ["web", "www"]}]
    assert spec["task"]["process"]["healthcheck"] == {"test": ["CMD-SHELL", "curl -f localhost"], "interval": "5s",
                                                      "timeout": "2s", "retries": 3, "start_period": "1s"}
    assert spec["task"]["placement"] == {"preferences": [{"spread": "node.labels.zone"}]}
    assert spec["task"]["resources"] == {"reservations": {"nano_cpus": 10**9, "generic": [{"kind": "gpu",
                                                                                           "value": 2}]}}
    ServiceSpec.model_validate(spec)


def test_container_health_and_no_healthcheck() -> None:
    spec = spec_of("--name", "web", "--image", "nginx", "--no-healthcheck")
    assert spec["task"]["container"]["healthcheck"] == {"test": ["NONE"]}
    ServiceSpec.model_validate(spec)


def test_update_flags_map_onto_the_current_spec() -> None:
    a = update_args(
        "--replicas", "4", "--env-add", "C=3", "--env-add", "A=one", "--env-rm", "B", "--label-add", "v=2",
        "--label-rm", "old", "--constraint-rm", "node.role == worker", "--constraint-add", "node.labels.ssd==true",
        "--update-parallelism", "3", "--update-order", "start-first", "--rollback-monitor", "1m",
        "--restart-condition", "on-failure", "--restart-max-attempts", "2", "--stop-grace-period", "30s",
        "--reserve-memory", "64M", "--replicas-max-per-node", "1", "--placement-pref-add", "spread=node.labels.rack",
        "--health-cmd", "true", "--health-retries", "2", "--force")
    spec = service_spec.apply_update(base_spec(), a)
    task = spec["task"]
    assert spec["mode"] == {"replicated": {"replicas": 4}}
    assert task["process"]["env"] == {"A": "one", "C": "3"}
    assert spec["labels"] == {"tier": "front", "v": "2"}
    assert task["placement"]["constraints"] == ["node.labels.zone==a", "node.labels.ssd==true"]
    assert task["placement"]["preferences"] == [{"spread": "node.labels.rack"}]
    assert task["placement"]["max_replicas"] == 1
    assert spec["update_config"]["parallelism"] == 3 and spec["update_config"]["order"] == "start-first"
    assert spec["update_config"]["monitor"] == 5.0  # untouched fields keep their value
    assert spec["rollback_config"]["monitor"] == "1m"
    assert task["restart"] == {"condition": "on-failure", "delay": 5.0, "max_attempts": 2, "window": 0.0}
    assert task["process"]["stop_grace_period"] == "30s"
    assert task["resources"]["reservations"]["memory_bytes"] == 64 << 20
    assert task["process"]["healthcheck"] == {"test": ["CMD-SHELL", "true"], "retries": 2}
    assert task["force_update"] == 1
    assert service_spec.apply_update(spec, update_args("--force"))["task"]["force_update"] == 2
    ServiceSpec.model_validate(spec)


def test_update_ports_and_networks() -> None:
    ids = {"front": "f" * 25, "back": "n" * 25}
    a = update_args("--publish-add", "published=8080,target=8000", "--publish", "9000:90", "--publish-rm", "53/udp",
                    "--network-rm", "back", "--network-add", "name=front,alias=web")
    spec = service_spec.apply_update(base_spec(), a, ids.__getitem__)
    assert spec["endpoint"]["ports"] == [{"published_port": 8080, "target_port": 8000},
                                         {"published_port": 9000, "target_port": 90}]
    assert spec["task"]["networks"] == [{"target": "f" * 25, "aliases": ["web"]}]
    again = service_spec.apply_update(spec, update_args("--network-add", "front"), ids.__getitem__)
    assert again["task"]["networks"] == [{"target": "f" * 25}]  # re-adding replaces, never duplicates
    ServiceSpec.model_validate(again)


def test_update_health_merges_and_no_healthcheck_replaces() -> None:
    spec = service_spec.apply_update(base_spec(), update_args("--health-cmd", "check", "--health-interval", "3s"))
    spec = service_spec.apply_update(spec, update_args("--health-timeout", "1s"))
    assert spec["task"]["process"]["healthcheck"] == {"test": ["CMD-SHELL", "check"], "interval": "3s",
                                                      "timeout": "1s"}
    spec = service_spec.apply_update(spec, update_args("--no-healthcheck"))
    assert spec["task"]["process"]["healthcheck"] == {"test": ["NONE"]}


@pytest.mark.parametrize(("mode", "argv", "expected"), [
    ({"replicated_job": {"max_concurrent": 1, "total_completions": 1}}, ["--replicas", "6", "--max-concurrent", "3"],
     {"replicated_job": {"max_concurrent": 3, "total_completions": 6}}),
    ({"global": {}}, ["--replicas", "2"], "--replicas can only be used with replicated or replicated-job mode"),
    ({"replicated": {"replicas": 1}}, ["--max-concurrent", "2"], "--max-concurrent can only be used"),
    ({"replicated": {"replicas": 1}}, ["--image", "nginx"], "--image: this service runs a process"),
])
def test_update_mode_specific_flags(mode: dict[str, Any], argv: list[str], expected: Any) -> None:
    spec = {**base_spec(), "mode": mode}
    if isinstance(expected, str):
        with pytest.raises(client.CliError, match=expected.replace("(", r"\(")):
            service_spec.apply_update(spec, update_args(*argv))
    else:
        assert service_spec.apply_update(spec, update_args(*argv))["mode"] == expected


def test_update_image_of_a_container_service() -> None:
    spec = {**base_spec(), "task": {"container": {"image": "nginx:1.24"}}}
    assert service_spec.apply_update(spec, update_args("--image", "nginx:1.25"))["task"]["container"]["image"] == \
        "nginx:1.25"


def test_service_update_retries_stale_versions_only(capsys: pytest.CaptureFixture[str]) -> None:
    puts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={**SVC, "meta": {"version": 7 + len(puts)}})
        body = json.loads(request.content)
        puts.append(body["version"])
        if len(puts) == 1:
            return httpx.Response(409, json={"message": "stale", "code": "version_conflict"})
        assert body["spec"]["task"]["force_update"] == 1
        return httpx.Response(409, json={"message": "port 80/tcp is already in use by service 'api'",
                                         "code": "port_in_use"})

    assert main(["service", "update", "--detach", "--force", "web"], http=mock(handler)) == 1
    assert puts == [7, 8]
    assert "error: port 80/tcp is already in use by service 'api'" in capsys.readouterr().err


def test_service_rollback_posts(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        return httpx.Response(200, json=SVC)

    assert main(["service", "rollback", "--detach", "web"], http=mock(handler)) == 0
    assert seen == [("POST", "/v1/services/web/rollback")]
    assert capsys.readouterr().out == "web\n"


NODE = {"id": "a" * 25, "meta": {"version": 4}, "spec": {"labels": {}, "role": "worker", "availability": "active"}}


def test_node_update_and_rm(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, str(request.url.path) + ("?" + request.url.query.decode()
                                                              if request.url.query else ""), body))
        return httpx.Response(200, json=NODE)

    assert main(["node", "update", "--availability", "drain", "--label-add", "zone=a", "--label-add", "ssd",
                 "--label-rm", "old", "--role", "manager", "host-a"], http=mock(handler)) == 0
    assert seen == [("GET", "/v1/nodes/host-a", None),
                    ("PATCH", f"/v1/nodes/{'a' * 25}", {"version": 4, "availability": "drain", "role": "manager",
                                                       "labels_add": {"zone": "a", "ssd": ""},
                                                       "labels_rm": ["old"]})]
    seen.clear()
    assert main(["node", "rm", "--force", "host-a", "host-b"], http=mock(handler)) == 0
    assert seen == [("DELETE", "/v1/nodes/host-a?force=true", None), ("DELETE", "/v1/nodes/host-b?force=true", None)]
    seen.clear()
    assert main(["node", "rm", "host-a"], http=mock(handler)) == 0
    assert seen == [("DELETE", "/v1/nodes/host-a", None)]
    assert main(["node", "update", "host-a"], http=mock(handler)) == 1
    assert "nothing to change" in capsys.readouterr().err


def cluster_update_handler(seen: list[Any]) -> Callable[[httpx.Request], httpx.Response]:
    """A gateway that serves the cluster at version 7 and records each write in `seen`."""
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":  # the version to send is read first
            return httpx.Response(200, json={"id": "default", "spec": {}, "meta": {"version": 7}})
        seen.append((request.method, request.url.path, json.loads(request.content)))
        return httpx.Response(200, json={"id": "default", "spec": {}})
    return handler


def test_cluster_update(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Any] = []
    handler = cluster_update_handler(seen)

    assert main(["cluster", "update", "--heartbeat-period", "10s", "--task-history-limit", "-1"],
                http=mock(handler)) == 0
    assert seen == [("PATCH", "/v1/cluster", {"dispatcher": {"heartbeat_period": "10s"},
                                              "orchestration": {"task_history_retention_limit": -1},
                                              "version": 7})]
    assert capsys.readouterr().out == "cluster updated\n"
    assert main(["cluster", "update"], http=mock(handler)) == 1
    assert "nothing to change" in capsys.readouterr().err


def test_network_create_flags() -> None:
    args = build_parser().parse_args(["network", "create", "--subnet", "10.1.0.0/24", "--gateway", "10.1.0.1",
                                      "--attachable", "--internal", "--label", "a=b", "--driver", "overlay", "back"])
    assert networks.network_spec(args) == {"name": "back", "driver": "overlay",
                                           "ipam": {"subnet": "10.1.0.0/24", "gateway": "10.1.0.1"},
                                           "attachable": True, "internal": True, "labels": {"a": "b"}}
    assert networks.network_spec(build_parser().parse_args(["network", "create", "x"])) == {"name": "x"}
    with pytest.raises(client.CliError, match="--gateway needs --subnet"):
        networks.network_spec(build_parser().parse_args(["network", "create", "--gateway", "10.0.0.1", "x"]))


@pytest.mark.parametrize(("mode", "status", "text", "name"), [
    ({"replicated": {"replicas": 3}}, {"desired": 3, "running": 2, "completed": 0}, "2/3", "replicated"),
    ({"global": {}}, {"desired": 3, "running": 3, "completed": 0}, "3/3", "global"),
    ({"replicated_job": {"max_concurrent": 2, "total_completions": 5}}, {"desired": 5, "running": 1, "completed": 3},
     "1/5 (3/5 completed)", "replicated job"),
    ({"global_job": {}}, {"desired": 4, "running": 2, "completed": 2}, "2/4 (2/4 completed)", "global job"),
])
def test_replicas_column_by_mode(mode: dict[str, Any], status: dict[str, int], text: str, name: str) -> None:
    spec: dict[str, Any] = {"name": "x", "mode": mode, "task": {"process": {"command": ["x"]}}}
    assert table.replicas_text({"id": "s" * 25, "spec": spec, "status": status}) == text
    assert table.mode_name(spec) == name


def test_network_rows() -> None:
    rows = table.network_rows([
        {"id": "b" * 25, "spec": {"name": "back", "driver": "overlay", "attachable": True,
                                  "ipam": {"subnet": "10.1.0.0/24"}}, "ipam": None},
        {"id": "a" * 25, "spec": {"name": "Apps", "driver": "overlay"}, "ipam": {"subnet": "10.0.9.0/24"}},
    ])
    assert rows == [["aaaaaaaaaaaa", "Apps", "overlay", "swarm", "10.0.9.0/24", "no"],
                    ["bbbbbbbbbbbb", "back", "overlay", "swarm", "10.1.0.0/24", "yes"]]


def test_networks_ports_modes_and_rollback_through_the_gateway_app(capsys: pytest.CaptureFixture[str]) -> None:
    from fastapi.testclient import TestClient

    from shoal.store import txn as t
    from shoal.store.local import LocalStore
    from tests.service.gateway_kit import gateway_app

    store = LocalStore()
    app = gateway_app(store)
    with TestClient(app) as gw:
        assert main(["network", "create", "--subnet", "10.5.0.0/24", "back"], http=gw) == 0
        net_id = capsys.readouterr().out.strip()
        assert main(["network", "create", "front"], http=gw) == 0
        capsys.readouterr()
        assert main(["service", "create", "--detach", "--name", "web", "--network", "back", "--publish", "8080:80",
                     "--update-order", "start-first", "--", "sleep", "300"], http=gw) == 0
        sid = capsys.readouterr().out.strip()
        stored = store.mem.get("service", sid)
        assert stored["spec"]["task"]["networks"] == [{"target": net_id, "aliases": []}]
        assert stored["spec"]["update_config"]["order"] == "start-first"
        assert main(["service", "create", "--detach", "--name", "api", "-p", "8080:81", "--", "x"], http=gw) == 1
        assert "port 8080/tcp is already in use by service 'web'" in capsys.readouterr().err
        assert main(["service", "update", "--detach", "--network-rm", "back", "--network-add", "front", "--force",
                     "--replicas", "3", "web"], http=gw) == 0
        capsys.readouterr()
        stored = store.mem.get("service", sid)
        assert stored["spec"]["task"]["force_update"] == 1 and stored["spec_version"] == 2
        front = store.mem.by_name("network", "front")
        assert front is not None and [n["target"] for n in stored["spec"]["task"]["networks"]] == [front["id"]]
        assert main(["network", "rm", "front"], http=gw) == 1
        assert "network 'front' is in use by service 'web'" in capsys.readouterr().err
        assert main(["service", "rollback", "--detach", "web"], http=gw) == 0
        stored = store.mem.get("service", sid)
        assert stored["spec"]["mode"]["replicated"]["replicas"] == 1
        assert stored["update_status"]["state"] == "rollback_started"
        assert main(["service", "create", "--detach", "--name", "batch", "--mode", "replicated-job", "--replicas", "5",
                     "--max-concurrent", "2", "--", "true"], http=gw) == 0
        capsys.readouterr()
        assert main(["service", "ls"], http=gw) == 0
        lines = capsys.readouterr().out.splitlines()
        assert "replicated job  0/5 (0/5 completed)" in lines[1]
        assert main(["network", "ls"], http=gw) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE", "SUBNET", "ATTACHABLE"]
        assert out[1].split()[1:] == ["back", "overlay", "swarm", "10.5.0.0/24", "no"]
        assert main(["network", "rm", "back", "front"], http=gw) == 1  # the rollback attached `back` again
        captured = capsys.readouterr()
        assert captured.out == "front\n" and "network 'back' is in use by service 'web'" in captured.err

        node = {"id": "n" * 25, "spec": {"labels": {}, "role": "worker", "availability": "active"},
                "role": "worker", "status": {"state": "ready"}, "description": {"hostname": "host-a"}}

        async def seed() -> None:
            await store.txn([t.create("node", node)])

        gw.portal.call(seed)  # type: ignore[union-attr]
        assert main(["node", "update", "--availability", "drain", "--label-add", "zone=a", "host-a"], http=gw) == 0
        assert store.mem.get("node", "n" * 25)["spec"]["availability"] == "drain"
        assert main(["node", "rm", "host-a"], http=gw) == 1
        assert "node 'host-a' is ready and cannot be removed" in capsys.readouterr().err
        assert main(["node", "rm", "--force", "host-a"], http=gw) == 0
        assert store.mem.find("node", "n" * 25) is None
        assert main(["cluster", "update", "--heartbeat-period", "10s"], http=gw) == 0  # version 0: created
        assert store.mem.get("cluster", "default")["spec"]["dispatcher"]["heartbeat_period"] == 10.0
        assert main(["cluster", "update", "--heartbeat-period", "20s"], http=gw) == 0  # at its version
        assert store.mem.get("cluster", "default")["spec"]["dispatcher"]["heartbeat_period"] == 20.0
        assert main(["cluster", "update", "--heartbeat-period", "0s"], http=gw) == 1
        assert "heartbeat_period must be greater than 0" in capsys.readouterr().err


def test_network_attach_and_detach_through_the_gateway_app(capsys: pytest.CaptureFixture[str]) -> None:
    from fastapi.testclient import TestClient

    from shoal.store import txn as t
    from shoal.store.local import LocalStore
    from tests.service.gateway_kit import gateway_app

    args = build_parser().parse_args(["network", "attach", "--node", "host-a", "--container", "c1", "--alias", "db",
                                      "--alias", "cache", "shared"])
    assert networks.attach_request(args) == {"node_id": "host-a", "container_id": "c1", "aliases": ["db", "cache"]}
    store = LocalStore()
    app = gateway_app(store)
    node = {"id": "n" * 25, "spec": {"labels": {}, "role": "worker", "availability": "active"},
            "role": "worker", "status": {"state": "ready"}, "description": {"hostname": "host-a"}}
    with TestClient(app) as gw:
        async def seed() -> None:
            await store.txn([t.create("node", node)])

        gw.portal.call(seed)  # type: ignore[union-attr]
        assert main(["network", "create", "plain"], http=gw) == 0
        assert main(["network", "create", "--attachable", "shared"], http=gw) == 0
        capsys.readouterr()
        assert main(["network", "attach", "--node", "host-a", "plain"], http=gw) == 1
        assert "network 'plain' is not attachable" in capsys.readouterr().err
        assert main(["network", "attach", "--node", "host-a", "--container", "c1", "shared"], http=gw) == 0
        tid = capsys.readouterr().out.strip()
        task = store.mem.get("task", tid)
        assert task["node_id"] == "n" * 25 and task["spec"]["attachment"] == {"container_id": "c1"}
        assert main(["network", "rm", "shared"], http=gw) == 1
        assert f"in use by task {tid}" in capsys.readouterr().err
        assert main(["network", "detach", "shared", tid, "nope"], http=gw) == 1
        captured = capsys.readouterr()
        assert captured.out == f"{tid}\n" and "attachment 'nope' not found on network 'shared'" in captured.err
        assert store.mem.get("task", tid)["desired_state"] == "remove"


# ---- identity, swarm, env (issue 9) ---------------------------------------------------------------------------
def write_bundle(d: Path, signer: Signer | None = None) -> Path:
    """An admin client bundle in Docker's layout (ca.pem, cert.pem, key.pem)."""
    signer = signer or Signer.new()
    tmp = signer.issue_dir(d / "issued", node_id="admin-1", role=pki.ADMIN, component="admin")
    d.mkdir(parents=True, exist_ok=True)
    (d / "ca.pem").write_bytes((tmp / pki.ROOT_FILE).read_bytes())
    (d / "cert.pem").write_bytes((tmp / pki.CERT_FILE).read_bytes())
    (d / "key.pem").write_bytes((tmp / pki.KEY_FILE).read_bytes())
    return d


def test_without_a_bundle_the_cli_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SHOAL_CERT_PATH", str(tmp_path / "nothing"))
    assert main(["--url", "https://127.0.0.1:9", "node", "ls"]) == 1
    err = capsys.readouterr().err
    assert "no admin client certificate" in err and "shoal env" in err and "SHOAL_CERT_PATH" in err


def test_the_bundle_comes_from_the_data_dir_when_no_cert_path(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_CERT_PATH", raising=False)
    monkeypatch.setenv("SHOAL_DATA_DIR", str(tmp_path))
    assert identity.cert_path() == tmp_path / "client"
    monkeypatch.setenv("SHOAL_CERT_PATH", "/elsewhere")
    assert identity.cert_path() == Path("/elsewhere")
    write_bundle(tmp_path / "client")
    creds = identity.load_bundle(tmp_path / "client")
    assert creds.identity.role == pki.ADMIN and creds.identity.component == "admin"


def test_a_plaintext_url_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SHOAL_CERT_PATH", str(write_bundle(tmp_path / "client")))
    assert main(["--url", "http://127.0.0.1:9", "node", "ls"]) == 1
    assert "not https" in capsys.readouterr().err


def tokens_handler(seen: list[Any]) -> Handler:
    tokens = {"worker": "SWMTKN-1-abc-wrk", "manager": "SWMTKN-1-abc-mgr", "join_addr": "10.0.0.5:4325"}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.content))
        if request.url.path == "/v1/swarm/join-tokens/rotate":
            tokens["worker"] = "SWMTKN-1-abc-new"
        return httpx.Response(200, json=tokens)

    return handler


def test_swarm_join_token(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Any] = []
    assert main(["--url", "https://10.0.0.5:4242", "swarm", "join-token", "worker"],
                http=mock(tokens_handler(seen))) == 0
    assert capsys.readouterr().out == ("To add a worker to this swarm, run the following command:\n\n"
                                       "    shoal swarm join --token SWMTKN-1-abc-wrk 10.0.0.5:4325\n\n")
    assert main(["swarm", "join-token", "manager", "-q"], http=mock(tokens_handler(seen))) == 0
    assert capsys.readouterr().out == "SWMTKN-1-abc-mgr\n"
    assert seen == [("GET", "/v1/swarm/join-tokens", b"")] * 2


def test_swarm_join_token_rotate(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Any] = []
    assert main(["swarm", "join-token", "--rotate", "worker"], http=mock(tokens_handler(seen))) == 0
    out = capsys.readouterr().out
    assert out.startswith("Successfully rotated worker join token.\n\n") and "SWMTKN-1-abc-new" in out
    assert seen == [("POST", "/v1/swarm/join-tokens/rotate", b'{"role":"worker"}')]
    assert main(["swarm", "join-token", "admin"], http=mock(tokens_handler(seen))) == 2


def test_swarm_update_is_cluster_update_with_cert_expiry(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Any] = []
    handler = cluster_update_handler(seen)

    assert main(["swarm", "update", "--cert-expiry", "90d"], http=mock(handler)) == 0
    assert main(["cluster", "update", "--cert-expiry", "2h", "--heartbeat-period", "3s"], http=mock(handler)) == 0
    assert seen == [("PATCH", "/v1/cluster", {"ca_config": {"node_cert_expiry": 90 * 86400.0}, "version": 7}),
                    ("PATCH", "/v1/cluster", {"dispatcher": {"heartbeat_period": "3s"},
                                              "ca_config": {"node_cert_expiry": 7200.0}, "version": 7})]
    capsys.readouterr()
    for bad in ("30m", "soon", "0.5h"):
        assert main(["swarm", "update", "--cert-expiry", bad], http=mock(handler)) == 1
        assert "--cert-expiry" in capsys.readouterr().err
    assert len(seen) == 2


def test_env_prints_the_exports_of_the_local_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env", "--data-dir", str(tmp_path)]) == 1
    assert "no running cluster" in capsys.readouterr().err
    (tmp_path / "supervisor.json").write_text(json.dumps({"pid": 1, "gateway_url": "https://127.0.0.1:4242"}))
    assert main(["env", "--data-dir", str(tmp_path)]) == 1
    assert "no admin client certificate" in capsys.readouterr().err
    bundle = write_bundle(tmp_path / "client").resolve()
    assert main(["env", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == ["export SHOAL_URL=https://127.0.0.1:4242", f"export SHOAL_CERT_PATH={bundle}",
                         "export DOCKER_HOST=tcp://127.0.0.1:4242", "export DOCKER_TLS_VERIFY=1",
                         f"export DOCKER_CERT_PATH={bundle}"]


def unlock_key_handler(seen: list[Any], key: str) -> Handler:
    state = {"key": key}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        if request.url.path == "/v1/swarm/unlock-key/rotate":
            if not state["key"]:
                return httpx.Response(409, json={"message": "ca: autolock is off", "code": "conflict"})
            state["key"] = "SWMKEY-1-rotated"
        if request.url.path == "/v1/cluster":
            return httpx.Response(200, json={"id": "default", "spec": {}})
        return httpx.Response(200, json={"unlock_key": state["key"]})

    return handler


def test_swarm_update_autolock_prints_the_unlock_key(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Any] = []
    assert main(["swarm", "update", "--autolock=true"], http=mock(unlock_key_handler(seen, "SWMKEY-1-abc"))) == 0
    out = capsys.readouterr().out
    assert out.startswith("cluster updated\n") and "shoal swarm unlock" in out and "    SWMKEY-1-abc\n" in out
    assert seen == [("GET", "/v1/cluster"), ("PATCH", "/v1/cluster"), ("GET", "/v1/swarm/unlock-key")]
    assert main(["swarm", "update", "--autolock", "false"], http=mock(unlock_key_handler(seen, ""))) == 0
    assert capsys.readouterr().out == "cluster updated\n" and seen[-1] == ("PATCH", "/v1/cluster")
    assert main(["swarm", "update", "--autolock", "maybe"], http=mock(unlock_key_handler(seen, ""))) == 2


def test_swarm_unlock_key_shows_and_rotates(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Any] = []
    assert main(["swarm", "unlock-key", "-q"], http=mock(unlock_key_handler(seen, "SWMKEY-1-abc"))) == 0
    assert capsys.readouterr().out == "SWMKEY-1-abc\n"
    assert main(["swarm", "unlock-key", "--rotate"], http=mock(unlock_key_handler(seen, "SWMKEY-1-abc"))) == 0
    out = capsys.readouterr().out
    assert out.startswith("Successfully rotated manager unlock key.") and "SWMKEY-1-rotated" in out
    assert main(["swarm", "unlock-key"], http=mock(unlock_key_handler(seen, ""))) == 1
    assert "autolock is off" in capsys.readouterr().err
    assert main(["swarm", "unlock-key", "--rotate"], http=mock(unlock_key_handler(seen, ""))) == 1


def test_swarm_unlock_refuses_a_malformed_key_before_calling_anyone(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("SWMTKN-1-not-an-unlock-key\n"))
    assert main(["swarm", "unlock", "--socket", "/nonexistent/unlock.sock"]) == 1
    assert "invalid unlock key" in capsys.readouterr().err
