"""User-written specs, validated at the API edge (SwarmKit's ServiceSpec/TaskSpec/NodeSpec in snake_case).

Unknown fields are refused so a typo never silently means "default". Defaults follow SwarmKit's
`api/defaults/service.go`: restart condition any, delay 5 s; stop grace period 10 s."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shoal.models.duration import Duration

NAME_RE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?$")
CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(==|!=)\s*(.*?)\s*$")
MIN_NANO_CPUS = 1_000_000  # 0.001 CPU
MIN_MEMORY = 4 * 1024 * 1024


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ProcessSpec(Strict):
    """Run `command` as a local process group (the `process` runtime)."""

    command: list[str]
    env: dict[str, str] = Field(default_factory=dict)
    dir: str | None = None
    stop_grace_period: Duration = 10.0

    @field_validator("command")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v or not v[0].strip():
            raise ValueError("command must not be empty")
        return v


class Mount(Strict):
    type: Literal["bind", "volume", "tmpfs"] = "volume"
    source: str | None = None
    target: str
    read_only: bool = False


class HealthCheck(Strict):
    test: list[str] = Field(default_factory=list)
    interval: Duration = 0.0
    timeout: Duration = 0.0
    retries: int = Field(default=0, ge=0)
    start_period: Duration = 0.0


class ContainerSpec(Strict):
    """SwarmKit's ContainerSpec (the `container` runtime, run through the Docker engine)."""

    image: str = Field(min_length=1)
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    dir: str | None = None
    user: str | None = None
    hostname: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    mounts: list[Mount] = Field(default_factory=list)
    stop_signal: str | None = None
    stop_grace_period: Duration = 10.0
    healthcheck: HealthCheck | None = None
    read_only: bool = False
    init: bool | None = None


class ResourceSet(Strict):
    nano_cpus: int = Field(default=0, ge=0)
    memory_bytes: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _minimums(self) -> ResourceSet:
        if 0 < self.nano_cpus < MIN_NANO_CPUS:
            raise ValueError("nano_cpus must be 0 or at least 1000000 (0.001 CPU)")
        if 0 < self.memory_bytes < MIN_MEMORY:
            raise ValueError("memory_bytes must be 0 or at least 4 MiB")
        return self


class Resources(Strict):
    limits: ResourceSet = Field(default_factory=ResourceSet)
    reservations: ResourceSet = Field(default_factory=ResourceSet)


class RestartPolicy(Strict):
    condition: Literal["none", "on-failure", "any"] = "any"
    delay: Duration = 5.0
    max_attempts: int = Field(default=0, ge=0)
    window: Duration = 0.0


class Placement(Strict):
    constraints: list[str] = Field(default_factory=list)
    max_replicas: int = Field(default=0, ge=0)

    @field_validator("constraints")
    @classmethod
    def _parse(cls, v: list[str]) -> list[str]:
        for c in v:
            m = CONSTRAINT_RE.match(c)
            if not m or not m.group(1):
                raise ValueError(f"invalid constraint {c!r}: expected 'key==value' or 'key!=value'")
        return v


class TaskSpec(Strict):
    process: ProcessSpec | None = None
    container: ContainerSpec | None = None
    resources: Resources = Field(default_factory=Resources)
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    placement: Placement = Field(default_factory=Placement)
    force_update: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _one_runtime(self) -> TaskSpec:
        if (self.process is None) == (self.container is None):
            raise ValueError("exactly one of task.process or task.container must be given")
        return self

    @property
    def runtime(self) -> str:
        return "process" if self.process is not None else "container"


class ReplicatedMode(Strict):
    replicas: int = Field(default=1, ge=0)


class GlobalMode(Strict):
    pass


class ServiceMode(Strict):
    replicated: ReplicatedMode | None = None
    global_: GlobalMode | None = Field(default=None, alias="global")

    @model_validator(mode="after")
    def _one_mode(self) -> ServiceMode:
        if self.replicated is None and self.global_ is None:
            self.replicated = ReplicatedMode()
        if self.replicated is not None and self.global_ is not None:
            raise ValueError("exactly one mode may be given")
        return self


class ServiceSpec(Strict):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    mode: ServiceMode = Field(default_factory=ServiceMode)
    task: TaskSpec

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                "name must be 1-63 characters of letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit"
            )
        return v

    def wire(self) -> dict[str, object]:
        """The JSON form stored in the service object (aliases, defaults filled in)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class NodeSpec(Strict):
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    role: Literal["worker", "manager"] = "worker"
    availability: Literal["active", "pause", "drain"] = "active"


def parse_constraint(text: str) -> tuple[str, str, str]:
    """(key, operator, value) of a validated constraint."""
    m = CONSTRAINT_RE.match(text)
    if not m:
        raise ValueError(f"invalid constraint {text!r}")
    return m.group(1), m.group(2), m.group(3)
