"""NATS over mutual TLS on a real nats-server configured by shoal.natsconf: manager components connect with
their certificates and pub/sub within their permissions; plaintext, certificate-less, worker, foreign-CA and
unpermitted publishes are refused; two servers route to each other over TLS."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from shoal import natsconf, pki
from shoal.bus import subjects
from shoal.bus.nats import NatsBus
from shoal.certs import LOCAL_HOSTS, Signer
from shoal.transport import Credentials, nats_options
from tests.integration.raftprocs import free_ports

NATS_SERVER = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
pytestmark = [pytest.mark.skipif(not Path(NATS_SERVER).exists(), reason="nats-server binary not installed"),
              pytest.mark.timeout(60)]


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nats-server did not listen on {port}")


def start_server(tmp: Path, signer: Signer, name: str, port: int, **kw: Any) -> subprocess.Popen[bytes]:
    certs = signer.issue_dir(tmp / f"{name}-certs", node_id=name, role=pki.MANAGER, component="nats",
                             hosts=LOCAL_HOSTS)
    conf = natsconf.write(tmp / f"{name}.conf", natsconf.render("127.0.0.1", port, certs, server_name=name, **kw))
    proc = subprocess.Popen([NATS_SERVER, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_port(port, proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def signer() -> Signer:
    return Signer.new()


@pytest.fixture
def server(tmp_path: Path, signer: Signer) -> Iterator[str]:
    (port,) = free_ports(1)
    proc = start_server(tmp_path, signer, "n1", port)
    try:
        yield f"tls://127.0.0.1:{port}"
    finally:
        stop(proc)


def creds_for(tmp: Path, signer: Signer, component: str, role: str = pki.MANAGER) -> Credentials:
    d = signer.issue_dir(tmp / f"{component}-{role}", node_id=f"node-{component}", role=role,
                         component=component, hosts=LOCAL_HOSTS)
    return Credentials(d)


async def connect(url: str, creds: Credentials, errors: list[str] | None = None) -> nats.NATS:
    async def on_error(e: Exception) -> None:
        if errors is not None:
            errors.append(str(e))

    return await nats.connect(servers=[url], connect_timeout=3, allow_reconnect=False, error_cb=on_error,
                              **nats_options(creds))


async def refused(url: str, **options: Any) -> str:
    async def quiet(_: Exception) -> None:
        return None

    with pytest.raises(Exception) as info:
        nc = await nats.connect(servers=[url], connect_timeout=3, allow_reconnect=False, max_reconnect_attempts=0,
                                error_cb=quiet, **options)
        await nc.close()
    return str(info.value) or type(info.value).__name__


# ---- rendering -----------------------------------------------------------------------------------------------
def test_render_maps_each_manager_component_and_no_worker_or_admin(tmp_path: Path) -> None:
    text = natsconf.render("127.0.0.1", 4222, tmp_path)
    assert "verify_and_map: true" in text
    for component in ("raftstore", "gateway", "orchestrator", "allocator", "scheduler", "dispatcher", "ca"):
        assert f'"{component}@swarm-manager.shoal"' in text
    assert "swarm-worker" not in text and "swarm-admin" not in text and "_INBOX" not in text
    assert "cluster {" not in text


def test_render_routes_need_a_cluster_port_and_tls(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cluster_port"):
        natsconf.render("127.0.0.1", 4222, tmp_path, routes=["tls://127.0.0.1:6222"])
    with pytest.raises(ValueError, match="only speak TLS"):
        natsconf.render("127.0.0.1", 4222, tmp_path, cluster_port=6222, routes=["nats-route://127.0.0.1:6223"])


def test_every_subject_has_a_publisher_and_a_subscriber() -> None:
    published = {s for p in natsconf.PERMISSIONS.values() for s in p.publish}
    subscribed = {s for p in natsconf.PERMISSIONS.values() for s in p.subscribe}
    every = {v for k, v in vars(subjects).items() if k.isupper()}
    assert published == every and subscribed == every


# ---- a real server ---------------------------------------------------------------------------------------------
async def test_a_manager_component_publishes_and_another_receives(server: str, tmp_path: Path,
                                                                   signer: Signer) -> None:
    dispatcher = NatsBus(server, "dispatcher", creds_for(tmp_path, signer, "dispatcher"))
    raftstore = NatsBus(server, "raftstore", creds_for(tmp_path, signer, "raftstore"))
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_event(data: dict[str, Any]) -> None:
        await got.put(data)

    await dispatcher.subscribe(subjects.STORE_EVENTS, on_event)
    dispatcher.start()
    raftstore.start()
    try:
        await asyncio.wait_for(dispatcher.connected_once.wait(), 10)
        await asyncio.wait_for(raftstore.connected_once.wait(), 10)
        deadline = time.monotonic() + 5
        while got.empty() and time.monotonic() < deadline:  # the subscription is flushed in the background
            await raftstore.publish(subjects.STORE_EVENTS, {"revision": 7})
            await asyncio.sleep(0.1)
        assert await asyncio.wait_for(got.get(), 1) == {"revision": 7}
    finally:
        await dispatcher.close()
        await raftstore.close()


async def test_a_component_cannot_publish_outside_its_permissions(server: str, tmp_path: Path,
                                                                  signer: Signer) -> None:
    listener = await connect(server, creds_for(tmp_path, signer, "orchestrator"))
    got: list[bytes] = []

    async def on_msg(msg: Any) -> None:
        got.append(msg.data)

    await listener.subscribe(subjects.STORE_EVENTS, cb=on_msg)
    await listener.flush()
    errors: list[str] = []
    gateway = await connect(server, creds_for(tmp_path, signer, "gateway"), errors)
    try:
        await gateway.publish(subjects.STORE_EVENTS, json.dumps({"revision": 1}).encode())  # a forged hint
        await gateway.flush()
        for _ in range(50):
            if errors:
                break
            await asyncio.sleep(0.05)
        assert any("permissions violation" in e.lower() for e in errors), errors
        assert got == []
        # and a subscription outside its permissions is refused too
        await gateway.subscribe(subjects.NODE_HEARTBEAT)
        await gateway.flush()
        await asyncio.sleep(0.3)
        assert sum("permissions violation" in e.lower() for e in errors) >= 2, errors
    finally:
        await gateway.close()
        await listener.close()


async def test_a_worker_certificate_is_refused(server: str, tmp_path: Path, signer: Signer) -> None:
    worker = creds_for(tmp_path, signer, "agent", role=pki.WORKER)
    why = await refused(server, **nats_options(worker))
    assert "authorization" in why.lower() or "closed" in why.lower(), why


async def test_a_manager_certificate_without_a_nats_user_is_refused(server: str, tmp_path: Path,
                                                                    signer: Signer) -> None:
    # an agent on a manager node, and the nats server's own certificate, map to no user
    for component in ("agent", "nats", "admin"):
        creds = creds_for(tmp_path, signer, component, role=pki.ADMIN if component == "admin" else pki.MANAGER)
        await refused(server, **nats_options(creds))


async def test_a_certificate_of_a_foreign_ca_is_refused(server: str, tmp_path: Path) -> None:
    other = Signer.new()
    creds = creds_for(tmp_path / "foreign", other, "gateway")
    # the client does not trust the server's root either; make it trust ours so the server is the one refusing
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(creds.cert_file, creds.key_file)
    await refused(server, tls=ctx)
    await refused(server, **nats_options(creds))  # and by default it does not trust a foreign server


async def test_a_client_without_a_certificate_is_refused(server: str, tmp_path: Path, signer: Signer) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=signer.root_pem.decode())
    ctx.check_hostname = False
    await refused(server, tls=ctx)


async def test_plaintext_is_refused(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        info = await asyncio.wait_for(reader.readline(), 5)
        assert info.startswith(b"INFO ") and json.loads(info[5:])["tls_required"] is True
        writer.write(b'CONNECT {"verbose":false}\r\nPING\r\n')
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 5)
        assert b"PONG" not in answer
    finally:
        writer.close()


async def test_two_servers_route_over_tls(tmp_path: Path, signer: Signer) -> None:
    p1, p2, r1, r2, h1 = free_ports(5)
    a = start_server(tmp_path, signer, "n1", p1, cluster_port=r1, http_port=h1)
    b = start_server(tmp_path, signer, "n2", p2, cluster_port=r2, routes=[f"tls://127.0.0.1:{r1}"])
    try:
        sub = await connect(f"tls://127.0.0.1:{p1}", creds_for(tmp_path, signer, "dispatcher"))
        pub = await connect(f"tls://127.0.0.1:{p2}", creds_for(tmp_path, signer, "raftstore"))
        got: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_msg(msg: Any) -> None:
            await got.put(msg.data)

        await sub.subscribe(subjects.STORE_EVENTS, cb=on_msg)
        await sub.flush()
        try:
            deadline = time.monotonic() + 10
            while got.empty() and time.monotonic() < deadline:  # the route forms in the background
                await pub.publish(subjects.STORE_EVENTS, b'{"revision":1}')
                await asyncio.sleep(0.2)
            assert await asyncio.wait_for(got.get(), 1) == b'{"revision":1}'
            assert num_routes(h1) >= 1  # nats-server pools several connections per route
        finally:
            await sub.close()
            await pub.close()
    finally:
        stop(a)
        stop(b)


def num_routes(http_port: int) -> int:
    return int(httpx.get(f"http://127.0.0.1:{http_port}/routez", timeout=2).json()["num_routes"])


async def test_a_route_from_a_foreign_ca_is_refused(tmp_path: Path, signer: Signer) -> None:
    p1, p2, r1, r2, h1, h2 = free_ports(6)
    foreign = Signer.new()
    a = start_server(tmp_path, signer, "n1", p1, cluster_port=r1, http_port=h1)
    b = start_server(tmp_path / "foreign", foreign, "n2", p2, cluster_port=r2, routes=[f"tls://127.0.0.1:{r1}"],
                     http_port=h2)
    try:
        sub = await connect(f"tls://127.0.0.1:{p1}", creds_for(tmp_path, signer, "dispatcher"))
        pub = await connect(f"tls://127.0.0.1:{p2}", creds_for(tmp_path / "foreign", foreign, "raftstore"))
        got: list[bytes] = []

        async def on_msg(msg: Any) -> None:
            got.append(msg.data)

        await sub.subscribe(subjects.STORE_EVENTS, cb=on_msg)
        await sub.flush()
        for _ in range(10):  # two seconds: a route would have formed (the accepted case takes well under one)
            await pub.publish(subjects.STORE_EVENTS, b'{"revision":1}')
            await asyncio.sleep(0.2)
        assert got == []
        assert num_routes(h1) == 0 and num_routes(h2) == 0
        await sub.close()
        await pub.close()
    finally:
        stop(a)
        stop(b)
