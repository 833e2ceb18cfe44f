"""Wire schemas of the managed objects (DESIGN §3), as strict pydantic models.

Each model is the complete wire form of one object type (without its server-set ``id``):
unknown properties, wrong JSON types, enum values outside their set, non-positive durations
and missing required properties are refused. Models are the boundary only; the engine reads
the frozen dataclasses of snapshot.py.

Wire forms:
    Duration     integer milliseconds > 0; on input also "100ms", "90s", "5m", "1h", "2d", "1w"
                 (delivery.durations). Always returned as integers.
    Expression   {"match": [{"if": str, "then": str}, ...], "else": str}; ``match`` may be
                 omitted (= []) or given as an object keyed "0", "1", ... (ordered
                 numerically, so "10" comes after "2"); it is always returned as an array.
    name         1 to 64 characters: ASCII letters, digits, ``.``, ``_`` and ``-``, starting
                 with a letter or digit; unique per object type regardless of case.

Security:
    A Relay's ``authSecret`` of ``@type`` Value holds a password in clear in the database;
    EnvironmentVariable or File keep it out. /get never returns the secret itself (service.py).

Limits: the MAX_* constants below; each says what it protects.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from delivery import durations
from delivery.expr import limits as expr_limits
from delivery.registry import defaults

__all__ = [
    "MAX_DESCRIPTION_CHARS",
    "MAX_DURATION_MS",
    "MAX_MATCH_RULES",
    "MAX_NAME_CHARS",
    "OBJECT_TYPES",
    "SINGLETON_ID",
    "ConnectionStrategyModel",
    "DeliveryScheduleModel",
    "Expression",
    "LocalRouteModel",
    "MxRouteModel",
    "ObjectSpec",
    "OutboundStrategyModel",
    "RelayRouteModel",
    "TlsStrategyModel",
    "VirtualQueueModel",
    "WireModel",
    "spec_of",
]

# --- Limits -----------------------------------------------------------------------------------

MAX_NAME_CHARS: Final = 64
"""Names are identifiers that expressions return and logs print; 64 is plenty and keeps both
readable."""
MAX_DESCRIPTION_CHARS: Final = 1024
"""A description is a note for humans; this keeps one object from bloating every /get."""
MAX_DURATION_MS: Final = 10 * 365 * 86_400_000
"""Ten years: longer than any queue lifetime or timeout makes sense, and it keeps
now + duration far inside datetime and 64-bit integer ranges."""
MAX_MATCH_RULES: Final = expr_limits.MAX_MATCH_RULES
"""Rules of one Expression: the expression language's own cap, checked here first so that an
oversized list is refused before anything is compiled."""
MAX_SCHEDULE_STEPS: Final = 64
"""Entries of ``retry`` / ``notify``: the last retry repeats, so a longer list adds nothing."""
MAX_SOURCE_IPS: Final = 256
"""Source addresses of one connection strategy; more than a /24 per strategy is a mistake."""
MAX_MX_HOSTS: Final = 64
"""An MX RRset larger than this is abuse; bounds the hosts tried in one attempt."""
MAX_MULTIHOMED: Final = 16
"""Addresses tried per MX host in one attempt; bounds the connections one attempt opens."""
MAX_THREADS_PER_NODE: Final = 4096
"""Concurrent deliveries of one virtual queue per node: each holds a socket and a task."""
MAX_ATTEMPTS: Final = 10_000
"""Largest ``maxAttempts``: beyond it, use a Ttl expiry."""
MAX_SECRET_CHARS: Final = 4096
"""A password or token for SMTP AUTH; bounds what the database and the AUTH line carry."""
MAX_HOSTNAME_CHARS: Final = 253
"""RFC 1035 §2.3.4: the longest domain name in text form."""
MAX_TEXT_CHARS: Final = 1024
"""User names, file paths and variable names: far beyond any real one."""

SINGLETON_ID: Final = "singleton"
"""The id of every singleton object (the reference pages' literal)."""

# --- Field types ------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _duration(value: Any) -> Any:
    """Milliseconds from a wire duration, refusing 0, negatives and absurd lengths."""
    if isinstance(value, float | bool):
        raise ValueError("must be an integer number of milliseconds or a text such as '5m'")
    if not isinstance(value, int | str):
        return value  # the int type check reports it
    ms = durations.parse_duration(value)
    if ms <= 0:
        raise ValueError(f"must be a positive duration, got {value!r}")
    if ms > MAX_DURATION_MS:
        raise ValueError(f"must be at most {MAX_DURATION_MS} ms (ten years), got {value!r}")
    return ms


def _name(value: str) -> str:
    if not 1 <= len(value) <= MAX_NAME_CHARS or not _NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name: 1 to {MAX_NAME_CHARS} ASCII letters, digits, '.', "
            "'_' or '-', starting with a letter or digit"
        )
    return value


