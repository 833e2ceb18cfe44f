"""prepare_data: a table of awkward bodies, and a property: no input ends the data early."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery.smtp.data import END_OF_DATA, prepare_data

CASES = [  # (label, body, wire bytes after the 354)
    ("empty body", b"", b".\r\n"),
    ("CRLF lines", b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
    ("no final newline", b"a\r\nb", b"a\r\nb\r\n.\r\n"),
    ("bare LF", b"a\nb\n", b"a\r\nb\r\n.\r\n"),
    ("bare CR", b"a\rb\r", b"a\r\nb\r\n.\r\n"),
    ("CR CR LF", b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
    ("LF CR", b"a\n\rb", b"a\r\n\r\nb\r\n.\r\n"),
    ("end-of-data inside", b"a\r\n.\r\nMAIL FROM:<x>\r\n", b"a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"),
    ("LF dot LF smuggling", b"a\n.\nRCPT TO:<x>\n", b"a\r\n..\r\nRCPT TO:<x>\r\n.\r\n"),
    ("CR dot CR smuggling", b"a\r.\rDATA\r", b"a\r\n..\r\nDATA\r\n.\r\n"),
    ("LF dot CRLF smuggling", b"a\n.\r\nQUIT\r\n", b"a\r\n..\r\nQUIT\r\n.\r\n"),
    ("CR dot LF smuggling", b"a\r.\nQUIT", b"a\r\n..\r\nQUIT\r\n.\r\n"),
    ("lone dot line", b".\r\n", b"..\r\n.\r\n"),
    ("lone dot, no newline", b".", b"..\r\n.\r\n"),
    ("dot first line", b".hidden\r\nb\r\n", b"..hidden\r\nb\r\n.\r\n"),
    ("dots inside lines stay", b"a.b\r\n x.\r\n", b"a.b\r\n x.\r\n.\r\n"),
    ("two dots", b"..\r\n", b"...\r\n.\r\n"),
    ("only newlines", b"\n\n", b"\r\n\r\n.\r\n"),
]


@pytest.mark.parametrize(("label", "body", "wire"), CASES, ids=[c[0] for c in CASES])
def test_prepare_data(label: str, body: bytes, wire: bytes) -> None:
    assert prepare_data(body) == wire


def unstuff(wire: bytes) -> bytes:
    """What an RFC 5321 receiver reads back: content before the terminator, dots removed."""
    assert wire.endswith(END_OF_DATA)
    content = wire[: -len(END_OF_DATA)]
    return re.sub(rb"(?m)^\.", b"", content)


@given(
    st.binary(max_size=300) | st.lists(st.sampled_from([b".", b"\r", b"\n", b"a"])).map(b"".join)
)
def test_no_input_can_end_the_data_early(body: bytes) -> None:
    wire = prepare_data(body)
    # The only end-of-data is the last line: no CRLF "." CRLF before it, and the content
    # does not start with a lone "." line either.
    assert b"\r\n.\r\n" not in wire[:-3]
    assert wire == b".\r\n" or not wire.startswith(b".\r\n")
    # Every line ending is CRLF: no bare CR or LF a lenient receiver could split on.
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", wire) is None
    # And the receiver gets the body back, line endings normalised.
    normalised = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert unstuff(wire) == normalised
