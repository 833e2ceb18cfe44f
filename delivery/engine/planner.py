"""Delivery planner: from what the strategy expressions returned and what DNS said, the plan.

Pure: no I/O, no ``await``, no clock (STYLE §1). The attempt (the async shell) evaluates the
four expressions of the registry snapshot with ``expr.evaluate_resolving`` and performs the
lookups; this module turns those values into frozen plan values that explain themselves, for
the attempt, the logs and ``delivery explain``:

    plan_recipient(snapshot, route=, schedule=)       RecipientPlan: route, schedule, queue
    select_connection(snapshot, value)                 the connection strategy (source address,
                                                       EHLO name, timeouts) of one host
    host_policy(domain, host, ip, ...)                 HostPolicy: what the domain's MTA-STS
                                                       policy and the host's DANE records say
                                                       of it (DESIGN §5 steps 1-2), or the
                                                       Failure that keeps it from being tried
    plan_host(snapshot, policy, mx=, ..., tls=)        HostPlan: the TLS strategy and the
                                                       per-host TLS plan (policy/tls.py)
    refusal_failure(plan)                              the Failure of a host whose TLS plan
                                                       no session can satisfy
    mx_hosts(domain, mx_result, max_hosts=, rng=)      the MX hosts to try, in order, or the
                                                       Failure that ends the domain (RFC 5321
                                                       §5.1, RFC 7505)
    mx_security(mx_result, implicit=)                  whether DNSSEC vouches for the MX names
    host_addresses(host, lookups, ...)                 the addresses of one host, in order, each
                                                       with the answer it came from (its DNSSEC
                                                       status is DANE's business), or why none
    session_result(plan, observed, ...)                the TLS-RPT result of one TLS session
    refused_result(domain, host, ip, policy, ...)      ... of a host refused by a policy

Outcomes:
    A `Selection` records, for one expression, the value it returned, the object name used
    and whether an object of that name exists. A result that is not a string selects
    ``default`` (DESIGN §4); a name no object has selects that type's built-in defaults, with a
    warning logged once per snapshot by the snapshot itself (DESIGN §3).
    `mx_hosts` / `host_addresses` / `host_policy` return `outcome.Failure` values for answers
    that end the domain or the host; they never raise.

Security:
    DNS answers are attacker-influenced. The number of hosts and addresses tried is capped by
    the route (`maxMxHosts`, `maxMultihomed`); a null MX mixed with real ones is ignored rather
    than trusted; nothing here connects anywhere. A policy lookup that failed is never read as
    "no policy" where a policy is required, and a DANE or MTA-STS failure never lets a host
    be tried with less than the policy asks (policy/tls.py).

Standards: RFC 5321 §5.1 (MX order, implicit MX), RFC 7505 (null MX), RFC 3463, RFC 7672
(DANE), RFC 8461 (MTA-STS), RFC 8460 (TLS-RPT result types), RFC 8689 (REQUIRETLS).
Limits: the MTA-STS screen covers the MX hosts kept after ``maxMxHosts``: a policy listing only
hosts beyond it defers the domain.
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
from delivery.policy import dane, mtasts, tlsrpt
from delivery.policy import tls as tls_policy
from delivery.queue import model
from delivery.registry import snapshot as registry

__all__ = [
    "DEFAULT_NAME",
    "HostAddress",
    "HostPlan",
    "HostPolicy",
    "IpLookupStrategy",
    "RecipientPlan",
    "Selection",
    "SessionObservation",
    "address_families",
    "host_addresses",
    "host_policy",
    "mx_hosts",
    "mx_security",
    "new_recipient",
    "plan_host",
    "plan_recipient",
    "refusal_failure",
    "refused_result",
    "select_connection",
    "select_schedule",
    "session_result",
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
    sts: mtasts.MtaStsVerdict | None = None
    """The MTA-STS verdict for this host; None when MTA-STS was not consulted."""
    dane: dane.DaneDecision | None = None
    """The host's DANE decision; None when DANE was not consulted."""

    @property
    def server_hostname(self) -> str:
        """The TLS SNI name: the TLSA base domain under DANE (RFC 7671 §10.2), else the host."""
        if self.tls_plan.verification is tls_policy.Verification.DANE and self.dane is not None:
            return self.dane.sni or self.mx
        return self.mx

    def mta_sts_note(self) -> str:
        """Why a PKIX certificate for the host's name authenticates the host, for ``last_status``.

        "the MTA-STS policy of <domain> (mode <mode>) lists <host>" when such a policy vouches
        for the name; "" otherwise (PKIX alone, or no PKIX at all).
        """
        sts = self.sts
        if self.tls_plan.verification is not tls_policy.Verification.PKIX or sts is None:
            return ""
        policy = sts.lookup.policy if sts.lookup is not None else None
        if not sts.mx_listed or policy is None:
            return ""
        return f"the MTA-STS policy of {sts.domain} (mode {policy.mode}) lists {self.mx}"

    def explain(self) -> list[str]:
        """One line per decision."""
        plan = self.tls_plan
        tls_line = f"TLS {plan.tls.value}, verification {plan.verification.value}"
        if plan.required_by:
            tls_line += ": " + "; ".join(plan.required_by)
        if plan.refusal:
            tls_line += f"; refused: {plan.refusal}"
        source = self.local_ip or "chosen by the system"
        lines = [self.connection.explain(), self.tls.explain()]
        if self.sts is not None:
            lines.append(f"MTA-STS: {self.sts.reason}")
        if self.dane is not None:
            lines.append(f"DANE: {self.dane.reason}")
        return [*lines, tls_line, f"EHLO {self.ehlo_name}, source address {source}"]


