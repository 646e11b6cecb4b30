"""`shoal service ps` reads `GET /v1/tasks` as one NDJSON stream per service (issue 13), decoding tasks as they
arrive, and follows a `Shoal-Next` header should the gateway cut the answer into pages."""

from __future__ import annotations

import json

import httpx
import pytest

from shoal.cli import main


def _task(i: str, n: int) -> dict[str, object]:
    return {"id": i, "service_id": "s", "service_name": "web", "slot": n, "desired_state": "running",
            "status": {"state": "running", "timestamp": 1.0}}


def test_service_ps_streams_ndjson_and_follows_next(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[dict[str, str], str]] = []
    pages = {"": (["a" * 25, "b" * 25], "tok1"), "tok1": (["c" * 25], None)}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/nodes":
            return httpx.Response(200, json={"items": []})
        assert request.url.path == "/v1/tasks"
        params = dict(request.url.params)
        seen.append((params, request.headers["accept"]))
        ids, nxt = pages[params.get("next", "")]
        body = b"".join(json.dumps(_task(i, n)).encode() + b"\n" for n, i in enumerate(ids, 1))
        headers = {"content-type": "application/x-ndjson", **({"shoal-next": nxt} if nxt else {})}
        return httpx.Response(200, content=body, headers=headers)

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://gateway.test")
    assert main(["service", "ps", "-q", "web"], http=http) == 0
    assert capsys.readouterr().out.split() == ["a" * 25, "b" * 25, "c" * 25]
    assert [p.get("next") for p, _ in seen] == [None, "tok1"]
    assert all(p["service"] == "web" and "limit" not in p and accept == "application/x-ndjson"
               for p, accept in seen)
    assert all(p["fields"] == "id" for p, _ in seen)  # -q shows ids: only ids come
    seen.clear()
    assert main(["service", "ps", "web"], http=http) == 0
    assert [line.split()[:2] for line in capsys.readouterr().out.splitlines()] == [
        ["ID", "NAME"], ["a" * 12, "web.1"], ["c" * 12, "\\_"], ["b" * 12, "web.2"]]  # c: slot 1's history
    assert [p.get("next") for p, _ in seen] == [None, "tok1"]
    assert all(set(p["fields"].split(",")) >= {"id", "slot", "status", "node_id", "desired_state"} and
               "spec" not in p["fields"].split(",") for p, _ in seen)  # only what the table shows


def test_service_ps_reports_a_line_that_is_not_json(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"id": "x"}\n{not json\n',
                              headers={"content-type": "application/x-ndjson"})

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://gateway.test")
    assert main(["service", "ps", "web"], http=http) == 1
    assert "task list stream" in capsys.readouterr().err
