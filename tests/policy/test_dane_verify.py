"""DANE verification after the handshake, as tables (RFC 7672 §3, RFC 7671 §5).

`cases/dane_verify.json` holds the cases, one line of thought each; the chains they name are
built by `test_dane_chains.material` from the harness certificate factory. The matrix below
runs every usage x selector x matching type. Set DANE_CASE to a substring of a label to run
only the matching cases.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from delivery.dns.result import TlsaRecord
from delivery.harness.certs import CertFactory
from delivery.policy import dane
from tests.policy.test_dane_chains import DOMAIN, MX, Chain, material, parse_record, tlsa

CASES_FILE = Path(__file__).parent / "cases" / "dane_verify.json"
CASES: list[dict[str, Any]] = [
    case
    for case in json.loads(CASES_FILE.read_text())["cases"]
    if os.environ.get("DANE_CASE", "") in case["label"]
]
NAMES = (MX, DOMAIN)


def now(days: float = 0) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)


@pytest.fixture(scope="module")
def chains(harness_certs: CertFactory) -> dict[str, Chain]:
    return material(harness_certs)


@pytest.mark.parametrize("case", CASES, ids=[case["label"] for case in CASES])
def test_verify_case(case: dict[str, Any], chains: dict[str, Chain]) -> None:
    chain = chains[case["chain"]]
    records = [parse_record(text, chain) for text in case["records"]]
    result = dane.verify(
        chain.sent,
        records,
        names=case.get("names", NAMES),
        now=now(case.get("now_days", 0)),
    )
    expect = case["expect"]
    assert result.ok is expect["ok"], result.reason
    if result.ok:
        assert result.record == records[expect["matched"]], result.reason
        assert result.depth == expect["depth"], result.reason
        assert result.failure is None
    else:
        assert result.failure is dane.DaneFailure(expect["failure"]), result.reason
        assert result.record is None and result.depth is None
    for text in expect.get("reason", []):
        assert text in result.reason


MATRIX = list(itertools.product((0, 1, 2, 3), (0, 1), (0, 1, 2)))


@pytest.mark.parametrize(
    ("usage", "selector", "mtype"), MATRIX, ids=[f"{u}{s}{m}" for u, s, m in MATRIX]
)
def test_every_usage_selector_and_matching_type(
    usage: int, selector: int, mtype: int, chains: dict[str, Chain]
) -> None:
    """DANE-EE describes the leaf, DANE-TA the CA at the top; PKIX usages are never used."""
    chain = chains["int-leaf+ca"]
    source = "leaf" if usage in (1, 3) else "ca"
    record = chain.record(usage, selector, mtype, source)
    result = dane.verify(chain.sent, [record], names=NAMES, now=now())
    if usage in (2, 3):
        assert result.ok, result.reason
        assert result.record == record
        assert result.depth == (0 if usage == 3 else 2)
    else:
        assert result.failure is dane.DaneFailure.NO_USABLE_RECORDS
    mismatch = chain.record(usage, selector, mtype, "other")
    failed = dane.verify(chain.sent, [mismatch], names=NAMES, now=now())
    assert not failed.ok
    expected = (
        dane.DaneFailure.NOT_MATCHED if usage in (2, 3) else dane.DaneFailure.NO_USABLE_RECORDS
    )
    assert failed.failure is expected, failed.reason


@pytest.mark.parametrize(("selector", "mtype"), list(itertools.product((0, 1), (0, 1, 2))))
@pytest.mark.parametrize("kind", ["self-signed", "expired", "wrong-name", "unknown-ca"])
def test_dane_ee_ignores_what_pkix_would_refuse(
    kind: str, selector: int, mtype: int, chains: dict[str, Chain]
) -> None:
    chain = chains[kind]
    result = dane.verify(
        chain.sent, [chain.record(3, selector, mtype, "leaf")], names=NAMES, now=now()
    )
    assert result.ok and result.depth == 0, result.reason


def test_match_record_certificate_and_spki(chains: dict[str, Chain]) -> None:
    chain = chains["int-leaf+ca"]
    leaf_der = chain.sent[0]
    leaf = chain.certs["leaf"]
    from tests.policy.test_dane_chains import spki

    for selector, mtype in itertools.product((0, 1), (0, 1, 2)):
        record = tlsa(3, selector, mtype, leaf)
        assert dane.match_record(record, leaf_der)
        assert not dane.match_record(record, chain.sent[1])
    assert dane.match_record(tlsa(3, 1, 1, leaf), spki(leaf))  # a bare SPKI, for explain
    assert not dane.match_record(TlsaRecord(3, 2, 1, tlsa(3, 1, 1, leaf).data), leaf_der)
    assert not dane.match_record(TlsaRecord(3, 1, 7, tlsa(3, 1, 1, leaf).data), leaf_der)
    assert not dane.match_record(tlsa(3, 1, 1, leaf), b"junk")


@pytest.mark.parametrize(
    "chain_der",
    [
        [b""],
        [b"\x30"],
        [b"\x30\x80\x00\x00"],
        [b"\x30\x84\xff\xff\xff\xff"],
        [b"\x3f\x01\x00"],
        [bytes(range(256))],
    ],
    ids=["empty", "one byte", "indefinite length", "huge length", "multi-byte tag", "noise"],
)
def test_certificates_that_do_not_parse_are_classified_never_raised(chain_der: list[bytes]) -> None:
    records = [
        TlsaRecord(3, 1, 1, bytes(32)),
        TlsaRecord(2, 0, 1, bytes(32)),
        TlsaRecord(2, 1, 0, b"x"),
    ]
    result = dane.verify(chain_der, records, names=NAMES, now=now())
    assert not result.ok
    assert result.failure is dane.DaneFailure.BAD_CERTIFICATE, result.reason


def test_junk_peer_certificates_never_raise(chains: dict[str, Chain]) -> None:
    good = chains["int-leaf+ca"]
    junk = [b"", b"\x30\x00", b"\x30\x03\x02\x01\x00", good.sent[1][:40], b"\xff" * 300]
    records = [good.record(2, 0, 1, "ca"), good.record(2, 1, 0, "issuer")]
    for position in range(1, 4):
        for piece in junk:
            sent = list(good.sent)
            sent.insert(position, piece)
            result = dane.verify(sent, records, names=NAMES, now=now())
            assert result.ok, result.reason


def test_naive_now_is_utc(chains: dict[str, Chain]) -> None:
    chain = chains["int-leaf+ca"]
    naive = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    result = dane.verify(chain.sent, [chain.record(2, 0, 1, "ca")], names=NAMES, now=naive)
    assert result.ok, result.reason


def test_failures_map_to_tls_report_result_types() -> None:
    """RFC 8460 §4.3: what a TLS report records for each DANE failure."""
    assert {failure: failure.result_type for failure in dane.DaneFailure} == {
        dane.DaneFailure.NO_USABLE_RECORDS: "validation-failure",
        dane.DaneFailure.NO_CERTIFICATE: "validation-failure",
        dane.DaneFailure.BAD_CERTIFICATE: "validation-failure",
        dane.DaneFailure.NOT_MATCHED: "certificate-not-trusted",
        dane.DaneFailure.UNTRUSTED_CHAIN: "certificate-not-trusted",
        dane.DaneFailure.EXPIRED: "certificate-expired",
        dane.DaneFailure.NAME_MISMATCH: "certificate-host-mismatch",
    }
