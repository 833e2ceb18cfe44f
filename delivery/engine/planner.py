"""Delivery planner: from what the strategy expressions returned and what DNS said, the plan.

Pure: no I/O, no ``await``, no clock (STYLE §1). The attempt (the async shell) evaluates the
four expressions of the registry snapshot with ``expr.evaluate_resolving`` and performs the
lookups; this module turns those values into frozen plan values that explain themselves, for
the attempt, the logs and ``delivery explain``:

    plan_recipient(snapshot, route=, schedule=)       RecipientPlan: route, schedule, queue
    select_connection(snapshot, value)                 the connection strategy (source address,
                                                       EHLO name, timeouts) of one host
    plan_host(snapshot, policy, mx=, ..., tls=)        HostPlan: the TLS strategy and the
                                                       per-host TLS plan (policy/tls.py)
    mx_hosts(domain, mx_result, max_hosts=, rng=)      the MX hosts to try, in order, or the
                                                       Failure that ends the domain (RFC 5321
                                                       §5.1, RFC 7505)
    host_addresses(host, lookups, ...)                 the addresses of one host, in order, or
                                                       why it has none

Outcomes:
    A `Selection` records, for one expression, the value it returned, the object name used
    and whether an object of that name exists. A result that is not a string selects
    ``default`` (DESIGN §4); a name no object has selects that type's built-in defaults, with a
    warning logged once per snapshot by the snapshot itself (DESIGN §3).
    `mx_hosts` / `host_addresses` return `outcome.Failure` values for DNS answers that end the
    domain or the host; they never raise.

Security:
    DNS answers are attacker-influenced. The number of hosts and addresses tried is capped by
    the route (`maxMxHosts`, `maxMultihomed`); a null MX mixed with real ones is ignored rather
    than trusted; nothing here connects anywhere.

Standards: RFC 5321 §5.1 (MX order, implicit MX), RFC 7505 (null MX), RFC 3463.
Limits: MTA-STS and DANE inputs are not looked up yet: `PolicyInputs` carries only REQUIRETLS
(see `attempt.policy_inputs`, the one place that builds them).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar, assert_never

from delivery import expr
from delivery.dns.result import DnsResult, Lookup, MxRecord, is_null_mx
from delivery.engine import outcome
from delivery.engine import schedule as timing
from delivery.errors import LastError
from delivery.policy import tls as tls_policy
from delivery.queue import model
from delivery.registry import snapshot as registry

__all__ = [
    "DEFAULT_NAME",
    "HostPlan",
    "IpLookupStrategy",
    "RecipientPlan",
    "Selection",
    "address_families",
    "host_addresses",
    "mx_hosts",
    "new_recipient",
    "plan_host",
    "plan_recipient",
    "select_connection",
    "select_schedule",
    "source_address",
    "timing_of",
]

DEFAULT_NAME = "default"
"""The name selected when an expression returns something that is not a name (DESIGN §4)."""

Expression = Literal["route", "schedule", "connection", "tls"]
IpLookupStrategy = Literal["v4ThenV6", "v6ThenV4", "v4Only", "v6Only"]
Family = Literal["A", "AAAA"]

_TYPE_NAMES: dict[Expression, str] = {
    "route": "MtaRoute",
    "schedule": "MtaDeliverySchedule",
    "connection": "MtaConnectionStrategy",
    "tls": "MtaTlsStrategy",
}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Selection(Generic[T]):
    """What one strategy expression picked.

    :param expression: which of the four expressions.
    :param result: the value it returned, as returned.
    :param name: the object name used: the result, or ``default`` when it was not a name.
    :param builtin: no object has that name; ``value`` holds the type's built-in defaults.
    :param value: the object used.
    """

    expression: Expression
    result: expr.Value
    name: str
    builtin: bool
    value: T

    def explain(self) -> str:
        """One line for logs and ``delivery explain``.

        >>> Selection("tls", "invalid-tls", "invalid-tls", False, None).explain()
        "tls -> 'invalid-tls'"
        """
        text = f"{self.expression} -> {self.name!r}"
        if expr.result_name(self.result) is None:
            text += f" (the expression returned {self.result!r}, not a name)"
        if self.builtin:
            text += f" (no {_TYPE_NAMES[self.expression]} has that name: built-in defaults)"
        return text


@dataclass(frozen=True, slots=True)
class RecipientPlan:
    """How one recipient is delivered: its route, and the schedule and queue that run it."""

    route: Selection[registry.Route]
    schedule: Selection[registry.DeliverySchedule]
    queue: registry.VirtualQueue
    """The virtual queue the schedule names (built-in defaults when none has that name)."""

    def explain(self) -> list[str]:
        """One line per decision."""
        return [
            self.route.explain(),
            self.schedule.explain(),
            f"virtual queue {self.queue.name!r} ({self.queue.threads_per_node} per node)",
        ]


@dataclass(frozen=True, slots=True)
class HostPlan:
    """How one host is spoken to: connection strategy, TLS strategy and TLS plan."""

    mx: str
    """The host name (MX or relay), without the trailing dot."""
    remote_ip: str
    local_ip: str
    """The source address to bind, "" to let the kernel choose."""
    ehlo_name: str
    connection: Selection[registry.ConnectionStrategy]
    tls: Selection[registry.TlsStrategy]
    policy: tls_policy.PolicyInputs
    tls_plan: tls_policy.HostTlsPlan

    def explain(self) -> list[str]:
        """One line per decision."""
        plan = self.tls_plan
        tls_line = f"TLS {plan.tls.value}, verification {plan.verification.value}"
        if plan.required_by:
            tls_line += ": " + "; ".join(plan.required_by)
        if plan.refusal:
            tls_line += f"; refused: {plan.refusal}"
        source = self.local_ip or "chosen by the system"
        return [
            self.connection.explain(),
            self.tls.explain(),
            tls_line,
            f"EHLO {self.ehlo_name}, source address {source}",
        ]


def _select(
    snapshot: registry.Snapshot,
    expression: Expression,
    result: expr.Value,
    find: Callable[[str], T],
    /,
) -> Selection[T]:
    """The object an expression's ``result`` names (see `Selection`)."""
    name = expr.result_name(result) or DEFAULT_NAME
    found = (_TYPE_NAMES[expression], name.lower()) in snapshot.objects
    return Selection(expression, result, name, not found, find(name))


