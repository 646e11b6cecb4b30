"""Gateway settings: the shared SHOAL_* variables plus the gateway's own knobs."""

from __future__ import annotations

from pydantic import Field, field_validator

from shoal.config import CommonSettings, split_list

DEFAULT_PORT = 4242  # SwarmKit's remote API port (`swarmd --listen-remote-api`)


class GatewaySettings(CommonSettings):
    """`SHOAL_STORE_MEMBERS`, `SHOAL_HOST`, `SHOAL_PORT` (default 4242), plus:

    `SHOAL_STORE_TIMEOUT` — seconds one store request may take;
    `SHOAL_STORE_RETRY_FOR` — seconds to keep failing over between members (e.g. during an election) before
    answering 503;
    `SHOAL_MEMBER_STATUS_TIMEOUT` — seconds to wait for each raftstore member's status in `GET /v1/cluster`;
    `SHOAL_READY_PROBE_INTERVAL` — seconds between the store probes behind `/readyz` (and the re-reads of the
    cluster object's removed nodes, whose certificates the gateway then refuses);
    `SHOAL_CA_URLS` — comma-separated URLs of the CA services the join-token requests are relayed to;
    `SHOAL_CA_TIMEOUT` — seconds one CA request may take;
    `SHOAL_DISPATCHER_URLS` — comma-separated URLs of the dispatchers, asked for task logs (the one holding a
    node's session streams them);
    `SHOAL_UI` — serve the dashboard under `/ui/` (default true; false keeps every request certificate-only);
    `SHOAL_UI_MAX_CLIENTS` — browsers one gateway streams the dashboard to at once;
    `SHOAL_UI_INTERVAL` — seconds between the dashboard's snapshots;
    `SHOAL_UI_TOKEN_TTL` / `SHOAL_UI_SESSION_TTL` — seconds a login link / a browser session is valid."""

    port: int = DEFAULT_PORT
    store_timeout: float = 10.0
    store_retry_for: float = 5.0
    member_status_timeout: float = 2.0
    ready_probe_interval: float = 2.0
    ca_timeout: float = 5.0
    dispatcher_urls: list[str] = []
    ui: bool = True
    ui_max_clients: int = Field(32, ge=1, le=1024)
    ui_interval: float = Field(1.0, gt=0, le=60)
    ui_token_ttl: float = Field(60.0, gt=0, le=3600)
    ui_session_ttl: float = Field(8 * 3600.0, gt=0, le=7 * 24 * 3600)

    _split_dispatchers = field_validator("dispatcher_urls", mode="before")(split_list)
