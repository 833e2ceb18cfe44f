"""Explain a delivery without making it: what the engine would decide for one recipient now.

`explain(recipient, sender=..., sources=...)` takes the steps of a first delivery attempt up to
the moment it would connect: the ``route`` and ``schedule`` expressions (rcpt variables), the
MX lookup and the hosts in the order they would be tried, each host's addresses, then for each
address the ``connection`` and ``tls`` expressions (host variables: the strategies may differ
per host), the domain's MTA-STS policy and the host's TLSA records, and the TLS plan. Every
decision comes from the code the worker runs (`engine.variables`, `engine.intake`,
`engine.planner`, `engine.outcome`, `policy.mtasts`, `policy.dane`, `policy.tls`), fed by the
daemon's own resolver, MTA-STS resolver and cache, and DNSSEC probe (`Sources.of_worker`): this
module only sequences the lookups as `attempt.Attempt` does, and records what each step said.
Nothing is sent: no SMTP connection is opened.

Outcomes:
    An `Explanation` (a value; `Explanation.to_json` is the JSON of ``delivery explain --json``
    and of ``x:Explain/get``). Errors are values too: a step that fails says what it would
    cause, as the attempt's error policy (`outcome.decide`) decides it, e.g. ``defer: the TLSA
    lookup of _25._tcp.mx1.example. failed (...)`` or ``bounce: no MTA-STS policy published by
    example.org, and the TLS strategy requires one``. `Explanation.decision` is the first
    step that ends the walk: ``connect`` (the first host that would be connected to), ``defer``
    or ``bounce`` (no host would be), or ``deliver-local``. Hosts after the first ``connect``
    are the fallbacks: their steps say what happens if the hosts before them fail softly.
    `InvalidAddress` (a ValueError) for a recipient or sender that is no RFC 5321 mailbox.

The JSON (every key always present; ``null`` where a step was not reached):

    recipient, sender, domain        the envelope explained ("" is the null sender)
    at                               when, RFC 3339 UTC
    complete                         false when explain stopped waiting for a lookup (notes)
    notes                            sentences about the explanation itself
    message                          the assumed message: source, size, requireTls, smtpUtf8
    variables                        the rcpt variables the route and schedule expressions saw
    route, schedule                  {expression, result, name, builtin, text} (a Selection)
    queue                            {name, threadsPerNode}
    routeObject                      the route used: {name, type: Mx|Relay|Local, ...}
    dnssec                           {state, validating, text}: the daemon's DNSSEC probe
    mx                               {lookup: <dns>, hosts, implicit, security, randomOrder}
                                     (Mx routes), else null
    mtaSts                           {status, domain, policyId, mode, mx, maxAge, source,
                                     reason, problem, text}, or null when no TLS strategy
                                     asked for MTA-STS (mtaSts: disable, relay, no host)
    hosts                            in the order they would be tried: {host, preference,
                                     lookups: [{type, ...<dns>}], note, addresses: [...]}
                                     (note: why the host has no address to try, else "")
      addresses[]                    {ip, port, fallback, connection, tlsStrategy, localIp,
                                     ehloName, mtaSts, dane, tls, lines, step}
        connection, tlsStrategy      a Selection plus ``variables`` (the host variables mx,
                                     remote_ip, local_ip the expression saw, on top of the rcpt
                                     variables) and ``strategy`` (the object's properties)
        mtaSts                       {action, mxListed, reason} for this host, or null
        dane                         {outcome, reason, sni, usable, dropped, lookups}, or null
        tls                          {mode: required|opportunistic|off, required, requiredBy,
                                     verification: pkix|dane|none, authentication,
                                     authenticatedBy, refusal, onTlsEvents}
        step                         {action, text, reason, status, kind, rule}
    decision                         a step, plus host, ip, port, tlsRequired, authentication:
                                     where a connect goes and its TLS; for a defer or bounce
                                     the host and address it names (null: the whole domain)

    <dns> is {status: answer|nodata|nxdomain|tempfail, secure, records, ttl, canonicalName,
    detail}; a step's action is connect, next-host, defer, bounce or deliver-local, and its
    text "<action>: <reason>".

Security:
    Explaining makes the lookups a delivery would make, through the same caches: an MTA-STS
    policy it fetches is cached for the deliveries after it, and a fetch failure is held as
    a delivery's would be (MTA_STS_FAILURE_HOLD_S). It never connects to an MX host, and it
    shows no secret (a relay's AUTH secret is never read). DNS answers are quoted, never
    interpreted beyond what the planner does with them.

Standards: those of the modules it drives: RFC 5321 §5.1, RFC 7505, RFC 7672, RFC 8461,
RFC 3463.
Limits: what only the server can say (does it offer STARTTLS, does its certificate verify,
which replies it gives) is shown as what each TLS event would cause (``onTlsEvents``), not
predicted. MX hosts of equal preference and a host's addresses are tried in random order by
every attempt; this explanation shows one such order (``mx.randomOrder``). The message is
assumed new (retry_num 0, last_error none), from an authenticated submitter, without
REQUIRETLS. `EXPLAIN_MTA_STS_WAIT_MS` bounds the wait for the MTA-STS lookup.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import ipaddress
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, assert_never

from delivery import config, expr
from delivery.dns import resolver as dns_resolver
from delivery.dns.result import DnsResult, Lookup, MxRecord, TlsaRecord
from delivery.engine import attempt, intake, local, outcome, planner, variables
from delivery.engine import worker as engine_worker
from delivery.errors import DeliveryError, DnsTempFail, LastError
from delivery.expr import resolve as expr_resolve
from delivery.policy import dane, mtasts, mtasts_fetch
from delivery.policy import tls as tls_policy
from delivery.queue import model
from delivery.registry import snapshot as registry
from delivery.smtp import server as smtp_server

__all__ = [
    "EXPLAIN_MTA_STS_WAIT_MS",
    "AddressExplanation",
    "DaneExplanation",
    "Explanation",
    "HostExplanation",
    "InvalidAddress",
    "MxExplanation",
    "Sources",
    "Step",
    "StepAction",
    "authentication",
    "explain",
    "parse_address",
    "walk",
]

EXPLAIN_MTA_STS_WAIT_MS = 20_000
"""Longest explain waits for the domain's MTA-STS lookup: within the CLI's 30 s request
timeout (cli/client.py). A delivery waits up to ``mtaStsTimeout`` (5 min by default); the
lookup is shared and shielded, so it goes on for the deliveries when explain stops waiting,
and the explanation says it is incomplete."""

EXPLAIN_SOURCE = model.MessageSource.AUTHENTICATED
"""The assumed message's source: what ``delivery send`` and authenticated submission queue."""

