"""Pure ESMTP helpers: extension parsing, MAIL/RCPT parameters, injection checks."""

from __future__ import annotations

import pytest

from delivery.smtp import esmtp
from delivery.smtp.errors import InvalidArgument
from delivery.smtp.esmtp import Envelope, Recipient
from delivery.smtp.reply import Reply

EHLO = Reply(
    250,
    None,
    (
        "mx.example.com greets you",
        "PIPELINING",
        "SIZE 10240000",
        "8bitmime",
        "AUTH PLAIN LOGIN",
        "AUTH=LOGIN",
        "X-ODD_KEYWORD",
        "DSN",
        "SIZE 5",
    ),
)


def test_parse_extensions() -> None:
    assert esmtp.parse_extensions(EHLO) == {
        "PIPELINING": "",
        "SIZE": "10240000",  # the first announcement wins
        "8BITMIME": "",
        "AUTH": "PLAIN LOGIN",
        "DSN": "",
    }


def test_greeting_line_is_not_an_extension() -> None:
    assert esmtp.parse_extensions(Reply(250, None, ("PIPELINING",))) == {}


ALL = {"SIZE": "", "8BITMIME": "", "SMTPUTF8": "", "DSN": "", "REQUIRETLS": ""}
RICH = Envelope(
    "s@example.org",
    (Recipient("r@example.com", ("SUCCESS", "FAILURE"), "r+x=y@example.com"),),
    smtputf8=True,
    body_8bit=True,
    requiretls=True,
    dsn_ret="HDRS",
    dsn_envid="id 1+2",
)
PLAIN = Envelope("s@example.org", (Recipient("r@example.com"),))

MAIL_CASES = [  # (label, envelope, extensions offered, MAIL line)
    ("nothing offered", RICH, {}, "MAIL FROM:<s@example.org>"),
    (
        "everything offered",
        RICH,
        ALL,
        "MAIL FROM:<s@example.org> SIZE=42 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+201+2B2"
        " REQUIRETLS",
    ),
    ("SIZE only", RICH, {"SIZE": "1000"}, "MAIL FROM:<s@example.org> SIZE=42"),
    ("DSN only", RICH, {"DSN": ""}, "MAIL FROM:<s@example.org> RET=HDRS ENVID=id+201+2B2"),
    ("plain message, all offered", PLAIN, ALL, "MAIL FROM:<s@example.org> SIZE=42"),
    ("null sender", Envelope("", (Recipient("r@x"),)), {}, "MAIL FROM:<>"),
]


@pytest.mark.parametrize(
    ("label", "env", "offered", "line"), MAIL_CASES, ids=[c[0] for c in MAIL_CASES]
)
def test_mail_parameters_only_when_offered(
    label: str, env: Envelope, offered: dict[str, str], line: str
) -> None:
    assert esmtp.format_mail(env, offered, 42) == (line + "\r\n").encode()


RCPT_CASES = [
    ("DSN not offered", {}, "RCPT TO:<r@example.com>"),
    (
        "DSN offered",
        {"DSN": ""},
        "RCPT TO:<r@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r+2Bx+3Dy@example.com",
    ),
]


@pytest.mark.parametrize(("label", "offered", "line"), RCPT_CASES, ids=[c[0] for c in RCPT_CASES])
def test_rcpt_parameters_only_when_offered(label: str, offered: dict[str, str], line: str) -> None:
    assert esmtp.format_rcpt(RICH, RICH.recipients[0], offered) == (line + "\r\n").encode()


def test_utf8_addresses_are_sent_as_utf8() -> None:
    env = Envelope("jörg@example.org", (Recipient("δ@example.com"),), smtputf8=True)
    assert (
        esmtp.format_mail(env, {"SMTPUTF8": ""}, 1)
        == "MAIL FROM:<jörg@example.org> SMTPUTF8\r\n".encode()
    )


@pytest.mark.parametrize(
    ("offered", "missing"),
    [({}, ("SMTPUTF8", "REQUIRETLS")), ({"SMTPUTF8": ""}, ("REQUIRETLS",)), (ALL, ())],
)
def test_missing_extensions(offered: dict[str, str], missing: tuple[str, ...]) -> None:
    assert esmtp.missing_extensions(RICH, offered) == missing


INVALID = [  # (label, envelope factory arguments, field at fault)
    ("CRLF in sender", {"sender": "a@x>\r\nRCPT TO:<evil@x"}, "sender"),
    ("LF in recipient", {"recipients": (Recipient("a@x\nDATA"),)}, "recipient"),
    ("NUL", {"recipients": (Recipient("a\x00@x"),)}, "recipient"),
    ("angle bracket", {"recipients": (Recipient("a@x> NOTIFY=NEVER"),)}, "recipient"),
    ("empty recipient", {"recipients": (Recipient(""),)}, "recipient"),
    ("no recipients", {"recipients": ()}, "recipients"),
    ("non-ASCII without SMTPUTF8", {"recipients": (Recipient("δ@x"),)}, "recipient"),
    ("CR in ORCPT", {"recipients": (Recipient("a@x", orcpt="a\r@x"),)}, "orcpt"),
    ("NEVER and more", {"recipients": (Recipient("a@x", ("NEVER", "DELAY")),)}, "notify"),
    ("ENVID with CR", {"dsn_envid": "a\rb"}, "envid"),
    ("ENVID non-ASCII", {"dsn_envid": "é"}, "envid"),
    ("ENVID too long", {"dsn_envid": "x" * 101}, "envid"),
]


@pytest.mark.parametrize(("label", "changes", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_unsafe_envelopes_are_refused(label: str, changes: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {"sender": "s@x", "recipients": (Recipient("r@x"),), **changes}
    with pytest.raises(InvalidArgument) as caught:
        Envelope(**arguments)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize("name", ["mta.example.org", "localhost", "[127.0.0.1]", "[IPv6:::1]"])
def test_ehlo_names_accepted(name: str) -> None:
    assert esmtp.check_ehlo_name(name) == name


@pytest.mark.parametrize("name", ["", "a b", "mta\r\nMAIL FROM:<x>", "-bad", "[not an ip]"])
def test_ehlo_names_refused(name: str) -> None:
    with pytest.raises(InvalidArgument):
        esmtp.check_ehlo_name(name)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [("plain", "plain"), ("a+b", "a+2Bb"), ("a=b", "a+3Db"), ("a b", "a+20b"), ("é", "+C3+A9")],
)
def test_xtext(value: str, encoded: str) -> None:
    assert esmtp.xtext(value) == encoded
