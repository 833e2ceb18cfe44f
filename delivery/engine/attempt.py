"""One delivery attempt: one message's recipients of one domain, on one route.

The I/O shell of the engine (STYLE §1): it sequences lookups and SMTP steps and feeds what
they return to the pure cores: `planner` (which strategy, which hosts), `policy.tls` (what TLS
each host needs and how to react to each TLS event) and `outcome` (what a failure means). It
decides nothing itself.

Routes:
    Mx      MX lookup (planner.mx_hosts), then every host's addresses by ipLookupStrategy
            (planner.host_addresses); each address in turn on ``[smtp] port``
    Relay   the relay's address (an IP literal, or a name looked up like an MX host) and port,
            SMTP or LMTP, STARTTLS or implicit TLS, AUTH PLAIN/LOGIN
    Local   a maildir under the data folder (engine/local.py)

Per host address: the `connection` and `tls` expressions are evaluated for each pending
recipient (host variables); recipients whose choices differ get sessions of their own. For
each TLS strategy chosen, the domain's policies are looked up as its ``mtaSts`` and ``dane``
modes say (DESIGN §5): the MTA-STS policy (`MtaStsResolver.policy_for`, once per attempt,
within ``mtaStsTimeout``), then the host's TLSA records (`dane.tlsa_queries`, the MX and
address answers' DNSSEC status, the daemon's DNSSEC probe); `planner.host_policy` turns them
into the TLS plan's inputs, or into the failure that keeps the host from being tried. The
session follows the host's `HostTlsPlan`: STARTTLS with a PKIX context (system trust store
plus ``[tls] ca_file``) for the MX name, or an unverifying one with the TLSA base name as SNI
and `dane.verify` of the peer's chain after the handshake, before anything else is sent; and
`tls.react` on every TLS event. A failure is turned into an `outcome.Failure` and
`outcome.decide` says whether the recipients it concerns go to the next address / host in this
same attempt, wait for a retry, or bounce (a per-host absence bounces only when every host
tried said so). Each TLS session attempt with an MX host, and each host a policy refused,
adds one TLS-RPT `SessionResult` to ``tls_results`` (`planner.session_result`).

Outcomes:
    Every recipient of the job ends in `results` (its id -> `RecipientResult`) with an
    `outcome.Outcome` whose ``reason`` names the host, address, step, reply and TLS state.
    Results are written as soon as they are final, so a caller that cancels the attempt still
    knows which recipients the next hop already accepted. Exceptions other than the
    classified SMTP and DNS failures (bugs, cancellation) propagate to the worker's guard.

Security:
    Clear text is never used with a host whose plan is REQUIRED: a session is only handed to
    `_transfer` after `_secure` (STARTTLS, and the DANE match for a DANE host) and the REQUIRED
    check before MAIL FROM both passed. A policy lookup that failed fails the host or the
    domain for now; it never plans the host as if no policy existed where one is required. Relay
    credentials are sent only inside TLS (`SmtpSession.auth` refuses otherwise), never logged.
    DNS answers and replies are untrusted: they are quoted in reasons, never interpreted
    beyond codes.

Standards: RFC 5321 (§5.1 MX, §4.2 replies), RFC 3207 (STARTTLS), RFC 2033 (LMTP), RFC 4954
(AUTH), RFC 4616 (PLAIN), RFC 8314 (implicit TLS), RFC 3461 (DSN parameters), RFC 7672 (DANE),
RFC 8461 (MTA-STS), RFC 8460 (TLS-RPT), RFC 8689 (REQUIRETLS).
Connections:
    With the worker's `smtp.pool.ConnectionPool`, a session whose transaction ended with a
    reply is given back and carries later messages with an equal key (`Attempt._pool_key`:
    host, address, port, source address, EHLO name, protocol, timeouts, AUTH identity, the
    recipient domain whose policies decided the TLS plan, and the whole plan: TLS strategy,
    `HostTlsPlan`, SNI, TLSA records), so no message ever travels under another domain's or
    another message's TLS decision. A reused session is checked by RSET before its first
    transaction; one found stale then is closed and the recipients go over a new connection,
    once, within the attempt, with nothing held against them. A reused session adds no
    TLS-RPT result (no TLS session was attempted: RFC 8460 counts sessions).

Limits: a Relay route's relay is no MX host of the recipient domain: its MTA-STS policy is
not consulted, DANE sees the relay as an insecure name (there is no way to mark a relay
trusted yet), and TLS reports are not made about it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import logging
import random
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, assert_never

from delivery import config, expr
from delivery.dns import resolver as dns_resolver
from delivery.dns.result import DnsResult, Lookup
from delivery.engine import dsn, local, outcome, planner
from delivery.engine import metrics as engine_metrics
from delivery.errors import ConfigError, DnsTempFail, LastError
from delivery.expr import resolve as expr_resolve
from delivery.policy import dane, mtasts, mtasts_fetch, tlsrpt
from delivery.policy import tls as tls_policy
from delivery.queue import model
from delivery.registry import snapshot as registry
from delivery.smtp import errors as smtp_errors
from delivery.smtp import esmtp
from delivery.smtp import pool as smtp_pool
from delivery.smtp import session as smtp_session
from delivery.smtp import tls as smtp_tls
from delivery.smtp.reply import Reply

__all__ = [
    "MAX_DNS_ANSWER_ITEMS",
    "Attempt",
    "DnssecStatus",
    "Job",
    "RecipientResult",
    "Target",
    "TlsReport",
    "failure_of",
    "make_lookup",
]

log = logging.getLogger("delivery.engine")

MAX_DNS_ANSWER_ITEMS = 100
"""Records of one dns_query() answer handed to an expression: bounds what one lookup of an
attacker-influenced name can make an evaluation hold."""

RELAY_MAX_ADDRESSES = 2
"""Addresses of a relay given by name tried per attempt (as an Mx route's maxMultihomed)."""

_NOTIFY: dict[model.Notify, esmtp.Notify] = {
    model.Notify.NEVER: "NEVER",
    model.Notify.SUCCESS: "SUCCESS",
    model.Notify.FAILURE: "FAILURE",
    model.Notify.DELAY: "DELAY",
}
_RET: dict[model.Ret, Literal["FULL", "HDRS"]] = {model.Ret.FULL: "FULL", model.Ret.HDRS: "HDRS"}

_STAGES: dict[smtp_errors.Phase, outcome.Stage] = {
    "connect": outcome.Stage.CONNECT,
    "tls": outcome.Stage.STARTTLS,  # implicit TLS: the handshake, and the peer's authentication
    "greeting": outcome.Stage.GREETING,
    "ehlo": outcome.Stage.EHLO,
    "starttls": outcome.Stage.STARTTLS,
    "auth": outcome.Stage.AUTH,
    "mail": outcome.Stage.MAIL,
    "rcpt": outcome.Stage.RCPT,
    "data": outcome.Stage.DATA,
    "dot": outcome.Stage.DOT,
    "rset": outcome.Stage.MAIL,  # RSET only follows a transaction: the session is what broke
    "quit": outcome.Stage.DOT,
}


@dataclass(frozen=True, slots=True)
class Target:
    """One recipient of a job, with the variables and plan it was routed by."""

    recipient: model.QueuedRecipient
    variables: Mapping[str, expr.Value]
    """Its rcpt variables (DESIGN §4)."""
    plan: planner.RecipientPlan | None
    """None when the route could not be chosen (a dns_query() that failed)."""


@dataclass(frozen=True, slots=True)
class Job:
    """What one attempt delivers: recipients of one message and domain sharing one route."""

    message: model.QueuedMessage
    body: bytes
    domain: str
    route: registry.Route
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class TlsReport:
    """The TLS state of the session that decided a recipient's outcome.

    :param version: e.g. "TLSv1.3"; None for clear text.
    :param authenticated: how the peer was authenticated: "pkix" (certificate chain and name
        verified), "dane" (the chain matched the host's TLSA records, RFC 7672), "none"
        (encrypted only: allowInvalidCerts, or TLSA records none of which is usable).
    :param by: what else vouched, in words: the MTA-STS policy that lists the host (PKIX), the
        TLSA record that matched (DANE); "" when nothing more.
    :param note: why the session is in clear text, or "" with TLS.
    """

    version: str | None
    cipher: str = ""
    authenticated: Literal["none", "pkix", "dane"] = "none"
    by: str = ""
    note: str = ""

    def describe(self) -> str:
        """For reasons, logs and ``last_status``.

        >>> TlsReport("TLSv1.3", "TLS_AES_256_GCM_SHA384", "pkix").describe()
        'TLSv1.3 TLS_AES_256_GCM_SHA384, certificate verified (PKIX)'
        >>> TlsReport("TLSv1.3", "TLS_AES_256_GCM_SHA384", "dane", "TLSA 3 1 1").describe()
        'TLSv1.3 TLS_AES_256_GCM_SHA384, certificate verified (DANE: TLSA 3 1 1)'
        >>> TlsReport(None, note="STARTTLS not offered").describe()
        'clear text (STARTTLS not offered)'
        """
        if self.version is None:
            return f"clear text ({self.note})" if self.note else "clear text"
        match self.authenticated:
            case "pkix":
                how = "certificate verified (PKIX" + (f"; {self.by})" if self.by else ")")
            case "dane":
                how = "certificate verified (DANE" + (f": {self.by})" if self.by else ")")
            case "none":
                how = "certificate not verified"
        return f"{self.version} {self.cipher}, {how}"


class DnssecStatus(Protocol):
    """Whether the resolver validates DNSSEC: the daemon's probe (DESIGN §5 step 2)."""

    async def validating(self) -> bool:
        """True when AD can be believed; waits for the first probe to answer."""
        ...


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """How one recipient's attempt ended."""

    target: Target
    outcome: outcome.Outcome
    tls: TlsReport | None
    """The TLS state of the session that decided it; None when no session did."""
    handoff: dsn.Handoff
    """For a delivered recipient: who reports on it from now on (RFC 3461 §5.2)."""
    host: planner.HostPlan | None = None
    """The host plan of the session that decided it, for logs and explain."""


def make_lookup(resolver: dns_resolver.Resolver, /) -> expr_resolve.Lookup:
    """make_lookup - the ``dns_query()`` lookup of expressions, through the engine's resolver.

    No records (NXDOMAIN, NODATA) is the empty list; a lookup that could not be answered
    raises DnsTempFail: never read as "no records".
    """

    async def lookup(name: str, rtype: str) -> expr.Value:
        result = await resolver.query(name, rtype)
        match result.status:
            case Lookup.ANSWER:
                return list[expr.Value](result.records[:MAX_DNS_ANSWER_ITEMS])
            case Lookup.NODATA | Lookup.NXDOMAIN:
                return []
            case Lookup.TEMPFAIL:
                raise DnsTempFail(f"dns_query({name!r}, {rtype!r}) failed: {result.detail}")
            case _ as unreachable:
                assert_never(unreachable)

    return lookup


def failure_of(exc: smtp_errors.SmtpError, /) -> outcome.Failure:
    """failure_of - the `outcome.Failure` for an SMTP layer error (TLS errors excluded)."""
    stage = _STAGES[exc.phase]
    host, ip = exc.server_name, exc.ip
    match exc:
        case smtp_errors.ConnectFailed():
            cause = exc.__cause__
            detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else ""
            return outcome.transport_failure(
                stage, "refused", remote_host=host, remote_ip=ip, detail=detail or str(exc)
            )
        case smtp_errors.PhaseTimeout():
            return outcome.transport_failure(
                stage, "timeout", remote_host=host, remote_ip=ip, detail=str(exc)
            )
        case smtp_errors.ConnectionLost():
            return outcome.transport_failure(stage, "lost", remote_host=host, remote_ip=ip)
        case smtp_errors.UnexpectedReply() if exc.reply is not None:
            reply = exc.reply
            return outcome.reply_failure(
                stage, reply.code, reply.text, remote_host=host, remote_ip=ip
            )
        case smtp_errors.AuthNotProtected():
            # RFC 3463 X.7.10 (RFC 5248): encryption needed for this authentication.
            return outcome.Failure(
                stage=stage,
                scope=outcome.Scope.SITE,
                soft=True,
                status="4.7.10",
                kind=exc.kind,
                reason=str(exc),
                remote_host=host,
                remote_ip=ip,
            )
        case _:
            scope = (
                outcome.Scope.SITE if stage.scope is outcome.Scope.SITE else outcome.Scope.SESSION
            )
            return outcome.Failure(
                stage=stage,
                scope=scope,
                soft=True,
                status="4.5.0",
                kind=exc.kind,
                reason=str(exc),
                remote_host=host,
                remote_ip=ip,
            )


@dataclass(frozen=True, slots=True)
class _Candidate:
    """One address to try, or a host that failed before it had an address."""

    host: str
    ip: str | None
    failure: outcome.Failure | None = None
    answer: DnsResult[str] | None = None
    """The A or AAAA answer ``ip`` came from (its DNSSEC status, for DANE); None for an IP
    literal relay."""


@dataclass(frozen=True, slots=True)
class _Group:
    """Pending recipients of one host address whose expressions chose the same strategies."""

    connection: planner.Selection[registry.ConnectionStrategy]
    local_ip: str
    ehlo_name: str
    tls: planner.Selection[registry.TlsStrategy]
    targets: list[Target]


class Attempt:
    """One delivery attempt for a `Job`; `run` fills ``results``.

    :param settings: the daemon settings (hostname, SMTP port, CA file, data folder).
    :param snapshot: the registry snapshot the whole attempt reads.
    :param mta_sts: the daemon's MTA-STS resolver (policies cached across attempts).
    :param dnssec: whether the resolver validates DNSSEC (the daemon's probe).
    :param results: recipient id -> RecipientResult, written as each becomes final.
    :param tls_results: where each TLS session attempt's TLS-RPT result is appended.
    :param metrics: where each session ready for mail is counted; None: not counted.
    :param pool: the worker's idle connections, taken and given back by key; None: every
        session is opened for this attempt and closed after it.
    :param rng: randomness for MX and address order and source address choice.
    :param clock: epoch milliseconds, for the time of TLS-RPT results.
    """

    def __init__(
        self,
        job: Job,
        *,
        settings: config.Settings,
        snapshot: registry.Snapshot,
        resolver: dns_resolver.Resolver,
        mta_sts: mtasts_fetch.MtaStsResolver,
        dnssec: DnssecStatus,
        env: expr.Environment,
        results: dict[int, RecipientResult],
        tls_results: list[tlsrpt.SessionResult] | None = None,
        metrics: engine_metrics.DeliveryMetrics | None = None,
        pool: smtp_pool.ConnectionPool[TlsReport] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], int] = model.now_ms,
    ) -> None:
        self.job = job
        self._pool = pool
        self._settings = settings
        self._snapshot = snapshot
        self._resolver = resolver
        self._mta_sts = mta_sts
        self._dnssec = dnssec
        self._env = env
        self._lookup = make_lookup(resolver)
        self._rng = rng or random.Random()
        self._clock = clock
        self.results = results
        self.tls_results: list[tlsrpt.SessionResult] = [] if tls_results is None else tls_results
        self._metrics = metrics
        self._pending: dict[int, Target] = {t.recipient.id: t for t in job.targets}
        self._last: dict[int, tuple[outcome.Failure, TlsReport | None, planner.HostPlan | None]]
        self._last = {}
        self._transient: set[int] = set()
        """Recipients a host already failed in a way that may pass (outcome rule 2)."""
        self._mx_hosts: tuple[str, ...] = ()
        self._mx_security = dane.MxSecurity.INSECURE
        self._sts_lookup: mtasts.PolicyLookup | None = None

    # ---- entry ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver the job's recipients; every one ends in ``results``."""
        self._check_envelope()
        route = self.job.route
        match route:
            case registry.LocalRoute():
                await self._deliver_local()
            case registry.MxRoute():
                candidates = await self._mx_candidates(route)
                await self._try_candidates(candidates, port=self._settings.smtp.port)
            case registry.RelayRoute():
                candidates = await self._relay_candidates(route)
                await self._try_candidates(candidates, port=route.port, relay=route)
            case _ as unreachable:
                assert_never(unreachable)
        for target in list(self._pending.values()):  # only if the last candidate kept them
            failure, tls, host = self._last.get(target.recipient.id, (None, None, None))
            if failure is None:
                failure = self._io_failure("no host was left to try")
            decision = outcome.decide(
                failure,
                final_host=True,
                others_transient=target.recipient.id in self._transient,
            )
            self._finish(target, outcome.make_outcome(failure, decision), tls, host)

    # ---- recipients -----------------------------------------------------------------------

    def _finish(
        self,
        target: Target,
        result: outcome.Outcome,
        tls: TlsReport | None,
        host: planner.HostPlan | None,
        handoff: dsn.Handoff = dsn.Handoff.RELAY,
    ) -> None:
        self._pending.pop(target.recipient.id, None)
        self.results[target.recipient.id] = RecipientResult(target, result, tls, handoff, host)

    def _fail(
        self,
        targets: Sequence[Target],
        failure: outcome.Failure,
        *,
        final: bool,
        tls: TlsReport | None = None,
        host: planner.HostPlan | None = None,
    ) -> None:
        """Apply ``failure`` to ``targets``: next host (kept pending), defer or bounce."""
        if tls is not None:
            failure = dataclasses.replace(failure, reason=f"{failure.reason} [{tls.describe()}]")
        for target in targets:
            rid = target.recipient.id
            if rid not in self._pending:
                continue
            decision = outcome.decide(
                failure, final_host=final, others_transient=rid in self._transient
            )
            if decision.disposition is outcome.Disposition.TRY_NEXT_HOST:
                self._last[rid] = (failure, tls, host)
                if failure.cause is not outcome.Cause.POLICY_ABSENT:
                    self._transient.add(rid)
            else:
                self._finish(target, outcome.make_outcome(failure, decision), tls, host)

    def _check_envelope(self) -> None:
        """Bounce recipients whose address cannot be put on the wire safely (CR, LF, ...)."""
        message = self.job.message
        for target in list(self._pending.values()):
            try:
                esmtp.Envelope(
                    message.sender,
                    (self._recipient(target),),
                    smtputf8=message.smtputf8,
                )
            except smtp_errors.InvalidArgument as exc:
                status = "5.1.7" if exc.field == "sender" else "5.1.3"
                self._finish(
                    target,
                    outcome.without_host(
                        "failed", status, LastError.NONE, f"the envelope cannot be sent: {exc}"
                    ),
                    None,
                    None,
                )

    @staticmethod
    def _recipient(target: Target) -> esmtp.Recipient:
        """The envelope recipient: NOTIFY as given, ORCPT when it is a usable rfc822 address."""
        rcpt = target.recipient
        notify = tuple(_NOTIFY[n] for n in sorted(rcpt.notify))
        orcpt = None
        if rcpt.orcpt is not None:
            kind, _, value = rcpt.orcpt.partition(";")
            decoded = dsn.decode_xtext(value)
            if kind.strip().lower() == "rfc822" and decoded.isprintable() and decoded.strip("<>"):
                orcpt = decoded if "<" not in decoded and ">" not in decoded else None
        return esmtp.Recipient(rcpt.address, notify, orcpt)

    def _io_failure(self, reason: str) -> outcome.Failure:
        return outcome.Failure(
            stage=outcome.Stage.ROUTE,
            scope=outcome.Scope.DOMAIN,
            soft=True,
            status="4.3.0",
            kind=LastError.IO,
            reason=reason,
        )

    # ---- local ----------------------------------------------------------------------------

    async def _deliver_local(self) -> None:
        message = self.job.message
        data_dir = Path(self._settings.data_dir)
        for target in list(self._pending.values()):
            address = target.recipient.address
            try:
                path = await asyncio.to_thread(
                    local.deliver, data_dir, address, self.job.body, return_path=message.sender
                )
            except OSError as exc:
                result = outcome.without_host(
                    "delayed", "4.3.0", LastError.IO, f"local delivery to {address} failed: {exc}"
                )
                self._finish(target, result, None, None)
                continue
            result = outcome.without_host(
                "delivered",
                "2.0.0",
                LastError.NONE,
                f"delivered to the local mailbox {path.parent.parent}",
            )
            self._finish(target, result, None, None, dsn.Handoff.FINAL)

    # ---- candidates -----------------------------------------------------------------------

    async def _mx_candidates(self, route: registry.MxRoute) -> list[_Candidate]:
        domain = self.job.domain
        answer = await self._resolver.mx(domain)
        found = planner.mx_hosts(domain, answer, max_hosts=route.max_mx_hosts, rng=self._rng)
        if isinstance(found, outcome.Failure):
            self._fail(list(self._pending.values()), found, final=True)
            return []
        hosts, implicit = found
        self._mx_hosts = hosts
        self._mx_security = planner.mx_security(answer, implicit=implicit)
        lookups = [
            self._addresses(host, route.ip_lookup_strategy, route.max_multihomed) for host in hosts
        ]
        # One host (the common case) is awaited as is: its cached addresses come without a
        # task or a loop turn; several are looked up concurrently.
        per_host = [await lookups[0]] if len(lookups) == 1 else await asyncio.gather(*lookups)
        candidates = [c for group in per_host for c in group]
        if not candidates:
            problem = (
                outcome.RouteProblem.NO_SUCH_DOMAIN if implicit else outcome.RouteProblem.NO_ADDRESS
            )
            self._fail(
                list(self._pending.values()), outcome.route_failure(problem, domain), final=True
            )
        return candidates

    async def _relay_candidates(self, route: registry.RelayRoute) -> list[_Candidate]:
        try:
            ipaddress.ip_address(route.address)
        except ValueError:
            pass
        else:
            return [_Candidate(route.address, route.address)]
        candidates = await self._addresses(route.address, "v4ThenV6", RELAY_MAX_ADDRESSES)
        if not candidates:
            failure = outcome.Failure(
                stage=outcome.Stage.HOST,
                scope=outcome.Scope.SITE,
                soft=True,
                status="4.4.4",
                kind=LastError.DNS,
                reason=f"the relay {route.address} of route {route.name!r} has no address",
                remote_host=route.address,
            )
            return [_Candidate(route.address, None, failure)]
        return candidates

    async def _addresses(
        self, host: str, strategy: planner.IpLookupStrategy, max_multihomed: int
    ) -> list[_Candidate]:
        lookups = await self._resolver.addresses(host, planner.address_families(strategy))
        found = planner.host_addresses(host, lookups, max_multihomed=max_multihomed, rng=self._rng)
        if found is None:
            return []
        if isinstance(found, outcome.Failure):
            return [_Candidate(host, None, found)]
        return [_Candidate(host, address.ip, answer=address.answer) for address in found]

    async def _try_candidates(
        self,
        candidates: Sequence[_Candidate],
        *,
        port: int,
        relay: registry.RelayRoute | None = None,
    ) -> None:
        for index, candidate in enumerate(candidates):
            if not self._pending:
                return
            final = index == len(candidates) - 1
            if candidate.failure is not None or candidate.ip is None:
                failure = candidate.failure or self._io_failure(f"{candidate.host} has no address")
                self._fail(list(self._pending.values()), failure, final=final)
                continue
            for group in await self._host_groups(candidate.host, candidate.ip, relay):
                policy = await self._host_policy(candidate, candidate.ip, group.tls.value, relay)
                if policy.failure is not None:
                    log.info(
                        "not using %s[%s] for %s: %s",
                        candidate.host,
                        candidate.ip,
                        self.job.domain,
                        policy.failure.reason,
                    )
                    self._record(
                        planner.refused_result(
                            self.job.domain,
                            candidate.host,
                            candidate.ip,
                            policy,
                            at=self._clock(),
                            relay=relay is not None,
                        )
                    )
                    self._fail(group.targets, policy.failure, final=final)
                    continue
                plan = planner.plan_host(
                    self._snapshot,
                    policy.inputs,
                    mx=candidate.host,
                    remote_ip=candidate.ip,
                    connection=group.connection,
                    local_ip=group.local_ip,
                    ehlo_name=group.ehlo_name,
                    tls=group.tls,
                    relay=relay,
                    sts=policy.sts,
                    tlsa=policy.tlsa,
                )
                await self._session(plan, group.targets, port=port, final=final, relay=relay)

    async def _host_groups(
        self, host: str, ip: str, relay: registry.RelayRoute | None
    ) -> list[_Group]:
        """The pending recipients grouped by the strategies their expressions pick."""
        outbound = self._snapshot.outbound
        sources: dict[str, tuple[str, str]] = {}  # connection name -> (source ip, EHLO name)
        groups: dict[tuple[str, str], _Group] = {}
        for target in list(self._pending.values()):
            variables = _host_vars(target, mx=host, remote_ip=ip, local_ip="")
            try:
                connection_value = await expr.evaluate_resolving(
                    outbound.connection, variables, self._env, self._lookup
                )
                connection = planner.select_connection(self._snapshot, connection_value)
                if connection.name not in sources:
                    sources[connection.name] = planner.source_address(
                        connection.value, ip, hostname=self._settings.hostname, rng=self._rng
                    )
                local_ip, ehlo_name = sources[connection.name]
                variables = _host_vars(target, mx=host, remote_ip=ip, local_ip=local_ip)
                tls_value = await expr.evaluate_resolving(
                    outbound.tls, variables, self._env, self._lookup
                )
            except DnsTempFail as exc:
                failure = outcome.strategy_dns_failure(str(exc), remote_host=host, remote_ip=ip)
                self._fail([target], failure, final=True)
                continue
            tls = planner.select_tls(self._snapshot, tls_value)
            key = (connection.name.lower(), tls.name.lower())
            if key not in groups:
                groups[key] = _Group(connection, local_ip, ehlo_name, tls, [])
            groups[key].targets.append(target)
        return list(groups.values())

    # ---- the domain's policies ------------------------------------------------------------

    async def _host_policy(
        self,
        candidate: _Candidate,
        ip: str,
        strategy: registry.TlsStrategy,
        relay: registry.RelayRoute | None,
    ) -> planner.HostPolicy:
        """The MTA-STS and DANE lookups ``strategy`` asks for, and what they say of the host."""
        sts_lookup = None
        if relay is None and strategy.mta_sts != "disable":
            sts_lookup = await self._sts(strategy.mta_sts_timeout_ms)
        validating, tlsa = False, None
        if strategy.dane != "disable":
            validating = await self._dnssec.validating()
            tlsa = await self._dane(candidate, strategy.dane, validating)
        return planner.host_policy(
            self.job.domain,
            candidate.host,
            ip,
            requiretls=self.job.message.requiretls,
            mx_hosts=self._mx_hosts,
            sts_mode=strategy.mta_sts,
            sts_lookup=sts_lookup,
            dane_mode=strategy.dane,
            tlsa=tlsa,
            dnssec_validating=validating,
            relay=relay is not None,
        )

    async def _sts(self, timeout_ms: int) -> mtasts.PolicyLookup:
        """The domain's MTA-STS lookup, once per attempt (the resolver caches across them)."""
        if self._sts_lookup is None:
            self._sts_lookup = await self._mta_sts.policy_for(
                self.job.domain, timeout_ms=timeout_ms
            )
            if log.isEnabledFor(logging.DEBUG):  # describe() builds sentences: not per message
                log.debug("%s", self._sts_lookup.describe())
        return self._sts_lookup

    async def _dane(
        self, candidate: _Candidate, mode: dane.DaneMode, validating: bool
    ) -> dane.DaneDecision:
        """The host's TLSA records, looked up in `dane.tlsa_queries` order, and the decision."""
        # An IP-literal relay has no address answer; `dane.decide` refuses IP literals (and
        # relays: their name is insecure) before it would read one.
        address = candidate.answer or DnsResult(Lookup.NODATA, (), False, 0, candidate.host, ())
        queries = dane.tlsa_queries(
            candidate.host,
            mode=mode,
            mx=self._mx_security,
            address=address,
            validating=validating,
        )
        answers: list[dane.TlsaAnswer] = []
        for query in queries:
            result = await self._resolver.tlsa(query.qname)
            answers.append(dane.TlsaAnswer(query, result))
            if dane.is_conclusive(result):
                break
        decision = dane.decide(
            candidate.host,
            mode=mode,
            mx=self._mx_security,
            address=address,
            tlsa=answers,
            domain=self.job.domain,
            validating=validating,
        )
        for dropped in decision.dropped:
            log.warning("%s: %s", decision.host.rstrip("."), dropped.describe())
        return decision

    def _record(self, result: tlsrpt.SessionResult | None) -> None:
        """Keep one TLS session attempt's TLS-RPT result for the worker to record."""
        if result is not None:
            self.tls_results.append(result)

    def _observe(
        self,
        plan: planner.HostPlan,
        session: smtp_session.SmtpSession | None,
        event: tls_policy.Event | None = None,
        detail: str = "",
        *,
        verify_code: int = 0,
        dane_failure: dane.DaneFailure | None = None,
    ) -> None:
        """Record the TLS-RPT result of a TLS session attempt with the host of ``plan``."""
        greeting = session.greeting if session is not None else None
        helo = greeting.text.split(None, 1)[0] if greeting is not None and greeting.text else ""
        observed = planner.SessionObservation(
            event=event,
            detail=detail,
            verify_code=verify_code,
            dane_failure=dane_failure,
            local_ip=(session.local_ip or "") if session is not None else "",
            helo=helo,
        )
        self._record(
            planner.session_result(plan, observed, domain=self.job.domain, at=self._clock())
        )

    # ---- one session ----------------------------------------------------------------------

    async def _session(
        self,
        plan: planner.HostPlan,
        targets: list[Target],
        *,
        port: int,
        final: bool,
        relay: registry.RelayRoute | None,
    ) -> None:
        """Deliver ``targets`` through one session with the host of ``plan``.

        A pooled connection opened under the same key (`_pool_key`) is used when there is
        one; if it turns out stale before its transaction began (`StaleConnection`), the
        targets go over a new connection, once, and nothing is held against them.
        """
        if plan.tls_plan.refusal is not None:
            self._fail(targets, planner.refusal_failure(plan), final=final, host=plan)
            return
        lmtp = relay is not None and relay.protocol == "lmtp"
        implicit_tls = relay is not None and relay.implicit_tls
        key = self._pool_key(plan, port, lmtp=lmtp, implicit_tls=implicit_tls, relay=relay)
        entry = self._pool.take(key) if self._pool is not None else None
        if entry is not None:
            try:
                await self._use(entry, plan, targets, final=final, lmtp=lmtp, reused=True)
                return
            except smtp_session.StaleConnection as exc:
                log.info("%s; delivering over a new connection", exc)
        entry = await self._connect(plan, key, targets, port=port, final=final, relay=relay)
        if entry is not None:
            await self._use(entry, plan, targets, final=final, lmtp=lmtp, reused=False)

    def _pool_key(
        self,
        plan: planner.HostPlan,
        port: int,
        *,
        lmtp: bool,
        implicit_tls: bool,
        relay: registry.RelayRoute | None,
    ) -> smtp_pool.PoolKey:
        """The key of a connection for ``plan``: everything the session's security and
        identity depend on (DESIGN §5.3; `smtp.pool.pool_key`)."""
        dane_decision = plan.dane
        tls_requirement = (
            plan.tls.name.lower(),
            plan.tls_plan,
            plan.server_hostname,
            dane_decision.records if dane_decision is not None else (),
            dane_decision.names if dane_decision is not None else (),
        )
        auth = ""
        if relay is not None and relay.auth_username is not None:
            auth = f"{relay.name}/{relay.auth_username}"
        return smtp_pool.pool_key(
            plan.mx,
            plan.remote_ip,
            port,
            source_ip=plan.local_ip,
            ehlo_name=plan.ehlo_name,
            policy_domain=self.job.domain,
            tls=tls_requirement,
            timeouts=_timeouts(plan.connection.value),
            lmtp=lmtp,
            implicit_tls=implicit_tls,
            auth=auth,
        )

    async def _connect(
        self,
        plan: planner.HostPlan,
        key: smtp_pool.PoolKey,
        targets: list[Target],
        *,
        port: int,
        final: bool,
        relay: registry.RelayRoute | None,
    ) -> smtp_pool.PoolEntry[TlsReport] | None:
        """A new session ready for mail (secured, authenticated); None when it failed (the
        targets' failure is recorded)."""
        lmtp, implicit_tls = key.lmtp, key.implicit_tls
        where = f"{plan.mx}[{plan.remote_ip}]"
        try:
            session, tls = await self._open(plan, port=port, lmtp=lmtp, implicit_tls=implicit_tls)
        except _HostFailed as failed:
            self._fail(targets, failed.failure, final=final, tls=failed.tls, host=plan)
            return None
        except smtp_errors.SmtpError as exc:
            self._fail(targets, failure_of(exc), final=final, host=plan)
            return None
        if self._metrics is not None:
            self._metrics.tls_session(tls)
        try:
            if plan.tls_plan.tls is tls_policy.TlsMode.REQUIRED and not session.is_tls:
                # Unreachable when _open is right; the promise is kept here regardless.
                raise _HostFailed(_tls_missing(plan, f"{where} is not TLS-protected"), tls)
            if relay is not None and relay.auth_username is not None:
                await self._authenticate(session, relay, tls)
        except _HostFailed as failed:
            self._fail(targets, failed.failure, final=final, tls=failed.tls, host=plan)
            await session.quit()
            return None
        except smtp_errors.SmtpError as exc:
            self._fail(targets, failure_of(exc), final=final, tls=tls, host=plan)
            await session.quit()
            return None
        except BaseException:
            session.close()
            raise
        if self._pool is None:
            return smtp_pool.PoolEntry(key, session, tls, opened_at=0.0)
        return self._pool.entry(key, session, tls)

    async def _use(
        self,
        entry: smtp_pool.PoolEntry[TlsReport],
        plan: planner.HostPlan,
        targets: list[Target],
        *,
        final: bool,
        lmtp: bool,
        reused: bool,
    ) -> None:
        """The transactions for ``targets`` on ``entry``'s session, then give it back to the
        pool (or QUIT) when it is fit for another message.

        :raises StaleConnection: only when ``reused``; nothing was recorded for the targets.
        """
        session, tls = entry.session, entry.info
        try:
            await self._transfer(
                session, plan, targets, tls, final=final, lmtp=lmtp, reset_first=reused
            )
        except smtp_session.StaleConnection:
            raise  # closed already; the caller tries a new connection
        except smtp_errors.ExtensionNotOffered as exc:
            self._fail(targets, _extension_failure(exc), final=final, tls=tls, host=plan)
        except smtp_errors.SmtpError as exc:
            self._fail(targets, failure_of(exc), final=final, tls=tls, host=plan)
        except BaseException:
            session.close()
            raise
        if self._pool is not None:
            self._pool.put(entry)  # kept only if it is still open and within its limits
        else:
            await session.quit()

    async def _open(
        self, plan: planner.HostPlan, *, port: int, lmtp: bool, implicit_tls: bool
    ) -> tuple[smtp_session.SmtpSession, TlsReport]:
        """Connect, EHLO and secure the session as the plan says; the session and its TLS.

        :raises _HostFailed: the TLS plan cannot be met with this host.
        :raises SmtpError: connect, greeting or EHLO failed.
        """
        strategy = plan.tls.value
        timeouts = _timeouts(plan.connection.value)
        source = plan.local_ip or None
        if implicit_tls:
            try:
                session = await smtp_session.SmtpSession.connect(
                    plan.remote_ip,
                    port,
                    server_name=plan.mx,
                    timeouts=timeouts,
                    source_ip=source,
                    lmtp=lmtp,
                    tls_context=self._context(plan.tls_plan),
                    tls_timeout_ms=strategy.tls_timeout_ms,
                )
            except smtp_errors.TlsError as exc:
                event = (
                    tls_policy.Event.CERT_REJECTED
                    if isinstance(exc, smtp_errors.CertificateRejected)
                    else tls_policy.Event.HANDSHAKE_FAILED
                )
                # Implicit TLS has no clear-text fallback on the same port: any TLS failure
                # fails the host, whatever `react` would allow after STARTTLS.
                raise _HostFailed(self._tls_failure(plan, event, str(exc)), None) from exc
            try:
                matched = self._dane_check(plan, session)
                await session.ehlo(plan.ehlo_name)
            except BaseException:
                session.close()
                raise
            return session, self._tls_report(plan, session, matched)
        session = await _connect_clear(plan, port=port, lmtp=lmtp)
        try:
            return await self._secure(session, plan, port=port, lmtp=lmtp)
        except BaseException:
            session.close()
            raise

    async def _secure(
        self, session: smtp_session.SmtpSession, plan: planner.HostPlan, *, port: int, lmtp: bool
    ) -> tuple[smtp_session.SmtpSession, TlsReport]:
        """STARTTLS per the plan; react to each TLS event as `policy.tls` says."""
        tls_plan = plan.tls_plan
        where = f"{plan.mx}[{plan.remote_ip}]"
        if tls_plan.tls is tls_policy.TlsMode.OFF:
            note = f"TLS strategy {plan.tls.name!r} disables STARTTLS"
            return session, TlsReport(None, note=note)
        event: tls_policy.Event
        verify_code = 0
        if not session.supports("STARTTLS"):
            event, detail = tls_policy.Event.NO_STARTTLS, f"{where} did not offer STARTTLS"
            note = "STARTTLS not offered"
        else:
            try:
                await session.starttls(
                    self._context(tls_plan),
                    server_hostname=plan.server_hostname,
                    timeout_ms=plan.tls.value.tls_timeout_ms,
                )
            except smtp_errors.StartTlsRefused as exc:
                event, detail = tls_policy.Event.NO_STARTTLS, str(exc)
                note = f"STARTTLS refused: {exc.reply}" if exc.reply else "STARTTLS refused"
            except smtp_errors.CertificateRejected as exc:
                event, detail = tls_policy.Event.CERT_REJECTED, str(exc)
                verify_code = exc.verify_code
            except (smtp_errors.HandshakeFailed, smtp_errors.ProtocolViolation) as exc:
                event, detail = tls_policy.Event.HANDSHAKE_FAILED, str(exc)
            else:
                matched = self._dane_check(plan, session)  # before anything else is sent
                self._observe(plan, session)
                await session.ehlo(plan.ehlo_name)  # RFC 3207 §4.2: forget what came before
                return session, self._tls_report(plan, session, matched)
        self._observe(plan, session, event, detail, verify_code=verify_code)
        match tls_policy.react(tls_plan, event):
            case tls_policy.Reaction.CONTINUE_CLEAR:
                return session, TlsReport(None, note=note)
            case tls_policy.Reaction.RECONNECT_CLEAR:
                session.close()
                log.info("%s; delivering in clear text (nothing required TLS)", detail)
                clear = await _connect_clear(plan, port=port, lmtp=lmtp)
                return clear, TlsReport(None, note=f"after a failed TLS handshake: {detail}")
            case tls_policy.Reaction.FAIL_HOST:
                session.close()
                raise _HostFailed(self._tls_failure(plan, event, detail), None)
            case _ as unreachable:
                assert_never(unreachable)

    def _dane_check(
        self, plan: planner.HostPlan, session: smtp_session.SmtpSession
    ) -> dane.DaneVerification | None:
        """Match the peer's chain to the host's TLSA records when the plan says DANE.

        None when the plan does not verify by DANE.

        :raises _HostFailed: the chain does not match (the session is closed; nothing was
            sent inside TLS).
        """
        decision = plan.dane
        if plan.tls_plan.verification is not tls_policy.Verification.DANE or decision is None:
            return None
        verification = dane.verify(
            session.peer_chain(),
            decision.records,
            names=decision.names,
            now=datetime.datetime.now(datetime.UTC),
        )
        if verification.ok:
            log.debug("%s[%s]: %s", plan.mx, plan.remote_ip, verification.reason)
            return verification
        self._observe(plan, session, detail=verification.reason, dane_failure=verification.failure)
        session.close()
        failure = outcome.policy_violation(
            LastError.DANE,
            f"{plan.mx}[{plan.remote_ip}] failed DANE authentication ({decision.reason}): "
            f"{verification.reason}: not sending to it",
            stage=outcome.Stage.STARTTLS,
            remote_host=plan.mx,
            remote_ip=plan.remote_ip,
        )
        raise _HostFailed(failure, None)

    def _context(self, tls_plan: tls_policy.HostTlsPlan) -> ssl.SSLContext:
        match tls_plan.verification:
            case tls_policy.Verification.PKIX:
                return smtp_tls.pkix_context(self._settings.tls.ca_file)
            case tls_policy.Verification.NONE | tls_policy.Verification.DANE:
                # DANE: no PKIX; the chain is matched to the TLSA records after the
                # handshake (`_dane_check`), before anything is sent inside TLS.
                return smtp_tls.unverified_context()
            case _ as unreachable:
                assert_never(unreachable)

    @staticmethod
    def _tls_report(
        plan: planner.HostPlan,
        session: smtp_session.SmtpSession,
        matched: dane.DaneVerification | None,
    ) -> TlsReport:
        info = session.tls
        assert info is not None
        match plan.tls_plan.verification:
            case tls_policy.Verification.PKIX:
                return TlsReport(info.version, info.cipher, "pkix", plan.mta_sts_note())
            case tls_policy.Verification.DANE:
                record = matched.record if matched is not None else None
                by = ""
                if record is not None:
                    where = "the certificate" if matched and matched.depth == 0 else "its chain"
                    name = "DANE-EE" if record.usage == 3 else "DANE-TA"
                    by = (
                        f"{name} record {record.usage} {record.selector} {record.mtype} "
                        f"matches {where}"
                    )
                return TlsReport(info.version, info.cipher, "dane", by)
            case tls_policy.Verification.NONE:
                return TlsReport(info.version, info.cipher, "none")
            case _ as unreachable:
                assert_never(unreachable)

    @staticmethod
    def _tls_failure(
        plan: planner.HostPlan, event: tls_policy.Event, detail: str
    ) -> outcome.Failure:
        if plan.tls_plan.tls is tls_policy.TlsMode.REQUIRED:
            return _tls_missing(plan, detail, offered=event is not tls_policy.Event.NO_STARTTLS)
        return outcome.tls_failure(detail, remote_host=plan.mx, remote_ip=plan.remote_ip)

    async def _authenticate(
        self, session: smtp_session.SmtpSession, relay: registry.RelayRoute, tls: TlsReport
    ) -> None:
        """AUTH with the route's credentials; a failure fails this host (SITE scope)."""
        assert relay.auth_username is not None
        secret = relay.auth_secret
        try:
            password = await secret.reveal() if secret is not None else ""
        except ConfigError as exc:  # an unset variable, an unreadable file
            failure = outcome.Failure(
                stage=outcome.Stage.AUTH,
                scope=outcome.Scope.SITE,
                soft=True,
                status="4.7.0",
                kind=LastError.IO,
                reason=f"route {relay.name!r}: cannot read the AUTH secret: {exc}",
                remote_host=relay.address,
                remote_ip=session.remote_ip,
            )
            raise _HostFailed(failure, tls) from exc
        try:
            await session.auth(relay.auth_username, password)
        except (smtp_errors.AuthError, smtp_errors.AuthRefused) as exc:
            failure = failure_of(exc)
            reason = f"route {relay.name!r}: {failure.reason}"
            raise _HostFailed(dataclasses.replace(failure, reason=reason), tls) from exc

    async def _transfer(
        self,
        session: smtp_session.SmtpSession,
        plan: planner.HostPlan,
        targets: list[Target],
        tls: TlsReport,
        *,
        final: bool,
        lmtp: bool,
        reset_first: bool = False,
    ) -> None:
        """The mail transactions for ``targets``, at most MAX_RECIPIENTS_PER_TRANSACTION each.

        :param reset_first: the session comes from the pool: the first transaction checks it
            (`SmtpSession.send`), and raises `StaleConnection` before anything is recorded.
        """
        message = self.job.message
        chunk = smtp_session.MAX_RECIPIENTS_PER_TRANSACTION
        handoff = (
            dsn.Handoff.FINAL
            if lmtp
            else dsn.Handoff.RELAY_DSN
            if session.supports("DSN")
            else dsn.Handoff.RELAY
        )
        for start in range(0, len(targets), chunk):
            batch = [t for t in targets[start : start + chunk] if t.recipient.id in self._pending]
            if not batch:
                continue
            envelope = esmtp.Envelope(
                message.sender,
                tuple(self._recipient(t) for t in batch),
                smtputf8=message.smtputf8,
                body_8bit=message.eightbitmime,
                requiretls=message.requiretls,
                dsn_ret=None if message.ret is None else _RET[message.ret],
                dsn_envid=None if message.env_id is None else dsn.decode_xtext(message.env_id),
            )
            try:
                result = await session.send(envelope, self.job.body, reset_first=reset_first)
            except smtp_errors.SmtpError as exc:
                if isinstance(exc, smtp_errors.ExtensionNotOffered | smtp_session.StaleConnection):
                    raise
                self._fail(batch, failure_of(exc), final=final, tls=tls, host=plan)
                return
            reset_first = False
            self._settle(result, batch, plan, tls, handoff, final=final, lmtp=lmtp)
            if session.closed:
                rest = [t for t in targets[start + chunk :] if t.recipient.id in self._pending]
                if rest:
                    lost = outcome.transport_failure(
                        outcome.Stage.MAIL,
                        "lost",
                        remote_host=plan.mx,
                        remote_ip=plan.remote_ip,
                    )
                    self._fail(rest, lost, final=final, tls=tls, host=plan)
                return

    def _settle(
        self,
        result: smtp_session.TransactionResult,
        batch: list[Target],
        plan: planner.HostPlan,
        tls: TlsReport,
        handoff: dsn.Handoff,
        *,
        final: bool,
        lmtp: bool,
    ) -> None:
        """Each recipient's fate from the replies of one transaction."""
        for index, (target, (_, reply)) in enumerate(
            zip(batch, result.per_recipient(), strict=True)
        ):
            if reply.is_success:
                delivered = outcome.delivered(
                    remote_host=plan.mx,
                    remote_ip=plan.remote_ip,
                    code=reply.code,
                    text=reply.text,
                    reason=f"{plan.mx}[{plan.remote_ip}] said: {reply} "
                    f"(in reply to end of DATA) [{tls.describe()}]",
                )
                self._finish(target, delivered, tls, plan, handoff)
                continue
            rcpt_reply = result.rcpts[index][1] if index < len(result.rcpts) else None
            stage = _stage_of(result, rcpt_reply)
            failure = outcome.reply_failure(
                stage,
                reply.code,
                reply.text,
                remote_host=plan.mx,
                remote_ip=plan.remote_ip,
                scope=outcome.Scope.RECIPIENT if lmtp and stage is outcome.Stage.DOT else None,
            )
            self._fail([target], failure, final=final, tls=tls, host=plan)


