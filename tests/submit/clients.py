"""A raw SMTP client for the submission tests: sends exactly the bytes a test gives, misbehaving
on purpose (garbage, huge lines, silence, injection), and reads whole replies."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

REPLY_WAIT_S = 5.0  # how long a test waits for one reply before failing


class RawClient:
    """One TCP connection to the listener, from a chosen loopback address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, address: tuple[str, int], *, source: str) -> RawClient:
        reader, writer = await asyncio.open_connection(
            address[0], address[1], local_addr=(source, 0), limit=1 << 20
        )
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self) -> str:
        """One whole reply (all its lines), CRLFs kept between lines, the last one stripped."""
        lines: list[str] = []
        async with asyncio.timeout(REPLY_WAIT_S):
            while True:
                line = await self.reader.readline()
                if not line:
                    raise EOFError(f"connection closed after {lines!r}")
                lines.append(line.decode().rstrip("\r\n"))
                if len(line) < 4 or line[3:4] != b"-":
                    return "\r\n".join(lines)

    async def command(self, line: str | bytes) -> str:
        """Send one command line (CRLF added) and read its reply."""
        data = line.encode() if isinstance(line, str) else line
        await self.send(data + b"\r\n")
        return await self.reply()

    async def closed(self) -> bool:
        """Whether the server closed the connection (reads to the end)."""
        async with asyncio.timeout(REPLY_WAIT_S):
            rest = await self.reader.read()
        return rest == b"" or self.reader.at_eof()

    async def starttls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        await self.writer.start_tls(context, server_hostname=server_hostname)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
