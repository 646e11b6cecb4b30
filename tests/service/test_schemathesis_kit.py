"""The schemathesis suites' acceptance rule (tests/service/schemathesis_kit.py) against the gateway's real
refusals: a short id prefix that matches several services is a rule against the cluster's state, which no JSON
Schema can state, whichever lookup path answers it (the store's prefix page or the whole-kind scan). The soak
run met it only when two random service ids happened to share a first character."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway import core, lookup
from shoal.errors import InvalidArgument
from shoal.store import txn as t
from shoal.store.local import LocalStore
from tests.service.schemathesis_kit import BEYOND_JSON_SCHEMA


def ambiguity_messages() -> list[str]:
    async def main() -> list[str]:
        store = LocalStore()
        services = [{"id": f"c{i}aaaaaaaaaaaaaaaaaaaaaaa", "spec": {"name": f"s{i}"}} for i in range(2)]
        await store.txn([t.create("service", s) for s in services])
        out = []
        with pytest.raises(InvalidArgument) as paged:
            await lookup.by_prefix(store, "service", "c", "service")
        out.append(str(paged.value))
        with pytest.raises(InvalidArgument) as scanned:
            core.resolve(services, "c", "service", lambda o: [o["spec"]["name"]])
        out.append(str(scanned.value))
        return out
    return asyncio.run(main())


def test_an_ambiguous_id_prefix_is_accepted_as_a_rule_beyond_json_schema() -> None:
    for message in ambiguity_messages():
        assert "is ambiguous" in message and BEYOND_JSON_SCHEMA.search(message), message
