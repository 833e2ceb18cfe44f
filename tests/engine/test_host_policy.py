"""What MTA-STS and DANE say of one host (planner.host_policy), and what a TLS session is called
in a TLS report (planner.session_result, refused_result): tables of cases, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from delivery.dns.result import DnsResult, Lookup, TlsaRecord
from delivery.engine import outcome, planner
from delivery.errors import LastError
from delivery.policy import dane, mtasts, tlsrpt
from delivery.policy import tls as tls_policy
from tests.plugins.engine import make_snapshot

DOMAIN = "example.test"
MX1, MX2 = "mx1.example.test", "mx2.example.test"
IP = "192.0.2.1"
SNAPSHOT = make_snapshot()


def sts(mode: mtasts.Mode | None, *mx: str, status: str = "policy") -> mtasts.PolicyLookup:
    """An MTA-STS lookup: a policy (``mode``, ``mx``), none published, or unavailable."""
    match status:
        case "policy":
            assert mode is not None
            policy = mtasts.Policy(mode, mx, 86400)
            return mtasts.PolicyLookup(
                DOMAIN, mtasts.LookupStatus.POLICY, policy, "1", mtasts.Source.FETCH
            )
        case "none":
            return mtasts.PolicyLookup(DOMAIN, mtasts.LookupStatus.NONE, reason="no TXT record")
        case _:
            return mtasts.PolicyLookup(
                DOMAIN,
                mtasts.LookupStatus.UNAVAILABLE,
                reason=f"the MTA-STS policy of {DOMAIN} was not fetched: 404 Not Found",
                problem=mtasts.FetchProblem.STATUS,
            )


RECORD = TlsaRecord(3, 1, 1, bytes(32))


def tlsa(result: dane.DaneOutcome) -> dane.DaneDecision:
    usable = (RECORD,) if result is dane.DaneOutcome.REQUIRED else ()
    dropped = (
        (dane.DroppedRecord(TlsaRecord(1, 1, 1, bytes(32)), "unusable"),)
        if result is dane.DaneOutcome.UNAUTHENTICATED
        else ()
    )
    return dane.DaneDecision(
        result, MX1 + ".", f"{MX1}: DANE {result.value}", f"{MX1}.", usable, dropped, (MX1, DOMAIN)
    )


@dataclass(frozen=True)
class Case:
    label: str
    sts_mode: mtasts.StsStrategy = "optional"
    lookup: mtasts.PolicyLookup | None = None
    dane_mode: dane.DaneMode = "optional"
    decision: dane.DaneDecision | None = None
    validating: bool = True
    requiretls: bool = False
    relay: bool = False
    # expected
    failure: tuple[LastError, str, outcome.Scope] | None = None  # kind, status, scope
    enforce: bool = False
    listed: bool = False
    usable: bool = False
    tls_only: bool = False
    unknown: bool = False


CASES = [
    Case("no policy at all"),
    Case("MTA-STS disabled", sts_mode="disable"),
    Case("enforce lists the host", lookup=sts(mtasts.Mode.ENFORCE, MX1), enforce=True, listed=True),
    Case(
        "enforce lists another host: never this one",
        lookup=sts(mtasts.Mode.ENFORCE, MX2),
        failure=(LastError.MTA_STS, "4.7.5", outcome.Scope.SITE),
    ),
    Case(
        "enforce lists no MX host: the domain waits",
        lookup=sts(mtasts.Mode.ENFORCE, "mx9.example.test"),
        failure=(LastError.MTA_STS, "4.7.5", outcome.Scope.DOMAIN),
    ),
    Case("testing lists the host", lookup=sts(mtasts.Mode.TESTING, MX1), listed=True),
    Case("testing does not list it", lookup=sts(mtasts.Mode.TESTING, MX2)),
    Case(
        "require enforces a testing policy",
        sts_mode="require",
        lookup=sts(mtasts.Mode.TESTING, MX1),
        enforce=True,
        listed=True,
    ),
    Case(
        "require, none published: permanent",
        sts_mode="require",
        lookup=sts(None, status="none"),
        failure=(LastError.MTA_STS, "5.7.4", outcome.Scope.DOMAIN),
    ),
    Case(
        "require, none obtained: temporary",
        sts_mode="require",
        lookup=sts(None, status="unavailable"),
        failure=(LastError.MTA_STS, "4.7.5", outcome.Scope.DOMAIN),
        unknown=True,
    ),
    Case(
        "optional, none obtained: as without, authentication unknown",
        lookup=sts(None, status="unavailable"),
        unknown=True,
    ),
    Case("usable TLSA", decision=tlsa(dane.DaneOutcome.REQUIRED), usable=True),
    Case("only unusable TLSA", decision=tlsa(dane.DaneOutcome.UNAUTHENTICATED), tls_only=True),
    Case(
        "TLSA lookup failed: the host waits",
        decision=tlsa(dane.DaneOutcome.TEMPFAIL),
        failure=(LastError.DANE, "4.7.5", outcome.Scope.SITE),
    ),
    Case(
        "dane require without usable TLSA: a per-host absence",
        dane_mode="require",
        decision=tlsa(dane.DaneOutcome.PERMFAIL),
        failure=(LastError.DANE, "5.7.4", outcome.Scope.SITE),
    ),
    Case(
        "MTA-STS is checked before DANE",
        lookup=sts(mtasts.Mode.ENFORCE, MX2),
        decision=tlsa(dane.DaneOutcome.TEMPFAIL),
        failure=(LastError.MTA_STS, "4.7.5", outcome.Scope.SITE),
    ),
    Case(
        "resolver not validating: DANE unknown",
        decision=tlsa(dane.DaneOutcome.NOT_APPLICABLE),
        validating=False,
        unknown=True,
    ),
    Case("a relay is the operator's name", relay=True, validating=False),
]


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_host_policy(case: Case) -> None:
    got = planner.host_policy(
        DOMAIN,
        MX1,
        IP,
        requiretls=case.requiretls,
        mx_hosts=(MX1, MX2),
        sts_mode=case.sts_mode,
        sts_lookup=case.lookup if case.sts_mode != "disable" else None,
        dane_mode=case.dane_mode,
        tlsa=case.decision,
        dnssec_validating=case.validating,
        relay=case.relay,
    )
    failure = got.failure
    if case.failure is None:
        assert failure is None, failure.reason if failure else ""
    else:
        assert failure is not None
        assert (failure.kind, failure.status, failure.scope) == case.failure
        assert DOMAIN in failure.reason or MX1 in failure.reason
    inputs = got.inputs
    assert (inputs.mta_sts_enforce, inputs.mta_sts_listed) == (case.enforce, case.listed)
    assert (inputs.dane_usable, inputs.dane_tls_only) == (case.usable, case.tls_only)
    assert inputs.authentication_unknown is case.unknown
    assert inputs.trusted_relay is case.relay
    assert inputs.policy_domain == DOMAIN


def test_every_mx_host_unlisted_defers_the_domain_naming_each() -> None:
    got = planner.host_policy(
        DOMAIN,
        MX1,
        IP,
        requiretls=False,
        mx_hosts=(MX1, MX2),
        sts_mode="optional",
        sts_lookup=sts(mtasts.Mode.ENFORCE, "other.example.test"),
        dane_mode="disable",
        tlsa=None,
        dnssec_validating=True,
    )
    assert got.failure is not None
    decision = outcome.decide(got.failure, final_host=False)
    assert decision.disposition is outcome.Disposition.DEFER
    assert f"no MX host of {DOMAIN} ({MX1}, {MX2}) is listed" in got.failure.reason


# ---- TLS reports --------------------------------------------------------------------------


def plan_of(
    lookup: mtasts.PolicyLookup | None = None,
    decision: dane.DaneDecision | None = None,
    *,
    tls: str = "default",
    relay: bool = False,
) -> planner.HostPlan:
    policy = planner.host_policy(
        DOMAIN,
        MX1,
        IP,
        requiretls=False,
        mx_hosts=(MX1,),
        sts_mode="optional",
        sts_lookup=lookup,
        dane_mode="optional",
        tlsa=decision,
        dnssec_validating=True,
        relay=relay,
    )
    connection = planner.select_connection(SNAPSHOT, "default")
    return planner.plan_host(
        SNAPSHOT,
        policy.inputs,
        mx=MX1,
        remote_ip=IP,
        connection=connection,
        local_ip="",
        ehlo_name="mta.example.org",
        tls=tls,
        sts=policy.sts,
        tlsa=policy.tlsa,
    )


SEEN = planner.SessionObservation
NO_STARTTLS = SEEN(tls_policy.Event.NO_STARTTLS, "mx1 did not offer STARTTLS")
EXPIRED = SEEN(tls_policy.Event.CERT_REJECTED, "certificate has expired", verify_code=10)
HANDSHAKE = SEEN(tls_policy.Event.HANDSHAKE_FAILED, "wrong version number")
MISMATCH = SEEN(dane_failure=dane.DaneFailure.NOT_MATCHED, detail="no record matches")
UP = SEEN(local_ip="198.51.100.7", helo="mx1.example.test")

RESULTS = [  # (label, plan, observed, policy type, result type or None for a success)
    ("TLS, no policy", plan_of(), UP, "no-policy-found", None),
    ("no STARTTLS", plan_of(), NO_STARTTLS, "no-policy-found", "starttls-not-supported"),
    ("expired certificate", plan_of(), EXPIRED, "no-policy-found", "certificate-expired"),
    ("handshake", plan_of(), HANDSHAKE, "no-policy-found", "validation-failure"),
    ("MTA-STS enforce, verified", plan_of(sts(mtasts.Mode.ENFORCE, MX1)), UP, "sts", None),
    (
        "testing, MX not listed",
        plan_of(sts(mtasts.Mode.TESTING, MX2)),
        UP,
        "sts",
        "validation-failure",
    ),
    (
        "testing, certificate not checked",
        plan_of(sts(mtasts.Mode.TESTING, MX1), tls="invalid-tls"),
        UP,
        "sts",
        "validation-failure",
    ),
    (
        "policy not fetched",
        plan_of(sts(None, status="unavailable")),
        UP,
        "sts",
        "sts-policy-fetch-error",
    ),
    ("DANE matched", plan_of(decision=tlsa(dane.DaneOutcome.REQUIRED)), UP, "tlsa", None),
    (
        "DANE did not match",
        plan_of(decision=tlsa(dane.DaneOutcome.REQUIRED)),
        MISMATCH,
        "tlsa",
        "certificate-not-trusted",
    ),
    (
        "DANE decides over a failed MTA-STS fetch",
        plan_of(sts(None, status="unavailable"), tlsa(dane.DaneOutcome.REQUIRED)),
        UP,
        "tlsa",
        None,
    ),
    (
        "only unusable TLSA",
        plan_of(decision=tlsa(dane.DaneOutcome.UNAUTHENTICATED)),
        UP,
        "tlsa",
        "tlsa-invalid",
    ),
]


@pytest.mark.parametrize(
    ("label", "plan", "observed", "policy_type", "result_type"),
    RESULTS,
    ids=[r[0] for r in RESULTS],
)
def test_session_result(
    label: str,
    plan: planner.HostPlan,
    observed: planner.SessionObservation,
    policy_type: str,
    result_type: str | None,
) -> None:
    result = planner.session_result(plan, observed, domain=DOMAIN, at=1_700_000_000_000)
    assert result is not None
    assert result.policy.policy_type.value == policy_type
    assert result.success is (result_type is None)
    if result_type is not None:
        assert result.failure is not None
        assert result.failure.result_type.value == result_type
        assert result.failure.receiving_mx_hostname == MX1
        assert result.failure.receiving_ip == IP


def test_no_result_for_relays_or_without_tls() -> None:
    assert planner.session_result(plan_of(relay=True), UP, domain=DOMAIN, at=0) is None
    plain = plan_of()
    off = planner.HostPlan(
        **{
            **{f: getattr(plain, f) for f in plain.__slots__},
            "tls_plan": tls_policy.HostTlsPlan(
                tls_policy.TlsMode.OFF, tls_policy.Verification.PKIX, ()
            ),
        }
    )
    assert planner.session_result(off, UP, domain=DOMAIN, at=0) is None


REFUSED = [  # (label, lookup, decision, dane mode, result type or None)
    ("MX not listed", sts(mtasts.Mode.ENFORCE, MX2), None, "optional", "validation-failure"),
    ("TLSA lookup failed", None, tlsa(dane.DaneOutcome.TEMPFAIL), "optional", "dnssec-invalid"),
    ("dane require, no TLSA", None, tlsa(dane.DaneOutcome.PERMFAIL), "require", "dane-required"),
    ("our requirement of a policy", sts(None, status="none"), None, "optional", None),
]


@pytest.mark.parametrize(
    ("label", "lookup", "decision", "dane_mode", "result_type"),
    REFUSED,
    ids=[r[0] for r in REFUSED],
)
def test_refused_result(
    label: str,
    lookup: mtasts.PolicyLookup | None,
    decision: dane.DaneDecision | None,
    dane_mode: dane.DaneMode,
    result_type: str | None,
) -> None:
    policy = planner.host_policy(
        DOMAIN,
        MX1,
        IP,
        requiretls=False,
        mx_hosts=(MX1, MX2),
        sts_mode="require" if label.startswith("our") else "optional",
        sts_lookup=lookup,
        dane_mode=dane_mode,
        tlsa=decision,
        dnssec_validating=True,
    )
    assert policy.failure is not None
    result = planner.refused_result(DOMAIN, MX1, IP, policy, at=0)
    if result_type is None:
        assert result is None
    else:
        assert result is not None and result.failure is not None
        assert result.failure.result_type is tlsrpt.ResultType(result_type)
    assert planner.refused_result(DOMAIN, MX1, IP, policy, at=0, relay=True) is None


def test_mx_security_of_an_implicit_mx_is_the_denial_of_mx_records() -> None:
    secure_nodata = DnsResult(Lookup.NODATA, (), True, 60, f"{DOMAIN}.", ())
    insecure_nodata = DnsResult(Lookup.NODATA, (), False, 60, f"{DOMAIN}.", ())
    assert planner.mx_security(secure_nodata, implicit=True) is dane.MxSecurity.SECURE
    assert planner.mx_security(insecure_nodata, implicit=True) is dane.MxSecurity.INSECURE
