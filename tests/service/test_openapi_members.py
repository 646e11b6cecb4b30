"""Issue 16: schemathesis over the dispatcher's and a raftstore member's OpenAPI schemas, on real mutual-TLS
servers (shoal.transport.server_config: the same Guard, policy and limits as the processes), each request made
with the certificate the route's guard requires (an agent's for the agent protocol, a gateway's for
`/v1/logs`, a manager's for the store). Every check schemathesis has (tests/service/schemathesis_kit.py); a
refusal is a clean 4xx, never a 5xx. A short run here (SHOAL_SCHEMATHESIS_EXAMPLES, default 4 per operation);
the soak tier runs 200."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from requests.adapters import HTTPAdapter

from services.dispatcher.app import create_app as dispatcher_app
from services.dispatcher.core import policy as dispatcher_policy
from services.dispatcher.settings import DispatcherSettings
from services.raftstore import access
from services.raftstore.app import create_app as raftstore_app
from services.raftstore.member import Member
from shoal import pki
from shoal.bus import MemoryBus
from shoal.store.local import LocalStore
from shoal.transport import Credentials, server_config
from tests.integration.raftprocs import ClusterCerts, free_ports
from tests.service.schemathesis_kit import ADDITIONAL, EXCLUDED

pytestmark = pytest.mark.timeout(600)
EXAMPLES = int(os.environ.get("SHOAL_SCHEMATHESIS_EXAMPLES", "4"))


class ThreadServer:
    """An app under uvicorn with shoal's server config, in a thread of its own (schemathesis calls are
    synchronous): `build` makes (app, policy, revocations) inside the server's event loop."""

    def __init__(self, build: Callable[[], tuple[Any, Any, Any]], creds: Credentials,
                 ready: Callable[[Any], bool] = lambda _app: True) -> None:
        self.build, self.creds, self.is_ready = build, creds, ready
        self.server: uvicorn.Server | None = None
        self.app: Any = None
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.sock, self.port = sock, sock.getsockname()[1]
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def _main(self) -> None:
        app, policy, revoked = self.build()
        self.app = app
        self.server = uvicorn.Server(server_config(app, "127.0.0.1", self.port, self.creds, policy,
                                                   revoked=revoked))
        serving = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not (self.server.started and self.is_ready(app)) and not serving.done():
            await asyncio.sleep(0.01)
        self.ready.set()
        await serving

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        assert self.ready.wait(30), "server did not start"
        return self

    def __exit__(self, *_: Any) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(15)


class _TLSAdapter(HTTPAdapter):
    """requests through shoal.transport's client context (the cluster's roots, the caller's certificate)."""

    def __init__(self, creds: Credentials) -> None:
        self.ctx = creds.context("peer-client")
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self.ctx
        super().init_poolmanager(*args, **kwargs)


def short_polls(case: schemathesis.Case) -> schemathesis.Case:
    """Long polls (`wait`, clamped by the servers to a minute) asked to answer within a second, so every
    generated request gets a whole answer in a bounded run."""
    if isinstance(case.query, dict) and isinstance(case.query.get("wait"), int | float):
        case.query["wait"] = min(case.query["wait"], 1.0)
    return case


_SESSIONS: dict[str, requests.Session] = {}


def session_of(creds: Credentials) -> requests.Session:
    """One keep-alive session per identity for the whole run: a new session per generated case paid a mutual-TLS
    handshake each time, most of a case's time over the hundreds of cases a default run makes."""
    key = str(creds.dir)
    if key not in _SESSIONS:
        s = requests.Session()
        s.mount("https://", _TLSAdapter(creds))
        _SESSIONS[key] = s
    return _SESSIONS[key]