EXPLAIN_MESSAGE_ID = "explain"
"""The id of the assumed message (never stored)."""


class InvalidAddress(DeliveryError, ValueError):
    """The recipient or sender to explain is no RFC 5321 mailbox.

    :param argument: ``recipient`` or ``sender``.
    :param reason: what is wrong, quoting the address.
    """

    def __init__(self, argument: str, reason: str, /) -> None:
        super().__init__(argument, reason)
        self.argument, self.reason = argument, reason

    def __str__(self) -> str:
        return f"{self.argument}: {self.reason}"


def parse_address(argument: Literal["recipient", "sender"], text: str, /) -> str:
    """parse_address - the mailbox in ``text`` (one pair of angle brackets removed).

    The sender may be empty (the null sender, also written ``<>``).

    >>> parse_address("recipient", " <b@example.test> "), parse_address("sender", "<>")
    ('b@example.test', '')
    >>> try:
    ...     parse_address("recipient", "b@")
    ... except InvalidAddress as exc:
    ...     print(exc.argument, exc.reason)
    recipient 'b@' is not a valid address: the domain after @ is empty

    :raises InvalidAddress: the same check as ``delivery send`` (`smtp.server.mailbox_problem`).
    """
    address = text.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    if not address and argument == "sender":
        return ""
    problem = smtp_server.mailbox_problem(address) if address else "it is empty"
    if problem is not None:
        raise InvalidAddress(argument, f"{text!r} is not a valid address: {problem}")
    return address


# ---- steps ------------------------------------------------------------------------------------


class StepAction(enum.StrEnum):
    """What a step of the walk leads to."""

    CONNECT = "connect"  # nothing keeps the host from being tried: the attempt connects
    NEXT_HOST = "next-host"  # this host fails before connecting; the next one is tried
    DEFER = "defer"  # the recipient waits for its next retry
    BOUNCE = "bounce"  # the recipient fails, a DSN goes to the sender
    DELIVER_LOCAL = "deliver-local"  # the Local route: a maildir write

    @property
    def ends(self) -> bool:
        """The walk stops here (nothing after it is tried, unless this host fails)."""
        return self is not StepAction.NEXT_HOST


_ACTIONS: dict[outcome.Disposition, StepAction] = {
    outcome.Disposition.TRY_NEXT_HOST: StepAction.NEXT_HOST,
    outcome.Disposition.DEFER: StepAction.DEFER,
    outcome.Disposition.BOUNCE: StepAction.BOUNCE,
}


@dataclass(frozen=True, slots=True)
class Step:
    """What one step decides, and why.

    :param action: see `StepAction`.
    :param reason: the sentence the attempt would record (the failure's own, for failures).
    :param status: the RFC 3463 status the recipient would get; "" for connect and local.
    :param kind: the ``last_error`` it would get; "" when none.
    :param rule: the error policy's rule behind a failure's disposition; "" otherwise.
    :param remote_host: :param remote_ip: the host and address a failure's outcome names;
        None for a failure of the whole domain (and for steps that are no failure).
    """

    action: StepAction
    reason: str
    status: str = ""
    kind: str = ""
    rule: str = ""
    remote_host: str | None = None
    remote_ip: str | None = None

    @property
    def text(self) -> str:
        """``<action>: <reason>``.

        >>> Step(StepAction.DEFER, "the TLSA lookup failed").text
        'defer: the TLSA lookup failed'
        """
        return f"{self.action}: {self.reason}"

    @classmethod
    def of_failure(cls, failure: outcome.Failure, decision: outcome.Decision, /) -> Step:
        """The step of a failure the error policy decided (`outcome.decide`)."""
        action = _ACTIONS[decision.disposition]
        status = failure.status
        if action is not StepAction.NEXT_HOST:
            status = outcome.make_outcome(failure, decision).status
        return cls(
            action,
            failure.reason,
            status,
            failure.kind.value,
            decision.why,
            failure.remote_host,
            failure.remote_ip,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "text": self.text,
            "reason": self.reason,
            "status": self.status,
            "kind": self.kind,
            "rule": self.rule,
        }


