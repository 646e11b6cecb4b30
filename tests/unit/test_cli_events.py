"""`shoal events` through the gateway app (TestClient over a LocalStore): the changes made by other commands,
in order, as Docker-like lines or JSON; `--filter type=/event=`; a compacted `--since` warns on stderr; bad
filters are refused (locally, or with the gateway's message). Who wrote each change (the actor) is proven over a
real raftstore member in tests/service/test_gateway_events.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shoal.cli import events, main
from shoal.store.local import LocalStore
from shoal.store.memory import MemoryStore

pytestmark = pytest.mark.timeout(30)
LINE = re.compile(r"^2026-12-07T00:00:00\.000000Z service (create|update|delete) ([a-z0-9]{25}) "
                  r"\(name=web, actor=unknown, rev=(\d+)\)$")


@pytest.fixture
def store() -> LocalStore:
    return LocalStore(MemoryStore(history=4), now=lambda: 1796601600.0)  # 2026-12-07T00:00:00Z


@pytest.fixture
def gw(store: LocalStore) -> Iterator[TestClient]:
    members = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    with TestClient(create_app(GatewaySettings(store_members=["http://m1"]), store=store, http=members)) as c:
        yield c


def changes(gw: TestClient) -> None:
    assert main(["service", "create", "--detach", "--name", "web", "--", "sleep", "300"], http=gw) == 0
    assert main(["service", "scale", "--detach", "web=3"], http=gw) == 0
    assert main(["service", "rm", "web"], http=gw) == 0


def test_events_prints_the_changes_in_order_like_docker(gw: TestClient, store: LocalStore,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    start = store.mem.revision
    changes(gw)
    capsys.readouterr()
    until = str(store.mem.revision)
    assert main(["events", "--since", str(start), "--until", until, "--filter", "type=service"], http=gw) == 0
    lines = capsys.readouterr().out.splitlines()
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    assert [m.group(1) for m in matches if m] == ["create", "update", "delete"]
    assert len({m.group(2) for m in matches if m}) == 1
    revs = [int(m.group(3)) for m in matches if m]
    assert revs == sorted(revs) and revs[0] > start

    assert main(["events", "--since", str(start), "--until", until, "--filter", "type=service",
                 "--filter", "event=update", "--json"], http=gw) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["kind"], r["action"], r["name"], r["rev"]) for r in recs] == [("service", "update", "web", revs[1])]
    assert set(recs[0]) == {"rev", "time", "kind", "action", "id", "name", "actor"}


def test_a_compacted_since_warns_and_goes_on_from_the_oldest_retained(gw: TestClient, store: LocalStore,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(6):
        assert main(["service", "create", "--detach", "--name", f"s{i}", "--", "true"], http=gw) == 0
    capsys.readouterr()
    assert main(["events", "--since", "0", "--until", str(store.mem.revision)], http=gw) == 0
    out, err = capsys.readouterr()
    assert err.startswith("warning: events after revision 0 up to ") and "no longer retained" in err
    assert [line.split(" ")[1:3] for line in out.splitlines()] == [["service", "create"]] * 4


def test_bad_filters_are_refused_saying_what_to_use(gw: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "--filter", "colour=red"], http=gw) == 1
    assert "expected type=KIND or event=ACTION" in capsys.readouterr().err
    assert main(["events", "--filter", "type=servce", "--until", "0"], http=gw) == 1
    assert "unknown kind servce; use one of" in capsys.readouterr().err


def test_parse_filters_maps_docker_names() -> None:
    assert events.parse_filters(["type=service", "event=create", "TYPE=node", "action=delete"]) == {
        "kind": ["service", "node"], "action": ["create", "delete"]}
