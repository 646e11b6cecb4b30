"""The CLI decodes large answers with the cyclic garbage collector paused (`shoal.heap.gc_paused`), and
gives it back as it found it, whatever happens."""

from __future__ import annotations

import gc
from typing import Any

import httpx
import pytest

from shoal.cli import client as cli_client
from shoal.cli.client import CliError, Gateway
from shoal.heap import gc_paused
from shoal.store import wire


def _gateway(handler: Any) -> Gateway:
    return Gateway("https://gw", http=httpx.Client(transport=httpx.MockTransport(handler), base_url="https://gw"))


def test_answers_and_streams_decode_with_the_collector_paused(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    loads = wire.loads

    def spy(data: bytes | str) -> Any:
        seen.append(gc.isenabled())
        return loads(data)

    monkeypatch.setattr(cli_client.wire, "loads", spy)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("accept") == wire.NDJSON:
            return httpx.Response(200, content=b'{"id":"a"}\n{"id":"b"}\n')
        return httpx.Response(200, json={"items": [{"id": "a", "n": 1.5}]})

    gw = _gateway(handler)
    assert gc.isenabled()
    assert gw.items("/v1/tasks") == [{"id": "a", "n": 1.5}]
    assert [r["id"] for r in gw.stream_records("/v1/tasks", {}, "task list")] == ["a", "b"]
    assert seen == [False, False, False] and gc.isenabled()


def test_the_collector_comes_back_after_an_error_and_stays_off_if_it_was() -> None:
    gw = _gateway(lambda request: httpx.Response(200, content=b"not json"))
    with pytest.raises(CliError):
        gw.get("/v1/tasks")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
