"""`python -m services.ca`: the cluster's certificate authority on SHOAL_HOST:SHOAL_PORT (default 4325): joins,
renewals and join tokens, signing with the root key read from the store (kind `ca`, which only this component
may read). Its own identity: SHOAL_CERT_DIR (a manager certificate, component `ca`). Flags override the
environment."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from services.ca.app import create_app
from services.ca.core import ANONYMOUS_PATHS, policy
from services.ca.settings import CASettings
from shoal import lockbox, transport
from shoal.runner import flag_parser, run, serve, settings_from, setup_logging
from shoal.store.client import StoreClient

log = logging.getLogger("services.ca")


def parse_settings(argv: list[str] | None = None) -> CASettings:
    p = flag_parser("python -m services.ca", __doc__, 4325)
    p.add_argument("--ca-bootstrap", help="init's bootstrap file (SHOAL_CA_BOOTSTRAP)")
    return settings_from(p, CASettings, argv)


async def main(settings: CASettings) -> None:
    setup_logging(settings.log_level, settings.instance_name("ca"))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        creds = transport.load_credentials(settings.cert_dir)
    except transport.CredentialsLocked:
        # autolock: this CA's TLS key is encrypted under the unlock key; no TLS until an admin unlocks it here
        cert_dir = Path(settings.cert_dir)
        log.warning("ca: autolock is on and this CA is locked: serving only health and POST /v1/unlock on %s "
                    "until `shoal swarm unlock`", lockbox.socket_path(cert_dir))
        unlocker = lockbox.Unlocker(lambda kek: transport.Credentials(cert_dir, kek=kek), name="ca",
                                    status_id=settings.instance_name("ca"), wrong=(transport.TransportError,))
        creds = await lockbox.wait_for_unlock(cert_dir, unlocker)
    if creds.identity.role != "swarm-manager" or creds.identity.component != "ca":
        raise transport.TransportError(f"ca: SHOAL_CERT_DIR holds the certificate of {creds.identity.describe()}, "
                                       "not of a manager's ca component")
    store = StoreClient(settings.store_members, creds=creds)
    revoked = transport.Revocations()
    try:
        await serve(create_app(settings, store=store, revocations=revoked, on_unlock_key=follow_unlock_key(creds)),
                    settings.host, settings.port, creds,
                    policy, revoked=revoked, anonymous=ANONYMOUS_PATHS, renew_with=settings.ca_urls)
    finally:
        await store.close()


def follow_unlock_key(creds: transport.Credentials) -> Callable[[bytes | None], None]:
    """Keep the CA's TLS key as autolock wants it (SwarmKit's rule, shoal.keyfile): encrypted under the
    cluster's unlock key while there is one (re-written when it rotates), a plain PEM when autolock is off.
    Each write is one atomic replacement; the key stays under the key that was current when the CA last ran."""
    def follow(kek: bytes | None) -> None:
        if creds.rekey(kek):
            log.warning("ca: this CA's TLS key is now %s", "encrypted under the unlock key; a restart will need "
                        "`shoal swarm unlock`" if kek is not None else "a plain PEM (autolock is off)")

    return follow


if __name__ == "__main__":
    cfg = parse_settings()
    run(lambda: main(cfg))
