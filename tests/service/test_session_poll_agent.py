"""The session poll over HTTP (`GET /v1/sessions/{sid}/next`) with a real agent (the dispatcher app under uvicorn
over mutual TLS, tests/service/test_dispatcher_agent.py's environment): a node holds at most 3 connections to
its dispatcher, its task logs reach a reader through the one poll, another node's session is refused and bad
parameters are a 400 that changes nothing."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from shoal import transport
from shoal.logs import LogQuery
from shoal.store.local import LocalStore
from tests.service.polling import until
from tests.service.test_dispatcher_agent import RunningAgent, assign, env, period, task_in  # noqa: F401
from tests.service.tls_servers import node_creds

pytestmark = pytest.mark.timeout(60)


async def test_a_node_holds_at_most_three_connections_to_its_dispatcher(env: dict[str, Any]) -> None:  # noqa: F811
    """Issue 13: heartbeats, status reports and one session poll share the agent's pool (three polls held five
    connections). Counted on the server: every connection uvicorn holds for this one agent, over heartbeats."""
    store: LocalStore = env["store"]
    a: RunningAgent = await env["start_agent"]()
    await assign(store, a.node_id, "t1")
    await task_in(store, "t1", "running")  # status reports went out too
    server = env["d1"].server
    counts: list[int] = []

    async def sampled() -> bool:
        counts.append(len(server.server_state.connections))
        return len(counts) >= 60  # 60 samples 50 ms apart: three heartbeat periods
    await until(sampled, "samples", interval=0.05)
    assert a.agent.session.sessions == 1
    assert max(counts) <= 3, counts


async def test_task_logs_reach_a_reader_through_the_session_poll(env: dict[str, Any]) -> None:  # noqa: F811
    store: LocalStore = env["store"]
    a: RunningAgent = await env["start_agent"]()
    await assign(store, a.node_id, "t1", [sys.executable, "-c", "print('hello from t1', flush=True)\n"
                                                               "import time; time.sleep(30)"])
    await task_in(store, "t1", "running")
    broker = env["d1"].dispatcher.logs

    async def read() -> bytes:
        req = broker.open(a.node_id, LogQuery(("t1",)))
        return b"".join([chunk async for chunk in broker.stream(req)])
    assert b"hello from t1" in await until(read, "the task's output")


async def test_the_session_poll_refuses_other_nodes_and_bad_parameters(env: dict[str, Any]) -> None:  # noqa: F811
    a: RunningAgent = await env["start_agent"]()
    sid = a.agent.session.session_id
    url = env["d1"].url + f"/v1/sessions/{sid}/next"
    intruder = node_creds(env["signer"], env["tmp"] / "intruder")
    async with transport.http_client(intruder) as http:
        r = await http.get(url, params={"after": 0, "version": "", "wait": 0})
    assert r.status_code == 403 and "belongs to another node" in r.json()["message"], r.text
    async with transport.http_client(a.agent.creds) as http:
        for params in ({"after": -1}, {"after": "x"}, {"after": 2**64}, {"version": "v" * 65}, {"wait": "nan"},
                       {"wait": "-1"}, {"wait": "inf"}):
            r = await http.get(url, params={"wait": 0, **params})
            assert r.status_code == 400 and r.json()["code"] == "invalid_argument", (params, r.text)
        ok = await http.get(url, params={"after": 10**6, "wait": 0})  # a gap: the complete set, no table
        assert ok.status_code == 200 and set(ok.json()) == {"assignments"}
        assert ok.json()["assignments"]["type"] == "complete"
    assert a.agent.session.sessions == 1  # the refused polls changed nothing for the session
