"""Schemathesis over the gateway's OpenAPI schema, in process (the real servers are mutual TLS; the app is the
same): every operation with generated input, checked for no 5xx and answers matching the documented status
codes, content types, headers and the `{message, code}` error schema. The raftstore members and the CA behind
the gateway answer every request with a 400 (a refusal it must relay, not turn into a 5xx). A short run here
(SHOAL_SCHEMATHESIS_EXAMPLES, default 8 per operation); the soak tier runs it with many more.

Every check schemathesis has runs, `positive_data_acceptance` narrowed only to the rules between fields that
no JSON Schema can state (tests/service/schemathesis_kit.py). The mock members refuse with a 409 (a conflict
a real member may answer), which the gateway must relay as itself."""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shoal.store.local import LocalStore
from tests.service.schemathesis_kit import ADDITIONAL, EXCLUDED

pytestmark = pytest.mark.timeout(600)
EXAMPLES = int(os.environ.get("SHOAL_SCHEMATHESIS_EXAMPLES", "8"))


def refusing(request: httpx.Request) -> httpx.Response:
    return httpx.Response(409, json={"message": "refused by the test's member", "code": "conflict"})


def gateway() -> FastAPI:
    mock = httpx.MockTransport(refusing)
    return create_app(GatewaySettings(store_members=["http://store-1:4301"], ca_urls=["http://ca-1:4400"],
                                      ready_probe_interval=0.05),
                      store=LocalStore(), http=httpx.AsyncClient(transport=mock),
                      ca_http=httpx.AsyncClient(transport=mock))


def bounded(case: schemathesis.Case) -> schemathesis.Case:
    """The event stream follows the cluster until the client leaves; here it is asked to end at once (`until`
    at or before its start), so every generated request gets a whole answer."""
    if case.path == "/v1/events":
        case.query = {**(case.query or {}), "until": 0}
    return case


schema = schemathesis.openapi.from_asgi("/openapi.json", gateway())


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_gateway_conforms_to_its_schema(case: schemathesis.Case) -> None:
    bounded(case).call_and_validate(excluded_checks=EXCLUDED, additional_checks=ADDITIONAL)


@pytest.mark.soak
@schema.parametrize()
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_gateway_conforms_to_its_schema_at_length(case: schemathesis.Case) -> None:
    bounded(case).call_and_validate(excluded_checks=EXCLUDED, additional_checks=ADDITIONAL)