def _select(
    snapshot: registry.Snapshot,
    expression: Expression,
    result: expr.Value,
    find: Callable[[str], T],
    /,
) -> Selection[T]:
    """The object an expression's ``result`` names (see `Selection`).

    Made once per snapshot and name (`Snapshot.derived`): every message asks for a few.
    """
    if not isinstance(result, str):  # not a name (nor always hashable): the default
        return _selection(snapshot, expression, result, find)
    return snapshot.derived(
        ("planner.select", expression, result),
        lambda: _selection(snapshot, expression, result, find),
    )


def _selection(
    snapshot: registry.Snapshot,
    expression: Expression,
    result: expr.Value,
    find: Callable[[str], T],
    /,
) -> Selection[T]:
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
    if not (isinstance(route, str) and isinstance(schedule, str)):
        return _recipient_plan(snapshot, route, schedule)
    return snapshot.derived(  # made once per snapshot and pair of names
        ("planner.plan_recipient", route, schedule),
        lambda: _recipient_plan(snapshot, route, schedule),
    )


def _recipient_plan(
    snapshot: registry.Snapshot, route: expr.Value, schedule: expr.Value, /
) -> RecipientPlan:
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
    tls: expr.Value | Selection[registry.TlsStrategy],
    relay: registry.RelayRoute | None = None,
    sts: mtasts.MtaStsVerdict | None = None,
    tlsa: dane.DaneDecision | None = None,
) -> HostPlan:
    """plan_host - the TLS strategy and TLS plan for one host address.

    :param policy: what the domain and message require (`host_policy`).
    :param connection: the `select_connection` result.
    :param local_ip: :param ehlo_name: from `source_address` for that strategy.
    :param tls: what the ``tls`` expression returned, or its `select_tls` selection.
    :param relay: the Relay route being used: its ``allowInvalidCerts`` widens the TLS
        strategy's (never narrows it; an MTA-STS or DANE policy still overrides both).
    :param sts: :param tlsa: the MTA-STS verdict and DANE decision behind ``policy``.
    """
    chosen_tls = tls if isinstance(tls, Selection) else select_tls(snapshot, tls)
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
        sts=sts,
        dane=tlsa,
    )


def select_tls(
    snapshot: registry.Snapshot, result: expr.Value, /
) -> Selection[registry.TlsStrategy]:
    """select_tls - the TLS strategy the ``tls`` expression returned.

    Chosen before the domain's policies are looked up: its ``mtaSts`` and ``dane`` modes say
    which lookups to make (`host_policy`).
    """
    return _select(snapshot, "tls", result, snapshot.tls_strategy)


