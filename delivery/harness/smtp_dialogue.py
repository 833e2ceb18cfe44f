"""The SMTP receiver dialogue of the harness: a sans-I/O core that `smtp_server` drives.

Fed the bytes a client sends, a `Dialogue` returns, in order, the actions its shell performs:
record a command line (`Seen`), send a reply after an optional delay (`Send`), record an
accepted message (`Accept`), start the TLS handshake (`StartTls`) or break it (`BreakTls`),
close the connection (`Close`). What it is told to do (`smtp_script`: a `Script` of `Step`s
per stage, the `Extensions` advertised, the `Limits`) is data.

Outcomes:
    A message is recorded (`Accept`) only when the reply at end of data is 2xx, so that a test
    that sees it in ``received`` knows the client was told it was accepted.
    Protocol errors get the replies a strict server gives (Postfix's texts, with RFC 3463
    codes): 500/501 syntax, 503 sequence, 555 parameters not advertised, 552 size, 554 no
    valid recipients. Any 421 reply closes the connection (RFC 5321 §3.8).

Security:
    Input is an untrusted client. Every buffer is capped (`Limits`); overlong lines and
    messages are read to their end and discarded, then refused. Bytes pipelined after
    STARTTLS are discarded before the handshake, never read as commands of the TLS session
    (the plaintext-injection flaw, CVE-2011-0411); their count is kept in ``discarded_bytes``.

Standards: RFC 5321 (SMTP), RFC 3207 (STARTTLS), RFC 1870 (SIZE), RFC 6152 (8BITMIME),
RFC 6531 (SMTPUTF8), RFC 3461 (DSN), RFC 2920 (PIPELINING), RFC 3030 (CHUNKING, BDAT),
RFC 2034 (ENHANCEDSTATUSCODES), RFC 8689 (REQUIRETLS).
Limits: no AUTH, no BINARYMIME, no per-recipient LMTP replies. End of data is only
CRLF "." CRLF; a bare LF is body data. REQUIRETLS is advertised only inside TLS.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from delivery.harness.smtp_script import (
    DEFAULT_EXTENSIONS,
    DEFAULT_LIMITS,
    DEFAULT_SCRIPT,
    NORMAL,
    Extensions,
    Limits,
    Reply,
    Script,
    Step,
)

__all__ = [
    "Accept",
    "Action",
    "BreakTls",
    "Close",
    "Dialogue",
    "ReceivedMessage",
    "Recipient",
    "Seen",
    "Send",
    "StartTls",
    "TlsInfo",
    "TlsOffer",
    "parse_params",
    "parse_path",
]

TlsOffer = Literal["none", "handshake", "broken"]
"""What STARTTLS leads to: not offered; a real handshake; 220 and then a broken handshake."""

_KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_XTEXT = re.compile(r"^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})+$")
_NOTIFY_VALUES = {"SUCCESS", "FAILURE", "DELAY"}


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """The TLS session a message came over: protocol version and cipher suite names."""

    version: str  # e.g. "TLSv1.3"
    cipher: str  # e.g. "TLS_AES_256_GCM_SHA384"


@dataclass(frozen=True, slots=True)
class Recipient:
    """An accepted recipient and its RCPT parameters (keys uppercase, None: no value)."""

    address: str
    params: Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message the receiver accepted, as it came over the wire."""

    mail_from: str  # "" for the null reverse-path
    mail_params: Mapping[str, str | None]  # MAIL parameters, keys uppercase, None: no value
    rcpts: tuple[Recipient, ...]
    body: bytes  # exactly as received, after dot-unstuffing (DATA) or as sent (BDAT)
    tls: TlsInfo | None  # None: clear text
    ehlo: str | None  # the EHLO or HELO name in force
    peer: tuple[str, int]  # the client's address and port
    chunked: bool = False  # True when sent with BDAT

    @property
    def rcpt_tos(self) -> list[str]:
        """The recipient addresses, in order."""
        return [rcpt.address for rcpt in self.rcpts]


@dataclass(frozen=True, slots=True)
class Seen:
    """A command line the client sent (CRLF stripped, decoded as UTF-8)."""

    line: str


