"""ReplyParser over a table of wire inputs, each fed in chunks of 1, 2, 7, 16, 128 and 4096 bytes.

Whatever the chunking, the parser must return the same replies, or fail with the same
reason: TCP segments can split a reply anywhere.
"""

from __future__ import annotations

import pytest

from delivery.smtp.errors import ReplyFormatError
from delivery.smtp.reply import (
    MAX_REPLY_BYTES,
    MAX_REPLY_LINE_BYTES,
    MAX_REPLY_LINES,
    Reply,
    ReplyParser,
    parse_enhanced,
)

CHUNK_SIZES = (1, 2, 7, 16, 128, 4096)

GOOD = [  # (label, wire bytes, expected replies)
    ("one line", b"220 mx.example.com ESMTP\r\n", [Reply(220, None, ("mx.example.com ESMTP",))]),
    (
        "multiline EHLO",
        b"250-mx.example.com\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
        [Reply(250, None, ("mx.example.com", "PIPELINING", "SIZE 1000"))],
    ),
    ("bare code", b"250\r\n", [Reply(250, None, ("",))]),
    ("bare LF tolerated", b"250 ok\n", [Reply(250, None, ("ok",))]),
    (
        "enhanced code",
        b"550 5.1.1 <a@example.com>: no such user\r\n",
        [Reply(550, "5.1.1", ("5.1.1 <a@example.com>: no such user",))],
    ),
    (
        "enhanced class disagrees with code",
        b"250 5.1.1 odd\r\n",
        [Reply(250, None, ("5.1.1 odd",))],
    ),
    (
        "pipelined replies in one segment",
        b"250 2.1.0 ok\r\n550 5.1.1 no\r\n250 2.1.5 ok\r\n354 go\r\n",
        [
            Reply(250, "2.1.0", ("2.1.0 ok",)),
            Reply(550, "5.1.1", ("5.1.1 no",)),
            Reply(250, "2.1.5", ("2.1.5 ok",)),
            Reply(354, None, ("go",)),
        ],
    ),
    ("empty continuation", b"250-\r\n250 done\r\n", [Reply(250, None, ("", "done"))]),
    (
        "non-UTF-8 text replaced, not fatal",
        b"554 caf\xe9\r\n",
        [Reply(554, None, ("caf\ufffd",))],
    ),
    (
        "longest allowed line",
        b"250 " + b"x" * (MAX_REPLY_LINE_BYTES - 6) + b"\r\n",
        [Reply(250, None, ("x" * (MAX_REPLY_LINE_BYTES - 6),))],
    ),
    (
        "most lines allowed",
        b"250-x\r\n" * (MAX_REPLY_LINES - 1) + b"250 x\r\n",
        [Reply(250, None, ("x",) * MAX_REPLY_LINES)],
    ),
    ("incomplete reply is kept for later", b"250-first\r\n250 sec", []),
]

