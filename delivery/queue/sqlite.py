"""SQLite queue store: `QueueStore` on one aiosqlite connection.

The methods are `delivery.queue.sqlstore.SqlQueueStore`'s, shared with the PostgreSQL store;
this module adds how the database is opened and how a transaction is had.

One connection per store, in WAL mode with ``synchronous=FULL``: a commit returns
only after the write-ahead log is fsynced, so an acknowledged message survives a
crash or power loss. Every SQLite call runs on aiosqlite's thread, never on the event
loop. The database file may be shared with the registry (tables ``registry_*``) and
with other processes: writers take the write lock with ``BEGIN IMMEDIATE`` and wait
up to `BUSY_TIMEOUT_MS` for it.

Transactions on the one connection are serialized by an asyncio lock. Enqueues are
group-committed (`group_commit`): the enqueues that arrive while a commit is running
are written together by the next one, sharing its fsync; each caller still returns
only after its own message is committed. Body reads are grouped the same way: the
`load_body` calls that arrive while one runs share the next read transaction (one
SELECT for all), so a worker starting many deliveries at once does not queue one
transaction per message on the lock. The schema is created or upgraded at open
(`delivery.migrations`, `sql.steps`), in one transaction.

Outcomes: as `delivery.queue.store` (`StoreError` wraps every ``sqlite3.Error``,
with the SQLite message, and a schema newer than this program's).

Security: the database file holds every queued message; create its directory
readable by the daemon's user only. No SQL is ever built from message data: all
values are bound parameters.

Limits: one writer at a time per database file (SQLite), which is what
`MAX_LEASE_BATCH` keeps short. An in-memory database is refused (not durable).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from os import PathLike
from pathlib import Path
from typing import Final

import aiosqlite

from delivery import migrations
from delivery.queue import sql, sqlite_tx
from delivery.queue.sqlstore import SqlQueueStore
from delivery.queue.store import StoreError

__all__ = ["BUSY_TIMEOUT_MS", "SqliteQueueStore"]

BUSY_TIMEOUT_MS: Final = 30_000
"""How long a writer waits for another connection (the registry, another process on
the same file) to release the write lock before the operation fails with StoreError."""


class SqliteQueueStore(SqlQueueStore):
    """Durable queue in one SQLite database file (see the module docstring).

    Open it with `SqliteQueueStore.open` (or ``async with await ...open(path)``);
    the methods are documented on `delivery.queue.store.QueueStore`.
    """

    def __init__(self, db: aiosqlite.Connection, path: Path, /) -> None:
        """Wrap an open, configured connection; use `open` instead."""
        super().__init__(sql.SQLITE, group_reads=True)
        self.path = path
        self._db = db
        self._session = migrations.SqliteSession(db)
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | PathLike[str], /) -> SqliteQueueStore:
        """Open (creating if needed) the queue in the database file at ``path``.

        Creates the parent directory, switches the file to WAL mode, and creates or
        upgrades the ``queue_*`` tables (`sql.steps`).

        :raises StoreError: the file cannot be opened or used in WAL mode, or its
            queue schema is newer than this program.
        """
        file = Path(path)
        if str(file) == ":memory:":
            raise StoreError("open", "an in-memory database is not durable")
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(file, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError("open", f"{file}: {exc}") from exc
        store = cls(db, file)
        try:
            await store._configure()
            await store._migrate(str(file))
        except BaseException:
            await db.close()
            raise
        return store

    async def _configure(self) -> None:
        try:
            await self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            rows = list(await self._db.execute_fetchall("PRAGMA journal_mode = WAL"))
            if rows[0][0] != "wal":
                raise StoreError("open", f"{self.path}: WAL mode unavailable ({rows[0][0]})")
            await self._db.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise StoreError("open", f"{self.path}: {exc}") from exc

    async def _close_database(self) -> None:
        await self._db.close()

    @contextlib.asynccontextmanager
    async def _transaction(
        self, operation: str, *, write: bool = True
    ) -> AsyncIterator[migrations.Session]:
        """Run the block in one transaction on the connection, serialized by the lock.

        A write transaction takes SQLite's write lock up front (``BEGIN IMMEDIATE``)
        so that its reads and writes see no other writer in between: this is what
        makes a lease exclusive. Any failure rolls back and becomes StoreError.

        Cancellation (`sqlite_tx.transaction`): a cancelled call has either no effect or its
        whole effect, and the connection is never left inside a transaction.
        """
        try:
            async with sqlite_tx.transaction(self._db, self._lock, write=write):
                yield self._session
        except sqlite3.Error as exc:
            raise StoreError(operation, str(exc)) from exc
