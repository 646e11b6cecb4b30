"""User-written specs, validated at the API edge (SwarmKit's ServiceSpec/TaskSpec/NodeSpec in snake_case).

Unknown fields are refused so a typo never silently means "default", and nothing is coerced (strict mode:
`"3"` is not a number, `1` is not a boolean; durations keep their documented string form such as `"5s"`).
Every size is bounded (`limits` below: replicas, resources, durations, names, labels, env, arguments), and text
that reaches a process, a log line or a label may not hold control characters (NUL never). Defaults follow SwarmKit's
`api/defaults/service.go` and are written into the stored spec (what `GetService(insert_defaults=true)` shows):
restart condition any, delay 5 s; stop grace period 10 s; update and rollback configs parallelism 1, delay 0,
failure action pause, monitor 5 s, max failure ratio 0, stop-first (services only: jobs may not have them);
endpoint mode vip with ingress-published tcp ports.

The cluster object's spec is in `shoal/models/cluster_spec.py`, user-defined networks' in
`shoal/models/network_spec.py`; both build on `Strict` and the limits here."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from shoal.models.duration import Duration
from shoal.models.secrets import ConfigReference, SecretReference, check_distinct_targets

NAME_RE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?$")
CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(==|!=)\s*(.*?)\s*$")
MIN_NANO_CPUS = 1_000_000  # 0.001 CPU
MIN_MEMORY = 4 * 1024 * 1024
MAX_COUNT = 2**53 - 1  # SwarmKit's counters are uint64; JSON clients (and schemas) hold integers this large exactly

# ---- limits (hostile input, issue 16): values no machine has are refused at the edge ---------------------------
#: tasks of one service / one job (Docker's largest swarms run a few thousand tasks per service)
MAX_REPLICAS = 100_000
#: 4096 CPUs and 1 PiB of memory: more than any machine has
MAX_NANO_CPUS = 4096 * 10**9
MAX_MEMORY = 2**50
#: text sizes: names/keys, values, whole arguments
MAX_KEY_LEN = 255
MAX_VALUE_LEN = 4096
MAX_ARG_LEN = 64 * 1024
#: collection sizes: labels, env, arguments, constraints, mounts, ports, networks
MAX_LABELS = 256
MAX_ENV = 1024
MAX_ARGS = 1024
MAX_ITEMS = 128
#: the cluster's heartbeat period: 1 s (faster makes nodes flap to DOWN) to 1 h
MIN_HEARTBEAT_PERIOD = 1.0
MAX_HEARTBEAT_PERIOD = 3600.0
#: the shortest IPv4 and IPv6 prefixes a user-chosen subnet may have (no /0: the whole address space)
MIN_PREFIX = {4: 8, 6: 16}
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
ENV_NAME_RE = re.compile(r"^[^=\x00-\x1f\x7f]{1,255}$")
#: the same rules as JSON Schema patterns, so the OpenAPI schema says what the validators accept (schemathesis
#: generates only what these allow); the validators keep their own, clearer messages
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f]*$"
NO_NUL_PATTERN = r"^[^\x00]*$"
#: a DNS alias: no blanks, no control characters
ALIAS_PATTERN = r"^[^\s\x00-\x1f\x7f\x85]+$"  # U+0085: a blank to Python, not to ECMAScript's \s


def _no_control(v: str) -> str:
    if _CONTROL_RE.search(v):
        raise ValueError("must not contain control characters (NUL, newline, tab, ...)")
    return v


def _no_nul(v: str) -> str:
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


#: a short single-line string: names, keys, paths, images
Text = Annotated[str, Field(max_length=MAX_VALUE_LEN, json_schema_extra={"pattern": NO_CONTROL_PATTERN}),
                 AfterValidator(_no_control)]
Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY_LEN, json_schema_extra={"pattern": NO_CONTROL_PATTERN}),
                AfterValidator(_no_control)]
#: a command-line argument or environment value: any text but NUL (the OS cannot pass it), bounded
Arg = Annotated[str, Field(max_length=MAX_ARG_LEN, json_schema_extra={"pattern": NO_NUL_PATTERN}),
                AfterValidator(_no_nul)]
Labels = Annotated[dict[Key, Text], Field(max_length=MAX_LABELS, json_schema_extra={
    "propertyNames": {"pattern": NO_CONTROL_PATTERN, "minLength": 1, "maxLength": MAX_KEY_LEN}})]
Args = Annotated[list[Arg], Field(max_length=MAX_ARGS)]


def _env_names(v: dict[str, str]) -> dict[str, str]:
    for name in v:
        if not ENV_NAME_RE.match(name):
            raise ValueError(f"invalid environment variable name {name[:64]!r}: 1-255 characters without '=' "
                             "or control characters")
    return v


Env = Annotated[dict[str, Arg], Field(max_length=MAX_ENV, json_schema_extra={
    "propertyNames": {"pattern": ENV_NAME_RE.pattern}}), AfterValidator(_env_names)]
MIN_HEALTH_DURATION = 0.001  # SwarmKit: health check durations are 0 (inherit) or at least 1 ms
SPREAD_RE = re.compile(r"^(node|engine)\.labels\.\S+$")
KIND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DRIVER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./:-]{0,127}$")
HEALTH_TEST_KINDS = ("NONE", "CMD", "CMD-SHELL")
#: cluster defaults (the same numbers as shoal.cluster, which builds the stored object)
DEFAULT_HEARTBEAT_PERIOD = 5.0
DEFAULT_TASK_HISTORY = 5


#: a service or network name in the OpenAPI schema (check_name validates it)
Name = Annotated[str, Field(json_schema_extra={"pattern": NAME_RE.pattern, "minLength": 1, "maxLength": 63})]


def check_name(v: str) -> str:
    """Service and network names (SwarmKit's 63-character object names)."""
    if not NAME_RE.match(v):
        raise ValueError(
            "name must be 1-63 characters of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return v


class Strict(BaseModel):
    """Base of every spec model: unknown fields are refused, aliases and field names both accepted."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


class HealthCheck(Strict):
    """SwarmKit's HealthConfig, for both runtimes. `test`: `[]` (container: inherit the image's check;
    process: none), `["NONE"]` (disabled), `["CMD", arg...]` (exec) or `["CMD-SHELL", "command"]` (`/bin/sh -c`).
    Durations are 0 (container: inherit; process: the runtime's default) or at least 1 ms."""

    test: Args = Field(default_factory=list)
    interval: Duration = 0.0
    timeout: Duration = 0.0
    retries: int = Field(default=0, ge=0, le=MAX_COUNT)
    start_period: Duration = 0.0

    @field_validator("test")
    @classmethod
    def _test_form(cls, v: list[str]) -> list[str]:
        if not v:
            return v
        kind, rest = v[0], v[1:]
        if kind not in HEALTH_TEST_KINDS:
            raise ValueError(f"test must start with one of {', '.join(HEALTH_TEST_KINDS)} (got {kind!r})")
        if kind == "NONE" and rest:
            raise ValueError('test ["NONE"] takes no arguments')
        if kind == "CMD" and (not rest or not rest[0].strip()):
            raise ValueError('test ["CMD", ...] needs a command to execute')
        if kind == "CMD-SHELL" and (len(rest) != 1 or not rest[0].strip()):
            raise ValueError('test ["CMD-SHELL", "command"] takes exactly one non-empty shell command')
        return v

    @field_validator("interval", "timeout", "start_period")
    @classmethod
    def _min_duration(cls, v: float, info: ValidationInfo) -> float:
        if 0 < v < MIN_HEALTH_DURATION:
            raise ValueError(f"{info.field_name} must be 0 or at least 1ms")
        return v


class ProcessSpec(Strict):
    """Run `command` as a local process group (the `process` runtime)."""

    command: Args
    env: Env = Field(default_factory=dict)
    dir: Text | None = None
    stop_grace_period: Duration = 10.0
    healthcheck: HealthCheck | None = None
    #: run as this user: a name or uid, optionally `:group` (name or gid); the agent must be root to switch
    user: str | None = Field(default=None, max_length=65,
                             pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")

    @field_validator("command")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v or not v[0].strip():
            raise ValueError("command must not be empty")
        return v


class Mount(Strict):
    type: Literal["bind", "volume", "tmpfs"] = "volume"
    source: Text | None = None
    target: Annotated[Text, Field(min_length=1)]
    read_only: bool = False


class ContainerSpec(Strict):
    """SwarmKit's ContainerSpec (the `container` runtime, run through the Docker engine)."""

    image: Annotated[Text, Field(min_length=1)]
    command: Args = Field(default_factory=list)
    args: Args = Field(default_factory=list)
    env: Env = Field(default_factory=dict)
    dir: Text | None = None
    user: Key | None = None
    hostname: Key | None = None
    labels: Labels = Field(default_factory=dict)
    mounts: list[Mount] = Field(default_factory=list, max_length=MAX_ITEMS)
    stop_signal: Key | None = None
    stop_grace_period: Duration = 10.0
    healthcheck: HealthCheck | None = None
    read_only: bool = False
    init: bool | None = None


class ResourceSet(Strict):
    """CPU (nano CPUs, 1e9 = one CPU) and memory (bytes); 0 = none."""

    #: 0 (none) or at least the minimum (`_minimums`), said in the schema too
    nano_cpus: int = Field(default=0, ge=0, le=MAX_NANO_CPUS, json_schema_extra={
        "anyOf": [{"const": 0}, {"minimum": MIN_NANO_CPUS}]})
    memory_bytes: int = Field(default=0, ge=0, le=MAX_MEMORY, json_schema_extra={
        "anyOf": [{"const": 0}, {"minimum": MIN_MEMORY}]})

    @model_validator(mode="after")
    def _minimums(self) -> ResourceSet:
        if 0 < self.nano_cpus < MIN_NANO_CPUS:
            raise ValueError("nano_cpus must be 0 or at least 1000000 (0.001 CPU)")
        if 0 < self.memory_bytes < MIN_MEMORY:
            raise ValueError("memory_bytes must be 0 or at least 4 MiB")
        return self


class GenericResource(Strict):
    """A discrete generic resource request (`--generic-resource gpu=2`): `value` units of `kind`. Named
    resources (specific items such as GPU UUIDs) are advertised by nodes; tasks only ask for counts."""

    kind: str = Field(min_length=1, max_length=128)
    value: int = Field(ge=1, le=MAX_COUNT)

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if not KIND_RE.match(v):
            raise ValueError(f"invalid kind {v!r}: use letters, digits, '_', '.' or '-'")
        return v


class Reservations(ResourceSet):
    """What the scheduler sets aside for a task: CPU, memory and generic resources."""

    generic: list[GenericResource] = Field(default_factory=list, max_length=MAX_ITEMS)

    @field_validator("generic")
    @classmethod
    def _unique_kinds(cls, v: list[GenericResource]) -> list[GenericResource]:
        seen: set[str] = set()
        for r in v:
            if r.kind in seen:
                raise ValueError(f"generic resource kind {r.kind!r} is given more than once")
            seen.add(r.kind)
        return v


class Resources(Strict):
    limits: ResourceSet = Field(default_factory=ResourceSet)
    reservations: Reservations = Field(default_factory=Reservations)


class RestartPolicy(Strict):
    condition: Literal["none", "on-failure", "any"] = "any"
    delay: Duration = 5.0
    max_attempts: int = Field(default=0, ge=0, le=MAX_COUNT)
    window: Duration = 0.0


class PlacementPreference(Strict):
    """Spread tasks evenly over the values of a node label (`node.labels.zone`) or engine label."""

    spread: Annotated[Text, Field(max_length=MAX_KEY_LEN)]

    @field_validator("spread")
    @classmethod
    def _descriptor(cls, v: str) -> str:
        if not SPREAD_RE.match(v):
            raise ValueError(f"invalid spread descriptor {v!r}: expected 'node.labels.<key>' or "
                             "'engine.labels.<key>'")
        return v


class Platform(Strict):
    """A platform the task can run on (`linux`/`amd64`); an empty field matches any value."""

    os: Annotated[str, Field(max_length=64), AfterValidator(_no_control)] = ""
    arch: Annotated[str, Field(max_length=64), AfterValidator(_no_control)] = ""

    @model_validator(mode="after")
    def _something(self) -> Platform:
        if not self.os and not self.arch:
            raise ValueError("a platform needs an os, an arch, or both")
        return self


class Placement(Strict):
    constraints: list[Text] = Field(default_factory=list, max_length=MAX_ITEMS)
    preferences: list[PlacementPreference] = Field(default_factory=list, max_length=MAX_ITEMS)
    platforms: list[Platform] = Field(default_factory=list, max_length=MAX_ITEMS)
    max_replicas: int = Field(default=0, ge=0, le=MAX_REPLICAS)

    @field_validator("constraints")
    @classmethod
    def _parse(cls, v: list[str]) -> list[str]:
        for c in v:
            m = CONSTRAINT_RE.match(c)
            if not m or not m.group(1):
                raise ValueError(f"invalid constraint {c!r}: expected 'key==value' or 'key!=value'")
        return v


class NetworkAttachment(Strict):
    """Attach the task to a network (`target`: network id or name; the gateway stores the id) under extra
    DNS `aliases`."""

    target: Annotated[Key, Field(min_length=1)]
    aliases: list[Annotated[Key, Field(json_schema_extra={"pattern": ALIAS_PATTERN})]] = Field(
        default_factory=list, max_length=MAX_ITEMS)

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, v: list[str]) -> list[str]:
        for a in v:
            if not a or any(c.isspace() for c in a):
                raise ValueError(f"invalid alias {a!r}: must be non-empty without blanks")
        return v


class TaskSpec(Strict):
    #: exactly one runtime (`_one_runtime`), said in the schema too
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True, json_schema_extra={"oneOf": [
        {"required": ["process"], "properties": {"process": {"type": "object"}}},
        {"required": ["container"], "properties": {"container": {"type": "object"}}}]})

    process: ProcessSpec | None = None
    container: ContainerSpec | None = None
    resources: Resources = Field(default_factory=Resources)
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    placement: Placement = Field(default_factory=Placement)
    networks: list[NetworkAttachment] = Field(default_factory=list, max_length=MAX_ITEMS)
    force_update: int = Field(default=0, ge=0, le=MAX_COUNT)
    secrets: list[SecretReference] = Field(default_factory=list, max_length=256)
    configs: list[ConfigReference] = Field(default_factory=list, max_length=256)

    @field_validator("secrets")
    @classmethod
    def _distinct_secret_targets(cls, v: list[SecretReference]) -> list[SecretReference]:
        check_distinct_targets(v, "secret")
        return v

    @field_validator("configs")
    @classmethod
    def _distinct_config_targets(cls, v: list[ConfigReference]) -> list[ConfigReference]:
        check_distinct_targets(v, "config")
        return v

    @field_validator("networks")
    @classmethod
    def _distinct_networks(cls, v: list[NetworkAttachment]) -> list[NetworkAttachment]:
        seen: set[str] = set()
        for i, n in enumerate(v):
            key = n.target.lower()
            if key in seen:
                raise ValueError(f"[{i}]: network {n.target!r} is attached more than once")
            seen.add(key)
        return v

    @model_validator(mode="after")
    def _one_runtime(self) -> TaskSpec:
        if (self.process is None) == (self.container is None):
            raise ValueError("exactly one of task.process or task.container must be given")
        return self

    @property
    def runtime(self) -> str:
        return "process" if self.process is not None else "container"


class ReplicatedMode(Strict):
    replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)