def _hostname(value: str) -> str:
    if len(value) > MAX_HOSTNAME_CHARS or not all(
        _LABEL.fullmatch(label) for label in value.split(".")
    ):
        raise ValueError(
            f"{value!r} is not a host name: dot-separated labels of ASCII letters, digits and "
            "'-' (use the A-label form of an internationalized name)"
        )
    return value


def _ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


def _host_or_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return _hostname(value)


def _env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute file path")
    return value


def _match_rules(value: Any) -> Any:
    """``match`` as an array, from an array or from an object keyed "0", "1", ...

    >>> _match_rules({"10": "c", "2": "b", "0": "a"})
    ['a', 'b', 'c']
    """
    if not isinstance(value, Mapping):
        return value
    bad = [key for key in value if not (key.isdigit() and str(int(key)) == key)]
    if bad:
        raise ValueError(
            f"as an object, match must be keyed by array indexes '0', '1', ...; not {bad[0]!r}"
        )
    return [value[key] for key in sorted(value, key=int)]


Duration = Annotated[int, BeforeValidator(_duration)]
Name = Annotated[str, AfterValidator(_name)]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS)] | None
Hostname = Annotated[str, AfterValidator(_hostname)]
IpAddress = Annotated[str, AfterValidator(_ip_address)]
TlsMode = Literal["optional", "require", "disable"]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]


class WireModel(BaseModel):
    """Base of every wire model: strict JSON types, unknown properties refused, camelCase."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=False,
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON object of this value, with wire property names."""
        return self.model_dump(mode="json", by_alias=True)


# --- Expressions ------------------------------------------------------------------------------


class MatchRule(WireModel):
    if_: str = Field(alias="if")
    then: str


class Expression(WireModel):
    match: Annotated[
        list[MatchRule], BeforeValidator(_match_rules), Field(max_length=MAX_MATCH_RULES)
    ] = Field(default_factory=list)
    else_: str = Field(alias="else")

    @property
    def rules(self) -> list[tuple[str, str]]:
        """The (if, then) pairs in order."""
        return [(rule.if_, rule.then) for rule in self.match]


# --- MtaOutboundStrategy (singleton) ------------------------------------------------------------


class OutboundStrategyModel(WireModel):
    connection: Expression = Field(
        default_factory=partial(Expression.model_validate, defaults.OUTBOUND_CONNECTION)
    )
    route: Expression = Field(
        default_factory=partial(Expression.model_validate, defaults.OUTBOUND_ROUTE)
    )
    schedule: Expression = Field(
        default_factory=partial(Expression.model_validate, defaults.OUTBOUND_SCHEDULE)
    )
    tls: Expression = Field(
        default_factory=partial(Expression.model_validate, defaults.OUTBOUND_TLS)
    )


# --- Collections --------------------------------------------------------------------------------


class NamedModel(WireModel):
    name: Name
    description: Description = None


class TlsStrategyModel(NamedModel):
    allow_invalid_certs: bool = defaults.ALLOW_INVALID_CERTS
    dane: TlsMode = defaults.TLS_MODE
    mta_sts: TlsMode = defaults.TLS_MODE
    start_tls: TlsMode = defaults.TLS_MODE
    mta_sts_timeout: Duration = defaults.MTA_STS_TIMEOUT_MS
    tls_timeout: Duration = defaults.TLS_TIMEOUT_MS


class MxRouteModel(NamedModel):
    type_: Literal["Mx"] = Field(alias="@type")
    ip_lookup_strategy: Literal["v4ThenV6", "v6ThenV4", "v4Only", "v6Only"] = (
        defaults.IP_LOOKUP_STRATEGY
    )
    max_multihomed: int = Field(default=defaults.MAX_MULTIHOMED, ge=1, le=MAX_MULTIHOMED)
    max_mx_hosts: int = Field(default=defaults.MAX_MX_HOSTS, ge=1, le=MAX_MX_HOSTS)


class ValueSecret(WireModel):
    type_: Literal["Value"] = Field(alias="@type")
    secret: Annotated[str, Field(min_length=1, max_length=MAX_SECRET_CHARS)]


class EnvironmentSecret(WireModel):
    type_: Literal["EnvironmentVariable"] = Field(alias="@type")
    variable_name: Annotated[Text, AfterValidator(_env_name)]


class FileSecret(WireModel):
    type_: Literal["File"] = Field(alias="@type")
    file_path: Annotated[Text, AfterValidator(_absolute_path)]


SecretValue = Annotated[ValueSecret | EnvironmentSecret | FileSecret, Field(discriminator="type_")]


