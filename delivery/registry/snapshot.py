"""The engine's immutable view of the managed objects: compiled expressions, frozen values.

A `Snapshot` is built after each successful /set (and at open), never per call, so taking one
is free, and an attempt that holds one sees one configuration from start to end even if an
operator changes objects meanwhile (STYLE §15).

Outcomes:
    build_snapshot(records, states) -> Snapshot. Stored objects that no longer validate or
    compile (say, after an upgrade made a rule stricter) do not stop the daemon: each is left
    out, or for an expression replaced by its built-in default, with a sentence in
    ``Snapshot.problems`` and an error in the log.
    Snapshot.tls_strategy(name) and its siblings return the object of that name; a name that no
    object has gives that type's built-in defaults, with one warning per name and snapshot
    (DESIGN §3).

Security:
    `Secret` keeps a relay password out of repr() and logs; reveal() reads it when needed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar, assert_never

from delivery.errors import ConfigError
from delivery.registry import defaults, schema, validation
from delivery.registry.errors import SetError
from delivery.registry.expressions import CompiledOutbound, compile_outbound

__all__ = [
    "SNAPSHOT_MAX_DERIVED",
    "ConnectionStrategy",
    "DeliverySchedule",
    "LocalRoute",
    "ManagedObject",
    "MxRoute",
    "RelayRoute",
    "Route",
    "Secret",
    "Snapshot",
    "SourceIp",
    "TlsStrategy",
    "VirtualQueue",
    "build_snapshot",
]

log = logging.getLogger("delivery.registry")

SNAPSHOT_MAX_DERIVED: Final = 1000
"""Values a snapshot keeps for `Snapshot.derived`: expression results are names of objects in
practice, a few dozen; an expression that returns, say, the recipient domain must not make a
long-lived snapshot grow with every domain seen."""

TlsMode = Literal["optional", "require", "disable"]


@dataclass(frozen=True, slots=True)
class TlsStrategy:
    """An MtaTlsStrategy. ``id`` is None for the built-in defaults."""

    id: str | None
    name: str
    description: str | None
    allow_invalid_certs: bool
    dane: TlsMode
    mta_sts: TlsMode
    start_tls: TlsMode
    mta_sts_timeout_ms: int
    """Bounds the whole MTA-STS lookup: TXT record plus HTTPS policy fetch."""
    tls_timeout_ms: int
    """Bounds STARTTLS plus the TLS handshake."""


@dataclass(frozen=True, slots=True)
class MxRoute:
    """Deliver to the recipient domain's MX hosts."""

    id: str | None
    name: str
    description: str | None
    ip_lookup_strategy: Literal["v4ThenV6", "v6ThenV4", "v4Only", "v6Only"]
    max_multihomed: int
    """Addresses tried per MX host in one attempt."""
    max_mx_hosts: int
    """MX hosts tried in one attempt."""