def select_schedule(
    snapshot: registry.Snapshot, result: expr.Value, /
) -> Selection[registry.DeliverySchedule]:
    """select_schedule - the delivery schedule the ``schedule`` expression returned."""
    return _select(snapshot, "schedule", result, snapshot.schedule)


def plan_recipient(
    snapshot: registry.Snapshot, /, *, route: expr.Value, schedule: expr.Value
) -> RecipientPlan:
    """plan_recipient - the route, schedule and virtual queue the rcpt expressions returned."""
    chosen_schedule = select_schedule(snapshot, schedule)
    return RecipientPlan(
        route=_select(snapshot, "route", route, snapshot.route),
        schedule=chosen_schedule,
        queue=snapshot.virtual_queue(chosen_schedule.value.queue),
    )


def select_connection(
    snapshot: registry.Snapshot, result: expr.Value, /
) -> Selection[registry.ConnectionStrategy]:
    """select_connection - the connection strategy the ``connection`` expression returned.

    Chosen before the TLS strategy: its source address is the ``local_ip`` the ``tls``
    expression sees (`source_address`).
    """
    return _select(snapshot, "connection", result, snapshot.connection_strategy)


def plan_host(
    snapshot: registry.Snapshot,
    policy: tls_policy.PolicyInputs,
    /,
    *,
    mx: str,
    remote_ip: str,
    connection: Selection[registry.ConnectionStrategy],
    local_ip: str,
    ehlo_name: str,
    tls: expr.Value,
    relay: registry.RelayRoute | None = None,
) -> HostPlan:
    """plan_host - the TLS strategy and TLS plan for one host address.

    :param connection: the `select_connection` result.
    :param local_ip: :param ehlo_name: from `source_address` for that strategy.
    :param tls: what the ``tls`` expression returned.
    :param relay: the Relay route being used: its ``allowInvalidCerts`` widens the TLS
        strategy's (never narrows it; an MTA-STS or DANE policy still overrides both).
    """
    chosen_tls = _select(snapshot, "tls", tls, snapshot.tls_strategy)
    strategy = chosen_tls.value
    if relay is not None and relay.allow_invalid_certs and not strategy.allow_invalid_certs:
        strategy = dataclasses.replace(strategy, allow_invalid_certs=True)
    return HostPlan(
        mx=mx.rstrip("."),
        remote_ip=remote_ip,
        local_ip=local_ip,
        ehlo_name=ehlo_name,
        connection=connection,
        tls=chosen_tls,
        policy=policy,
        tls_plan=tls_policy.plan_host(strategy, policy),
    )


