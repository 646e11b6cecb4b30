"""Every process of a real local cluster serves /metrics that prometheus_client's own parser reads, with the
families users need present, and the counters a service's run moves grown by the test's own service (the
cluster is the session's shared one: they are compared with a scrape taken before the service)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shoal.supervisor import admin_client
from tests.e2e.harness import Cluster, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def cluster(shared: Cluster) -> Cluster:
    """The session's shared cluster (tests/e2e/conftest.py): this module only creates its own objects and reads."""
    return shared


def scrape(cluster: Cluster, url: str) -> dict[str, Any]:
    with admin_client(cluster.layout, timeout=5.0, server_role=None) as http:
        r = http.get(url + "/metrics")
    assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:200]}"
    assert r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def total(fams: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    fam = fams.get(family)
    if fam is None:
        return 0.0
    return sum(s.value for s in fam.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def count(fams: dict[str, Any], family: str) -> float:
    return total(fams, family, family + "_count")


def needed(got: dict[str, dict[str, Any]], leader: int) -> list[float]:
    """The counters the test's service must move (the cluster is shared: they are compared with a scrape taken
    before it was created)."""
    lead = got[f"raftstore-{leader}"]
    return [
        count(lead, "shoal_raft_commit_duration_seconds"),
        count(lead, "shoal_raft_fsync_duration_seconds"),
        count(lead, "shoal_store_txn_duration_seconds"),
        total(lead, "shoal_http_requests", "shoal_http_requests_total", route="/v1/txn"),
        *(count(got[r], "shoal_pass_duration_seconds") for r in ("orchestrator", "allocator", "scheduler")),
        *(count(got[r], "shoal_plan_lag_seconds") for r in ("orchestrator", "allocator", "scheduler")),
        total(got["orchestrator"], "shoal_passes", "shoal_passes_total"),
        count(got["dispatcher"], "shoal_dispatcher_heartbeat_duration_seconds"),
        count(got["dispatcher"], "shoal_dispatcher_assignment_lag_seconds"),
        total(got["dispatcher"], "shoal_task_state_transitions", "shoal_task_state_transitions_total",
              to="running"),
        # the other writers of task states count theirs: created by the orchestrator, assigned by the scheduler
        total(got["orchestrator"], "shoal_task_state_transitions", "shoal_task_state_transitions_total",
              **{"from": "none", "to": "new"}),
        total(got["scheduler"], "shoal_task_state_transitions", "shoal_task_state_transitions_total",
              **{"from": "pending", "to": "assigned"}),
        total(got["gateway"], "shoal_http_requests", "shoal_http_requests_total", method="POST",
              route="/v1/services", status="201"),
        total(got["gateway"], "shoal_http_requests", "shoal_http_requests_total", method="PUT",
              route="/v1/services/{ref}", status="200"),
        total(got["agent-1"], "shoal_agent_status_changes", "shoal_agent_status_changes_total")
        + total(got["agent-2"], "shoal_agent_status_changes", "shoal_agent_status_changes_total"),
    ]


def test_every_process_serves_parseable_metrics_with_the_latency_histograms(cluster: Cluster) -> None:
    layout = cluster.layout
    processes = {name: layout.url_of(name) for name in ("ca", "gateway", "orchestrator", "allocator", "scheduler",
                                                       "dispatcher", "agent-1", "agent-2")}
    processes |= {f"raftstore-{i}": layout.raft_api(i) for i in range(1, layout.raft_members + 1)}
    leader = eventually(cluster.raft_leader, 10, "a raft leader")
    before = needed({name: scrape(cluster, url) for name, url in processes.items()}, leader)
    cluster.create_service("web", 2)
    cluster.wait_running("web", 2)
    cluster.scale("web", 3)
    cluster.wait_running("web", 3)

    def all_there() -> dict[str, dict[str, Any]] | None:
        got = {name: scrape(cluster, url) for name, url in processes.items()}
        for fams in got.values():
            # every app counts its requests by route template (the health checks, at least)
            if total(fams, "shoal_http_requests", "shoal_http_requests_total") <= 0:
                return None
            if count(fams, "shoal_http_request_duration_seconds") <= 0:
                return None
        if not all(v > b for v, b in zip(needed(got, leader), before, strict=True)):
            return None
        return got

    got = eventually(all_there, 30, "every process's metrics to show the service's run", interval=1.0)
    # the route label is the template: no series names a service or task id
    for name, fams in got.items():
        for fam in fams.values():
            for s in fam.samples:
                assert "web" not in s.labels.get("route", ""), (name, s)
    # gauges read at scrape time
    assert total(got[f"raftstore-{leader}"], "shoal_raft_is_leader", "shoal_raft_is_leader") == 1.0
    assert total(got["dispatcher"], "shoal_dispatcher_sessions", "shoal_dispatcher_sessions") == 2.0
    assert total(got["ca"], "shoal_ca_joins", "shoal_ca_joins_total") > 0  # the agents' joins, at the start
