"""The cost of shoal.limits.TLS_READ_BUFFER (32 KiB) against asyncio's own 256 KiB per TLS connection, measured in
the same run on the same mutual-TLS certificates: bulk throughput (one 64 MiB stream, what a raft snapshot or a
big store read is) and the memory of 500 idle half-open connections. Prints each and their ratio.

    python bench/tls_read_buffer.py"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shoal import pki
from shoal.certs import LOCAL_HOSTS, Signer
from shoal.limits import TLS_READ_BUFFER
from shoal.transport import Credentials

BULK = 64 * 1024 * 1024
IDLE = 500


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def bulk(server: Credentials, client: Credentials) -> float:
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        left = BULK
        while left > 0:
            left -= len(await reader.read(1 << 20))
        done.set()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server.context("server"))
    port = srv.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client.context("peer-client"),
                                              server_hostname="127.0.0.1")
    chunk = os.urandom(1 << 20)
    t0 = time.perf_counter()
    for _ in range(BULK // len(chunk)):
        writer.write(chunk)
        await writer.drain()
    await done.wait()
    took = time.perf_counter() - t0
    writer.close()
    srv.close()
    return BULK / took / 2**20


async def idle(server: Credentials) -> float:
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0, ssl=server.context("server"))
    port = srv.sockets[0].getsockname()[1]
    before = rss()
    held = []
    for _ in range(IDLE):
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"\x16\x03\x01\x00")  # half a TLS hello
        held.append(w)
    await asyncio.sleep(0.5)
    grown = rss() - before
    for w in held:
        w.close()
    srv.close()
    return grown / IDLE / 1024


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        signer = Signer.new()
        server = Credentials(signer.issue_dir(Path(tmp) / "s", node_id="s", role=pki.MANAGER, component="raftstore",
                                              hosts=LOCAL_HOSTS))
        client = Credentials(signer.issue_dir(Path(tmp) / "c", node_id="c", role=pki.MANAGER, component="raftstore",
                                              hosts=LOCAL_HOSTS))
        results = {}
        for size in (256 * 1024, TLS_READ_BUFFER, 256 * 1024, TLS_READ_BUFFER):  # interleaved: load drifts
            asyncio.sslproto.SSLProtocol.max_size = size
            mbps = asyncio.run(bulk(server, client))
            kib = asyncio.run(idle(server))
            best = results.get(size, (0.0, float("inf")))
            results[size] = (max(best[0], mbps), min(best[1], kib))
        asyncio_default, ours = results[256 * 1024], results[TLS_READ_BUFFER]
        print(f"bulk TLS stream: asyncio 256 KiB {asyncio_default[0]:.0f} MiB/s, shoal 32 KiB {ours[0]:.0f} MiB/s "
              f"(ratio {ours[0] / asyncio_default[0]:.2f})")
        print(f"half-open connection: asyncio 256 KiB {asyncio_default[1]:.0f} KiB, shoal 32 KiB {ours[1]:.0f} KiB "
              f"(ratio {ours[1] / max(asyncio_default[1], 1e-9):.2f})")


if __name__ == "__main__":
    main()
