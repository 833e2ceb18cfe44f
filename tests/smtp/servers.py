"""A scripted SMTP server for the client tests: what the harness receivers do not model.

`ScriptedServer` runs a behaviour coroutine per connection over a `Conn` that
records every command line and which read ("chunk") it arrived in, so tests
can tell a pipelined group from one-at-a-time commands. `respond` is a small
configurable SMTP/LMTP responder; the other named behaviours are the
misbehaviours the harness receivers do not produce on purpose (garbage,
silence, endless lines, closing mid-DATA, tampering around STARTTLS, wrong
reply classes) plus LMTP's per-recipient replies and a record of which read
each command came in (pipelining).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


class Conn:
    """One accepted connection of a ScriptedServer, with a record of what came in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.peer: tuple[str, int] = writer.get_extra_info("peername")[:2]
        self.lines: list[str] = []  # command lines, CRLF stripped (not message content)
        self.chunk_of_line: list[int] = []  # index of the read each command line came in
        self.messages: list[bytes] = []  # message content as received, up to (not incl.) "."
        self.tls = False
        self.silent = asyncio.Event()  # set when the server stops answering (until_closed)
        self._buffer = bytearray()
        self._chunks = 0

    async def _fill(self) -> bool:
        data = await self.reader.read(65536)
        if not data:
            return False
        self._buffer += data
        self._chunks += 1
        return True

    async def read_line(self) -> bytes | None:
        """The next line without its CRLF, or None at EOF."""
        while b"\n" not in self._buffer:
            if not await self._fill():
                return None
        end = self._buffer.index(b"\n")
        line = bytes(self._buffer[:end]).rstrip(b"\r")
        del self._buffer[: end + 1]
        return line

    async def read_command(self) -> str | None:
        """The next command line, recorded with the read it arrived in; None at EOF."""
        line = await self.read_line()
        if line is None:
            return None
        self.lines.append(line.decode("utf-8", "replace"))
        self.chunk_of_line.append(self._chunks - 1)
        return self.lines[-1]

    async def read_message(self) -> bytes | None:
        """Message content up to the lone "." line, as sent (still dot-stuffed); None at EOF."""
        content = bytearray()
        while True:
            line = await self.read_line()
            if line is None:
                return None
            if line == b".":
                self.messages.append(bytes(content))
                return bytes(content)
            content += line + b"\r\n"

    def send(self, *lines: str) -> None:
        self.writer.write("".join(f"{line}\r\n" for line in lines).encode())

    async def until_closed(self) -> None:
        """Say nothing more; return when the client goes away."""
        self.silent.set()
        while await self.reader.read(65536):
            pass

    def commands_batched(self) -> bool:
        """True if any read carried more than one command line (the client pipelined)."""
        return len(set(self.chunk_of_line)) < len(self.chunk_of_line)


Behaviour = Callable[[Conn], Awaitable[None]]


