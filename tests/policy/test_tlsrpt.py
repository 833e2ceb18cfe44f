"""TLS-RPT pure core (RFC 8460): TXT records, aggregation, the report, its mail.

The tables are data files (STYLE §13): ``cases/tlsrpt_txt.json`` (the ``_smtp._tls`` record)
and ``cases/tlsrpt_aggregate.json`` (session results -> daily aggregates). The report of a
day of mixed results is checked against ``tlsrpt_schema.json``, written from RFC 8460 §4.4;
the mail is parsed back with the email package, as a report receiver would.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import re
from datetime import UTC, date, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from delivery.dns.result import TlsaRecord
from delivery.policy import dane, mtasts, tlsrpt
from delivery.policy.tlsrpt import (
    FailureDetail,
    PolicyAggregate,
    PolicyDescription,
    PolicyType,
    ResultType,
    SessionResult,
)
from delivery.queue import model

HERE = Path(__file__).parent
CASES = HERE / "cases"
SCHEMA = json.loads((HERE / "tlsrpt_schema.json").read_text(encoding="utf-8"))
DAY = date(2024, 5, 1)
CONTACT = "tlsrpt@mta.example.org"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CASES / name).read_text(encoding="utf-8"))
    return data


def _params(name: str) -> list[Any]:
    return [pytest.param(case, id=case["label"]) for case in _load(name)["cases"]]


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _validate(report: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(
        SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


# ---- TXT record (RFC 8460 §3) ---------------------------------------------------------------


@pytest.mark.parametrize("case", _params("tlsrpt_txt.json"))
def test_txt_record(case: dict[str, Any]) -> None:
    result = tlsrpt.parse_tlsrpt_txt(case["records"])
    assert result.status.value == case["status"], result.reason
    if case["status"] == "found":
        assert result.record is not None and result.reason == ""
        assert [[rua.scheme, rua.target] for rua in result.record.ruas] == case["ruas"]
        notes = " | ".join(result.record.notes)
        for phrase in case.get("notes", []):
            assert phrase in notes
        if not case.get("notes"):
            assert notes == ""
    else:
        assert result.record is None
        assert case["reason"] in result.reason


def test_txt_record_too_long_is_invalid() -> None:
    record = "v=TLSRPTv1; rua=mailto:tls@example.test; x=" + "a" * tlsrpt.TLSRPT_MAX_RECORD_CHARS
    result = tlsrpt.parse_tlsrpt_txt([record])
    assert result.status is tlsrpt.TxtStatus.INVALID
    assert f"more than the {tlsrpt.TLSRPT_MAX_RECORD_CHARS}" in result.reason


def test_txt_reason_quotes_a_hostile_record_shortened() -> None:
    result = tlsrpt.parse_tlsrpt_txt(["v=TLSRPTv1; rua=" + "x" * 500])
    assert result.status is tlsrpt.TxtStatus.INVALID
    assert len(result.reason) < 300


def test_rua_keeps_the_published_uri_as_its_key() -> None:
    result = tlsrpt.parse_tlsrpt_txt(["v=TLSRPTv1; rua=MAILTO:Tls@Example.TEST?subject=x"])
    assert result.record is not None
    [rua] = result.record.ruas
    assert rua.uri == "MAILTO:Tls@Example.TEST?subject=x"


# ---- result model ---------------------------------------------------------------------------


def test_every_mtasts_fetch_problem_maps_to_a_result_type() -> None:
    for problem in mtasts.FetchProblem:
        assert ResultType(problem.tlsrpt_result_type).value.startswith("sts-")


def test_every_dane_failure_maps_to_a_result_type() -> None:
    for failure in dane.DaneFailure:
        ResultType(failure.result_type)  # raises if dane.py drifts from RFC 8460 §4.3


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (10, ResultType.CERTIFICATE_EXPIRED),
        (62, ResultType.CERTIFICATE_HOST_MISMATCH),
        (18, ResultType.CERTIFICATE_NOT_TRUSTED),
        (20, ResultType.CERTIFICATE_NOT_TRUSTED),
        (9, ResultType.VALIDATION_FAILURE),
        (0, ResultType.VALIDATION_FAILURE),
    ],
)
def test_result_type_of_verify_code(code: int, expected: ResultType) -> None:
    assert tlsrpt.result_type_of_verify_code(code) is expected


def test_session_result_needs_a_failure_exactly_when_it_failed() -> None:
    policy = PolicyDescription.no_policy()
    with pytest.raises(ValueError, match="needs a failure detail"):
        SessionResult("example.test", policy, False, None, 0)
    with pytest.raises(ValueError, match="has no failure detail"):
        SessionResult("example.test", policy, True, FailureDetail(ResultType.DANE_REQUIRED), 0)


def test_reports_are_never_about_reports() -> None:
    assert not tlsrpt.reportable(model.MessageSource.REPORT)
    for source in model.MessageSource:
        if source is not model.MessageSource.REPORT:
            assert tlsrpt.reportable(source)


STS_ENFORCE = mtasts.Policy(mtasts.Mode.ENFORCE, ("mx1.example.test", "*.example.test"), 86400)


def _lookup(status: mtasts.LookupStatus, **fields: Any) -> mtasts.PolicyLookup:
    return mtasts.PolicyLookup("example.test", status, **fields)


def test_applied_policy_prefers_dane_then_sts() -> None:
    record = TlsaRecord(3, 1, 1, bytes(32))
    usable = dane.DaneDecision(
        dane.DaneOutcome.REQUIRED, "mx1.example.test.", "", records=(record,)
    )
    not_applicable = dane.DaneDecision(dane.DaneOutcome.NOT_APPLICABLE, "mx1.example.test.", "")
    policy = _lookup(mtasts.LookupStatus.POLICY, policy=STS_ENFORCE, policy_id="1")
    none_mode = _lookup(
        mtasts.LookupStatus.POLICY, policy=mtasts.Policy(mtasts.Mode.NONE, (), 60), policy_id="1"
    )
    unavailable = _lookup(
        mtasts.LookupStatus.UNAVAILABLE, problem=mtasts.FetchProblem.TIMEOUT, reason="slow"
    )

    tlsa = tlsrpt.applied_policy(policy, usable)
    assert tlsa == PolicyDescription(
        PolicyType.TLSA, ("3 1 1 " + "00" * 32,), ("mx1.example.test",)
    )
    assert tlsrpt.applied_policy(policy, not_applicable) == PolicyDescription.sts(STS_ENFORCE)
    assert tlsrpt.applied_policy(none_mode, None) == PolicyDescription.no_policy()
    assert tlsrpt.applied_policy(unavailable, None) == PolicyDescription.sts_unavailable()
    assert tlsrpt.applied_policy(_lookup(mtasts.LookupStatus.NONE), None).policy_type is (
        PolicyType.NO_POLICY_FOUND
    )
    assert tlsrpt.applied_policy(None, None) == PolicyDescription.no_policy()


def test_sts_failure_only_when_no_policy_could_be_obtained() -> None:
    unavailable = _lookup(
        mtasts.LookupStatus.UNAVAILABLE, problem=mtasts.FetchProblem.TLS, reason="bad cert"
    )
    detail = tlsrpt.sts_failure(unavailable, receiving_mx_hostname="mx1.example.test")
    assert detail == FailureDetail(
        ResultType.STS_WEBPKI_INVALID, "mx1.example.test", failure_reason_code="tls"
    )
    cached = _lookup(
        mtasts.LookupStatus.POLICY,
        policy=STS_ENFORCE,
        source=mtasts.Source.CACHE_REFRESH_FAILED,
        problem=mtasts.FetchProblem.TIMEOUT,
    )
    assert tlsrpt.sts_failure(cached) is None


def test_policy_and_detail_round_trip_through_json() -> None:
    policy = PolicyDescription.sts(STS_ENFORCE)
    detail = FailureDetail(
        ResultType.CERTIFICATE_EXPIRED,
        "mx1.example.test",
        "192.0.2.1",
        "198.51.100.1",
        "mx1 ESMTP",
        "https://info.example.org/x",
        "X509_V_ERR 10",
    )
    assert PolicyDescription.from_json(json.loads(policy.key())) == policy
    assert FailureDetail.from_json(json.loads(detail.key())) == detail


def test_failure_detail_strings_are_capped() -> None:
    detail = FailureDetail(ResultType.VALIDATION_FAILURE, failure_reason_code="x" * 10_000)
    assert len(detail.failure_reason_code) == tlsrpt.TLSRPT_MAX_DETAIL_CHARS


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("mx1 ESMTP ready", "mx1 ESMTP ready"),
        ("  padded  ", "padded"),
        ("a\r\nBcc: x@evil.test", "a  Bcc: x@evil.test"),
        ("tab\there\x7f\x00", "tab here"),
        ("\u00e9t\u00e9\u00a0ok\u2028", "\u00e9t\u00e9\u00a0ok"),  # not ASCII: kept but stripped
    ],
)
def test_failure_detail_strings_lose_their_control_characters(given: str, kept: str) -> None:
    detail = FailureDetail(ResultType.VALIDATION_FAILURE, receiving_mx_helo=given)
    assert detail.receiving_mx_helo == kept


# ---- aggregation -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", _params("tlsrpt_aggregate.json"))
def test_aggregate(case: dict[str, Any]) -> None:
    named = _load("tlsrpt_aggregate.json")["policies"]

    def policy(name: str) -> PolicyDescription:
        return PolicyDescription.from_json(named[name])

    results = [
        SessionResult(
            item["domain"],
            policy(item["policy"]),
            item["failure"] is None,
            None if item["failure"] is None else FailureDetail.from_json(item["failure"]),
            _ms(item["at"]),
        )
        for item in case["results"]
    ]
    got = {
        f"{domain} {day.isoformat()}": [
            {
                "policy": item.policy.to_json(),
                "successes": item.successes,
                "failures": item.failures,
                "details": [[detail.to_json(), count] for detail, count in item.details],
            }
            for item in aggregates
        ]
        for (domain, day), aggregates in tlsrpt.aggregate(results).items()
    }
    expected = {
        key: [{**entry, "policy": named[entry["policy"]]} for entry in entries]
        for key, entries in case["expect"].items()
    }
    assert got == expected


def test_merge_adds_the_same_policy_up() -> None:
    policy = PolicyDescription.no_policy()
    detail = FailureDetail(ResultType.STARTTLS_NOT_SUPPORTED, "mx.example.test")
    merged = tlsrpt.merge(
        [
            PolicyAggregate(policy, 1, 1, ((detail, 1),)),
            PolicyAggregate(policy, 2, 3, ((detail, 3),)),
        ]
    )
    assert merged == [PolicyAggregate(policy, 3, 4, ((detail, 4),))]


# ---- the report of a day of mixed results (RFC 8460 §4.4) ------------------------------------


def _mixed_day() -> list[SessionResult]:
    """Successes, an STS fetch error, a DANE mismatch, an expired certificate, no STARTTLS."""
    sts = PolicyDescription.sts(STS_ENFORCE)
    tlsa_record = TlsaRecord(3, 1, 1, bytes.fromhex("ab" * 32))
    tlsa = PolicyDescription.tlsa([tlsa_record], "mx3.example.test")
    at = _ms("2024-05-01T12:00:00Z")
    where = {"sending_mta_ip": "198.51.100.7"}
    unavailable = _lookup(
        mtasts.LookupStatus.UNAVAILABLE, problem=mtasts.FetchProblem.TIMEOUT, reason="slow"
    )
    fetch_error = tlsrpt.sts_failure(
        unavailable, receiving_mx_hostname="mx1.example.test", receiving_ip="192.0.2.1", **where
    )
    assert fetch_error is not None
    return [
        *(SessionResult("example.test", sts, True, None, at + i) for i in range(5)),
        SessionResult("example.test", tlsa, True, None, at),
        SessionResult("example.test", PolicyDescription.sts_unavailable(), False, fetch_error, at),
        SessionResult(
            "example.test",
            tlsa,
            False,
            FailureDetail(
                ResultType(dane.DaneFailure.NOT_MATCHED.result_type),
                "mx3.example.test",
                "192.0.2.3",
                receiving_mx_helo="mx3.example.test ESMTP",
                failure_reason_code="no TLSA record matches the certificate chain",
                **where,
            ),
            at,
        ),
        *(
            SessionResult(
                "example.test",
                sts,
                False,
                FailureDetail(
                    tlsrpt.result_type_of_verify_code(10),
                    "mx1.example.test",
                    "192.0.2.1",
                    failure_reason_code="certificate has expired",
                    **where,
                ),
                at,
            )
            for _ in range(2)
        ),
        SessionResult(
            "example.test",
            sts,
            False,
            FailureDetail(
                ResultType.STARTTLS_NOT_SUPPORTED, "mx2.example.test", "192.0.2.2", **where
            ),
            at,
        ),
    ]


def _mixed_report(report_id: str = "20240501.example.test.abc@mta.example.org") -> dict[str, Any]:
    [(key, aggregates)] = tlsrpt.aggregate(_mixed_day()).items()
    assert key == ("example.test", DAY)
    return tlsrpt.build_report(
        "example.test",
        DAY,
        aggregates,
        organization_name="Example Org",
        contact_info=CONTACT,
        report_id=report_id,
    )


def _entry(report: dict[str, Any], **policy: Any) -> dict[str, Any]:
    matches = [
        entry
        for entry in report["policies"]
        if all(entry["policy"].get(k.replace("_", "-")) == v for k, v in policy.items())
    ]
    assert len(matches) == 1, matches
    entry: dict[str, Any] = matches[0]
    return entry


def test_mixed_day_report_has_the_right_counts_and_details() -> None:
    report = _mixed_report()
    assert report["organization-name"] == "Example Org"
    assert report["contact-info"] == CONTACT
    assert report["report-id"] == "20240501.example.test.abc@mta.example.org"
    assert report["date-range"] == {
        "start-datetime": "2024-05-01T00:00:00Z",
        "end-datetime": "2024-05-01T23:59:59Z",
    }
    assert len(report["policies"]) == 3

    sts = _entry(report, policy_type="sts", mx_host=["mx1.example.test", "*.example.test"])
    assert sts["policy"] == {
        "policy-type": "sts",
        "policy-string": [
            "version: STSv1",
            "mode: enforce",
            "mx: mx1.example.test",
            "mx: *.example.test",
            "max_age: 86400",
        ],
        "policy-domain": "example.test",
        "mx-host": ["mx1.example.test", "*.example.test"],
    }
    assert sts["summary"] == {
        "total-successful-session-count": 5,
        "total-failure-session-count": 3,
    }
    assert sts["failure-details"] == [
        {
            "result-type": "certificate-expired",
            "sending-mta-ip": "198.51.100.7",
            "receiving-mx-hostname": "mx1.example.test",
            "receiving-ip": "192.0.2.1",
            "failure-reason-code": "certificate has expired",
            "failed-session-count": 2,
        },
        {
            "result-type": "starttls-not-supported",
            "sending-mta-ip": "198.51.100.7",
            "receiving-mx-hostname": "mx2.example.test",
            "receiving-ip": "192.0.2.2",
            "failed-session-count": 1,
        },
    ]

    fetch = _entry(report, policy_type="sts", mx_host=None)
    assert fetch["policy"] == {"policy-type": "sts", "policy-domain": "example.test"}
    assert fetch["summary"] == {
        "total-successful-session-count": 0,
        "total-failure-session-count": 1,
    }
    assert fetch["failure-details"] == [
        {
            "result-type": "sts-policy-fetch-error",
            "sending-mta-ip": "198.51.100.7",
            "receiving-mx-hostname": "mx1.example.test",
            "receiving-ip": "192.0.2.1",
            "failure-reason-code": "timeout",
            "failed-session-count": 1,
        }
    ]

    tlsa = _entry(report, policy_type="tlsa")
    assert tlsa["policy"] == {
        "policy-type": "tlsa",
        "policy-string": ["3 1 1 " + "AB" * 32],
        "policy-domain": "example.test",
        "mx-host": ["mx3.example.test"],
    }
    assert tlsa["summary"] == {
        "total-successful-session-count": 1,
        "total-failure-session-count": 1,
    }
    assert tlsa["failure-details"] == [
        {
            "result-type": "certificate-not-trusted",
            "sending-mta-ip": "198.51.100.7",
            "receiving-mx-hostname": "mx3.example.test",
            "receiving-mx-helo": "mx3.example.test ESMTP",
            "receiving-ip": "192.0.2.3",
            "failure-reason-code": "no TLSA record matches the certificate chain",
            "failed-session-count": 1,
        }
    ]
    for entry in report["policies"]:
        failed = sum(d["failed-session-count"] for d in entry.get("failure-details", []))
        assert failed == entry["summary"]["total-failure-session-count"]


def test_mixed_day_report_validates_against_the_rfc_8460_schema() -> None:
    report = _mixed_report()
    _validate(report)
    _validate(json.loads(json.dumps(report)))  # as serialized


def test_schema_refuses_what_the_rfc_does_not_allow() -> None:
    report = _mixed_report()
    broken = json.loads(json.dumps(report))
    broken["policies"][0]["failure-details"][0]["result-type"] = "certificate-revoked"
    with pytest.raises(AssertionError, match="is not one of"):
        _validate(broken)
    broken = json.loads(json.dumps(report))
    del broken["date-range"]["end-datetime"]
    with pytest.raises(AssertionError, match="end-datetime"):
        _validate(broken)


def test_report_json_is_gzipped_and_reads_back() -> None:
    report = _mixed_report()
    data = tlsrpt.encode_report(report)
    assert data[:2] == b"\x1f\x8b"
    assert json.loads(gzip.decompress(data)) == report
    assert tlsrpt.decode_report(data) == report
    assert tlsrpt.encode_report(report) == data  # stable: a retry sends the same bytes


def test_decode_report_refuses_what_is_not_a_report() -> None:
    with pytest.raises(ValueError, match="not a gzipped report"):
        tlsrpt.decode_report(b"{}")
    with pytest.raises(ValueError, match="not a JSON object"):
        tlsrpt.decode_report(gzip.compress(b"[]"))


def test_build_report_refuses_what_cannot_be_reported() -> None:
    aggregates = [PolicyAggregate(PolicyDescription.no_policy(), 1)]
    common: dict[str, Any] = {"organization_name": "o", "report_id": "r"}
    with pytest.raises(ValueError, match="nothing to report"):
        tlsrpt.build_report("example.test", DAY, [], contact_info=CONTACT, **common)
    with pytest.raises(ValueError, match="contact-info"):
        tlsrpt.build_report("example.test", DAY, aggregates, contact_info="nobody", **common)
    with pytest.raises(ValueError, match="not a domain name"):
        tlsrpt.build_report("bad domain\r\n", DAY, aggregates, contact_info=CONTACT, **common)


def test_report_folds_failure_details_past_the_cap() -> None:
    policy = PolicyDescription.no_policy()
    cap = tlsrpt.TLSRPT_MAX_FAILURE_DETAILS
    details = tuple(
        (
            FailureDetail(
                ResultType.STARTTLS_NOT_SUPPORTED, receiving_ip=f"10.0.{i // 256}.{i % 256}"
            ),
            1,
        )
        for i in range(cap + 50)
    )
    aggregate = PolicyAggregate(policy, 0, len(details), details)
    report = tlsrpt.build_report(
        "example.test", DAY, [aggregate], organization_name="o", contact_info=CONTACT, report_id="r"
    )
    [entry] = report["policies"]
    listed = entry["failure-details"]
    assert len(listed) <= cap
    assert sum(d["failed-session-count"] for d in listed) == cap + 50
    assert {"result-type": "starttls-not-supported"} in [
        {k: v for k, v in d.items() if k != "failed-session-count"} for d in listed
    ]
    _validate(report)


def test_report_ids_are_unique_and_fit_a_subject() -> None:
    ids = {tlsrpt.make_report_id("Example.test.", DAY, "mta.example.org") for _ in range(100)}
    assert len(ids) == 100
    for rid in ids:
        assert re.fullmatch(r"[A-Za-z0-9.-]+@mta\.example\.org", rid)


# ---- the mail (RFC 8460 §5.3) ---------------------------------------------------------------


def _parse(mail: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(mail, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_report_mail_parses_back() -> None:
    report = _mixed_report()
    now = _ms("2024-05-02T00:20:00Z")
    mail = tlsrpt.build_report_mail(
        report,
        to="tls@example.test",
        reporting_mta="mta.example.org",
        from_address="tlsrpt-noreply@mta.example.org",
        now=now,
    )
    assert mail.isascii()
    assert b"\r\n" in mail and b"\n" not in mail.replace(b"\r\n", b"")
    assert max(len(line) for line in mail.split(b"\r\n")) <= 998

    parsed = _parse(mail)
    assert parsed["From"] == "tlsrpt-noreply@mta.example.org"
    assert parsed["To"] == "tls@example.test"
    assert parsed["TLS-Report-Domain"] == "example.test"
    assert parsed["TLS-Report-Submitter"] == "mta.example.org"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Message-ID"].endswith("@mta.example.org>")
    assert " ".join(parsed["Subject"].split()) == (
        "Report Domain: example.test Submitter: mta.example.org "
        "Report-ID: <20240501.example.test.abc@mta.example.org>"
    )
    assert email.utils.parsedate_to_datetime(parsed["Date"]) == datetime(
        2024, 5, 2, 0, 20, tzinfo=UTC
    )
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "tlsrpt"

    text, attachment = parsed.iter_parts()
    assert text.get_content_type() == "text/plain"
    body = text.get_content()
    assert "example.test" in body and "5 successful, 3 failed" not in body
    assert "6 successful, 5 failed" in body
    assert attachment.get_content_type() == "application/tlsrpt+gzip"
    assert attachment.get_content_disposition() == "attachment"
    assert attachment["Content-Transfer-Encoding"] == "base64"
    name = attachment.get_filename()
    assert name is not None
    match = re.fullmatch(
        r"mta\.example\.org!example\.test!(\d+)!(\d+)!([A-Za-z0-9]+)\.json\.gz", name
    )
    assert match, name
    assert (int(match[1]), int(match[2])) == tlsrpt.day_range_s(DAY)
    assert json.loads(gzip.decompress(attachment.get_content())) == report


def test_report_mail_file_name_is_stable_for_one_report() -> None:
    report = _mixed_report()
    assert tlsrpt.report_file_name(report) == tlsrpt.report_file_name(
        json.loads(json.dumps(report))
    )
    other = _mixed_report(report_id="another@mta.example.org")
    assert tlsrpt.report_file_name(report) != tlsrpt.report_file_name(other)


def test_report_mail_refuses_header_injection() -> None:
    report = _mixed_report()
    with pytest.raises(ValueError, match="not an ASCII mail address"):
        tlsrpt.build_report_mail(
            report,
            to="a@example.test\r\nBcc: x@evil.test",
            reporting_mta="mta.example.org",
            from_address="f@mta.example.org",
            now=0,
        )
