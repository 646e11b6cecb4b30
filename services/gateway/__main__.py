"""`python -m services.gateway`: serve the REST API on SHOAL_HOST:SHOAL_PORT (default 127.0.0.1:4242) over
the raftstore members in SHOAL_STORE_MEMBERS, over mutual TLS with the identity in SHOAL_CERT_DIR (admins only;
services/gateway/policy.py), and the dashboard under /ui/ (a browser gets in with a login link from `shoal ui`;
SHOAL_UI=false turns it off and makes every request need a certificate). Flags override the environment."""

from __future__ import annotations

import contextlib
from typing import Any

from services.gateway.app import create_app
from services.gateway.policy import gateway_policy
from services.gateway.settings import GatewaySettings
from services.gateway.ui.sessions import LOGIN_PATH, UiSessions
from shoal import transport
from shoal.bus.nats import NatsBus
from shoal.runner import flag_parser, run, serve, settings_from, setup_logging
from shoal.store.client import StoreClient

#: seconds requests still in progress get when the gateway stops (dashboard streams and log follows never end
#: on their own)
GRACEFUL_SHUTDOWN = 2
UI_LOGIN_HINT = " (a browser: open the login link `shoal ui` prints)"


def parse_settings(argv: list[str] | None = None) -> GatewaySettings:
    return settings_from(flag_parser("python -m services.gateway", __doc__, 4242), GatewaySettings, argv)


async def main(settings: GatewaySettings) -> None:
    name = settings.instance_name("gateway")
    setup_logging(settings.log_level, name)
    creds = transport.load_credentials(settings.cert_dir)  # no identity, no gateway (never plaintext)
    store = StoreClient(settings.store_members, timeout=settings.store_timeout, retry_for=settings.store_retry_for,
                        client=transport.http_client(creds, timeout=settings.store_timeout))
    member_http = transport.http_client(creds, timeout=settings.member_status_timeout)
    ca_http = transport.http_client(creds, timeout=settings.ca_timeout)
    revoked = transport.Revocations()
    bus = await NatsBus.connect(settings.nats_url, name, creds)  # instance heartbeats for /v1/cluster; optional
    try:
        sessions = UiSessions(creds.identity.cluster_id, token_ttl=settings.ui_token_ttl,
                              session_ttl=settings.ui_session_ttl)
        app = create_app(settings, store=store, http=member_http, bus=bus, revoked=revoked, ca_http=ca_http,
                         ui_sessions=sessions)
        # With the dashboard on, a TLS client without a certificate is let in to the login path and, with a
        # live session cookie, to the dashboard; everything else still needs an admin certificate (Guard).
        ui: dict[str, Any] = {"anonymous": (LOGIN_PATH,), "authenticate": sessions.authenticate,
                              "login_hint": UI_LOGIN_HINT} if settings.ui else {}
        await serve(app, settings.host, settings.port, creds, gateway_policy, revoked=revoked,
                    renew_with=settings.ca_urls, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN, **ui)
    finally:
        with contextlib.suppress(Exception):
            await bus.close()
        await member_http.aclose()
        await ca_http.aclose()
        await store.close()


if __name__ == "__main__":
    cfg = parse_settings()
    run(lambda: main(cfg))
