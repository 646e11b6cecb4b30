"""The spec of the cluster object (SwarmKit's ClusterSpec): heartbeat period, task history retention, the CA's
certificate lifetime and autolock, validated at the API edge like the other specs (shoal/models/specs.py)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from shoal.models.duration import Duration
from shoal.models.specs import (
    DEFAULT_HEARTBEAT_PERIOD,
    DEFAULT_TASK_HISTORY,
    MAX_COUNT,
    MAX_HEARTBEAT_PERIOD,
    MIN_HEARTBEAT_PERIOD,
    Strict,
)


class DispatcherConfig(Strict):
    """`heartbeat_period`: how often agents heartbeat (a node is DOWN after 3 missed periods)."""

    heartbeat_period: Duration = DEFAULT_HEARTBEAT_PERIOD

    @field_validator("heartbeat_period")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("heartbeat_period must be greater than 0")
        if not MIN_HEARTBEAT_PERIOD <= v <= MAX_HEARTBEAT_PERIOD:
            raise ValueError(f"heartbeat_period must be between {MIN_HEARTBEAT_PERIOD:g}s and "
                             f"{MAX_HEARTBEAT_PERIOD:g}s (got {v:g}s): faster periods make nodes flap to DOWN")
        return v


class OrchestrationConfig(Strict):
    """`task_history_retention_limit`: terminal tasks kept per slot (or node); negative = keep them all."""

    task_history_retention_limit: int = Field(default=DEFAULT_TASK_HISTORY, ge=-MAX_COUNT, le=MAX_COUNT)


#: SwarmKit's DefaultNodeCertExpiration (90 days) and MinNodeCertExpiration (1 hour), in seconds
DEFAULT_NODE_CERT_EXPIRY = 90 * 24 * 3600.0
MIN_NODE_CERT_EXPIRY = 3600.0


class CAConfig(Strict):
    """`node_cert_expiry`: how long the certificates the CA issues are valid (seconds or a duration string;
    at least an hour, as SwarmKit's). Nodes renew at 50-80% of it."""

    node_cert_expiry: Duration = DEFAULT_NODE_CERT_EXPIRY

    @field_validator("node_cert_expiry")
    @classmethod
    def _at_least_an_hour(cls, v: float) -> float:
        if v < MIN_NODE_CERT_EXPIRY:
            raise ValueError(f"node_cert_expiry must be at least {MIN_NODE_CERT_EXPIRY:g} seconds (1h), got {v:g}")
        return v


class EncryptionConfig(Strict):
    """Autolock (SwarmKit's `encryption_config.auto_lock_managers`): the managers' data keys are wrapped by an
    unlock key that is on no disk, so a restarted manager stays locked until `shoal swarm unlock`."""

    auto_lock_managers: bool = False


class ClusterSpec(Strict):
    """The spec of the single cluster object ("default"; it cannot be renamed)."""

    name: str = "default"
    dispatcher: DispatcherConfig = Field(default_factory=DispatcherConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    ca_config: CAConfig | None = None  # absent = the CA's default (90 days)
    encryption_config: EncryptionConfig | None = None  # absent = autolock off

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
