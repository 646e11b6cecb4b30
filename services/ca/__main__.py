"""`python -m services.ca`: the cluster's certificate authority on SHOAL_HOST:SHOAL_PORT (default 4325): joins,
renewals and join tokens, signing with the root key read from the store (kind `ca`, which only this component
may read). Its own identity: SHOAL_CERT_DIR (a manager certificate, component `ca`). Flags override the
environment."""

from __future__ import annotations

import argparse
import logging

from services.ca.app import create_app
from services.ca.core import ANONYMOUS_PATHS, policy
from services.ca.settings import CASettings
from shoal import transport
from shoal.runner import run, serve, setup_logging
from shoal.store.client import StoreClient


def parse_settings(argv: list[str] | None = None) -> CASettings:
    p = argparse.ArgumentParser(prog="python -m services.ca", description=__doc__)
    p.add_argument("--host", help="listen address (SHOAL_HOST)")
    p.add_argument("--port", type=int, help="listen port (SHOAL_PORT, default 4325)")
    p.add_argument("--store-members", help="comma-separated raftstore API URLs (SHOAL_STORE_MEMBERS)")
    p.add_argument("--ca-bootstrap", help="init's bootstrap file (SHOAL_CA_BOOTSTRAP)")
    a = p.parse_args(argv)
    return CASettings(**{k: v for k, v in vars(a).items() if v is not None})


async def main(settings: CASettings) -> None:
    setup_logging(settings.log_level, settings.instance_name("ca"))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    creds = transport.load_credentials(settings.cert_dir)
    if creds.identity.role != "swarm-manager" or creds.identity.component != "ca":
        raise transport.TransportError(f"ca: SHOAL_CERT_DIR holds the certificate of {creds.identity.describe()}, "
                                       "not of a manager's ca component")
    store = StoreClient(settings.store_members, creds=creds)
    revoked = transport.Revocations()
    try:
        await serve(create_app(settings, store=store, revocations=revoked), settings.host, settings.port, creds,
                    policy, revoked=revoked, anonymous=ANONYMOUS_PATHS, renew_with=settings.ca_urls)
    finally:
        await store.close()


if __name__ == "__main__":
    cfg = parse_settings()
    run(lambda: main(cfg))
