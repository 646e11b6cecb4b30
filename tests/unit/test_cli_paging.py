"""`shoal service ps` pages through `GET /v1/tasks` (issue 13): it follows `next` until the last page."""

from __future__ import annotations

import httpx
import pytest

from shoal.cli import main


def test_service_ps_follows_next_tokens_to_the_last_page(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[dict[str, str]] = []
    pages = {"": (["a" * 25, "b" * 25], "tok1"), "tok1": (["c" * 25], None)}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/nodes":
            return httpx.Response(200, json={"items": []})
        assert request.url.path == "/v1/tasks"
        params = dict(request.url.params)
        seen.append(params)
        ids, nxt = pages[params.get("next", "")]
        items = [{"id": i, "service_id": "s", "service_name": "web", "slot": n, "desired_state": "running",
                  "status": {"state": "running", "timestamp": 1.0}} for n, i in enumerate(ids, 1)]
        return httpx.Response(200, json={"revision": 3, "items": items, "next": nxt})

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://gateway.test")
    assert main(["service", "ps", "-q", "web"], http=http) == 0
    assert capsys.readouterr().out.split() == ["a" * 25, "b" * 25, "c" * 25]
    assert [p.get("next") for p in seen] == [None, "tok1"]
    assert all(p["service"] == "web" and int(p["limit"]) > 0 for p in seen)
