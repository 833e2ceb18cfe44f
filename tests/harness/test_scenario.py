"""Scenario files: what they declare, and errors that name the file, table and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from delivery.errors import ConfigError
from delivery.harness import scenario
from delivery.harness.mtasts_server import format_policy, format_txt
from delivery.harness.smtp_script import Extensions, RcptRule, Reply, Step

SCENARIOS = Path(__file__).parents[2] / "fixtures" / "scenarios"
A = '[domains."a.test"]\n'
MX = '[[domains."a.test".mx]]\nname = "mx1.a.test"\n'
D = 'domains."a.test"'
MX0 = f"{D}.mx[0]"
R = f"{MX0}.replies"
STS = f"{D}.mta_sts"

ERROR_CASES = [  # (label, scenario text, table, key, words of the reason)
    ("not TOML", "domains = [", "", None, "not valid TOML"),
    ("no domains", 'description = "x"', "", "domains", "is required"),
    ("domains not a table", "domains = 3", "", "domains", "must be a table, not an integer"),
    ("unknown top-level key", "x = 1\n" + A, "", "x", "unknown key"),
    ("bad domain name", '[domains."a..test"]', "domains", "a..test", "not a domain name"),
    ("bad dnssec", A + 'dnssec = "maybe"', D, "dnssec", "secure, insecure, bogus"),
    ("mx not tables", A + "mx = 3", D, "mx", "array of tables"),
    ("mx without name", '[[domains."a.test".mx]]\ntls = "none"', MX0, "name", "is required"),
    ("bad TLS mode", MX + 'tls = "expird"', MX0, "tls", "expected one of none, broken, valid"),
    ("preference too big", MX + "preference = 70000", MX0, "preference", "0..65535"),
    ("preference not a number", MX + 'preference = "10"', MX0, "preference", "must be an integer"),
    ("address not loopback", MX + 'ip = "10.0.0.1"', MX0, "ip", "not in 127.0.0.0/8"),
    ("address not an IP", MX + 'ip = "mx.test"', MX0, "ip", "not an IP address"),
    ("unknown MX key", MX + "tsl = 1", MX0, "tsl", "unknown key; expected one of"),
    ("bad reply", MX + 'replies = { mail = "hello" }', R, "mail", "not a reply"),
    ("unknown stage", MX + 'replies = { helo = "250 x" }', R, "helo", "unknown key"),
    ("huge delay", MX + "replies = { mail = { delay = 1e9 } }", f"{R}.mail", "delay", "seconds"),
    ("bad step", MX + "replies = { mail = 3 }", R, "mail", "reply"),
    ("bad step key", MX + "replies = { mail = { wait = 3 } }", f"{R}.mail", "wait", "unknown key"),
    (
        "bad rcpt step",
        MX + 'replies = { rcpt = { "*@x" = "oops" } }',
        f"{R}.rcpt",
        "*@x",
        "not a reply",
    ),
    ("short TLSA", MX + 'tlsa = ["3 1"]', MX0, "tlsa", "usage selector mtype"),
    ("TLSA matching type", MX + 'tlsa = ["3 1 9"]', MX0, "tlsa", "matching type 9"),
    ("TLSA origin", MX + 'tlsa = ["3 1 1 root"]', MX0, "tlsa", "leaf, issuer, ca, mismatch"),
    ("TLSA not strings", MX + "tlsa = [311]", MX0, "tlsa", "array of strings"),
    (
        "unknown extension",
        MX + "advertise = { pipeline = true }",
        f"{MX0}.advertise",
        "pipeline",
        "unknown key",
    ),
    ("bad size", MX + "advertise = { size = 0 }", f"{MX0}.advertise", "size", "must be >= 1"),
    ("STS mode", A + 'mta_sts = { mode = "strict" }', STS, "mode", "enforce, testing, none"),
    ("STS id", A + 'mta_sts = { id = "no spaces!" }', STS, "id", "1-32 letters and digits"),
    ("STS max_age", A + "mta_sts = { max_age = 99999999 }", STS, "max_age", "0..31557600"),
    ("STS txt", A + "mta_sts = { txt = 3 }", STS, "txt", "true, false or the TXT text"),
    ("STS cert", A + 'mta_sts = { cert = "none" }', STS, "cert", "expected one of valid"),
    ("STS status", A + "mta_sts = { status = 99 }", STS, "status", "100..599"),
    (
        "bad fault",
        A + 'faults = { "a.test" = "crash" }',
        f"{D}.faults",
        "a.test",
        "servfail, timeout, nxdomain",
    ),
    (
        "fault out of zone",
        A + 'faults = { "b.test" = "timeout" }',
        D,
        "faults",
        "b.test is in no zone",
    ),
    (
        "record out of zone",
        A + 'records = [{ name = "b.test", type = "A", value = "127.0.0.1" }]',
        D,
        "records",
        "in no zone",
    ),
    (
        "record without type",
        A + 'records = [{ name = "a.test", value = "x" }]',
        f"{D}.records[0]",
        "type",
        "is required",
    ),
    (
        "record rdata",
        A + 'records = [{ name = "a.test", type = "MX", value = "ten mx.a.test." }]',
        f"{D}.records[0]",
        "value",
        "bad record",
    ),
    ("null MX and MX hosts", A + "null_mx = true\n" + MX, D, "null_mx", "cannot have other MX"),
    ("MX listed twice", MX + MX, D, "mx", "twice"),
    ("implicit MX elsewhere", MX + "implicit = true", D, "mx", "must be named a.test"),
    (
        "host described twice",
        MX + 'tls = "none"\n[[domains."b.test".mx]]\nname = "mx1.a.test"\ntls = "valid"\n',
        'domains."b.test".mx[0]',
        None,
        'already described at [domains."a.test".mx[0]]',
    ),
    (
        "address used twice",
        MX + 'ip = "127.3.0.2"\n[[domains."a.test".mx]]\nname = "mx2.a.test"\nip = "127.3.0.2"\n',
        'domains."a.test".mx[1]',
        "ip",
        "also the address of mx1.a.test",
    ),
]


@pytest.mark.parametrize(
    ("label", "text", "table", "key", "reason"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES]
)
def test_errors_name_the_table_and_key(
    label: str, text: str, table: str, key: str | None, reason: str
) -> None:
    with pytest.raises(scenario.ScenarioError) as raised:
        scenario.parse(text, source="case.toml")
    error = raised.value
    assert (error.source, error.table, error.key) == ("case.toml", table, key)
    assert reason in error.reason
    assert str(error).startswith("case.toml: ")
    assert isinstance(error, ConfigError)


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text(MX + 'tls = "expird"\n')
    with pytest.raises(scenario.ScenarioError) as raised:
        scenario.load(path)
    assert str(raised.value).startswith(f"{path}: [{MX0}] tls: is 'expird'; expected one of")


def test_an_unreadable_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(scenario.ScenarioError, match="cannot read"):
        scenario.load(tmp_path / "missing.toml")


FULL = """
name = "full"
description = "everything at once"

