"""`python -m shoal.lb`: a tiny TCP load balancer in front of the gateways of a compose cluster.

docker-compose publishes one host port on this process; each accepted connection goes to one of the addresses
the backend name resolves to (Docker's DNS lists every container of a scaled service), in turn, skipping
addresses that refuse the connection. The name is resolved again for every connection, so gateways that come
and go are picked up without a restart. Bytes are copied both ways until either side closes (half-closes are
passed on).

Settings (environment): `SHOAL_LB_LISTEN` (`0.0.0.0:4242`), `SHOAL_LB_BACKEND` (`gateway:4242`),
`SHOAL_LB_CONNECT_TIMEOUT` (seconds per backend attempt, 2)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket

log = logging.getLogger("shoal.lb")
CHUNK = 64 * 1024


def split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "0.0.0.0", int(port)


class Balancer:
    def __init__(self, backend: str, *, connect_timeout: float = 2.0) -> None:
        self.host, self.port = split_hostport(backend)
        self.connect_timeout = connect_timeout
        self._turn = itertools.count()
        self.connections = 0

    async def addresses(self) -> list[str]:
        """Every address of the backend name, in a stable order (empty if it does not resolve now)."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as e:
            log.warning("cannot resolve %s: %s", self.host, e)
            return []
        return sorted({str(info[4][0]) for info in infos})

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        addrs = await self.addresses()
        if not addrs:
            return None
        first = next(self._turn) % len(addrs)
        for addr in addrs[first:] + addrs[:first]:
            try:
                return await asyncio.wait_for(asyncio.open_connection(addr, self.port), self.connect_timeout)
            except (OSError, TimeoutError) as e:
                log.info("backend %s:%d unavailable (%s); trying the next", addr, self.port, e)
        return None

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        backend = await self.connect()
        if backend is None:
            log.warning("no backend for %s:%d answers; closing the client connection", self.host, self.port)
            client_w.close()
            return
        backend_r, backend_w = backend
        await asyncio.gather(pipe(client_r, backend_w), pipe(backend_r, client_w), return_exceptions=True)
        for w in (client_w, backend_w):
            w.close()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the other side."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def close_server(server: asyncio.Server | None) -> None:
    """Stop listening; wait up to a second for the server's connections to be closed."""
    if server is not None:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s lb: %(message)s")
    listen_host, listen_port = split_hostport(os.environ.get("SHOAL_LB_LISTEN", "0.0.0.0:4242"))
    balancer = Balancer(os.environ.get("SHOAL_LB_BACKEND", "gateway:4242"),
                        connect_timeout=float(os.environ.get("SHOAL_LB_CONNECT_TIMEOUT", "2")))
    server = await asyncio.start_server(balancer.handle, listen_host, listen_port)
    log.info("listening on %s:%d, balancing over %s:%d", listen_host, listen_port, balancer.host, balancer.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    with contextlib.suppress(Exception):
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