@dataclass(frozen=True, slots=True)
class Blocked:
    """Why one address would not be connected to: the failure the attempt would apply.

    :param final: the attempt applies it as to the final host, whatever hosts are left (a
        strategy expression that needed DNS: `attempt.Attempt._host_groups`).
    """

    failure: outcome.Failure
    final: bool = False


def walk(blocks: Sequence[Blocked | None], /) -> tuple[Step | None, ...]:
    """walk - each address's disposition, in the order the attempt tries them.

    ``blocks[i]`` is None when address i would be connected to, else what fails it before
    connecting. The error policy decides each failure as the attempt does: ``final_host`` for
    the last address, and a per-host policy absence defers rather than bounces once another
    host failed in a way that may pass (`outcome.decide`'s ``others_transient``). After an
    address that would be connected to, the next ones are fallbacks: decided as if it had
    failed softly (a refused connection, a timeout). None for an address the walk never
    reaches (after a defer or bounce).

    >>> absent = outcome.policy_absent(LastError.DANE, "no TLSA", remote_host="mx1.test")
    >>> [s.action.value if s else None for s in walk([Blocked(absent), Blocked(absent)])]
    ['next-host', 'bounce']
    >>> [s.action.value if s else None for s in walk([None, Blocked(absent)])]
    ['connect', 'defer']
    """
    steps: list[Step | None] = []
    transient, ended = False, False
    for index, block in enumerate(blocks):
        if ended:
            steps.append(None)
            continue
        if block is None:
            steps.append(Step(StepAction.CONNECT, "no policy keeps this address from being tried"))
            transient = True  # reached past it only when it failed softly
            continue
        final = block.final or index == len(blocks) - 1
        decision = outcome.decide(block.failure, final_host=final, others_transient=transient)
        step = Step.of_failure(block.failure, decision)
        steps.append(step)
        if step.action is StepAction.NEXT_HOST:
            if block.failure.cause is not outcome.Cause.POLICY_ABSENT:
                transient = True
        else:
            ended = True  # the recipient is finished: nothing after it is tried
    return tuple(steps)


# ---- what authenticates a host ------------------------------------------------------------


def authentication(plan: planner.HostPlan, /) -> tuple[str, str]:
    """authentication - how the host of ``plan`` would be authenticated, and in words.

    The first value is what the recipient's ``last_status`` records after a TLS session
    (`attempt.TlsReport.authenticated`): ``pkix``, ``dane`` or ``none`` (also for clear text).
    """
    tls_plan = plan.tls_plan
    if tls_plan.tls is tls_policy.TlsMode.OFF:
        return "none", f"nothing: clear text (TLS strategy {plan.tls.name!r} disables STARTTLS)"
    text: str
    match tls_plan.verification:
        case tls_policy.Verification.PKIX:
            text = f"PKIX: a certificate chain to a trusted CA, valid for {plan.mx}"
            note = plan.mta_sts_note()
            if note:
                text += f"; {note}"
        case tls_policy.Verification.DANE:
            usable = plan.dane.records if plan.dane is not None else ()
            records = ", ".join(f"{r.usage} {r.selector} {r.mtype}" for r in usable)
            text = f"DANE: the certificate must match a TLSA record of {plan.server_hostname}"
            if records:
                text += f" ({records})"
        case tls_policy.Verification.NONE:
            why = (
                "the host's TLSA records are all unusable"
                if plan.policy.dane_tls_only
                else f"TLS strategy {plan.tls.name!r} allows invalid certificates"
            )
            text = f"nothing: encryption without certificate verification ({why})"
        case _ as unreachable:
            assert_never(unreachable)
    if tls_plan.tls is tls_policy.TlsMode.OPPORTUNISTIC:
        text += "; clear text if the host does not offer STARTTLS"
    return tls_plan.verification.value, text


def _tls_json(plan: planner.HostPlan) -> dict[str, Any]:
    tls_plan = plan.tls_plan
    how, words = authentication(plan)
    events = (
        {}
        if tls_plan.tls is tls_policy.TlsMode.OFF or tls_plan.refusal is not None
        else {event.value: tls_policy.react(tls_plan, event).value for event in tls_policy.Event}
    )
    return {
        "mode": tls_plan.tls.value,
        "required": tls_plan.tls is tls_policy.TlsMode.REQUIRED,
        "requiredBy": list(tls_plan.required_by),
        "verification": tls_plan.verification.value,
        "authentication": how,
        "authenticatedBy": words,
        "sni": plan.server_hostname if tls_plan.tls is not tls_policy.TlsMode.OFF else None,
        "refusal": tls_plan.refusal,
        "onTlsEvents": events,
    }


# ---- JSON of the planner's values ---------------------------------------------------------


def _dns_json(result: DnsResult[Any]) -> dict[str, Any]:
    def record(value: Any) -> Any:
        if isinstance(value, MxRecord):
            return {"preference": value.preference, "exchange": value.exchange}
        if isinstance(value, TlsaRecord):
            return dane.format_record(value)
        return value

    return {
        "status": result.status.value,
        "secure": result.secure,
        "records": [record(r) for r in result.records],
        "ttl": result.ttl,
        "canonicalName": result.canonical_name,
        "detail": result.detail,
    }


def _selection_json(selection: planner.Selection[Any]) -> dict[str, Any]:
    return {
        "expression": selection.expression,
        "result": selection.result,
        "name": selection.name,
        "builtin": selection.builtin,
        "text": selection.explain(),
    }


