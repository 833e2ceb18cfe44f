"""SMTP connections kept open between messages, keyed by everything they were opened under.

A `ConnectionPool` holds idle `SmtpSession`s after a transaction ended cleanly, so that the
next message for the same next hop, under the same plan, skips the connect, greeting, EHLO,
STARTTLS and TLS handshake. `pool_key` is the one function that builds keys (STYLE §7, as
Postfix's ``smtp_key_format``): a connection is only ever handed out under a key equal to
the one it was opened under.

Keys:
    `PoolKey` holds the host name and IP address, port, source address and EHLO name, the
    protocol (SMTP or LMTP, implicit TLS or not), the per-phase timeouts, the identity the
    session authenticated as (AUTH), the policy domain (the recipient domain whose MTA-STS,
    DANE and REQUIRETLS rules made the TLS plan) and the caller's whole TLS requirement (an
    opaque, hashable value: the engine's TLS plan, SNI and TLSA records). Two domains that
    share an MX host never share a connection, and a message whose plan differs in any way
    (stricter or weaker) never gets a connection opened under another plan (DESIGN §5.3).

Life of a connection:
    `take(key)` returns the most recently used live connection for the key, or None; a
    connection the server closed while idle, or one past `POOL_MAX_AGE_MS`, is dropped there.
    `put(entry)` keeps a connection whose last transaction ended with a reply and that is
    still open, unless it carried `POOL_MAX_MESSAGES` messages or is too old; it is closed
    (QUIT) after `POOL_IDLE_MS` without use, or when more than `POOL_MAX_IDLE` wait. The
    caller checks a reused connection before trusting it (`SmtpSession.send` with
    ``reset_first``: RSET, pipelined): see `StaleConnection`.

Outcomes: values (`PoolEntry` or None); closing never raises (QUIT is best effort, bounded by
`session.QUIT_TIMEOUT_MS`).

Security: a key carries every input that decided how the session was secured and who it
speaks for; nothing about a pooled connection is re-decided on reuse, which is why anything
that could change the decision must be part of the key. Each connection's QUIT task is owned
by the pool and ends by `close`.

Limits: idle connections hold a socket and a slot on the server: `POOL_IDLE_MS`,
`POOL_MAX_IDLE`. One pool per worker process.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from delivery.smtp import session as smtp_session

__all__ = [
    "POOL_IDLE_MS",
    "POOL_MAX_AGE_MS",
    "POOL_MAX_IDLE",
    "POOL_MAX_MESSAGES",
    "ConnectionPool",
    "PoolEntry",
    "PoolKey",
    "pool_key",
]

log = logging.getLogger("delivery.smtp")

T = TypeVar("T")

POOL_MAX_MESSAGES = 100
"""Messages one connection carries before it is closed. Postfix sets no count limit, but
servers do (often a few dozen to a few hundred per connection, past which they answer 421 or
452): a bound keeps us under most of them, spreads a long run over fresh connections (and
fresh TLS keys), and costs one new connection per hundred messages."""

POOL_IDLE_MS = 2_000
"""How long an idle connection is kept for the next message: Postfix's
``smtp_connection_cache_time_limit`` (2 s). Long enough to carry a queue run's next message,
short enough that we never hold a server's connection slot for mail that is not there (many
servers drop idle clients after 30-60 s anyway)."""

POOL_MAX_AGE_MS = 300_000
"""Longest a connection is reused after it was opened: Postfix's
``smtp_connection_reuse_time_limit`` (300 s). A session's TLS plan and DNS answers were
decided when it opened; this bounds how long that decision is relied on."""

POOL_MAX_IDLE = 100
"""Idle connections kept in all; the least recently used is closed first beyond it. Bounds
the sockets a burst to many destinations leaves open (the default virtual queues run at most
85 deliveries at once)."""


@dataclass(frozen=True, slots=True)
class PoolKey:
    """Everything a connection was opened under (see the module docstring); use `pool_key`."""

    host: str
    ip: str
    port: int
    source_ip: str
    ehlo_name: str
    lmtp: bool
    implicit_tls: bool
    timeouts: smtp_session.Timeouts
    auth: str
    """Who the session authenticated as (route and user name); "" without AUTH."""
    policy_domain: str
    tls: Hashable
    """The caller's whole TLS requirement, compared for equality only."""

    def describe(self) -> str:
        """The next hop as logs name it: ``mx.example.com[192.0.2.1]:587 for example.com``."""
        port = f":{self.port}" if self.port != 25 else ""
        return f"{self.host}[{self.ip}]{port} for {self.policy_domain}"


def pool_key(
    host: str,
    ip: str,
    port: int,
    /,
    *,
    source_ip: str,
    ehlo_name: str,
    policy_domain: str,
    tls: Hashable,
    timeouts: smtp_session.Timeouts,
    lmtp: bool = False,
    implicit_tls: bool = False,
    auth: str = "",
) -> PoolKey:
    """pool_key - the key of a connection: the one place keys are made.

    Names are compared without case and trailing dot; ``tls`` must be hashable and equal
    only for requirements that are the same in every respect.

    >>> t = smtp_session.Timeouts(1, 1, 1, 1, 1, 1)
    >>> a = pool_key("MX.example.com.", "192.0.2.1", 25, source_ip="", ehlo_name="me.test",
    ...              policy_domain="Example.com", tls=("optional",), timeouts=t)
    >>> b = pool_key("mx.example.com", "192.0.2.1", 25, source_ip="", ehlo_name="me.test",
    ...              policy_domain="example.com", tls=("optional",), timeouts=t)
    >>> a == b, a.describe()
    (True, 'mx.example.com[192.0.2.1] for example.com')
    """
    return PoolKey(
        host=host.rstrip(".").lower(),
        ip=ip,
        port=port,
        source_ip=source_ip,
        ehlo_name=ehlo_name,
        lmtp=lmtp,
        implicit_tls=implicit_tls,
        timeouts=timeouts,
        auth=auth,
        policy_domain=policy_domain.rstrip(".").lower(),
        tls=tls,
    )