class GlobalMode(Strict):
    pass


class ReplicatedJobMode(Strict):
    """Run tasks until `total_completions` have completed, at most `max_concurrent` at a time."""

    max_concurrent: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    total_completions: int | None = Field(default=None, ge=0, le=MAX_COUNT)

    @model_validator(mode="after")
    def _default_total(self) -> ReplicatedJobMode:
        if self.total_completions is None:  # SwarmKit/Engine: defaults to max_concurrent
            self.total_completions = self.max_concurrent
        return self


class GlobalJobMode(Strict):
    """Run one task to completion on every eligible node."""


ModeKind = Literal["replicated", "global", "replicated_job", "global_job"]
MODE_KINDS: tuple[ModeKind, ...] = ("replicated", "global", "replicated_job", "global_job")
JOB_MODES = frozenset({"replicated_job", "global_job"})


class ServiceMode(Strict):
    """Exactly one of `replicated`, `global`, `replicated_job`, `global_job`; none = replicated, 1 replica."""

    replicated: ReplicatedMode | None = None
    global_: GlobalMode | None = Field(default=None, alias="global")
    replicated_job: ReplicatedJobMode | None = None
    global_job: GlobalJobMode | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> ServiceMode:
        given = [k for k, v in (("replicated", self.replicated), ("global", self.global_),
                                ("replicated_job", self.replicated_job), ("global_job", self.global_job))
                 if v is not None]
        if not given:
            self.replicated = ReplicatedMode()
        elif len(given) > 1:
            raise ValueError(f"exactly one mode may be given (got {', '.join(given)})")
        return self

    @property
    def kind(self) -> ModeKind:
        """Which mode this is."""
        if self.global_ is not None:
            return "global"
        if self.replicated_job is not None:
            return "replicated_job"
        if self.global_job is not None:
            return "global_job"
        return "replicated"

    @property
    def is_job(self) -> bool:
        return self.kind in JOB_MODES