def refusal_failure(plan: HostPlan, /) -> outcome.Failure:
    """refusal_failure - the Failure of a host whose TLS plan has a refusal (not connected).

    A REQUIRETLS message that no answer of the domain lets us send to this host (RFC 8689
    §4.2.1) is a per-host absence: 5.7.10, a bounce once every host said so (outcome rule 2).
    Any other refusal overrides nothing: a temporary policy violation (rule 1).
    """
    tls_plan = plan.tls_plan
    assert tls_plan.refusal is not None, "refusal_failure of a plan without a refusal"
    reason = f"{tls_plan.refusal} (host {plan.mx}[{plan.remote_ip}])"
    if tls_plan.refusal_permanent:
        return outcome.policy_absent(
            LastError.TLS,
            reason,
            remote_host=plan.mx,
            remote_ip=plan.remote_ip,
            status="5.7.10",
        )
    return outcome.policy_violation(
        LastError.TLS,
        reason,
        stage=outcome.Stage.HOST,
        remote_host=plan.mx,
        remote_ip=plan.remote_ip,
        status="4.7.10" if plan.policy.requiretls else "4.7.5",
    )


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """What the recipient domain's TLS policies say of one host, under one TLS strategy.

    :param inputs: the `policy.tls.PolicyInputs` to plan the host with.
    :param failure: set when the host must not be tried at all (an MTA-STS policy that does
        not list it, DANE that could not be determined, a required policy that does not
        exist); None when it may be.
    :param sts: the MTA-STS verdict for the host; None when MTA-STS was not consulted.
    :param tlsa: the DANE decision; None when DANE was not consulted.
    """

    inputs: tls_policy.PolicyInputs
    failure: outcome.Failure | None
    sts: mtasts.MtaStsVerdict | None
    tlsa: dane.DaneDecision | None


def host_policy(
    domain: str,
    host: str,
    remote_ip: str,
    /,
    *,
    requiretls: bool,
    mx_hosts: Sequence[str],
    sts_mode: mtasts.StsStrategy,
    sts_lookup: mtasts.PolicyLookup | None,
    dane_mode: dane.DaneMode,
    tlsa: dane.DaneDecision | None,
    dnssec_validating: bool,
    relay: bool = False,
) -> HostPolicy:
    """host_policy - what MTA-STS (step 1) and DANE (step 2) of DESIGN §5 say of one host.

    MTA-STS first: a domain failure of the screen (``require`` and no policy published:
    permanent, rule 2; no policy obtained under ``require``, or no MX host listed: temporary)
    ends the domain; a host an enforced policy does not list is never tried (temporary, rule
    1). Then DANE: TEMPFAIL fails the host for now (never a downgrade), PERMFAIL (``dane:
    require``, no usable TLSA) is a per-host absence (rule 2: a bounce only when every host
    says so).

    :param mx_hosts: every MX host of the domain being tried, for the MTA-STS screen.
    :param sts_lookup: the domain's MTA-STS lookup; None when not consulted (``mtaSts:
        disable``, or a Relay route: the relay is no MX host of the domain).
    :param tlsa: the host's `dane.decide` decision; None when not consulted.
    :param dnssec_validating: the resolver validates DNSSEC (the daemon's probe).
    :param relay: the host is a Relay route's relay (a name from our own settings).
    """
    name = host.lower().rstrip(".")
    sts: mtasts.MtaStsVerdict | None = None
    screening: mtasts.MxScreening | None = None
    if sts_lookup is not None and sts_mode != "disable":
        screening = mtasts.screen_mx(sts_lookup, list(mx_hosts) or [name], sts_mode)
        sts = next((v for v in screening.verdicts if v.mx_host == name), None)
        if sts is None:  # a host the MX list does not name (decided only then: hot path)
            sts = mtasts.decide(sts_lookup, name, sts_mode)
    inputs = tls_policy.PolicyInputs(
        mta_sts_enforce=sts is not None and sts.tls_required,
        mta_sts_listed=(
            sts is not None
            and sts.action in (mtasts.Action.ENFORCE, mtasts.Action.REPORT_ONLY)
            and bool(sts.mx_listed)
        ),
        dane_usable=tlsa is not None and tlsa.usable,
        dane_tls_only=tlsa is not None and tlsa.outcome is dane.DaneOutcome.UNAUTHENTICATED,
        requiretls=requiretls,
        policy_domain=domain,
        trusted_relay=relay,
        authentication_unknown=(
            (sts_lookup is not None and sts_lookup.status is mtasts.LookupStatus.UNAVAILABLE)
            or (dane_mode != "disable" and not dnssec_validating and not relay)
        ),
    )
    failure: outcome.Failure | None = None
    if screening is not None:
        if screening.failure is not None:
            failure = _sts_domain_failure(screening.failure)
        elif sts is not None and not sts.usable:
            failure = outcome.policy_violation(
                LastError.MTA_STS,
                sts.reason,
                stage=outcome.Stage.HOST,
                remote_host=name,
                remote_ip=remote_ip,
            )
    if failure is None and tlsa is not None:
        failure = _dane_failure(tlsa, remote_ip)
    return HostPolicy(inputs, failure, sts, tlsa)


