"""The SMTP server dialogue: a sans-I/O protocol core that every SMTP listener of ours drives.

Fed the bytes a client sends, a `ServerDialogue` returns, in order, the actions its shell
performs: record a command line (`Seen`), send a reply after an optional delay (`Send`), start
the TLS handshake (`StartTls`, then call `ServerDialogue.tls_started`), close the connection
(`Close`), and the two steps whose answer the shell awaits:

    Authenticate(mechanism, identity, secret)   check the credentials, then `authenticated(ok)`
    Deliver(message)                            take responsibility for the message (e.g. queue
                                                it durably), then `delivered(decision)`

While an answer is pending the dialogue reads nothing further: commands the client pipelined
wait in its buffer and are answered, in order, by the actions `authenticated`/`delivered`
return. So the reply to the end of data goes out only after the shell's decision, e.g. after
the message is on disk. What to answer at MAIL, RCPT, DATA and the other stages comes from a
`Policy` (each answer a `Decision`: a reply replacing the normal one, a delay, a close); what
to advertise from `Extensions`; how much a client can make us hold from `Limits`.

Outcomes:
    Protocol errors get the replies a strict server gives (Postfix's texts, with RFC 3463
    codes): 500/501 syntax, 502 not offered, 503 sequence, 504 unknown AUTH mechanism, 530
    STARTTLS first, 535 bad credentials, 555 parameter not advertised, 552 size, 554 no valid
    recipients. After `Limits.max_errors` errors: 421 and close. Any 421 closes (RFC 5321
    §3.8). After a greeting that is not 2xx, everything but QUIT gets 503 (RFC 5321 §3.1).

Security:
    The client is untrusted. Every buffer is capped (`Limits`): overlong lines and messages are
    read to their end and discarded, then refused. Addresses and EHLO names with a control
    character (a CR or LF inside an address is how commands get smuggled into logs, headers
    and onward sessions) and MAIL/RCPT lines that are not UTF-8 are refused before any policy
    sees them; `mailbox_problem` is the full RFC 5321 syntax check a policy can apply. Bytes
    pipelined after STARTTLS are discarded before the handshake, never read as commands of the
    TLS session (the plaintext-injection flaw, CVE-2011-0411), and everything learnt in clear
    text (EHLO, transaction, authentication) is forgotten (RFC 3207 §4.2). AUTH is offered only
    inside TLS unless `Extensions.auth_in_clear`; secrets never appear in `Seen` lines or in
    the repr of `Authenticate`.

Standards: RFC 5321 (SMTP), RFC 3207 (STARTTLS), RFC 4954 (AUTH), RFC 4616 (PLAIN), RFC 1870
(SIZE), RFC 6152 (8BITMIME), RFC 6531 (SMTPUTF8), RFC 3461 (DSN), RFC 2920 (PIPELINING),
RFC 3030 (CHUNKING, BDAT), RFC 2034 (ENHANCEDSTATUSCODES), RFC 8689 (REQUIRETLS).
Limits: AUTH mechanisms PLAIN and LOGIN only, no authorization identity other than the
authentication identity; no BINARYMIME; no LMTP. End of data is only CRLF "." CRLF: a bare LF
is body data (the outbound side neutralises it). REQUIRETLS is advertised only inside TLS.
`feed` must not be called while an answer is pending (the shell stops reading then).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

__all__ = [
    "ACCEPT",
    "DEFAULT_EXTENSIONS",
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_COMMAND_LINE_BYTES",
    "DEFAULT_MAX_ERRORS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_RECIPIENTS",
    "DEFAULT_MAX_TEXT_LINE_BYTES",
    "MAX_DOMAIN_OCTETS",
    "MAX_LOCAL_PART_OCTETS",
    "MAX_PATH_OCTETS",
    "Action",
    "AuthMechanism",
    "Authenticate",
    "Close",
    "Decision",
    "Deliver",
    "Extensions",
    "Limits",
    "Policy",
    "ReceivedMessage",
    "Recipient",
    "Reply",
    "Seen",
    "Send",
    "ServerDialogue",
    "StartTls",
    "TlsInfo",
    "mailbox_problem",
    "parse_params",
    "parse_path",
]

DEFAULT_MAX_COMMAND_LINE_BYTES = 2048  # RFC 5321 §4.5.3.1.4 says 512, extensions add more;
# 2048 is Postfix's line_length_limit, so no valid client command is refused.
DEFAULT_MAX_TEXT_LINE_BYTES = 1000  # RFC 5321 §4.5.3.1.6: a text line, CRLF included
DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # bounds the memory one message can hold
DEFAULT_MAX_RECIPIENTS = 1000  # RFC 5321 §4.5.3.1.8 requires at least 100
DEFAULT_MAX_ERRORS = 20  # then 421 and close, as Postfix's smtpd_hard_error_limit
DEFAULT_IDLE_TIMEOUT_S = 300.0  # RFC 5321 §4.5.3.2.7: a server waits 5 minutes for a command
DEFAULT_TLS_HANDSHAKE_TIMEOUT_S = 30.0  # bounds a client that stalls mid-handshake

MAX_LOCAL_PART_OCTETS = 64
"""RFC 5321 §4.5.3.1.1: the longest local part a server must accept, and we accept."""
MAX_DOMAIN_OCTETS = 255
"""RFC 5321 §4.5.3.1.2: the longest domain name."""
MAX_PATH_OCTETS = 256
"""RFC 5321 §4.5.3.1.3: the longest reverse- or forward-path, angle brackets included."""
MAX_LABEL_OCTETS = 63  # RFC 1035 §2.3.4: one label of a domain name
MAX_BDAT_DIGITS = 20  # a chunk size beyond 10**20 octets is garbage, not a number to trust

AuthMechanism = Literal["PLAIN", "LOGIN"]
"""The SASL mechanisms the dialogue implements (RFC 4616; LOGIN is the de facto one)."""

_KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_XTEXT = re.compile(r"^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})+$")
_DIGITS = re.compile(rf"^[0-9]{{1,{MAX_BDAT_DIGITS}}}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOTIFY_VALUES = {"SUCCESS", "FAILURE", "DELAY"}
_REPLY_TEXT = re.compile(r"^([2-5][0-9][0-9])(?:[ -](.*))?$", re.DOTALL)
_LOGIN_USERNAME = "VXNlcm5hbWU6"  # base64 "Username:", the LOGIN mechanism's first challenge
_LOGIN_PASSWORD = "UGFzc3dvcmQ6"  # base64 "Password:"

# RFC 5321 §4.1.2 with RFC 6531 §3.3: non-ASCII characters extend atext, qtext and labels.
_UTF8 = "\u0080-\U0010ffff"
_ATEXT = rf"A-Za-z0-9!#$%&'*+/=?^_`{{|}}~\-{_UTF8}"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_QUOTED_STRING = re.compile(rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*"')
_LABEL = re.compile(rf"[A-Za-z0-9{_UTF8}](?:[A-Za-z0-9{_UTF8}-]*[A-Za-z0-9{_UTF8}])?")


# ---- values ------------------------------------------------------------------------------


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
class Decision:
    """A policy's answer at one stage.

    ``reply`` replaces the normal reply (None keeps it); ``delay`` is the seconds to wait
    before replying or closing; ``close`` closes the connection after the reply, or instead
    of it when ``reply`` is None; ``error`` counts the reply toward `Limits.max_errors`, as a
    syntax error does (a client that keeps sending bad addresses is cut off).
    """

    reply: Reply | None = None
    delay: float = 0.0
    close: bool = False
    error: bool = False


ACCEPT = Decision()
"""The decision that changes nothing: the normal reply, at once."""


@dataclass(frozen=True, slots=True)
class Extensions:
    """ESMTP extensions advertised in the EHLO reply (RFC 5321 §4.1.1.1).

    ``size`` is the SIZE value advertised and enforced; None advertises no SIZE (the
    `Limits` cap still applies). A parameter of an extension not advertised is refused (555).
    ``auth`` are the AUTH mechanisms offered, none by default; they are offered only inside
    TLS unless ``auth_in_clear``.
    """

    pipelining: bool = True
    size: int | None = DEFAULT_MAX_MESSAGE_BYTES
    eightbitmime: bool = True
    smtputf8: bool = True
    dsn: bool = True
    enhancedstatuscodes: bool = True
    chunking: bool = False
    requiretls: bool = False
    auth: tuple[AuthMechanism, ...] = ()
    auth_in_clear: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on what one client can make the server hold or wait for.

    The dialogue enforces the byte, recipient and error caps; the shell enforces the two
    timeouts (seconds): one read of a command or of data, and one TLS handshake.
    """

    max_command_line_bytes: int = DEFAULT_MAX_COMMAND_LINE_BYTES
    max_text_line_bytes: int = DEFAULT_MAX_TEXT_LINE_BYTES
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_recipients: int = DEFAULT_MAX_RECIPIENTS
    max_errors: int = DEFAULT_MAX_ERRORS
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    tls_handshake_timeout_s: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT_S