@dataclass(frozen=True, slots=True)
class Send:
    """Reply lines to send, after ``delay`` seconds."""

    lines: tuple[str, ...]
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Accept:
    """A message was accepted; record it before sending the reply that follows."""

    message: ReceivedMessage


@dataclass(frozen=True, slots=True)
class StartTls:
    """Run the server side of the TLS handshake, then call `Dialogue.tls_started`."""


@dataclass(frozen=True, slots=True)
class BreakTls:
    """Answer the client's handshake with bytes that are not TLS, then close."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection after ``delay`` seconds."""

    delay: float = 0.0


Action = Seen | Send | Accept | StartTls | BreakTls | Close


@dataclass(slots=True)
class _Transaction:
    mail_from: str
    mail_params: dict[str, str | None]
    rcpts: list[Recipient] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    too_big: bool = False
    too_long: bool = False
    chunked: bool = False


Mode = Literal["command", "data", "bdat", "rejected"]


class Dialogue:
    """One SMTP session's protocol state. Not thread-safe; one per connection."""

    def __init__(
        self,
        *,
        hostname: str,
        peer: tuple[str, int],
        script: Script = DEFAULT_SCRIPT,
        extensions: Extensions = DEFAULT_EXTENSIONS,
        limits: Limits = DEFAULT_LIMITS,
        tls: TlsOffer = "none",
    ) -> None:
        self.hostname = hostname
        self.peer = peer
        self.script = script
        self.extensions = extensions
        self.limits = limits
        self.tls_offer: TlsOffer = tls
        self.tls: TlsInfo | None = None  # set once the handshake succeeded
        self.helo: str | None = None  # EHLO/HELO name in force
        self.esmtp = False  # True after EHLO, False after HELO
        self.closed = False
        self.awaiting_tls = False
        self.discarded_bytes = 0  # plaintext pipelined after STARTTLS, dropped
        self._buffer = bytearray()
        self._mode: Mode = "command"
        self._overlong = False  # inside a line longer than the cap, discarding it
        self._txn: _Transaction | None = None
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat_error: str | None = None
        self._errors = 0

    # ---- entry points -------------------------------------------------------------------

    def greet(self) -> list[Action]:
        """The actions at connection time: the greeting, or the scripted one."""
        step = self.script.greeting
        reply = step.reply or Reply(220, f"{self.hostname} ESMTP delivery harness")
        if not (200 <= reply.code < 300 or reply.code == 421):
            # RFC 5321 §3.1: after a 554 greeting, wait for QUIT and answer 503 to the rest.
            self._mode = "rejected"
        return self._respond(reply, step)

    def feed(self, data: bytes, /) -> list[Action]:
        """Process client bytes; returns the actions they lead to, in order."""
        if self.closed:
            return []
        self._buffer += data
        actions: list[Action] = []
        while not self.closed and not self.awaiting_tls:
            step = self._step()
            if step is None:
                break
            actions.extend(step)
        if self.awaiting_tls and self._buffer:
            # Plaintext sent before the handshake must not become TLS-session commands.
            self.discarded_bytes += len(self._buffer)
            self._buffer.clear()
        return actions

    def tls_started(self, info: TlsInfo, /) -> list[Action]:
        """The handshake succeeded: RFC 3207 §4.2, forget everything learnt in clear text."""
        self.awaiting_tls = False
        self.tls = info
        self.helo, self.esmtp, self._txn = None, False, None
        return []

    # ---- input framing ------------------------------------------------------------------

    def _step(self) -> list[Action] | None:
        """Consume one unit of input (a line, or part of a BDAT chunk); None: need more."""
        if self._mode == "bdat":
            return self._bdat_bytes()
        if self._mode == "data":
            return self._data_line()
        return self._command_line()

    def _command_line(self) -> list[Action] | None:
        end = self._buffer.find(b"\n")
        cap = self.limits.max_command_line_bytes
        if end < 0:
            if len(self._buffer) > cap:
                self._overlong = True
                self._buffer.clear()
            return None
        raw = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        if self._overlong or len(raw) > cap:
            self._overlong = False
            return [
                Seen("<command line too long>"),
                *self._error(Reply(500, "5.5.2 Error: line too long")),
            ]
        line = raw.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
        return [Seen(line), *self._command(line)]

    def _data_line(self) -> list[Action] | None:
        assert self._txn is not None
        end = self._buffer.find(b"\r\n")
        if end < 0:
            # Keep a trailing CR: it may be the first half of the CRLF that ends the line.
            keep = 1 if self._buffer.endswith(b"\r") else 0
            if len(self._buffer) - keep > self.limits.max_text_line_bytes + 1:
                self._txn.too_long = True
                self._overlong = True
                del self._buffer[: len(self._buffer) - keep]
            return None
        line = bytes(self._buffer[: end + 2])
        del self._buffer[: end + 2]
        if self._overlong:
            self._overlong = False
            return []
        if line == b".\r\n":
            return self._end_of_data()
        if line.startswith(b"."):
            line = line[1:]  # RFC 5321 §4.5.2: remove the transparency dot
        if len(line) > self.limits.max_text_line_bytes:
            self._txn.too_long = True
        self._add_body(line)
        return []

    def _bdat_bytes(self) -> list[Action] | None:
        if not self._buffer:
            return None if self._bdat_left else self._end_chunk()
        take = min(self._bdat_left, len(self._buffer))
        chunk = bytes(self._buffer[:take])
        del self._buffer[:take]
        self._bdat_left -= take
        if self._txn is not None and self._bdat_error is None:
            self._add_body(chunk)
        return self._end_chunk() if self._bdat_left == 0 else []

    def _add_body(self, data: bytes) -> None:
        assert self._txn is not None
        if self._txn.too_big:
            return
        if len(self._txn.body) + len(data) > self._size_limit():
            self._txn.too_big = True
            self._txn.body.clear()
            return
        self._txn.body += data

    def _size_limit(self) -> int:
        advertised = self.extensions.size
        cap = self.limits.max_message_bytes
        return cap if advertised is None else min(advertised, cap)

    # ---- replies --------------------------------------------------------------------------

    def _respond(self, default: Reply, step: Step = NORMAL) -> list[Action]:
        """Reply (the step's reply, else ``default``) after the step's delay; close when the
        step says so or the reply is 421. A step that closes without a reply sends nothing."""
        if step.close and step.reply is None:
            self.closed = True
            return [Close(step.delay)]
        reply = step.reply or default
        actions: list[Action] = [Send(tuple(reply.to_lines()), step.delay)]
        if step.close or reply.code == 421:
            actions.append(Close())
            self.closed = True
        return actions

    @staticmethod
    def _replies(step: Step) -> bool:
        """Whether the step sends a reply (it does unless it closes without one)."""
        return not (step.close and step.reply is None)

    def _error(self, reply: Reply) -> list[Action]:
        self._errors += 1
        if self._errors >= self.limits.max_errors:
            return self._respond(Reply(421, f"4.7.0 {self.hostname} Error: too many errors"))
        return self._respond(reply)

    def _ok(self, enhanced: str, text: str, code: int = 250) -> Reply:
        if self.extensions.enhancedstatuscodes and enhanced:
            return Reply(code, f"{enhanced} {text}")
        return Reply(code, text)

    # ---- commands -------------------------------------------------------------------------

    def _command(self, line: str) -> list[Action]:
        verb, _, arg = line.partition(" ")
        verb, arg = verb.upper(), arg.strip()
        if self._mode == "rejected":
            if verb == "QUIT":
                return self._quit(arg)
            return self._error(Reply(503, "5.5.1 Error: no service, send QUIT"))
        handler = {
            "EHLO": self._ehlo,
            "HELO": self._helo,
            "STARTTLS": self._starttls,
            "MAIL": self._mail,
            "RCPT": self._rcpt,
            "DATA": self._data,
            "BDAT": self._bdat,
            "RSET": self._rset,
            "NOOP": self._noop,
            "QUIT": self._quit,
            "VRFY": self._vrfy,
        }.get(verb)
        if handler is None or (verb == "BDAT" and not self.extensions.chunking):
            return self._error(Reply(500, "5.5.2 Error: command not recognized"))
        return handler(arg)

    def _ehlo(self, arg: str) -> list[Action]:
        if not arg:
            return self._error(Reply(501, "5.5.4 Syntax: EHLO hostname"))
        self._txn = None
        step = self.script.ehlo
        if step.reply is not None:
            # A scripted reply replaces the whole EHLO response; only a 2xx greets the client.
            ok = 200 <= step.reply.code < 300
            self.helo, self.esmtp = (arg, True) if ok else (None, False)
            return self._respond(step.reply, step)
        self.helo, self.esmtp = arg, True
        lines = [f"{self.hostname} greets {arg}", *self._keywords()]
        return self._respond(Reply(250, "\n".join(lines)), step)

    def _keywords(self) -> list[str]:
        ext = self.extensions
        keywords = []
        if ext.pipelining:
            keywords.append("PIPELINING")
        if ext.size is not None:
            keywords.append(f"SIZE {ext.size}")
        if self.tls_offer != "none" and self.tls is None:
            keywords.append("STARTTLS")
        if ext.enhancedstatuscodes:
            keywords.append("ENHANCEDSTATUSCODES")
        if ext.eightbitmime:
            keywords.append("8BITMIME")
        if ext.dsn:
            keywords.append("DSN")
        if ext.smtputf8:
            keywords.append("SMTPUTF8")
        if ext.chunking:
            keywords.append("CHUNKING")
        if ext.requiretls and self.tls is not None:
            keywords.append("REQUIRETLS")
        return keywords

    def _helo(self, arg: str) -> list[Action]:
        if not arg:
            return self._error(Reply(501, "5.5.4 Syntax: HELO hostname"))
        self._txn = None
        self.helo, self.esmtp = arg, False
        return self._respond(Reply(250, self.hostname))

    def _starttls(self, arg: str) -> list[Action]:
        if self.tls_offer == "none":
            return self._error(Reply(502, "5.5.1 Error: command not implemented"))
        if arg:
            return self._error(Reply(501, "5.5.4 Syntax: STARTTLS"))
        if self.tls is not None:
            return self._error(Reply(554, "5.5.1 Error: TLS already active"))
        if self._txn is not None:
            return self._error(Reply(503, "5.5.1 Error: MAIL transaction in progress"))
        step = self.script.starttls
        reply = step.reply or self._ok("2.0.0", "Ready to start TLS", 220)
        actions = self._respond(reply, step)
        if self.closed or reply.code != 220:
            return actions
        if self.tls_offer == "broken":
            self.closed = True
            return [*actions, BreakTls()]
        self.awaiting_tls = True
        return [*actions, StartTls()]

    def _need_helo(self) -> list[Action] | None:
        if self.helo is None:
            return self._error(Reply(503, "5.5.1 Error: send HELO/EHLO first"))
        return None

    def _mail(self, arg: str) -> list[Action]:
        if (refused := self._need_helo()) is not None:
            return refused
        if self._txn is not None:
            return self._error(Reply(503, "5.5.1 Error: nested MAIL command"))
        parsed = parse_path(arg, "FROM:")
        if parsed is None:
            return self._error(Reply(501, "5.5.4 Syntax: MAIL FROM:<address>"))
        address, param_text = parsed
        params = parse_params(param_text)
        if params is None:
            return self._error(Reply(501, "5.5.4 Error: bad parameter syntax"))
        if (bad := self._check_mail_params(params)) is not None:
            return self._error(bad)
        if not address.isascii() and "SMTPUTF8" not in params:
            return self._error(Reply(553, "5.6.7 Error: non-ASCII address requires SMTPUTF8"))
        step = self.script.mail
        reply = step.reply or self._ok("2.1.0", "Ok")
        if 200 <= reply.code < 300:
            self._txn = _Transaction(address, params)
        return self._respond(reply, step)

    def _check_mail_params(self, params: Mapping[str, str | None]) -> Reply | None:
        ext = self.extensions
        for key, value in params.items():
            allowed = self.esmtp and (
                (key == "SIZE" and ext.size is not None)
                or (key == "BODY" and ext.eightbitmime)
                or (key == "SMTPUTF8" and ext.smtputf8)
                or (key in ("RET", "ENVID") and ext.dsn)
                or (key == "REQUIRETLS" and ext.requiretls and self.tls is not None)
            )
            if not allowed:
                return Reply(555, f"5.5.4 Unsupported option: {key}")
            valid = {
                "SIZE": value is not None and value.isdigit(),
                "BODY": value is not None and value.upper() in ("7BIT", "8BITMIME"),
                "SMTPUTF8": value is None,
                "RET": value is not None and value.upper() in ("FULL", "HDRS"),
                "ENVID": value is not None and _XTEXT.match(value) is not None,
                "REQUIRETLS": value is None,
            }[key]
            if not valid:
                return Reply(501, f"5.5.4 Bad {key} parameter value")
        size = params.get("SIZE")
        if size is not None and int(size) > self._size_limit():
            return Reply(552, "5.3.4 Message size exceeds fixed limit")
        return None

    def _rcpt(self, arg: str) -> list[Action]:
        if (refused := self._need_helo()) is not None:
            return refused
        if self._txn is None:
            return self._error(Reply(503, "5.5.1 Error: need MAIL command"))
        parsed = parse_path(arg, "TO:")
        if parsed is None or not parsed[0]:
            return self._error(Reply(501, "5.5.4 Syntax: RCPT TO:<address>"))
        address, param_text = parsed
        params = parse_params(param_text)
        if params is None:
            return self._error(Reply(501, "5.5.4 Error: bad parameter syntax"))
        for key, value in params.items():
            if not (self.esmtp and self.extensions.dsn and key in ("NOTIFY", "ORCPT")):
                return self._error(Reply(555, f"5.5.4 Unsupported option: {key}"))
            if not _valid_dsn_rcpt_param(key, value):
                return self._error(Reply(501, f"5.5.4 Bad {key} parameter value"))
        if not address.isascii() and "SMTPUTF8" not in self._txn.mail_params:
            return self._error(Reply(553, "5.6.7 Error: non-ASCII address requires SMTPUTF8"))
        if len(self._txn.rcpts) >= self.limits.max_recipients:
            return self._respond(Reply(452, "4.5.3 Error: too many recipients"))
        step = self.script.rcpt_step(address)
        reply = step.reply or self._ok("2.1.5", "Ok")
        if 200 <= reply.code < 300:
            self._txn.rcpts.append(Recipient(address, MappingProxyType(params)))
        return self._respond(reply, step)

    def _data(self, arg: str) -> list[Action]:
        if (refused := self._need_helo()) is not None:
            return refused
        if arg:
            return self._error(Reply(501, "5.5.4 Syntax: DATA"))
        if self._txn is None:
            return self._error(Reply(503, "5.5.1 Error: need RCPT command"))
        if not self._txn.rcpts:
            return self._error(Reply(554, "5.5.1 Error: no valid recipients"))
        if self._txn.chunked:
            return self._error(Reply(503, "5.5.1 Error: DATA after BDAT"))
        step = self.script.data
        reply = step.reply or Reply(354, "End data with <CR><LF>.<CR><LF>")
        if reply.code == 354:
            self._mode = "data"
        else:
            self._txn = None
        return self._respond(reply, step)

    def _end_of_data(self) -> list[Action]:
        txn = self._txn
        assert txn is not None
        self._mode, self._txn = "command", None
        if txn.too_big:
            return self._respond(Reply(552, "5.3.4 Error: message too large"))
        if txn.too_long:
            return self._respond(Reply(500, "5.5.2 Error: line too long"))
        step = self.script.end_of_data
        reply = step.reply or self._ok("2.0.0", "Ok: queued")
        actions: list[Action] = []
        if reply.code < 300 and self._replies(step):
            message = ReceivedMessage(
                mail_from=txn.mail_from,
                mail_params=MappingProxyType(txn.mail_params),
                rcpts=tuple(txn.rcpts),
                body=bytes(txn.body),
                tls=self.tls,
                ehlo=self.helo,
                peer=self.peer,
                chunked=txn.chunked,
            )
            actions.append(Accept(message))
        return actions + self._respond(reply, step)

    def _bdat(self, arg: str) -> list[Action]:
        words = arg.split()
        if not 1 <= len(words) <= 2 or not words[0].isdigit():
            return self._error(Reply(501, "5.5.4 Syntax: BDAT size [LAST]"))
        if len(words) == 2 and words[1].upper() != "LAST":
            return self._error(Reply(501, "5.5.4 Syntax: BDAT size [LAST]"))
        # RFC 3030 §2: the chunk follows whatever we answer, so read it before refusing.
        self._mode, self._bdat_left = "bdat", int(words[0])
        self._bdat_last = len(words) == 2
        self._bdat_error = None
        if self.helo is None:
            self._bdat_error = "503 5.5.1 Error: send HELO/EHLO first"
        elif self._txn is None:
            self._bdat_error = "503 5.5.1 Error: need MAIL command"
        elif not self._txn.rcpts:
            self._bdat_error = "554 5.5.1 Error: no valid recipients"
        else:
            self._txn.chunked = True
        return []

    def _end_chunk(self) -> list[Action]:
        self._mode = "command"
        if self._bdat_error is not None:
            self._txn = None
            return self._error(Reply.parse(self._bdat_error))
        if self._bdat_last:
            return self._end_of_data()
        assert self._txn is not None
        return self._respond(self._ok("2.0.0", f"{len(self._txn.body)} octets received"))

    def _rset(self, arg: str) -> list[Action]:
        self._txn = None
        return self._respond(self._ok("2.0.0", "Ok"))

    def _noop(self, arg: str) -> list[Action]:
        return self._respond(self._ok("2.0.0", "Ok"))

    def _vrfy(self, arg: str) -> list[Action]:
        return self._respond(self._ok("2.0.0", "Send some mail, I'll try my best", 252))

    def _quit(self, arg: str) -> list[Action]:
        step = self.script.quit
        actions = self._respond(self._ok("2.0.0", "Bye", 221), step)
        if not self.closed:
            actions.append(Close())
            self.closed = True
        return actions