def source_address(
    strategy: registry.ConnectionStrategy,
    remote_ip: str,
    /,
    *,
    hostname: str,
    rng: random.Random | None = None,
) -> tuple[str, str]:
    """source_address - (source IP, EHLO name) for connecting to ``remote_ip``.

    A source address of the remote address's family is picked at random among the
    strategy's ``sourceIps``; "" lets the kernel choose when the strategy names none of that
    family. The EHLO name is the source address's, else the strategy's, else ``hostname``.
    """
    family = ":" in remote_ip
    matching = [s for s in strategy.source_ips if (":" in s.source_ip) == family]
    ehlo = strategy.ehlo_hostname or hostname
    if not matching:
        return "", ehlo
    chosen = (rng or random).choice(matching)
    return chosen.source_ip, chosen.ehlo_hostname or ehlo


def mx_hosts(
    domain: str,
    result: DnsResult[MxRecord],
    /,
    *,
    max_hosts: int,
    rng: random.Random | None = None,
) -> tuple[tuple[str, ...], bool] | outcome.Failure:
    """mx_hosts - the hosts to try for ``domain``, in order, and whether the MX is implicit.

    Lowest preference first, random order among equal preferences (RFC 5321 §5.1), at most
    ``max_hosts``. No MX records (NODATA): the domain itself, an implicit MX. Null MX (RFC
    7505): permanent 5.1.10. NXDOMAIN: permanent 5.1.2. TEMPFAIL: temporary 4.4.3, kind dns.

    >>> r = DnsResult(Lookup.ANSWER, (MxRecord(20, "b.test."), MxRecord(10, "a.test.")),
    ...               False, 60, "x.test.", ())
    >>> mx_hosts("x.test", r, max_hosts=5)
    (('a.test', 'b.test'), False)
    """
    detail = result.detail
    match result.status:
        case Lookup.TEMPFAIL:
            return outcome.route_failure(outcome.RouteProblem.TEMPFAIL, domain, detail=detail)
        case Lookup.NXDOMAIN:
            return outcome.route_failure(
                outcome.RouteProblem.NO_SUCH_DOMAIN, domain, detail="NXDOMAIN"
            )
        case Lookup.NODATA:
            return (domain.rstrip(".").lower(),), True
        case Lookup.ANSWER:
            if is_null_mx(result):
                return outcome.route_failure(outcome.RouteProblem.NULL_MX, domain)
        case _ as unreachable:
            assert_never(unreachable)
    shuffle = (rng or random).random
    records = sorted(
        (r for r in result.records if r.exchange != "."),
        key=lambda r: (r.preference, shuffle()),
    )
    hosts: list[str] = []
    for record in records:
        host = record.exchange.rstrip(".").lower()
        if host not in hosts:
            hosts.append(host)
    if not hosts:  # only root exchanges mixed in odd ways: no host to try
        return outcome.route_failure(outcome.RouteProblem.NULL_MX, domain)
    return tuple(hosts[:max_hosts]), False