class _HostFailed(Exception):
    """Internal: a host cannot be used; carries the Failure to apply (not a DeliveryError:
    it never leaves this module)."""

    def __init__(self, failure: outcome.Failure, tls: TlsReport | None, /) -> None:
        super().__init__(failure.reason)
        self.failure, self.tls = failure, tls


def _host_vars(target: Target, *, mx: str, remote_ip: str, local_ip: str) -> dict[str, expr.Value]:
    return {**target.variables, "mx": mx.rstrip("."), "remote_ip": remote_ip, "local_ip": local_ip}


async def _connect_clear(
    plan: planner.HostPlan, *, port: int, lmtp: bool
) -> smtp_session.SmtpSession:
    """A clear-text session with the host of ``plan``, greeted and EHLO done."""
    session = await smtp_session.SmtpSession.connect(
        plan.remote_ip,
        port,
        server_name=plan.mx,
        timeouts=_timeouts(plan.connection.value),
        source_ip=plan.local_ip or None,
        lmtp=lmtp,
    )
    try:
        await session.ehlo(plan.ehlo_name)
    except BaseException:
        session.close()
        raise
    return session


def _timeouts(strategy: registry.ConnectionStrategy, /) -> smtp_session.Timeouts:
    return smtp_session.Timeouts(
        connect=strategy.connect_timeout_ms,
        greeting=strategy.greeting_timeout_ms,
        ehlo=strategy.ehlo_timeout_ms,
        mail_from=strategy.mail_from_timeout_ms,
        rcpt_to=strategy.rcpt_to_timeout_ms,
        data=strategy.data_timeout_ms,
    )


