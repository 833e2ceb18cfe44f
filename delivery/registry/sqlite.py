"""The registry store on SQLite (store.py's protocol), through aiosqlite.

One connection per store, its calls run on aiosqlite's thread so the event loop never blocks.
The database is in WAL mode with ``synchronous=FULL``: a /set that answered has reached the
disk. The file may be shared with the queue store; both wait up to BUSY_TIMEOUT_MS for each
other's write transactions instead of failing. Write transactions start with
``BEGIN IMMEDIATE``, so two processes never both read-then-write the same state.

Tables and statements: sql.py, shared with the PostgreSQL store.

Outcomes:
    open_store(path) -> SqliteStore, with the folder created and the tables created or
    migrated (sql.MIGRATIONS). Any sqlite3 error becomes StoreError, naming the file.

Limits: BUSY_TIMEOUT_MS; a schema newer than SCHEMA_VERSION is refused (registry/service.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Final

import aiosqlite

from delivery import migrations
from delivery.registry import sql
from delivery.registry.errors import StoreError
from delivery.registry.store import StoredObject

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

    @asynccontextmanager
    async def read(self) -> AsyncIterator[_Session]:
        """A read transaction (see store.Store.read)."""
        async with self._transaction("BEGIN") as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[_Session]:
        """A write transaction (see store.Store.write)."""
        async with self._transaction("BEGIN IMMEDIATE") as session:
            yield session

    async def close(self) -> None:
        """Close the connection."""
        with _translated(self._path):
            await self._db.close()

    @asynccontextmanager
    async def _transaction(self, begin: str) -> AsyncIterator[_Session]:
        async with self._lock:
            with _translated(self._path):
                await self._db.execute(begin)
            try:
                yield _Session(self._db, self._path)
            except BaseException:
                # The rollback must run even when the caller was cancelled, or the connection
                # would stay inside this transaction. If it fails, SQLite has already rolled
                # back (e.g. after SQLITE_FULL); the original error is the one to report.
                with contextlib.suppress(sqlite3.Error):
                    await asyncio.shield(self._db.execute("ROLLBACK"))
                raise
            with _translated(self._path):
                await self._db.execute("COMMIT")


class _Session:
    """Statements inside one transaction (store.Reader and store.Writer)."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    async def state(self, type_name: str, /) -> int:
        row = await self._one(sql.STATE_OF, {"type": type_name})
        return int(row[0]) if row else 0

    async def states(self) -> dict[str, int]:
        with _translated(self._path):
            rows = await self._db.execute_fetchall(sql.STATES)
        return {str(type_name): int(state) for type_name, state in rows}

    async def objects(self, type_name: str, /) -> list[StoredObject]:
        with _translated(self._path):
            rows = await self._db.execute_fetchall(sql.OBJECTS_OF, {"type": type_name})
        return [sql.object_from_row(type_name, str(i), int(seq), text) for i, seq, text in rows]

    async def get_meta(self, key: str, /) -> str | None:
        row = await self._one(sql.GET_META, {"key": key})
        return str(row[0]) if row else None

    async def schema_version(self) -> int | None:
        row = await self._one(sql.SCHEMA_VERSION_GET, {})
        return int(row[0]) if row else None

    async def next_seq(self) -> int:
        return await self._returned(sql.NEXT_SEQ, {})

    async def insert(self, type_name: str, obj: StoredObject, name_key: str | None, /) -> None:
        await self._run(sql.INSERT_OBJECT, sql.object_params(type_name, obj, name_key))

    async def replace(self, type_name: str, obj: StoredObject, /) -> None:
        await self._run(sql.REPLACE_OBJECT, sql.object_params(type_name, obj, None))

    async def delete(self, type_name: str, object_id: str, /) -> None:
        await self._run(sql.DELETE_OBJECT, {"type": type_name, "id": object_id})

    async def bump_state(self, type_name: str, /) -> int:
        return await self._returned(sql.BUMP_STATE, {"type": type_name})

    async def set_meta(self, key: str, value: str, /) -> None:
        await self._run(sql.SET_META, {"key": key, "value": value})

    async def set_schema_version(self, version: int, /) -> None:
        await self._run(sql.SCHEMA_VERSION_SET, {"version": version})

    async def migrate(self) -> None:
        """Bring the tables to the current version (sql.MIGRATIONS), in this transaction.

        :raises StoreError: the tables are newer than this program, or cannot be migrated.
        """
        with _translated(self._path):
            await sql.migrate(migrations.SqliteSession(self._db))

    async def _returned(self, statement: str, params: dict[str, Any]) -> int:
        row = await self._one(statement, params)
        assert row is not None  # RETURNING always yields the row it wrote
        return int(row[0])

    async def _one(self, statement: str, params: dict[str, Any]) -> Any:
        with _translated(self._path):
            async with self._db.execute(statement, params) as cursor:
                return await cursor.fetchone()

    async def _run(self, statement: str, params: dict[str, Any]) -> None:
        with _translated(self._path):
            await self._db.execute(statement, params)


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """sqlite3 errors as StoreError naming the database (STYLE §3: translate at the boundary)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"registry database {path}: {exc}") from exc
