"""The `shoal` CLI without a cluster: flags -> ServiceSpec JSON, table formatting, error reporting, and the
read-modify-write retry of `service scale` (httpx.MockTransport, or the gateway app behind a TestClient)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from shoal.cli import build_parser, commands, main, table
from shoal.models.specs import ServiceSpec

pytestmark = pytest.mark.timeout(30)

Handler = Callable[[httpx.Request], httpx.Response]


def spec_of(*argv: str) -> dict[str, Any]:
    args = build_parser().parse_args(["service", "create", *argv])
    return commands.build_spec(args)


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
    with pytest.raises(commands.CliError) as e:
        spec_of(*argv)
    assert needle in str(e.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("64M", 64 << 20), ("64m", 64 << 20), ("512MiB", 512 << 20), ("1.5g", 3 << 29), ("4096", 4096),
    ("10k", 10 << 10), ("2GB", 2 << 30), ("100b", 100),
])
def test_parse_bytes(text: str, expected: int) -> None:
    assert commands.parse_bytes(text) == expected


def test_parse_scale() -> None:
    assert commands.parse_scale(["web=5", "api=0"]) == [("web", 5), ("api", 0)]
    for bad in ("web", "web=", "=3", "web=-1", "web=two"):
        with pytest.raises(commands.CliError, match="invalid scale specifier"):
            commands.parse_scale([bad])


def test_url_from_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_URL", raising=False)
    assert build_parser().parse_args(["service", "ls"]).url == "http://127.0.0.1:4242"
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

    assert main(["service", "scale", "web=5"], http=mock(handler)) == 0
    assert seen == [("GET", "/v1/services/web"), ("PUT", 7), ("GET", "/v1/services/web"), ("PUT", 9)]
    assert capsys.readouterr().out == "web scaled to 5\n"


def test_scale_gives_up_after_repeated_conflicts(capsys: pytest.CaptureFixture[str]) -> None:
    puts = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=SVC)
        puts.append(1)
        return httpx.Response(409, json={"message": "service 'web' is at version 8, not 7"})

    assert main(["service", "scale", "web=5"], http=mock(handler)) == 1
    assert len(puts) == commands.SCALE_ATTEMPTS
    assert "error: service 'web' is at version 8, not 7" in capsys.readouterr().err


def test_scale_does_not_retry_other_errors(capsys: pytest.CaptureFixture[str]) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if request.method == "GET":
            return httpx.Response(200, json=SVC)
        return httpx.Response(400, json={"message": "invalid request: spec.mode.replicated.replicas: too many"})

    assert main(["service", "scale", "web=5"], http=mock(handler)) == 1
    assert calls == ["GET", "PUT"]
    assert "spec.mode.replicated.replicas" in capsys.readouterr().err


def test_bad_scale_specifier_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    assert main(["service", "scale", "web=5", "api"], http=mock(handler)) == 1
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

    from services.gateway.app import create_app
    from services.gateway.settings import GatewaySettings
    from shoal.store.local import LocalStore

    def members(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    store = LocalStore()
    app = create_app(GatewaySettings(store_members=["http://m1"]), store=store,
                     http=httpx.AsyncClient(transport=httpx.MockTransport(members)))
    with TestClient(app) as gw:
        assert main(["service", "create", "--name", "web", "--replicas", "2", "--reserve-memory", "64M", "--",
                     "sleep", "300"], http=gw) == 0
        sid = capsys.readouterr().out.strip()
        assert store.mem.get("service", sid)["spec"]["task"]["resources"]["reservations"]["memory_bytes"] == 64 << 20
        assert main(["service", "create", "--name", "WEB", "--", "x"], http=gw) == 1
        assert capsys.readouterr().err == "error: service 'WEB' already exists\n"
        assert main(["service", "scale", "web=4"], http=gw) == 0
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
