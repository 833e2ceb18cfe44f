"""TLS decision for one MX host (DESIGN §5 step 3).

Combines the TLS strategy the `tls` expression chose with what the recipient domain's policies
require, and says, for each thing that can happen on the wire, what the session must do. Pure:
no I/O; the attempt code asks `plan_host` once per host, then `react` at each TLS event.

Inputs:
    TlsStrategyView   the chosen MtaTlsStrategy (startTls, allowInvalidCerts)
    PolicyInputs      what the domain and message require: an MTA-STS `enforce` policy that lists
                      this host, usable DANE TLSA records, a secure TLSA RRset with only
                      unusable records (TLS without authentication), REQUIRETLS on the message;
                      and what could authenticate the host for REQUIRETLS: usable DANE records,
                      an MTA-STS policy in force (enforce or testing) that lists it, or a relay
                      the operator configured (its name comes from our settings, not from DNS)

Outcomes (`plan_host`):
    HostTlsPlan.tls == REQUIRED        clear text is never used with this host
    HostTlsPlan.tls == OPPORTUNISTIC   STARTTLS when offered, clear text when not
    HostTlsPlan.tls == OFF             no STARTTLS at all (startTls: disable, no policy)
    HostTlsPlan.refusal is not None    no session can satisfy the plan: the host fails
                                       before connecting, e.g. `disable` while a policy
                                       requires TLS (temporarily: no policy is silently
                                       overridden), or a REQUIRETLS message for a host that
                                       nothing can authenticate (``refusal_permanent`` when that
                                       rests on definite answers, RFC 8689 §4.2.1: 5.7.10)

Reactions (`react`), per event:
    NO_STARTTLS        REQUIRED -> FAIL_HOST; OPPORTUNISTIC -> CONTINUE_CLEAR
    CERT_REJECTED      always FAIL_HOST (kind tls), so that the default `tls` expression can
                       pick `invalid-tls` on the retry; never a silent downgrade
    HANDSHAKE_FAILED   REQUIRED -> FAIL_HOST; OPPORTUNISTIC and nothing left to verify
                       (allowInvalidCerts) -> RECONNECT_CLEAR, as Postfix's `may` does, so that
                       `optional` never leaves mail stuck; otherwise FAIL_HOST

Security:
    The only paths to clear text are OFF, and OPPORTUNISTIC's CONTINUE_CLEAR / RECONNECT_CLEAR;
    OPPORTUNISTIC is only ever planned when nothing requires TLS. MTA-STS enforce, DANE and
    REQUIRETLS override allowInvalidCerts (the certificate is always checked, by PKIX or by
    DANE). A REQUIRETLS message is planned only for a host one of DANE, MTA-STS or the
    operator's relay route authenticates (RFC 8689 §4.2.1): never for a host DNS alone named.

Standards: RFC 3207 (STARTTLS), RFC 7672 §2.2 (DANE: TLS mandatory, no PKIX), RFC 8461 §5
(MTA-STS enforce), RFC 8689 (REQUIRETLS).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, Protocol, assert_never

__all__ = [
    "Event",
    "HostTlsPlan",
    "PolicyInputs",
    "Reaction",
    "StartTls",
    "TlsMode",
    "TlsStrategyView",
    "Verification",
    "plan_host",
    "react",
]

StartTls = Literal["optional", "require", "disable"]


class TlsStrategyView(Protocol):
    """The parts of an MtaTlsStrategy this decision reads."""

    @property
    def name(self) -> str: ...
    @property
    def start_tls(self) -> StartTls: ...
    @property
    def allow_invalid_certs(self) -> bool: ...


class TlsMode(enum.Enum):
    REQUIRED = "required"
    OPPORTUNISTIC = "opportunistic"
    OFF = "off"


class Verification(enum.Enum):
    """How the peer's certificate is checked once TLS is up."""

    PKIX = "pkix"  # chain to a trusted CA, name = the MX host
    DANE = "dane"  # TLSA records (RFC 7672); names and CAs do not matter
    NONE = "none"  # allowInvalidCerts: encryption only


