"""PostgreSQL queue store: `QueueStore` on an asyncpg connection pool.

The methods are `delivery.queue.sqlstore.SqlQueueStore`'s, shared with the SQLite store, on
the same tables and statements (`delivery.queue.sql`, rewritten once from ``:name`` to
asyncpg's ``$n``: `delivery.pg.statement`); this module adds how the pool is opened and how a
transaction is had. Several nodes may share one database: each opens its own store (its own
pool) on the same URL.

How the `delivery.queue.store` guarantees hold here:
    Durable enqueue    every connection runs with ``synchronous_commit = on`` (forced:
                       the URL cannot lower it), so COMMIT returns only once the
                       server has flushed its write-ahead log; `enqueue` returns after
                       COMMIT. Concurrent enqueues share one transaction
                       (`group_commit`), and the server groups concurrent commits.
    Exclusive leases   `sql.lease_candidates` locks the rows it picks with ``FOR UPDATE
                       SKIP LOCKED``: concurrent leasers, in this process or on other
                       nodes, skip each other's rows instead of waiting, and the claim
                       re-checks ``due <= now``. A lease lapses at ``until`` (its
                       recipients' ``due``), so a dead node's recipients are taken over.
    Explicit outcomes  `record` locks the rows its tokens hold (``FOR UPDATE``) before
                       applying, so "held" cannot change between the check and the
                       update; notices follow the same rule as on SQLite.
    Flat cost          the (status, due) and (status, queue, due) indexes.

Transactions are READ COMMITTED, plus the row locks above; multi-statement reads
(`get_message`, `list_messages`) run in one read-only REPEATABLE READ snapshot.

Outcomes: as `delivery.queue.store`; `StoreError` wraps every database error (asyncpg's,
a refused or dropped connection, a statement over `STATEMENT_TIMEOUT_S`) with the
server's message, and a schema newer than this program's. A malformed URL raises
`ConfigError` naming ``store.url``.

Security: the database holds every queued message; give the role only this database.
No SQL is built from message data: every value is a bound parameter. Error messages
name the server by `delivery.pg.describe`, never with the password.

Limits: `POOL_MAX_SIZE` connections per store. A connection lost during COMMIT leaves
the outcome unknown to the caller (the transaction is atomic either way): an enqueue
is then retried by the client (a duplicate, never a loss), a lease lapses.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

import asyncpg

from delivery import migrations, pg
from delivery.errors import ConfigError
from delivery.queue import sql
from delivery.queue.sqlstore import SqlQueueStore
from delivery.queue.store import StoreError

__all__ = ["POOL_MAX_SIZE", "STATEMENT_TIMEOUT_S", "PostgresQueueStore"]

POOL_MAX_SIZE: Final = 10
"""Connections one store holds at most: concurrent transactions beyond wait for one.
PostgreSQL's default ``max_connections`` (100) is shared by every node and store."""

STATEMENT_TIMEOUT_S: Final = 30.0
"""How long one statement may take, lock waits included, before the operation fails
with StoreError: a stuck database shows as an error rather than a hang (SQLite's
``BUSY_TIMEOUT_MS`` plays this part there)."""

_DATABASE_ERRORS: Final = (*pg.DATABASE_ERRORS, asyncpg.InternalClientError)
"""`pg.DATABASE_ERRORS`, and what asyncpg raises for the first statement sent on a
connection the server has just closed (before it noticed): the pool replaces that
connection, and the next call works."""

_SERVER_SETTINGS: Final = {"synchronous_commit": "on"}
"""Forced on every connection (they override the URL's parameters): durable commits."""


class PostgresQueueStore(SqlQueueStore):
    """Durable queue in a PostgreSQL database (see the module docstring).

    Open it with `PostgresQueueStore.open` (or ``async with await ...open(url)``);
    the methods are documented on `delivery.queue.store.QueueStore`.
    """

    def __init__(self, pool: asyncpg.Pool, where: str, /) -> None:
        """Wrap an open pool; use `open` instead. ``where`` names the database in errors."""
        super().__init__(sql.POSTGRES, group_reads=False)
        self.where = where
        self._pool = pool

    @classmethod
    async def open(cls, url: str, /, *, max_connections: int = POOL_MAX_SIZE) -> PostgresQueueStore:
        """Connect to the database at ``url`` and create or upgrade the ``queue_*`` tables.

        ``url`` is ``postgresql://user[:password]@host[:port]/database[?setting=value]``;
        settings such as ``search_path=delivery`` apply to every connection. The role
        needs to create tables (at the first start and at upgrades) and to use them.

        :raises ConfigError: ``url`` is not a PostgreSQL URL asyncpg can read.
        :raises StoreError: the server is unreachable or refused the connection, or the
            queue schema is newer than this program's.
        """
        where = pg.describe(url)
        if not pg.is_postgres_url(url):
            raise ConfigError("store.url", f"{where!r} is not a postgresql:// URL")
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=max_connections,
                timeout=pg.CONNECT_TIMEOUT_S,
                command_timeout=STATEMENT_TIMEOUT_S,
                server_settings=_SERVER_SETTINGS,
            )
        except (ValueError, asyncpg.ClientConfigurationError) as exc:
            raise ConfigError("store.url", f"{where}: {exc}") from exc
        except pg.DATABASE_ERRORS as exc:
            raise StoreError("open", f"{where}: {exc}") from exc
        queue = cls(pool, where)
        try:
            await queue._migrate(where)
        except BaseException:
            await pool.close()
            raise
        return queue

    async def _close_database(self) -> None:
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def _transaction(
        self, operation: str, *, write: bool = True
    ) -> AsyncIterator[migrations.Session]:
        """Run the block in one transaction on a pooled connection.

        A write transaction is READ COMMITTED (its statements lock what they must); a
        read is one read-only REPEATABLE READ snapshot. Any database failure rolls back
        and becomes StoreError; a cancelled block rolls back, and the pool resets the
        connection before handing it out again.
        """
        isolation = "read_committed" if write else "repeatable_read"
        try:
            async with (
                self._pool.acquire() as conn,
                conn.transaction(isolation=isolation, readonly=not write),
            ):
                yield migrations.PostgresSession(conn)
        except _DATABASE_ERRORS as exc:
            raise StoreError(operation, f"{self.where}: {exc}") from exc
