"""The submission listener: SMTP on ``[submission] listen`` into the durable queue.

`SubmissionListener` is the asyncio shell around the protocol core
(`delivery.smtp.server.ServerDialogue`) with the listener's `SubmissionPolicy` and `Intake`:
one task per client connection, each feeding the bytes it reads to its dialogue and carrying
out the actions it gets back. It is an async context manager (also `start`/`stop`) exposing
`address` once started, for `delivery serve` to compose.

Offered: PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN, ENHANCEDSTATUSCODES, CHUNKING (BDAT),
REQUIRETLS (inside TLS); STARTTLS when given a certificate and key; AUTH PLAIN and LOGIN
when given `Credentials` (inside TLS only, unless ``auth_in_clear``).

Outcomes:
    250 to the end of data only after `QueueStore.enqueue` returned (see `intake`); 451 when
    the store fails. Refusals name the problem (see `policy` and `delivery.smtp.server`) and
    every reply of 400 or more is logged with the client's address and port. A client outside
    the allowed networks gets 554 at connect; beyond ``max_sessions`` clients, 421 at
    connect; idle past ``idle_timeout_s``, 421 and close.

Security:
    Each session is its own task: a client that misbehaves (garbage, huge lines, silence, a
    broken handshake) ends its own session only, and an unexpected error in one session is
    logged and ends that session, never the listener. Bytes a client pipelines after
    STARTTLS are dropped before the handshake starts: they are read by this module's own
    protocol, which hands the connection to TLS in the same step as it clears its buffer, so
    no plaintext can be read as the first bytes of the TLS session (CVE-2011-0411). Memory:
    at most ``max_sessions`` sessions, each holding at most one message of
    ``max_message_bytes`` plus one read of `READ_CHUNK_BYTES`.

Standards: RFC 5321, RFC 6409 (message submission), RFC 3207, RFC 4954 and the extensions
of `delivery.smtp.server`.
Limits: no implicit TLS (port 465) listener; the idle timeout bounds each read and each
write, not a whole session (a client trickling bytes keeps its session, within
``max_sessions``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from collections.abc import Callable, Iterable
from os import PathLike
from types import TracebackType
from typing import assert_never, cast

from delivery.errors import ConfigError
from delivery.queue import model
from delivery.queue.store import QueueStore
from delivery.smtp import server
from delivery.submit import defaults
from delivery.submit import message as submit_message
from delivery.submit.credentials import Credentials
from delivery.submit.intake import Intake
from delivery.submit.policy import SubmissionPolicy

__all__ = ["READ_CHUNK_BYTES", "SubmissionListener", "make_tls_context"]

log = logging.getLogger("delivery.submit")

READ_CHUNK_BYTES = 64 * 1024
"""Bytes buffered from a client before reading from its socket pauses until the dialogue
has taken them: the listener's read buffer per session."""

FAREWELL_TIMEOUT_S = 5.0
"""How long a last 421 may take to be written before the connection is closed anyway."""


