"""The gateway's routes stamp objects from the injected clock (`create_app(clock=...)`), not the process's wall
clock: a job's first execution, a removed node's tombstone and its orphaned tasks, an attachment task's status,
and the cluster view's `now`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shoal.clock import FakeClock
from shoal.models.kinds import DEFAULT_CLUSTER_ID, Kind
from shoal.models.objects import new_task, task_status
from shoal.store import txn as t
from shoal.store.local import LocalStore
from tests.service.gateway_kit import run
from tests.sim.cp_fakes import make_node

pytestmark = pytest.mark.timeout(60)
NOW = 1_234_567.0


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


@pytest.fixture
def client(store: LocalStore) -> Iterator[TestClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(_refused))
    app = create_app(GatewaySettings(store_members=["http://m1"]), store=store, http=http, clock=FakeClock(NOW))
    with TestClient(app) as c:
        yield c


def test_a_job_service_starts_at_the_injected_time(client: TestClient, store: LocalStore) -> None:
    r = client.post("/v1/services", json={"name": "once", "mode": {"replicated_job": {}},
                                          "task": {"process": {"command": ["true"]}}})
    assert r.status_code == 201, r.text
    assert r.json()["job_status"]["last_execution"] == NOW


def test_node_removal_and_attachments_are_stamped_by_the_injected_clock(client: TestClient,
                                                                         store: LocalStore) -> None:
    node = make_node("n" * 25, hostname="host-n", state="down")
    service = {"id": "s" * 25, "spec": {"name": "web", "task": {"process": {"command": ["sleep", "1"]}}}}
    task = {**new_task(service, 1, 5.0, node_id=node["id"]), "status": task_status("running", 5.0)}
    run(client, store.txn([t.create(Kind.NODE, node), t.create(Kind.TASK, task)]))
    r = client.post("/v1/networks", json={"name": "front", "attachable": True})
    assert r.status_code == 201, r.text
    r = client.post("/v1/networks/front/attachments", json={"node_id": node["id"]})
    assert r.status_code == 201, r.text
    assert r.json()["status"]["timestamp"] == NOW
    r = client.delete(f"/v1/nodes/{node['id']}")
    assert r.status_code == 200, r.text
    assert store.mem.get(Kind.TASK, task["id"])["status"]["timestamp"] == NOW
    removed = store.mem.get(Kind.CLUSTER, DEFAULT_CLUSTER_ID)["removed_nodes"]
    assert removed == [{"id": node["id"], "removed_at": NOW}]
