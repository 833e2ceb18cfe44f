"""The registry store on PostgreSQL (store.py's protocol), through an asyncpg pool.

Several nodes share one database: each opens its own store on it. The tables and statements
are sql.py's, the same as SQLite's.

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
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import asyncpg

from delivery import migrations, pg
from delivery.registry import sql
from delivery.registry.errors import StoreError
from delivery.registry.store import StoredObject

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
    async def read(self) -> AsyncIterator[_Session]:
        """A read transaction (see store.Store.read)."""
        with _translated(self._where):
            async with (
                self._pool.acquire() as connection,
                connection.transaction(isolation="repeatable_read", readonly=True),
            ):
                yield _Session(connection, self._where)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[_Session]:
        """A write transaction (see store.Store.write), after every other node's."""
        with _translated(self._where):
            async with self._pool.acquire() as connection, connection.transaction():
                await connection.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
                await connection.execute(WRITE_LOCK)
                yield _Session(connection, self._where)

    async def close(self) -> None:
        """Close every connection of the pool."""
        with _translated(self._where):
            await self._pool.close()


class _Session:
    """Statements inside one transaction (store.Reader and store.Writer)."""

    def __init__(self, connection: asyncpg.Connection, where: str) -> None:
        self._connection = connection
        self._where = where

    async def state(self, type_name: str, /) -> int:
        row = await self._one(sql.STATE_OF, {"type": type_name})
        return int(row[0]) if row else 0

    async def states(self) -> dict[str, int]:
        rows = await self._all(sql.STATES, {})
        return {str(type_name): int(state) for type_name, state in rows}

    async def objects(self, type_name: str, /) -> list[StoredObject]:
        rows = await self._all(sql.OBJECTS_OF, {"type": type_name})
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
        with _translated(self._where):
            await sql.migrate(migrations.PostgresSession(self._connection))

    async def _returned(self, text: str, params: Mapping[str, Any]) -> int:
        row = await self._one(text, params)
        assert row is not None  # RETURNING always yields the row it wrote
        return int(row[0])

    async def _one(self, text: str, params: Mapping[str, Any]) -> asyncpg.Record | None:
        query, names = pg.statement(text)
        with _translated(self._where):
            row: asyncpg.Record | None = await self._connection.fetchrow(
                query, *pg.arguments(names, params)
            )
        return row

    async def _all(self, text: str, params: Mapping[str, Any]) -> list[asyncpg.Record]:
        query, names = pg.statement(text)
        with _translated(self._where):
            rows: list[asyncpg.Record] = await self._connection.fetch(
                query, *pg.arguments(names, params)
            )
        return rows

    async def _run(self, text: str, params: Mapping[str, Any]) -> None:
        query, names = pg.statement(text)
        with _translated(self._where):
            await self._connection.execute(query, *pg.arguments(names, params))


@contextlib.contextmanager
def _translated(where: str) -> Iterator[None]:
    """Database and network errors as StoreError naming the database (STYLE §3)."""
    try:
        yield
    except pg.DATABASE_ERRORS as exc:
        raise StoreError(f"registry database {where}: {exc}") from exc