@dataclass(frozen=True, slots=True)
class PolicyInputs:
    """What the domain's policies and the message require of this host.

    :param mta_sts_enforce: an MTA-STS policy in mode `enforce` covers the domain and lists
        this host (hosts it does not list are never planned at all).
    :param dane_usable: the host has usable, DNSSEC-secure DANE-EE/DANE-TA TLSA records.
    :param dane_tls_only: the host's TLSA RRset is DNSSEC-secure but holds only unusable records:
        TLS is mandatory, without authentication (RFC 7672 §2.2, as Postfix's `dane` level).
    :param requiretls: the message carries REQUIRETLS (RFC 8689).
    :param policy_domain: the recipient domain whose policies these are, for messages.
    :param mta_sts_listed: an MTA-STS policy in force (enforce or testing) lists this host: a
        certificate PKIX-valid for its name authenticates it (REQUIRETLS, RFC 8689 §4.2.1).
    :param trusted_relay: the host is the relay of a Relay route: its name comes from the
        operator's settings, so a certificate PKIX-valid for it authenticates it (REQUIRETLS).
    :param authentication_unknown: whether the host could be authenticated is not known for
        now (the MTA-STS policy could not be fetched, the resolver does not validate DNSSEC):
        a REQUIRETLS refusal is then temporary, never a bounce.
    """

    mta_sts_enforce: bool = False
    dane_usable: bool = False
    dane_tls_only: bool = False
    requiretls: bool = False
    policy_domain: str = ""
    mta_sts_listed: bool = False
    trusted_relay: bool = False
    authentication_unknown: bool = False

    @property
    def authenticated_name(self) -> bool:
        """A PKIX certificate for the host name authenticates the host (MTA-STS or relay)."""
        return self.mta_sts_enforce or self.mta_sts_listed or self.trusted_relay


@dataclass(frozen=True, slots=True)
class HostTlsPlan:
    """What TLS the session with one host must have, and why."""

    tls: TlsMode
    verification: Verification
    required_by: tuple[str, ...]
    """Sentences naming each reason TLS is required; empty unless tls is REQUIRED."""
    refusal: str | None = None
    """Set when no session can satisfy the plan: the host must fail without connecting."""
    refusal_permanent: bool = False
    """The refusal rests on definite answers (a REQUIRETLS message, and the host publishes
    nothing that authenticates it): it holds until the domain changes its DNS or policy."""

    @property
    def clear_fallback(self) -> bool:
        """A failed handshake may be retried in clear text (nothing required, nothing to verify)."""
        return self.tls is TlsMode.OPPORTUNISTIC and self.verification is Verification.NONE


class Event(enum.Enum):
    NO_STARTTLS = "no-starttls"  # the server did not offer STARTTLS, or refused it
    CERT_REJECTED = "cert-rejected"  # handshake done, certificate check failed
    HANDSHAKE_FAILED = "handshake-failed"  # the TLS handshake itself failed or timed out


class Reaction(enum.Enum):
    CONTINUE_CLEAR = "continue-clear"
    RECONNECT_CLEAR = "reconnect-clear"
    FAIL_HOST = "fail-host"