# ---- the dispatcher --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> ClusterCerts:
    return ClusterCerts(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def dispatcher(certs: ClusterCerts) -> Iterator[ThreadServer]:
    def build() -> tuple[Any, Any, Any]:
        st = DispatcherSettings(heartbeat_period=1.0, poll_interval=0.05, assignment_max_wait=0.2,
                                status_batch_interval=0.02, instance="d-schema")
        app = dispatcher_app(st, store=LocalStore(), bus=MemoryBus())
        return app, dispatcher_policy, app.state.dispatcher.revocations

    with ThreadServer(build, certs.client("dispatcher"), lambda app: bool(app.state.dispatcher.ready())) as server:
        yield server


def dispatcher_caller(certs: ClusterCerts, path: str) -> Credentials:
    """The identity the dispatcher's guard requires on `path` (services/dispatcher/core.py policy)."""
    if path.startswith("/v1/sessions"):
        return certs.creds("agent-worker", node_id="node-schema", component="agent", role=pki.WORKER)
    return certs.client("gateway")  # /v1/logs; ops routes: any manager


DISPATCHER_SCHEMA = schemathesis.openapi.from_dict(
    dispatcher_app(DispatcherSettings(instance="schema"), store=LocalStore(), bus=MemoryBus()).openapi())


def _check_dispatcher(case: schemathesis.Case, certs: ClusterCerts, server: ThreadServer) -> None:
    short_polls(case).call_and_validate(base_url=server.url, session=session_of(dispatcher_caller(certs, case.path)),
                                        excluded_checks=EXCLUDED, additional_checks=ADDITIONAL, timeout=10)


@DISPATCHER_SCHEMA.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_dispatcher_conforms_to_its_schema(case: schemathesis.Case, certs: ClusterCerts,
                                           dispatcher: ThreadServer) -> None:
    _check_dispatcher(case, certs, dispatcher)


@pytest.mark.soak
@DISPATCHER_SCHEMA.parametrize()
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_dispatcher_conforms_to_its_schema_at_length(case: schemathesis.Case, certs: ClusterCerts,
                                                     dispatcher: ThreadServer) -> None:
    _check_dispatcher(case, certs, dispatcher)


# ---- a raftstore member ----------------------------------------------------------------------------------------
def _member_settings(base: Path) -> Any:
    from services.raftstore.settings import RaftstoreSettings
    api, peer = free_ports(2)
    return RaftstoreSettings(raft_id=1, raft_members=f"1=https://127.0.0.1:{api},127.0.0.1:{peer},node-1",
                             data_dir=base / "1", raft_tick=0.02, nats_url="")


@pytest.fixture(scope="module")
def member(certs: ClusterCerts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    base = tmp_path_factory.mktemp("store")

    def build() -> tuple[Any, Any, Any]:
        m = Member(_member_settings(base), certs.member(1), rng=random.Random(1))
        return raftstore_app(m.settings, m, MemoryBus()), access.policy, None

    with ThreadServer(build, certs.member(1)) as server:
        yield server


def _raftstore_schema() -> dict[str, Any]:
    """The member app's schema (built, never started, in a scratch directory)."""
    with tempfile.TemporaryDirectory() as tmp:
        m = Member(_member_settings(Path(tmp)), ClusterCerts(Path(tmp)).member(1), rng=random.Random(1))
        return dict(raftstore_app(m.settings, m, MemoryBus()).openapi())


RAFTSTORE_SCHEMA = schemathesis.openapi.from_dict(_raftstore_schema())


def _check_member(case: schemathesis.Case, certs: ClusterCerts, server: ThreadServer) -> None:
    # the orchestrator's identity: everything a store client does, but not membership changes (a schema-valid
    # `POST /v1/members` from the gateway would really reconfigure this one-member cluster); those routes are
    # checked as clean 403s here, and by tests/integration/test_raft_membership.py for real
    short_polls(case).call_and_validate(base_url=server.url, session=session_of(certs.client("orchestrator")),
                                        excluded_checks=EXCLUDED, additional_checks=ADDITIONAL, timeout=10)


@RAFTSTORE_SCHEMA.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_raftstore_conforms_to_its_schema(case: schemathesis.Case, certs: ClusterCerts,
                                          member: ThreadServer) -> None:
    _check_member(case, certs, member)


@pytest.mark.soak
@RAFTSTORE_SCHEMA.parametrize()
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_raftstore_conforms_to_its_schema_at_length(case: schemathesis.Case, certs: ClusterCerts,
                                                    member: ThreadServer) -> None:
    _check_member(case, certs, member)
