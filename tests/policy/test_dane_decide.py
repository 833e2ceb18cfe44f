"""The DANE decision for one host, from DNS answers already fetched, as data tables.

`cases/dane_decide.json` holds the decision table (exhaustive over MX, address and TLSA
security, lookup status, `dane` mode and resolver validation) and single cases (CNAMEs,
fallbacks, dropped records, reasons). DANE_CASE=<substring> focuses the single cases.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery.dns.result import DnsResult, Lookup, MxRecord, TlsaRecord
from delivery.policy import dane
from tests.policy.test_dane_chains import parse_record

DATA = json.loads((Path(__file__).parent / "cases" / "dane_decide.json").read_text())
TABLE = DATA["table"]
HOST, DOMAIN = "mx1.example.test", "example.test"
QNAME = "_25._tcp.mx1.example.test."

_STATUS = {
    "answer": Lookup.ANSWER,
    "nodata": Lookup.NODATA,
    "nxdomain": Lookup.NXDOMAIN,
    "tempfail": Lookup.TEMPFAIL,
}


def address_result(kind: str, host: str = HOST) -> DnsResult[str]:
    name = dane_name(host)
    match kind:
        case "secure" | "insecure":
            return DnsResult(Lookup.ANSWER, ("192.0.2.25",), kind == "secure", 300, name, ())
        case "tempfail":
            return DnsResult(Lookup.TEMPFAIL, (), False, 0, name, (), "timeout after 5000 ms")
        case "nxdomain" | "nodata":
            return DnsResult(_STATUS[kind], (), True, 300, name, ())
    raise AssertionError(kind)


def dane_name(host: str) -> str:
    return host.lower().rstrip(".") + "."


def tlsa_result(
    status: str, records: list[TlsaRecord], *, secure: bool, qname: str = QNAME, detail: str = ""
) -> DnsResult[TlsaRecord]:
    if status == "tempfail":
        return DnsResult(Lookup.TEMPFAIL, (), False, 0, qname, (), detail or "SERVFAIL")
    return DnsResult(_STATUS[status], tuple(records), secure, 300, qname, (), detail)


def answer(qname: str, result: DnsResult[TlsaRecord]) -> dane.TlsaAnswer:
    base = qname.removeprefix(dane.TLSA_PREFIX)
    return dane.TlsaAnswer(dane.TlsaQuery(base=base, qname=qname), result)


# ---- the exhaustive table ----------------------------------------------------------------


def combinations() -> list[dict[str, Any]]:
    dimensions = TABLE["dimensions"]
    combos = []
    for values in itertools.product(*dimensions.values()):
        combo = dict(zip(dimensions, values, strict=True))
        if any(_holds(rule, combo) for rule in TABLE["impossible"]):
            continue
        combos.append(combo)
    return combos


def _holds(when: dict[str, Any], combo: dict[str, Any]) -> bool:
    return all(
        combo[key] in (wanted if isinstance(wanted, list) else [wanted])
        for key, wanted in when.items()
    )


def expected(combo: dict[str, Any]) -> dict[str, Any]:
    return next(rule for rule in TABLE["rules"] if _holds(rule["when"], combo))


COMBOS = combinations()


def _combo_id(combo: dict[str, Any]) -> str:
    security = "secure" if combo["tlsa_secure"] else "insecure"
    return (
        f"{combo['mode']}-{'validating' if combo['validating'] else 'nonvalidating'}-"
        f"mx:{combo['mx']}-addr:{combo['address']}-tlsa:{security}-{combo['tlsa']}"
    )


@pytest.mark.parametrize("combo", COMBOS, ids=[_combo_id(c) for c in COMBOS])
def test_decision_table(combo: dict[str, Any]) -> None:
    rule = expected(combo)
    kind = combo["tlsa"]
    records = [parse_record(text) for text in TABLE["tlsa_records"].get(kind, [])]
    status = kind if kind in _STATUS else "answer"
    mx = dane.MxSecurity(combo["mx"])
    address = address_result(combo["address"])
    tlsa = [answer(QNAME, tlsa_result(status, records, secure=combo["tlsa_secure"]))]
    mode = combo["mode"]

    queries = dane.tlsa_queries(
        HOST, mode=mode, mx=mx, address=address, validating=combo["validating"]
    )
    decision = dane.decide(
        HOST,
        mode=mode,
        mx=mx,
        address=address,
        tlsa=tlsa,
        domain=DOMAIN,
        validating=combo["validating"],
    )

    assert decision.outcome is dane.DaneOutcome(rule["outcome"]), decision.reason
    assert [q.qname for q in queries] == ([QNAME] if rule["queries"] else [])
    # Invariants that hold across the whole table.
    assert decision.reason
    assert decision.usable == (decision.outcome is dane.DaneOutcome.REQUIRED)
    if decision.outcome is dane.DaneOutcome.REQUIRED:
        assert decision.records and decision.sni == HOST and HOST in decision.names
    else:
        assert decision.records == ()
    if mode == "require":
        assert decision.outcome in (
            dane.DaneOutcome.REQUIRED,
            dane.DaneOutcome.TEMPFAIL,
            dane.DaneOutcome.PERMFAIL,
        )
    else:
        assert decision.outcome is not dane.DaneOutcome.PERMFAIL


def test_table_rules_are_all_reachable() -> None:
    """Every rule of the table decides some combination: no dead rows."""
    used = {id(expected(combo)) for combo in COMBOS}
    unused = [rule for rule in TABLE["rules"] if id(rule) not in used]
    assert unused == []


# ---- single cases ------------------------------------------------------------------------

CASES = [c for c in DATA["cases"] if os.environ.get("DANE_CASE", "") in c["label"]]


def _records(entry: dict[str, Any]) -> list[TlsaRecord]:
    if "generate" in entry:
        return [parse_record(f"3 1 1 {i:02x}*32") for i in range(entry["generate"])]
    return [parse_record(text) for text in entry["records"]]


@pytest.mark.parametrize("case", CASES, ids=[case["label"] for case in CASES])
def test_decision_case(case: dict[str, Any]) -> None:
    host = case.get("host", HOST)
    spec = case.get("address", {})
    address = DnsResult(
        _STATUS[spec.get("status", "answer")],
        ("192.0.2.25",),
        spec.get("secure", True),
        300,
        spec.get("canonical_name", dane_name(host)),
        tuple(spec.get("cname_chain", ())),
    )
    tlsa = [
        answer(
            entry["qname"],
            tlsa_result(
                entry.get("status", "answer"),
                _records(entry),
                secure=entry.get("secure", True),
                qname=entry["qname"],
                detail=entry.get("detail", ""),
            ),
        )
        for entry in case["tlsa"]
    ]
    options: dict[str, Any] = {
        "mode": case.get("mode", "optional"),
        "mx": dane.MxSecurity(case.get("mx", "secure")),
        "address": address,
        "validating": case.get("validating", True),
    }
    decision = dane.decide(host, tlsa=tlsa, domain=case.get("domain", DOMAIN), **options)
    expect = case["expect"]
    assert decision.outcome is dane.DaneOutcome(expect["outcome"]), decision.reason
    if "queries" in expect:
        assert [q.qname for q in dane.tlsa_queries(host, **options)] == expect["queries"]
    if "sni" in expect:
        assert decision.sni == expect["sni"]
    if "names" in expect:
        assert list(decision.names) == expect["names"]
    if "records" in expect:
        assert list(decision.records) == [parse_record(t) for t in expect["records"]]
    if "dropped" in expect:
        dropped = [(d.record, d.reason) for d in decision.dropped]
        assert [record for record, _ in dropped] == [parse_record(r) for r, _ in expect["dropped"]]
        for (_, reason), (_, wanted) in zip(dropped, expect["dropped"], strict=True):
            assert wanted in reason
    if "record_count" in expect:
        assert len(decision.records) == expect["record_count"]
        assert len(decision.dropped) == expect["dropped_count"]
        assert all("MAX_USABLE_RECORDS" in d.reason for d in decision.dropped)
    for text in expect.get("reason", []):
        assert text in decision.reason


def test_dropped_records_describe_themselves() -> None:
    decision = dane.decide(
        HOST,
        mode="optional",
        mx=dane.MxSecurity.SECURE,
        address=address_result("secure"),
        tlsa=[answer(QNAME, tlsa_result("answer", [parse_record("3 1 1 ab*31")], secure=True))],
        domain=DOMAIN,
    )
    assert [d.describe() for d in decision.dropped] == [
        "TLSA 3 1 1 " + "ab" * 31 + ": SHA-256 association data is 31 bytes, not 32"
    ]


def test_mx_security_of_an_mx_answer() -> None:
    mx = (MxRecord(10, "mx1.example.test."),)
    secure = DnsResult(Lookup.ANSWER, mx, True, 300, "example.test.", ())
    insecure = DnsResult(Lookup.ANSWER, mx, False, 300, "example.test.", ())
    assert dane.mx_security(secure) is dane.MxSecurity.SECURE
    assert dane.mx_security(insecure) is dane.MxSecurity.INSECURE


# ---- hostile input never raises ------------------------------------------------------------

records_strategy = st.lists(
    st.builds(
        TlsaRecord,
        usage=st.integers(0, 255),
        selector=st.integers(0, 255),
        mtype=st.integers(0, 255),
        data=st.binary(max_size=80),
    ),
    max_size=8,
)


@given(
    records=records_strategy,
    status=st.sampled_from(list(Lookup)),
    secure=st.booleans(),
    mode=st.sampled_from(["optional", "require", "disable"]),
)
def test_any_tlsa_answer_gives_a_decision(
    records: list[TlsaRecord], status: Lookup, secure: bool, mode: dane.DaneMode
) -> None:
    result = DnsResult(status, tuple(records), secure, 300, QNAME, ())
    decision = dane.decide(
        HOST,
        mode=mode,
        mx=dane.MxSecurity.SECURE,
        address=address_result("secure"),
        tlsa=[answer(QNAME, result)],
        domain=DOMAIN,
    )
    assert isinstance(decision.outcome, dane.DaneOutcome)
    for record in decision.records:  # what is kept is usable, always
        assert record.usage in (2, 3) and record.selector in (0, 1) and record.mtype in (0, 1, 2)
        assert record.data and (record.mtype == 0 or len(record.data) == 32 * record.mtype)


@given(records=records_strategy, chain=st.lists(st.binary(max_size=200), max_size=4))
def test_any_chain_and_records_give_a_verification(
    records: list[TlsaRecord], chain: list[bytes]
) -> None:
    import datetime

    result = dane.verify(
        chain, records, names=[HOST], now=datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    )
    assert not result.ok
    assert result.failure is not None
