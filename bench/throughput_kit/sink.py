"""The message sink of bench.throughput: Postfix's `smtp-sink`, and a clock on its counter.

`SmtpSink` runs ``smtp-sink -c`` on one loopback address and port. With ``-c`` smtp-sink
writes its running counters (``sess=S quit=Q mesg=M``, carriage-return separated) whenever a
session ends, a QUIT is executed, or a message's final "." is received; `SmtpSink` reads them
as they come and notes when the message count reached each target, so "time to the last
message accepted" is measured where the messages land, for both engines alike.

Outcomes: `wait_for(count, timeout_s)` returns the `perf_counter` time at which the sink's
message counter reached ``count``, or None if it did not within the timeout.
Security: binds the loopback address it is given, nothing else; runs as ``nobody`` under root
(smtp-sink refuses to run as root without ``-u``).
Limits: the counter is smtp-sink's and counts every message it accepted since it started;
callers compare against the count read before their run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from dataclasses import dataclass, field

__all__ = ["SINK_BACKLOG", "SINK_MAX_CONNECTIONS", "Counters", "SmtpSink", "parse_counters"]

SINK_BACKLOG = 1024
"""listen(2) backlog: above the most connections either engine opens at once (Postfix 20 per
destination, delivery's `remote` queue 50), so no connection waits in SYN backlog."""

SINK_MAX_CONNECTIONS = 1024
"""smtp-sink ``-m``: simultaneous sessions it serves (default 256); above any engine's limit."""

_COUNTERS = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")


@dataclass(frozen=True, slots=True)
class Counters:
    """smtp-sink's running counters: sessions ended, QUITs, messages accepted."""

    sessions: int = 0
    quits: int = 0
    messages: int = 0


def parse_counters(data: bytes, /) -> tuple[Counters | None, bytes]:
    """The last complete counters line in ``data``, and the incomplete rest to keep.

    >>> parse_counters(b"sess=0 quit=0 mesg=1\\rsess=1 quit=1 mesg=1\\rsess=1 qu")
    (Counters(sessions=1, quits=1, messages=1), b'sess=1 qu')
    """
    *complete, rest = re.split(rb"[\r\n]", data)
    for line in reversed(complete):
        if match := _COUNTERS.fullmatch(line.strip()):
            sessions, quits, messages = map(int, match.groups())
            return Counters(sessions, quits, messages), rest
    return None, rest


@dataclass
class SmtpSink:
    """``smtp-sink -c`` on ``host``:``port`` (see the module docstring). Async context manager."""

    host: str
    port: int
    counters: Counters = Counters()
    _process: asyncio.subprocess.Process | None = None
    _reader: asyncio.Task[None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _reached: dict[int, float] = field(default_factory=dict)
    _targets: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        """smtp-sink's process id (for its CPU time)."""
        assert self._process is not None, "the sink is not started"
        return self._process.pid

    async def start(self) -> None:
        """Start smtp-sink and wait until it accepts connections."""
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self._process = await asyncio.create_subprocess_exec(
            "smtp-sink",
            "-c",
            *user,
            "-m",
            str(SINK_MAX_CONNECTIONS),
            f"inet:{self.host}:{self.port}",
            str(SINK_BACKLOG),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read(), name="smtp-sink counters")
        await self._until_listening()

    async def _until_listening(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                if time.monotonic() > deadline or self._reader is None or self._reader.done():
                    raise RuntimeError(
                        f"smtp-sink did not start listening on {self.host}:{self.port}"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            writer.close()  # counted as one session: callers read the counters before each run
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def stop(self) -> None:
        """Stop smtp-sink."""
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            await self._process.wait()
        if self._reader is not None:
            await self._reader
        self._process = self._reader = None

    async def __aenter__(self) -> SmtpSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stdout, pending = self._process.stdout, b""
        while chunk := await stdout.read(65536):
            now = time.perf_counter()
            counters, pending = parse_counters(pending + chunk)
            if counters is None:
                continue
            self.counters = counters
            for target in [t for t in self._targets if counters.messages >= t]:
                self._targets.discard(target)
                self._reached[target] = now
            async with self._changed:
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    def expect(self, messages: int, /) -> None:
        """Note the time the counter reaches ``messages`` (call before releasing the mail)."""
        if self.counters.messages < messages:
            self._targets.add(messages)

    async def wait_for(self, messages: int, /, *, timeout_s: float) -> float | None:
        """The perf_counter time at which the counter reached ``messages`` (see `expect`).

        :returns: None if it did not within ``timeout_s``, or smtp-sink exited.
        """
        if messages not in self._reached and self.counters.messages >= messages:
            return time.perf_counter()  # not announced with `expect`: the best we know
        self._targets.add(messages)
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(
                    lambda: messages in self._reached or self._reader is None or self._reader.done()
                )
        except TimeoutError:
            pass
        finally:
            self._targets.discard(messages)
        return self._reached.pop(messages, None)
