"""Base settings every process shares, read from SHOAL_* environment variables (built once in __main__)."""

from __future__ import annotations

from typing import Annotated

from pydantic import field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def split_list(v: object) -> object:
    if isinstance(v, str):
        return [x.strip() for x in v.split(",") if x.strip()]
    return v


class CommonSettings(BaseSettings):
    """`SHOAL_NATS_URL`, `SHOAL_STORE_MEMBERS` (comma-separated URLs), `SHOAL_HOST`, `SHOAL_PORT`,
    `SHOAL_CERT_DIR` (the process's certificate directory; every process requires one)."""

    model_config = SettingsConfigDict(env_prefix="SHOAL_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    store_members: Annotated[list[str], NoDecode] = ["http://127.0.0.1:4301"]
    host: str = "127.0.0.1"
    port: int = 0
    instance: str = ""  # an instance name for logs, metrics and leases; defaults to host:port
    log_level: str = "INFO"
    #: this process's identity: swarm-node.crt, swarm-node.key, swarm-root-ca.crt (shoal.transport.Credentials)
    cert_dir: str = ""
    #: the CA services (`https://host:port`, comma-separated) a process joins through and renews its
    #: certificate with (SHOAL_CA_URLS)
    ca_urls: Annotated[list[str], NoDecode] = []

    _split = field_validator("store_members", "ca_urls", mode="before")(split_list)

    def instance_name(self, role: str) -> str:
        import os
        import socket

        return self.instance or f"{role}@{socket.gethostname()}:{self.port or os.getpid()}"
