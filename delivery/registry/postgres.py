"""The registry store on PostgreSQL (store.py's protocol), through an asyncpg pool.

Several nodes share one database: each opens its own store on it. The tables, statements and
the reads and writes (`sql.Transaction`) are sql.py's, the same as SQLite's.

Transactions:
    read    REPEATABLE READ, READ ONLY: every statement of a /get or a snapshot load sees one
            committed state, as one SQLite read transaction does.
    write   READ COMMITTED, and first a transaction-scoped advisory lock, one per schema
            (`WRITE_LOCK`): the writes of every node queue up behind each other as SQLite's
            ``BEGIN IMMEDIATE`` makes them, so a /set decides (names, references, state) on
            what no other node can change until it commits. Registry writes are rare and
            short; a lock held longer than `LOCK_TIMEOUT_MS` fails the write.
    A transaction commits when its block ends normally and rolls back when it raises.

Outcomes:
    open_store(url) -> PostgresStore, with the tables created or migrated (sql.MIGRATIONS) in
    one write transaction, so nodes starting together never race on the schema. A malformed
    URL is a ConfigError naming ``store.url``; anything the database or the network raises
    becomes StoreError, naming the database without its password (`delivery.pg.describe`).

Security: every value is a bound parameter; no SQL is built from data.
Limits: `POOL_MAX_CONNECTIONS` per store; `LOCK_TIMEOUT_MS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Final

import asyncpg

from delivery import migrations, pg
from delivery.registry import sql
from delivery.registry.errors import StoreError

__all__ = ["LOCK_TIMEOUT_MS", "POOL_MAX_CONNECTIONS", "WRITE_LOCK", "PostgresStore", "open_store"]

POOL_MAX_CONNECTIONS: Final = 2
"""Connections one registry keeps at most: its reads (API calls, the snapshot poll) are short
and its writes take turns anyway (the write lock), so two keep reads from waiting behind a
write; the server's connection slots are shared by every node and store."""

LOCK_TIMEOUT_MS: Final = 10_000
"""How long a write waits for another node's registry write (or any lock) before failing, as
SQLite's busy timeout: long enough for any /set, short enough that a stuck node shows up as an
error rather than a hang."""

WRITE_LOCK: Final = (
    "SELECT pg_advisory_xact_lock(hashtext('delivery.registry'), hashtext(current_schema()))"
)
"""Registry writes take turns per schema: two deployments in two schemas of one database do
not wait for each other."""


async def open_store(url: str, /) -> PostgresStore:
    """Open the registry tables in the PostgreSQL database at ``url``, creating or migrating
    them.

    :raises ConfigError: ``url`` cannot be read as a PostgreSQL URL.
    :raises StoreError: the database is unreachable, refuses us, or cannot be migrated.
    """
    where = pg.describe(url)
    with _translated(where):
        pool = await pg.create_pool(url, min_size=1, max_size=POOL_MAX_CONNECTIONS)
    store = PostgresStore(pool, where)
    try:
        async with store.write() as session:
            await session.migrate()
    except BaseException:
        await store.close()
        raise
    return store


class PostgresStore:
    """The registry tables in one PostgreSQL database (schema chosen by its search_path)."""

    def __init__(self, pool: asyncpg.Pool, where: str, /) -> None:
        self._pool = pool
        self._where = where

    @asynccontextmanager
    async def read(self) -> AsyncIterator[sql.Transaction]:
        """A read transaction (see store.Store.read)."""
        with _translated(self._where):
            async with (
                self._pool.acquire() as connection,
                connection.transaction(isolation="repeatable_read", readonly=True),
            ):
                yield sql.Transaction(migrations.PostgresSession(connection))

    @asynccontextmanager
    async def write(self) -> AsyncIterator[sql.Transaction]:
        """A write transaction (see store.Store.write), after every other node's."""
        with _translated(self._where):
            async with self._pool.acquire() as connection, connection.transaction():
                await connection.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
                await connection.execute(WRITE_LOCK)
                yield sql.Transaction(migrations.PostgresSession(connection))

    async def close(self) -> None:
        """Close every connection of the pool."""
        with _translated(self._where):
            await self._pool.close()


@contextlib.contextmanager
def _translated(where: str) -> Iterator[None]:
    """Database and network errors as StoreError naming the database (STYLE §3)."""
    try:
        yield
    except pg.DATABASE_ERRORS as exc:
        raise StoreError(f"registry database {where}: {exc}") from exc