def _tls_missing(plan: planner.HostPlan, detail: str, *, offered: bool = False) -> outcome.Failure:
    """TLS required (by the strategy or a policy) and this host did not provide it."""
    required = "; ".join(plan.tls_plan.required_by) or "TLS is required"
    return outcome.policy_violation(
        LastError.TLS,
        f"{required}, but {detail}: not sending in clear text",
        stage=outcome.Stage.STARTTLS,
        remote_host=plan.mx,
        remote_ip=plan.remote_ip,
        status="4.7.5" if offered else "4.7.4",
    )


def _extension_failure(exc: smtp_errors.ExtensionNotOffered, /) -> outcome.Failure:
    """A message that needs an extension the server lacks (RFC 8689 §4.2.1, RFC 6531 §3.4)."""
    if exc.extension == "REQUIRETLS":
        # The host was authenticated before it said so (REQUIRETLS is announced inside TLS,
        # and only to an authenticated host do we get this far): a definite answer, a bounce
        # once every host said so (RFC 8689 §4.2.1, §5: 5.7.30).
        return outcome.policy_absent(
            LastError.TLS,
            f"{exc}: the message requires it (REQUIRETLS, RFC 8689)",
            remote_host=exc.server_name,
            remote_ip=exc.ip,
            status="5.7.30",
        )
    return outcome.Failure(
        stage=outcome.Stage.MAIL,
        scope=outcome.Scope.MESSAGE,
        soft=False,
        status="5.6.7",
        kind=exc.kind,
        reason=str(exc),
        remote_host=exc.server_name,
        remote_ip=exc.ip,
    )


def _stage_of(result: smtp_session.TransactionResult, rcpt_reply: Reply | None) -> outcome.Stage:
    """Which step's reply refused a recipient (the order of `TransactionResult.per_recipient`)."""
    if not result.mail.is_success:
        return outcome.Stage.MAIL
    if rcpt_reply is None or not rcpt_reply.is_success:
        return outcome.Stage.RCPT
    if result.data is None or result.data.code != 354:
        return outcome.Stage.DATA
    return outcome.Stage.DOT
