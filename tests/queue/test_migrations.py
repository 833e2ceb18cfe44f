"""delivery.migrations: numbered steps, applied once, in one transaction, on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import asyncpg
import pytest

from delivery import migrations
from delivery.queue import sqlite_tx
from tests.plugins.postgres import postgres_schema

STEPS = (
    ("CREATE TABLE toy_items (name TEXT PRIMARY KEY, size INTEGER NOT NULL)",),
    ("INSERT INTO toy_items (name, size) VALUES ('seed', 1)",),
)
"""A component's history: version 1 makes the table, version 2 adds a row."""

STEP_3 = ("UPDATE toy_items SET size = size + 10", "CREATE INDEX toy_size ON toy_items (size)")


class Database(Protocol):
    def session(self) -> contextlib.AbstractAsyncContextManager[migrations.Session]: ...

    async def migrate(
        self, steps: Sequence[Sequence[str]], baseline: str | None = None
    ) -> migrations.Migrated: ...

    async def rows(self, statement: str) -> list[tuple[Any, ...]]: ...

    async def execute(self, statement: str) -> None: ...


async def migrate_toy(
    database: Database, steps: Sequence[Sequence[str]], baseline: str | None
) -> migrations.Migrated:
    async with database.session() as session:
        return await migrations.migrate(
            session, component="toy", steps=steps, baseline_table=baseline
        )


class Sqlite:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db, self.lock = db, asyncio.Lock()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[migrations.Session]:
        async with sqlite_tx.transaction(self.db, self.lock) as db:
            yield migrations.SqliteSession(db)

    async def migrate(
        self, steps: Sequence[Sequence[str]], baseline: str | None = None
    ) -> migrations.Migrated:
        return await migrate_toy(self, steps, baseline)

    async def rows(self, statement: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self.db.execute_fetchall(statement)]

    async def execute(self, statement: str) -> None:
        await self.db.execute(statement)


class Postgres:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[migrations.Session]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield migrations.PostgresSession(conn)

    async def migrate(
        self, steps: Sequence[Sequence[str]], baseline: str | None = None
    ) -> migrations.Migrated:
        return await migrate_toy(self, steps, baseline)

    async def rows(self, statement: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self.pool.fetch(statement)]

    async def execute(self, statement: str) -> None:
        await self.pool.execute(statement)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        db = await aiosqlite.connect(tmp_path / "toy.db", isolation_level=None)
        try:
            yield Sqlite(db)
        finally:
            await db.close()
    else:
        async with postgres_schema() as url:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
            try:
                yield Postgres(pool)
            finally:
                await pool.close()


async def versions(database: Database) -> list[tuple[Any, ...]]:
    return await database.rows(f"SELECT component, version FROM {migrations.VERSION_TABLE}")


async def test_a_new_database_gets_every_step_once(database: Database) -> None:
    first = await database.migrate(STEPS)
    again = await database.migrate(STEPS)

    assert (first.found, first.version, list(first.applied)) == (0, 2, [1, 2])
    assert (again.found, again.version, list(again.applied)) == (2, 2, [])
    assert await database.rows("SELECT name, size FROM toy_items") == [("seed", 1)]
    assert await versions(database) == [("toy", 2)]


async def test_an_upgrade_runs_only_the_new_steps_and_keeps_the_data(database: Database) -> None:
    await database.migrate(STEPS)
    await database.execute("INSERT INTO toy_items (name, size) VALUES ('mine', 5)")

    upgraded = await database.migrate((*STEPS, STEP_3))

    assert list(upgraded.applied) == [3]
    assert sorted(await database.rows("SELECT name, size FROM toy_items")) == [
        ("mine", 15),
        ("seed", 11),
    ]
    assert await versions(database) == [("toy", 3)]


async def test_tables_made_before_versions_were_kept_are_version_1(database: Database) -> None:
    await database.execute("CREATE TABLE toy_items (name TEXT PRIMARY KEY, size INTEGER NOT NULL)")
    await database.execute("INSERT INTO toy_items (name, size) VALUES ('old', 7)")

    adopted = await database.migrate(STEPS, baseline="toy_items")

    assert list(adopted.applied) == [2]  # step 1 would fail: the table exists
    assert sorted(await database.rows("SELECT name FROM toy_items")) == [("old",), ("seed",)]


async def test_without_the_baseline_table_the_database_is_new(database: Database) -> None:
    migrated = await database.migrate(STEPS, baseline="toy_items")
    assert list(migrated.applied) == [1, 2]


async def test_a_newer_schema_is_refused_and_left_alone(database: Database) -> None:
    await database.migrate((*STEPS, STEP_3))

    with pytest.raises(migrations.SchemaTooNew) as refused:
        await database.migrate(STEPS)

    assert (refused.value.component, refused.value.found, refused.value.supported) == ("toy", 3, 2)
    assert "version 3, newer than this program's 2" in str(refused.value)
    assert await versions(database) == [("toy", 3)]


async def test_a_failing_step_leaves_the_database_as_it_was(database: Database) -> None:
    broken = (*STEPS, ("UPDATE toy_items SET size = 0", "INSERT INTO nowhere VALUES (1)"))

    with pytest.raises((sqlite3.Error, asyncpg.PostgresError)):
        await database.migrate(broken)

    assert list((await database.migrate(STEPS)).applied) == [1, 2]  # none of it had stayed


async def test_components_keep_their_own_versions(database: Database) -> None:
    await database.migrate(STEPS)
    async with database.session() as session:
        other = await migrations.migrate(
            session, component="other", steps=(("CREATE TABLE other_t (x INTEGER)",),)
        )
    assert list(other.applied) == [1]
    assert sorted(await versions(database)) == [("other", 1), ("toy", 2)]


@pytest.mark.postgres
async def test_nodes_starting_together_migrate_once() -> None:
    # Without the advisory lock, both would find version 0 and run step 1 (one fails on
    # the existing table), or both insert the seed row.
    async with postgres_schema() as url:
        pools = [await asyncpg.create_pool(url, min_size=1, max_size=1) for _ in range(4)]
        try:
            results = await asyncio.gather(*(Postgres(pool).migrate(STEPS) for pool in pools))
            rows = await pools[0].fetch("SELECT name FROM toy_items")
        finally:
            for pool in pools:
                await pool.close()

    assert sorted(len(result.applied) for result in results) == [0, 0, 0, 2]
    assert [tuple(row) for row in rows] == [("seed",)]
