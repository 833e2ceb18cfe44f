"""The pure parts of engine/explain.py, as tables: the walk over the addresses (the error
policy's dispositions in attempt order), what authenticates a host, steps, addresses."""

from __future__ import annotations

from typing import Any

import pytest

from delivery.dns.result import TlsaRecord
from delivery.engine import explain, outcome, planner
from delivery.errors import LastError
from delivery.policy import dane, mtasts
from delivery.policy import tls as tls_policy
from tests.plugins.engine import make_snapshot

HOST = "mx1.x.test"


def refused(host: str = HOST) -> outcome.Failure:
    """A connection refused: soft, SITE scope (rule 4)."""
    return outcome.transport_failure(
        outcome.Stage.CONNECT, "refused", remote_host=host, remote_ip="192.0.2.1"
    )


def violation() -> outcome.Failure:
    """A TLSA SERVFAIL, an unlisted MX under MTA-STS enforce: rule 1."""
    return outcome.policy_violation(
        LastError.DANE, "TLSA SERVFAIL", stage=outcome.Stage.HOST, remote_host=HOST
    )


def absent() -> outcome.Failure:
    """dane: require and no usable TLSA: a per-host absence (rule 2)."""
    return outcome.policy_absent(LastError.DANE, "no usable TLSA", remote_host=HOST)


def domain_tempfail() -> outcome.Failure:
    return outcome.route_failure(outcome.RouteProblem.TEMPFAIL, "x.test", detail="SERVFAIL")


B = explain.Blocked
WALKS: list[tuple[str, list[explain.Blocked | None], list[str | None]]] = [
    ("one host that may be tried", [None], ["connect"]),
    (
        "the first host refused by DNS, the second tried",
        [B(refused()), None],
        ["next-host", "connect"],
    ),
    (
        "a soft failure of the last host defers",
        [B(refused()), B(refused())],
        ["next-host", "defer"],
    ),
    ("a policy violation is never a bounce", [B(violation())], ["defer"]),
    ("every host a policy absence: bounce", [B(absent()), B(absent())], ["next-host", "bounce"]),
    (
        "an absence after a transient failure defers",
        [B(refused()), B(absent())],
        ["next-host", "defer"],
    ),
    ("after a connect, an absence defers", [None, B(absent())], ["connect", "defer"]),
    ("a forced-final failure ends the walk", [B(refused(), final=True), None], ["defer", None]),
    (
        "nothing after a defer is reached",
        [B(violation(), final=True), B(absent())],
        ["defer", None],
    ),
    (
        "fallbacks after a connect are still walked",
        [None, None, B(refused())],
        ["connect", "connect", "defer"],
    ),
    ("a domain failure ends at once", [B(domain_tempfail()), None], ["defer", None]),
]


@pytest.mark.parametrize(("label", "blocks", "expected"), WALKS, ids=[w[0] for w in WALKS])
def test_walk_decides_each_address_as_the_attempt_does(
    label: str, blocks: list[explain.Blocked | None], expected: list[str | None]
) -> None:
    steps = explain.walk(blocks)
    assert [s.action.value if s is not None else None for s in steps] == expected


STEPS = [  # (label, failure, final host, action, status)
    ("next host keeps the observed status", refused(), False, "next-host", "4.4.1"),
    ("a deferral is class 4", refused(), True, "defer", "4.4.1"),
    ("a bounce is class 5", absent(), True, "bounce", "5.7.4"),
    ("a domain deferral", domain_tempfail(), True, "defer", "4.4.3"),
]


@pytest.mark.parametrize(
    ("label", "failure", "final", "action", "status"), STEPS, ids=[s[0] for s in STEPS]
)
def test_a_failure_step_carries_the_outcome_the_recipient_would_get(
    label: str, failure: outcome.Failure, final: bool, action: str, status: str
) -> None:
    step = explain.Step.of_failure(failure, outcome.decide(failure, final_host=final))
    assert (step.action.value, step.status, step.kind) == (action, status, failure.kind.value)
    assert step.text == f"{action}: {failure.reason}"
    assert (step.remote_host, step.remote_ip) == (failure.remote_host, failure.remote_ip)


