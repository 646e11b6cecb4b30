"""Base settings every process shares, read from SHOAL_* environment variables (built once in __main__)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator


def split_list(v: object) -> object:
    if isinstance(v, str):
        return [x.strip() for x in v.split(",") if x.strip()]
    return v


class EnvSettings(BaseModel):
    """A settings model read from the environment: each field from `SHOAL_<FIELD>` (the name in any case),
    keyword arguments in place of their variables, unknown names ignored, defaults validated too. What shoal
    used of pydantic-settings, on a plain pydantic model: that package cost ~1.3 MiB of resident memory in every
    process (docs/performance.md "Footprint"). Values are validated as pydantic validates any input string
    (`"true"`/`"1"` for a bool, a number for a float), so a bad value fails at start with pydantic's message
    naming the field; comma-separated lists are split by the fields' own validators (`split_list`)."""

    model_config = ConfigDict(extra="ignore", validate_default=True)
    env_prefix: ClassVar[str] = "SHOAL_"

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**self.from_environment(), **values})

    @classmethod
    def from_environment(cls) -> dict[str, str]:
        """The fields' values the environment gives (variable names compared without case)."""
        env = {k.lower(): v for k, v in os.environ.items()}
        prefix = cls.env_prefix.lower()
        return {name: env[prefix + name] for name in cls.model_fields if prefix + name in env}


class CommonSettings(EnvSettings):
    """`SHOAL_NATS_URL`, `SHOAL_STORE_MEMBERS` (comma-separated URLs), `SHOAL_HOST`, `SHOAL_PORT`,
    `SHOAL_CERT_DIR` (the process's certificate directory; every process requires one)."""

    nats_url: str = "nats://127.0.0.1:4222"
    store_members: list[str] = ["http://127.0.0.1:4301"]
    host: str = "127.0.0.1"
    port: int = 0
    instance: str = ""  # an instance name for logs, metrics and leases; defaults to host:port
    log_level: str = "INFO"
    #: this process's identity: swarm-node.crt, swarm-node.key, swarm-root-ca.crt (shoal.transport.Credentials)
    cert_dir: str = ""
    #: the CA services (`https://host:port`, comma-separated) a process joins through and renews its
    #: certificate with (SHOAL_CA_URLS)
    ca_urls: list[str] = []

    _split = field_validator("store_members", "ca_urls", mode="before")(split_list)

    def instance_name(self, role: str) -> str:
        import socket

        return self.instance or f"{role}@{socket.gethostname()}:{self.port or os.getpid()}"
