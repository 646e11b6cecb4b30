"""The e2e clusters: `cluster`, a fresh one per test (for tests that kill processes, stop agents, rotate roots or
change the data dir), and `shared`, one session-wide cluster for the tests that only create their own objects
and read (a start costs ~12 s of the 2 cores; the shared one starts once).

A test on `shared` gets it as it found it at its start: what it created (services, networks, secrets, configs,
nodes) is removed after it, the removed services' tasks stopped and the nodes' specs put back; a test during
which a cluster process restarted fails at teardown (it broke the cluster for the others: give it `cluster`).
The tests that take `shared` run one after another (collection moves them together, in their modules' order)
and the cluster stops after the last of them, so it never runs beside another test's cluster."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Cluster, eventually, items, pid_alive, running_cluster, together

SHARED = "shared_cluster"
_RUNS: list[Generator[Cluster, None, None]] = []
KINDS = ("services", "networks", "secrets", "configs", "nodes")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from running_cluster(tmp_path / "shoal")  # a cluster that fails to become healthy is still torn down


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    run = running_cluster(tmp_path_factory.mktemp("shared") / "shoal", agents=2, ready_nodes=True)
    _RUNS.append(run)
    try:
        yield next(run)
    finally:
        run.close()  # stops it, unless pytest_runtest_teardown already did


@pytest.fixture
def shared(shared_cluster: Cluster) -> Iterator[Cluster]:
    """The session's cluster, tidied after the test (see the module's docstring)."""
    yield from tidied(shared_cluster)


def ids(c: Cluster, kind: str) -> dict[str, dict[str, Any]]:
    r = c.http.get(f"/v1/{kind}")
    assert r.status_code == 200, r.text
    return {x["id"]: x for x in items(r.json())}


def tidied(c: Cluster) -> Iterator[Cluster]:
    assert c.sup.children["gateway"].alive(), "the shared cluster was stopped: a test took it out of order"
    before = {kind: set(ids(c, kind)) for kind in KINDS}
    node_specs = {nid: n["spec"] for nid, n in ids(c, "nodes").items()}
    restarts = {name: child.restarts for name, child in c.sup.children.items()}
    yield c
    new = {kind: set(ids(c, kind)) - before[kind] for kind in KINDS}
    for sid in new["services"]:
        r = c.http.delete(f"/v1/services/{sid}")
        assert r.status_code in (200, 204, 404), r.text

    def stopped() -> bool:
        return not any(t["service_id"] in new["services"] and (t["desired_state"] == "running" or (
            t["status"]["state"] == "running" and pid_alive(t["status"].get("pid")))) for t in c.tasks())

    eventually(stopped, 30, "the tasks of the services the test left to stop")
    for kind in ("secrets", "configs", "networks"):
        for oid in new[kind]:  # a network is refused (409) until the tasks that used it are gone
            path = f"/v1/{kind}/{oid}"

            def removed(path: str = path) -> bool:
                return c.http.delete(path).status_code in (200, 204, 404)

            eventually(removed, 30, f"the test's {path} removed")
    for nid in new["nodes"]:
        c.http.delete(f"/v1/nodes/{nid}", params={"force": "true"})
    for nid, node in ids(c, "nodes").items():  # labels, availability… as they were
        if nid in node_specs and node["spec"] != node_specs[nid]:
            r = c.http.patch(f"/v1/nodes/{nid}", json={"version": node["meta"]["version"], "spec": node_specs[nid]})
            assert r.status_code == 200, r.text
    restarted = {name: child.restarts - restarts.get(name, 0) for name, child in c.sup.children.items()
                 if child.restarts != restarts.get(name, 0)}
    assert restarted == {}, f"a process of the shared cluster restarted during the test: {restarted}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the shared cluster run together, where the first of them was collected."""
    items[:] = together(items, uses_shared)


def uses_shared(item: pytest.Item) -> bool:
    return SHARED in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the shared cluster after the last test that uses it, not at the end of the session."""
    if not uses_shared(item):
        return
    later = item.session.items[item.session.items.index(item) + 1:]
    if not any(uses_shared(it) for it in later):
        while _RUNS:
            _RUNS.pop().close()
