"""shoal.metrics on prometheus_client: one registry per app, HTTP metrics by route template, the exposition
parsed by prometheus_client's own parser."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from shoal.metrics import Registry
from shoal.service import create_subsystem_app


class Tiny:
    """A subsystem that does nothing but count: enough for the shared shell (`create_subsystem_app`)."""

    def __init__(self) -> None:
        self.metrics = Registry()
        self._stop = asyncio.Event()

    async def run(self) -> None:
        await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()

    def ready(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {}


def app_of(sub: Tiny) -> TestClient:
    router = APIRouter()

    @router.get("/v1/things/{ref}")
    async def thing(ref: str) -> dict[str, str]:
        sub.metrics.inc("things_read_total", help="things read")
        return {"ref": ref}

    return TestClient(create_subsystem_app("tiny", sub, routers=[router]))


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(text: str, name: str, **labels: str) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def test_two_apps_in_one_process_count_separately() -> None:
    a, b = Tiny(), Tiny()
    assert a.metrics.registry is not b.metrics.registry
    with app_of(a) as ca, app_of(b) as cb:
        for i in range(3):
            assert ca.get(f"/v1/things/{i}").status_code == 200
        assert cb.get("/v1/things/x").status_code == 200
        ta, tb = ca.get("/metrics").text, cb.get("/metrics").text
    assert sample(ta, "shoal_things_read_total") == 3.0
    assert sample(tb, "shoal_things_read_total") == 1.0
    assert a.metrics.value("things_read_total") == 3.0 and b.metrics.value("things_read") == 1.0
    assert sample(ta, "shoal_http_requests_total", route="/v1/things/{ref}", status="200") == 3.0
    assert sample(tb, "shoal_http_requests_total", route="/v1/things/{ref}", status="200") == 1.0


def test_http_metrics_are_labelled_by_route_template_never_the_raw_path() -> None:
    sub = Tiny()
    with app_of(sub) as c:
        for i in range(20):
            c.get(f"/v1/things/thing-{i}")
            c.get(f"/no/such/path/{i}")
        c.request("BREW", "/v1/things/pot")
        text = c.get("/metrics").text
    fams = families(text)
    routes = {s.labels["route"] for s in fams["shoal_http_requests"].samples}
    assert routes == {"/v1/things/{ref}", "<unmatched>"}  # (the scrape itself is counted after it renders)
    assert sample(text, "shoal_http_requests_total", route="<unmatched>", status="404") == 20.0
    assert sample(text, "shoal_http_requests_total", method="OTHER", route="/v1/things/{ref}") == 1.0
    assert fams["shoal_http_request_duration_seconds"].type == "histogram"
    assert sample(text, "shoal_http_request_duration_seconds_count", method="GET", route="/v1/things/{ref}") == 20.0
    assert not any(s.labels.get("route", "").startswith("/v1/things/thing-")
                   for f in fams.values() for s in f.samples)


def test_counters_gauges_histograms_and_their_exposition() -> None:
    m = Registry()
    m.inc("passes", help="planning passes")
    m.inc("passes")
    m.inc("transitions_total", labels={"from": "running", "to": "failed"})
    m.gauge("active", lambda: 1.0, "1 while active")
    m.gauge("broken", lambda: 1 / 0, "a callback that fails")
    m.observe("pass_duration_seconds", 0.003, "one pass")
    with m.time("pass_duration_seconds"):
        pass
    text = m.render()
    fams = families(text)
    assert fams["shoal_passes"].type == "counter" and sample(text, "shoal_passes_total") == 2.0
    assert sample(text, "shoal_transitions_total", **{"from": "running", "to": "failed"}) == 1.0
    assert sample(text, "shoal_active") == 1.0
    assert "shoal_broken" in fams  # a failing gauge callback never fails the scrape
    assert fams["shoal_pass_duration_seconds"].type == "histogram" and m.count("pass_duration_seconds") == 2
    assert sample(text, "shoal_pass_duration_seconds_bucket", le="0.005") == 2.0
    assert "_created" not in text
    with pytest.raises(ValueError):
        m.inc("passes", -1)