DEFAULT_EXTENSIONS = Extensions()
DEFAULT_LIMITS = Limits()


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
    """A message a client sent, complete, as it came over the wire."""

    mail_from: str  # "" for the null reverse-path
    mail_params: Mapping[str, str | None]  # MAIL parameters, keys uppercase, values as sent
    rcpts: tuple[Recipient, ...]
    body: bytes  # exactly as received, after dot-unstuffing (DATA) or as sent (BDAT)
    tls: TlsInfo | None  # None: clear text
    ehlo: str | None  # the EHLO or HELO name in force
    peer: tuple[str, int]  # the client's address and port
    chunked: bool = False  # True when sent with BDAT
    auth: str | None = None  # the authenticated identity (AUTH), None: not authenticated
    esmtp: bool = True  # False when the client said HELO

    @property
    def rcpt_tos(self) -> list[str]:
        """The recipient addresses, in order."""
        return [rcpt.address for rcpt in self.rcpts]


# ---- actions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    """A command line the client sent (CRLF stripped, decoded as UTF-8; AUTH data masked)."""

    line: str


@dataclass(frozen=True, slots=True)
class Send:
    """Reply lines to send, after ``delay`` seconds."""

    lines: tuple[str, ...]
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class StartTls:
    """Run the server side of the TLS handshake, then call `ServerDialogue.tls_started`."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection after ``delay`` seconds."""

    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Check these credentials, then call `ServerDialogue.authenticated` with the verdict."""

    mechanism: AuthMechanism
    identity: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Deliver:
    """Take responsibility for ``message`` (or refuse it), then call
    `ServerDialogue.delivered` with the decision: its reply is the end-of-data reply."""

    message: ReceivedMessage


Action = Seen | Send | StartTls | Close | Authenticate | Deliver


# ---- policy ------------------------------------------------------------------------------


class Policy:
    """What a server answers at each stage; this base accepts everything.

    Subclass and override. Each method sees the dialogue (``peer``, ``helo``, ``tls``,
    ``auth``, ``recipient_count``) after the protocol checks passed, and returns a `Decision`;
    `ACCEPT` gives the normal reply. The end of data is decided by the shell (`Deliver`).
    """

    def greeting(self, session: ServerDialogue, /) -> Decision:
        """At connection time; a reply that is not 2xx refuses the session."""
        return ACCEPT

    def ehlo(self, session: ServerDialogue, name: str, /) -> Decision:
        """At EHLO; a reply here replaces the whole EHLO response (HELO is not asked)."""
        return ACCEPT

    def starttls(self, session: ServerDialogue, /) -> Decision:
        """At STARTTLS; a reply other than 220 keeps the session in clear text."""
        return ACCEPT

    def mail(
        self, session: ServerDialogue, sender: str, params: Mapping[str, str | None], /
    ) -> Decision:
        """At MAIL FROM, once the path and parameters are valid; a 2xx opens the transaction."""
        return ACCEPT

    def rcpt(
        self, session: ServerDialogue, address: str, params: Mapping[str, str | None], /
    ) -> Decision:
        """At RCPT TO, once the path and parameters are valid; a 2xx adds the recipient."""
        return ACCEPT

    def data(self, session: ServerDialogue, /) -> Decision:
        """At DATA, with at least one recipient; a reply other than 354 ends the transaction."""
        return ACCEPT

    def quit(self, session: ServerDialogue, /) -> Decision:
        """At QUIT; the connection closes after the reply whatever it is."""
        return ACCEPT


# ---- the dialogue ------------------------------------------------------------------------


@dataclass(slots=True)
class _Transaction:
    mail_from: str
    mail_params: dict[str, str | None]
    rcpts: list[Recipient] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    too_big: bool = False
    too_long: bool = False
    chunked: bool = False


@dataclass(slots=True)
class _AuthExchange:
    """An AUTH exchange waiting for the client's next response line."""

    mechanism: AuthMechanism
    username: str | None = None  # LOGIN: the username once given


