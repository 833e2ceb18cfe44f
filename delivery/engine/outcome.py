"""Error policy: the one place that turns a failed step into a disposition.

A delivery attempt describes what went wrong as a `Failure` (where: its `Stage` and
`Scope`; how: soft or hard; why: an ordinary protocol failure or a TLS policy), and
`decide` returns what to do about it, with the reason in words. `make_outcome` then
builds the `Outcome` recorded for the recipients concerned. The factories
(`reply_failure`, `transport_failure`, `tls_failure`, `route_failure`,
`policy_violation`, `policy_absent`) fill in the RFC 3463 status, the DESIGN §4
`last_error` kind and an operator-quality reason, so every module says the same
thing the same way. Pure: no I/O, no clock.

Outcomes (`Disposition`):
    TRY_NEXT_HOST  this host failed softly and another candidate host is left: the
                   recipients in scope go to the next host, within the same attempt
    DEFER          temporary: the recipients in scope wait for their next retry
    BOUNCE         permanent: the recipients in scope fail and get a failure DSN

Which recipients are in scope: DOMAIN, SITE and SESSION failures concern every
recipient of the attempt still pending; MESSAGE failures those of the transaction
(MAIL FROM, DATA, end of data); RECIPIENT failures the one recipient (RCPT TO).

The rules, after Postfix's smtp_trouble.c, and why:
    1. A TLS policy violation (MTA-STS MX mismatch or certificate failure, DANE
       mismatch, TLS missing where a policy, REQUIRETLS included, requires it)
       never bounces: next host, else defer until the recipient expires. A fixed
       policy or a passing attack must not bounce mail (DESIGN §5.4).
    2. A required policy that does not exist (no MTA-STS policy under
       ``mtaSts: require``, no usable TLSA under ``dane: require``), and a
       REQUIRETLS message no host can take (none is authenticated by DANE or
       MTA-STS: 5.7.10; the authenticated one lacks REQUIRETLS: 5.7.30, RFC 8689
       §5) is a definite answer: bounce. For a per-host answer, only once every
       host was tried and each failed so: a host that failed in a way that may
       pass (a timeout, a TLSA SERVFAIL) makes it a deferral instead.
    3. DOMAIN scope (no host yet): a definite DNS answer bounces (null MX RFC 7505
       5.1.10, no such domain or no MX and no address 5.1.2, MX hosts without
       addresses 5.4.4); a DNS temporary failure defers (4.4.3).
    4. SITE scope (host lookups, connect, greeting, EHLO, STARTTLS, AUTH): next
       host, else defer, even for 5xx. A host that will not talk to us says
       nothing about the recipient: an overloaded or misconfigured backup MX, a
       554 greeting (RFC 5321 §3.1: "no SMTP service here"), a blocklisted source
       address or our own bad AUTH credentials must not bounce mail (Postfix's
       ``smtp_skip_5xx_greeting``). Expiry bounces what never gets through.
    5. SESSION scope (timeout, lost connection, 421 after the greeting): next host,
       else defer. After end of data this may deliver twice (RFC 1047); losing mail
       would be worse.
    6. MESSAGE and RECIPIENT scope: a 5xx bounces whatever hosts are left (the
       domain's hosts share one policy); a 4xx tries the next host, else defers.

Security:
    Reply text is attacker-controlled. It is kept verbatim in ``remote_reply`` and
    quoted in ``reason``, never interpreted beyond the reply code and the RFC 3463
    enhanced code; a code of the wrong class is ignored.

Standards: RFC 3463 (status codes), RFC 5321, RFC 2034 (enhanced codes in replies),
RFC 7505 (null MX), RFC 7672 (DANE), RFC 8461 (MTA-STS), RFC 8689 (REQUIRETLS).
Limits: a reply outside 4xx/5xx where one was expected is a protocol error (hard,
5.5.0), as Postfix treats it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Literal, assert_never

from delivery.errors import LastError

__all__ = [
    "Cause",
    "Decision",
    "Disposition",
    "Failure",
    "Outcome",
    "RouteProblem",
    "Scope",
    "Stage",
    "decide",
    "delivered",
    "enhanced_status",
    "expired",
    "make_outcome",
    "policy_absent",
    "policy_violation",
    "reply_failure",
    "route_failure",
    "routing_dns_deferral",
    "strategy_dns_failure",
    "tls_failure",
    "transport_failure",
    "without_host",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to a recipient, as recorded and reported (STYLE §5).

    ``reason`` is for operators (logs, ``last_status``): it ends with the rule of this
    module that decided the disposition, e.g. "(rule 4)". ``sender_reason`` is the same
    account without that internal reference, for the people a DSN goes to; empty when
    ``reason`` has none (`for_sender` picks).
    """

    action: Literal["delivered", "delayed", "failed"]  # RFC 3464 action
    status: str  # RFC 3463, e.g. "4.7.5"
    kind: LastError  # DESIGN §4 last_error
    remote_host: str | None  # MX name, or None before any host was chosen
    remote_ip: str | None  # address actually connected to, or None
    remote_reply: str | None  # the server's own text, verbatim
    reason: str  # our sentence: names the host, the policy, the step
    sender_reason: str = ""  # the reason without our rule references; "" = reason

    def for_sender(self) -> str:
        """The reason as a DSN tells the sender: without references to our rules.

        >>> Outcome("delayed", "4.4.1", LastError.CONNECTION, None, None, None,
        ...         "x refused; try later (rule 4)", "x refused").for_sender()
        'x refused'
        """
        return self.sender_reason or self.reason


