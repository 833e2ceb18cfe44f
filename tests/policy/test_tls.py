"""The per-host TLS decision as tables: each strategy x policy x event combination that matters."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from delivery.policy.tls import (
    Event,
    PolicyInputs,
    Reaction,
    StartTls,
    TlsMode,
    Verification,
    plan_host,
    react,
)


@dataclass(frozen=True)
class Strategy:
    name: str
    start_tls: StartTls
    allow_invalid_certs: bool = False


OPTIONAL = Strategy("default", "optional")
INVALID_OK = Strategy("invalid-tls", "optional", allow_invalid_certs=True)
REQUIRE = Strategy("strict", "require")
REQUIRE_ANY_CERT = Strategy("strict-any", "require", allow_invalid_certs=True)
DISABLE = Strategy("plain", "disable")
NONE = PolicyInputs(policy_domain="example.test")
STS = PolicyInputs(mta_sts_enforce=True, policy_domain="example.test")
DANE = PolicyInputs(dane_usable=True, policy_domain="example.test")
REQTLS = PolicyInputs(requiretls=True, policy_domain="example.test")
DANE_TLS_ONLY = PolicyInputs(dane_tls_only=True, policy_domain="example.test")

PLANS = [  # (label, strategy, policy, tls mode, verification, refused)
    ("optional, no policy", OPTIONAL, NONE, TlsMode.OPPORTUNISTIC, Verification.PKIX, False),
    (
        "optional, invalid allowed",
        INVALID_OK,
        NONE,
        TlsMode.OPPORTUNISTIC,
        Verification.NONE,
        False,
    ),
    ("require", REQUIRE, NONE, TlsMode.REQUIRED, Verification.PKIX, False),
    (
        "require, invalid allowed",
        REQUIRE_ANY_CERT,
        NONE,
        TlsMode.REQUIRED,
        Verification.NONE,
        False,
    ),
    ("disable, no policy", DISABLE, NONE, TlsMode.OFF, Verification.PKIX, False),
    ("optional + MTA-STS enforce", OPTIONAL, STS, TlsMode.REQUIRED, Verification.PKIX, False),
    (
        "MTA-STS ignores allowInvalidCerts",
        INVALID_OK,
        STS,
        TlsMode.REQUIRED,
        Verification.PKIX,
        False,
    ),
    ("optional + DANE", OPTIONAL, DANE, TlsMode.REQUIRED, Verification.DANE, False),
    (
        "DANE ignores allowInvalidCerts",
        INVALID_OK,
        DANE,
        TlsMode.REQUIRED,
        Verification.DANE,
        False,
    ),
    ("optional + REQUIRETLS", OPTIONAL, REQTLS, TlsMode.REQUIRED, Verification.PKIX, False),
    (
        "DANE unusable records: TLS, unauthenticated",
        OPTIONAL,
        DANE_TLS_ONLY,
        TlsMode.REQUIRED,
        Verification.NONE,
        False,
    ),
    (
        "disable + DANE unusable records refuses",
        DISABLE,
        DANE_TLS_ONLY,
        TlsMode.REQUIRED,
        Verification.NONE,
        True,
    ),
    ("disable + MTA-STS enforce refuses", DISABLE, STS, TlsMode.REQUIRED, Verification.PKIX, True),
    ("disable + DANE refuses", DISABLE, DANE, TlsMode.REQUIRED, Verification.DANE, True),
    ("disable + REQUIRETLS refuses", DISABLE, REQTLS, TlsMode.REQUIRED, Verification.PKIX, True),
]


@pytest.mark.parametrize(
    ("label", "strategy", "policy", "mode", "verification", "refused"),
    PLANS,
    ids=[p[0] for p in PLANS],
)
def test_plan(
    label: str,
    strategy: Strategy,
    policy: PolicyInputs,
    mode: TlsMode,
    verification: Verification,
    refused: bool,
) -> None:
    plan = plan_host(strategy, policy)
    assert (plan.tls, plan.verification, plan.refusal is not None) == (mode, verification, refused)
    assert bool(plan.required_by) == (mode is TlsMode.REQUIRED)


REACTIONS = [  # (label, strategy, policy, event, reaction)
    ("optional: no STARTTLS -> clear", OPTIONAL, NONE, Event.NO_STARTTLS, Reaction.CONTINUE_CLEAR),
    (
        "optional: bad cert -> fail (retry picks invalid-tls)",
        OPTIONAL,
        NONE,
        Event.CERT_REJECTED,
        Reaction.FAIL_HOST,
    ),
    (
        "optional: handshake fails while verifying -> fail",
        OPTIONAL,
        NONE,
        Event.HANDSHAKE_FAILED,
        Reaction.FAIL_HOST,
    ),
    (
        "invalid-tls: handshake fails -> reconnect clear",
        INVALID_OK,
        NONE,
        Event.HANDSHAKE_FAILED,
        Reaction.RECONNECT_CLEAR,
    ),
    (
        "invalid-tls: no STARTTLS -> clear",
        INVALID_OK,
        NONE,
        Event.NO_STARTTLS,
        Reaction.CONTINUE_CLEAR,
    ),
    ("require: no STARTTLS -> fail", REQUIRE, NONE, Event.NO_STARTTLS, Reaction.FAIL_HOST),
    ("require: handshake -> fail", REQUIRE, NONE, Event.HANDSHAKE_FAILED, Reaction.FAIL_HOST),
    (
        "require any cert: handshake -> fail, never clear",
        REQUIRE_ANY_CERT,
        NONE,
        Event.HANDSHAKE_FAILED,
        Reaction.FAIL_HOST,
    ),
    ("require: bad cert -> fail", REQUIRE, NONE, Event.CERT_REJECTED, Reaction.FAIL_HOST),
    ("MTA-STS: no STARTTLS -> fail", INVALID_OK, STS, Event.NO_STARTTLS, Reaction.FAIL_HOST),
    (
        "MTA-STS: handshake -> fail, never clear",
        INVALID_OK,
        STS,
        Event.HANDSHAKE_FAILED,
        Reaction.FAIL_HOST,
    ),
    ("DANE: no STARTTLS -> fail", OPTIONAL, DANE, Event.NO_STARTTLS, Reaction.FAIL_HOST),
    ("DANE: handshake -> fail", INVALID_OK, DANE, Event.HANDSHAKE_FAILED, Reaction.FAIL_HOST),
    ("REQUIRETLS: no STARTTLS -> fail", OPTIONAL, REQTLS, Event.NO_STARTTLS, Reaction.FAIL_HOST),
    (
        "DANE TLS only: handshake -> fail, never clear",
        INVALID_OK,
        DANE_TLS_ONLY,
        Event.HANDSHAKE_FAILED,
        Reaction.FAIL_HOST,
    ),
    (
        "DANE TLS only: no STARTTLS -> fail",
        OPTIONAL,
        DANE_TLS_ONLY,
        Event.NO_STARTTLS,
        Reaction.FAIL_HOST,
    ),
]


@pytest.mark.parametrize(
    ("label", "strategy", "policy", "event", "reaction"), REACTIONS, ids=[r[0] for r in REACTIONS]
)
def test_react(
    label: str, strategy: Strategy, policy: PolicyInputs, event: Event, reaction: Reaction
) -> None:
    assert react(plan_host(strategy, policy), event) is reaction


@pytest.mark.parametrize("strategy", [OPTIONAL, INVALID_OK, REQUIRE, REQUIRE_ANY_CERT, DISABLE])
@pytest.mark.parametrize("policy", [STS, DANE, DANE_TLS_ONLY, REQTLS])
@pytest.mark.parametrize("event", list(Event))
def test_no_policy_ever_reaches_clear_text(
    strategy: Strategy, policy: PolicyInputs, event: Event
) -> None:
    """The first promise: whatever the strategy, a policy requiring TLS never yields clear text."""
    plan = plan_host(strategy, policy)
    assert plan.tls is TlsMode.REQUIRED
    assert react(plan, event) is Reaction.FAIL_HOST


def test_refusal_names_strategy_and_policy() -> None:
    plan = plan_host(DISABLE, STS)
    assert plan.refusal is not None
    assert "'plain' disables STARTTLS" in plan.refusal
    assert "MTA-STS policy of example.test (mode enforce)" in plan.refusal
