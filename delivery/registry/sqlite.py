"""The registry store on SQLite (store.py's protocol), through aiosqlite.

One connection per store, its calls run on aiosqlite's thread so the event loop never blocks.
The database is in WAL mode with ``synchronous=FULL``: a /set that answered has reached the
disk. The file may be shared with the queue store; both wait up to BUSY_TIMEOUT_MS for each
other's write transactions instead of failing. Write transactions start with
``BEGIN IMMEDIATE``, so two processes never both read-then-write the same state.

Tables:
    registry_objects   (type, id) -> seq, name_key (lowercase name, unique per type), data (JSON)
    registry_states    type -> state counter
    registry_counters  'object_seq' (ids), 'schema_version'
    registry_meta      key -> value, for other components

Outcomes:
    open_store(path) -> SqliteStore, with the folder and tables created. Any sqlite3 error
    becomes StoreError, naming the file.

Limits: BUSY_TIMEOUT_MS; a schema newer than SCHEMA_VERSION is refused (registry/service.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Final

import aiosqlite

from delivery.registry.errors import StoreError
from delivery.registry.store import StoredObject

__all__ = ["BUSY_TIMEOUT_MS", "SqliteStore", "open_store"]

BUSY_TIMEOUT_MS: Final = 10_000
"""How long a statement waits for another connection's write lock (the queue store's, or
another process's) before failing: long enough for any queue transaction, short enough that a
stuck writer shows up as an error rather than a hang."""

_TABLES: Final = (
    """CREATE TABLE IF NOT EXISTS registry_objects (
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        name_key TEXT,
        data TEXT NOT NULL,
        PRIMARY KEY (type, id)
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS registry_objects_name ON registry_objects (type, name_key)",
    "CREATE TABLE IF NOT EXISTS registry_states (type TEXT PRIMARY KEY, state INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS registry_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS registry_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)

_INCREMENT: Final = (
    "INSERT INTO {table} ({key}, {value}) VALUES (?, 1) "
    "ON CONFLICT ({key}) DO UPDATE SET {value} = {value} + 1 RETURNING {value}"
)


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
            await db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _TABLES:
                    await db.execute(statement)
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")
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
        row = await self._one("SELECT state FROM registry_states WHERE type = ?", (type_name,))
        return int(row[0]) if row else 0

    async def objects(self, type_name: str, /) -> list[StoredObject]:
        with _translated(self._path):
            async with self._db.execute(
                "SELECT id, seq, data FROM registry_objects WHERE type = ? ORDER BY seq",
                (type_name,),
            ) as cursor:
                rows = await cursor.fetchall()
        out = []
        for object_id, seq, text in rows:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise StoreError(f"{self._path}: {type_name} {object_id} is not a JSON object")
            out.append(StoredObject(str(object_id), int(seq), data))
        return out

    async def get_meta(self, key: str, /) -> str | None:
        row = await self._one("SELECT value FROM registry_meta WHERE key = ?", (key,))
        return str(row[0]) if row else None

    async def schema_version(self) -> int | None:
        row = await self._one(
            "SELECT value FROM registry_counters WHERE name = 'schema_version'", ()
        )
        return int(row[0]) if row else None

    async def next_seq(self) -> int:
        return await self._increment("registry_counters", "name", "value", "object_seq")

    async def insert(self, type_name: str, obj: StoredObject, name_key: str | None, /) -> None:
        await self._run(
            "INSERT INTO registry_objects (type, id, seq, name_key, data) VALUES (?, ?, ?, ?, ?)",
            (type_name, obj.id, obj.seq, name_key, _json(obj.data)),
        )

    async def replace(self, type_name: str, obj: StoredObject, /) -> None:
        await self._run(
            "UPDATE registry_objects SET data = ? WHERE type = ? AND id = ?",
            (_json(obj.data), type_name, obj.id),
        )

    async def delete(self, type_name: str, object_id: str, /) -> None:
        await self._run(
            "DELETE FROM registry_objects WHERE type = ? AND id = ?", (type_name, object_id)
        )

    async def bump_state(self, type_name: str, /) -> int:
        return await self._increment("registry_states", "type", "state", type_name)

    async def set_meta(self, key: str, value: str, /) -> None:
        await self._run(
            "INSERT INTO registry_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def set_schema_version(self, version: int, /) -> None:
        await self._run(
            "INSERT INTO registry_counters (name, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (version,),
        )

    async def _increment(self, table: str, key: str, value: str, name: str) -> int:
        row = await self._one(_INCREMENT.format(table=table, key=key, value=value), (name,))
        assert row is not None  # RETURNING always yields the row it wrote
        return int(row[0])

    async def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        with _translated(self._path):
            async with self._db.execute(sql, params) as cursor:
                return await cursor.fetchone()

    async def _run(self, sql: str, params: tuple[Any, ...]) -> None:
        with _translated(self._path):
            await self._db.execute(sql, params)


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """sqlite3 errors as StoreError naming the database (STYLE §3: translate at the boundary)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"registry database {path}: {exc}") from exc
