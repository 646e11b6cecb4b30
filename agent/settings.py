"""Agent settings, read from SHOAL_* environment variables (built once in `__main__`)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shoal.config import split_list

DEFAULT_PORT = 4331


class AgentSettings(BaseSettings):
    """`SHOAL_DISPATCHERS` — comma-separated dispatcher URLs (failover in order, starting at a random one);
    `SHOAL_STATE_DIR` — node id, task records and task logs (default `~/.shoal/agent/<hostname>`);
    `SHOAL_HOSTNAME` — the node's hostname (default: the machine's; distinct ones let several agents share
        a machine);
    `SHOAL_EXECUTORS` — comma-separated: `process` (default) and/or `hollow`;
    `SHOAL_HOST` / `SHOAL_PORT` — where /healthz, /readyz, /metrics, /v1/status and /v1/tasks are served;
    `SHOAL_ADDR` — the address to advertise (default: what the dispatcher sees);
    `SHOAL_STOP_TASKS_ON_EXIT` — stop task processes when the agent exits (default true, so `shoal down`
        leaves nothing behind; a restarted agent reports them FAILED and the orchestrator replaces them);
    `SHOAL_EXIT_GRACE` — seconds the graceful stop of tasks may take at exit before they are killed (default 5);
    `SHOAL_RPC_TIMEOUT` (5 s), `SHOAL_ASSIGNMENTS_WAIT` (long-poll seconds, 20),
    `SHOAL_STATUS_INTERVAL` (seconds status reports are gathered, 0.1)."""

    model_config = SettingsConfigDict(env_prefix="SHOAL_", extra="ignore")

    dispatchers: Annotated[list[str], NoDecode] = ["http://127.0.0.1:4324"]
    state_dir: Path | None = None
    hostname: str = Field(default_factory=socket.gethostname)
    executors: Annotated[list[str], NoDecode] = ["process"]
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    addr: str | None = None
    instance: str = ""
    log_level: str = "INFO"
    stop_tasks_on_exit: bool = True
    exit_grace: float = 5.0
    rpc_timeout: float = 5.0
    assignments_wait: float = 20.0
    status_interval: float = 0.1

    _split = field_validator("dispatchers", "executors", mode="before")(split_list)

    def resolved_state_dir(self) -> Path:
        return (self.state_dir or Path.home() / ".shoal" / "agent" / self.hostname).expanduser()

    def instance_name(self) -> str:
        return self.instance or f"agent@{self.hostname}:{self.port}"