def _sts_domain_failure(verdict: mtasts.MtaStsVerdict) -> outcome.Failure:
    """The failure of a domain the MTA-STS screen rules out (DEFER or FAIL)."""
    if verdict.permanent:
        return outcome.policy_absent(LastError.MTA_STS, verdict.reason)
    return outcome.policy_violation(LastError.MTA_STS, verdict.reason, stage=outcome.Stage.POLICY)


def _dane_failure(tlsa: dane.DaneDecision, remote_ip: str) -> outcome.Failure | None:
    """The failure of a host DANE rules out before connecting; None when it may be tried."""
    host = tlsa.host.rstrip(".")
    match tlsa.outcome:
        case dane.DaneOutcome.TEMPFAIL:
            # A TLSA SERVFAIL or bogus answer may be an attack: never a downgrade, never a
            # bounce (rule 1); retried until the message expires.
            return outcome.policy_violation(
                LastError.DANE,
                tlsa.reason,
                stage=outcome.Stage.HOST,
                remote_host=host,
                remote_ip=remote_ip,
            )
        case dane.DaneOutcome.PERMFAIL:
            return outcome.policy_absent(
                LastError.DANE, tlsa.reason, remote_host=host, remote_ip=remote_ip
            )
        case (
            dane.DaneOutcome.REQUIRED
            | dane.DaneOutcome.UNAUTHENTICATED
            | dane.DaneOutcome.NOT_APPLICABLE
        ):
            return None
        case _ as unreachable:
            assert_never(unreachable)


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


@dataclass(frozen=True, slots=True)
class HostAddress:
    """One address of a host, with the A or AAAA answer it came from.

    :param answer: that lookup's result: its ``secure`` flag and CNAME target are what DANE
        needs (RFC 7672 §2.2.2).
    """

    ip: str
    answer: DnsResult[str]


def mx_security(result: DnsResult[MxRecord], /, *, implicit: bool) -> dane.MxSecurity:
    """mx_security - whether DNSSEC vouches for the MX host names of a domain.

    SECURE for a validated MX RRset; for an implicit MX (no MX records, the domain is its
    own host), SECURE when the denial of MX records was validated (RFC 7672 §2.2.1); else
    INSECURE.

    >>> r = DnsResult(Lookup.NODATA, (), True, 60, "x.test.", ())
    >>> mx_security(r, implicit=True).value, mx_security(r, implicit=False).value
    ('secure', 'insecure')
    """
    if implicit:
        secure = result.secure and result.status is Lookup.NODATA
        return dane.MxSecurity.SECURE if secure else dane.MxSecurity.INSECURE
    return dane.mx_security(result)