class ScriptedServer:
    """Runs `behaviour` on every connection to `host`:0; records the `Conn`s."""

    def __init__(self, host: str, behaviour: Behaviour) -> None:
        self.host, self.behaviour = host, behaviour
        self.conns: list[Conn] = []
        self.address: tuple[str, int] = (host, 0)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(reader, writer)
        self.conns.append(conn)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.behaviour(conn)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            return
        finally:
            self._tasks.discard(task)
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, self.host, 0)
        self.address = self._server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# -- behaviours ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """What `respond` says. `replies` overrides a verb's reply ("EHLO", "MAIL", "DATA", "DOT",
    "STARTTLS", ...); `rcpt` overrides per address; `silent_at` stops answering at that verb
    (or "GREETING"); `hold_until_data` answers nothing until DATA arrives, then everything."""

    extensions: tuple[str, ...] = ()
    replies: dict[str, str] = field(default_factory=dict)
    rcpt: dict[str, str] = field(default_factory=dict)
    lmtp_replies: tuple[str, ...] = ()  # LMTP: the end-of-data replies, one per recipient
    silent_at: str | None = None
    hold_until_data: bool = False
    tls_context: ssl.SSLContext | None = None
    close_in_data: bool = False  # close after reading some content, before the "."


def respond(dialect: Dialect) -> Behaviour:
    """A small SMTP/LMTP server speaking `dialect`."""

    async def behaviour(conn: Conn) -> None:
        if dialect.silent_at == "GREETING":
            return await conn.until_closed()
        conn.send(dialect.replies.get("GREETING", "220 mx1.example.test ESMTP test"))
        held: list[str] = []
        accepted, in_transaction = 0, False
        while (line := await conn.read_command()) is not None:
            verb = line.split(" ", 1)[0].upper()
            if verb in ("MAIL", "RCPT"):
                verb = line.split(":", 1)[0].upper().split(" ")[0]
            if verb == dialect.silent_at:
                return await conn.until_closed()
            if verb in ("EHLO", "LHLO"):
                reply = dialect.replies.get(verb)
                if reply is None:
                    exts = (
                        [*dialect.extensions]
                        if not conn.tls
                        else [e for e in dialect.extensions if e != "STARTTLS"]
                    )
                    lines = ["mx1.example.test", *exts]
                    reply = "\n".join(
                        f"250{'-' if i < len(lines) - 1 else ' '}{text}"
                        for i, text in enumerate(lines)
                    )
                for part in reply.split("\n"):
                    conn.send(part)
                continue
            if verb == "MAIL":
                accepted = 0
                reply = dialect.replies.get("MAIL", "250 2.1.0 ok")
                in_transaction = reply.startswith("2")
            elif verb == "RCPT" and not in_transaction:
                reply = "503 5.5.1 need MAIL first"
            elif verb == "RCPT":
                address = line.split("<", 1)[1].split(">", 1)[0]
                reply = dialect.rcpt.get(address, dialect.replies.get("RCPT", "250 2.1.5 ok"))
                accepted += reply.startswith("2")
            elif verb == "DATA":
                reply = dialect.replies.get("DATA", "354 go on" if accepted else "554 5.5.1 no")
            elif verb == "QUIT":
                conn.send("221 2.0.0 bye")
                return
            elif verb == "STARTTLS":
                reply = dialect.replies.get("STARTTLS", "220 2.0.0 go ahead")
            else:
                reply = dialect.replies.get(verb, "250 2.0.0 ok")
            if dialect.hold_until_data and verb in ("MAIL", "RCPT", "DATA"):
                held.append(reply)  # a client that waits for the MAIL reply waits forever
                if verb != "DATA":
                    continue
                conn.send(*held)
                held.clear()
            else:
                conn.send(reply)
            if verb == "STARTTLS" and reply.startswith("220"):
                assert dialect.tls_context is not None
                await conn.writer.start_tls(dialect.tls_context)
                conn.tls = True
            if verb == "DATA" and reply.startswith("354"):
                if dialect.silent_at == "DOT" or dialect.close_in_data:
                    if dialect.close_in_data:
                        await conn.read_line()
                        return
                    return await conn.until_closed()
                if await conn.read_message() is None:
                    return
                if dialect.lmtp_replies:
                    conn.send(*dialect.lmtp_replies)
                else:
                    conn.send(dialect.replies.get("DOT", "250 2.0.0 queued"))
        return None

    return behaviour


def sends(*chunks: bytes) -> Behaviour:
    """Send these bytes (greeting or garbage), then wait for the client to go away."""

    async def behaviour(conn: Conn) -> None:
        for chunk in chunks:
            conn.writer.write(chunk)
        await conn.until_closed()

    return behaviour


async def silent(conn: Conn) -> None:
    """Accept the connection and never say anything."""
    await conn.until_closed()


async def endless_line(conn: Conn) -> None:
    """A greeting line that never ends."""
    conn.writer.write(b"220 " + b"x" * 10_000)
    await conn.until_closed()


async def idle_421(conn: Conn) -> None:
    """Greet, answer EHLO, then announce shutdown (421) unasked and close."""
    conn.send("220 mx1.example.test ESMTP")
    await conn.read_command()
    conn.send("250 mx1.example.test", "421 4.3.2 shutting down")  # one write: one segment
    await conn.until_closed()


def starttls_then(after_220: Callable[[Conn], Awaitable[None]], extra: bytes = b"") -> Behaviour:
    """Greet, offer STARTTLS, answer it with 220 (+ `extra` bytes), then run `after_220`."""

    async def behaviour(conn: Conn) -> None:
        conn.send("220 mx1.example.test ESMTP")
        await conn.read_command()
        conn.send("250-mx1.example.test", "250 STARTTLS")
        await conn.read_command()
        conn.writer.write(b"220 2.0.0 go ahead\r\n" + extra)
        await after_220(conn)

    return behaviour


async def not_tls(conn: Conn) -> None:
    """Answer the ClientHello with bytes that are not TLS."""
    await conn.reader.read(65536)  # the ClientHello
    conn.writer.write(b"this is not a TLS record\r\n" * 4)
    await conn.until_closed()


async def hang_up(conn: Conn) -> None:
    """Close the connection at once."""
    conn.writer.close()


async def greet_then_hang_up(conn: Conn) -> None:
    """Send the greeting, then close without waiting for anything."""
    conn.send("220 mx1.example.test ESMTP")
    conn.writer.close()


def handshake_then_smtp(context: ssl.SSLContext) -> Callable[[Conn], Awaitable[None]]:
    """Complete a real handshake, then answer EHLO and QUIT inside TLS."""

    async def after(conn: Conn) -> None:
        await conn.writer.drain()
        await conn.writer.start_tls(context)
        conn.tls = True
        while (line := await conn.read_command()) is not None:
            if line.upper().startswith("EHLO"):
                conn.send("250-mx1.example.test", "250 PIPELINING")
            elif line.upper() == "QUIT":
                conn.send("221 bye")
                return
            else:
                conn.send("250 ok")

    return after
