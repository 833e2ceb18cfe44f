"""The registry store on SQLite (store.py's protocol), through aiosqlite.

One connection per store, its calls run on aiosqlite's thread so the event loop never blocks.
The database is in WAL mode with ``synchronous=FULL``: a /set that answered has reached the
disk. The file may be shared with the queue store; both wait up to BUSY_TIMEOUT_MS for each
other's write transactions instead of failing. Write transactions start with
``BEGIN IMMEDIATE``, so two processes never both read-then-write the same state.

Tables, statements and the reads and writes (`sql.Transaction`): sql.py, shared with the
PostgreSQL store. Transactions are `delivery.queue.sqlite_tx`'s, as the queue store's: serialized
on the one connection, never left open by a cancelled caller.

Outcomes:
    open_store(path) -> SqliteStore, with the folder created and the tables created or
    migrated (sql.MIGRATIONS). Any sqlite3 error becomes StoreError, naming the file.

Limits: BUSY_TIMEOUT_MS; a schema newer than SCHEMA_VERSION is refused (registry/service.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Final

import aiosqlite

from delivery import migrations
from delivery.queue import sqlite_tx
from delivery.registry import sql
from delivery.registry.errors import StoreError

__all__ = ["BUSY_TIMEOUT_MS", "SqliteStore", "open_store"]

BUSY_TIMEOUT_MS: Final = 10_000
"""How long a statement waits for another connection's write lock (the queue store's, or
another process's) before failing: long enough for any queue transaction, short enough that a
stuck writer shows up as an error rather than a hang."""


async def open_store(path: Path, /) -> SqliteStore:
    """Open (creating if needed) the SQLite registry store at ``path``.

    :raises StoreError: the folder or the database cannot be created or opened.
    """
    try:
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder of {path}: {exc}") from exc
    with _translated(path):
        db = await aiosqlite.connect(path, isolation_level=None)
    store = SqliteStore(db, path)
    try:
        with _translated(path):
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = FULL")
        async with store.write() as session:
            await session.migrate()
    except BaseException:
        await db.close()
        raise
    return store


class SqliteStore:
    """The registry tables in one SQLite database file."""

    def __init__(self, db: aiosqlite.Connection, path: Path, /) -> None:
        self._db = db
        self._path = path
        self._lock = asyncio.Lock()  # one transaction at a time on the one connection
        self._session = migrations.SqliteSession(db)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[sql.Transaction]:
        """A read transaction (see store.Store.read)."""
        with _translated(self._path):
            async with sqlite_tx.transaction(self._db, self._lock, write=False):
                yield sql.Transaction(self._session)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[sql.Transaction]:
        """A write transaction (see store.Store.write): ``BEGIN IMMEDIATE``."""
        with _translated(self._path):
            async with sqlite_tx.transaction(self._db, self._lock, write=True):
                yield sql.Transaction(self._session)

    async def close(self) -> None:
        """Close the connection."""
        with _translated(self._path):
            await self._db.close()


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """sqlite3 errors as StoreError naming the database (STYLE §3: translate at the boundary)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"registry database {path}: {exc}") from exc