def _route_json(route: registry.Route) -> dict[str, Any]:
    match route:
        case registry.MxRoute():
            return {
                "name": route.name,
                "type": "Mx",
                "ipLookupStrategy": route.ip_lookup_strategy,
                "maxMultihomed": route.max_multihomed,
                "maxMxHosts": route.max_mx_hosts,
            }
        case registry.RelayRoute():
            return {  # the AUTH secret is never shown, nor read
                "name": route.name,
                "type": "Relay",
                "address": route.address,
                "port": route.port,
                "protocol": route.protocol,
                "implicitTls": route.implicit_tls,
                "allowInvalidCerts": route.allow_invalid_certs,
                "authUsername": route.auth_username,
            }
        case registry.LocalRoute():
            return {"name": route.name, "type": "Local"}
        case _ as unreachable:
            assert_never(unreachable)


def _tls_strategy_json(strategy: registry.TlsStrategy) -> dict[str, Any]:
    return {
        "name": strategy.name,
        "startTls": strategy.start_tls,
        "dane": strategy.dane,
        "mtaSts": strategy.mta_sts,
        "allowInvalidCerts": strategy.allow_invalid_certs,
        "mtaStsTimeout": strategy.mta_sts_timeout_ms,
        "tlsTimeout": strategy.tls_timeout_ms,
    }


def _connection_json(strategy: registry.ConnectionStrategy) -> dict[str, Any]:
    return {
        "name": strategy.name,
        "ehloHostname": strategy.ehlo_hostname,
        "sourceIps": [
            {"sourceIp": s.source_ip, "ehloHostname": s.ehlo_hostname} for s in strategy.source_ips
        ],
        "connectTimeout": strategy.connect_timeout_ms,
    }


def _sts_lookup_json(lookup: mtasts.PolicyLookup) -> dict[str, Any]:
    policy = lookup.policy
    return {
        "status": lookup.status.value,
        "domain": lookup.domain,
        "policyId": lookup.policy_id or None,
        "mode": policy.mode.value if policy is not None else None,
        "mx": list(policy.mx) if policy is not None else [],
        "maxAge": policy.max_age_s if policy is not None else None,
        "source": lookup.source.value if lookup.source is not None else None,
        "reason": lookup.reason,
        "problem": lookup.problem.value if lookup.problem is not None else None,
        "text": lookup.describe(),
    }


# ---- the explanation ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaneExplanation:
    """The host's DANE decision and the TLSA lookups it was made from, in order."""

    decision: dane.DaneDecision
    lookups: tuple[dane.TlsaAnswer, ...]

    def to_json(self) -> dict[str, Any]:
        decision = self.decision
        return {
            "outcome": decision.outcome.value,
            "reason": decision.reason,
            "sni": decision.sni,
            "usable": [dane.format_record(r) for r in decision.records],
            "dropped": [
                {"record": dane.format_record(d.record), "reason": d.reason}
                for d in decision.dropped
            ],
            "lookups": [
                {"qname": answer.query.qname, **_dns_json(answer.result)} for answer in self.lookups
            ],
        }


@dataclass(frozen=True, slots=True)
class AddressExplanation:
    """One address of a host: the strategies chosen for it, its policies, its step.

    :param ip: the address; None for a host whose addresses could not be looked up.
    :param host_variables: mx, remote_ip and local_ip as the ``tls`` expression saw them
        (the ``connection`` expression saw local_ip "": it chooses the source address).
    :param connection: :param tls: the selections; None when an expression failed.
    :param sts: :param tlsa: what MTA-STS and DANE say of the host; None when not consulted.
    :param plan: the host plan; None when a policy keeps the host from being planned.
    :param step: what the walk decided; None when the walk never reaches this address.
    :param fallback: reached only if an address before it was connected to and failed.
    """

    host: str
    ip: str | None
    port: int
    host_variables: Mapping[str, expr.Value]
    connection: planner.Selection[registry.ConnectionStrategy] | None
    tls: planner.Selection[registry.TlsStrategy] | None
    local_ip: str
    ehlo_name: str
    sts: mtasts.MtaStsVerdict | None
    tlsa: DaneExplanation | None
    plan: planner.HostPlan | None
    block: Blocked | None
    step: Step | None = None
    fallback: bool = False

    def to_json(self) -> dict[str, Any]:
        connection = tls = None
        if self.connection is not None:
            connection = {
                **_selection_json(self.connection),
                "variables": {**self.host_variables, "local_ip": ""},
                "strategy": _connection_json(self.connection.value),
            }
        if self.tls is not None:
            tls = {
                **_selection_json(self.tls),
                "variables": dict(self.host_variables),
                "strategy": _tls_strategy_json(self.tls.value),
            }
        sts = None
        if self.sts is not None:
            sts = {
                "action": self.sts.action.value,
                "mxListed": self.sts.mx_listed,
                "reason": self.sts.reason,
            }
        return {
            "ip": self.ip,
            "port": self.port,
            "fallback": self.fallback,
            "connection": connection,
            "tlsStrategy": tls,
            "localIp": self.local_ip,
            "ehloName": self.ehlo_name,
            "mtaSts": sts,
            "dane": self.tlsa.to_json() if self.tlsa is not None else None,
            "tls": _tls_json(self.plan) if self.plan is not None else None,
            "lines": self.plan.explain() if self.plan is not None else [],
            "step": self.step.to_json() if self.step is not None else None,
        }


