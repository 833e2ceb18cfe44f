"""One outbound SMTP or LMTP client session over asyncio.

`SmtpSession.connect` opens a TCP connection to one IP address (optionally
from a given source address, optionally with TLS from the first byte) and
reads the greeting; `ehlo`, `starttls`, `auth`, `send`, `reset` and `quit` are
the steps the engine sequences. This module
offers mechanisms, not policy: whether TLS is required, which context
verifies the peer, and what a reply means for the message are the engine's
decisions. Each step either returns what the server said or raises one of
the classified errors of `delivery.smtp.errors`, naming host, IP and phase.

Outcomes:
    Reply / TransactionResult  what the server answered; 4xx and 5xx to MAIL,
                               RCPT, DATA or end of data are results, not errors
    ConnectFailed, PhaseTimeout, ConnectionLost, ProtocolViolation
                               the conversation broke; the session is closed
    UnexpectedReply            greeting not 220, EHLO/HELO/LHLO refused, RSET
                               refused, or a reply to a command never sent
    StartTlsRefused            the session stays open in clear text
    CertificateRejected, HandshakeFailed
                               STARTTLS or implicit TLS failed; the session is closed
    AuthNotProtected, AuthUnavailable
                               raised before AUTH is sent; nothing was sent
    AuthRefused                the server refused our credentials; the session
                               stays usable
    ExtensionNotOffered        raised before MAIL FROM; nothing was sent
    StaleConnection            (`send` with ``reset_first``, on a reused connection) the
                               connection turned out dead or closing before the
                               transaction began; nothing was accepted, it is closed,
                               and the caller may try again on a new connection

Security:
    The server, and before TLS anyone on the path, is untrusted. Replies are
    parsed with caps (`delivery.smtp.reply`); bytes buffered when the 220 to
    STARTTLS arrives are discarded, never read as replies inside TLS (RFC 3207
    §4.2, the CVE-2011-0411 class of injection); the extensions learnt before
    TLS are forgotten so the caller must EHLO again. Message content is
    normalised so it cannot end the data early (`delivery.smtp.data`), and
    envelope values are checked for command injection (`delivery.smtp.esmtp`).
    Only IP literals are connected to: this layer never resolves names.
    AUTH credentials are sent only inside TLS (PLAIN and LOGIN carry the secret
    itself), and never appear in errors or logs: a reply that echoes them is
    quoted with them redacted. Which TLS is good enough (verified or not) is
    the caller's choice, made when it secured the session.

Why not aiosmtplib's SMTP client (DESIGN §2 names it): in aiosmtplib 4.0.2,
`SMTPProtocol.data_received` holds one response future and drops bytes that
arrive while it is resolved, and a second reply already in its buffer is only
parsed when more bytes arrive, so the replies to a pipelined group (RFC 2920)
are lost or stall; `start_tls` does not clear its buffer after the 220, so
bytes injected in clear text would be read as the first reply inside TLS; a
reply is capped per line but not in lines or total size, and a multiline reply
whose codes disagree is accepted; `execute_data_command` reads one reply
after the content and raises unless it is 250, so LMTP's one reply per
recipient cannot be read. Per-phase timeouts and source binding it has. Those
are the essentials of this layer (pipelining, per-recipient results,
injection safety, caps), so the wire protocol here is a small asyncio
Protocol driving the pure `ReplyParser`, and TLS uses `loop.start_tls`.

Standards: RFC 5321, RFC 2920 (PIPELINING), RFC 3207 (STARTTLS), RFC 8314
(implicit TLS), RFC 4954 (AUTH), RFC 4616 (PLAIN), RFC 2033 (LMTP), RFC 1870,
RFC 3461, RFC 6152, RFC 6531, RFC 8689.
Limits: AUTH mechanisms PLAIN and LOGIN only (`AUTH_MECHANISMS`); no CHUNKING/
BDAT: the content always goes through DATA.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import ipaddress
import logging
import socket
import ssl
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, cast

from delivery.smtp import data as smtp_data
from delivery.smtp import esmtp
from delivery.smtp import tls as smtp_tls
from delivery.smtp.errors import (
    AuthNotProtected,
    AuthRefused,
    AuthUnavailable,
    CertificateRejected,
    ConnectFailed,
    ConnectionLost,
    ExtensionNotOffered,
    HandshakeFailed,
    InvalidArgument,
    Phase,
    PhaseTimeout,
    ProtocolViolation,
    ReplyFormatError,
    SmtpError,
    StartTlsRefused,
    UnexpectedReply,
)
from delivery.smtp.reply import Reply, ReplyParser

__all__ = [
    "AUTH_MECHANISMS",
    "MAX_QUEUED_REPLIES",
    "MAX_RECIPIENTS_PER_TRANSACTION",
    "QUIT_TIMEOUT_MS",
    "SmtpSession",
    "StaleConnection",
    "Timeouts",
    "TransactionResult",
]

log = logging.getLogger("delivery.smtp")

T = TypeVar("T")

MAX_RECIPIENTS_PER_TRANSACTION = 1000
"""RCPT TOs in one transaction. RFC 5321 §4.5.3.1.8 only promises 100 (servers
answer 452 beyond their own limit, a per-recipient result); the cap bounds one
pipelined group and the replies queued for it."""

MAX_QUEUED_REPLIES = MAX_RECIPIENTS_PER_TRANSACTION + 2
"""Replies received and not yet read: at most MAIL + every RCPT + DATA of one
pipelined group. More means the server answers commands nobody sent."""

AUTH_MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN")
"""The SASL mechanisms `SmtpSession.auth` implements, in our order of preference. Both send
the secret itself (base64 is no protection), which is why `auth` requires TLS; PLAIN takes
one round trip (RFC 4954 initial response), LOGIN three."""

_REDACTED = "[redacted]"
"""What stands for our credentials in a reply quoted in an error."""

QUIT_TIMEOUT_MS = 10_000
"""How long `quit` waits for the 221. The outcome is known by then; a server slow
to say goodbye must not hold a connection slot for a full phase timeout."""


class StaleConnection(ConnectionLost):
    """A reused connection was found dead or closing before its transaction began.

    Raised by `SmtpSession.send` with ``reset_first`` only, when the connection was closed
    while idle, RSET was not answered 250, or the connection was lost (or answered 421,
    RFC 5321 §3.8) before the reply to MAIL FROM: no reply of the transaction was read, so
    nothing was accepted and nothing is the message's fault. The session is closed.
    """


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-phase deadlines of a session, in milliseconds (MtaConnectionStrategy).

    Each bounds one wait, not the session: a session sending a message waits
    at most connect + greeting + ehlo + mail_from + n*rcpt_to + 3*data.

    :param connect: establishing the TCP connection to one address.
    :param greeting: from connected until the whole 220 greeting is read.
    :param ehlo: one EHLO, LHLO or HELO command and its reply; also RSET.
    :param mail_from: MAIL FROM and its reply (with PIPELINING: writing the
        whole MAIL/RCPT/DATA group, and then the MAIL FROM reply).
    :param rcpt_to: each RCPT TO and its reply.
    :param data: each of: DATA and its 354; writing the whole content; the
        reply to the end of data (LMTP: each per-recipient reply).
    """

    connect: int
    greeting: int
    ehlo: int
    mail_from: int
    rcpt_to: int
    data: int

    def __post_init__(self) -> None:
        for name in ("connect", "greeting", "ehlo", "mail_from", "rcpt_to", "data"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise InvalidArgument(
                    name, f"timeout must be a positive number of ms, not {value!r}"
                )


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """What the server answered to one message's transaction. Classification is the caller's.

    :param recipients: the envelope's recipient addresses, in order.
    :param mail: the reply to MAIL FROM.
    :param rcpts: (address, reply) for each RCPT TO sent, in envelope order;
        empty when MAIL FROM was refused without PIPELINING (nothing was sent).
    :param data: the reply to DATA (354 to go on), or None when DATA was not
        sent because no recipient was accepted.
    :param final: (address, reply) to the end of data for each accepted
        recipient: SMTP pairs every one with the single reply, LMTP gives each
        its own. Empty when the content was not sent.
    """

    recipients: tuple[str, ...]
    mail: Reply
    rcpts: tuple[tuple[str, Reply], ...]
    data: Reply | None
    final: tuple[tuple[str, Reply], ...]

    def per_recipient(self) -> tuple[tuple[str, Reply], ...]:
        """Return, for each envelope recipient in order, the reply that decided its fate.

        That is the first of: MAIL FROM if it failed, its RCPT TO if it failed,
        DATA if not 354, else its end-of-data reply. Only a 2xx here means the
        server took responsibility for that recipient.
        """
        finals = iter(self.final)
        decided: list[tuple[str, Reply]] = []
        for index, address in enumerate(self.recipients):
            reply = self.mail
            if self.mail.is_success and index < len(self.rcpts):
                reply = self.rcpts[index][1]
                if reply.is_success and self.data is not None:
                    # 354 is not a success: if the content was not sent, nothing was delivered.
                    reply = self.data if self.data.code != 354 else next(finals, ("", self.data))[1]
            decided.append((address, reply))
        return tuple(decided)


class _Wire(asyncio.Protocol):
    """Transport glue: received bytes go through a ReplyParser into a queue of replies."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.parser = ReplyParser()
        self.replies: collections.deque[Reply] = collections.deque()
        self.failure: ReplyFormatError | None = None
        self.transport: asyncio.Transport | None = None
        self.gone = False  # peer sent EOF, or the connection was lost
        self._waiter: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.failure is not None:
            return
        try:
            self.replies.extend(self.parser.feed(data))
            if len(self.replies) > MAX_QUEUED_REPLIES:
                raise ReplyFormatError(f"more than {MAX_QUEUED_REPLIES} replies nobody asked for")
        except ReplyFormatError as exc:
            self.replies.extend(exc.replies)  # valid replies before the fault come first
            self.failure = exc
        self._wake()

    def eof_received(self) -> bool:
        self.gone = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self._writable.set()
        self._wake()

    @property
    def writable(self) -> bool:
        """False while the transport's buffer is above its high-water mark."""
        return self._writable.is_set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_reply(self) -> Reply:
        """Return the next reply; replies already received come before EOF and errors."""
        while True:
            if self.replies:
                return self.replies.popleft()
            if self.failure is not None:
                raise self.failure
            if self.gone:
                raise ConnectionResetError("the server closed the connection")
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def send(self, data: bytes) -> None:
        """Write `data` and wait until the transport's buffer has drained below its mark."""
        if self.gone or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self.transport.write(data)
        await self.drained()

    def write_now(self, data: bytes) -> bool:
        """Write `data` if the connection is open and its buffer below the mark: True when
        nothing is left to wait for; False when nothing was written (use `send`)."""
        transport = self.transport
        if self.gone or transport is None or transport.is_closing() or not self._writable.is_set():
            return False
        transport.write(data)
        return True

    async def drained(self) -> None:
        """Wait until the transport's buffer has drained below its mark."""
        await self._writable.wait()
        if self.gone:
            raise ConnectionResetError("the server closed the connection")


def _handshake_fault(exc: BaseException) -> str:
    """What broke a TLS handshake, in words even when the exception carries none.

    >>> _handshake_fault(ConnectionResetError()), _handshake_fault(ssl.SSLError(1, "bad mac"))
    ('the server closed the connection (ConnectionResetError)', 'bad mac')
    """
    if text := str(exc):
        return text
    if isinstance(exc, ConnectionError | EOFError):
        return f"the server closed the connection ({type(exc).__name__})"
    return type(exc).__name__


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g}s"


