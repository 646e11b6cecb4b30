"""CA settings: the shared SHOAL_* variables plus the CA's own."""

from __future__ import annotations

from shoal.config import CommonSettings

DEFAULT_PORT = 4325


class CASettings(CommonSettings):
    """`SHOAL_STORE_MEMBERS`, `SHOAL_HOST`, `SHOAL_PORT` (default 4325), `SHOAL_CERT_DIR` (its own manager
    certificate, component `ca`), plus:

    `SHOAL_CA_BOOTSTRAP` — a 0600 JSON file written by init (`cluster_id`, `root_cert`, `root_key`, `tokens`):
        loaded into the store's `ca` object if absent, then deleted;
    `SHOAL_TEST_CERT_EXPIRY` — seconds; overrides the cluster's certificate lifetime without its one-hour
        minimum (tests only);
    `SHOAL_REVOCATION_POLL` — seconds between reads of the cluster object's removed nodes (default 2)."""

    port: int = DEFAULT_PORT
    ca_bootstrap: str = ""
    test_cert_expiry: float | None = None
    revocation_poll: float = 2.0