@dataclass(frozen=True, slots=True)
class HostExplanation:
    """One MX host (or the relay): its address lookups and each address to try.

    :param preference: its MX preference; None for an implicit MX or a relay.
    :param lookups: (record type, result) of each address lookup, in the route's order.
    :param note: why the host has no address to try ("" when it has some).
    """

    host: str
    preference: int | None
    lookups: tuple[tuple[str, DnsResult[str]], ...]
    addresses: tuple[AddressExplanation, ...]
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "preference": self.preference,
            "lookups": [{"type": rtype, **_dns_json(result)} for rtype, result in self.lookups],
            "note": self.note,
            "addresses": [address.to_json() for address in self.addresses],
        }


@dataclass(frozen=True, slots=True)
class MxExplanation:
    """The domain's MX lookup and the hosts it gives, in the order they would be tried.

    :param hosts: empty when the lookup ends the domain (see the decision).
    :param random_order: some hosts share a preference: every attempt orders them anew.
    """

    lookup: DnsResult[MxRecord]
    hosts: tuple[str, ...]
    implicit: bool
    security: dane.MxSecurity
    random_order: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "lookup": _dns_json(self.lookup),
            "hosts": list(self.hosts),
            "implicit": self.implicit,
            "security": self.security.value,
            "randomOrder": self.random_order,
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    """What a first delivery attempt to ``recipient`` would do now (see the module docstring).

    :param at: when it was made, epoch ms.
    :param decision: the step that ends the walk.
    :param decided_by: the address of a connect decision (its host, address, port and TLS).
    """

    recipient: str
    sender: str
    domain: str
    at: int
    message: model.QueuedMessage
    variables: Mapping[str, expr.Value]
    plan: planner.RecipientPlan | None
    route: registry.Route | None
    dnssec_state: str
    dnssec_text: str
    mx: MxExplanation | None
    mta_sts: mtasts.PolicyLookup | None
    hosts: tuple[HostExplanation, ...]
    decision: Step
    decided_by: AddressExplanation | None = None
    notes: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """False when explain stopped waiting for a lookup (see ``notes``)."""
        return not self.notes

    def to_json(self) -> dict[str, Any]:
        """The documented JSON form (module docstring); stable key order."""
        where = self.decided_by if self.decision.action is StepAction.CONNECT else None
        plan = where.plan if where is not None else None
        decision: dict[str, Any] = {
            **self.decision.to_json(),
            "host": where.host if where is not None else self.decision.remote_host,
            "ip": where.ip if where is not None else self.decision.remote_ip,
            "port": where.port if where is not None else None,
            "tlsRequired": (
                plan.tls_plan.tls is tls_policy.TlsMode.REQUIRED if plan is not None else None
            ),
            "authentication": authentication(plan)[0] if plan is not None else None,
        }
        rplan = self.plan
        return {
            "recipient": self.recipient,
            "sender": self.sender,
            "domain": self.domain,
            "at": _rfc3339(self.at),
            "complete": self.complete,
            "notes": list(self.notes),
            "message": {
                "source": str(self.message.source),
                "size": self.message.size,
                "requireTls": self.message.requiretls,
                "smtpUtf8": self.message.smtputf8,
            },
            "variables": dict(self.variables),
            "route": _selection_json(rplan.route) if rplan is not None else None,
            "schedule": _selection_json(rplan.schedule) if rplan is not None else None,
            "queue": (
                {"name": rplan.queue.name, "threadsPerNode": rplan.queue.threads_per_node}
                if rplan is not None
                else None
            ),
            "routeObject": _route_json(self.route) if self.route is not None else None,
            "dnssec": {
                "state": self.dnssec_state,
                "validating": self.dnssec_state == "validating",
                "text": self.dnssec_text,
            },
            "mx": self.mx.to_json() if self.mx is not None else None,
            "mtaSts": _sts_lookup_json(self.mta_sts) if self.mta_sts is not None else None,
            "hosts": [host.to_json() for host in self.hosts],
            "decision": decision,
        }


def _rfc3339(ms: int) -> str:
    stamp = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


# ---- the async shell ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sources:
    """What explain reads: the daemon's settings, registry snapshot and the worker's parts.

    :param dnssec: the worker's DNSSEC probe (its state is shown; DANE waits for it).
    """

    settings: config.Settings
    snapshot: registry.Snapshot
    resolver: dns_resolver.Resolver
    mta_sts: mtasts_fetch.MtaStsResolver
    dnssec: engine_worker.DnssecProbe
    env: expr.Environment

    @classmethod
    def of_worker(
        cls,
        worker: engine_worker.Worker,
        snapshot: registry.Snapshot,
        settings: config.Settings,
        /,
    ) -> Sources:
        """Sources.of_worker - the parts ``worker`` delivers with, and ``snapshot``."""
        return cls(
            settings,
            snapshot,
            worker.resolver,
            worker.mta_sts,
            worker.dnssec,
            expr.Environment(local_domains=frozenset(settings.local.domains)),
        )


async def explain(
    recipient: str,
    /,
    *,
    sender: str = "",
    sources: Sources,
    now: int | None = None,
    rng: random.Random | None = None,
    sts_wait_ms: int = EXPLAIN_MTA_STS_WAIT_MS,
) -> Explanation:
    """explain - what a first delivery attempt to ``recipient`` would do now, sending nothing.

    :param sender: the envelope sender ("" or "<>": the null sender).
    :param now: epoch ms (default: the clock).
    :param rng: the order of equal-preference MX hosts and of addresses.
    :param sts_wait_ms: longest wait for the MTA-STS lookup (`EXPLAIN_MTA_STS_WAIT_MS`).
    :raises InvalidAddress: the recipient or the sender is no mailbox.
    """
    address = parse_address("recipient", recipient)
    from_address = parse_address("sender", sender)
    at = model.now_ms() if now is None else now
    lookup = attempt.make_lookup(sources.resolver)
    message = await _queued(address, from_address, sources, lookup, now=at)
    walker = _Walker(message, sources, lookup, at, rng or random.Random(), sts_wait_ms)
    return await walker.run()