Mode = Literal["command", "data", "bdat", "rejected"]
Pending = Literal["auth", "deliver"]


class ServerDialogue:
    """One SMTP session's protocol state. Not thread-safe; one per connection.

    :param hostname: our name: greeting, EHLO reply.
    :param peer: the client's (address, port), kept with each message.
    :param policy: the decisions at each stage.
    :param extensions: what EHLO advertises (and hence which parameters are accepted).
    :param limits: the caps.
    :param starttls: whether STARTTLS is offered (the shell has a certificate).
    :param banner: the greeting text after the hostname.
    """

    def __init__(
        self,
        *,
        hostname: str,
        peer: tuple[str, int],
        policy: Policy | None = None,
        extensions: Extensions = DEFAULT_EXTENSIONS,
        limits: Limits = DEFAULT_LIMITS,
        starttls: bool = False,
        banner: str = "ESMTP delivery",
    ) -> None:
        self.hostname = hostname
        self.peer = peer
        self.policy = policy if policy is not None else Policy()
        self.extensions = extensions
        self.limits = limits
        self.starttls_offered = starttls
        self.banner = banner
        self.tls: TlsInfo | None = None  # set once the handshake succeeded
        self.helo: str | None = None  # EHLO/HELO name in force
        self.esmtp = False  # True after EHLO, False after HELO
        self.auth: str | None = None  # the authenticated identity
        self.closed = False
        self.awaiting_tls = False
        self.discarded_bytes = 0  # plaintext pipelined after STARTTLS, dropped
        self._buffer = bytearray()
        self._mode: Mode = "command"
        self._overlong = False  # inside a line longer than the cap, discarding it
        self._txn: _Transaction | None = None
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat_error: Reply | None = None
        self._errors = 0
        self._exchange: _AuthExchange | None = None
        self._pending: Pending | None = None
        self._pending_identity = ""

    # ---- what a policy reads ------------------------------------------------------------

    @property
    def recipient_count(self) -> int:
        """Recipients accepted so far in the current transaction (0 outside one)."""
        return len(self._txn.rcpts) if self._txn is not None else 0

    @property
    def pending(self) -> Pending | None:
        """The answer the dialogue waits for (`authenticated` or `delivered`), or None."""
        return self._pending

    # ---- entry points -------------------------------------------------------------------

    def greet(self) -> list[Action]:
        """The actions at connection time: the greeting, or the policy's refusal."""
        decision = self.policy.greeting(self)
        reply = decision.reply or Reply(220, f"{self.hostname} {self.banner}".rstrip())
        if not (200 <= reply.code < 300 or reply.code == 421):
            # RFC 5321 §3.1: after a 554 greeting, wait for QUIT and answer 503 to the rest.
            self._mode = "rejected"
        return self._respond(reply, decision)

    def feed(self, data: bytes, /) -> list[Action]:
        """Process client bytes; returns the actions they lead to, in order.

        :raises RuntimeError: an answer is pending (`pending`): the shell must not read then.
        """
        if self._pending is not None:
            raise RuntimeError(f"feed() while the {self._pending} answer is pending")
        if self.closed:
            return []
        self._buffer += data
        return self._drain()

    def tls_started(self, info: TlsInfo, /) -> list[Action]:
        """The handshake succeeded: RFC 3207 §4.2, forget everything learnt in clear text."""
        self.awaiting_tls = False
        self.tls = info
        self.helo, self.esmtp, self._txn, self.auth = None, False, None, None
        return self._drain()

    def authenticated(self, accepted: bool, /) -> list[Action]:
        """The verdict on the pending `Authenticate`; returns the reply and what follows."""
        if self._pending != "auth":
            raise RuntimeError("authenticated() without a pending Authenticate")
        self._pending = None
        if accepted:
            self.auth = self._pending_identity
            actions = self._respond(self._ok("2.7.0", "Authentication successful", 235))
        else:
            actions = self._error(Reply(535, "5.7.8 Error: authentication failed"))
        self._pending_identity = ""
        return actions + self._drain()

    def delivered(self, decision: Decision, /) -> list[Action]:
        """The decision on the pending `Deliver`; returns the end-of-data reply (the decision's,
        else 250) and the answers to whatever the client pipelined after it."""
        if self._pending != "deliver":
            raise RuntimeError("delivered() without a pending Deliver")
        self._pending = None
        actions = self._decide(self._ok("2.0.0", "Ok: queued"), decision)
        return actions + self._drain()

    def _drain(self) -> list[Action]:
        actions: list[Action] = []
        while not self.closed and not self.awaiting_tls and self._pending is None:
            step = self._step()
            if step is None:
                break
            actions.extend(step)
        if self.awaiting_tls and self._buffer:
            # Plaintext sent before the handshake must not become TLS-session commands.
            self.discarded_bytes += len(self._buffer)
            self._buffer.clear()
        return actions

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
            self._exchange = None
            return [
                Seen("<command line too long>"),
                *self._error(Reply(500, "5.5.2 Error: line too long")),
            ]
        raw = raw.rstrip(b"\r\n")
        if self._exchange is not None:
            return self._auth_response(raw)
        try:
            line, utf8 = raw.decode("utf-8"), True
        except UnicodeDecodeError:
            line, utf8 = raw.decode("utf-8", "backslashreplace"), False
        return [Seen(_masked(line)), *self._command(line, utf8)]

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

    def _respond(self, default: Reply, decision: Decision = ACCEPT) -> list[Action]:
        """Reply (the decision's reply, else ``default``) after the decision's delay; close
        when the decision says so or the reply is 421. A decision that closes without a reply
        sends nothing."""
        if decision.close and decision.reply is None:
            self.closed = True
            return [Close(decision.delay)]
        reply = decision.reply or default
        actions: list[Action] = [Send(tuple(reply.to_lines()), decision.delay)]
        if decision.close or reply.code == 421:
            actions.append(Close())
            self.closed = True
        return actions

    def _decide(self, default: Reply, decision: Decision) -> list[Action]:
        """`_respond`, counting the reply as an error when the decision says so."""
        if decision.error:
            self._errors += 1
            if self._errors >= self.limits.max_errors:
                return self._respond(self._too_many_errors())
        return self._respond(default, decision)

    def _error(self, reply: Reply) -> list[Action]:
        self._errors += 1
        if self._errors >= self.limits.max_errors:
            return self._respond(self._too_many_errors())
        return self._respond(reply)

    def _too_many_errors(self) -> Reply:
        return Reply(421, f"4.7.0 {self.hostname} Error: too many errors")

    def _ok(self, enhanced: str, text: str, code: int = 250) -> Reply:
        if self.extensions.enhancedstatuscodes and enhanced:
            return Reply(code, f"{enhanced} {text}")
        return Reply(code, text)

    # ---- commands -------------------------------------------------------------------------

    def _command(self, line: str, utf8: bool) -> list[Action]:
        verb, _, arg = line.partition(" ")
        verb, arg = verb.upper(), arg.strip()
        if self._mode == "rejected":
            if verb == "QUIT":
                return self._quit(arg)
            return self._error(Reply(503, "5.5.1 Error: no service, send QUIT"))
        if verb in ("MAIL", "RCPT") and not utf8:
            return self._error(Reply(501, "5.5.2 Error: the command line is not valid UTF-8"))
        handler = {
            "EHLO": self._ehlo,
            "HELO": self._helo,
            "STARTTLS": self._starttls,
            "AUTH": self._auth,
            "MAIL": self._mail,
            "RCPT": self._rcpt,
            "DATA": self._data,
            "BDAT": self._bdat,
            "RSET": self._rset,
            "NOOP": self._noop,
            "QUIT": self._quit,
            "VRFY": self._vrfy,
        }.get(verb)
        unknown = (verb == "BDAT" and not self.extensions.chunking) or (
            verb == "AUTH" and not self.extensions.auth
        )
        if handler is None or unknown:
            return self._error(Reply(500, "5.5.2 Error: command not recognized"))
        return handler(arg)

    def _ehlo(self, arg: str) -> list[Action]:
        if not arg or _CONTROL.search(arg):
            return self._error(Reply(501, "5.5.4 Syntax: EHLO hostname"))
        self._txn = None
        decision = self.policy.ehlo(self, arg)
        if decision.reply is not None:
            # A policy's reply replaces the whole EHLO response; only a 2xx greets the client.
            ok = 200 <= decision.reply.code < 300
            self.helo, self.esmtp = (arg, True) if ok else (None, False)
            return self._decide(decision.reply, decision)
        self.helo, self.esmtp = arg, True
        lines = [f"{self.hostname} greets {arg}", *self._keywords()]
        return self._decide(Reply(250, "\n".join(lines)), decision)

    def _auth_offered(self) -> bool:
        return bool(self.extensions.auth) and (
            self.tls is not None or self.extensions.auth_in_clear
        )

    def _keywords(self) -> list[str]:
        ext = self.extensions
        keywords = []
        if ext.pipelining:
            keywords.append("PIPELINING")
        if ext.size is not None:
            keywords.append(f"SIZE {ext.size}")
        if self.starttls_offered and self.tls is None:
            keywords.append("STARTTLS")
        if self._auth_offered():
            keywords.append("AUTH " + " ".join(ext.auth))
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
        if not arg or _CONTROL.search(arg):
            return self._error(Reply(501, "5.5.4 Syntax: HELO hostname"))
        self._txn = None
        self.helo, self.esmtp = arg, False
        return self._respond(Reply(250, self.hostname))

    def _starttls(self, arg: str) -> list[Action]:
        if not self.starttls_offered:
            return self._error(Reply(502, "5.5.1 Error: command not implemented"))
        if arg:
            return self._error(Reply(501, "5.5.4 Syntax: STARTTLS"))
        if self.tls is not None:
            return self._error(Reply(554, "5.5.1 Error: TLS already active"))
        if self._txn is not None:
            return self._error(Reply(503, "5.5.1 Error: MAIL transaction in progress"))
        decision = self.policy.starttls(self)
        reply = decision.reply or self._ok("2.0.0", "Ready to start TLS", 220)
        actions = self._decide(reply, decision)
        if self.closed or reply.code != 220:
            return actions
        self.awaiting_tls = True
        return [*actions, StartTls()]

    def _need_helo(self) -> list[Action] | None:
        if self.helo is None:
            return self._error(Reply(503, "5.5.1 Error: send HELO/EHLO first"))
        return None

    # ---- AUTH (RFC 4954) ------------------------------------------------------------------

    def _auth(self, arg: str) -> list[Action]:
        if not self._auth_offered():
            return self._error(Reply(530, "5.7.0 Must issue a STARTTLS command first"))
        if self.helo is None or not self.esmtp:
            return self._error(Reply(503, "5.5.1 Error: send EHLO first"))
        if self.auth is not None:
            return self._error(Reply(503, "5.5.1 Error: already authenticated"))
        if self._txn is not None:
            return self._error(Reply(503, "5.5.1 Error: MAIL transaction in progress"))
        words = arg.split()
        if not 1 <= len(words) <= 2:
            return self._error(Reply(501, "5.5.4 Syntax: AUTH mechanism [initial-response]"))
        mechanism = next((m for m in self.extensions.auth if m == words[0].upper()), None)
        if mechanism is None:
            return self._error(Reply(504, "5.5.4 Error: unsupported authentication mechanism"))
        self._exchange = _AuthExchange(mechanism)
        if len(words) == 1:
            challenge = "" if mechanism == "PLAIN" else _LOGIN_USERNAME
            return self._respond(Reply(334, challenge))
        return self._auth_response(words[1].encode("ascii", "replace"))

    def _auth_response(self, raw: bytes) -> list[Action]:
        """One client response of the AUTH exchange (RFC 4954 §4): base64, "=" for empty."""
        exchange = self._exchange
        assert exchange is not None
        if raw == b"*":
            self._exchange = None
            return self._error(Reply(501, "5.7.0 Error: authentication aborted"))
        try:
            text = "" if raw == b"=" else base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            self._exchange = None
            return self._error(Reply(501, "5.5.2 Error: cannot decode the AUTH response"))
        if exchange.mechanism == "LOGIN" and exchange.username is None:
            exchange.username = text
            return self._respond(Reply(334, _LOGIN_PASSWORD))
        self._exchange = None
        if exchange.mechanism == "LOGIN":
            assert exchange.username is not None
            identity, secret = exchange.username, text
        else:
            parts = text.split("\0")
            if len(parts) != 3 or not parts[1]:
                return self._error(Reply(501, "5.5.2 Error: malformed PLAIN response"))
            authzid, identity, secret = parts
            if authzid and authzid != identity:
                # RFC 4616 §2: acting as someone else is not something we authorize.
                return self._error(Reply(535, "5.7.8 Error: authentication failed"))
        if not identity or _CONTROL.search(identity):
            return self._error(Reply(535, "5.7.8 Error: authentication failed"))
        self._pending, self._pending_identity = "auth", identity
        return [Authenticate(exchange.mechanism, identity, secret)]

    # ---- the transaction ------------------------------------------------------------------

    def _mail(self, arg: str) -> list[Action]:
        if (refused := self._need_helo()) is not None:
            return refused
        if self._txn is not None:
            return self._error(Reply(503, "5.5.1 Error: nested MAIL command"))
        parsed = parse_path(arg, "FROM:")
        if parsed is None:
            return self._error(Reply(501, "5.5.4 Syntax: MAIL FROM:<address>"))
        address, param_text = parsed
        if _CONTROL.search(address):
            return self._error(
                Reply(501, "5.1.7 Bad sender address syntax: a control character (CR, LF...)")
            )
        params = parse_params(param_text)
        if params is None:
            return self._error(Reply(501, "5.5.4 Error: bad parameter syntax"))
        if (bad := self._check_mail_params(params)) is not None:
            return self._error(bad)
        if not address.isascii() and "SMTPUTF8" not in params:
            return self._error(Reply(553, "5.6.7 Error: non-ASCII address requires SMTPUTF8"))
        decision = self.policy.mail(self, address, MappingProxyType(params))
        reply = decision.reply or self._ok("2.1.0", "Ok")
        if 200 <= reply.code < 300:
            self._txn = _Transaction(address, params)
        return self._decide(reply, decision)

    def _check_mail_params(self, params: Mapping[str, str | None]) -> Reply | None:
        ext = self.extensions
        for key, value in params.items():
            allowed = self.esmtp and (
                (key == "SIZE" and ext.size is not None)
                or (key == "BODY" and ext.eightbitmime)
                or (key == "SMTPUTF8" and ext.smtputf8)
                or (key in ("RET", "ENVID") and ext.dsn)
                or (key == "REQUIRETLS" and ext.requiretls and self.tls is not None)
                or (key == "AUTH" and bool(ext.auth))
            )
            if not allowed:
                return Reply(555, f"5.5.4 Unsupported option: {key}")
            valid = {
                "SIZE": value is not None and _DIGITS.match(value) is not None,
                "BODY": value is not None and value.upper() in ("7BIT", "8BITMIME"),
                "SMTPUTF8": value is None,
                "RET": value is not None and value.upper() in ("FULL", "HDRS"),
                "ENVID": value is not None and _XTEXT.match(value) is not None,
                "REQUIRETLS": value is None,
                # RFC 4954 §5: "<>" or an xtext mailbox; accepted and not trusted.
                "AUTH": value is not None and (value == "<>" or _XTEXT.match(value) is not None),
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
        if _CONTROL.search(address):
            return self._error(
                Reply(501, "5.1.3 Bad recipient address syntax: a control character (CR, LF...)")
            )
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
        decision = self.policy.rcpt(self, address, MappingProxyType(params))
        reply = decision.reply or self._ok("2.1.5", "Ok")
        if 200 <= reply.code < 300:
            self._txn.rcpts.append(Recipient(address, MappingProxyType(params)))
        return self._decide(reply, decision)

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
        decision = self.policy.data(self)
        reply = decision.reply or Reply(354, "End data with <CR><LF>.<CR><LF>")
        if reply.code == 354:
            self._mode = "data"
        else:
            self._txn = None
        return self._decide(reply, decision)

    def _end_of_data(self) -> list[Action]:
        txn = self._txn
        assert txn is not None
        self._mode, self._txn = "command", None
        if txn.too_big:
            return self._respond(Reply(552, "5.3.4 Error: message too large"))
        if txn.too_long:
            return self._respond(Reply(500, "5.5.2 Error: line too long"))
        message = ReceivedMessage(
            mail_from=txn.mail_from,
            mail_params=MappingProxyType(txn.mail_params),
            rcpts=tuple(txn.rcpts),
            body=bytes(txn.body),
            tls=self.tls,
            ehlo=self.helo,
            peer=self.peer,
            chunked=txn.chunked,
            auth=self.auth,
            esmtp=self.esmtp,
        )
        self._pending = "deliver"
        return [Deliver(message)]

    def _bdat(self, arg: str) -> list[Action]:
        words = arg.split()
        if not 1 <= len(words) <= 2 or not _DIGITS.match(words[0]):
            return self._error(Reply(501, "5.5.4 Syntax: BDAT size [LAST]"))
        if len(words) == 2 and words[1].upper() != "LAST":
            return self._error(Reply(501, "5.5.4 Syntax: BDAT size [LAST]"))
        # RFC 3030 §2: the chunk follows whatever we answer, so read it before refusing.
        self._mode, self._bdat_left = "bdat", int(words[0])
        self._bdat_last = len(words) == 2
        self._bdat_error = None
        if self.helo is None:
            self._bdat_error = Reply(503, "5.5.1 Error: send HELO/EHLO first")
        elif self._txn is None:
            self._bdat_error = Reply(503, "5.5.1 Error: need MAIL command")
        elif not self._txn.rcpts:
            self._bdat_error = Reply(554, "5.5.1 Error: no valid recipients")
        else:
            self._txn.chunked = True
        return []

    def _end_chunk(self) -> list[Action]:
        self._mode = "command"
        if self._bdat_error is not None:
            self._txn = None
            return self._error(self._bdat_error)
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
        decision = self.policy.quit(self)
        actions = self._respond(self._ok("2.0.0", "Bye", 221), decision)
        if not self.closed:
            actions.append(Close())
            self.closed = True
        return actions


def _masked(line: str) -> str:
    """The line as `Seen` records it: an AUTH initial response is masked, never logged."""
    verb, _, rest = line.partition(" ")
    if verb.upper() == "AUTH" and len(rest.split()) > 1:
        return f"{verb} {rest.split()[0]} ****"
    return line


# ---- syntax ------------------------------------------------------------------------------


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
    """ESMTP parameters ``KEY[=VALUE] ...``: uppercase keys, values as sent; None: bad syntax.

    >>> parse_params("SIZE=100 SMTPUTF8 envid=AbC+2B")
    {'SIZE': '100', 'SMTPUTF8': None, 'ENVID': 'AbC+2B'}
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


def mailbox_problem(address: str, /) -> str | None:
    """mailbox_problem - what makes ``address`` no RFC 5321 Mailbox, or None when it is one.

    ``local-part@domain``: a dot-string or quoted-string local part of at most 64 octets, a
    domain of LDH labels (U-labels allowed, RFC 6531) or an IPv4/IPv6 address literal of at
    most 255 octets, and at most 254 octets in all (a path of 256 with its brackets). Whether
    non-ASCII may be used is the transaction's business (SMTPUTF8), not this check's.

    >>> mailbox_problem("Bob.Smith+tag@Example.ORG") is None
    True
    >>> mailbox_problem("bob@example..org")
    "the domain 'example..org' has an empty label"
    >>> mailbox_problem("bob smith@example.org")
    "the local part 'bob smith' is neither a dot-atom nor a quoted string (RFC 5321 §4.1.2)"
    """
    if _CONTROL.search(address):
        return "it contains a control character (CR, LF, NUL...)"
    local, at, domain = address.rpartition("@")
    if not at:
        return "it has no @domain"
    if not local:
        return "the local part before @ is empty"
    if not domain:
        return "the domain after @ is empty"
    octets = len(address.encode("utf-8"))
    if len(local.encode("utf-8")) > MAX_LOCAL_PART_OCTETS:
        return (
            f"the local part is {len(local.encode('utf-8'))} octets long; at most "
            f"{MAX_LOCAL_PART_OCTETS} (RFC 5321 §4.5.3.1.1)"
        )
    if len(domain.encode("utf-8")) > MAX_DOMAIN_OCTETS:
        return (
            f"the domain is {len(domain.encode('utf-8'))} octets long; at most "
            f"{MAX_DOMAIN_OCTETS} (RFC 5321 §4.5.3.1.2)"
        )
    if octets + 2 > MAX_PATH_OCTETS:
        return (
            f"the address is {octets} octets long; at most {MAX_PATH_OCTETS - 2} "
            "(RFC 5321 §4.5.3.1.3)"
        )
    if not (_DOT_STRING.fullmatch(local) or _QUOTED_STRING.fullmatch(local)):
        return (
            f"the local part {local!r} is neither a dot-atom nor a quoted string (RFC 5321 §4.1.2)"
        )
    return _domain_problem(domain)


def _domain_problem(domain: str) -> str | None:
    if domain.startswith("["):
        literal = domain[1:-1] if domain.endswith("]") else ""
        try:
            if literal[:5].upper() == "IPV6:":
                ipaddress.IPv6Address(literal[5:])
            else:
                ipaddress.IPv4Address(literal)
        except ValueError:
            return f"{domain!r} is not an IPv4 or IPv6: address literal (RFC 5321 §4.1.3)"
        return None
    for label in domain.split("."):
        if not label:
            return f"the domain {domain!r} has an empty label"
        if len(label.encode("utf-8")) > MAX_LABEL_OCTETS:
            return f"the domain {domain!r} has a label longer than {MAX_LABEL_OCTETS} octets"
        if not _LABEL.fullmatch(label):
            return (
                f"the domain {domain!r} has an invalid label {label!r} "
                "(letters, digits and inner hyphens only)"
            )
    return None
