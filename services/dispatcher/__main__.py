"""`python -m services.dispatcher`: serve the agent protocol on SHOAL_HOST:SHOAL_PORT (default 4324) over the
raftstore members in SHOAL_STORE_MEMBERS, sharing heartbeats with other dispatchers over SHOAL_NATS_URL.
Mutual TLS only, with the manager certificate (component `dispatcher`) in SHOAL_CERT_DIR; agents are known by
their certificates (services.dispatcher.core.policy). Flags override the environment."""

from __future__ import annotations

import logging

from services.dispatcher.app import create_app
from services.dispatcher.core import policy
from services.dispatcher.settings import DispatcherSettings
from shoal import heap, pki, transport
from shoal.enroll import RootsDigest
from shoal.instances import Announcer
from shoal.runner import flag_parser, run, serve, settings_from, setup_logging
from shoal.service import connect_bus
from shoal.store.client import StoreClient

# Agents hold long polls open; on shutdown they are cut after this long (agents simply re-register elsewhere)
# instead of holding the process up for a whole poll.
GRACEFUL_SHUTDOWN = 1


def parse_settings(argv: list[str] | None = None) -> DispatcherSettings:
    p = flag_parser("python -m services.dispatcher", __doc__, 4324)
    p.add_argument("--nats-url", help="NATS server URL (SHOAL_NATS_URL)")
    p.add_argument("--heartbeat-period", type=float, help="seconds (SHOAL_HEARTBEAT_PERIOD, default 5)")
    return settings_from(p, DispatcherSettings, argv)


async def main(settings: DispatcherSettings) -> None:
    name = settings.instance_name("dispatcher")
    setup_logging(settings.log_level, name)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    heap.decoded.enable()  # its mirror keeps every task version it decodes (shoal.heap.DecodedFreezer)
    creds = transport.load_credentials(settings.cert_dir)
    if creds.identity.role != pki.MANAGER or creds.identity.component != "dispatcher":
        raise transport.TransportError(f"dispatcher: SHOAL_CERT_DIR holds the certificate of "
                                       f"{creds.identity.describe()}, not of a manager's dispatcher")
    store = StoreClient(settings.store_members, creds=creds)
    bus = await connect_bus(settings.nats_url, name, creds)
    announcer = Announcer(bus, "dispatcher", name, port=settings.port)  # listed by `GET /v1/cluster`
    announcer.start()
    revoked = transport.Revocations()  # kept current by the dispatcher from the cluster object
    try:
        app = create_app(settings, store=store, bus=bus, revocations=revoked,
                         roots=RootsDigest(lambda: creds.roots_pem))
        await serve(app, settings.host, settings.port, creds, policy, revoked=revoked,
                    renew_with=settings.ca_urls, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN)
    finally:
        await announcer.stop()
        await bus.close()
        await store.close()


if __name__ == "__main__":
    cfg = parse_settings()
    run(lambda: main(cfg))
