"""TLS decision for one MX host (DESIGN §5 step 3).

Combines the TLS strategy the `tls` expression chose with what the recipient domain's policies
require, and says, for each thing that can happen on the wire, what the session must do. Pure:
no I/O; the attempt code asks `plan_host` once per host, then `react` at each TLS event.

Inputs:
    TlsStrategyView   the chosen MtaTlsStrategy (startTls, allowInvalidCerts)
    PolicyInputs      what the domain and message require: an MTA-STS `enforce` policy that lists
                      this host, usable DANE TLSA records, a secure TLSA RRset with only
                      unusable records (TLS without authentication), REQUIRETLS on the message

Outcomes (`plan_host`):
    HostTlsPlan.tls == REQUIRED        clear text is never used with this host
    HostTlsPlan.tls == OPPORTUNISTIC   STARTTLS when offered, clear text when not
    HostTlsPlan.tls == OFF             no STARTTLS at all (startTls: disable, no policy)
    HostTlsPlan.refusal is not None    no session can satisfy the plan: the host fails
                                       (temporarily) before connecting, e.g. `disable` while a
                                       policy requires TLS. No policy is silently overridden.

Reactions (`react`), per event:
    NO_STARTTLS        REQUIRED -> FAIL_HOST; OPPORTUNISTIC -> CONTINUE_CLEAR
    CERT_REJECTED      always FAIL_HOST (kind tls), so that the default `tls` expression can
                       pick `invalid-tls` on the retry; never a silent downgrade
    HANDSHAKE_FAILED   REQUIRED -> FAIL_HOST; OPPORTUNISTIC and nothing left to verify
                       (allowInvalidCerts) -> RECONNECT_CLEAR, as Postfix's `may` does, so that
                       `optional` never leaves mail stuck; otherwise FAIL_HOST

Security:
    The only paths to clear text are OFF, and OPPORTUNISTIC's CONTINUE_CLEAR / RECONNECT_CLEAR;
    OPPORTUNISTIC is only ever planned when nothing requires TLS. MTA-STS enforce and DANE
    override allowInvalidCerts (the certificate is always checked, by PKIX or by DANE).

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
    """

    mta_sts_enforce: bool = False
    dane_usable: bool = False
    dane_tls_only: bool = False
    requiretls: bool = False
    policy_domain: str = ""


@dataclass(frozen=True, slots=True)
class HostTlsPlan:
    """What TLS the session with one host must have, and why."""

    tls: TlsMode
    verification: Verification
    required_by: tuple[str, ...]
    """Sentences naming each reason TLS is required; empty unless tls is REQUIRED."""
    refusal: str | None = None
    """Set when no session can satisfy the plan: the host must fail without connecting."""

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
    if policy.dane_usable:
        verification = Verification.DANE
    elif policy.mta_sts_enforce or not strategy.allow_invalid_certs:
        verification = Verification.PKIX
    else:
        verification = Verification.NONE
    if policy.dane_tls_only and not policy.mta_sts_enforce:
        # Unusable TLSA records: encryption is owed, but there is nothing to authenticate with;
        # PKIX would refuse the self-signed certificates such hosts often have (RFC 7672 §2.2).
        verification = Verification.NONE

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
        reasons.append("the message requires TLS (REQUIRETLS, RFC 8689)")
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