async def _queued(
    address: str, sender: str, sources: Sources, lookup: expr_resolve.Lookup, /, *, now: int
) -> model.QueuedMessage:
    """The message as it would be queued now, its one recipient placed by intake (the
    ``schedule`` expression at queue time), due at once, never attempted."""
    new = model.NewMessage(
        sender=sender,
        body=b"",
        source=EXPLAIN_SOURCE,
        received_at=now,
        smtputf8=not (address.isascii() and sender.isascii()),
    )
    [planned] = await intake.plan_recipients(
        sources.snapshot,
        new,
        [intake.RecipientRequest(address)],
        env=sources.env,
        lookup=lookup,
        now=now,
    )
    recipient = model.QueuedRecipient(
        id=0,
        message_id=EXPLAIN_MESSAGE_ID,
        address=planned.address,
        domain=planned.domain,
        status=model.RecipientStatus.SCHEDULED,
        due=planned.due,
        retry_num=0,
        notify_num=0,
        notify_due=planned.notify_due,
        expires_at=planned.expires_at,
        max_attempts=planned.max_attempts,
        queue=planned.queue,
        schedule=planned.schedule,
        last_error=LastError.NONE,
        last_status="",
        notify=planned.notify,
        orcpt=None,
        lease_owner=None,
        lease_until=None,
    )
    return model.QueuedMessage(
        id=EXPLAIN_MESSAGE_ID,
        sender=new.sender,
        size=len(new.body),
        source=new.source,
        received_at=new.received_at,
        received_from_ip=new.received_from_ip,
        received_via_port=new.received_via_port,
        priority=new.priority,
        env_id=None,
        ret=None,
        smtputf8=new.smtputf8,
        eightbitmime=False,
        requiretls=new.requiretls,
        recipients=(recipient,),
    )


