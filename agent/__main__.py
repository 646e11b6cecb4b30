"""`python -m agent`: run a node's agent — join the cluster through a CA of SHOAL_CA_URLS with SHOAL_JOIN_TOKEN if
SHOAL_CERT_DIR holds no certificate yet, register with a dispatcher of SHOAL_DISPATCHERS, run the tasks it
assigns with the executors of SHOAL_EXECUTORS, renew the certificate before it expires, and serve /healthz,
/metrics and /v1/tasks on SHOAL_HOST:SHOAL_PORT (default 127.0.0.1:4331, mutual TLS, managers and admins only).
A refused join (wrong or rotated token, a root that does not match the token) exits with status 2;
SHOAL_MESH=kernel on a machine without the kernel path, with status 3 (naming what is missing). Flags
override the environment."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from agent.agent import Agent
from agent.app import create_app
from agent.mesh import KernelUnavailable, choose_mode
from agent.settings import AgentSettings
from shoal import enroll as identity
from shoal import transport
from shoal.runner import flag_parser, run, serve, settings_from, setup_logging

log = logging.getLogger("agent")

JOIN_RETRY_MAX = 10.0
EXIT_JOIN_REFUSED = 2
EXIT_MESH_UNAVAILABLE = 3


def parse_settings(argv: list[str] | None = None) -> AgentSettings:
    p = flag_parser("python -m agent", __doc__, 4331, store=False)
    p.add_argument("--dispatchers", help="comma-separated dispatcher URLs (SHOAL_DISPATCHERS)")
    p.add_argument("--state-dir", help="state directory (SHOAL_STATE_DIR)")
    p.add_argument("--hostname", help="node hostname (SHOAL_HOSTNAME)")
    p.add_argument("--executors", help="comma-separated executors: process, hollow (SHOAL_EXECUTORS)")
    p.add_argument("--ca-urls", help="comma-separated CA URLs (SHOAL_CA_URLS)")
    return settings_from(p, AgentSettings, argv)


async def ensure_identity(settings: AgentSettings) -> transport.Credentials:
    """The node's credentials: those in the certificate directory, or new ones from joining (retried while
    no CA answers; a refusal raises `identity.JoinRefused`)."""
    cert_dir = settings.resolved_cert_dir()
    if not identity.has_identity(cert_dir):
        if not settings.join_token:
            raise identity.JoinRefused(f"agent: {cert_dir} holds no certificate and SHOAL_JOIN_TOKEN is not set; "
                                       "get a token with `shoal swarm join-token worker`")
        delay = 0.2
        while True:
            try:
                await identity.join(settings.ca_urls, settings.join_token, cert_dir, hostname=settings.hostname,
                                    hosts=settings.cert_hosts(), timeout=settings.rpc_timeout * 2)
                break
            except identity.CAUnavailable as e:
                log.warning("agent: cannot join yet (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, JOIN_RETRY_MAX)
    return transport.load_credentials(cert_dir)


async def main(settings: AgentSettings) -> None:
    setup_logging(settings.log_level, settings.instance_name())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    try:
        mesh_mode = await asyncio.to_thread(choose_mode, settings.mesh)  # SHOAL_MESH: kernel or userspace path
    except KernelUnavailable as e:
        log.error("agent: %s", e)
        sys.exit(EXIT_MESH_UNAVAILABLE)
    try:
        creds = await ensure_identity(settings)
    except identity.JoinRefused as e:
        log.error("%s", e)
        sys.exit(EXIT_JOIN_REFUSED)
    agent = Agent(settings, creds=creds)
    await asyncio.to_thread(agent.mesh.use, *mesh_mode)
    agent.on_leave = lambda: os.kill(os.getpid(), signal.SIGTERM)  # removed from the cluster: exit gracefully
    await serve(create_app(agent), settings.host, settings.port, creds, transport.managers_only)


if __name__ == "__main__":
    cfg = parse_settings()
    run(lambda: main(cfg))