def address_families(strategy: IpLookupStrategy, /) -> tuple[Family, ...]:
    """address_families - the record types to look up for ``ipLookupStrategy``, in order.

    >>> address_families("v6ThenV4"), address_families("v4Only")
    (('AAAA', 'A'), ('A',))
    """
    match strategy:
        case "v4ThenV6":
            return ("A", "AAAA")
        case "v6ThenV4":
            return ("AAAA", "A")
        case "v4Only":
            return ("A",)
        case "v6Only":
            return ("AAAA",)
        case _ as unreachable:
            assert_never(unreachable)


def host_addresses(
    host: str,
    lookups: Sequence[DnsResult[str]],
    /,
    *,
    max_multihomed: int,
    rng: random.Random | None = None,
) -> tuple[str, ...] | outcome.Failure | None:
    """host_addresses - the addresses of ``host`` to try, from its lookups in family order.

    Each family's addresses in random order (spreading load, as Postfix's
    smtp_randomize_addresses), the families in the strategy's order, at most
    ``max_multihomed`` in all. None when the host has no address (NXDOMAIN or NODATA
    everywhere): it is skipped. A temporary failure with no address found is a soft
    failure of that host (the next host is tried).
    """
    addresses: list[str] = []
    tempfail: DnsResult[str] | None = None
    for result in lookups:
        if result.status is Lookup.ANSWER:
            family = list(dict.fromkeys(result.records))
            (rng or random).shuffle(family)
            addresses.extend(a for a in family if a not in addresses)
        elif result.status is Lookup.TEMPFAIL:
            tempfail = result
    if addresses:
        return tuple(addresses[:max_multihomed])
    if tempfail is not None:
        suffix = f" ({tempfail.detail})" if tempfail.detail else ""
        return outcome.Failure(
            stage=outcome.Stage.HOST,
            scope=outcome.Scope.SITE,
            soft=True,
            status="4.4.3",
            kind=LastError.DNS,
            reason=f"the addresses of {host} could not be looked up for now{suffix}",
            remote_host=host,
        )
    return None


def timing_of(schedule: registry.DeliverySchedule, /) -> timing.Schedule:
    """timing_of - the schedule arithmetic's view of an MtaDeliverySchedule."""
    expiry: timing.Expiry
    match schedule.expiry:
        case registry.TtlExpiry(expire_ms):
            expiry = timing.Ttl(expire_ms)
        case registry.AttemptsExpiry(max_attempts):
            expiry = timing.Attempts(max_attempts)
        case _ as unreachable:
            assert_never(unreachable)
    return timing.Schedule(
        schedule.name, schedule.queue, schedule.retry_ms, schedule.notify_ms, expiry
    )


def new_recipient(
    address: str,
    schedule: Selection[registry.DeliverySchedule],
    /,
    *,
    received_at: int,
    notify: frozenset[model.Notify] = frozenset(),
    orcpt: str | None = None,
) -> model.NewRecipient:
    """new_recipient - a recipient to queue under the schedule the ``schedule`` expression chose.

    Due at once (``received_at``); first delay notice and expiry from the schedule.

    :raises InvalidEnvelope: a malformed address (see `model.NewRecipient`).
    """
    chosen = schedule.value
    plan = timing_of(chosen)
    return model.NewRecipient(
        address=address,
        queue=chosen.queue,
        schedule=schedule.name,
        due=received_at,
        notify=notify,
        orcpt=orcpt,
        notify_due=timing.notify_at(plan, received_at=received_at, notify_num=0),
        expires_at=timing.deadline(plan.expiry, received_at=received_at),
        max_attempts=(
            chosen.expiry.max_attempts
            if isinstance(chosen.expiry, registry.AttemptsExpiry)
            else None
        ),
    )
