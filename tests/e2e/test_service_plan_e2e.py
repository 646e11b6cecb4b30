"""Dry-run plans against what the same change then really does, on a real `shoal up` cluster (2 agents,
process runtime, one node labelled zone=a): `shoal service plan --replicas 4` with a constraint that fits only
that node plans 2 creates there, and the scale that follows creates exactly those slots there; an update with
parallelism 2 plans every slot replaced in place, and the update replaces exactly those; a create with an
impossible constraint plans pending tasks with the reason the scheduler then writes on the real ones. No plan
writes anything: the event stream between before and after a plan holds no change made through the gateway."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.harness import Cluster, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture
def cluster(shared: Cluster) -> Cluster:
    """The session's shared cluster (tests/e2e/conftest.py): this module only creates its own objects and reads."""
    return shared


def revision(c: Cluster) -> int:
    return int(c.http.get("/v1/services").json()["revision"])


def plan(c: Cluster, *args: str) -> dict[str, Any]:
    """Run a dry-run CLI command with --json and check it wrote nothing (no service change in the events)."""
    before = revision(c)
    out: dict[str, Any] = json.loads(c.cli(*args[:2], "--json", *args[2:], timeout=60).stdout)
    after = revision(c)
    if after > before:
        ev = c.cli("events", "--since", str(before), "--until", str(after), "--filter", "type=service", "--json")
        assert ev.stdout.strip() == "", f"a plan changed a service: {ev.stdout}"
    return out


def slots_on(tasks: list[dict[str, Any]]) -> set[tuple[int, str]]:
    return {(int(t["slot"]), t["node_id"]) for t in tasks}


def test_plans_match_what_scale_and_update_then_do(cluster: Cluster) -> None:
    labelled = sorted(n["id"] for n in cluster.nodes())[0]
    cluster.cli("node", "update", "--label-add", "zone=a", labelled)
    cluster.cli("service", "create", "--name", "zoned", "--replicas", "2", "--constraint", "node.labels.zone==a",
                "--stop-grace-period", "1s", "--restart-delay", "1s", "--", "sleep", "300", timeout=90)
    before = cluster.wait_running("zoned", 2)
    version = cluster.http.get("/v1/services/zoned").json()["meta"]["version"]

    # scale 2 -> 4: two creates, on the labelled node only, in slots 3 and 4
    p = plan(cluster, "service", "plan", "--replicas", "4", "zoned")
    assert p["converged"] and p["summary"] == {"create": 2, "stop": 0, "replace": 0, "unchanged": 2, "pending": 0}
    assert cluster.http.get("/v1/services/zoned").json()["meta"]["version"] == version  # not written
    text = cluster.cli("service", "update", "--dry-run", "--replicas", "4", "zoned").stdout
    assert text.startswith("plan for service zoned (spec version 2): create 2, stop 0, replace 0, unchanged 2"), text
    cluster.cli("service", "scale", "zoned=4", timeout=90)
    after = cluster.wait_running("zoned", 4)
    new = [t for t in after if t["id"] not in {x["id"] for x in before}]
    assert slots_on(new) == {(e["slot"], e["node_id"]) for e in p["create"]} == {(3, labelled), (4, labelled)}

    # an update with parallelism 2: every slot replaced, in place (only one node fits)
    p = plan(cluster, "service", "plan", "--env-add", "V=2", "--update-parallelism", "2", "zoned")
    assert p["converged"] and p["summary"] == {"create": 0, "stop": 0, "replace": 4, "unchanged": 0, "pending": 0}
    assert p["nodes"] == {labelled: {"create": 0, "stop": 0, "replace": 4, "unchanged": 0}}
    assert {r["old"]["task_id"] for r in p["replace"]} == {t["id"] for t in after}
    cluster.cli("service", "update", "--env-add", "V=2", "--update-parallelism", "2", "zoned", timeout=120)
    updated = cluster.wait_running("zoned", 4, timeout=60)
    assert all(t["spec_version"] == 3 for t in updated)
    assert slots_on(updated) == {(r["new"]["slot"], r["new"]["node_id"]) for r in p["replace"]}
    cluster.cli("service", "rm", "zoned")


def test_an_impossible_constraint_plans_pending_with_the_reason_the_scheduler_then_writes(cluster: Cluster) -> None:
    args = ["--name", "mars", "--replicas", "2", "--constraint", "node.labels.zone==mars", "--", "sleep", "300"]
    p = plan(cluster, "service", "create", "--dry-run", *args)
    assert p["summary"]["pending"] == 2 and p["nodes"] == {}
    assert cluster.http.get("/v1/services/mars").status_code == 404
    text = cluster.cli("service", "create", "--dry-run", *args[:-3], "--", "sleep", "300").stdout
    assert "pending slot 1: no suitable node (constraint node.labels.zone==mars not satisfied on 2 nodes)" in text

    cluster.cli("service", "create", "--detach", *args)
    errs = eventually(lambda: (lambda e: e if len(e) == 2 and all(e) else None)(
        [t["status"].get("err") for t in cluster.tasks("mars")]), 30, "the scheduler's reasons")
    assert set(errs) == {x["reason"] for x in p["pending"]}
    cluster.cli("service", "rm", "mars")