def plan_host(strategy: TlsStrategyView, policy: PolicyInputs, /) -> HostTlsPlan:
    """plan_host - the TLS plan for one host under ``strategy`` and ``policy``."""
    required_by = _requirements(strategy, policy)
    # PKIX is owed whatever allowInvalidCerts says: MTA-STS enforce (RFC 8461 §4.2), and a
    # REQUIRETLS message to a host authenticated by its name (RFC 8689 §4.2.1).
    pkix_owed = policy.mta_sts_enforce or (policy.requiretls and policy.authenticated_name)
    if policy.dane_usable:
        verification = Verification.DANE
    elif pkix_owed or not strategy.allow_invalid_certs:
        verification = Verification.PKIX
    else:
        verification = Verification.NONE
    if policy.dane_tls_only and verification is not Verification.DANE and not pkix_owed:
        # Unusable TLSA records: encryption is owed, but there is nothing to authenticate
        # with; PKIX would refuse the self-signed certificates such hosts often have (RFC
        # 7672 §2.2).
        verification = Verification.NONE

    if policy.requiretls and not (policy.dane_usable or policy.authenticated_name):
        # RFC 8689 §4.2.1: the next hop must be authenticated, by DANE or by PKIX for a name
        # that MTA-STS (or our own settings) vouch for; a name from an unsigned MX record
        # authenticates nothing. Checked first: no strategy can make such a host acceptable.
        domain = policy.policy_domain or "the recipient domain"
        why = (
            "it may be once its MTA-STS policy or DNSSEC status is known"
            if policy.authentication_unknown
            else f"{domain} publishes no usable DANE TLSA records for it and no MTA-STS "
            "policy that lists it"
        )
        refusal = (
            "the message requires TLS to an authenticated host (REQUIRETLS, RFC 8689), and "
            f"nothing authenticates this host: {why}"
        )
        return HostTlsPlan(
            TlsMode.REQUIRED,
            verification,
            required_by,
            refusal,
            refusal_permanent=not policy.authentication_unknown,
        )

    match strategy.start_tls:
        case "disable":
            if required_by:
                policies = [r for r in required_by if not r.startswith("TLS strategy")]
                refusal = (
                    f"TLS strategy {strategy.name!r} disables STARTTLS, but "
                    + "; ".join(policies)
                    + ": not delivering in clear text"
                )
                return HostTlsPlan(TlsMode.REQUIRED, verification, required_by, refusal)
            return HostTlsPlan(TlsMode.OFF, verification, ())
        case "require" | "optional":
            mode = TlsMode.REQUIRED if required_by else TlsMode.OPPORTUNISTIC
            return HostTlsPlan(mode, verification, required_by)
        case _ as unreachable:
            assert_never(unreachable)


def _requirements(strategy: TlsStrategyView, policy: PolicyInputs) -> tuple[str, ...]:
    reasons = []
    if strategy.start_tls == "require":
        reasons.append(f"TLS strategy {strategy.name!r} requires STARTTLS")
    domain = policy.policy_domain or "the recipient domain"
    if policy.mta_sts_enforce:
        reasons.append(f"the MTA-STS policy of {domain} (mode enforce) requires TLS")
    if policy.dane_usable:
        reasons.append(f"DANE TLSA records of the host require TLS (RFC 7672, for {domain})")
    elif policy.dane_tls_only:
        reasons.append(
            f"the host's signed TLSA records (none usable) require TLS (RFC 7672, for {domain})"
        )
    if policy.requiretls:
        if policy.dane_usable:
            how = "authenticated by DANE"
        elif policy.mta_sts_enforce or policy.mta_sts_listed:
            how = f"authenticated by PKIX for a host the MTA-STS policy of {domain} lists"
        elif policy.trusted_relay:
            how = "authenticated by PKIX for the relay's configured name"
        else:
            how = "authenticated"
        reasons.append(f"the message requires TLS (REQUIRETLS, RFC 8689), {how}")
    return tuple(reasons)


def react(plan: HostTlsPlan, event: Event, /) -> Reaction:
    """react - what the session does when ``event`` happens under ``plan``."""
    if plan.tls is TlsMode.REQUIRED:
        return Reaction.FAIL_HOST
    match event:
        case Event.NO_STARTTLS:
            return Reaction.CONTINUE_CLEAR
        case Event.CERT_REJECTED:
            return Reaction.FAIL_HOST
        case Event.HANDSHAKE_FAILED:
            return Reaction.RECONNECT_CLEAR if plan.clear_fallback else Reaction.FAIL_HOST
        case _ as unreachable:
            assert_never(unreachable)
