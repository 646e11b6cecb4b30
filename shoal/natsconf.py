"""The nats-server configuration of a manager, as a pure function (`render`): TLS with the `nats` component's
certificate, client certificates required and mapped to users (`verify_and_map`), one user per manager
component with the subject permissions the code actually uses, and optional TLS routes between the managers'
servers.

Who may publish and subscribe what follows every publisher and subscriber of `shoal.bus.subjects`:

| user (e-mail SAN)                 | publishes                         | subscribes                     |
|-----------------------------------|-----------------------------------|--------------------------------|
| raftstore@swarm-manager.shoal     | store events                      | nothing                        |
| gateway@swarm-manager.shoal       | instance heartbeat                | instance heartbeat             |
| orchestrator / allocator / scheduler | instance heartbeat             | store events                   |
| dispatcher@swarm-manager.shoal    | node + instance heartbeat         | store events, node heartbeat   |
| ca@swarm-manager.shoal            | instance heartbeat                | store events                   |

Nothing uses request/reply, so nobody may touch `_INBOX.>`. Workers (agents) and admins have no NATS user:
agents talk only to their dispatcher over HTTP, and nats-server refuses a certificate that maps to no user.
nats-server's `verify_and_map` tries e-mail SANs first, and shoal.pki puts `<component>@<role>.shoal` in every
certificate, so a worker's `agent@swarm-worker.shoal` (or a manager's `nats`/`agent` certificate) matches no
user. A user per component, not per node: a node joining never requires reloading every nats-server."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal import pki
from shoal.bus import subjects


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


_ANNOUNCE = (subjects.INSTANCE_HEARTBEAT,)

#: component -> what its NATS user may do (module docstring)
PERMISSIONS: dict[str, Permissions] = {
    "raftstore": Permissions(publish=(subjects.STORE_EVENTS,), subscribe=()),
    "gateway": Permissions(publish=_ANNOUNCE, subscribe=(subjects.INSTANCE_HEARTBEAT,)),
    "orchestrator": Permissions(publish=_ANNOUNCE, subscribe=(subjects.STORE_EVENTS,)),
    "allocator": Permissions(publish=_ANNOUNCE, subscribe=(subjects.STORE_EVENTS,)),
    "scheduler": Permissions(publish=_ANNOUNCE, subscribe=(subjects.STORE_EVENTS,)),
    "dispatcher": Permissions(publish=(subjects.NODE_HEARTBEAT, subjects.INSTANCE_HEARTBEAT),
                              subscribe=(subjects.STORE_EVENTS, subjects.NODE_HEARTBEAT)),
    "ca": Permissions(publish=_ANNOUNCE, subscribe=(subjects.STORE_EVENTS,)),
}

#: the user a route from another manager's nats-server maps to
ROUTE_USER = f"nats@{pki.MANAGER}.shoal"
TLS_TIMEOUT = 2.0


def user_name(component: str) -> str:
    """The NATS user a manager component's certificate maps to (its e-mail SAN, shoal.pki)."""
    return f"{component}@{pki.MANAGER}.shoal"


def _q(s: str) -> str:
    return json.dumps(s)  # nats-server's config strings accept JSON's quoting


def _list(items: Sequence[str]) -> str:
    return "[" + ", ".join(_q(i) for i in items) + "]"


def _allow(items: Sequence[str]) -> str:
    # An empty allow list would mean "no restriction" to nats-server: deny everything instead.
    return f"{{ allow: {_list(items)} }}" if items else '{ deny: [">"] }'


def _tls_block(cert_dir: Path, indent: str, *, map_users: bool) -> list[str]:
    lines = [f"{indent}tls {{",
             f"{indent}  cert_file: {_q(str(cert_dir / pki.CERT_FILE))}",
             f"{indent}  key_file: {_q(str(cert_dir / pki.KEY_FILE))}",
             f"{indent}  ca_file: {_q(str(cert_dir / pki.ROOT_FILE))}",
             f"{indent}  timeout: {TLS_TIMEOUT}"]
    lines.append(f"{indent}  verify_and_map: true" if map_users else f"{indent}  verify: true")
    lines.append(f"{indent}}}")
    return lines


def render(host: str, port: int, cert_dir: str | Path, *, server_name: str = "", cluster_name: str = "shoal",
           cluster_host: str | None = None, cluster_port: int | None = None, routes: Sequence[str] = (),
           http_port: int | None = None) -> str:
    """A nats-server configuration listening on `host:port` with the identity in `cert_dir` (the `nats`
    component's certificate). With `cluster_port`, a `cluster {}` block listens for routes there (over TLS,
    only from other managers' `nats` certificates) and dials `routes` (`tls://host:port` URLs of the other
    managers' cluster ports). `http_port`: nats-server's monitoring endpoint on 127.0.0.1 (off by default)."""
    cert_dir = Path(cert_dir)
    out: list[str] = ["# nats-server configuration rendered by shoal.natsconf; do not edit",
                      f"listen: {_q(f'{host}:{port}')}"]
    if server_name:
        out.append(f"server_name: {_q(server_name)}")
    if http_port is not None:
        out.append(f"http: {_q(f'127.0.0.1:{http_port}')}")
    out += _tls_block(cert_dir, "", map_users=True)
    out.append("authorization {")
    out.append("  users = [")
    for component, perms in PERMISSIONS.items():
        out.append(f"    {{ user: {_q(user_name(component))}, permissions: {{ "
                   f"publish: {_allow(perms.publish)}, subscribe: {_allow(perms.subscribe)} }} }}")
    out.append("  ]")
    out.append("}")
    if cluster_port is not None:
        out.append("cluster {")
        out.append(f"  name: {_q(cluster_name)}")
        out.append(f"  listen: {_q(f'{cluster_host or host}:{cluster_port}')}")
        out += _tls_block(cert_dir, "  ", map_users=True)
        # verify_and_map on routes: only a certificate whose e-mail SAN is the nats component's may route
        out.append(f"  authorization {{ user: {_q(ROUTE_USER)} }}")
        if routes:
            out.append(f"  routes: {_list([_route_url(r) for r in routes])}")
        out.append("}")
    elif routes:
        raise ValueError("natsconf: routes need a cluster_port to listen on")
    return "\n".join(out) + "\n"


def _route_url(url: str) -> str:
    if url.startswith("nats-route://") or url.startswith("nats://"):
        raise ValueError(f"natsconf: route {url!r} must be tls://host:port (routes only speak TLS)")
    return url if url.startswith("tls://") else f"tls://{url}"


def write(path: str | Path, text: str) -> Path:
    """Write a rendered configuration (0600: it names the key file) and return its path."""
    p = Path(path)
    pki.write_private(p, text.encode())
    return p
