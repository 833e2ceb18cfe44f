"""DESIGN §5 step 2, point by point: one test per clause of the DANE review checklist.

Each test is named after the clause it checks, in the order DESIGN states them. The checklist
comes from reviews that found downgrade bugs in two well-known MTAs; most tests therefore show
an attacker's move (strip records, fail a lookup, append a genuine CA to a forged chain, anchor
on the leaf) and that it gains nothing.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import pytest

from delivery.dns.result import DnsResult, Lookup, TlsaRecord
from delivery.harness.certs import CertFactory
from delivery.policy import dane
from delivery.policy import tls as tls_policy
from tests.policy.test_dane_chains import DOMAIN, MX, Chain, material

QNAME = "_25._tcp.mx1.example.test."
SECURE_ADDRESS = DnsResult(Lookup.ANSWER, ("192.0.2.25",), True, 300, "mx1.example.test.", ())
INSECURE_ADDRESS = DnsResult(Lookup.ANSWER, ("192.0.2.25",), False, 300, "mx1.example.test.", ())
A_RECORD = TlsaRecord(3, 1, 1, bytes(range(32)))


@pytest.fixture(scope="module")
def chains(harness_certs: CertFactory) -> dict[str, Chain]:
    return material(harness_certs)


def tlsa(
    *records: TlsaRecord, status: Lookup = Lookup.ANSWER, secure: bool = True, qname: str = QNAME
) -> dane.TlsaAnswer:
    base = qname.removeprefix(dane.TLSA_PREFIX)
    result = DnsResult(status, records, secure and status is not Lookup.TEMPFAIL, 300, qname, ())
    return dane.TlsaAnswer(dane.TlsaQuery(base, qname), result)


def decide(
    *answers: dane.TlsaAnswer,
    mode: dane.DaneMode = "optional",
    mx: dane.MxSecurity = dane.MxSecurity.SECURE,
    address: DnsResult[str] = SECURE_ADDRESS,
    validating: bool = True,
) -> dane.DaneDecision:
    return dane.decide(
        MX,
        mode=mode,
        mx=mx,
        address=address,
        tlsa=list(answers),
        domain=DOMAIN,
        validating=validating,
    )


def queries(**options: object) -> list[str]:
    found = dane.tlsa_queries(
        MX,
        mode=options.get("mode", "optional"),  # type: ignore[arg-type]
        mx=options.get("mx", dane.MxSecurity.SECURE),  # type: ignore[arg-type]
        address=options.get("address", SECURE_ADDRESS),  # type: ignore[arg-type]
        validating=options.get("validating", True),  # type: ignore[arg-type]
    )
    return [query.qname for query in found]


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


Outcome = dane.DaneOutcome


def test_unless_dane_disable() -> None:
    decision = decide(tlsa(A_RECORD), mode="disable")
    assert decision.outcome is Outcome.NOT_APPLICABLE and not decision.tls_required
    assert queries(mode="disable") == []
    assert decide(tlsa(A_RECORD)).outcome is Outcome.REQUIRED


def test_only_when_the_mx_rrset_is_dnssec_secure() -> None:
    """Secure TLSA records behind an insecure MX RRset are not used: the MX could be forged."""
    decision = decide(tlsa(A_RECORD), mx=dane.MxSecurity.INSECURE)
    assert decision.outcome is Outcome.NOT_APPLICABLE and decision.records == ()
    assert queries(mx=dane.MxSecurity.INSECURE) == []


def test_or_the_host_comes_from_a_locally_configured_relay_marked_trusted() -> None:
    decision = decide(tlsa(A_RECORD), mx=dane.MxSecurity.TRUSTED_RELAY)
    assert decision.outcome is Outcome.REQUIRED
    assert queries(mx=dane.MxSecurity.TRUSTED_RELAY) == [QNAME]


def test_and_only_when_the_hosts_a_or_aaaa_rrset_is_secure() -> None:
    decision = decide(tlsa(A_RECORD), address=INSECURE_ADDRESS)
    assert decision.outcome is Outcome.NOT_APPLICABLE
    assert queries(address=INSECURE_ADDRESS) == []
    failed: DnsResult[str] = DnsResult(
        Lookup.TEMPFAIL, (), False, 0, "mx1.example.test.", (), "timeout"
    )
    assert decide(tlsa(A_RECORD), address=failed).outcome is Outcome.TEMPFAIL


def test_tlsa_at_25_tcp_mx() -> None:
    assert queries() == ["_25._tcp.mx1.example.test."]
    assert decide(tlsa(A_RECORD)).base == "mx1.example.test."


def test_for_a_secure_cname_at_both_names_the_cname_target_first() -> None:
    """DESIGN says "at the original name first"; RFC 7672 §2.2.2 and RFC 7671 §7 (and Postfix)
    ask the CNAME target first and fall back to the original name. We follow the RFCs: the
    provider that answers at the target also serves the certificate, and SNI must name it."""
    aliased = DnsResult(
        Lookup.ANSWER,
        ("192.0.2.25",),
        True,
        300,
        "smtp.provider.test.",
        ("mx1.example.test.", "smtp.provider.test."),
    )
    assert queries(address=aliased) == [
        "_25._tcp.smtp.provider.test.",
        "_25._tcp.mx1.example.test.",
    ]
    at_target = tlsa(A_RECORD, qname="_25._tcp.smtp.provider.test.")
    at_origin = tlsa(TlsaRecord(3, 1, 1, bytes(32)))
    assert decide(at_target, at_origin, address=aliased).sni == "smtp.provider.test"
    nothing = tlsa(status=Lookup.NXDOMAIN, qname="_25._tcp.smtp.provider.test.")
    fallback = decide(nothing, at_origin, address=aliased)
    assert fallback.outcome is Outcome.REQUIRED and fallback.sni == "mx1.example.test"
    insecure_alias = DnsResult(
        Lookup.ANSWER, ("192.0.2.25",), False, 300, "smtp.provider.test.", aliased.cname_chain
    )
    assert queries(address=insecure_alias) == []


@pytest.mark.parametrize("status", [Lookup.ANSWER, Lookup.NODATA, Lookup.NXDOMAIN])
@pytest.mark.parametrize("secure", [True, False])
def test_noerror_with_records_or_nxdomain_nodata_secure_or_insecure_are_answers(
    status: Lookup, secure: bool
) -> None:
    records = (A_RECORD,) if status is Lookup.ANSWER else ()
    decision = decide(tlsa(*records, status=status, secure=secure))
    if status is Lookup.ANSWER and secure:
        assert decision.outcome is Outcome.REQUIRED
    else:  # an answer that says nothing usable: DANE does not apply, nothing failed
        assert decision.outcome is Outcome.NOT_APPLICABLE


@pytest.mark.parametrize("mode", ["optional", "require"])
def test_servfail_timeout_and_bogus_are_temporary_failures_of_that_host_never_a_downgrade(
    mode: dane.DaneMode,
) -> None:
    """The DNS layer reports SERVFAIL, timeouts and bogus (validation failure) as TEMPFAIL."""
    decision = decide(tlsa(status=Lookup.TEMPFAIL), mode=mode)
    assert decision.outcome is Outcome.TEMPFAIL
    assert not decision.usable and decision.records == ()
    # An attacker who makes the first of two lookups fail does not get the second one used.
    aliased = DnsResult(
        Lookup.ANSWER,
        ("192.0.2.25",),
        True,
        300,
        "smtp.provider.test.",
        ("mx1.example.test.", "smtp.provider.test."),
    )
    failed_target = tlsa(status=Lookup.TEMPFAIL, qname="_25._tcp.smtp.provider.test.")
    origin = tlsa(status=Lookup.NODATA)
    assert decide(failed_target, origin, address=aliased).outcome is Outcome.TEMPFAIL
    # And a caller that never asked is not taken to mean "no records".
    assert decide().outcome is Outcome.TEMPFAIL


@pytest.mark.parametrize("usage", [2, 3])
@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("mtype", [0, 1, 2])
def test_usable_records_are_dane_ee_3_and_dane_ta_2_selectors_0_1_matching_0_1_2(
    usage: int, selector: int, mtype: int, chains: dict[str, Chain]
) -> None:
    chain = chains["int-leaf+ca"]
    record = chain.record(usage, selector, mtype, "leaf" if usage == 3 else "ca")
    decision = decide(tlsa(record))
    assert decision.outcome is Outcome.REQUIRED and decision.records == (record,)
    assert dane.verify(chain.sent, decision.records, names=decision.names, now=now()).ok


@pytest.mark.parametrize("usage", [0, 1])
def test_usages_0_1_are_unusable_secure_rrset_of_only_those_means_tls_without_authentication(
    usage: int, chains: dict[str, Chain]
) -> None:
    chain = chains["int-leaf+ca"]
    record = chain.record(usage, 1, 1, "leaf" if usage == 1 else "ca")
    decision = decide(tlsa(record))
    assert decision.outcome is Outcome.UNAUTHENTICATED
    assert decision.tls_required and not decision.usable
    assert [dropped.record for dropped in decision.dropped] == [record]
    # Even a PKIX-valid chain is not authenticated by them.
    assert not dane.verify(chain.sent, [record], names=decision.names, now=now()).ok


@dataclass(frozen=True)
class _Strategy:
    name: str = "invalid-tls"
    start_tls: tls_policy.StartTls = "optional"
    allow_invalid_certs: bool = True


def test_usable_tlsa_tls_required_sni_is_the_tlsa_base_name_no_pkix(
    chains: dict[str, Chain],
) -> None:
    decision = decide(tlsa(A_RECORD))
    assert decision.tls_required and decision.sni == "mx1.example.test"
    plan = tls_policy.plan_host(
        _Strategy(), tls_policy.PolicyInputs(dane_usable=decision.usable, policy_domain=DOMAIN)
    )
    assert plan.tls is tls_policy.TlsMode.REQUIRED  # even under allowInvalidCerts + optional
    assert plan.verification is tls_policy.Verification.DANE
    # No PKIX: a chain from an unknown CA is fine when DANE matches it...
    unknown = chains["unknown-ca"]
    record = unknown.record(3, 1, 1, "leaf")
    assert dane.verify(unknown.sent, [record], names=[MX], now=now()).ok
    # ...and a PKIX-valid chain is refused when DANE does not.
    valid = chains["int-leaf+ca"]
    assert not dane.verify(valid.sent, [record], names=[MX], now=now()).ok


def test_every_dane_ee_record_is_tried_against_the_leaf_first_names_and_dates_ignored(
    chains: dict[str, Chain],
) -> None:
    expired, wrong_name = chains["expired"], chains["wrong-name"]
    for chain in (expired, wrong_name, chains["self-signed"]):
        records = [
            chain.record(3, 1, 1, "other"),  # a stale record first
            chain.record(2, 0, 1, "ca"),  # a DANE-TA record that would fail on dates/names
            chain.record(3, 0, 2, "leaf"),
        ]
        result = dane.verify(chain.sent, records, names=[MX], now=now())
        assert result.ok and result.depth == 0 and result.record == records[2], result.reason


def test_then_a_chain_from_the_leaf_to_depth_1_or_more_or_a_bare_key_matching_dane_ta(
    chains: dict[str, Chain],
) -> None:
    chain = chains["int-leaf+ca"]
    for source, depth in (("issuer", 1), ("ca", 2)):
        result = dane.verify(chain.sent, [chain.record(2, 0, 1, source)], names=[MX], now=now())
        assert result.ok and result.depth == depth, result.reason
    bare = chains["int-leaf"]  # root not sent: its key, from DNS, signed the top
    result = dane.verify(bare.sent, [bare.record(2, 1, 0, "ca")], names=[MX], now=now())
    assert result.ok and result.depth == 2, result.reason
    # The leaf itself is never a DANE-TA trust anchor, whatever the record's form.
    for selector, mtype in ((0, 0), (0, 1), (1, 0), (1, 2)):
        for name in ("int-leaf+ca", "self-signed", "self-signed-ca-leaf-twice"):
            leaf_ta = chains[name].record(2, selector, mtype, "leaf")
            result = dane.verify(chains[name].sent, [leaf_ta], names=[MX], now=now())
            assert not result.ok, (name, selector, mtype, result.reason)


def test_with_signatures_checked(chains: dict[str, Chain]) -> None:
    """The genuine CA certificate is public: appending it to a forged chain proves nothing."""
    for name in ("forged-signature", "forged-issuer", "wrong-issuer", "sha1-signed", "rsa-1024"):
        chain = chains[name]
        result = dane.verify(chain.sent, [chain.record(2, 0, 1, "ca")], names=[MX], now=now())
        assert not result.ok, name
        assert result.failure in (dane.DaneFailure.UNTRUSTED_CHAIN, dane.DaneFailure.NOT_MATCHED)


def test_with_validity_checked(chains: dict[str, Chain]) -> None:
    for name in ("expired", "not-yet-valid", "expired-intermediate"):
        chain = chains[name]
        result = dane.verify(chain.sent, [chain.record(2, 0, 1, "ca")], names=[MX], now=now())
        assert result.failure is dane.DaneFailure.EXPIRED, (name, result.reason)


def test_with_ca_flags_checked(chains: dict[str, Chain]) -> None:
    for name in ("non-ca-intermediate", "no-basic-constraints", "no-keycertsign"):
        chain = chains[name]
        result = dane.verify(chain.sent, [chain.record(2, 0, 1, "ca")], names=[MX], now=now())
        assert result.failure is dane.DaneFailure.UNTRUSTED_CHAIN, (name, result.reason)


def test_with_path_length_checked(chains: dict[str, Chain]) -> None:
    bad, good = chains["pathlen-violation"], chains["pathlen-ok"]
    result = dane.verify(bad.sent, [bad.record(2, 0, 1, "ca")], names=[MX], now=now())
    assert result.failure is dane.DaneFailure.UNTRUSTED_CHAIN and "pathLen" in result.reason
    assert dane.verify(good.sent, [good.record(2, 0, 1, "ca")], names=[MX], now=now()).ok


def test_and_the_leafs_name_matching_the_mx_host_or_the_recipient_domain(
    chains: dict[str, Chain],
) -> None:
    decision = decide(tlsa(chains["int-leaf+ca"].record(2, 0, 1, "ca")))
    assert decision.names == ("mx1.example.test", "example.test")
    for name, ok in (("int-leaf+ca", True), ("domain-leaf", True), ("wrong-name", False)):
        chain = chains[name]
        records = [chain.record(2, 0, 1, "ca")]
        result = dane.verify(chain.sent, records, names=decision.names, now=now())
        assert result.ok is ok, (name, result.reason)
    wrong = chains["wrong-name"]
    result = dane.verify(wrong.sent, [wrong.record(2, 0, 1, "ca")], names=decision.names, now=now())
    assert result.failure is dane.DaneFailure.NAME_MISMATCH


@pytest.mark.parametrize(
    "answer",
    [
        tlsa(status=Lookup.NXDOMAIN),
        tlsa(status=Lookup.NODATA),
        tlsa(A_RECORD, secure=False),
        tlsa(TlsaRecord(1, 1, 1, bytes(32))),
        tlsa(TlsaRecord(3, 1, 1, bytes(31))),
    ],
    ids=["nxdomain", "nodata", "insecure", "only unusable", "only malformed"],
)
def test_dane_require_and_no_usable_tlsa_fails(answer: dane.TlsaAnswer) -> None:
    """Permanently (DESIGN §5.4): the domain does not publish what the strategy requires."""
    assert decide(answer, mode="require").outcome is Outcome.PERMFAIL
    assert decide(tlsa(A_RECORD), mode="require").outcome is Outcome.REQUIRED
    assert decide(tlsa(status=Lookup.TEMPFAIL), mode="require").outcome is Outcome.TEMPFAIL
    assert decide(answer, mx=dane.MxSecurity.INSECURE, mode="require").outcome is Outcome.PERMFAIL


def test_a_resolver_that_cannot_validate_makes_dane_unavailable_loudly_not_domains_bogus() -> None:
    optional = decide(tlsa(A_RECORD), validating=False)
    assert optional.outcome is Outcome.NOT_APPLICABLE  # not TEMPFAIL for every signed domain
    assert "does not validate DNSSEC" in optional.reason  # said, for the log and explain
    assert queries(validating=False) == []
    # Under `dane: require` it cannot be known whether the domain publishes TLSA: our resolver
    # is at fault, not the domain, so the host waits rather than bouncing.
    assert decide(tlsa(A_RECORD), mode="require", validating=False).outcome is Outcome.TEMPFAIL