@dataclass(eq=False, slots=True)
class PoolEntry(Generic[T]):
    """One connection and what the caller keeps with it (e.g. how its TLS was established).

    :param opened_at: monotonic seconds when it was opened.
    :param messages: transactions it carried.
    """

    key: PoolKey
    session: smtp_session.SmtpSession
    info: T
    opened_at: float
    messages: int = 0
    idle_since: float = 0.0
    _expiry: asyncio.TimerHandle | None = field(default=None, repr=False)


class ConnectionPool(Generic[T]):
    """Idle SMTP connections by `PoolKey` (see the module docstring).

    :param max_messages: `POOL_MAX_MESSAGES`.
    :param idle_ms: `POOL_IDLE_MS`.
    :param max_age_ms: `POOL_MAX_AGE_MS`.
    :param max_idle: `POOL_MAX_IDLE`.
    :param clock: monotonic seconds.
    """

    def __init__(
        self,
        *,
        max_messages: int = POOL_MAX_MESSAGES,
        idle_ms: int = POOL_IDLE_MS,
        max_age_ms: int = POOL_MAX_AGE_MS,
        max_idle: int = POOL_MAX_IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_messages = max_messages
        self._idle_s = idle_ms / 1000
        self._max_age_s = max_age_ms / 1000
        self._max_idle = max_idle
        self._clock = clock
        self._idle: dict[PoolKey, list[PoolEntry[T]]] = {}
        self._order: collections.OrderedDict[PoolEntry[T], None] = collections.OrderedDict()
        """Every idle entry, least recently put first (for POOL_MAX_IDLE)."""
        self._closing: set[asyncio.Task[None]] = set()
        self.opened = 0
        """Connections handed to `entry` (for metrics and tests)."""
        self.reused = 0
        """Connections handed out again by `take`."""

    def __len__(self) -> int:
        """Idle connections held now."""
        return len(self._order)

    def entry(self, key: PoolKey, session: smtp_session.SmtpSession, info: T) -> PoolEntry[T]:
        """Wrap a connection just opened under ``key``, to `put` it back after use."""
        self.opened += 1
        return PoolEntry(key, session, info, opened_at=self._clock())

    def take(self, key: PoolKey) -> PoolEntry[T] | None:
        """The most recently used live idle connection for ``key``, or None.

        Connections found closed by the server, with replies nobody asked for waiting (a 421
        sent while idle), or too old are closed and skipped.
        """
        entries = self._idle.get(key)
        while entries:
            entry = entries.pop()
            self._forget(entry, entries)
            if self._usable(entry):
                self.reused += 1
                return entry
            self._discard(entry, "closed by the server while idle")
        return None

    def put(self, entry: PoolEntry[T]) -> None:
        """Give back a connection whose last transaction ended with a reply; or close it.

        It is kept only if still open, under `max_messages` and `POOL_MAX_AGE_MS`.
        """
        entry.messages += 1
        if not self._usable(entry):
            self._discard(entry, "not reusable")
            return
        if entry.messages >= self.max_messages:
            self._discard(entry, f"carried {entry.messages} messages")
            return
        entry.idle_since = self._clock()
        self._idle.setdefault(entry.key, []).append(entry)
        self._order[entry] = None
        entry._expiry = asyncio.get_running_loop().call_later(self._idle_s, self._expire, entry)
        while len(self._order) > self._max_idle:
            oldest = next(iter(self._order))
            self._remove(oldest)
            self._discard(oldest, "too many idle connections")

    def discard(self, entry: PoolEntry[T], /) -> None:
        """Close a connection that will not be given back (QUIT if it is still open)."""
        self._discard(entry, "dropped")

    async def close(self) -> None:
        """Close every idle connection (QUIT) and wait for every QUIT under way."""
        for entry in list(self._order):
            self._remove(entry)
            self._discard(entry, "pool closed")
        if self._closing:
            await asyncio.wait(set(self._closing))

    # -- internals ----------------------------------------------------------

    def _usable(self, entry: PoolEntry[T]) -> bool:
        session = entry.session
        fresh = self._clock() - entry.opened_at < self._max_age_s
        return fresh and not session.closed and not session.pending_replies

    def _expire(self, entry: PoolEntry[T]) -> None:
        entry._expiry = None
        if entry in self._order:
            self._remove(entry)
            self._discard(entry, f"idle for {self._idle_s:g}s")

    def _remove(self, entry: PoolEntry[T]) -> None:
        entries = self._idle.get(entry.key)
        if entries is not None and entry in entries:
            entries.remove(entry)
        self._forget(entry, entries)

    def _forget(self, entry: PoolEntry[T], entries: list[PoolEntry[T]] | None) -> None:
        self._order.pop(entry, None)
        if entry._expiry is not None:
            entry._expiry.cancel()
            entry._expiry = None
        if entries is not None and not entries:
            self._idle.pop(entry.key, None)

    def _discard(self, entry: PoolEntry[T], why: str) -> None:
        session = entry.session
        log.debug("closing the connection to %s: %s", entry.key.describe(), why)
        if session.closed:
            session.close()
            return
        task = asyncio.create_task(session.quit(), name=f"QUIT {entry.key.describe()}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
