"""SMTP replies and the incremental reply parser (RFC 5321 §4.2).

`ReplyParser` is a pure core: it is fed bytes as they arrive and returns the
replies they complete, in order, keeping any incomplete line for the next
feed. It never does I/O; `delivery.smtp.session` drives it.

Outcomes:
    list[Reply]        zero or more complete replies per feed
    ReplyFormatError   the bytes are not SMTP replies, or a cap was exceeded;
                       the parser is then unusable and the connection must close

Security:
    Input comes straight from the network, possibly from a hostile server or a
    man in the middle before TLS. Every dimension is capped (line length,
    lines per reply, bytes per reply), so a server cannot make us buffer more
    than MAX_REPLY_BYTES plus one line. Reply text is decoded as UTF-8 with
    replacement characters: it is for display, never interpreted.

Standards: RFC 5321 §4.2 (reply syntax), RFC 3463 and RFC 2034 (enhanced
status codes).
Limits: the line terminator is LF with an optional preceding CR; bare-LF
replies are accepted (tolerant reading, RFC 5321 §4.1.1.4 asks CRLF). Reply
codes must be 2xx-5xx: 1xx does not exist in SMTP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from delivery.smtp.errors import ReplyFormatError

__all__ = [
    "MAX_REPLY_BYTES",
    "MAX_REPLY_LINES",
    "MAX_REPLY_LINE_BYTES",
    "Reply",
    "ReplyParser",
    "parse_enhanced",
]

MAX_REPLY_LINE_BYTES = 4096
"""One reply line, terminator included. RFC 5321 §4.5.3.1.5 says 512; real servers
send longer texts (policy URLs, long 5xx explanations), so we tolerate eight times
that, and no more, so a line without end cannot grow our buffer."""

MAX_REPLY_LINES = 128
"""Lines in one multiline reply. A large EHLO reply has ~20 lines; this also bounds
the number of ESMTP extensions a server can make us store."""

MAX_REPLY_BYTES = 65536
"""Bytes in one multiline reply (all lines). Far above any real reply, far below
MAX_REPLY_LINES * MAX_REPLY_LINE_BYTES, so a reply of many long lines is refused."""

_EXCERPT_BYTES = 40
"""How much of an offending line an error message quotes."""

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=[ \t]|$)")


def parse_enhanced(code: int, first_line: str) -> str | None:
    """Return the RFC 3463 enhanced status code that starts a reply's text, if any.

    RFC 2034 §4 puts it first on each line; its class must agree with the reply
    code's first digit, otherwise it is text that happens to look like one.

    >>> parse_enhanced(550, "5.1.1 <a@example.com>: no such user")
    '5.1.1'
    >>> parse_enhanced(250, "5.1.1 mismatch") is None
    True
    """
    match = _ENHANCED.match(first_line)
    if match is None or int(match.group(1)) != code // 100:
        return None
    return match.group(0)


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete SMTP reply.

    :param code: the three-digit reply code, 200..599.
    :param enhanced: the RFC 3463 status ("5.1.1") the text starts with, or None.
    :param lines: the text of each line after the code and separator, verbatim
        (enhanced code included); ``("",)`` for a bare "250".
    """

    code: int
    enhanced: str | None
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The reply's text, lines joined with newlines."""
        return "\n".join(self.lines)

    @property
    def is_success(self) -> bool:
        """2xx: the command was accepted."""
        return 200 <= self.code < 300

    @property
    def is_transient(self) -> bool:
        """4xx: try again later."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """5xx: do not try again as is."""
        return 500 <= self.code < 600

    def __str__(self) -> str:
        """The reply as the server sent it, without CRLFs: ``550 5.1.1 no such user``."""
        last = len(self.lines) - 1
        return "\n".join(
            f"{self.code}{' ' if i == last else '-'}{line}" for i, line in enumerate(self.lines)
        ).rstrip(" ")


def _excerpt(line: bytes) -> str:
    shown = line[:_EXCERPT_BYTES].decode("ascii", "backslashreplace")
    return repr(shown) + ("..." if len(line) > _EXCERPT_BYTES else "")


class ReplyParser:
    """Incremental SMTP reply parser (RFC 5321 §4.2). Feed bytes, get replies.

    >>> parser = ReplyParser()
    >>> parser.feed(b"250-mx.example.com\\r\\n250 PIPE")
    []
    >>> [str(r) for r in parser.feed(b"LINING\\r\\n")]
    ['250-mx.example.com\\n250 PIPELINING']
    """

    __slots__ = ("_buffer", "_code", "_lines", "_scanned", "_size")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer known to hold no LF
        self._code: int | None = None  # code of the multiline reply in progress
        self._lines: list[str] = []
        self._size = 0  # bytes of the multiline reply in progress

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a complete reply."""
        return len(self._buffer) + self._size

    def discard(self) -> int:
        """Forget everything buffered and return how many bytes that was.

        Used after the 220 to STARTTLS: anything the server sent before the
        handshake must not be read as a reply inside TLS (RFC 3207 §4.2).
        """
        dropped = self.pending
        self._buffer.clear()
        self._scanned = 0
        self._code, self._lines, self._size = None, [], 0
        return dropped

    def feed(self, data: bytes, /) -> list[Reply]:
        """Add bytes from the server; return the replies they complete, in order.

        :raises ReplyFormatError: not an SMTP reply, inconsistent multiline
            codes, or a cap exceeded; its ``replies`` are those completed
            before the fault. The parser is unusable afterwards, until `discard`.
        """
        self._buffer += data
        replies: list[Reply] = []
        start = 0
        try:
            while True:
                end = self._buffer.find(b"\n", max(start, self._scanned))
                if end < 0:
                    break
                if end + 1 - start > MAX_REPLY_LINE_BYTES:
                    raise ReplyFormatError(f"reply line longer than {MAX_REPLY_LINE_BYTES} bytes")
                line = bytes(self._buffer[start:end])
                start = end + 1
                reply = self._take_line(line[:-1] if line.endswith(b"\r") else line)
                if reply is not None:
                    replies.append(reply)
            del self._buffer[:start]
            self._scanned = len(self._buffer)
            if self._scanned > MAX_REPLY_LINE_BYTES:
                raise ReplyFormatError(f"reply line longer than {MAX_REPLY_LINE_BYTES} bytes")
        except ReplyFormatError as exc:
            raise ReplyFormatError(exc.reason, replies=tuple(replies)) from None
        return replies

    def _take_line(self, line: bytes) -> Reply | None:
        code_bytes, separator = line[:3], line[3:4]
        if len(code_bytes) < 3 or not code_bytes.isdigit() or separator not in (b"", b" ", b"-"):
            raise ReplyFormatError(f"not an SMTP reply line: {_excerpt(line)}")
        code = int(code_bytes)
        if not 200 <= code <= 599:
            raise ReplyFormatError(f"reply code {code} is outside 200-599: {_excerpt(line)}")
        if self._code is not None and code != self._code:
            raise ReplyFormatError(
                f"multiline reply changed its code from {self._code} to {code}: {_excerpt(line)}"
            )
        self._size += len(line) + 2
        if self._size > MAX_REPLY_BYTES:
            raise ReplyFormatError(f"reply longer than {MAX_REPLY_BYTES} bytes")
        if len(self._lines) == MAX_REPLY_LINES:
            raise ReplyFormatError(f"reply has more than {MAX_REPLY_LINES} lines")
        self._code = code
        self._lines.append(line[4:].decode("utf-8", "replace"))
        if separator == b"-":
            return None
        lines = tuple(self._lines)
        self._code, self._lines, self._size = None, [], 0
        return Reply(code, parse_enhanced(code, lines[0]), lines)
