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
REQTLS_UNKNOWN = PolicyInputs(
    requiretls=True, authentication_unknown=True, policy_domain="example.test"
)
REQTLS_STS = PolicyInputs(requiretls=True, mta_sts_listed=True, policy_domain="example.test")
REQTLS_STS_ENFORCE = PolicyInputs(
    requiretls=True, mta_sts_enforce=True, mta_sts_listed=True, policy_domain="example.test"
)
REQTLS_DANE = PolicyInputs(requiretls=True, dane_usable=True, policy_domain="example.test")
REQTLS_RELAY = PolicyInputs(requiretls=True, trusted_relay=True, policy_domain="example.test")
REQTLS_TLS_ONLY = PolicyInputs(requiretls=True, dane_tls_only=True, policy_domain="example.test")
REQTLS_TLS_ONLY_STS = PolicyInputs(
    requiretls=True, dane_tls_only=True, mta_sts_listed=True, policy_domain="example.test"
)
STS_TESTING_LISTED = PolicyInputs(mta_sts_listed=True, policy_domain="example.test")
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
    (
        "REQUIRETLS, nothing authenticates the host: refused",
        OPTIONAL,
        REQTLS,
        TlsMode.REQUIRED,
        Verification.PKIX,
        True,
    ),
    (
        "REQUIRETLS + MTA-STS testing listing the host: PKIX",
        OPTIONAL,
        REQTLS_STS,
        TlsMode.REQUIRED,
        Verification.PKIX,
        False,
    ),
    (
        "REQUIRETLS + MTA-STS ignores allowInvalidCerts",
        INVALID_OK,
        REQTLS_STS,
        TlsMode.REQUIRED,
        Verification.PKIX,
        False,
    ),
    (
        "REQUIRETLS + MTA-STS enforce",
        INVALID_OK,
        REQTLS_STS_ENFORCE,
        TlsMode.REQUIRED,
        Verification.PKIX,
        False,
    ),
    (
        "REQUIRETLS + DANE",
        INVALID_OK,
        REQTLS_DANE,
        TlsMode.REQUIRED,
        Verification.DANE,
        False,
    ),
    (
        "REQUIRETLS + relay route: PKIX for the configured name",
        REQUIRE_ANY_CERT,
        REQTLS_RELAY,
        TlsMode.REQUIRED,
        Verification.PKIX,
        False,
    ),
    (
        "REQUIRETLS + unusable TLSA only: refused (nothing authenticates)",
        OPTIONAL,
        REQTLS_TLS_ONLY,
        TlsMode.REQUIRED,
        Verification.NONE,
        True,
    ),
    (
        "REQUIRETLS + unusable TLSA + MTA-STS listing: PKIX",
        OPTIONAL,
        REQTLS_TLS_ONLY_STS,
        TlsMode.REQUIRED,
        Verification.PKIX,
        False,
    ),
    (
        "MTA-STS testing listing alone requires nothing",
        INVALID_OK,
        STS_TESTING_LISTED,
        TlsMode.OPPORTUNISTIC,
        Verification.NONE,
        False,
    ),
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
    (
        "disable + REQUIRETLS with MTA-STS refuses",
        DISABLE,
        REQTLS_STS,
        TlsMode.REQUIRED,
        Verification.PKIX,
        True,
    ),
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
    (
        "REQUIRETLS: no STARTTLS -> fail",
        OPTIONAL,
        REQTLS_STS,
        Event.NO_STARTTLS,
        Reaction.FAIL_HOST,
    ),
    (
        "REQUIRETLS via relay: handshake -> fail, never clear",
        REQUIRE_ANY_CERT,
        REQTLS_RELAY,
        Event.HANDSHAKE_FAILED,
        Reaction.FAIL_HOST,
    ),
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
@pytest.mark.parametrize(
    "policy", [STS, DANE, DANE_TLS_ONLY, REQTLS, REQTLS_STS, REQTLS_DANE, REQTLS_RELAY]
)
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


REFUSALS = [  # (label, strategy, policy, refusal text, permanent)
    ("REQUIRETLS, no DANE, no MTA-STS", OPTIONAL, REQTLS, "publishes no usable DANE", True),
    ("REQUIRETLS, not known yet", OPTIONAL, REQTLS_UNKNOWN, "once its MTA-STS policy", False),
    ("REQUIRETLS under disable, no policy", DISABLE, REQTLS, "REQUIRETLS", True),
    ("disable + MTA-STS enforce", DISABLE, STS, "not delivering in clear text", False),
    ("disable + REQUIRETLS with MTA-STS", DISABLE, REQTLS_STS, "disables STARTTLS", False),
]


@pytest.mark.parametrize(
    ("label", "strategy", "policy", "text", "permanent"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
def test_refusals_say_why_and_whether_they_last(
    label: str, strategy: Strategy, policy: PolicyInputs, text: str, permanent: bool
) -> None:
    """A REQUIRETLS refusal resting on definite answers is permanent (RFC 8689 §4.2.1, 5.7.10);
    one that overrides a policy, or rests on unknown answers, is temporary."""
    plan = plan_host(strategy, policy)
    assert plan.refusal is not None and text in plan.refusal
    assert plan.refusal_permanent is permanent


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        (REQTLS_DANE, "authenticated by DANE"),
        (REQTLS_STS, "the MTA-STS policy of example.test lists"),
        (REQTLS_RELAY, "the relay's configured name"),
    ],
)
def test_requiretls_names_what_authenticates_the_host(policy: PolicyInputs, words: str) -> None:
    plan = plan_host(OPTIONAL, policy)
    assert plan.refusal is None
    assert any("REQUIRETLS" in reason and words in reason for reason in plan.required_by)