def host_addresses(
    host: str,
    lookups: Sequence[DnsResult[str]],
    /,
    *,
    max_multihomed: int,
    rng: random.Random | None = None,
) -> tuple[HostAddress, ...] | outcome.Failure | None:
    """host_addresses - the addresses of ``host`` to try, from its lookups in family order.

    Each family's addresses in random order (spreading load, as Postfix's
    smtp_randomize_addresses), the families in the strategy's order, at most
    ``max_multihomed`` in all, each with the answer it came from. None when the host has no
    address (NXDOMAIN or NODATA everywhere): it is skipped. A temporary failure with no
    address found is a soft failure of that host (the next host is tried).
    """
    addresses: list[HostAddress] = []
    tempfail: DnsResult[str] | None = None
    for result in lookups:
        if result.status is Lookup.ANSWER:
            family = list(dict.fromkeys(result.records))
            (rng or random).shuffle(family)
            known = {a.ip for a in addresses}
            addresses.extend(HostAddress(ip, result) for ip in family if ip not in known)
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


# ---- TLS reports (RFC 8460) -------------------------------------------------------------------

MX_NOT_LISTED = "the MX host is not listed in the MTA-STS policy"
"""failure-reason-code of a session with a host the domain's MTA-STS policy does not list."""

CERTIFICATE_NOT_VERIFIED = "certificate not verified (the sender's TLS strategy allows any)"
"""failure-reason-code of a session under an MTA-STS policy whose certificate we did not
check (allowInvalidCerts under a testing policy): the policy was not shown to hold."""


@dataclass(frozen=True, slots=True)
class SessionObservation:
    """What one TLS session attempt with a host showed, for its TLS-RPT result.

    :param event: the TLS event that ended it (`policy.tls.Event`); None when TLS came up.
    :param detail: the error in words (the report's failure-reason-code); "" when none.
    :param verify_code: OpenSSL's X509_V_ERR_* code of a rejected certificate; 0 otherwise.
    :param dane_failure: why the peer's chain did not match its TLSA records after the
        handshake; None when it did, or DANE did not apply.
    :param local_ip: our address on the connection; "" when unknown.
    :param helo: the name the server announced in its greeting; "" when unknown.
    """

    event: tls_policy.Event | None = None
    detail: str = ""
    verify_code: int = 0
    dane_failure: dane.DaneFailure | None = None
    local_ip: str = ""
    helo: str = ""


def _report_policy(
    sts: mtasts.MtaStsVerdict | None, tlsa: dane.DaneDecision | None, host: str
) -> tlsrpt.PolicyDescription:
    """The policy a session with ``host`` is reported under (RFC 8460 §4.4)."""
    if tlsa is not None and tlsa.outcome is not dane.DaneOutcome.NOT_APPLICABLE:
        if tlsa.usable:
            return tlsrpt.PolicyDescription.tlsa(tlsa.records, host)
        if sts is None or sts.mx_listed is None:  # no MTA-STS policy in force to report
            return tlsrpt.PolicyDescription.tlsa((d.record for d in tlsa.dropped), host)
    return tlsrpt.applied_policy(sts.lookup if sts is not None else None, None)


def session_result(
    plan: HostPlan, observed: SessionObservation, /, *, domain: str, at: int
) -> tlsrpt.SessionResult | None:
    """session_result - the TLS-RPT result of one TLS session attempt with the host of ``plan``.

    None when there is nothing to report: no TLS was attempted (``startTls: disable``), or the
    host is a relay (reports go to the recipient domain, about its MX hosts only).
    Precedence, the first that applies: a policy that could not be fetched; STARTTLS not
    offered; the handshake; the certificate (PKIX, by OpenSSL's code); the DANE match; the
    MX host missing from an MTA-STS policy in force; then what the session's verification
    left unshown (an unchecked certificate under MTA-STS, unusable TLSA records).

    :param at: when the session took place, epoch ms (it picks the report's day).
    """
    if plan.policy.trusted_relay or plan.tls_plan.tls is tls_policy.TlsMode.OFF:
        return None
    policy = _report_policy(plan.sts, plan.dane, plan.mx)
    problem = _session_problem(plan, observed)
    if problem is None:
        return tlsrpt.SessionResult(domain, policy, True, None, at)
    result_type, code = problem
    detail = tlsrpt.FailureDetail(
        result_type,
        receiving_mx_hostname=plan.mx,
        receiving_ip=plan.remote_ip,
        sending_mta_ip=observed.local_ip or plan.local_ip,
        receiving_mx_helo=observed.helo,
        failure_reason_code=code,
    )
    return tlsrpt.SessionResult(domain, policy, False, detail, at)


