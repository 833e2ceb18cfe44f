"""MTA-STS pure core: TXT record, policy parser, MX matcher and decision, as tables.

The tables are data files (STYLE §13): ``cases/mtasts_txt.json``, ``mtasts_policy.json``,
``mtasts_mx.json`` and ``mtasts_decide.json``. Inputs JSON cannot carry (raw bytes, sizes
around the caps) are tables here, and one property test runs the parsers on anything.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery.errors import LastError
from delivery.policy import mtasts
from delivery.policy.mtasts import (
    MTA_STS_MAX_LINE_BYTES,
    MTA_STS_MAX_POLICY_BYTES,
    Action,
    FetchProblem,
    LookupStatus,
    Mode,
    Policy,
    PolicyError,
    PolicyLookup,
    Source,
    TxtStatus,
)

CASES = Path(__file__).parent / "cases"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CASES / name).read_text(encoding="utf-8"))
    return data


def _params(name: str) -> list[Any]:
    return [pytest.param(case, id=case["label"]) for case in _load(name)["cases"]]


# ---- TXT record ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _params("mtasts_txt.json"))
def test_txt_record(case: dict[str, Any]) -> None:
    result = mtasts.parse_txt(case["records"])
    assert result.status is TxtStatus(case["status"])
    if result.status is TxtStatus.FOUND:
        assert result.policy_id == case["id"]
        assert result.reason == ""
    else:
        assert result.policy_id == ""
        assert case["reason"] in result.reason


# ---- policy -------------------------------------------------------------------------------


def _many_mx(count: int) -> str:
    lines = ["version: STSv1", "mode: enforce"]
    lines += [f"mx: mx{n}.example.test" for n in range(count)]
    return "\r\n".join([*lines, "max_age: 86400", ""])


@pytest.mark.parametrize("case", _params("mtasts_policy.json"))
def test_policy(case: dict[str, Any]) -> None:
    body = case["body"] if "body" in case else _many_mx(case["body_mx_count"])
    result = mtasts.parse_policy(body.encode("utf-8"))
    if "error" in case:
        assert isinstance(result, PolicyError), result
        assert result.line == case["error"]["line"]
        assert case["error"]["reason"] in result.reason
        if result.line is not None:
            assert str(result).startswith(f"line {result.line}: ")
        return
    assert isinstance(result, Policy), str(result)
    if "policy_mx_count" in case:
        assert len(result.mx) == case["policy_mx_count"]
        return
    expected = case["policy"]
    assert result.mode is Mode(expected["mode"])
    assert list(result.mx) == expected["mx"]
    assert result.max_age_s == expected["max_age"]
    assert list(result.notes) == expected.get("notes", [])


def _padded(total: int) -> bytes:
    """A valid policy padded with an extension line to exactly ``total`` bytes."""
    head = b"version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n"
    filler = total - len(head) - len(b"x: \r\n")
    lines = []
    while filler > 0:
        take = min(filler, MTA_STS_MAX_LINE_BYTES - 3 - 5)  # room for "x: " and a next line
        lines.append(b"x: " + b"y" * take + b"\r\n")
        filler -= take + 5
    body = head + b"".join(lines)
    return body + b"z" * (total - len(body))  # the last line, unterminated, ends the body


_NOISE = random.Random(8461).randbytes(4096)

HOSTILE = [  # (label, body, line of the error or None, phrase of the reason)
    ("a body over the cap", _padded(MTA_STS_MAX_POLICY_BYTES + 1), None, "65537 bytes, more"),
    ("ten megabytes", b"version: STSv1\n" * 700_000, None, "more than the 65536"),
    ("random bytes", _NOISE, 1, ""),
    ("an endless first line", b"version: STSv1" + b"x" * 60_000, 1, "longer than 1024 bytes"),
    ("an endless line later", b"version: STSv1\nx: " + b"y" * 5_000 + b"\n", 2, "longer than"),
    ("a line one byte too long", b"x: " + b"y" * (MTA_STS_MAX_LINE_BYTES - 2), 1, "longer than"),
    ("only NUL bytes", b"\x00" * 1000, 1, "control character U+0000 at column 1"),
    ("NUL in a value", b"version: STSv1\nmode: enforce\x00\n", 2, "U+0000 at column 14"),
    ("invalid UTF-8", b"version: STSv1\nmode: \xff\xfe\n", 2, "not UTF-8 (byte 7 of the line)"),
    ("an overlong UTF-8 encoding", b"version: STSv1\nx: \xc0\xaf\n", 2, "not UTF-8"),
    ("an encoded surrogate", b"version: STSv1\nx: \xed\xa0\x80\n", 2, "not UTF-8"),
    ("a truncated UTF-8 sequence", b"version: STSv1\nx: caf\xc3", 2, "not UTF-8 (byte 7"),
    ("Latin-1 text", "x: café\nversion: STSv1\n".encode("latin-1"), 1, "not UTF-8"),
    ("UTF-16", "version: STSv1\r\n".encode("utf-16"), 1, "not UTF-8"),
    ("an HTML page", b"<!DOCTYPE html>\n<html><body>Not here</body></html>\n", 1, "no ':'"),
    ("a gzip stream", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", 1, ""),
    ("64 KiB of newlines", b"\n" * MTA_STS_MAX_POLICY_BYTES, None, "no 'version' field"),
]


@pytest.mark.parametrize(("label", "body", "line", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_policy_bodies_are_clear_errors(
    label: str, body: bytes, line: int | None, reason: str
) -> None:
    result = mtasts.parse_policy(body)
    assert isinstance(result, PolicyError), label
    assert result.line == line
    assert reason in result.reason
    assert len(str(result)) < 300  # hostile text is shortened in messages


def test_the_caps_themselves_are_allowed() -> None:
    at_cap = _padded(MTA_STS_MAX_POLICY_BYTES)
    assert len(at_cap) == MTA_STS_MAX_POLICY_BYTES
    assert isinstance(mtasts.parse_policy(at_cap), Policy)
    longest = b"x: " + b"y" * (MTA_STS_MAX_LINE_BYTES - 3)
    body = b"version: STSv1\r\nmode: none\r\nmax_age: 1\r\n" + longest + b"\r\n"
    assert isinstance(mtasts.parse_policy(body), Policy)


def test_a_field_repeated_thousands_of_times_gives_one_note() -> None:
    body = b"version: STSv1\nmode: none\nmax_age: 1\n" + b"mode: enforce\n" * 4000
    result = mtasts.parse_policy(body)
    assert isinstance(result, Policy)
    assert result.mode is Mode.NONE
    assert result.notes == (
        "line 4: 'mode' repeated; the first, on line 2, applies (RFC 8461 §3.2)",
    )


@given(st.binary(max_size=2048))
def test_any_bytes_give_a_policy_or_an_error(body: bytes) -> None:
    assert isinstance(mtasts.parse_policy(body), Policy | PolicyError)


@given(st.lists(st.text(max_size=80), max_size=4))
def test_any_txt_records_give_a_result(records: list[str]) -> None:
    result = mtasts.parse_txt(records)
    assert (result.status is TxtStatus.FOUND) == bool(result.policy_id)
    assert (result.status is TxtStatus.FOUND) != bool(result.reason)


@given(st.text(max_size=40), st.text(max_size=40))
def test_matching_never_fails(pattern: str, host: str) -> None:
    assert isinstance(mtasts.mx_matches(pattern, host), bool)


# ---- MX matching --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    _load("mtasts_mx.json")["cases"],
    ids=lambda value: repr(value) if isinstance(value, str) else str(value),
)
def test_mx_matches(pattern: str, host: str, expected: bool) -> None:
    assert mtasts.mx_matches(pattern, host) is expected


def test_policy_matches_any_of_its_patterns() -> None:
    policy = Policy(Mode.ENFORCE, ("mx1.example.test", "*.backup.example.test"), 60)
    assert policy.matches("MX1.example.test.")
    assert policy.matches("b2.backup.example.test")
    assert not policy.matches("backup.example.test")
    assert not Policy(Mode.NONE, (), 60).matches("mx1.example.test")


# ---- the decision -------------------------------------------------------------------------

DOMAIN = "example.test"
UNAVAILABLE_REASON = (
    f"the MTA-STS policy of {DOMAIN} was not fetched from https://mta-sts.{DOMAIN}"
    "/.well-known/mta-sts.txt: the server answered 404 Not Found, not 200"
)


def _lookup(kind: str | None) -> PolicyLookup | None:
    mx = tuple(_load("mtasts_decide.json")["policy_mx"])
    match kind:
        case None:
            return None
        case "none":
            return PolicyLookup(
                DOMAIN, LookupStatus.NONE, reason=f"_mta-sts.{DOMAIN}: no TXT record"
            )
        case "unavailable":
            return PolicyLookup(
                DOMAIN,
                LookupStatus.UNAVAILABLE,
                reason=UNAVAILABLE_REASON,
                problem=FetchProblem.STATUS,
            )
        case "none-mode":
            policy = Policy(Mode.NONE, (), 86400)
        case _:
            policy = Policy(Mode(kind), mx, 86400)
    return PolicyLookup(DOMAIN, LookupStatus.POLICY, policy, "id1", Source.FETCH)


@pytest.mark.parametrize("case", _params("mtasts_decide.json"))
def test_decision_table(case: dict[str, Any]) -> None:
    lookup = _lookup(case["lookup"])
    verdict = mtasts.decide(lookup, case["host"], case["strategy"])
    assert verdict.mx_host == case["host"].lower().rstrip(".")
    assert verdict.lookup is lookup
    actual = {
        "action": verdict.action.value,
        "usable": verdict.usable,
        "tls_required": verdict.tls_required,
        "permanent": verdict.permanent,
        "kind": verdict.kind.value if verdict.kind else None,
        "mx_listed": verdict.mx_listed,
        "reason": verdict.reason,
    }
    for key, expected in case["expect"].items():
        if key == "reason":
            assert expected in verdict.reason, verdict.reason
        else:
            assert actual[key] == expected, key


def test_every_action_is_in_the_decision_table() -> None:
    seen = {case["expect"]["action"] for case in _load("mtasts_decide.json")["cases"]}
    assert seen == {action.value for action in Action}


def test_only_disable_may_skip_the_lookup() -> None:
    with pytest.raises(ValueError, match="needs the domain's MTA-STS lookup"):
        mtasts.decide(None, "mx1.example.test", "optional")


def test_screening_drops_unlisted_hosts_and_says_why() -> None:
    screening = mtasts.screen_mx(
        _lookup("enforce"),
        ["mx9.example.test", "mx1.example.test", "b.backup.example.test"],
        "optional",
    )
    assert screening.usable == ("mx1.example.test", "b.backup.example.test")
    assert [v.mx_host for v in screening.excluded] == ["mx9.example.test"]
    assert screening.excluded[0].kind is LastError.MTA_STS
    assert screening.failure is None
    assert all(v.tls_required for v in screening.verdicts if v.usable)
    assert screening.explain()[0].startswith("mx9.example.test: exclude-host: mx9.example.test")


def test_screening_with_no_listed_host_defers_the_domain() -> None:
    screening = mtasts.screen_mx(
        _lookup("enforce"), ["mx8.example.test", "mx9.example.test"], "optional"
    )
    assert screening.usable == ()
    failure = screening.failure
    assert failure is not None
    assert failure.action is Action.DEFER and not failure.permanent
    assert failure.kind is LastError.MTA_STS
    assert failure.mx_host == ""
    assert "no MX host of example.test (mx8.example.test, mx9.example.test) is listed" in (
        failure.reason
    )
    assert screening.explain()[-1].startswith("domain: defer: ")


@pytest.mark.parametrize(
    ("lookup", "strategy", "action"),
    [
        ("none", "require", Action.FAIL),
        ("none-mode", "require", Action.FAIL),
        ("unavailable", "require", Action.DEFER),
    ],
)
def test_screening_fails_the_domain_when_a_required_policy_is_missing(
    lookup: str, strategy: mtasts.StsStrategy, action: Action
) -> None:
    screening = mtasts.screen_mx(_lookup(lookup), ["mx1.example.test"], strategy)
    assert screening.usable == ()
    assert screening.failure is not None and screening.failure.action is action
    assert screening.failure.permanent is (action is Action.FAIL)


@pytest.mark.parametrize(
    ("lookup", "strategy"),
    [
        ("enforce", "disable"),
        ("none", "optional"),
        ("unavailable", "optional"),
        ("testing", "optional"),
    ],
)
def test_screening_keeps_every_host_when_nothing_excludes_them(
    lookup: str, strategy: mtasts.StsStrategy
) -> None:
    hosts = ["mx9.example.test", "mx1.example.test"]
    screening = mtasts.screen_mx(_lookup(lookup), hosts, strategy)
    assert screening.usable == tuple(hosts)
    assert screening.failure is None


# ---- lookup values ------------------------------------------------------------------------


def test_lookup_sources_read_as_the_operator_expects() -> None:
    policy = Policy(Mode.ENFORCE, ("mx1.example.test",), 86400)
    fetched = PolicyLookup(DOMAIN, LookupStatus.POLICY, policy, "abc", Source.FETCH)
    cached = PolicyLookup(DOMAIN, LookupStatus.POLICY, policy, "abc", Source.CACHE)
    stale = PolicyLookup(
        DOMAIN,
        LookupStatus.POLICY,
        policy,
        "abc",
        Source.CACHE_REFRESH_FAILED,
        reason="the TXT lookup of _mta-sts.example.test failed: SERVFAIL",
        problem=FetchProblem.TXT_TEMPFAIL,
    )
    assert [fetched.source_text, cached.source_text] == ["fetch", "cache"]
    assert stale.source_text == (
        "cache (refresh failed: the TXT lookup of _mta-sts.example.test failed: SERVFAIL)"
    )
    assert fetched.describe() == (
        "MTA-STS policy of example.test (id abc, from fetch): mode enforce, mx mx1.example.test,"
        " max_age 86400 s"
    )
    none = _lookup("none")
    assert none is not None and none.source_text == ""
    assert (
        none.describe()
        == "no MTA-STS policy for example.test: _mta-sts.example.test: no TXT record"
    )


@pytest.mark.parametrize(
    ("problem", "result_type"),
    [
        (FetchProblem.TLS, "sts-webpki-invalid"),
        (FetchProblem.INVALID_POLICY, "sts-policy-invalid"),
        *[
            (problem, "sts-policy-fetch-error")
            for problem in FetchProblem
            if problem not in (FetchProblem.TLS, FetchProblem.INVALID_POLICY)
        ],
    ],
)
def test_fetch_problems_map_to_tls_report_result_types(
    problem: FetchProblem, result_type: str
) -> None:
    assert problem.tlsrpt_result_type == result_type
