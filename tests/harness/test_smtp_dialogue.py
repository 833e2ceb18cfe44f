"""The receiver's sans-I/O dialogue: tables of sessions and the replies they get."""

from __future__ import annotations

from typing import Any

import pytest

from delivery.harness.smtp_dialogue import (
    Accept,
    Action,
    BreakTls,
    Close,
    Dialogue,
    ReceivedMessage,
    Send,
    StartTls,
    TlsInfo,
    parse_params,
    parse_path,
)
from delivery.harness.smtp_script import Extensions, Limits, RcptRule, Reply, Script, Step

PEER = ("127.0.0.9", 40000)
MAIL = ["EHLO client.test", "MAIL FROM:<a@sender.test>", "RCPT TO:<b@example.test>"]
TLS = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")


def dialogue(**options: Any) -> Dialogue:
    return Dialogue(hostname="mx1.example.test", peer=PEER, **options)


def feed_lines(d: Dialogue, lines: list[str]) -> list[Action]:
    actions = d.greet()
    for line in lines:
        actions += d.feed(line.encode() + b"\r\n")
    return actions


def codes(actions: list[Action]) -> list[int]:
    """The code of each reply sent, in order."""
    return [int(a.lines[-1][:3]) for a in actions if isinstance(a, Send)]


def accepted(actions: list[Action]) -> list[ReceivedMessage]:
    return [a.message for a in actions if isinstance(a, Accept)]


Case = tuple[str, dict[str, Any], list[str], list[int]]


def case(label: str, lines: list[str], expected: list[int], **options: Any) -> Case:
    """(label, Dialogue options, client lines, reply codes with the greeting first)."""
    return (label, options, lines, expected)


GREET_554 = Script(greeting=Step(Reply(554, "5.3.2 no")))
GREET_421 = Script(greeting=Step(Reply(421, "4.3.2 busy")))
EHLO_502 = Script(ehlo=Step(Reply(502, "5.5.1 no")))
MAIL_451 = Script(mail=Step(Reply(451, "4.3.0 later")))
DATA_451 = Script(data=Step(Reply(451, "4.3.0 later")))
EOD_552 = Script(end_of_data=Step(Reply(552, "5.3.4 too big")))
QUIT_421 = Script(quit=Step(Reply(421, "4.0.0 bye")))
DSN_MAIL = "MAIL FROM:<a@x> RET=HDRS ENVID=abc+2Bd"
DSN_RCPT = "RCPT TO:<b@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y"

CASES = [
    case(
        "a whole transaction",
        [*MAIL, "DATA", "hi", ".", "QUIT"],
        [220, 250, 250, 250, 354, 250, 221],
    ),
    case("DSN parameters", ["EHLO c", DSN_MAIL, DSN_RCPT], [220, 250, 250, 250]),
    case(
        "DSN not advertised",
        ["EHLO c", DSN_MAIL],
        [220, 250, 555],
        extensions=Extensions(dsn=False),
    ),
    case(
        "SIZE not advertised",
        ["EHLO c", "MAIL FROM:<a@x> SIZE=10"],
        [220, 250, 555],
        extensions=Extensions(size=None),
    ),
    case(
        "SMTPUTF8 not advertised",
        ["EHLO c", "MAIL FROM:<a@x> SMTPUTF8"],
        [220, 250, 555],
        extensions=Extensions(smtputf8=False),
    ),
    case("554 greeting: 503 until QUIT", ["EHLO c", "QUIT"], [554, 503, 221], script=GREET_554),
    case("421 greeting closes", ["EHLO c"], [421], script=GREET_421),
    case(
        "EHLO refused, HELO works",
        ["EHLO c", "MAIL FROM:<a@x>", "HELO c", "MAIL FROM:<a@x>"],
        [220, 502, 503, 250, 250],
        script=EHLO_502,
    ),
    case("scripted MAIL", [*MAIL, "DATA"], [220, 250, 451, 503, 503], script=MAIL_451),
    case("scripted DATA", [*MAIL, "DATA", "NOOP"], [220, 250, 250, 250, 451, 250], script=DATA_451),
    case(
        "scripted end of data",
        [*MAIL, "DATA", "x", "."],
        [220, 250, 250, 250, 354, 552],
        script=EOD_552,
    ),
    case("scripted QUIT", ["QUIT"], [220, 421], script=QUIT_421),
]