class Disposition(enum.Enum):
    """What to do with the recipients a failure concerns."""

    TRY_NEXT_HOST = "try-next-host"
    DEFER = "defer"
    BOUNCE = "bounce"


class Scope(enum.Enum):
    """Which recipients a failure concerns (see the module docstring)."""

    DOMAIN = "domain"
    SITE = "site"
    SESSION = "session"
    MESSAGE = "message"
    RECIPIENT = "recipient"


class Stage(enum.StrEnum):
    """The step that failed, in the order an attempt takes them."""

    ROUTE = "route"  # the domain's MX and address records
    POLICY = "policy"  # the domain's TLS policy (MTA-STS)
    HOST = "host"  # one host's lookups before connecting (addresses, TLSA)
    CONNECT = "connect"
    GREETING = "greeting"
    EHLO = "ehlo"
    STARTTLS = "starttls"  # the command, the handshake and the peer's authentication
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    DOT = "dot"  # the reply to the end of the message data

    @property
    def scope(self) -> Scope:
        """The scope of a failure at this stage (SESSION is decided by the failure)."""
        return _STAGE_SCOPE[self]

    @property
    def command(self) -> str:
        """The step in words, for reasons: "RCPT TO", "end of DATA", ..."""
        return _STAGE_COMMAND[self]


_STAGE_SCOPE: dict[Stage, Scope] = {
    Stage.ROUTE: Scope.DOMAIN,
    Stage.POLICY: Scope.DOMAIN,
    Stage.HOST: Scope.SITE,
    Stage.CONNECT: Scope.SITE,
    Stage.GREETING: Scope.SITE,
    Stage.EHLO: Scope.SITE,
    Stage.STARTTLS: Scope.SITE,
    Stage.AUTH: Scope.SITE,
    Stage.MAIL: Scope.MESSAGE,
    Stage.RCPT: Scope.RECIPIENT,
    Stage.DATA: Scope.MESSAGE,
    Stage.DOT: Scope.MESSAGE,
}

_STAGE_COMMAND: dict[Stage, str] = {
    Stage.ROUTE: "looking up the domain's mail servers",
    Stage.POLICY: "looking up the domain's TLS policy",
    Stage.HOST: "looking up the host",
    Stage.CONNECT: "connecting",
    Stage.GREETING: "the greeting",
    Stage.EHLO: "EHLO",
    Stage.STARTTLS: "STARTTLS",
    Stage.AUTH: "AUTH",
    Stage.MAIL: "MAIL FROM",
    Stage.RCPT: "RCPT TO",
    Stage.DATA: "DATA",
    Stage.DOT: "end of DATA",
}