BAD = [  # (label, wire bytes, expected reason fragment)
    ("letters for a code", b"hello there\r\n", "not an SMTP reply line"),
    ("short code", b"25\r\n", "not an SMTP reply line"),
    ("bad separator", b"250_ok\r\n", "not an SMTP reply line"),
    ("empty line", b"\r\n", "not an SMTP reply line"),
    ("1xx code", b"150 huh\r\n", "outside 200-599"),
    ("6xx code", b"650 huh\r\n", "outside 200-599"),
    ("codes disagree", b"250-mx\r\n550 no\r\n", "changed its code from 250 to 550"),
    (
        "line too long",
        b"250 " + b"x" * MAX_REPLY_LINE_BYTES + b"\r\n",
        f"longer than {MAX_REPLY_LINE_BYTES} bytes",
    ),
    ("endless line", b"220 " + b"x" * 10_000, f"longer than {MAX_REPLY_LINE_BYTES} bytes"),
    ("too many lines", b"250-x\r\n" * (MAX_REPLY_LINES + 1), f"more than {MAX_REPLY_LINES} lines"),
    (
        "too many bytes",
        (b"250-" + b"y" * 1000 + b"\r\n") * (MAX_REPLY_BYTES // 1000 + 1),
        f"longer than {MAX_REPLY_BYTES} bytes",
    ),
    ("garbage after a good reply", b"220 hi\r\n\x16\x03\x01\x00\r\n", "not an SMTP reply line"),
]


def feed_in_chunks(data: bytes, size: int) -> list[Reply]:
    parser = ReplyParser()
    replies: list[Reply] = []
    for start in range(0, len(data), size):
        replies += parser.feed(data[start : start + size])
    return replies


@pytest.mark.parametrize("size", CHUNK_SIZES)
@pytest.mark.parametrize(("label", "wire", "expected"), GOOD, ids=[c[0] for c in GOOD])
def test_replies_are_parsed_whatever_the_chunking(
    label: str, wire: bytes, expected: list[Reply], size: int
) -> None:
    assert feed_in_chunks(wire, size) == expected


@pytest.mark.parametrize("size", CHUNK_SIZES)
@pytest.mark.parametrize(("label", "wire", "reason"), BAD, ids=[c[0] for c in BAD])
def test_garbage_is_a_format_error_whatever_the_chunking(
    label: str, wire: bytes, reason: str, size: int
) -> None:
    with pytest.raises(ReplyFormatError, match=reason):
        feed_in_chunks(wire, size)


def test_incomplete_reply_completes_on_a_later_feed() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-first\r\n250 sec") == []
    assert parser.pending > 0
    assert parser.feed(b"ond\r\n") == [Reply(250, None, ("first", "second"))]
    assert parser.pending == 0


def test_discard_forgets_buffered_bytes() -> None:
    parser = ReplyParser()
    parser.feed(b"250-injected\r\n250 half")
    assert parser.discard() == len(b"250-injected\r\n250 half")
    assert parser.feed(b"220 real\r\n") == [Reply(220, None, ("real",))]


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (550, "5.1.1 no such user", "5.1.1"),
        (451, "4.7.1 greylisted", "4.7.1"),
        (250, "2.0.0", "2.0.0"),
        (552, "5.3.4\tmessage too big", "5.3.4"),
        (250, "2.1.5ok", None),  # no separator after the code
        (550, "4.1.1 class mismatch", None),
        (354, "3.0.0 not a class", None),
        (550, "5.1234.1 subject too long", None),
        (550, "no code at all", None),
    ],
)
def test_enhanced_status_code(code: int, text: str, expected: str | None) -> None:
    assert parse_enhanced(code, text) == expected


def test_reply_renders_as_sent() -> None:
    reply = Reply(250, None, ("mx.example.com", "PIPELINING"))
    assert str(reply) == "250-mx.example.com\n250 PIPELINING"
    assert reply.text == "mx.example.com\nPIPELINING"
    assert str(Reply(250, None, ("",))) == "250"
    assert (Reply(250, None, ("",)).is_success, Reply(451, None, ("",)).is_transient) == (
        True,
        True,
    )
    assert Reply(554, None, ("",)).is_permanent and not Reply(354, None, ("",)).is_success


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_replies_before_a_fault_are_not_lost(size: int) -> None:
    parser = ReplyParser()
    wire = b"220 2.0.0 go ahead\r\n\x16\x03\x01 not a reply\r\n"
    replies: list[Reply] = []
    with pytest.raises(ReplyFormatError) as caught:
        for start in range(0, len(wire), size):
            replies += parser.feed(wire[start : start + size])
    assert [*replies, *caught.value.replies] == [Reply(220, "2.0.0", ("2.0.0 go ahead",))]
    parser.discard()  # a parser that failed is usable again after discard
    assert parser.feed(b"250 ok\r\n") == [Reply(250, None, ("ok",))]