@pytest.mark.parametrize(
    ("label", "options", "lines", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_replies(
    label: str, options: dict[str, Any], lines: list[str], expected: list[int]
) -> None:
    assert codes(feed_lines(dialogue(**options), lines)) == expected


RCPT_SCRIPT = Script(
    rcpt=(
        RcptRule("*@fail.test", Step(Reply(550, "5.1.1 unknown"))),
        RcptRule("slow*", Step(Reply(451, "4.2.1 busy"), delay=1.5)),
    )
)


def test_recipient_rules_first_match_wins_and_only_accepted_ones_are_kept() -> None:
    lines = [
        "EHLO c",
        "MAIL FROM:<a@x.test>",
        "RCPT TO:<Bob@FAIL.test>",
        "RCPT TO:<slow@x.test>",
        "RCPT TO:<ok@x.test> NOTIFY=NEVER",
        "DATA",
        "body",
        ".",
    ]
    actions = feed_lines(dialogue(script=RCPT_SCRIPT), lines)
    assert codes(actions) == [220, 250, 250, 550, 451, 250, 354, 250]
    assert [a.delay for a in actions if isinstance(a, Send)][4] == 1.5
    (message,) = accepted(actions)
    assert message.rcpt_tos == ["ok@x.test"]
    assert dict(message.rcpts[0].params) == {"NOTIFY": "NEVER"}


def test_message_record_keeps_envelope_params_body_and_peer() -> None:
    lines = [
        "EHLO client.test",
        "MAIL FROM:<a@sender.test> SIZE=40 BODY=8BITMIME ENVID=x1",
        "RCPT TO:<b@example.test> ORCPT=rfc822;b@example.test",
        "DATA",
        "Subject: t",
        "",
        "..leading dot",
        "bare\nLF and a lone . in the middle",
        ".",
    ]
    (message,) = accepted(feed_lines(dialogue(), lines))
    assert message.mail_from == "a@sender.test"
    assert dict(message.mail_params) == {"SIZE": "40", "BODY": "8BITMIME", "ENVID": "x1"}
    assert message.body == (
        b"Subject: t\r\n\r\n.leading dot\r\nbare\nLF and a lone . in the middle\r\n"
    )
    assert (message.ehlo, message.peer, message.tls, message.chunked) == (
        "client.test",
        PEER,
        None,
        False,
    )


SESSION = (
    b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nl1\r\n..l2\r\n.\r\n"
    b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n.\r\nQUIT\r\n"
)


@pytest.mark.parametrize("size", [1, 2, 7, 16, 128, 4096])
def test_any_chunking_of_the_input_gives_the_same_session(size: int) -> None:
    d = dialogue()
    actions = d.greet()
    for start in range(0, len(SESSION), size):
        actions += d.feed(SESSION[start : start + size])
    assert codes(actions) == [220, 250, 250, 250, 354, 250, 250, 250, 354, 250, 221]
    assert [m.body for m in accepted(actions)] == [b"l1\r\n.l2\r\n", b""]
    assert isinstance(actions[-1], Close)


def test_overlong_text_line_split_across_reads() -> None:
    d = dialogue(limits=Limits(max_text_line_bytes=100))
    actions = feed_lines(d, [*MAIL, "DATA"])
    for _ in range(5):
        actions += d.feed(b"y" * 99)
    actions += d.feed(b"\r")
    actions += d.feed(b"\n.\r\n")
    assert codes(actions)[-1] == 500


def test_bdat_chunks_make_one_message_as_sent() -> None:
    d = dialogue(extensions=Extensions(chunking=True))
    actions = feed_lines(d, MAIL)
    actions += d.feed(b"BDAT 7\r\n.line\r\nBDAT 3 LAST\r\nend")
    assert codes(actions) == [220, 250, 250, 250, 250, 250]
    (message,) = accepted(actions)
    assert (message.body, message.chunked) == (b".line\r\nend", True)


def test_bdat_without_recipients_reads_the_chunk_then_refuses() -> None:
    d = dialogue(extensions=Extensions(chunking=True))
    actions = feed_lines(d, ["EHLO c", "MAIL FROM:<a@x>"])
    actions += d.feed(b"BDAT 9 LAST\r\nNOOP\r\nxyzNOOP\r\n")
    assert codes(actions) == [220, 250, 250, 554, 250]


def test_starttls_then_the_client_starts_over_and_pipelined_plaintext_is_dropped() -> None:
    d = dialogue(tls="handshake", extensions=Extensions(requiretls=True))
    actions = d.greet() + d.feed(b"EHLO c\r\n")
    ehlo = next(a for a in actions if isinstance(a, Send) and a.lines[0].startswith("250"))
    assert "250-STARTTLS" in ehlo.lines
    assert not any("REQUIRETLS" in line for line in ehlo.lines)
    actions = d.feed(b"STARTTLS\r\nMAIL FROM:<injected@x>\r\n")
    assert codes(actions) == [220]
    assert isinstance(actions[-1], StartTls)
    assert d.discarded_bytes == len(b"MAIL FROM:<injected@x>\r\n")
    assert d.tls_started(TLS) == []
    actions = d.feed(b"MAIL FROM:<a@x>\r\nEHLO again\r\n")
    assert codes(actions) == [503, 250]
    ehlo_lines = next(a for a in actions if isinstance(a, Send) and len(a.lines) > 1).lines
    assert not any("STARTTLS" in line for line in ehlo_lines)
    assert any("REQUIRETLS" in line for line in ehlo_lines)
    actions = d.feed(b"MAIL FROM:<a@x> REQUIRETLS\r\nRCPT TO:<b@y>\r\nDATA\r\n.\r\n")
    (message,) = accepted(actions)
    assert (message.tls, message.ehlo, dict(message.mail_params)) == (
        TLS,
        "again",
        {"REQUIRETLS": None},
    )


def test_broken_tls_answers_220_then_breaks_the_handshake() -> None:
    d = dialogue(tls="broken")
    actions = feed_lines(d, ["EHLO c", "STARTTLS"])
    assert codes(actions) == [220, 250, 220]
    assert isinstance(actions[-1], BreakTls)
    assert d.closed


def test_scripted_starttls_refusal_keeps_the_session_in_clear_text() -> None:
    d = dialogue(tls="handshake", script=Script(starttls=Step(Reply(454, "4.7.0 no TLS now"))))
    actions = feed_lines(d, ["EHLO c", "STARTTLS", *MAIL[1:], "DATA", ".", "QUIT"])
    assert not any(isinstance(a, StartTls) for a in actions)
    assert accepted(actions)[0].tls is None


def test_quit_after_a_554_greeting_closes() -> None:
    actions = feed_lines(dialogue(script=GREET_554), ["HELO c", "QUIT"])
    assert codes(actions) == [554, 503, 221]
    assert isinstance(actions[-1], Close)


def test_close_without_a_reply_sends_nothing_and_waits_the_delay() -> None:
    d = dialogue(script=Script(mail=Step(delay=0.25, close=True)))
    actions = feed_lines(d, ["EHLO c", "MAIL FROM:<a@x>", "NOOP"])
    assert codes(actions) == [220, 250]
    assert actions[-1] == Close(0.25)


def test_accepted_reply_then_close_still_records_the_message() -> None:
    script = Script(end_of_data=Step(Reply(250, "2.0.0 kept"), close=True))
    actions = feed_lines(dialogue(script=script), [*MAIL, "DATA", "x", "."])
    assert len(accepted(actions)) == 1
    assert isinstance(actions[-1], Close)


def test_dropped_at_end_of_data_records_nothing() -> None:
    script = Script(end_of_data=Step(close=True))
    actions = feed_lines(dialogue(script=script), [*MAIL, "DATA", "x", "."])
    assert accepted(actions) == []
    assert isinstance(actions[-1], Close)


def test_extensions_are_advertised_as_configured() -> None:
    extensions = Extensions(pipelining=False, size=1234, dsn=False, chunking=True)
    actions = feed_lines(dialogue(extensions=extensions), ["EHLO c"])
    ehlo = [a for a in actions if isinstance(a, Send)][1]
    assert ehlo.lines == (
        "250-mx1.example.test greets c",
        "250-SIZE 1234",
        "250-ENHANCEDSTATUSCODES",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250 CHUNKING",
    )


def test_multiline_scripted_reply() -> None:
    script = Script(greeting=Step(Reply(220, "mx1 ready\nsecond line")))
    (send,) = dialogue(script=script).greet()
    assert isinstance(send, Send)
    assert send.lines == ("220-mx1 ready", "220 second line")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("550 5.1.1 no such user", Reply(550, "5.1.1 no such user")),
        ("421", Reply(421, "")),
        ("250-first", Reply(250, "first")),
    ],
)
def test_reply_parse(text: str, expected: Reply) -> None:
    assert Reply.parse(text) == expected


@pytest.mark.parametrize("text", ["", "hello", "600 too high", "99 short"])
def test_reply_parse_refuses_non_replies(text: str) -> None:
    with pytest.raises(ValueError, match="not a reply"):
        Reply.parse(text)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("FROM:<a@x>", ("a@x", "")),
        ("from: <a@x> SIZE=1", ("a@x", "SIZE=1")),
        ('FROM:<"odd > name"@x>', ('"odd > name"@x', "")),
        ("FROM:<@relay.test:a@x>", ("a@x", "")),
        ("FROM:<a@x>SIZE=1", None),
        ("FROM:<a@x", None),
        ("TO:<a@x>", None),
    ],
)
def test_parse_path(arg: str, expected: tuple[str, str] | None) -> None:
    assert parse_path(arg, "FROM:") == expected


@pytest.mark.parametrize("text", ["=x", "SIZE=", "BAD_KEY=1", "A=1 a=2"])
def test_parse_params_refuses_bad_syntax(text: str) -> None:
    assert parse_params(text) is None
