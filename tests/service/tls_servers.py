"""Test helper: serve an ASGI app in this event loop exactly as a shoal process does (shoal.transport's mTLS
server config, Guard, policy), on a free loopback port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import uvicorn

from shoal import pki
from shoal.certs import LOCAL_HOSTS, Signer
from shoal.ids import new_id
from shoal.transport import Credentials, Policy, Revocations, server_config


class TLSServer:
    def __init__(self, app: Any, creds: Credentials, policy: Policy, *, revoked: Revocations | None = None,
                 anonymous: Iterable[str] = (), host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.creds, self.policy, self.revoked = app, creds, policy, revoked
        self.anonymous = tuple(anonymous)
        self.host = host
        self.port = port
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def start(self) -> TLSServer:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = server_config(self.app, self.host, self.port, self.creds, self.policy, revoked=self.revoked,
                               anonymous=self.anonymous)
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        for _ in range(500):
            if self.server.started:
                return self
            await asyncio.sleep(0.01)
        raise TimeoutError("server did not start")

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await self.task


def node_creds(signer: Signer, cert_dir: Path, *, role: str = pki.WORKER, component: str = "agent",
               node_id: str | None = None) -> Credentials:
    """A node's credentials in `cert_dir`, issued on first use (a restarted agent finds the same identity)."""
    if not (cert_dir / pki.CERT_FILE).is_file():
        signer.issue_dir(cert_dir, node_id=node_id or new_id(), role=role, component=component, hosts=LOCAL_HOSTS)
    return Credentials(cert_dir)