[domains."example.test"]
dnssec = "secure"
tlsrpt = "mailto:tls@example.test"
faults = { "mx2.example.test." = "timeout" }
records = [{ name = "example.test", type = "TXT", value = "v=spf1 -all", ttl = 60 }]

[[domains."example.test".mx]]
name = "MX1.example.test."
ip = "127.3.0.9"
tls = "self-signed"
tlsa = ["3 1 1", "2 0 2 ca", "3 0 0 mismatch"]
advertise = { pipelining = false, size = false, chunking = true, "8bitmime" = false }

[domains."example.test".mx.replies]
greeting = { delay = 0.5 }
mail = "451 4.3.0 later"
rcpt = { "*@fail.example.test" = "550 5.1.1 unknown", "*" = { delay = 1, close = true } }
end_of_data = { reply = "250 2.0.0 kept", close = true }

[[domains."example.test".mx]]
name = "mx2.example.test"
preference = 5
down = true

[domains."example.test".mta_sts]
mode = "testing"
redirect = "https://elsewhere.test/"
pad_to = 70000
cert = "expired"
delay = 2

[domains."other.test"]
mx = [{ name = "mx1.example.test", preference = 1 }, { name = "mx.provider.test" }]
mta_sts = { txt = false, id = "abc123" }
"""


def test_a_full_scenario() -> None:
    parsed = scenario.parse(FULL)
    assert (parsed.name, parsed.description) == ("full", "everything at once")
    example = parsed.domain("example.test")
    assert example.dnssec == "secure"
    assert example.tlsrpt == "v=TLSRPTv1; rua=mailto:tls@example.test"
    assert dict(example.faults) == {"mx2.example.test": "timeout"}
    assert example.records[0].name == "example.test." and example.records[0].ttl == 60
    assert [(m.name, m.preference) for m in example.mx] == [
        ("mx1.example.test", 10),
        ("mx2.example.test", 5),
    ]
    mx1 = parsed.hosts["mx1.example.test"]
    assert (mx1.ip, mx1.tls, mx1.dnssec) == ("127.3.0.9", "self-signed", "secure")
    assert [(t.usage, t.selector, t.mtype, t.origin) for t in mx1.tlsa] == [
        (3, 1, 1, "leaf"),
        (2, 0, 2, "ca"),
        (3, 0, 0, "mismatch"),
    ]
    assert mx1.extensions == Extensions(
        pipelining=False, size=None, chunking=True, eightbitmime=False
    )
    assert mx1.script.greeting == Step(delay=0.5)
    assert mx1.script.mail == Step(Reply(451, "4.3.0 later"))
    assert mx1.script.rcpt == (
        RcptRule("*@fail.example.test", Step(Reply(550, "5.1.1 unknown"))),
        RcptRule("*", Step(delay=1.0, close=True)),
    )
    assert mx1.script.end_of_data == Step(Reply(250, "2.0.0 kept"), close=True)
    assert parsed.hosts["mx2.example.test"].down
    sts = example.mta_sts
    assert sts is not None
    assert sts.policy.body == format_policy(
        "testing", ["mx1.example.test", "mx2.example.test"], 86400
    )
    assert (sts.policy.status, sts.policy.location) == (301, "https://elsewhere.test/")
    assert (sts.policy.pad_to, sts.policy.cert, sts.policy.delay) == (70000, "expired", 2.0)
    assert sts.txt == format_txt(sts.policy_id) and len(sts.policy_id) == 16
    other = parsed.domain("other.test")
    assert other.mta_sts is not None and other.mta_sts.txt is None
    assert other.mta_sts.policy_id == "abc123"
    assert parsed.hosts["mx1.example.test"].tls == "self-signed"  # described once, shared
    assert parsed.hosts["mx.provider.test"].tls == "valid"
    assert parsed.zone_origins() == ["example.test", "other.test", "provider.test"]


def test_one_rcpt_step_for_every_recipient() -> None:
    parsed = scenario.parse(MX + 'replies = { rcpt = { reply = "452 4.5.3 enough", delay = 1 } }')
    (rule,) = parsed.hosts["mx1.a.test"].script.rcpt
    assert rule == RcptRule("*", Step(Reply(452, "4.5.3 enough"), delay=1.0))


def test_a_mapping_parses_like_its_toml() -> None:
    mapping = {"domains": {"a.test": {"mx": [{"name": "mx1.a.test", "tls": "none"}]}}}
    assert scenario.parse(mapping) == scenario.parse(MX + 'tls = "none"\n')


def test_defaults() -> None:
    parsed = scenario.parse(MX)
    domain, host = parsed.domain("a.test"), parsed.hosts["mx1.a.test"]
    assert (domain.dnssec, domain.mta_sts, domain.null_mx, domain.mx[0].preference) == (
        "insecure",
        None,
        False,
        10,
    )
    assert (host.ip, host.tls, host.down, host.tlsa) == (None, "valid", False, ())


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_example_scenario_parses_with_a_description(path: Path) -> None:
    parsed = scenario.load(path)
    assert parsed.name == path.stem
    assert parsed.description
    assert parsed.domains


def test_at_least_the_six_required_examples_exist() -> None:
    names = {path.stem for path in SCENARIOS.glob("*.toml")}
    assert {
        "plain",
        "mta-sts-enforce",
        "dane",
        "no-starttls",
        "expired-cert",
        "first-mx-down",
    } <= names
