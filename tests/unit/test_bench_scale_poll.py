"""bench/scale.py's progress poll survives a loaded gateway: a 503 or a timeout is "no answer this time", not a
crash (it crashed with KeyError 'items' on an error body under load, losing the run)."""

from __future__ import annotations

from typing import Any

import httpx

from bench.scale import running_total


class _Cluster:
    def __init__(self, handler: Any) -> None:
        self.admin = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://gateway")


def test_the_poll_sums_running_and_desired_replicas() -> None:
    items = [{"status": {"running": 3, "desired": 4}}, {"status": {"running": 2, "desired": 2}}]
    assert running_total(_Cluster(lambda r: httpx.Response(200, json={"items": items}))) == (5, 6)  # type: ignore[arg-type]


def test_an_error_answer_or_a_timeout_is_no_answer() -> None:
    busy = _Cluster(lambda r: httpx.Response(503, json={"message": "store unavailable", "code": "unavailable"}))
    assert running_total(busy) is None  # type: ignore[arg-type]

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)
    assert running_total(_Cluster(timeout)) is None  # type: ignore[arg-type]