class RelayRouteModel(NamedModel):
    type_: Literal["Relay"] = Field(alias="@type")
    address: Annotated[str, AfterValidator(_host_or_ip)]
    port: int = Field(default=defaults.RELAY_PORT, ge=1, le=65535)
    protocol: Literal["smtp", "lmtp"] = defaults.RELAY_PROTOCOL
    implicit_tls: bool = defaults.IMPLICIT_TLS
    allow_invalid_certs: bool = defaults.ALLOW_INVALID_CERTS
    auth_username: Text | None = None
    auth_secret: SecretValue | None = None


class LocalRouteModel(NamedModel):
    type_: Literal["Local"] = Field(alias="@type")


class SourceIpModel(WireModel):
    source_ip: IpAddress
    ehlo_hostname: Hostname | None = None


class ConnectionStrategyModel(NamedModel):
    ehlo_hostname: Hostname | None = None
    source_ips: Annotated[list[SourceIpModel], Field(max_length=MAX_SOURCE_IPS)] = Field(
        default_factory=list
    )
    connect_timeout: Duration = defaults.CONNECT_TIMEOUT_MS
    greeting_timeout: Duration = defaults.GREETING_TIMEOUT_MS
    ehlo_timeout: Duration = defaults.EHLO_TIMEOUT_MS
    mail_from_timeout: Duration = defaults.MAIL_FROM_TIMEOUT_MS
    rcpt_to_timeout: Duration = defaults.RCPT_TO_TIMEOUT_MS
    data_timeout: Duration = defaults.DATA_TIMEOUT_MS


class TtlExpiry(WireModel):
    type_: Literal["Ttl"] = Field(alias="@type")
    expire: Duration


class AttemptsExpiry(WireModel):
    type_: Literal["Attempts"] = Field(alias="@type")
    max_attempts: int = Field(ge=1, le=MAX_ATTEMPTS)


class DeliveryScheduleModel(NamedModel):
    queue: Name
    retry: Annotated[list[Duration], Field(min_length=1, max_length=MAX_SCHEDULE_STEPS)] = Field(
        default=list(defaults.SCHEDULE_RETRY_MS)
    )
    notify: Annotated[list[Duration], Field(max_length=MAX_SCHEDULE_STEPS)] = Field(
        default=list(defaults.SCHEDULE_NOTIFY_MS)
    )
    expiry: Annotated[TtlExpiry | AttemptsExpiry, Field(discriminator="type_")] = Field(
        default_factory=partial(TtlExpiry.model_validate, defaults.SCHEDULE_EXPIRY)
    )


class VirtualQueueModel(NamedModel):
    threads_per_node: int = Field(default=defaults.THREADS_PER_NODE, ge=1, le=MAX_THREADS_PER_NODE)


# --- The object types -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    """How one object type is validated and named.

    :param name: the JMAP type name, e.g. ``MtaTlsStrategy``.
    :param variants: ``@type`` value -> model, or the single model under the key ``""``.
    :param singleton: the type has exactly one object, id ``singleton``, and no name.
    """

    name: str
    variants: Mapping[str, type[WireModel]]
    singleton: bool = False
    properties: frozenset[str] = field(init=False, repr=False, compare=False)
    """Every wire property any variant has, plus ``id``; gathered once, read per call."""

    def __post_init__(self) -> None:
        names = {"id"}
        for model in self.variants.values():
            names.update(info.alias or key for key, info in model.model_fields.items())
        object.__setattr__(self, "properties", frozenset(names))

    @property
    def tagged(self) -> bool:
        """Objects carry ``@type`` and it selects the model."""
        return "" not in self.variants

    def model_for(self, data: Mapping[str, Any]) -> type[WireModel] | None:
        """The model that validates ``data``, or None when its ``@type`` is missing or unknown."""
        if not self.tagged:
            return self.variants[""]
        tag = data.get("@type")
        return self.variants.get(tag) if isinstance(tag, str) else None


OBJECT_TYPES: Final[tuple[ObjectSpec, ...]] = (
    ObjectSpec("MtaOutboundStrategy", {"": OutboundStrategyModel}, singleton=True),
    ObjectSpec("MtaTlsStrategy", {"": TlsStrategyModel}),
    ObjectSpec(
        "MtaRoute", {"Mx": MxRouteModel, "Relay": RelayRouteModel, "Local": LocalRouteModel}
    ),
    ObjectSpec("MtaConnectionStrategy", {"": ConnectionStrategyModel}),
    ObjectSpec("MtaDeliverySchedule", {"": DeliveryScheduleModel}),
    ObjectSpec("MtaVirtualQueue", {"": VirtualQueueModel}),
)
"""Every managed object type, in the order objects are created at first start."""

_BY_NAME: Final = {spec.name: spec for spec in OBJECT_TYPES}


def spec_of(type_name: str, /) -> ObjectSpec | None:
    """The spec of a type name, or None for a name that is not a managed object."""
    return _BY_NAME.get(type_name)
