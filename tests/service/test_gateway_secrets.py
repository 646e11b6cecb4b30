"""Secrets and configs at the gateway (issue 10): `/v1/secrets`, `/v1/configs`, and service specs referencing
them, over a LocalStore (FastAPI TestClient)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shoal.models.secrets import MAX_CONFIG_SIZE, MAX_SECRET_SIZE
from shoal.store.local import LocalStore
from tests.service.test_gateway_api import make_client, web_spec

VALUE = b"s3cr3t-\x00\xff-value"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture
def client(store: LocalStore) -> Iterator[TestClient]:
    with make_client(store) as c:
        yield c


def make(client: TestClient, kind: str, name: str, raw: bytes = VALUE, **extra: Any) -> dict[str, Any]:
    r = client.post(f"/v1/{kind}s", json={"name": name, "data": b64(raw), **extra})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def with_refs(name: str = "web", **task: Any) -> dict[str, Any]:
    spec = web_spec(name=name)
    spec["task"].update(task)
    return spec


def test_a_secrets_data_is_never_answered_a_configs_is(client: TestClient, store: LocalStore) -> None:
    s = make(client, "secret", "db-password", labels={"app": "web"})
    c = make(client, "config", "nginx.conf", b"server {}")
    encoded = b64(VALUE)
    answers = [s, client.get("/v1/secrets").json(), client.get(f"/v1/secrets/{s['id']}").json(),
               client.get("/v1/secrets/db-password").json(), client.get(f"/v1/secrets/{s['id'][:6]}").json()]
    assert all(encoded not in repr(a) for a in answers)
    assert s["spec"] == {"name": "db-password", "labels": {"app": "web"}}
    assert store.mem.get("secret", s["id"])["spec"]["data"] == encoded  # the store holds it (for the dispatcher)
    assert client.get("/v1/configs/nginx.conf").json()["spec"]["data"] == b64(b"server {}")
    assert c["spec"]["data"] == b64(b"server {}")
    updated = client.put(f"/v1/secrets/{s['id']}", json={"version": s["meta"]["version"], "labels": {"x": "y"}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["spec"] == {"name": "db-password", "labels": {"x": "y"}}
    assert store.mem.get("secret", s["id"])["spec"]["data"] == encoded  # labels only; the data stays


@pytest.mark.parametrize(("kind", "body", "needle"), [
    ("secret", {"name": "a" * 65, "data": "eA=="}, "name"),
    ("secret", {"name": "-bad", "data": "eA=="}, "name"),
    ("secret", {"name": "ok", "data": "not base64!"}, "base64"),
    ("secret", {"name": "ok", "data": ""}, "empty"),
    ("secret", {"name": "ok", "data": b64(b"x" * (MAX_SECRET_SIZE + 1))}, "at most"),
    ("config", {"name": "ok", "data": b64(b"x" * (MAX_CONFIG_SIZE + 1))}, "at most"),
    ("secret", {"name": "ok"}, "data"),
    ("secret", {"name": "ok", "data": "eA==", "extra": 1}, "extra"),
])
def test_bad_create_bodies_are_400(client: TestClient, store: LocalStore, kind: str, body: dict[str, Any],
                                   needle: str) -> None:
    before = store.mem.revision
    r = client.post(f"/v1/{kind}s", json=body)
    assert r.status_code in (400, 422) and needle in r.text and r.json()["code"], r.text
    assert store.mem.revision == before


def test_limits_admit_the_largest_payloads(client: TestClient) -> None:
    make(client, "secret", "big", b"s" * MAX_SECRET_SIZE)
    c = make(client, "config", "big", b"c" * MAX_CONFIG_SIZE)
    assert len(base64.b64decode(client.get(f"/v1/configs/{c['id']}").json()["spec"]["data"])) == MAX_CONFIG_SIZE


def test_names_are_unique_per_kind_and_data_immutable(client: TestClient) -> None:
    s = make(client, "secret", "pw")
    assert client.post("/v1/secrets", json={"name": "PW", "data": "eA=="}).status_code == 409
    make(client, "config", "pw")  # another kind: fine
    r = client.put("/v1/secrets/pw", json={"version": s["meta"]["version"], "labels": {}, "data": "eQ=="})
    assert r.status_code in (400, 422) and "data" in r.text
    stale = client.put("/v1/secrets/pw", json={"version": s["meta"]["version"] + 7, "labels": {}})
    assert stale.status_code == 409 and stale.json()["code"] == "version_conflict"
    assert client.get("/v1/secrets/nope").status_code == 404


def test_services_reference_secrets_and_configs_by_name_or_id(client: TestClient) -> None:
    s = make(client, "secret", "pw")
    c = make(client, "config", "app.conf", b"a=1")
    spec = with_refs(secrets=[{"source": "pw"}, {"source": s["id"], "target": "other", "mode": 0o400}],
                     configs=[{"source": "app.conf", "uid": "1000", "gid": "1000"}])
    r = client.post("/v1/services", json=spec)
    assert r.status_code == 201, r.text
    task = r.json()["spec"]["task"]
    assert task["secrets"] == [{"source": "pw", "secret_id": s["id"], "target": "pw"},
                               {"source": "pw", "secret_id": s["id"], "target": "other", "mode": 0o400}]
    assert task["configs"] == [{"source": "app.conf", "config_id": c["id"], "target": "/app.conf",
                                "uid": "1000", "gid": "1000"}]
    bad = client.post("/v1/services", json=with_refs("web2", secrets=[{"source": "nope"}]))
    assert bad.status_code == 400 and "task.secrets[0].source" in bad.text and "not found" in bad.text
    dup = client.post("/v1/services", json=with_refs("web3", secrets=[{"source": "pw"}, {"source": "pw"}]))
    assert dup.status_code in (400, 422) and "more than once" in dup.text
    escape = client.post("/v1/services", json=with_refs("web4", secrets=[{"source": "pw", "target": "../x"}]))
    assert escape.status_code in (400, 422) and "target" in escape.text
    # an update is checked the same way
    svc = client.get("/v1/services/web").json()
    upd = client.put("/v1/services/web", json={"version": svc["meta"]["version"],
                                               "spec": with_refs(configs=[{"source": "gone"}])})
    assert upd.status_code == 400 and "spec.task.configs[0].source" in upd.text


def test_removal_is_refused_while_a_service_references_it(client: TestClient, store: LocalStore) -> None:
    make(client, "secret", "pw")
    make(client, "config", "unused")
    assert client.post("/v1/services", json=with_refs(secrets=[{"source": "pw"}])).status_code == 201
    r = client.delete("/v1/secrets/pw")
    assert r.status_code == 409 and r.json()["code"] == "in_use" and "web" in r.json()["message"]
    kept = client.get("/v1/secrets/pw").json()
    assert "removing" not in kept  # the refused removal put it back
    assert client.post("/v1/services", json=with_refs("web2", secrets=[{"source": "pw"}])).status_code == 201
    assert client.delete("/v1/configs/unused").status_code == 200
    assert client.get("/v1/configs/unused").status_code == 404
    assert client.delete("/v1/services/web").status_code == 200
    assert client.delete("/v1/services/web2").status_code == 200
    gone = client.delete("/v1/secrets/pw")
    assert gone.status_code == 200 and b64(VALUE) not in gone.text
    assert store.mem.list("secret") == []
