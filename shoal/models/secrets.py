"""Secrets and configs (SwarmKit's SecretSpec/ConfigSpec and the task spec's SecretReference/ConfigReference).

A secret or config object is `{id, meta, spec: {name, labels, data}}` with `data` the payload in base64. The
data is immutable: an update may change the labels only. Names follow SwarmKit's `validateSecretSpec`/
`validateConfigSpec` (1-64 letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit); the
payload is 1 byte to 500 KiB for a secret, 1 to 1,000 KiB for a config (SwarmKit's MaxSecretSize and
MaxConfigSize). A base64 create body of the largest config is about 1.37 MB: every request-size limit in front
of the gateway must admit `MAX_CREATE_BODY`.

A task spec references them by `source` (name, id or unique id prefix; the gateway resolves it and stores the
id in `secret_id`/`config_id` and the name in `source`) with a `target` (a secret: a file name under
`/run/secrets`, or an absolute path; a config: a path, default `/<name>`), and the file's `uid`, `gid`, `mode`."""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

SECRET_NAME_RE = re.compile(r"^[a-zA-Z0-9]+(?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?$")
MAX_NAME = 64
MAX_SECRET_SIZE = 500 * 1024
MAX_CONFIG_SIZE = 1000 * 1024
#: the largest valid create body (a 1,000 KiB config in base64 with its name and labels): request limits must
#: admit it
MAX_CREATE_BODY = 4 * ((MAX_CONFIG_SIZE + 2) // 3) + 64 * 1024
MAX_TARGET = 1024
ID_RE = re.compile(r"^\d{1,10}$")
DEFAULT_SECRET_MODE = 0o444  # SwarmKit/Docker's default file mode for containers
DEFAULT_PROCESS_MODE = 0o400  # a process task's files: the task's user only


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


def check_object_name(v: str) -> str:
    if len(v) > MAX_NAME or not SECRET_NAME_RE.match(v):
        raise ValueError(f"invalid name {v!r}: 1-{MAX_NAME} letters, digits, '-', '_' or '.', starting and "
                         "ending with a letter or digit")
    return v


def decode_data(v: str, limit: int, what: str) -> bytes:
    """The payload of a create body (base64), within 1 byte .. `limit`."""
    try:
        raw = base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("data must be base64") from None
    if not raw:
        raise ValueError(f"{what} data must not be empty")
    if len(raw) > limit:
        raise ValueError(f"{what} data is {len(raw)} bytes; at most {limit} ({limit // 1024} KiB)")
    return raw


#: base64 (standard alphabet, padded) as a JSON Schema pattern; `decode_data` checks it and the size
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class _PayloadSpec(_Strict):
    name: str = Field(json_schema_extra={"pattern": SECRET_NAME_RE.pattern, "minLength": 1, "maxLength": MAX_NAME})
    labels: dict[str, str] = Field(default_factory=dict)
    data: str = Field(description="the payload, base64", json_schema_extra={"pattern": BASE64_PATTERN,
                                                                                    "minLength": 4})

    limit: ClassVar[int] = MAX_SECRET_SIZE
    what: ClassVar[str] = "secret"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_object_name(v)

    @field_validator("data")
    @classmethod
    def _data(cls, v: str) -> str:
        decode_data(v, cls.limit, cls.what)
        return v

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class SecretSpec(_PayloadSpec):
    """`POST /v1/secrets`: name, labels, data (base64, at most 500 KiB decoded)."""


class ConfigSpec(_PayloadSpec):
    """`POST /v1/configs`: name, labels, data (base64, at most 1,000 KiB decoded)."""

    limit: ClassVar[int] = MAX_CONFIG_SIZE
    what: ClassVar[str] = "config"


class PayloadUpdate(_Strict):
    """`PUT /v1/secrets/{ref}` or `/v1/configs/{ref}`: the version read and the new labels (the name and data
    cannot change; SwarmKit: "only updates to Labels are allowed")."""

    version: int = Field(ge=0)
    labels: dict[str, str] = Field(default_factory=dict)


def check_target(v: str) -> str:
    parts = [p for p in v.split("/") if p]
    if not parts or len(v) > MAX_TARGET or "\0" in v or any(p in (".", "..") for p in parts):
        raise ValueError(f"invalid target {v!r}: a file name or path without '.' or '..' components")
    return v


class _Reference(_Strict):
    source: str = Field(min_length=1, max_length=MAX_NAME, description="name, id or unique id prefix")
    target: str | None = Field(default=None, json_schema_extra={
        "pattern": r"^(?!(.*/)?\.\.?(/|$))[^\x00]*[^/\x00][^\x00]*$", "maxLength": MAX_TARGET})
    uid: str | None = Field(default=None, description="owner uid of the file (digits); absent: left as is",
                            json_schema_extra={"pattern": ID_RE.pattern})
    gid: str | None = Field(default=None, description="group gid of the file (digits); absent: left as is",
                            json_schema_extra={"pattern": ID_RE.pattern})
    mode: int | None = Field(default=None, ge=0, le=0o777,
                             description="file mode (0444 for containers and 0400 for processes by default)")

    @field_validator("target")
    @classmethod
    def _target(cls, v: str | None) -> str | None:
        return None if v is None else check_target(v)

    @field_validator("uid", "gid")
    @classmethod
    def _ids(cls, v: str | None) -> str | None:
        if v is not None and not ID_RE.match(v):
            raise ValueError(f"invalid uid/gid {v!r}: a number")
        return v


class SecretReference(_Reference):
    secret_id: str | None = Field(default=None, description="set by the gateway: the id `source` names")


class ConfigReference(_Reference):
    config_id: str | None = Field(default=None, description="set by the gateway: the id `source` names")


def secret_path(target: str) -> str:
    """Where a container sees a secret: a relative target under /run/secrets, an absolute one as it is."""
    return target if target.startswith("/") else posixpath.join("/run/secrets", target)


def config_path(target: str) -> str:
    """Where a container sees a config: the target, relative ones from the root."""
    return target if target.startswith("/") else "/" + target


def check_distinct_targets(refs: list[Any], what: str) -> None:
    """Two references of one task may not write the same file (SwarmKit: target already exists)."""
    seen: set[str] = set()
    for i, r in enumerate(refs):
        target = r.target or r.source
        key = posixpath.normpath(secret_path(target) if what == "secret" else config_path(target))
        if key in seen:
            raise ValueError(f"[{i}]: {what} target {target!r} is used more than once")
        seen.add(key)