def parse_path(arg: str, keyword: str) -> tuple[str, str] | None:
    """Split ``FROM:<path> params`` into the address and the parameter text.

    Lenient only where real clients differ: a space after the colon. A source route
    (``<@a,@b:user@c>``) is dropped (RFC 5321 §4.1.2). None: not a valid path.

    >>> parse_path('FROM:<"a b"@example.test> SIZE=10', "FROM:")
    ('"a b"@example.test', 'SIZE=10')
    >>> parse_path("TO: <>", "TO:"), parse_path("TO:bob@x", "TO:")
    (('', ''), None)
    """
    if arg[: len(keyword)].upper() != keyword:
        return None
    rest = arg[len(keyword) :].lstrip()
    if not rest.startswith("<"):
        return None
    quoted, i = False, 1
    while i < len(rest):
        char = rest[i]
        if char == "\\" and quoted:
            i += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            break
        i += 1
    else:
        return None
    path, params = rest[1:i], rest[i + 1 :]
    if params and not params.startswith(" "):
        return None
    if path.startswith("@"):
        _route, colon, path = path.partition(":")
        if not colon:
            return None
    return path, params.strip()


def parse_params(text: str) -> dict[str, str | None] | None:
    """ESMTP parameters ``KEY[=VALUE] ...`` as a dict with uppercase keys; None: bad syntax.

    >>> parse_params("SIZE=100 SMTPUTF8 body=8bitmime")
    {'SIZE': '100', 'SMTPUTF8': None, 'BODY': '8bitmime'}
    """
    params: dict[str, str | None] = {}
    for word in text.split():
        key, eq, value = word.partition("=")
        if not _KEYWORD.match(key) or (eq and not value) or key.upper() in params:
            return None
        params[key.upper()] = value if eq else None
    return params


def _valid_dsn_rcpt_param(key: str, value: str | None) -> bool:
    if value is None:
        return False
    if key == "NOTIFY":
        words = value.upper().split(",")
        return words == ["NEVER"] or set(words) <= _NOTIFY_VALUES
    addr_type, semicolon, xtext = value.partition(";")
    return bool(semicolon) and _KEYWORD.match(addr_type) is not None and bool(xtext)