@dataclass(frozen=True, slots=True)
class Secret:
    """Where a relay password is: in the object itself, an environment variable or a file."""

    kind: Literal["Value", "EnvironmentVariable", "File"]
    value: str = field(repr=False)
    """The secret itself, the variable name or the file path, per ``kind``."""

    async def reveal(self) -> str:
        """The secret text; a file's trailing newline is dropped.

        :raises ConfigError: the variable is unset or the file cannot be read.
        """
        match self.kind:
            case "Value":
                return self.value
            case "EnvironmentVariable":
                text = os.environ.get(self.value)
                if text is None:
                    raise ConfigError("authSecret", f"environment variable {self.value} is unset")
                return text
            case "File":
                try:
                    text = await asyncio.to_thread(Path(self.value).read_text, "utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise ConfigError("authSecret", f"cannot read {self.value}: {exc}") from exc
                return text.rstrip("\r\n")
            case _:
                assert_never(self.kind)


@dataclass(frozen=True, slots=True)
class RelayRoute:
    """Deliver every message of the route to one smart host."""

    id: str | None
    name: str
    description: str | None
    address: str
    """Host name or IP address of the relay."""
    port: int
    protocol: Literal["smtp", "lmtp"]
    implicit_tls: bool
    """TLS from the first byte (port 465 style) instead of STARTTLS."""
    allow_invalid_certs: bool
    auth_username: str | None
    """None: no SMTP AUTH."""
    auth_secret: Secret | None


@dataclass(frozen=True, slots=True)
class LocalRoute:
    """Deliver into the local mailbox store."""

    id: str | None
    name: str
    description: str | None


Route = MxRoute | RelayRoute | LocalRoute


@dataclass(frozen=True, slots=True)
class SourceIp:
    source_ip: str
    ehlo_hostname: str | None
    """None: the strategy's ehloHostname."""


@dataclass(frozen=True, slots=True)
class ConnectionStrategy:
    """An MtaConnectionStrategy; every timeout bounds one SMTP phase, in milliseconds."""

    id: str | None
    name: str
    description: str | None
    ehlo_hostname: str | None
    """None: the daemon's ``hostname`` setting."""
    source_ips: tuple[SourceIp, ...]
    """Empty: let the kernel choose the source address."""
    connect_timeout_ms: int
    greeting_timeout_ms: int
    ehlo_timeout_ms: int
    mail_from_timeout_ms: int
    rcpt_to_timeout_ms: int
    data_timeout_ms: int
    """Bounds DATA: the 354, the whole message and the final reply."""


@dataclass(frozen=True, slots=True)
class TtlExpiry:
    expire_ms: int
    """The message expires this long after it was queued."""


@dataclass(frozen=True, slots=True)
class AttemptsExpiry:
    max_attempts: int
    """The recipient fails after this many attempts."""


@dataclass(frozen=True, slots=True)
class DeliverySchedule:
    """An MtaDeliverySchedule."""

    id: str | None
    name: str
    description: str | None
    queue: str
    """Name of the MtaVirtualQueue that runs the deliveries."""
    retry_ms: tuple[int, ...]
    """Delay before retry n (1-based: retry_ms[n-1]); the last one repeats. Never empty."""
    notify_ms: tuple[int, ...]
    """Queue ages at which a delay DSN goes to the sender; empty: none."""
    expiry: TtlExpiry | AttemptsExpiry


@dataclass(frozen=True, slots=True)
class VirtualQueue:
    id: str | None
    name: str
    description: str | None
    threads_per_node: int
    """Concurrent deliveries of this queue on each node."""


ManagedObject = TlsStrategy | Route | ConnectionStrategy | DeliverySchedule | VirtualQueue
_T = TypeVar("_T", bound=ManagedObject)
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the engine reads of the registry, at one instant."""

    outbound: CompiledOutbound
    """The compiled connection, route, schedule and tls expressions."""
    objects: Mapping[tuple[str, str], ManagedObject]
    """(type name, lowercase name) -> object, e.g. ("MtaTlsStrategy", "invalid-tls")."""
    states: Mapping[str, str]
    """Type name -> state string when the snapshot was built."""
    problems: tuple[str, ...] = ()
    """Stored objects left out or replaced by defaults, as sentences for /healthz and logs."""
    _warned: set[tuple[str, str]] = field(default_factory=set, compare=False, repr=False)
    _derived: dict[Hashable, Any] = field(default_factory=dict, compare=False, repr=False)

    def derived(self, key: Hashable, make: Callable[[], _V], /) -> _V:
        """``make()``, computed once per snapshot and ``key``: a snapshot never changes, so
        neither does a value computed from it alone (the planner's choice of objects for an
        expression's result, made for every message). ``key`` must say what ``make`` makes.
        Past `SNAPSHOT_MAX_DERIVED` keys, ``make`` runs at every call."""
        try:
            found: _V = self._derived[key]
        except KeyError:
            found = make()
            if len(self._derived) < SNAPSHOT_MAX_DERIVED:
                self._derived[key] = found
        return found

    def tls_strategy(self, name: str, /) -> TlsStrategy:
        """The MtaTlsStrategy an expression named, or the built-in defaults."""
        return self._find("MtaTlsStrategy", name, TlsStrategy)

    def route(self, name: str, /) -> Route:
        """The MtaRoute an expression named, or an Mx route with the built-in defaults."""
        found = self.objects.get(("MtaRoute", name.lower()))
        if isinstance(found, MxRoute | RelayRoute | LocalRoute):
            return found
        return self._fallback("MtaRoute", name, _FALLBACK_ROUTE)

    def connection_strategy(self, name: str, /) -> ConnectionStrategy:
        """The MtaConnectionStrategy an expression named, or the built-in defaults."""
        return self._find("MtaConnectionStrategy", name, ConnectionStrategy)

    def schedule(self, name: str, /) -> DeliverySchedule:
        """The MtaDeliverySchedule an expression named, or the built-in defaults (those of
        ``remote``)."""
        return self._find("MtaDeliverySchedule", name, DeliverySchedule)

    def virtual_queue(self, name: str, /) -> VirtualQueue:
        """The MtaVirtualQueue a schedule named, or the built-in defaults."""
        return self._find("MtaVirtualQueue", name, VirtualQueue)

    @property
    def virtual_queues(self) -> tuple[VirtualQueue, ...]:
        """Every configured virtual queue."""
        return tuple(o for o in self.objects.values() if isinstance(o, VirtualQueue))

    def _find(self, type_name: str, name: str, kind: type[_T]) -> _T:
        found = self.objects.get((type_name, name.lower()))
        if isinstance(found, kind):
            return found
        fallback = _FALLBACKS[type_name]
        assert isinstance(fallback, kind)
        return self._fallback(type_name, name, fallback)

    def _fallback(self, type_name: str, name: str, fallback: _T) -> _T:
        key = (type_name, name.lower())
        if key not in self._warned:
            self._warned.add(key)
            log.warning("no %s named %r: using the built-in defaults", type_name, name)
        return dataclasses.replace(fallback, name=name)


def build_snapshot(
    records: Mapping[str, Sequence[tuple[str, Mapping[str, Any]]]],
    states: Mapping[str, str],
    /,
) -> Snapshot:
    """The snapshot of the stored objects.

    :param records: type name -> (id, stored wire object) pairs, in creation order.
    :param states: type name -> current state string.
    """
    problems: list[str] = []
    objects: dict[tuple[str, str], ManagedObject] = {}
    outbound_model = schema.OutboundStrategyModel()
    for spec in schema.OBJECT_TYPES:
        for object_id, data in records.get(spec.name, ()):
            body = {k: v for k, v in data.items() if k != "id"}
            model = validation.validate(spec, body)
            if isinstance(model, SetError):
                problems.append(f"{spec.name} {object_id} is left out: {model.description}")
                continue
            if isinstance(model, schema.OutboundStrategyModel):
                outbound_model = model
                continue
            value = _to_value(object_id, model)
            objects[(spec.name, value.name.lower())] = value
    compiled = compile_outbound(outbound_model)
    if isinstance(compiled, SetError):
        reset = ", ".join(compiled.properties)
        problems.append(
            f"MtaOutboundStrategy: {compiled.description}; using the built-in {reset} instead"
        )
        builtin = schema.OutboundStrategyModel()
        outbound_model = outbound_model.model_copy(
            update={prop: getattr(builtin, prop) for prop in compiled.properties}
        )
        compiled = compile_outbound(outbound_model)
        if isinstance(compiled, SetError):  # the defaults are tested to compile
            raise AssertionError(compiled.description)
    for problem in problems:
        log.error("%s", problem)
    return Snapshot(
        outbound=compiled,
        objects=MappingProxyType(objects),
        states=MappingProxyType(dict(states)),
        problems=tuple(problems),
    )


def _to_value(object_id: str | None, model: schema.WireModel) -> ManagedObject:
    """The frozen value of one validated collection object."""
    if isinstance(model, schema.TlsStrategyModel):
        return TlsStrategy(
            id=object_id,
            name=model.name,
            description=model.description,
            allow_invalid_certs=model.allow_invalid_certs,
            dane=model.dane,
            mta_sts=model.mta_sts,
            start_tls=model.start_tls,
            mta_sts_timeout_ms=model.mta_sts_timeout,
            tls_timeout_ms=model.tls_timeout,
        )
    if isinstance(model, schema.MxRouteModel):
        return MxRoute(
            id=object_id,
            name=model.name,
            description=model.description,
            ip_lookup_strategy=model.ip_lookup_strategy,
            max_multihomed=model.max_multihomed,
            max_mx_hosts=model.max_mx_hosts,
        )
    if isinstance(model, schema.RelayRouteModel):
        return RelayRoute(
            id=object_id,
            name=model.name,
            description=model.description,
            address=model.address,
            port=model.port,
            protocol=model.protocol,
            implicit_tls=model.implicit_tls,
            allow_invalid_certs=model.allow_invalid_certs,
            auth_username=model.auth_username,
            auth_secret=_secret(model.auth_secret),
        )
    if isinstance(model, schema.LocalRouteModel):
        return LocalRoute(id=object_id, name=model.name, description=model.description)
    if isinstance(model, schema.ConnectionStrategyModel):
        return ConnectionStrategy(
            id=object_id,
            name=model.name,
            description=model.description,
            ehlo_hostname=model.ehlo_hostname,
            source_ips=tuple(SourceIp(s.source_ip, s.ehlo_hostname) for s in model.source_ips),
            connect_timeout_ms=model.connect_timeout,
            greeting_timeout_ms=model.greeting_timeout,
            ehlo_timeout_ms=model.ehlo_timeout,
            mail_from_timeout_ms=model.mail_from_timeout,
            rcpt_to_timeout_ms=model.rcpt_to_timeout,
            data_timeout_ms=model.data_timeout,
        )
    if isinstance(model, schema.DeliveryScheduleModel):
        expiry = model.expiry
        return DeliverySchedule(
            id=object_id,
            name=model.name,
            description=model.description,
            queue=model.queue,
            retry_ms=tuple(model.retry),
            notify_ms=tuple(model.notify),
            expiry=TtlExpiry(expiry.expire)
            if isinstance(expiry, schema.TtlExpiry)
            else AttemptsExpiry(expiry.max_attempts),
        )
    if isinstance(model, schema.VirtualQueueModel):
        return VirtualQueue(
            id=object_id,
            name=model.name,
            description=model.description,
            threads_per_node=model.threads_per_node,
        )
    raise TypeError(f"no snapshot value for {type(model).__name__}")


def _secret(
    value: schema.ValueSecret | schema.EnvironmentSecret | schema.FileSecret | None,
) -> Secret | None:
    match value:
        case None:
            return None
        case schema.ValueSecret():
            return Secret("Value", value.secret)
        case schema.EnvironmentSecret():
            return Secret("EnvironmentVariable", value.variable_name)
        case schema.FileSecret():
            return Secret("File", value.file_path)
        case _:
            assert_never(value)


def _builtin(type_name: str, data: Mapping[str, Any]) -> ManagedObject:
    spec = schema.spec_of(type_name)
    assert spec is not None
    model = validation.validate(spec, data)
    assert not isinstance(model, SetError), model
    return _to_value(None, model)


_FALLBACK_NAME = "default"
_FALLBACKS: Mapping[str, ManagedObject] = MappingProxyType(
    {
        "MtaTlsStrategy": _builtin("MtaTlsStrategy", {"name": _FALLBACK_NAME}),
        "MtaConnectionStrategy": _builtin("MtaConnectionStrategy", {"name": _FALLBACK_NAME}),
        "MtaDeliverySchedule": _builtin(
            "MtaDeliverySchedule", {"name": _FALLBACK_NAME, "queue": defaults.SCHEDULE_QUEUE}
        ),
        "MtaVirtualQueue": _builtin("MtaVirtualQueue", {"name": _FALLBACK_NAME}),
    }
)
"""The built-in defaults used for a name no object has (DESIGN §3)."""


def _builtin_route() -> MxRoute:
    """The built-in route: Mx with its defaults."""
    route = _builtin("MtaRoute", {"name": _FALLBACK_NAME, "@type": "Mx"})
    assert isinstance(route, MxRoute)
    return route


_FALLBACK_ROUTE: Final = _builtin_route()
