"""Message content for the DATA phase: line endings, dot-stuffing, terminator.

`prepare_data` is a pure function from a message body to the exact bytes sent
after the server's 354, end-of-data marker included; `sized_data` returns the
SIZE= value with it, normalising the body once.

Security:
    SMTP smuggling (RFC 5321 §2.3.8, §4.1.1.4; CVE-2023-51764 and kin): if a
    body could contain a sequence that one server reads as end-of-data and
    another does not, a sender could hide a second message inside the first.
    We therefore turn every bare CR and every bare LF into CRLF *before*
    dot-stuffing, so the only line ending on the wire is CRLF, every line that
    starts with "." is stuffed, and the only "CRLF . CRLF" in the output is the
    terminator we append.

Standards: RFC 5321 §4.5.2 (transparency), §2.3.8 (line endings).
Limits: lines longer than 998 octets (RFC 5322 §2.1.1) are sent as they are;
a receiving server may refuse them. NUL bytes are sent as they are.
"""

from __future__ import annotations

import re

__all__ = ["END_OF_DATA", "normalise", "prepare_data", "sized_data"]

END_OF_DATA = b".\r\n"
"""The line that ends the content; follows a CRLF (RFC 5321 §4.1.1.4)."""

_LINE_ENDING = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


def normalise(body: bytes, /) -> bytes:
    """Return `body` with every bare CR and bare LF turned into CRLF, ending in CRLF.

    This is the message as the server will store it; its length is the SIZE=
    value (RFC 1870 §3: CRLFs counted, stuffing dots and terminator not).

    >>> normalise(b"a\\rb\\n")
    b'a\\r\\nb\\r\\n'
    """
    crlf = body.count(b"\r\n")
    if crlf == body.count(b"\r") == body.count(b"\n"):  # CRLF only: nothing to change
        normalised = body
    else:
        normalised = _LINE_ENDING.sub(b"\r\n", body)
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    return normalised


def prepare_data(body: bytes, /) -> bytes:
    """Return the wire form of `body`: CRLF line endings, dot-stuffed, terminated.

    >>> prepare_data(b"a\\n.\\nb")
    b'a\\r\\n..\\r\\nb\\r\\n.\\r\\n'
    >>> prepare_data(b"")
    b'.\\r\\n'
    """
    return sized_data(body)[1]


def sized_data(body: bytes, /) -> tuple[int, bytes]:
    """Return the SIZE= value of `body` (`normalise`) and its wire form (`prepare_data`).

    >>> sized_data(b".a\\n")
    (4, b'..a\\r\\n.\\r\\n')
    """
    # Normalise first: after this, "\n" only occurs as part of CRLF, so the
    # MULTILINE "^" below sees exactly the line starts the server will see.
    normalised = normalise(body)
    if not normalised.startswith(b".") and b"\n." not in normalised:
        return len(normalised), normalised + END_OF_DATA  # no line starts with a dot
    return len(normalised), _LEADING_DOT.sub(b"..", normalised) + END_OF_DATA