def mode_kind(spec: dict[str, Any]) -> ModeKind:
    """The mode of a stored (wire) service spec: `replicated` when it names none."""
    mode = spec.get("mode") or {}
    for kind in MODE_KINDS:
        if kind in mode:
            return kind
    return "replicated"


class UpdateConfig(Strict):
    """How a rolling update replaces tasks (SwarmKit's UpdateConfig; defaults as when the config is nil).

    `parallelism`: tasks updated at once (0 = all); `delay` between batches; `failure_action` when more than
    `max_failure_ratio` of the updated tasks fail within `monitor`; `order`: stop the old task first, or start
    the new one first."""

    parallelism: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    delay: Duration = 0.0
    failure_action: Literal["pause", "continue", "rollback"] = "pause"
    monitor: Duration = 5.0
    max_failure_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    order: Literal["stop-first", "start-first"] = "stop-first"


class RollbackConfig(UpdateConfig):
    """How a rollback replaces tasks: an UpdateConfig whose failure action cannot be `rollback` (a rollback
    never rolls back again)."""

    failure_action: Literal["pause", "continue"] = "pause"  # type: ignore[assignment]


class PortConfig(Strict):
    """A port to publish: `target_port` inside the task, `published_port` outside (0 = the allocator picks one
    for `ingress`; the engine picks one for `host`)."""

    name: Key | None = None
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    target_port: int = Field(ge=1, le=65535)
    published_port: int = Field(default=0, ge=0, le=65535)
    publish_mode: Literal["ingress", "host"] = "ingress"


