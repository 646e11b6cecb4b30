"""The spec of a user-defined network (SwarmKit's NetworkSpec) with its IPAM config, validated at the API edge
like the other specs (shoal/models/specs.py)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from shoal.models.specs import DRIVER_RE, MIN_PREFIX, Labels, Name, Strict, check_name


class IPAMConfig(Strict):
    """A user-chosen subnet (CIDR, without host bits) and optionally its gateway (a usable address inside it).
    Without it the allocator picks a subnet from the cluster's pool."""

    subnet: Annotated[str, Field(max_length=64)]
    gateway: Annotated[str, Field(max_length=64, json_schema_extra={"anyOf": [{"format": "ipv4"},
                                                                              {"format": "ipv6"}]})] | None = None

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, v: str) -> str:
        text = v.strip()
        try:
            iface = ipaddress.ip_interface(text)
        except ValueError:
            raise ValueError(f"invalid subnet {v!r}: expected CIDR notation such as 10.10.0.0/24") from None
        net = iface.network
        if "/" not in text:
            raise ValueError(f"invalid subnet {v!r}: give a prefix length, e.g. {iface.ip}/24")
        if iface.ip != net.network_address:
            raise ValueError(f"invalid subnet {v!r}: it has host bits set; did you mean {net}?")
        if net.prefixlen < MIN_PREFIX[net.version]:
            raise ValueError(f"subnet {net} is too large: the prefix must be at least /{MIN_PREFIX[net.version]}")
        if net.num_addresses < 4:
            raise ValueError(f"subnet {net} is too small: it needs room for a gateway and tasks "
                             f"(at most /{net.max_prefixlen - 2})")
        return str(net)

    @model_validator(mode="after")
    def _gateway_inside(self) -> IPAMConfig:
        if self.gateway is None:
            return self
        net = ipaddress.ip_network(self.subnet)
        try:
            gw = ipaddress.ip_address(self.gateway.strip())
        except ValueError:
            raise ValueError(f"gateway: invalid IP address {self.gateway!r}") from None
        if gw.version != net.version or gw not in net:
            raise ValueError(f"gateway: {gw} is not inside subnet {net}")
        if gw == net.network_address or (net.version == 4 and gw == net.broadcast_address):
            raise ValueError(f"gateway: {gw} is the {'network' if gw == net.network_address else 'broadcast'} "
                             f"address of {net}; use a host address")
        self.gateway = str(gw)
        return self


#: the driver options shoal knows (Docker's `--opt`): `encrypted` — node-to-node traffic of the network is ESP
#: (docs/networking.md, "Encrypted networks"). Docker enables it whatever the value; "" and "true" are accepted.
NETWORK_OPTIONS = frozenset({"encrypted"})
ENCRYPTED = "encrypted"
_TRUE = frozenset({"", "true"})


def is_encrypted(spec: dict[str, Any] | None) -> bool:
    """Whether a network spec (its JSON form) asks for an encrypted data plane."""
    return ENCRYPTED in ((spec or {}).get("options") or {})


class NetworkSpec(Strict):
    """A user-defined network (SwarmKit's NetworkSpec). `driver` overlay by default; `attachable` lets
    standalone containers join; `internal` cuts it off from the outside; `options` are the driver's
    (`encrypted`)."""

    name: Name
    labels: Labels = Field(default_factory=dict)
    driver: str = Field(default="overlay", json_schema_extra={"pattern": DRIVER_RE.pattern})
    ipam: IPAMConfig | None = None
    attachable: bool = False
    internal: bool = False
    options: dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=128)]] = Field(
        default_factory=dict, max_length=8,  # the schema states what the validator below accepts
        json_schema_extra={"propertyNames": {"enum": [ENCRYPTED]},
                           "additionalProperties": {"type": "string", "pattern": "^([Tt][Rr][Uu][Ee])?$"}})

    _name = field_validator("name")(check_name)

    @field_validator("driver")
    @classmethod
    def _driver(cls, v: str) -> str:
        if not DRIVER_RE.match(v):
            raise ValueError(f"invalid driver name {v!r}")
        return v

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - NETWORK_OPTIONS)
        if unknown:
            raise ValueError(f"unsupported driver option(s) {', '.join(map(repr, unknown))}: shoal knows "
                             f"{', '.join(sorted(NETWORK_OPTIONS))}")
        if ENCRYPTED in v and v[ENCRYPTED].lower() not in _TRUE:
            raise ValueError(f"option encrypted={v[ENCRYPTED]!r}: give `encrypted` alone (or encrypted=true); "
                             "leave it out for a network in the clear")
        return {ENCRYPTED: ""} if ENCRYPTED in v else {}

    def wire(self) -> dict[str, Any]:
        """The JSON form stored in the network object."""
        out = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        if not out.get("options"):
            out.pop("options", None)  # a network in the clear stores no options (as before they existed)
        return out