def make_tls_context(
    cert_file: str | PathLike[str], key_file: str | PathLike[str], /
) -> ssl.SSLContext:
    """make_tls_context - the server TLS context of the listener: TLS 1.2 or later.

    :param cert_file: PEM certificate chain, leaf first.
    :param key_file: PEM private key of the leaf.
    :raises ConfigError: a file cannot be read or the key does not match the certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "submission.tls_cert",
            f"cannot load the certificate {str(cert_file)!r} with the key {str(key_file)!r}: {exc}",
        ) from exc
    return context


class _Wire(asyncio.Protocol):
    """One client connection: buffers what the client sends, with flow control both ways."""

    def __init__(self, on_connect: Callable[[_Wire], None]) -> None:
        self._on_connect = on_connect
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._eof = False
        self._stopping = False
        self._reading_paused = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; not an asyncio.Transport instance under uvloop (the daemon's loop).
        self.transport = cast(asyncio.Transport, transport)
        self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= READ_CHUNK_BYTES and not self._reading_paused:
            assert self.transport is not None
            self.transport.pause_reading()
            self._reading_paused = True
        self._readable.set()

    def eof_received(self) -> bool:
        self._eof = True
        self._readable.set()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._readable.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- what the session uses ---------------------------------------------------------

    def interrupt(self) -> None:
        """The listener stops: the next `read` returns None."""
        self._stopping = True
        self._readable.set()

    async def read(self) -> bytes | None:
        """What the client sent since the last read; b"" at end of stream; None on stop."""
        while not self._buffer and not self._eof and not self._stopping:
            self._readable.clear()
            await self._readable.wait()
        if self._stopping:
            return None
        data = bytes(self._buffer)
        self._buffer.clear()
        self._resume_reading()
        return data

    def discard_buffered(self) -> int:
        """Drop what the client sent and nobody read yet; returns how many bytes."""
        count = len(self._buffer)
        self._buffer.clear()
        self._resume_reading()
        return count

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    @property
    def gone(self) -> bool:
        """The connection is closed or closing."""
        return self.transport is None or self.transport.is_closing()

    async def write(self, data: bytes) -> None:
        """Write ``data`` and wait until the transport's buffer has room again.

        :raises ConnectionResetError: the connection is gone.
        """
        if self.gone:
            raise ConnectionResetError("the client closed the connection")
        assert self.transport is not None
        self.transport.write(data)
        await self._writable.wait()

    def close(self) -> None:
        """Close the connection (buffered replies are still sent)."""
        if self.transport is not None:
            self.transport.close()


class SubmissionListener:
    """The SMTP submission listener (see the module docstring).

    :param store: the queue store messages go to.
    :param plan_recipients: each recipient's queue, schedule and expiry
        (`delivery.submit.planning.make_planner` in the daemon).
    :param hostname: our name: greeting, EHLO, Received header.
    :param host: the address to listen on.
    :param port: the port; 0 picks a free one (see `address` after start).
    :param networks: the client networks allowed to submit (``[submission] networks``).
    :param tls_cert: PEM certificate chain: offer STARTTLS (with ``tls_key``).
    :param tls_key: PEM private key of ``tls_cert``.
    :param credentials: offer AUTH PLAIN/LOGIN for these users.
    :param require_auth: refuse MAIL until the client authenticated (needs ``credentials``).
    :param auth_in_clear: offer AUTH without TLS too (only for a trusted network).
    :param max_message_bytes: the SIZE advertised and enforced.
    :param max_recipients: recipients per message (then 452).
    :param max_sessions: concurrent sessions (then 421 at connect).
    :param idle_timeout_s: one read or write of a session.
    :param stop_grace_s: on stop, how long a session may take to finish queuing a message.
    :param on_enqueued: called after each message is queued (wakes the worker).
    :param clock: epoch ms now (the Received date and ``received_at``).
    :raises ConfigError: an invalid network, half a certificate, ``require_auth`` without
        credentials, a certificate that cannot be loaded, a non-positive limit.
    """

    def __init__(
        self,
        store: QueueStore,
        plan_recipients: submit_message.PlanRecipients,
        /,
        *,
        hostname: str,
        host: str = "127.0.0.1",
        port: int = 0,
        networks: Iterable[str] = ("127.0.0.0/8", "::1/128"),
        tls_cert: str | PathLike[str] | None = None,
        tls_key: str | PathLike[str] | None = None,
        credentials: Credentials | None = None,
        require_auth: bool = False,
        auth_in_clear: bool = False,
        max_message_bytes: int = defaults.DEFAULT_MAX_MESSAGE_BYTES,
        max_recipients: int = defaults.DEFAULT_MAX_RECIPIENTS,
        max_sessions: int = defaults.DEFAULT_MAX_SESSIONS,
        max_errors: int = defaults.DEFAULT_MAX_ERRORS,
        idle_timeout_s: float = defaults.DEFAULT_IDLE_TIMEOUT_S,
        tls_handshake_timeout_s: float = defaults.DEFAULT_TLS_HANDSHAKE_TIMEOUT_S,
        auth_failure_delay_s: float = defaults.DEFAULT_AUTH_FAILURE_DELAY_S,
        stop_grace_s: float = defaults.DEFAULT_STOP_GRACE_S,
        on_enqueued: Callable[[], None] = lambda: None,
        clock: Callable[[], int] = model.now_ms,
    ) -> None:
        for name, value in (
            ("max_message_size", max_message_bytes),
            ("max_recipients", max_recipients),
            ("max_sessions", max_sessions),
            ("max_errors", max_errors),
            ("idle_timeout", idle_timeout_s),
            ("tls_handshake_timeout", tls_handshake_timeout_s),
        ):
            if value <= 0:
                raise ConfigError(f"submission.{name}", f"must be positive, not {value!r}")
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("submission.tls_key", "give both tls_cert and tls_key, or neither")
        if require_auth and not credentials:
            raise ConfigError("submission.require_auth", "needs at least one submission user")
        self.hostname = hostname
        self._host, self._port = host, port
        self._tls_context = (
            make_tls_context(tls_cert, tls_key)
            if tls_cert is not None and tls_key is not None
            else None
        )
        self._credentials = credentials
        self.policy = SubmissionPolicy(networks, require_auth=require_auth)
        self.intake = Intake(
            store, plan_recipients, hostname=hostname, on_enqueued=on_enqueued, clock=clock
        )
        self._extensions = server.Extensions(
            size=max_message_bytes,
            chunking=True,
            requiretls=True,
            auth=("PLAIN", "LOGIN") if credentials else (),
            auth_in_clear=auth_in_clear,
        )
        self._limits = server.Limits(
            max_message_bytes=max_message_bytes,
            max_recipients=max_recipients,
            max_errors=max_errors,
            idle_timeout_s=idle_timeout_s,
            tls_handshake_timeout_s=tls_handshake_timeout_s,
        )
        self._max_sessions = max_sessions
        self._auth_failure_delay_s = auth_failure_delay_s
        self._stop_grace_s = stop_grace_s
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._sessions: dict[asyncio.Task[None], _Wire] = {}
        self._stopping = False

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); only after start."""
        if self._address is None:
            raise RuntimeError("the submission listener is not started")
        return self._address

    @property
    def sessions(self) -> int:
        """Client sessions open now."""
        return len(self._sessions)

    async def start(self) -> None:
        """Start listening.

        :raises OSError: the address cannot be bound (in use, not local).
        """
        loop = asyncio.get_running_loop()
        self._stopping = False
        self._server = await loop.create_server(
            lambda: _Wire(self._connected), self._host, self._port
        )
        bound = self._server.sockets[0].getsockname()
        self._address = (str(bound[0]), int(bound[1]))
        log.info(
            "submission listening on %s:%d (STARTTLS %s, AUTH %s)",
            *self._address,
            "offered" if self._tls_context is not None else "not offered",
            "offered" if self._credentials else "not offered",
        )

    async def stop(self) -> None:
        """Stop listening; idle sessions get 421, a session queuing a message finishes that
        step within ``stop_grace_s``; then every session is ended."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for wire in self._sessions.values():
            wire.interrupt()
        tasks = list(self._sessions)
        if tasks:
            _done, late = await asyncio.wait(tasks, timeout=self._stop_grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SubmissionListener:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---- sessions -------------------------------------------------------------------------

    def _connected(self, wire: _Wire) -> None:
        """A client connected: start its session, or turn it away when full or stopping."""
        assert wire.transport is not None
        if self._stopping or len(self._sessions) >= self._max_sessions:
            peer = wire.transport.get_extra_info("peername")
            log.warning("refused %s: %d sessions open (max_sessions)", peer, len(self._sessions))
            text = f"421 4.7.0 {self.hostname} Error: too many connections, try again later\r\n"
            wire.transport.write(text.encode())
            wire.transport.close()
            return
        task = asyncio.get_running_loop().create_task(self._session(wire))
        self._sessions[task] = wire
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._sessions.pop(task, None)

    async def _session(self, wire: _Wire) -> None:
        assert wire.transport is not None
        peername = wire.transport.get_extra_info("peername")
        sockname = wire.transport.get_extra_info("sockname")
        peer = (str(peername[0]), int(peername[1]))
        label = f"{peer[0]}:{peer[1]}"
        dialogue = server.ServerDialogue(
            hostname=self.hostname,
            peer=peer,
            policy=self.policy,
            extensions=self._extensions,
            limits=self._limits,
            starttls=self._tls_context is not None,
        )
        try:
            if await self._perform(dialogue.greet(), dialogue, wire, label, int(sockname[1])):
                await self._converse(dialogue, wire, label, int(sockname[1]))
        except (OSError, TimeoutError) as exc:
            log.info("client %s: connection ended: %s", label, exc or type(exc).__name__)
        except Exception:  # the session's outermost guard: one session never stops the rest
            log.exception("client %s: session failed", label)
        finally:
            wire.close()

    async def _converse(
        self, dialogue: server.ServerDialogue, wire: _Wire, label: str, local_port: int
    ) -> None:
        while not dialogue.closed:
            try:
                async with asyncio.timeout(self._limits.idle_timeout_s):
                    data = await wire.read()
            except TimeoutError:
                log.info("client %s: idle for %gs, closing", label, self._limits.idle_timeout_s)
                await self._farewell(wire, "4.4.2", "Error: timeout exceeded")
                return
            if data is None:
                await self._farewell(wire, "4.3.2", "Service shutting down, try again later")
                return
            if not data:
                return
            if not await self._perform(dialogue.feed(data), dialogue, wire, label, local_port):
                return

    async def _farewell(self, wire: _Wire, status: str, text: str) -> None:
        """A last 421 before closing; a client that does not read it is not waited for."""
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(FAREWELL_TIMEOUT_S):
                await wire.write(f"421 {status} {self.hostname} {text}\r\n".encode())

    async def _perform(
        self,
        actions: list[server.Action],
        dialogue: server.ServerDialogue,
        wire: _Wire,
        label: str,
        local_port: int,
    ) -> bool:
        """Carry out the dialogue's actions in order; False when the session is over."""
        todo = collections.deque(actions)
        while todo:
            action = todo.popleft()
            match action:
                case server.Seen(line):
                    log.debug("client %s: %s", label, line)
                case server.Send(lines, delay):
                    if delay:
                        await asyncio.sleep(delay)
                    if int(lines[-1][:3]) >= 400:
                        log.info("client %s: %s", label, " / ".join(lines))
                    async with asyncio.timeout(self._limits.idle_timeout_s):
                        await wire.write("".join(f"{line}\r\n" for line in lines).encode())
                case server.StartTls():
                    info = await self._handshake(dialogue, wire, label)
                    if info is None:
                        return False
                    todo.extend(dialogue.tls_started(info))
                case server.Close(delay):
                    if delay:
                        await asyncio.sleep(delay)
                    return False
                case server.Authenticate(mechanism, identity, secret):
                    accepted = self._credentials is not None and self._credentials.check(
                        identity, secret
                    )
                    if accepted:
                        log.info("client %s: authenticated as %r (%s)", label, identity, mechanism)
                    else:
                        log.warning("client %s: AUTH %s failed for %r", label, mechanism, identity)
                        await asyncio.sleep(self._auth_failure_delay_s)
                    todo.extend(dialogue.authenticated(accepted))
                case server.Deliver(message):
                    decision = await self.intake.accept(message, local_port=local_port)
                    todo.extend(dialogue.delivered(decision))
                case _:
                    assert_never(action)
        return not dialogue.closed

    async def _handshake(
        self, dialogue: server.ServerDialogue, wire: _Wire, label: str
    ) -> server.TlsInfo | None:
        """Run the server side of STARTTLS; None when it failed (the session is then over)."""
        assert self._tls_context is not None and wire.transport is not None
        # RFC 3207 §4.2 / CVE-2011-0411: what the client sent after STARTTLS, in clear text,
        # is dropped; start_tls below swaps the protocol before control returns to the loop,
        # so nothing read later in clear text can reach the dialogue.
        dialogue.discarded_bytes += wire.discard_buffered()
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                wire.transport,
                wire,
                self._tls_context,
                server_side=True,
                ssl_handshake_timeout=self._limits.tls_handshake_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            log.info("client %s: TLS handshake failed: %s", label, exc or type(exc).__name__)
            return None
        if transport is None:
            return None
        wire.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        cipher = ssl_object.cipher() if ssl_object is not None else None
        version = ssl_object.version() if ssl_object is not None else None
        return server.TlsInfo(str(version), cipher[0] if cipher else "")
