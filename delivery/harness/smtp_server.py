"""Harness SMTP receivers: scripted SMTP servers on loopback that record what they receive.

An `SmtpReceiver` listens on one address (a loopback IP and a port, port 0 picks a free one)
and plays an MX host: its greeting and EHLO name are the MX name, it offers STARTTLS in the
chosen `TlsMode`, and it follows its `smtp_script.Script` (any reply, delay or close at any
stage). It records everything as plain values a test can assert on:

    received     accepted messages (`smtp_dialogue.ReceivedMessage`), in order
    commands     every command line any client sent, in order
    sessions     one `SessionRecord` per connection: peer, EHLO name, TLS, commands, outcome,
                 and when each transaction ran (to see how many a client had going at once)
    connections  the number of connections accepted
    tls_used     whether any session completed a TLS handshake

and lets a test await them as events (`wait_for_messages`, `wait_for_connections`), never by
polling.

TLS modes (`TlsMode`): ``none`` offers no STARTTLS; ``broken`` answers STARTTLS with 220, then
sends bytes that are not TLS and closes; every `certs.CertKind` (``valid``, ``self-signed``,
``expired``, ``not-yet-valid``, ``wrong-name``, ``unknown-ca``, ``no-server-auth``) runs a
real handshake presenting a certificate of that kind for the MX name. DANE is nothing special
here: publish TLSA records for the credential the receiver presents.

Outcomes: values. A failed handshake ends that session only and is kept in its record
(``tls_error``); `wait_for_*` raise TimeoutError naming what was awaited and what came.

Security: test equipment. Bind loopback addresses only. The protocol core
(`smtp_dialogue`) caps lines, messages, recipients and errors; a session idle longer than
``Limits.idle_timeout_s`` is closed with 421.

Why not aiosmtpd: version 1.4 answers 555 to every RCPT parameter (NOTIFY, ORCPT) and to MAIL
parameters other than SIZE, BODY and SMTPUTF8 (REQUIRETLS, RET, ENVID), upper-cases parameter
values, has no BDAT, a fixed 220 greeting, and performs STARTTLS through asyncio.sslproto
internals. A harness must script all of these, so the dialogue is our own sans-I/O core,
driven here over asyncio streams; real clients (aiosmtplib, openssl s_client) test it.

Standards: RFC 5321, RFC 3207 and the extensions listed in `smtp_dialogue`.
Limits: plaintext a client pipelines after STARTTLS is discarded when it arrived with the
STARTTLS command; bytes arriving in a later packet before the handshake starts stay in the
stream's buffer (asyncio offers no public way to drop them) and would be read as the first
bytes of the TLS session. One read is at most READ_CHUNK_BYTES.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, assert_never, get_args

from delivery.harness import certs, loopback
from delivery.harness.smtp_dialogue import (
    Accept,
    Action,
    BreakTls,
    Close,
    Dialogue,
    ReceivedMessage,
    Seen,
    Send,
    StartTls,
    TlsInfo,
    TlsOffer,
)
from delivery.harness.smtp_script import (
    DEFAULT_EXTENSIONS,
    DEFAULT_LIMITS,
    DEFAULT_SCRIPT,
    Extensions,
    Limits,
    Script,
)

__all__ = [
    "TLS_MODES",
    "SessionRecord",
    "SmtpReceiver",
    "TlsMode",
    "cert_kind",
]

TlsMode = Literal[
    "none",
    "broken",
    "valid",
    "self-signed",
    "expired",
    "not-yet-valid",
    "wrong-name",
    "unknown-ca",
    "no-server-auth",
]
TLS_MODES: tuple[TlsMode, ...] = get_args(TlsMode)


def cert_kind(mode: TlsMode) -> certs.CertKind | None:
    """The kind of certificate a TLS mode presents; None for ``none`` and ``broken``."""
    match mode:
        case "none" | "broken":
            return None
        case _:
            return mode


READ_CHUNK_BYTES = 64 * 1024  # one read from the socket; the dialogue caps what it keeps
BROKEN_TLS_BYTES = b"220 this is not a TLS ServerHello\r\n"  # what `broken` answers a handshake
DEFAULT_WAIT_S = 10.0  # how long wait_for_* waits unless told otherwise


@dataclass(slots=True)
class SessionRecord:
    """What happened on one connection; filled in as the session goes."""

    peer: tuple[str, int]
    commands: list[str] = field(default_factory=list)
    ehlo: str | None = None  # the last EHLO/HELO name the client gave
    tls: TlsInfo | None = None  # set when a handshake completed
    tls_error: str | None = None  # why a handshake failed (ours or the client's refusal)
    messages: int = 0  # messages accepted on this connection
    transactions: list[tuple[float, float]] = field(default_factory=list)
    """(MAIL received, message accepted) of each accepted message, in time.monotonic()
    seconds: when the client had a delivery in progress on this connection."""
    mail_at: float | None = None  # when the current transaction's MAIL came
    discarded_bytes: int = 0  # plaintext pipelined after STARTTLS, dropped unread
    closed: bool = False  # the session is over


class SmtpReceiver:
    """One scripted SMTP server; an async context manager (also `start`/`stop`).

    :param hostname: the MX name: greeting and EHLO name, and the name its certificate is for.
    :param host: the loopback address to listen on.
    :param port: the port; 0 picks a free one (see `address` after start).
    :param tls: the `TlsMode`.
    :param credential: the certificate to present; by default made by ``certs`` for
        ``hostname`` by ``factory``, in the kind the mode names.
    :param factory: the certificate factory that makes the credential when none is given.
    :param script: what to do at each stage; assign `script` to change it (each connection
        follows the script in force when it was accepted; `end_sessions` closes the open ones,
        so that a client's pooled connections do not keep the old script).
    :param extensions: the ESMTP keywords to advertise.
    :param limits: caps on lines, messages, recipients, errors, idle time.
    :param sock: an already bound listening socket to serve on (``host``/``port`` ignored):
        how a lab gives all its receivers one port on different addresses.
    :raises ValueError: a certificate mode without a credential or a factory.
    """

    def __init__(
        self,
        hostname: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TlsMode = "none",
        credential: certs.Credential | None = None,
        factory: certs.CertFactory | None = None,
        script: Script = DEFAULT_SCRIPT,
        extensions: Extensions = DEFAULT_EXTENSIONS,
        limits: Limits = DEFAULT_LIMITS,
        sock: socket.socket | None = None,
    ) -> None:
        if tls not in TLS_MODES:
            raise ValueError(f"unknown TLS mode {tls!r}; expected one of {TLS_MODES}")
        self.hostname = hostname
        self.tls_mode: TlsMode = tls
        self.credential = credential
        kind = cert_kind(tls)
        if kind is not None and credential is None:
            if factory is None:
                raise ValueError(f"TLS mode {tls!r} needs a credential or a certificate factory")
            self.credential = factory.credential(hostname, kind)
        self.script = script
        self.extensions = extensions
        self.limits = limits
        self.received: list[ReceivedMessage] = []
        self.commands: list[str] = []
        self.sessions: list[SessionRecord] = []
        self._host, self._port, self._sock = host, port, sock
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed: asyncio.Condition | None = None
        self._address: tuple[str, int] | None = None
        self._stopping = False
        self._ended: set[asyncio.Task[None]] = set()

    # ---- what a test reads ----------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); only after start."""
        if self._address is None:
            raise RuntimeError(f"receiver {self.hostname} is not started")
        return self._address

    @property
    def connections(self) -> int:
        """How many connections were accepted."""
        return len(self.sessions)

    @property
    def tls_used(self) -> bool:
        """Whether any session completed a TLS handshake."""
        return any(session.tls is not None for session in self.sessions)

    def reset(self) -> None:
        """Forget everything recorded so far (the script and listener stay)."""
        self.received.clear()
        self.commands.clear()
        self.sessions.clear()

    async def wait_for_messages(
        self, count: int = 1, *, within: float = DEFAULT_WAIT_S
    ) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages were accepted; returns all received so far.

        :raises TimeoutError: not enough within ``within`` seconds.
        """
        await self._wait(lambda: len(self.received) >= count, within, f"{count} message(s)")
        return list(self.received)

    async def wait_for_connections(
        self, count: int = 1, *, within: float = DEFAULT_WAIT_S, closed: bool = False
    ) -> list[SessionRecord]:
        """Wait until at least ``count`` connections came (and ended, with ``closed``).

        :raises TimeoutError: not enough within ``within`` seconds.
        """

        def ready() -> bool:
            done = [s for s in self.sessions if s.closed or not closed]
            return len(done) >= count

        what = f"{count} {'closed ' if closed else ''}connection(s)"
        await self._wait(ready, within, what)
        return list(self.sessions)

    async def _wait(self, ready: Callable[[], bool], within: float, what: str) -> None:
        changed = self._condition()
        try:
            async with asyncio.timeout(within), changed:
                await changed.wait_for(ready)
        except TimeoutError:
            raise TimeoutError(
                f"{self.hostname}: waited {within}s for {what}; got {len(self.received)} "
                f"message(s) over {self.connections} connection(s)"
            ) from None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        changed = self._condition()
        async with changed:
            changed.notify_all()

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening.

        :raises ValueError: the address is not a loopback address.
        """
        bound_host = self._sock.getsockname()[0] if self._sock is not None else self._host
        loopback.require_loopback(str(bound_host), ipv6=True)
        if self._sock is not None:
            self._server = await asyncio.start_server(self._session, sock=self._sock)
        else:
            self._server = await asyncio.start_server(self._session, self._host, self._port)
        bound = self._server.sockets[0].getsockname()
        self._address = (str(bound[0]), int(bound[1]))

    async def stop(self) -> None:
        """Stop listening and end every open session."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def end_sessions(self) -> None:
        """Close every open session and keep listening, as a server restarted with a new
        configuration would: a client must connect again, under the current `script`."""
        tasks = list(self._tasks)
        self._ended.update(tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> SmtpReceiver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---- one session ----------------------------------------------------------------------

    def _tls_offer(self) -> TlsOffer:
        if self.tls_mode == "none":
            return "none"
        return "broken" if self.tls_mode == "broken" else "handshake"

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peername = writer.get_extra_info("peername")
        record = SessionRecord(peer=(str(peername[0]), int(peername[1])))
        self.sessions.append(record)
        dialogue = Dialogue(
            hostname=self.hostname,
            peer=record.peer,
            script=self.script,
            extensions=self.extensions,
            limits=self.limits,
            tls=self._tls_offer(),
        )
        try:
            try:
                await self._notify()
                await self._converse(dialogue, record, reader, writer)
            except (OSError, EOFError):
                pass  # the client went away: nothing left to answer
            finally:
                record.closed = True
                record.discarded_bytes = dialogue.discarded_bytes
                writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            await self._notify()
        except asyncio.CancelledError:
            # stop() cancels the sessions it owns; ending quietly is the point. Python 3.11's
            # stream callback would otherwise log a cancelled client task as an error.
            if not self._stopping and task not in self._ended:
                raise
        finally:
            self._tasks.discard(task)
            self._ended.discard(task)

    async def _converse(
        self,
        dialogue: Dialogue,
        record: SessionRecord,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if not await self._perform(dialogue.greet(), dialogue, record, writer):
            return
        while not dialogue.closed:
            try:
                async with asyncio.timeout(self.limits.idle_timeout_s):
                    data = await reader.read(READ_CHUNK_BYTES)
            except TimeoutError:
                writer.write(f"421 4.4.2 {self.hostname} Error: timeout exceeded\r\n".encode())
                await writer.drain()
                return
            if not data:
                return
            if not await self._perform(dialogue.feed(data), dialogue, record, writer):
                return

    async def _perform(
        self,
        actions: list[Action],
        dialogue: Dialogue,
        record: SessionRecord,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Carry out the dialogue's actions in order; False when the session is over."""
        for action in actions:
            match action:
                case Seen(line):
                    record.commands.append(line)
                    self.commands.append(line)
                    if line[:5].upper() == "MAIL ":
                        record.mail_at = time.monotonic()
                case Send(lines, delay):
                    record.ehlo = dialogue.helo or record.ehlo
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write("".join(f"{line}\r\n" for line in lines).encode())
                    await writer.drain()
                case Accept(message):
                    self.received.append(message)
                    record.messages += 1
                    accepted = time.monotonic()
                    record.transactions.append((record.mail_at or accepted, accepted))
                    await self._notify()
                case StartTls():
                    if not await self._handshake(dialogue, record, writer):
                        return False
                case BreakTls():
                    record.tls_error = "handshake broken on purpose (TLS mode broken)"
                    writer.write(BROKEN_TLS_BYTES)
                    await writer.drain()
                    return False
                case Close(delay):
                    if delay:
                        await asyncio.sleep(delay)
                    return False
                case _:
                    assert_never(action)
        return not dialogue.closed

    async def _handshake(
        self, dialogue: Dialogue, record: SessionRecord, writer: asyncio.StreamWriter
    ) -> bool:
        assert self.credential is not None
        try:
            await writer.start_tls(
                self.credential.server_context(),
                ssl_handshake_timeout=self.limits.tls_handshake_timeout_s,
            )
        except (OSError, TimeoutError, EOFError) as exc:
            record.tls_error = f"{type(exc).__name__}: {exc}"
            return False
        ssl_object = writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        cipher = ssl_object.cipher()
        info = TlsInfo(str(ssl_object.version()), cipher[0] if cipher else "")
        record.tls = info
        await self._perform(dialogue.tls_started(info), dialogue, record, writer)
        return True
