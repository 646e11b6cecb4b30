"""Addresses of a scaled service: a compose service name (the dispatchers, scaled) resolves to several
containers, and a client that must reach a particular one dials each address while checking the certificate
against the name (the TLS side of it stays in shoal.transport; this module only resolves and names)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpx


async def expand_url(url: str, timeout: float = 2.0) -> list[str]:
    """`url` with its host name replaced by each address it resolves to, when it resolves to several; else
    `[url]` (an IP literal, one address, or a name that does not resolve now). A scaled compose service (the
    dispatchers) is one name for several containers: a client that must reach a particular one (an agent's
    session, the gateway looking for the dispatcher holding a node's session) dials each address, checking the
    certificate against the name with `sni_extensions` (the certificates name the service, not each address)."""
    parsed = httpx.URL(url)
    host = parsed.host
    try:
        ipaddress.ip_address(host)
        return [url]
    except ValueError:
        pass
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    except (OSError, TimeoutError):
        return [url]
    families = {info[0] for info in infos}
    family = socket.AF_INET if socket.AF_INET in families else socket.AF_INET6  # `localhost` is one host
    addrs = sorted({str(info[4][0]) for info in infos if info[0] == family})
    if len(addrs) <= 1:
        return [url]
    return [str(parsed.copy_with(host=a)).rstrip("/") for a in addrs]


async def expand_urls(urls: Iterable[str], timeout: float = 2.0) -> list[tuple[str, str | None]]:
    """Every address of every URL (`expand_url`), once each, with the host name an address was resolved from
    (None for a URL used as configured): `(url, server_name)` pairs in the order given."""
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for url in urls:
        url = url.rstrip("/")
        expanded = await expand_url(url, timeout)
        name = httpx.URL(url).host if expanded != [url] else None
        for u in expanded:
            if u not in seen:
                seen.add(u)
                out.append((u, name))
    return out


def sni_extensions(server_name: str | None) -> dict[str, Any]:
    """httpx request extensions that check the server's certificate against `server_name` (SNI and host name)
    instead of the address dialled; none for a URL dialled by the name it was configured with."""
    return {"sni_hostname": server_name} if server_name else {}
