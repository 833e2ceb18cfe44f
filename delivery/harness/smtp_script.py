"""What a harness SMTP receiver is told to do: scripted replies, extensions, limits.

Plain frozen values, built by tests directly or by `scenario` from TOML, read by
`smtp_dialogue.Dialogue`. A `Script` holds one `Step` per stage (a reply, a delay before it,
a close after it or instead of it) and per-recipient `RcptRule`s. `Reply`, `Extensions` (which
ESMTP keywords the EHLO reply carries) and `Limits` (what a client can make the receiver hold)
are the protocol core's own values (`delivery.smtp.server`), re-exported here.

Outcomes: values; `Reply.parse` raises ValueError on text that is not a reply.
Security: nothing here does I/O; the caps in `Limits` are what protect the receiver.
Standards: RFC 5321 (reply codes, line and recipient limits), RFC 1870 (SIZE).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal, get_args

from delivery.smtp.server import (
    DEFAULT_EXTENSIONS,
    DEFAULT_LIMITS,
    DEFAULT_MAX_MESSAGE_BYTES,
    Extensions,
    Limits,
    Reply,
)

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


NORMAL = Step()
"""The step that changes nothing: the receiver's normal reply, at once."""
DEFAULT_SCRIPT = Script()