ENFORCE = mtasts.PolicyLookup(
    "x.test",
    mtasts.LookupStatus.POLICY,
    policy=mtasts.Policy(mtasts.Mode.ENFORCE, (HOST,), 86400),
    policy_id="1",
    source=mtasts.Source.FETCH,
)
DANE_EE = dane.DaneDecision(
    dane.DaneOutcome.REQUIRED,
    HOST + ".",
    "1 usable TLSA record",
    base=HOST + ".",
    records=(TlsaRecord(3, 1, 1, bytes(32)),),
    names=(HOST,),
)
UNUSABLE = dane.DaneDecision(dane.DaneOutcome.UNAUTHENTICATED, HOST + ".", "only unusable")

STRATEGIES = [
    ("MtaTlsStrategy", {"name": "off", "startTls": "disable"}),
    ("MtaTlsStrategy", {"name": "strict", "startTls": "require"}),
]

AUTHENTICATION: list[tuple[str, str, dict[str, Any], str, list[str]]] = [
    # (label, TLS strategy, plan_host keywords, authentication, words in the sentence)
    (
        "PKIX by default",
        "default",
        {},
        "pkix",
        [f"PKIX: a certificate chain to a trusted CA, valid for {HOST}", "clear text if"],
    ),
    ("STARTTLS required: no clear text", "strict", {}, "pkix", ["PKIX"]),
    (
        "an MTA-STS policy that lists the host",
        "default",
        {"sts": mtasts.decide(ENFORCE, HOST, "optional")},
        "pkix",
        ["the MTA-STS policy of x.test (mode enforce) lists mx1.x.test"],
    ),
    (
        "usable TLSA records",
        "default",
        {"tlsa": DANE_EE},
        "dane",
        [f"a TLSA record of {HOST} (3 1 1)"],
    ),
    ("allowInvalidCerts", "invalid-tls", {}, "none", ["'invalid-tls' allows invalid certificates"]),
    ("only unusable TLSA records", "default", {"tlsa": UNUSABLE}, "none", ["all unusable"]),
    ("STARTTLS disabled", "off", {}, "none", ["clear text (TLS strategy 'off' disables STARTTLS)"]),
]


@pytest.mark.parametrize(
    ("label", "strategy", "keywords", "how", "words"),
    AUTHENTICATION,
    ids=[a[0] for a in AUTHENTICATION],
)
def test_authentication_says_what_would_authenticate_the_host(
    label: str, strategy: str, keywords: dict[str, Any], how: str, words: list[str]
) -> None:
    snapshot = make_snapshot(objects=STRATEGIES)
    sts, tlsa = keywords.get("sts"), keywords.get("tlsa")
    inputs = tls_policy.PolicyInputs(
        mta_sts_enforce=sts is not None and sts.tls_required,
        mta_sts_listed=sts is not None and bool(sts.mx_listed),
        dane_usable=tlsa is not None and tlsa.usable,
        dane_tls_only=tlsa is not None and tlsa.outcome is dane.DaneOutcome.UNAUTHENTICATED,
        policy_domain="x.test",
    )
    connection = planner.select_connection(snapshot, "default")
    plan = planner.plan_host(
        snapshot,
        inputs,
        mx=HOST,
        remote_ip="192.0.2.1",
        connection=connection,
        local_ip="",
        ehlo_name="mta.test",
        tls=strategy,
        sts=sts,
        tlsa=tlsa,
    )
    found, sentence = explain.authentication(plan)
    assert found == how
    for word in words:
        assert word in sentence
    required = plan.tls_plan.tls is not tls_policy.TlsMode.OPPORTUNISTIC
    assert ("clear text if" in sentence) is not required


ADDRESSES = [  # (argument, text, address or the error's words)
    ("recipient", "b@x.test", "b@x.test"),
    ("recipient", " <B@X.test> ", "B@X.test"),
    ("sender", "", ""),
    ("sender", "<>", ""),
    ("sender", "a@y.test", "a@y.test"),
    ("recipient", "", "it is empty"),
    ("recipient", "<>", "it is empty"),
    ("recipient", "b", "no @domain"),
    ("recipient", "b@x.test\r\nRCPT TO:<c@y>", "control character"),
    ("sender", "a b@y.test", "neither a dot-atom nor a quoted string"),
]


@pytest.mark.parametrize(("argument", "text", "expected"), ADDRESSES)
def test_parse_address_accepts_mailboxes_and_names_the_argument_at_fault(
    argument: Any, text: str, expected: str
) -> None:
    try:
        found = explain.parse_address(argument, text)
    except explain.InvalidAddress as exc:
        assert exc.argument == argument
        assert expected in exc.reason
    else:
        assert found == expected
