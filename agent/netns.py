"""The overlay's commands and sockets in other network namespaces (docs/networking.md, "Containers on overlay
networks"): iproute2 runs that fail loudly with the kernel's words (xfrm keys never shown), a socket made in a
network namespace, and the host forwarders that carry a container's target port to a port of the node."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import socket
from pathlib import Path
from typing import Any

from agent.overlay_plan import Argv
from shoal.lb import close_server, pipe

log = logging.getLogger("agent.overlay")

CLONE_NEWNET = 0x40000000


class OverlayError(Exception):
    """A command of the overlay failed; the message names it and what the kernel said."""


_libc: Any = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in(netns: Path, family: int = socket.AF_INET) -> socket.socket:
    """A TCP socket of another network namespace: this thread enters it, makes the socket, and returns (the
    socket keeps its namespace). Synchronous and short, so the event loop's thread can do it."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(netns, os.O_RDONLY)
        try:
            _setns(target)
            try:
                return socket.socket(family, socket.SOCK_STREAM)
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


def _shown(argv: Argv) -> Argv:
    """The command as logs and errors may show it: an xfrm key (after `aead <algorithm>`) replaced."""
    return [("<key>" if i > 1 and argv[i - 2] == "aead" else a) for i, a in enumerate(argv)]


async def run(argv: Argv, *, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise OverlayError(f"`{' '.join(_shown(argv))}` failed: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


class Forwarder:
    """A host port of one container's target port: connections to `<bind>:<port>` go to `<task address>:
    <target>` inside the network's namespace."""

    def __init__(self, netns: Path, address: str, target: int) -> None:
        self.netns, self.address, self.target = netns, address, target
        self.server: asyncio.Server | None = None
        self.port = 0

    async def open(self, bind: str, port: int) -> None:
        self.server = await asyncio.start_server(self._handle, bind, port)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            sock = socket_in(self.netns)
        except OSError as e:  # the network's namespace is gone (the container is being detached)
            log.debug("overlay: cannot enter %s: %s", self.netns, e)
            client_w.close()
            return
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (self.address, self.target)), 2.0)
            backend_r, backend_w = await asyncio.open_connection(sock=sock)
        except (OSError, TimeoutError) as e:
            sock.close()
            log.debug("overlay: %s:%d unreachable: %s", self.address, self.target, e)
            client_w.close()
            return
        try:
            await asyncio.gather(pipe(client_r, backend_w), pipe(backend_r, client_w))
        finally:
            backend_w.close()
            client_w.close()

    async def close(self) -> None:
        server, self.server = self.server, None
        await close_server(server)