def _peer_label(server_name: str, ip: str, port: int) -> str:
    """The peer as Postfix names it: ``mx.example.com[192.0.2.1]``, plus :port if not 25."""
    return f"{server_name}[{ip}]" + (f":{port}" if port != 25 else "")


class SmtpSession:
    """One SMTP/LMTP client connection to one IP address. Create with `connect`.

    Attributes: `server_name`, `remote_ip`, `port`, `local_ip`, `lmtp`,
    `greeting` (the 220), `tls` (TlsInfo once STARTTLS or implicit TLS succeeded, else None);
    properties `is_tls`, `closed`, `extensions`.
    """

    def __init__(
        self,
        wire: _Wire,
        *,
        server_name: str,
        remote_ip: str,
        port: int,
        timeouts: Timeouts,
        lmtp: bool,
    ) -> None:
        self._wire = wire
        self._timeouts = timeouts
        self._extensions: dict[str, str] = {}
        self._greeted = False  # a successful EHLO/LHLO/HELO since connect or STARTTLS
        self.server_name, self.remote_ip, self.port, self.lmtp = server_name, remote_ip, port, lmtp
        transport = wire.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        self.local_ip: str | None = sockname[0] if sockname else None
        self.greeting: Reply | None = None
        self.tls: smtp_tls.TlsInfo | None = None
        self._peer = _peer_label(server_name, remote_ip, port)

    @classmethod
    async def connect(
        cls,
        ip: str,
        port: int,
        *,
        server_name: str,
        timeouts: Timeouts,
        source_ip: str | None = None,
        lmtp: bool = False,
        tls_context: ssl.SSLContext | None = None,
        tls_timeout_ms: int | None = None,
    ) -> SmtpSession:
        """Connect to `ip`:`port` and read the greeting (220 expected).

        With `tls_context`, the connection is TLS from the first byte (implicit
        TLS, RFC 8314 §3, e.g. submissions on port 465): the handshake follows
        the TCP connect, verifying `server_name` under a PKIX context, and the
        greeting is read inside TLS. `tls` is then set, `starttls` is refused,
        and the handshake fails as STARTTLS's does (phase "tls").

        :param ip: an IP address literal; names are never resolved here.
        :param server_name: the host's name (MX or relay), for messages and logs;
            with implicit TLS also the SNI and the name verified.
        :param source_ip: local address to bind (MtaConnectionStrategy sourceIps).
        :param lmtp: speak LMTP (RFC 2033): LHLO, one reply per recipient after DATA.
        :param tls_context: `tls.pkix_context(...)` or `tls.unverified_context()`
            for implicit TLS; None for a clear-text start (STARTTLS may follow).
        :param tls_timeout_ms: tlsTimeout: bounds the implicit TLS handshake;
            required with `tls_context`.
        :raises InvalidArgument: `ip` or `source_ip` is not an IP literal, or
            `tls_context` without a positive `tls_timeout_ms`.
        :raises ConnectFailed, PhaseTimeout, ConnectionLost, ProtocolViolation:
        :raises CertificateRejected, HandshakeFailed: the implicit TLS handshake failed.
        :raises UnexpectedReply: the greeting was not 220 (we QUIT first).
        """
        for field, value in (("ip", ip), ("source_ip", source_ip)):
            if value is not None:
                try:
                    ipaddress.ip_address(value)
                except ValueError:
                    raise InvalidArgument(field, f"{value!r} is not an IP address") from None
        if tls_context is not None and (tls_timeout_ms is None or tls_timeout_ms <= 0):
            raise InvalidArgument(
                "tls_timeout_ms", f"implicit TLS needs a positive timeout, not {tls_timeout_ms!r}"
            )
        loop = asyncio.get_running_loop()
        wire = _Wire(loop)
        peer = _peer_label(server_name, ip, port)
        deadline = asyncio.timeout(timeouts.connect / 1000)
        try:
            async with deadline:
                await loop.create_connection(
                    lambda: wire,
                    ip,
                    port,
                    local_addr=(source_ip, 0) if source_ip is not None else None,
                    flags=socket.AI_NUMERICHOST,
                )
        except TimeoutError as exc:
            if deadline.expired():
                raise PhaseTimeout(
                    server_name,
                    ip,
                    "connect",
                    f"{peer} did not accept the connection within {_seconds(timeouts.connect)}",
                ) from exc
            raise ConnectFailed(
                server_name, ip, "connect", f"cannot connect to {peer}: {exc}"
            ) from exc
        except OSError as exc:
            source = f" from {source_ip}" if source_ip is not None else ""
            reason = exc.strerror or str(exc)
            raise ConnectFailed(
                server_name, ip, "connect", f"cannot connect to {peer}{source}: {reason}"
            ) from exc
        session = cls(
            wire, server_name=server_name, remote_ip=ip, port=port, timeouts=timeouts, lmtp=lmtp
        )
        if tls_context is not None:
            assert tls_timeout_ms is not None  # checked above
            await session._implicit_tls(tls_context, tls_timeout_ms)
        greeting = await session._read("greeting", timeouts.greeting, "send its greeting")
        if greeting.code != 220:
            await session.quit()
            raise UnexpectedReply(
                server_name, ip, "greeting", f"{peer} refused the session: {greeting}", greeting
            )
        session.greeting = greeting
        return session

    # -- state --------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection is closed, by either side: the session is unusable."""
        transport = self._wire.transport
        return self._wire.gone or transport is None or transport.is_closing()

    @property
    def is_tls(self) -> bool:
        """True once STARTTLS succeeded, or from the start with implicit TLS."""
        return self.tls is not None

    @property
    def extensions(self) -> dict[str, str]:
        """The extensions of the last successful EHLO/LHLO (a copy); {} after HELO or STARTTLS."""
        return dict(self._extensions)

    def supports(self, extension: str, /) -> bool:
        """True if the last EHLO/LHLO announced `extension` (case-insensitive)."""
        return extension.upper() in self._extensions

    @property
    def pending_replies(self) -> bool:
        """True when the server sent something nobody asked for (e.g. a 421 while idle)."""
        return bool(self._wire.replies) or self._wire.failure is not None

    # -- steps --------------------------------------------------------------

    async def ehlo(self, name: str, /) -> Reply:
        """Send EHLO (LHLO for LMTP); on a 5xx to EHLO, fall back to HELO.

        :param name: our host name (ehloHostname) or an address literal.
        :returns: the successful reply; `extensions` is updated (empty after HELO).
        :raises InvalidArgument: `name` is not a domain or address literal.
        :raises UnexpectedReply: refused (4xx to EHLO; EHLO and HELO both refused; LHLO refused).
        :raises PhaseTimeout, ConnectionLost, ProtocolViolation:
        """
        esmtp.check_ehlo_name(name)
        verb = "LHLO" if self.lmtp else "EHLO"
        reply = await self._command(f"{verb} {name}\r\n".encode("ascii"), "ehlo", f"answer {verb}")
        if reply.is_success:
            self._extensions, self._greeted = esmtp.parse_extensions(reply), True
            return reply
        if self.lmtp or not reply.is_permanent:
            raise UnexpectedReply(
                self.server_name,
                self.remote_ip,
                "ehlo",
                f"{self._peer} refused {verb}: {reply}",
                reply,
            )
        helo = await self._command(f"HELO {name}\r\n".encode("ascii"), "ehlo", "answer HELO")
        if not helo.is_success:
            raise UnexpectedReply(
                self.server_name,
                self.remote_ip,
                "ehlo",
                f"{self._peer} refused EHLO ({reply}) and HELO: {helo}",
                helo,
            )
        self._extensions, self._greeted = {}, True
        return helo

    async def starttls(
        self, context: ssl.SSLContext, /, *, server_hostname: str, timeout_ms: int
    ) -> smtp_tls.TlsInfo:
        """Send STARTTLS and perform the TLS handshake (RFC 3207).

        The caller checks `supports("STARTTLS")` first, and must EHLO again
        after success: what the server said before TLS is forgotten (§4.2).

        :param context: `tls.pkix_context(...)` or `tls.unverified_context()`.
        :param server_hostname: SNI, and the name verified under a PKIX context.
        :param timeout_ms: tlsTimeout: bounds the STARTTLS command plus the handshake.
        :raises StartTlsRefused: answered with anything but 220; the session stays usable.
        :raises CertificateRejected: the certificate failed verification; session closed.
        :raises HandshakeFailed: other handshake failure, EOF or timeout; session closed.
        :raises ProtocolViolation: the reply to STARTTLS was malformed; session closed.
        """
        if self.is_tls:
            raise RuntimeError("starttls() on a session that is already TLS")
        self._expect_quiet("starttls", "STARTTLS")
        deadline = asyncio.timeout(timeout_ms / 1000)
        try:
            async with deadline:
                reply = await self._exchange(b"STARTTLS\r\n")
                if reply.code != 220:
                    raise StartTlsRefused(
                        self.server_name,
                        self.remote_ip,
                        "starttls",
                        f"{self._peer} refused STARTTLS: {reply}",
                        reply,
                    )
                return await self._handshake(context, server_hostname, timeout_ms)
        except StartTlsRefused:
            raise
        except asyncio.CancelledError:
            self.close()
            raise
        except ReplyFormatError as exc:
            self.close()
            raise ProtocolViolation(
                self.server_name,
                self.remote_ip,
                "starttls",
                f"{self._peer} sent a malformed reply to STARTTLS: {exc}",
            ) from exc
        except (ssl.SSLError, OSError) as exc:  # TimeoutError is an OSError
            self.close()
            what = "complete STARTTLS and the TLS handshake"
            raise self._tls_error(
                exc, "starttls", server_hostname, timeout_ms, deadline.expired(), what
            ) from exc

    def peer_chain(self) -> list[bytes]:
        """Return the certificates the peer sent (DER, leaf first); [] before TLS."""
        transport = self._wire.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        return smtp_tls.peer_chain(ssl_object) if ssl_object is not None else []

    async def auth(
        self,
        username: str,
        secret: str,
        /,
        *,
        mechanisms: Sequence[str] = AUTH_MECHANISMS,
    ) -> Reply:
        """Authenticate with AUTH (RFC 4954), PLAIN (RFC 4616) or LOGIN, as the server offers.

        The mechanism is the first of `mechanisms` that the last EHLO/LHLO
        announced in its AUTH line. Credentials are sent only inside TLS
        (STARTTLS then EHLO again, or implicit TLS); neither they nor their
        base64 forms ever appear in an error: a reply that echoes them is quoted
        redacted. Each command and its reply are bounded by the ehlo timeout.

        :param username: the authentication identity (UTF-8); PLAIN sends no
            separate authorization identity.
        :param secret: the password (UTF-8).
        :param mechanisms: acceptable mechanisms, in order of preference; a
            subset of `AUTH_MECHANISMS`.
        :returns: the 235 reply.
        :raises InvalidArgument: an unknown mechanism, or a NUL in the username
            or secret (RFC 4616 §2).
        :raises RuntimeError: no successful EHLO since connect or STARTTLS.
        :raises AuthNotProtected: the session is not TLS-protected; nothing was sent.
        :raises AuthUnavailable: the server offers none of `mechanisms`; nothing was sent.
        :raises AuthRefused: the server refused (e.g. 535 5.7.8); `reply` holds its
            reply; the session stays usable.
        :raises PhaseTimeout, ConnectionLost, ProtocolViolation, UnexpectedReply:
            phase "auth"; the session is closed.
        """
        for mechanism in mechanisms:
            if mechanism.upper() not in AUTH_MECHANISMS:
                raise InvalidArgument(
                    "mechanisms", f"{mechanism!r} is not one of {', '.join(AUTH_MECHANISMS)}"
                )
        if "\0" in username or "\0" in secret:
            raise InvalidArgument("credentials", "the username or secret contains a NUL")
        if not self._greeted:
            raise RuntimeError("auth() before a successful ehlo() (needed again after starttls())")
        if not self.is_tls:
            raise AuthNotProtected(
                self.server_name,
                self.remote_ip,
                f"{self._peer} is not TLS-protected: credentials are never sent in clear text",
            )
        offered = self._extensions.get("AUTH", "").upper().split()
        chosen = next((m.upper() for m in mechanisms if m.upper() in offered), None)
        if chosen is None:
            raise AuthUnavailable(
                self.server_name,
                self.remote_ip,
                f"{self._peer} offers no AUTH mechanism we may use "
                f"({', '.join(m.upper() for m in mechanisms)}): "
                + (" ".join(offered) or "no AUTH at all"),
            )
        user_bytes, secret_bytes = username.encode("utf-8"), secret.encode("utf-8")
        if chosen == "PLAIN":
            token = _b64(b"\0" + user_bytes + b"\0" + secret_bytes)
            first, responses = f"AUTH PLAIN {token}", []
        else:
            token = _b64(secret_bytes)
            first, responses = "AUTH LOGIN", [_b64(user_bytes), token]
        hidden = [text for text in (secret, token) if text]
        try:
            reply = await self._auth_step(first)
            while reply.code == 334:  # a challenge: the next response, if we have one
                if not responses:
                    # RFC 4954 §4: "*" cancels the exchange; the server answers 501.
                    cancelled = await self._auth_step("*")
                    raise AuthRefused(
                        self.server_name,
                        self.remote_ip,
                        f"{self._peer} asked for more than AUTH {chosen} sends; "
                        f"cancelled: {_redacted(cancelled, hidden)}",
                        _redacted(cancelled, hidden),
                    )
                reply = await self._auth_step(responses.pop(0))
        except (ProtocolViolation, UnexpectedReply) as exc:
            if isinstance(exc, AuthRefused):
                raise
            # Their sentence quotes what the server sent, which may echo our credentials.
            quoted = None if exc.reply is None else _redacted(exc.reply, hidden)
            raise type(exc)(
                self.server_name, self.remote_ip, "auth", _hide(exc.message, hidden), quoted
            ) from None
        if reply.code != 235:
            refused = _redacted(reply, hidden)
            raise AuthRefused(
                self.server_name,
                self.remote_ip,
                f"{self._peer} refused AUTH {chosen} for {username!r}: {refused}",
                refused,
            )
        return reply

    async def send(
        self, envelope: esmtp.Envelope, body: bytes, /, *, reset_first: bool = False
    ) -> TransactionResult:
        """Run one mail transaction: MAIL FROM, RCPT TO each recipient, DATA, content.

        With PIPELINING (RFC 2920) MAIL, every RCPT and DATA go out in one
        write and the replies are read in order; otherwise one at a time. If no
        recipient is accepted the content is not sent: DATA is not sent either
        (RSET instead), or, pipelined, DATA's 354 is answered with a lone "."
        (RFC 2920 §3.1). After a result the session can carry the next message
        unless `closed` (an RSET that failed, or LMTP's lone-dot case).

        :param body: the message as stored; line endings and dots are fixed by
            `data.sized_data`.
        :param reset_first: the connection was idle since its last transaction (a
            pooled connection): check it with RSET first (in the same write as MAIL
            FROM with PIPELINING, RFC 2920 §3.1 allows it), and raise `StaleConnection`
            rather than a failure of this message when it is dead or closing.
        :returns: every reply; `TransactionResult.per_recipient` for outcomes.
        :raises RuntimeError: `ehlo` has not succeeded since connect or STARTTLS.
        :raises InvalidArgument: more than MAX_RECIPIENTS_PER_TRANSACTION recipients.
        :raises ExtensionNotOffered: SMTPUTF8 or REQUIRETLS needed and not offered
            (REQUIRETLS also needs TLS); nothing was sent.
        :raises StaleConnection: with ``reset_first`` only (see there); closed.
        :raises PhaseTimeout, ConnectionLost, ProtocolViolation, UnexpectedReply:
            the phase is the one that broke; the session is closed.
        """
        if not self._greeted:
            raise RuntimeError("send() before a successful ehlo() (needed again after starttls())")
        if len(envelope.recipients) > MAX_RECIPIENTS_PER_TRANSACTION:
            raise InvalidArgument(
                "recipients",
                f"{len(envelope.recipients)} recipients; at most "
                f"{MAX_RECIPIENTS_PER_TRANSACTION} per transaction",
            )
        self._check_extensions(envelope)
        if reset_first and (self.closed or self.pending_replies):
            what = "sent a reply nobody asked for" if self.pending_replies else "closed"
            self.close()
            raise StaleConnection(
                self.server_name,
                self.remote_ip,
                "rset",
                f"the connection to {self._peer} was {what} while idle",
            )
        size, content = smtp_data.sized_data(body)
        mail_line = esmtp.format_mail(envelope, self._extensions, size)
        rcpt_lines = [esmtp.format_rcpt(envelope, r, self._extensions) for r in envelope.recipients]
        addresses = tuple(r.address for r in envelope.recipients)
        timeouts = self._timeouts
        rcpts: list[tuple[str, Reply]] = []
        if self.supports("PIPELINING"):
            self._expect_quiet("mail", "MAIL FROM")
            group = mail_line + b"".join(rcpt_lines) + b"DATA\r\n"
            if reset_first:
                group = b"RSET\r\n" + group
            mail = await self._fresh(self._send_group(group, reset_first=reset_first), reset_first)
            self._check_class(mail, "mail", "MAIL FROM")
            for address in addresses:
                reply = await self._read("rcpt", timeouts.rcpt_to, "answer RCPT TO")
                rcpts.append((address, self._check_class(reply, "rcpt", "RCPT TO")))
            data = await self._read("data", timeouts.data, "answer DATA")
        else:
            if reset_first:
                await self._fresh(self.reset(), reset_first)
            mail = await self._fresh(
                self._command(mail_line, "mail", "answer MAIL FROM", timeouts.mail_from),
                reset_first,
            )
            if not self._check_class(mail, "mail", "MAIL FROM").is_success:
                return TransactionResult(addresses, mail, (), None, ())
            for address, line in zip(addresses, rcpt_lines, strict=True):
                reply = await self._command(line, "rcpt", "answer RCPT TO", timeouts.rcpt_to)
                rcpts.append((address, self._check_class(reply, "rcpt", "RCPT TO")))
            if not any(reply.is_success for _, reply in rcpts):
                await self._reset_quietly()
                return TransactionResult(addresses, mail, tuple(rcpts), None, ())
            data = await self._command(b"DATA\r\n", "data", "answer DATA", timeouts.data)
        self._check_class(data, "data", "DATA", go_ahead=True)
        accepted = [a for a, r in rcpts if r.is_success] if mail.is_success else []
        if data.code != 354:
            if mail.is_success:
                await self._reset_quietly()
            return TransactionResult(addresses, mail, tuple(rcpts), data, ())
        if not accepted:
            await self._end_empty_data()
            return TransactionResult(addresses, mail, tuple(rcpts), data, ())
        await self._write(content, "data", timeouts.data, "accept the message content")
        if self.lmtp:  # RFC 2033 §4.2: one reply per accepted recipient, in RCPT order
            final = [
                (a, self._check_class(await self._read_end_of_data(), "dot", "the end of data"))
                for a in accepted
            ]
        else:
            reply = self._check_class(await self._read_end_of_data(), "dot", "the end of data")
            final = [(a, reply) for a in accepted]
        return TransactionResult(addresses, mail, tuple(rcpts), data, tuple(final))

    async def reset(self) -> None:
        """Send RSET (bounded by the ehlo timeout), to reuse the connection for another message.

        :raises UnexpectedReply: RSET was refused; the connection should not be reused.
        :raises PhaseTimeout, ConnectionLost, ProtocolViolation:
        """
        reply = await self._command(b"RSET\r\n", "rset", "answer RSET")
        if not reply.is_success:
            raise UnexpectedReply(
                self.server_name,
                self.remote_ip,
                "rset",
                f"{self._peer} refused RSET: {reply}",
                reply,
            )

    async def quit(self) -> None:
        """Send QUIT, wait up to QUIT_TIMEOUT_MS for the reply, and close. Never raises."""
        if not self.closed:
            try:
                await self._command(b"QUIT\r\n", "quit", "answer QUIT", QUIT_TIMEOUT_MS)
            except SmtpError as exc:
                log.debug("%s", exc)
        self._close(abort=False)

    def close(self) -> None:
        """Close the connection at once, without QUIT (after a failure, or on cancellation)."""
        self._close(abort=True)

    async def __aenter__(self) -> SmtpSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """QUIT after success or a classified SMTP failure; just close on anything else."""
        if exc is None or isinstance(exc, SmtpError):
            await self.quit()
        else:
            self.close()

    # -- internals ----------------------------------------------------------

    async def _send_group(self, group: bytes, *, reset_first: bool) -> Reply:
        """Write a pipelined group (RSET first if asked, then MAIL, RCPTs, DATA); read the
        RSET reply, if any, and return the MAIL FROM reply."""
        timeouts = self._timeouts
        await self._write(group, "mail", timeouts.mail_from, "accept MAIL FROM")
        if reset_first:
            reset = await self._read("rset", timeouts.ehlo, "answer RSET")
            if not reset.is_success:
                self.close()  # the MAIL, RCPTs and DATA behind it must not be read as answered
                raise UnexpectedReply(
                    self.server_name,
                    self.remote_ip,
                    "rset",
                    f"{self._peer} refused RSET: {reset}",
                    reset,
                )
        return await self._read("mail", timeouts.mail_from, "answer MAIL FROM")

    async def _fresh(self, step: Coroutine[Any, Any, T], reset_first: bool) -> T:
        """Run the steps before the reply to MAIL FROM; on a reused connection (``reset_first``)
        turn what shows the connection was stale into `StaleConnection` (see there).

        Stale: any failure of RSET, a lost connection before the MAIL FROM reply, or a 421 to
        MAIL FROM (the server is closing the connection: RFC 5321 §3.8).
        """
        if not reset_first:
            return await step
        try:
            result = await step
        except SmtpError as exc:
            if exc.phase == "rset" or (exc.phase == "mail" and isinstance(exc, ConnectionLost)):
                self.close()
                raise StaleConnection(
                    self.server_name, self.remote_ip, exc.phase, exc.message, exc.reply
                ) from exc
            raise
        if isinstance(result, Reply) and result.code == 421:
            self.close()
            raise StaleConnection(
                self.server_name,
                self.remote_ip,
                "mail",
                f"{self._peer} is closing the connection: {result}",
                result,
            )
        return result

    def _close(self, *, abort: bool) -> None:
        transport = self._wire.transport
        if transport is not None and not transport.is_closing():
            if abort:
                transport.abort()
            else:
                transport.close()
        self._wire.gone = True

    def _check_extensions(self, envelope: esmtp.Envelope) -> None:
        if envelope.requiretls and not self.is_tls:
            raise ExtensionNotOffered(
                self.server_name,
                self.remote_ip,
                f"the message requires TLS (REQUIRETLS) but {self._peer} is not TLS-protected",
                "REQUIRETLS",
            )
        for extension in esmtp.missing_extensions(envelope, self._extensions):
            raise ExtensionNotOffered(
                self.server_name,
                self.remote_ip,
                f"the message requires {extension} but {self._peer} does not offer it",
                extension,
            )

    def _discard_cleartext(self) -> None:
        """Drop what came before the handshake (after the 220 to STARTTLS: RFC 3207 §4.2; with
        implicit TLS, anything at all): it was never protected."""
        dropped_bytes, dropped_replies = self._wire.parser.discard(), len(self._wire.replies)
        self._wire.replies.clear()
        self._wire.failure = None  # garbage before the handshake is discarded, not judged
        if dropped_bytes or dropped_replies:
            log.warning(
                "%s sent %d replies and %d bytes in clear text before the TLS handshake; discarded",
                self._peer,
                dropped_replies,
                dropped_bytes,
            )

    def _expect_quiet(self, phase: Phase, command: str) -> None:
        """Before a new command, nothing may be waiting: a reply now answers nothing we sent."""
        if self._wire.failure is not None:
            self.close()
            raise ProtocolViolation(
                self.server_name,
                self.remote_ip,
                phase,
                f"{self._peer} sent a malformed reply before {command}: {self._wire.failure}",
            )
        if self._wire.replies:
            reply = self._wire.replies.popleft()
            self.close()
            raise UnexpectedReply(
                self.server_name,
                self.remote_ip,
                phase,
                f"{self._peer} sent a reply before we sent {command}: {reply}",
                reply,
            )

    async def _handshake(
        self, context: ssl.SSLContext, server_hostname: str, timeout_ms: int
    ) -> smtp_tls.TlsInfo:
        """The TLS handshake on the connection, then forget everything said before it."""
        self._discard_cleartext()
        assert self._wire.transport is not None  # connected, and not lost (checked by callers)
        transport = await asyncio.get_running_loop().start_tls(
            self._wire.transport,
            self._wire,
            context,
            server_hostname=server_hostname,
            ssl_handshake_timeout=timeout_ms / 1000,
        )
        if transport is None:
            raise ConnectionResetError("the connection closed during the TLS handshake")
        self._wire.transport = transport
        self.tls = smtp_tls.tls_info(transport.get_extra_info("ssl_object"))
        self._extensions, self._greeted = {}, False  # RFC 3207 §4.2: forget pre-TLS knowledge
        return self.tls

    async def _implicit_tls(self, context: ssl.SSLContext, timeout_ms: int) -> None:
        """The handshake right after connecting (RFC 8314 §3), within `timeout_ms`."""
        deadline = asyncio.timeout(timeout_ms / 1000)
        try:
            async with deadline:
                if self.closed:
                    raise ConnectionResetError("the server closed the connection")
                await self._handshake(context, self.server_name, timeout_ms)
        except asyncio.CancelledError:
            self.close()
            raise
        except (ssl.SSLError, OSError) as exc:  # TimeoutError is an OSError
            self.close()
            what = "complete the TLS handshake"
            raise self._tls_error(
                exc, "tls", self.server_name, timeout_ms, deadline.expired(), what
            ) from exc

    def _tls_error(
        self,
        exc: ssl.SSLError | OSError,
        phase: Phase,
        server_hostname: str,
        timeout_ms: int,
        expired: bool,
        what: str,
    ) -> SmtpError:
        """Classify a failed TLS step: the certificate, or the handshake (a timeout included)."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            verdict = exc.verify_message or str(exc)
            return CertificateRejected(
                self.server_name,
                self.remote_ip,
                f"{self._peer} presented a certificate that failed verification "
                f"for {server_hostname}: {verdict}",
                verdict,
                exc.verify_code or 0,
                phase=phase,
            )
        if isinstance(exc, TimeoutError):
            reason = (
                f"did not {what} within {_seconds(timeout_ms)}"
                if expired
                else f"timed out in the TLS handshake: {exc}"
            )
            message = f"{self._peer} {reason}"
        else:
            message = f"TLS handshake with {self._peer} failed: {_handshake_fault(exc)}"
        return HandshakeFailed(self.server_name, self.remote_ip, phase, message)

    async def _auth_step(self, line: str) -> Reply:
        """One AUTH command or response and its reply (named "AUTH", never by its content)."""
        self._expect_quiet("auth", "AUTH")
        return await self._bounded(
            self._exchange(f"{line}\r\n".encode("ascii")),
            "auth",
            self._timeouts.ehlo,
            "answer AUTH",
        )

    async def _bounded(
        self, step: Coroutine[Any, Any, T], phase: Phase, timeout_ms: int, what: str
    ) -> T:
        """Run one wire step within `timeout_ms`; translate failures and close on them."""
        deadline = asyncio.timeout(timeout_ms / 1000)
        try:
            async with deadline:
                return await step
        except TimeoutError as exc:
            self.close()
            if deadline.expired():
                raise PhaseTimeout(
                    self.server_name,
                    self.remote_ip,
                    phase,
                    f"{self._peer} did not {what} within {_seconds(timeout_ms)}",
                ) from exc
            raise ConnectionLost(
                self.server_name,
                self.remote_ip,
                phase,
                f"lost the connection to {self._peer} while waiting for it to {what}: {exc}",
            ) from exc
        except ReplyFormatError as exc:
            self.close()
            raise ProtocolViolation(
                self.server_name,
                self.remote_ip,
                phase,
                f"{self._peer} sent a malformed reply when it should {what}: {exc}",
            ) from exc
        except OSError as exc:
            self.close()
            raise ConnectionLost(
                self.server_name,
                self.remote_ip,
                phase,
                f"lost the connection to {self._peer} while waiting for it to {what}",
            ) from exc
        except asyncio.CancelledError:
            self.close()  # a command cut off halfway leaves the stream out of step
            raise

    async def _read(self, phase: Phase, timeout_ms: int, what: str) -> Reply:
        replies = self._wire.replies
        if replies:  # already received (a pipelined group's replies come together): no timer
            return replies.popleft()
        return await self._bounded(self._wire.next_reply(), phase, timeout_ms, what)

    async def _write(self, data: bytes, phase: Phase, timeout_ms: int, what: str) -> None:
        """Send `data` within `timeout_ms`; a write that needs no waiting arms no timer."""
        if not self._wire.write_now(data):
            await self._bounded(self._wire.send(data), phase, timeout_ms, what)
        elif not self._wire.writable:
            await self._bounded(self._wire.drained(), phase, timeout_ms, what)

    async def _read_end_of_data(self) -> Reply:
        return await self._read("dot", self._timeouts.data, "answer the end of data")

    def _check_class(
        self, reply: Reply, phase: Phase, command: str, *, go_ahead: bool = False
    ) -> Reply:
        """A transaction reply must be 2xx (DATA: 354), 4xx or 5xx, or nothing can be read from it.

        Without this a "250" to DATA would look like a delivery of content never sent.
        """
        expected = reply.code == 354 if go_ahead else reply.is_success
        if expected or reply.is_transient or reply.is_permanent:
            return reply
        self.close()
        raise UnexpectedReply(
            self.server_name,
            self.remote_ip,
            phase,
            f"{self._peer} answered {command} with {reply}, which is no answer to it",
            reply,
        )

    async def _command(
        self, line: bytes, phase: Phase, what: str, timeout_ms: int | None = None
    ) -> Reply:
        """Send one command line and read its reply, both within one timeout (default: ehlo's)."""
        self._expect_quiet(phase, line.split(b" ", 1)[0].strip().decode("ascii", "replace"))
        return await self._bounded(
            self._exchange(line), phase, timeout_ms or self._timeouts.ehlo, what
        )

    async def _exchange(self, line: bytes) -> Reply:
        await self._wire.send(line)
        return await self._wire.next_reply()

    async def _reset_quietly(self) -> None:
        """RSET after a transaction that went nowhere; a failure only closes the session."""
        try:
            await self.reset()
        except SmtpError as exc:
            log.info("%s; closing the connection", exc)
            self.close()

    async def _end_empty_data(self) -> None:
        """DATA got 354 although no recipient was accepted: send a lone "." (RFC 2920 §3.1)."""
        if self.lmtp:
            # RFC 2033 gives no reply count for zero recipients: we cannot stay in step.
            self.close()
            return
        await self._bounded(
            self._wire.send(smtp_data.END_OF_DATA),
            "dot",
            self._timeouts.data,
            "accept the end of data",
        )
        await self._read_end_of_data()


def _b64(data: bytes, /) -> str:
    return base64.b64encode(data).decode("ascii")


def _hide(text: str, hidden: Sequence[str], /) -> str:
    """`text` with every one of `hidden` replaced by a placeholder."""
    for value in hidden:
        text = text.replace(value, _REDACTED)
    return text


def _redacted(reply: Reply, hidden: Sequence[str], /) -> Reply:
    """`reply` with our credentials blanked out of its text, should the server echo them."""
    return Reply(reply.code, reply.enhanced, tuple(_hide(line, hidden) for line in reply.lines))