class _Walker:
    """One explanation: the lookups of `attempt.Attempt`, in its order, recorded."""

    def __init__(
        self,
        message: model.QueuedMessage,
        sources: Sources,
        lookup: expr_resolve.Lookup,
        now: int,
        rng: random.Random,
        sts_wait_ms: int,
    ) -> None:
        [recipient] = message.recipients
        self.message, self.src, self.lookup, self.now = message, sources, lookup, now
        self.address, self.domain = recipient.address, recipient.domain
        self.rcpt_vars = variables.rcpt_variables(message, recipient, now=now)
        self.rng, self.sts_wait_ms = rng, sts_wait_ms
        self.notes: list[str] = []
        self.plan: planner.RecipientPlan | None = None
        self.mx: MxExplanation | None = None
        self.mx_hosts: tuple[str, ...] = ()
        self.mx_security = dane.MxSecurity.INSECURE
        self.sts: mtasts.PolicyLookup | None = None

    async def run(self) -> Explanation:
        src, rcpt_vars = self.src, self.rcpt_vars
        outbound = src.snapshot.outbound
        try:  # as the worker routes a leased recipient (worker._deliver)
            route = await expr.evaluate_resolving(outbound.route, rcpt_vars, src.env, self.lookup)
            schedule = await expr.evaluate_resolving(
                outbound.schedule, rcpt_vars, src.env, self.lookup
            )
        except DnsTempFail as exc:
            failed = outcome.routing_dns_deferral(str(exc))
            return self._explanation(
                Step(StepAction.DEFER, failed.reason, failed.status, failed.kind.value)
            )
        self.plan = planner.plan_recipient(src.snapshot, route=route, schedule=schedule)
        chosen = self.plan.route.value
        match chosen:
            case registry.LocalRoute():
                path = local.mailbox_path(src.settings.data_dir, self.address)
                return self._explanation(
                    Step(StepAction.DELIVER_LOCAL, f"to the local mailbox {path}", "2.0.0")
                )
            case registry.MxRoute():
                mx = await self._mx(chosen)
                if isinstance(mx, Step):
                    return self._explanation(mx)
                self.mx, hosts = mx
                port = src.settings.smtp.port
                found = await self._hosts(hosts, chosen, rcpt_vars, port, self.mx.implicit)
            case registry.RelayRoute():
                found = await self._relay(chosen, rcpt_vars)
            case _ as unreachable:
                assert_never(unreachable)
        if isinstance(found, Step):
            return self._explanation(found)
        return self._walk(found)

    def _explanation(
        self,
        decision: Step,
        hosts: Sequence[HostExplanation] = (),
        decided_by: AddressExplanation | None = None,
    ) -> Explanation:
        probe = self.src.dnssec
        return Explanation(
            recipient=self.address,
            sender=self.message.sender,
            domain=self.domain,
            at=self.now,
            message=self.message,
            variables=self.rcpt_vars,
            plan=self.plan,
            route=self.plan.route.value if self.plan is not None else None,
            dnssec_state=probe.state,
            dnssec_text=probe.describe(),
            mx=self.mx,
            mta_sts=self.sts,
            hosts=tuple(hosts),
            decision=decision,
            decided_by=decided_by,
            notes=tuple(self.notes),
        )

    def _walk(self, hosts: Sequence[HostExplanation]) -> Explanation:
        """Walk the addresses with the error policy; the decision is where the walk ends."""
        steps = iter(walk([a.block for host in hosts for a in host.addresses]))
        connected = False
        decision: tuple[Step, AddressExplanation] | None = None
        walked = []
        for host in hosts:
            addresses = []
            for address in host.addresses:
                step = next(steps)
                address = dataclasses.replace(address, step=step, fallback=connected)
                addresses.append(address)
                if step is not None and step.action.ends and decision is None:
                    decision = step, address
                connected = connected or (step is not None and step.action is StepAction.CONNECT)
            walked.append(dataclasses.replace(host, addresses=tuple(addresses)))
        assert decision is not None, "the last address always ends the walk"
        return self._explanation(decision[0], walked, decision[1])

    # ---- candidates (attempt._mx_candidates, _relay_candidates, _addresses) -------------------

    async def _mx(
        self, route: registry.MxRoute
    ) -> tuple[MxExplanation, tuple[tuple[str, int | None], ...]] | Step:
        answer = await self.src.resolver.mx(self.domain)
        found = planner.mx_hosts(self.domain, answer, max_hosts=route.max_mx_hosts, rng=self.rng)
        if isinstance(found, outcome.Failure):
            return Step.of_failure(found, outcome.decide(found, final_host=True))
        hosts, implicit = found
        self.mx_hosts = hosts
        self.mx_security = planner.mx_security(answer, implicit=implicit)
        preference = {r.exchange.rstrip(".").lower(): r.preference for r in answer.records}
        kept = [preference.get(h) for h in hosts]
        explained = MxExplanation(
            answer,
            hosts,
            implicit,
            self.mx_security,
            random_order=len(set(kept)) < len(kept),
        )
        return explained, tuple((h, None if implicit else preference.get(h)) for h in hosts)

    async def _hosts(
        self,
        hosts: Sequence[tuple[str, int | None]],
        route: registry.MxRoute,
        rcpt_vars: Mapping[str, expr.Value],
        port: int,
        implicit: bool,
    ) -> list[HostExplanation] | Step:
        looked_up = await asyncio.gather(
            *(self._addresses(h, route.ip_lookup_strategy, route.max_multihomed) for h, _ in hosts)
        )
        explained = []
        for (host, preference), (lookups, found) in zip(hosts, looked_up, strict=True):
            explained.append(
                await self._host(host, preference, lookups, found, rcpt_vars, port, None)
            )
        if not any(h.addresses for h in explained):
            problem = (
                outcome.RouteProblem.NO_SUCH_DOMAIN if implicit else outcome.RouteProblem.NO_ADDRESS
            )
            failure = outcome.route_failure(problem, self.domain)
            return Step.of_failure(failure, outcome.decide(failure, final_host=True))
        return explained

    async def _relay(
        self, route: registry.RelayRoute, rcpt_vars: Mapping[str, expr.Value]
    ) -> list[HostExplanation]:
        try:
            ipaddress.ip_address(route.address)
        except ValueError:
            pass
        else:
            literal = await self._host(
                route.address, None, (), (route.address,), rcpt_vars, route.port, route
            )
            return [literal]
        lookups, found = await self._addresses(
            route.address, "v4ThenV6", attempt.RELAY_MAX_ADDRESSES
        )
        if found is None:
            found = outcome.Failure(
                stage=outcome.Stage.HOST,
                scope=outcome.Scope.SITE,
                soft=True,
                status="4.4.4",
                kind=LastError.DNS,
                reason=f"the relay {route.address} of route {route.name!r} has no address",
                remote_host=route.address,
            )
        return [await self._host(route.address, None, lookups, found, rcpt_vars, route.port, route)]

    async def _addresses(
        self, host: str, strategy: planner.IpLookupStrategy, max_multihomed: int
    ) -> tuple[
        tuple[tuple[str, DnsResult[str]], ...],
        tuple[planner.HostAddress, ...] | outcome.Failure | None,
    ]:
        families = planner.address_families(strategy)
        resolver = self.src.resolver
        lookups: list[DnsResult[str]] = await asyncio.gather(
            *(resolver.a(host) if f == "A" else resolver.aaaa(host) for f in families)
        )
        found = planner.host_addresses(host, lookups, max_multihomed=max_multihomed, rng=self.rng)
        return tuple(zip(families, lookups, strict=True)), found

    async def _host(
        self,
        host: str,
        preference: int | None,
        lookups: tuple[tuple[str, DnsResult[str]], ...],
        found: tuple[planner.HostAddress, ...] | tuple[str] | outcome.Failure | None,
        rcpt_vars: Mapping[str, expr.Value],
        port: int,
        relay: registry.RelayRoute | None,
    ) -> HostExplanation:
        if found is None:
            note = f"{host} has no address: skipped"
            return HostExplanation(host, preference, lookups, (), note)
        if isinstance(found, outcome.Failure):
            blocked = self._bare(host, None, port, Blocked(found))
            return HostExplanation(host, preference, lookups, (blocked,), found.reason)
        addresses = []
        for item in found:
            if isinstance(item, planner.HostAddress):
                ip, answer = item.ip, item.answer
            else:  # an IP-literal relay: no address answer
                ip, answer = item, None
            addresses.append(await self._address(host, ip, answer, rcpt_vars, port, relay))
        return HostExplanation(host, preference, lookups, tuple(addresses))

    @staticmethod
    def _bare(host: str, ip: str | None, port: int, block: Blocked) -> AddressExplanation:
        """An address (or a host without one) that fails before any strategy is chosen."""
        return AddressExplanation(
            host=host,
            ip=ip,
            port=port,
            host_variables={},
            connection=None,
            tls=None,
            local_ip="",
            ehlo_name="",
            sts=None,
            tlsa=None,
            plan=None,
            block=block,
        )

    # ---- one address (attempt._host_groups, _host_policy, plan_host, _session) ---------------

    async def _address(
        self,
        host: str,
        ip: str,
        answer: DnsResult[str] | None,
        rcpt_vars: Mapping[str, expr.Value],
        port: int,
        relay: registry.RelayRoute | None,
    ) -> AddressExplanation:
        src = self.src
        outbound = src.snapshot.outbound
        host_vars = variables.host_variables(rcpt_vars, mx=host, remote_ip=ip, local_ip="")
        try:
            connection_value = await expr.evaluate_resolving(
                outbound.connection, host_vars, src.env, self.lookup
            )
            connection = planner.select_connection(src.snapshot, connection_value)
            local_ip, ehlo_name = planner.source_address(
                connection.value, ip, hostname=src.settings.hostname, rng=self.rng
            )
            host_vars = variables.host_variables(
                rcpt_vars, mx=host, remote_ip=ip, local_ip=local_ip
            )
            tls_value = await expr.evaluate_resolving(outbound.tls, host_vars, src.env, self.lookup)
        except DnsTempFail as exc:
            failure = outcome.strategy_dns_failure(str(exc), remote_host=host, remote_ip=ip)
            return self._bare(host, ip, port, Blocked(failure, final=True))
        shown = {k: host_vars[k] for k in ("mx", "remote_ip", "local_ip")}
        tls = planner.select_tls(src.snapshot, tls_value)
        strategy = tls.value
        sts_lookup = None
        if relay is None and strategy.mta_sts != "disable":
            sts_lookup = await self._sts(strategy.mta_sts_timeout_ms)
        validating, tlsa = False, None
        if strategy.dane != "disable":
            validating = await src.dnssec.validating()
            tlsa = await self._dane(host, answer, strategy.dane, validating)
        policy = planner.host_policy(
            self.domain,
            host,
            ip,
            requiretls=False,
            mx_hosts=self.mx_hosts,
            sts_mode=strategy.mta_sts,
            sts_lookup=sts_lookup,
            dane_mode=strategy.dane,
            tlsa=tlsa.decision if tlsa is not None else None,
            dnssec_validating=validating,
            relay=relay is not None,
        )
        explained = AddressExplanation(
            host=host,
            ip=ip,
            port=port,
            host_variables=shown,
            connection=connection,
            tls=tls,
            local_ip=local_ip,
            ehlo_name=ehlo_name,
            sts=policy.sts,
            tlsa=tlsa,
            plan=None,
            block=None,
        )
        if policy.failure is not None:
            return dataclasses.replace(explained, block=Blocked(policy.failure))
        plan = planner.plan_host(
            src.snapshot,
            policy.inputs,
            mx=host,
            remote_ip=ip,
            connection=connection,
            local_ip=local_ip,
            ehlo_name=ehlo_name,
            tls=tls,
            relay=relay,
            sts=policy.sts,
            tlsa=policy.tlsa,
        )
        block = Blocked(planner.refusal_failure(plan)) if plan.tls_plan.refusal else None
        return dataclasses.replace(explained, plan=plan, block=block)

    async def _sts(self, timeout_ms: int) -> mtasts.PolicyLookup:
        """The domain's MTA-STS lookup, once (as once per attempt), waited for at most
        ``sts_wait_ms``: the shared lookup goes on for the deliveries if explain stops."""
        if self.sts is None:
            wait_ms = min(timeout_ms, self.sts_wait_ms)
            try:
                async with asyncio.timeout(wait_ms / 1000):
                    self.sts = await self.src.mta_sts.policy_for(self.domain, timeout_ms=timeout_ms)
            except TimeoutError:
                reason = (
                    f"explain stopped waiting for the MTA-STS lookup of {self.domain} after "
                    f"{wait_ms} ms; a delivery waits up to mtaStsTimeout ({timeout_ms} ms), and "
                    "the lookup goes on: explain again for its result"
                )
                self.notes.append(reason)
                self.sts = mtasts.PolicyLookup(
                    self.domain,
                    mtasts.LookupStatus.UNAVAILABLE,
                    reason=reason,
                    problem=mtasts.FetchProblem.TIMEOUT,
                )
        return self.sts

    async def _dane(
        self, host: str, answer: DnsResult[str] | None, mode: dane.DaneMode, validating: bool
    ) -> DaneExplanation:
        """The host's TLSA lookups in `dane.tlsa_queries` order, and the decision."""
        address = answer or DnsResult(Lookup.NODATA, (), False, 0, host, ())
        queries = dane.tlsa_queries(
            host, mode=mode, mx=self.mx_security, address=address, validating=validating
        )
        answers: list[dane.TlsaAnswer] = []
        for query in queries:
            result = await self.src.resolver.tlsa(query.qname)
            answers.append(dane.TlsaAnswer(query, result))
            if dane.is_conclusive(result):
                break
        decision = dane.decide(
            host,
            mode=mode,
            mx=self.mx_security,
            address=address,
            tlsa=answers,
            domain=self.domain,
            validating=validating,
        )
        return DaneExplanation(decision, tuple(answers))