class Cause(enum.Enum):
    """Whether a TLS policy is behind the failure (rules 1 and 2)."""

    PROTOCOL = "protocol"  # an ordinary failure: a reply, the network, DNS, TLS
    POLICY_VIOLATION = "policy-violation"  # a policy applies; this host does not satisfy it
    POLICY_ABSENT = "policy-absent"  # a required policy does not exist for the domain


class RouteProblem(enum.Enum):
    """Why the domain has no host to try (rule 3)."""

    NULL_MX = "null-mx"  # RFC 7505: the domain accepts no mail
    NO_SUCH_DOMAIN = "no-such-domain"  # NXDOMAIN, or no MX and no address record
    NO_ADDRESS = "no-address"  # MX hosts exist but none has an address
    TEMPFAIL = "tempfail"  # SERVFAIL, timeout, bogus: could not find out


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed step of an attempt, as the attempt observed it.

    ``soft`` is true for 4xx replies, timeouts, connection and TLS failures and DNS
    temporary failures. ``status`` is the RFC 3463 code observed or derived (its
    class may change with the disposition, see `make_outcome`). ``remote_*`` are
    ``None`` when no host was involved.
    """

    stage: Stage
    scope: Scope
    soft: bool
    status: str
    kind: LastError
    reason: str
    cause: Cause = Cause.PROTOCOL
    remote_host: str | None = None
    remote_ip: str | None = None
    remote_reply: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """A disposition and the rule behind it, in words (for logs and ``explain``)."""

    disposition: Disposition
    why: str


def decide(failure: Failure, /, *, final_host: bool, others_transient: bool = False) -> Decision:
    """decide - what to do about a failure (the rules of the module docstring).

    :param final_host: no other candidate host is left for these recipients.
        Ignored for DOMAIN scope, where no host was chosen.
    :param others_transient: another host already tried for these recipients in
        this attempt failed in a way that may pass (anything but a policy
        absence): a per-host policy absence then defers rather than bounces.

    >>> absent = policy_absent(LastError.DANE, "no TLSA", remote_host="mx1.test")
    >>> decide(absent, final_host=True).disposition.value
    'bounce'
    >>> decide(absent, final_host=True, others_transient=True).disposition.value
    'defer'
    """
    hosts_left = not final_host and failure.scope is not Scope.DOMAIN
    skip = Disposition.TRY_NEXT_HOST if hosts_left else Disposition.DEFER
    match failure.cause:
        case Cause.POLICY_VIOLATION:
            return Decision(skip, "a TLS policy violation is never permanent (rule 1)")
        case Cause.POLICY_ABSENT:
            if failure.scope is Scope.SITE:
                if hosts_left:
                    return Decision(skip, "another host may satisfy the requirement (rule 2)")
                if others_transient:
                    return Decision(
                        skip, "another host failed only for now and may satisfy it (rule 2)"
                    )
            return Decision(Disposition.BOUNCE, "no host can satisfy the requirement (rule 2)")
        case Cause.PROTOCOL:
            pass
        case _:
            assert_never(failure.cause)
    match failure.scope:
        case Scope.DOMAIN:
            if failure.soft:
                return Decision(Disposition.DEFER, "DNS could not answer for now (rule 3)")
            return Decision(Disposition.BOUNCE, "DNS says the domain takes no mail (rule 3)")
        case Scope.SITE:
            return Decision(skip, "this host's refusal says nothing of the recipient (rule 4)")
        case Scope.SESSION:
            return Decision(skip, "the session broke off, not the message (rule 5)")
        case Scope.MESSAGE | Scope.RECIPIENT:
            if not failure.soft:
                return Decision(Disposition.BOUNCE, "the server refused it permanently (rule 6)")
            return Decision(skip, "the server refused it for now (rule 6)")
        case _:
            assert_never(failure.scope)


def make_outcome(failure: Failure, decision: Decision, /) -> Outcome:
    """make_outcome - the Outcome to record for a failure and its decision.

    A bounce is ``failed`` with a class 5 status, anything else ``delayed`` with
    class 4: a 5xx greeting deferred under rule 4 reports 4.x.x, as Postfix does.
    The reason ends with the rule applied; the sender's reason is the failure's alone.
    """
    bounce = decision.disposition is Disposition.BOUNCE
    status = ("5" if bounce else "4") + failure.status[1:]
    return Outcome(
        action="failed" if bounce else "delayed",
        status=status,
        kind=failure.kind,
        remote_host=failure.remote_host,
        remote_ip=failure.remote_ip,
        remote_reply=failure.remote_reply,
        reason=f"{failure.reason}; {decision.why}",
        sender_reason=failure.reason,
    )


def expired(last: Outcome, /, *, reason: str) -> Outcome:
    """expired - the failure reported when a deferred recipient runs out of time.

    Keeps the last problem's subject and detail with class 5 (RFC 3463 X.4.7 asks
    for "the code for the actual problem" when there is one).

    :param reason: why it expired, e.g. "gave up after 3 days in the queue".
    """
    return Outcome(
        action="failed",
        status="5" + last.status[1:],
        kind=last.kind,
        remote_host=last.remote_host,
        remote_ip=last.remote_ip,
        remote_reply=last.remote_reply,
        reason=f"{reason}; last problem: {last.reason}",
        sender_reason=f"{reason}; last problem: {last.for_sender()}",
    )


def without_host(
    action: Literal["delivered", "delayed", "failed"], status: str, kind: LastError, reason: str, /
) -> Outcome:
    """without_host - an Outcome no remote host had a part in (envelope, local mailbox, internal).

    >>> without_host("delayed", "4.3.0", LastError.IO, "disk full").remote_host is None
    True
    """
    return Outcome(action, status, kind, None, None, None, reason)


def delivered(
    *, remote_host: str, remote_ip: str | None, code: int, text: str, reason: str = ""
) -> Outcome:
    """delivered - the Outcome of a recipient the next hop accepted.

    :param code: the final reply code (250 after end of DATA).
    :param text: the reply text; its enhanced code, if any, becomes the status.
    """
    return Outcome(
        action="delivered",
        status=enhanced_status(code, text) or "2.0.0",
        kind=LastError.NONE,
        remote_host=remote_host,
        remote_ip=remote_ip,
        remote_reply=f"{code} {text}",
        reason=reason or f"{_where(remote_host, remote_ip)} said: {code} {text}",
    )


_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")


def enhanced_status(code: int, text: str, /) -> str | None:
    """enhanced_status - the RFC 3463 code at the start of a reply text, if valid.

    The code must open the text and have the reply's class (RFC 2034 §3).

    >>> enhanced_status(550, "5.1.1 <a@example.com>: no such user")
    '5.1.1'
    >>> enhanced_status(550, "4.1.1 wrong class") is None
    True
    """
    match = _ENHANCED.match(text.lstrip())
    if match is None or match.group(1) != str(code // 100):
        return None
    return match.group(0)


def _where(host: str | None, ip: str | None, /) -> str:
    if host is None:
        return ip or "the server"
    return f"{host}[{ip}]" if ip else host


def reply_failure(
    stage: Stage,
    code: int,
    text: str,
    /,
    *,
    remote_host: str,
    remote_ip: str | None,
    scope: Scope | None = None,
) -> Failure:
    """reply_failure - a server reply that refused a step.

    A 421 after the greeting is the server closing the session (SESSION scope).
    A code outside 4xx/5xx is a protocol error: hard, 5.5.0.

    :param text: the reply text after the code; lines joined with ``\\n``.
    :param scope: overrides the stage's scope, e.g. RECIPIENT for the per-recipient
        replies of LMTP after end of data (RFC 2033 §4.2).
    """
    reply = f"{code} {text}"
    where = _where(remote_host, remote_ip)
    if code // 100 not in (4, 5):
        soft, status = False, "5.5.0"
        reason = f"protocol error: {where} answered {reply!r} to {stage.command}"
    else:
        soft = code // 100 == 4
        status = enhanced_status(code, text) or f"{code // 100}.0.0"
        verb = "refused to talk to us" if stage is Stage.GREETING else "said"
        reason = f"{where} {verb}: {reply} (in reply to {stage.command})"
    if scope is None:
        session_closed = code == 421 and stage.scope in (Scope.MESSAGE, Scope.RECIPIENT)
        scope = Scope.SESSION if session_closed else stage.scope
    return Failure(
        stage=stage,
        scope=scope,
        soft=soft,
        status=status,
        kind=LastError.UNEXPECTED_REPLY,
        reason=reason,
        remote_host=remote_host,
        remote_ip=remote_ip,
        remote_reply=reply,
    )


_BEFORE_GREETING: frozenset[Stage] = frozenset({Stage.CONNECT, Stage.GREETING})
"""Stages where a broken connection means the host is not reachable as an SMTP server."""


def transport_failure(
    stage: Stage,
    problem: Literal["timeout", "refused", "lost"],
    /,
    *,
    remote_host: str,
    remote_ip: str | None,
    detail: str = "",
) -> Failure:
    """transport_failure - the network failed us at a step (always soft).

    Before the session (CONNECT): no answer from the host, 4.4.1. Later: a bad
    connection, 4.4.2 (Postfix's codes), SESSION scope once the transaction has
    begun. The kind (DESIGN §4) is ``connection`` until the server has completed
    its greeting (the host could not be reached as an SMTP server), ``io`` after
    (the conversation broke): the same rule as `delivery.smtp.errors`.

    :param detail: the system's words, e.g. "Connection refused".
    """
    where = _where(remote_host, remote_ip)
    suffix = f": {detail}" if detail else ""
    kind = LastError.CONNECTION if stage in _BEFORE_GREETING else LastError.IO
    if stage is Stage.CONNECT:
        words = {"timeout": "timed out", "refused": "was refused", "lost": "was reset"}
        reason = f"connecting to {where} {words[problem]}{suffix}"
        status = "4.4.1"
    else:
        words = {"timeout": "timed out", "refused": "was refused", "lost": "was lost"}
        reason = f"the connection to {where} {words[problem]} during {stage.command}{suffix}"
        status = "4.4.2"
    scope = Scope.SITE if stage.scope is Scope.SITE else Scope.SESSION
    return Failure(
        stage=stage,
        scope=scope,
        soft=True,
        status=status,
        kind=kind,
        reason=reason,
        remote_host=remote_host,
        remote_ip=remote_ip,
    )


def tls_failure(reason: str, /, *, remote_host: str, remote_ip: str | None) -> Failure:
    """tls_failure - STARTTLS failed where no policy required TLS (soft, 4.7.5, ``tls``).

    :param reason: what failed, naming the host: the handshake, the certificate.
    """
    return Failure(
        stage=Stage.STARTTLS,
        scope=Scope.SITE,
        soft=True,
        status="4.7.5",
        kind=LastError.TLS,
        reason=reason,
        remote_host=remote_host,
        remote_ip=remote_ip,
    )


def strategy_dns_failure(detail: str, /, *, remote_host: str, remote_ip: str) -> Failure:
    """strategy_dns_failure - a host's ``connection`` or ``tls`` expression could not get its
    ``dns_query`` answer: that host is skipped for now (soft, 4.4.3, ``dns``).

    :param detail: the lookup failure.
    """
    return Failure(
        stage=Stage.HOST,
        scope=Scope.SITE,
        soft=True,
        status="4.4.3",
        kind=LastError.DNS,
        reason=f"a strategy expression for {remote_host} needed DNS: {detail}",
        remote_host=remote_host,
        remote_ip=remote_ip,
    )


def routing_dns_deferral(detail: str, /) -> Outcome:
    """routing_dns_deferral - the recipient's ``route`` or ``schedule`` expression could not
    get its ``dns_query`` answer: nothing was tried, the recipient waits (4.4.3, ``dns``).

    :param detail: the lookup failure.
    """
    return without_host(
        "delayed",
        "4.4.3",
        LastError.DNS,
        f"the route or schedule expression needed DNS: {detail}",
    )


_ROUTE_PROBLEMS: dict[RouteProblem, tuple[str, bool, str]] = {
    # problem: (status, soft, words)
    RouteProblem.NULL_MX: ("5.1.10", False, "publishes a null MX (RFC 7505): it accepts no mail"),
    RouteProblem.NO_SUCH_DOMAIN: ("5.1.2", False, "does not exist or has no MX or address record"),
    RouteProblem.NO_ADDRESS: ("5.4.4", False, "has MX hosts, but none has an address"),
    RouteProblem.TEMPFAIL: ("4.4.3", True, "could not be looked up for now"),
}


def route_failure(problem: RouteProblem, domain: str, /, *, detail: str = "") -> Failure:
    """route_failure - the domain has no host to deliver to (rule 3).

    :param detail: what the resolver said, for the reason.
    """
    status, soft, words = _ROUTE_PROBLEMS[problem]
    suffix = f" ({detail})" if detail else ""
    return Failure(
        stage=Stage.ROUTE,
        scope=Scope.DOMAIN,
        soft=soft,
        status=status,
        kind=LastError.DNS,
        reason=f"the domain {domain} {words}{suffix}",
    )


def policy_violation(
    kind: Literal[LastError.TLS, LastError.DANE, LastError.MTA_STS],
    reason: str,
    /,
    *,
    stage: Literal[Stage.POLICY, Stage.HOST, Stage.STARTTLS],
    remote_host: str | None = None,
    remote_ip: str | None = None,
    status: str = "4.7.5",
) -> Failure:
    """policy_violation - a TLS policy is not satisfied (rule 1).

    :param kind: ``tls`` (TLS missing under a requirement), ``dane`` or ``mta-sts``.
    :param reason: names the host, the policy and its mode, and what failed.
    :param stage: POLICY when no host can satisfy it (e.g. no MX matches an
        enforced MTA-STS policy), HOST when one host is excluded before connecting,
        STARTTLS when the host's TLS fell short.
    :param status: 4.7.5 for failed authentication; 4.7.4 when TLS was not offered.
    """
    return Failure(
        stage=stage,
        scope=stage.scope,
        soft=True,
        status=status,
        kind=kind,
        reason=reason,
        cause=Cause.POLICY_VIOLATION,
        remote_host=remote_host,
        remote_ip=remote_ip,
    )


def policy_absent(
    kind: Literal[LastError.TLS, LastError.DANE, LastError.MTA_STS],
    reason: str,
    /,
    *,
    remote_host: str | None = None,
    remote_ip: str | None = None,
    status: str = "5.7.4",
) -> Failure:
    """policy_absent - a requirement no answer of the domain can meet (rule 2).

    Only for definite answers: a lookup that failed is a `policy_violation` or a
    DNS temporary failure, never an absence.

    :param kind: ``mta-sts`` (no policy under ``mtaSts: require``), ``dane`` (no
        usable TLSA under ``dane: require``), ``tls`` (a REQUIRETLS message).
    :param remote_host: the host, for a per-host answer (TLSA records, REQUIRETLS);
        ``None`` for the domain (no MTA-STS policy).
    :param status: 5.7.4 for a missing policy; for REQUIRETLS 5.7.10 (no host
        authenticated) or 5.7.30 (REQUIRETLS not offered), RFC 8689 §5.
    """
    return Failure(
        stage=Stage.HOST if remote_host else Stage.POLICY,
        scope=Scope.SITE if remote_host else Scope.DOMAIN,
        soft=False,
        status=status,
        kind=kind,
        reason=reason,
        cause=Cause.POLICY_ABSENT,
        remote_host=remote_host,
        remote_ip=remote_ip,
    )