class EndpointSpec(Strict):
    """How the service is reached: `vip` (one virtual IP, load-balanced) or `dnsrr` (DNS round robin over the
    task addresses), and the published ports."""

    mode: Literal["vip", "dnsrr"] = "vip"
    ports: list[PortConfig] = Field(default_factory=list, max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _ports(self) -> EndpointSpec:
        seen: dict[tuple[int, str], int] = {}
        for i, p in enumerate(self.ports):
            if self.mode == "dnsrr" and p.publish_mode == "ingress":
                raise ValueError(f"ports[{i}]: a port published in ingress mode cannot be used with endpoint "
                                 "mode dnsrr (use publish_mode host, or endpoint mode vip)")
            if p.published_port == 0:
                continue
            key = (p.published_port, p.protocol)
            if key in seen:
                raise ValueError(f"ports[{i}]: published port {p.published_port}/{p.protocol} is already given "
                                 f"by ports[{seen[key]}]")
            seen[key] = i
        return self


class ServiceSpec(Strict):
    name: Name
    labels: Labels = Field(default_factory=dict)
    mode: ServiceMode = Field(default_factory=ServiceMode)
    task: TaskSpec
    update_config: UpdateConfig | None = None
    rollback_config: RollbackConfig | None = None
    endpoint: EndpointSpec = Field(default_factory=EndpointSpec)

    _name = field_validator("name")(check_name)

    @field_validator("update_config", "rollback_config")
    @classmethod
    def _not_for_jobs(cls, v: UpdateConfig | None, info: ValidationInfo) -> UpdateConfig | None:
        mode = info.data.get("mode")
        if v is not None and isinstance(mode, ServiceMode) and mode.is_job:
            what = "an update" if info.field_name == "update_config" else "a rollback"
            raise ValueError(f"jobs ({mode.kind}) may not have {what} config")
        return v

    @model_validator(mode="after")
    def _defaults(self) -> ServiceSpec:
        if not self.mode.is_job:  # jobs run to completion and are never rolled: no update/rollback config
            if self.update_config is None:
                self.update_config = UpdateConfig()
            if self.rollback_config is None:
                self.rollback_config = RollbackConfig()
        return self

    def wire(self) -> dict[str, Any]:
        """The JSON form stored in the service object (aliases, defaults filled in)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


AvailabilityName = Literal["active", "pause", "drain"]
RoleName = Literal["worker", "manager"]


class NodeSpec(Strict):
    """What the user sets on a node: a name, labels (`node.labels.*` in constraints), the desired role and the
    availability (active, pause: no new tasks, drain: tasks move elsewhere)."""

    name: Key | None = None
    labels: Labels = Field(default_factory=dict)
    role: RoleName = "worker"
    availability: AvailabilityName = "active"

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not key.strip():
                raise ValueError("label keys must not be empty")
        return v


def parse_constraint(text: str) -> tuple[str, str, str]:
    """(key, operator, value) of a validated constraint."""
    m = CONSTRAINT_RE.match(text)
    if not m:
        raise ValueError(f"invalid constraint {text!r}")
    return m.group(1), m.group(2), m.group(3)