def _session_problem(
    plan: HostPlan, observed: SessionObservation
) -> tuple[tlsrpt.ResultType, str] | None:
    sts, tlsa = plan.sts, plan.dane
    dane_decides = tlsa is not None and tlsa.usable  # MTA-STS never overrides DANE (RFC 8461 §2)
    if sts is not None and sts.lookup is not None and not dane_decides:
        fetch = tlsrpt.sts_failure(sts.lookup)
        if fetch is not None:
            return fetch.result_type, fetch.failure_reason_code
    match observed.event:
        case tls_policy.Event.NO_STARTTLS:
            return tlsrpt.ResultType.STARTTLS_NOT_SUPPORTED, observed.detail
        case tls_policy.Event.HANDSHAKE_FAILED:
            return tlsrpt.ResultType.VALIDATION_FAILURE, observed.detail
        case tls_policy.Event.CERT_REJECTED:
            return tlsrpt.result_type_of_verify_code(observed.verify_code), observed.detail
        case None:
            pass
        case _ as unreachable:
            assert_never(unreachable)
    if observed.dane_failure is not None:
        return tlsrpt.ResultType(observed.dane_failure.result_type), observed.detail
    if sts is not None and sts.mx_listed is False and not dane_decides:
        return tlsrpt.ResultType.VALIDATION_FAILURE, MX_NOT_LISTED
    if plan.tls_plan.verification is tls_policy.Verification.NONE:
        if sts is not None and sts.mx_listed:
            return tlsrpt.ResultType.VALIDATION_FAILURE, CERTIFICATE_NOT_VERIFIED
        if tlsa is not None and tlsa.outcome is dane.DaneOutcome.UNAUTHENTICATED:
            return tlsrpt.ResultType.TLSA_INVALID, "no usable TLSA record"
    return None


def refused_result(
    domain: str, host: str, remote_ip: str, policy: HostPolicy, /, *, at: int, relay: bool = False
) -> tlsrpt.SessionResult | None:
    """refused_result - the TLS-RPT result of a host a policy kept us from trying.

    An MX host an MTA-STS policy does not list, or no policy obtained under ``mtaSts:
    require`` (the fetch failure); DANE that could not be determined (dnssec-invalid), or
    ``dane: require`` without usable TLSA records (dane-required, tlsa-invalid when records
    exist but none is usable). None for a refusal the domain did not cause (a policy it does
    not publish under ``mtaSts: require``), and for relays.
    """
    if relay or policy.failure is None:
        return None
    sts, tlsa = policy.sts, policy.tlsa
    found: tuple[tlsrpt.ResultType, str] | None = None
    if tlsa is not None and tlsa.outcome is dane.DaneOutcome.TEMPFAIL:
        found = tlsrpt.ResultType.DNSSEC_INVALID, tlsa.reason
    elif tlsa is not None and tlsa.outcome is dane.DaneOutcome.PERMFAIL:
        kind = tlsrpt.ResultType.TLSA_INVALID if tlsa.dropped else tlsrpt.ResultType.DANE_REQUIRED
        found = kind, tlsa.reason
    elif sts is not None and sts.lookup is not None:
        fetch = tlsrpt.sts_failure(sts.lookup)
        if fetch is not None:
            found = fetch.result_type, fetch.failure_reason_code
        elif sts.mx_listed is False:
            found = tlsrpt.ResultType.VALIDATION_FAILURE, MX_NOT_LISTED
    if found is None:
        return None
    name = host.lower().rstrip(".")
    detail = tlsrpt.FailureDetail(
        found[0], receiving_mx_hostname=name, receiving_ip=remote_ip, failure_reason_code=found[1]
    )
    return tlsrpt.SessionResult(domain, _report_policy(sts, tlsa, name), False, detail, at)


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
