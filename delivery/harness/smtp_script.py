"""What a harness SMTP receiver is told to do: scripted replies, extensions, limits.

Plain frozen values, built by tests directly or by `scenario` from TOML, read by
`smtp_dialogue.Dialogue`. A `Script` holds one `Step` per stage (a reply, a delay before it,
a close after it or instead of it) and per-recipient `RcptRule`s; `Extensions` says which
ESMTP keywords the EHLO reply carries; `Limits` caps what a client can make the receiver hold.

Outcomes: values; `Reply.parse` raises ValueError on text that is not a reply.
Security: nothing here does I/O; the caps in `Limits` are what protect the receiver.
Standards: RFC 5321 (reply codes, line and recipient limits), RFC 1870 (SIZE).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "DEFAULT_EXTENSIONS",
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_SCRIPT",
    "NORMAL",
    "STAGES",
    "Extensions",
    "Limits",
    "RcptRule",
    "Reply",
    "Script",
    "Stage",
    "Step",
]

Stage = Literal["greeting", "ehlo", "starttls", "mail", "rcpt", "data", "end_of_data", "quit"]
STAGES: tuple[Stage, ...] = get_args(Stage)

DEFAULT_MAX_COMMAND_LINE_BYTES = 2048  # RFC 5321 §4.5.3.1.4 says 512, extensions add more;
# 2048 is Postfix's line_length_limit, so no valid client command is refused.
DEFAULT_MAX_TEXT_LINE_BYTES = 1000  # RFC 5321 §4.5.3.1.6: a text line, CRLF included
DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # bounds the memory one message can hold
DEFAULT_MAX_RECIPIENTS = 1000  # RFC 5321 §4.5.3.1.8 requires at least 100
DEFAULT_MAX_ERRORS = 20  # then 421 and close, as Postfix's smtpd_hard_error_limit
DEFAULT_IDLE_TIMEOUT_S = 300.0  # RFC 5321 §4.5.3.2.7: a server waits 5 minutes for a command
DEFAULT_TLS_HANDSHAKE_TIMEOUT_S = 30.0  # bounds a client that stalls mid-handshake

_REPLY_TEXT = re.compile(r"^([2-5][0-9][0-9])(?:[ -](.*))?$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: a code and its text; a text with newlines is a multi-line reply.

    >>> Reply.parse("550 5.1.1 no such user")
    Reply(code=550, text='5.1.1 no such user')
    >>> Reply(250, "first\\nlast").to_lines()
    ['250-first', '250 last']
    """

    code: int
    text: str = ""

    @classmethod
    def parse(cls, text: str, /) -> Reply:
        """A reply from ``"CODE text"``.

        :raises ValueError: no 2xx-5xx code at the start.
        """
        match = _REPLY_TEXT.match(text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not a reply: write a code 200-599 then text")
        return cls(int(match.group(1)), match.group(2) or "")

    def to_lines(self) -> list[str]:
        """The reply's wire lines, CRLF not included."""
        lines = self.text.split("\n") or [""]
        last = len(lines) - 1
        return [f"{self.code}{' ' if i == last else '-'}{line}" for i, line in enumerate(lines)]

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


@dataclass(frozen=True, slots=True)
class Step:
    """Scripted behaviour at one stage.

    ``reply`` replaces the normal reply (None keeps it); ``delay`` is the seconds to wait
    before replying or closing; ``close`` closes the connection after the reply, or instead of
    it when ``reply`` is None.
    """

    reply: Reply | None = None
    delay: float = 0.0
    close: bool = False


@dataclass(frozen=True, slots=True)
class RcptRule:
    """A recipient rule: ``pattern`` is a case-insensitive glob on the address."""

    pattern: str
    step: Step

    def matches(self, address: str) -> bool:
        """Whether the rule applies to ``address``.

        >>> RcptRule("*@fail.test", Step()).matches("Bob@FAIL.test")
        True
        """
        return fnmatch.fnmatchcase(address.lower(), self.pattern.lower())


@dataclass(frozen=True, slots=True)
class Script:
    """What a receiver does at each stage; the first `RcptRule` that matches wins.

    ``ehlo`` scripts EHLO only (a 5xx there lets a client fall back to HELO); ``data`` scripts
    the reply to the DATA command; ``end_of_data`` the reply after the final dot, or to
    BDAT LAST.
    """

    greeting: Step = Step()
    ehlo: Step = Step()
    starttls: Step = Step()
    mail: Step = Step()
    rcpt: tuple[RcptRule, ...] = ()
    data: Step = Step()
    end_of_data: Step = Step()
    quit: Step = Step()

    def rcpt_step(self, address: str) -> Step:
        """The step of the first rule matching ``address``, else the normal behaviour."""
        for rule in self.rcpt:
            if rule.matches(address):
                return rule.step
        return NORMAL


@dataclass(frozen=True, slots=True)
class Extensions:
    """ESMTP extensions advertised in the EHLO reply (RFC 5321 §4.1.1.1).

    ``size`` is the SIZE value advertised and enforced; None advertises no SIZE (the
    `Limits` cap still applies). A parameter of an extension not advertised is refused (555).
    """

    pipelining: bool = True
    size: int | None = DEFAULT_MAX_MESSAGE_BYTES
    eightbitmime: bool = True
    smtputf8: bool = True
    dsn: bool = True
    enhancedstatuscodes: bool = True
    chunking: bool = False
    requiretls: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on what one client can make the receiver hold or wait for."""

    max_command_line_bytes: int = DEFAULT_MAX_COMMAND_LINE_BYTES
    max_text_line_bytes: int = DEFAULT_MAX_TEXT_LINE_BYTES
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_recipients: int = DEFAULT_MAX_RECIPIENTS
    max_errors: int = DEFAULT_MAX_ERRORS
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    tls_handshake_timeout_s: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT_S


NORMAL = Step()
"""The step that changes nothing: the receiver's normal reply, at once."""
DEFAULT_SCRIPT = Script()
DEFAULT_EXTENSIONS = Extensions()
DEFAULT_LIMITS = Limits()
