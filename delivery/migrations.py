"""Schema migrations for the stores that keep tables in the shared database (SQLite or PostgreSQL).

Each component (``queue``, ``registry``, ``tlsrpt``, ...) numbers its schema versions from 1
and gives, for each version ``n``, the statements that take its tables from ``n - 1`` to ``n``
(``steps[n - 1]``; step 1 creates them). At open, inside one write transaction that the store
has begun, `migrate` reads the component's version from the shared ``schema_versions`` table
and runs the steps above it in order, then records the new version: a failing step leaves the
database as it was. Works the same on both databases through a `Session`: `SqliteSession` (in
the caller's ``BEGIN IMMEDIATE``) or `PostgresSession` (in the caller's ``conn.transaction()``).

Sessions are also what the stores run their own statements through (execute, execute_many,
fetch): each store's logic is written once against `Session`, and only how it opens, gets a
transaction and maps errors differs between SQLite and PostgreSQL.

    async with transaction() as conn:           # the store's own write transaction
        await migrations.migrate(
            migrations.PostgresSession(conn), component="queue", steps=STEPS,
            baseline_table="queue_messages",
        )

Outcomes:
    `Migrated`       the version found (0: new database) and the version now (the latest)
    `SchemaTooNew`   the database was migrated by a newer release: nothing is changed, and the
                     store must refuse to open it rather than guess at tables it does not know
    anything the database raises (sqlite3.Error, asyncpg errors): the caller rolls back and
                     translates it into its own error type

Adoption: a database made before versions were recorded has the component's tables but no
row in ``schema_versions``; when ``baseline_table`` exists it is taken as version 1, and only
the steps from 2 on run.

Concurrency: two processes opening one database at once migrate one after the other. SQLite's
``BEGIN IMMEDIATE`` already serializes writers; on PostgreSQL `PostgresSession.lock` takes a
transaction-scoped advisory lock, `MIGRATION_LOCK_KEY`, before reading the version.

Security: steps are the program's own constants; values are bound parameters.

Limits: no downgrade; a step must not depend on data outside its component's tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiosqlite
import asyncpg

from delivery import pg
from delivery.errors import DeliveryError

__all__ = [
    "MIGRATION_LOCK_KEY",
    "VERSION_TABLE",
    "Migrated",
    "Params",
    "PostgresSession",
    "SchemaTooNew",
    "Session",
    "SqliteSession",
    "migrate",
]

Params = dict[str, Any]
"""A statement's ``:name`` parameters. A dict, not any mapping: sqlite3 binds named parameters
from a dict only, and the stores pass their own dicts as they are, never copied."""

VERSION_TABLE: Final = "schema_versions"
"""The table holding every component's schema version: component -> version."""

MIGRATION_LOCK_KEY: Final = 0x64_656C_6976_6572  # "deliver"
"""PostgreSQL advisory lock held while a component migrates (per database, all schemas)."""

_CREATE_VERSION_TABLE: Final = (
    f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE}"
    " (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
)
_GET_VERSION: Final = f"SELECT version FROM {VERSION_TABLE} WHERE component = :component"
_SET_VERSION: Final = (
    f"INSERT INTO {VERSION_TABLE} (component, version) VALUES (:component, :version)"
    " ON CONFLICT (component) DO UPDATE SET version = excluded.version"
)


class SchemaTooNew(DeliveryError):
    """The database holds a newer schema of the component than this program knows.

    :param component: e.g. ``queue``.
    :param found: the version in the database.
    :param supported: the latest version this program knows.
    """

    def __init__(self, component: str, found: int, supported: int, /) -> None:
        super().__init__(component, found, supported)
        self.component, self.found, self.supported = component, found, supported

    def __str__(self) -> str:
        return (
            f"the {self.component} schema of this database is version {self.found}, newer "
            f"than this program's {self.supported}: it was upgraded by a newer release of "
            "delivery; run that release (or restore the backup taken before the upgrade)"
        )


@dataclass(frozen=True, slots=True)
class Migrated:
    """What `migrate` did: ``found`` (0 for a new database) and ``version``, the latest."""

    component: str
    found: int
    version: int

    @property
    def applied(self) -> range:
        """The versions whose steps ran now (empty when the schema was already current)."""
        return range(self.found + 1, self.version + 1)


class Session(Protocol):
    """One connection inside the caller's transaction: what the stores and the runner use.

    Every store (queue, registry, TLS reports) writes its statements once, with ``:name``
    parameters, and runs them through a session; only how a transaction is had differs by
    database. Rows are sequences in the statement's column order (sqlite3 tuples, asyncpg
    Records).
    """

    async def lock(self) -> None:
        """Serialize migrations with other processes for the rest of the transaction."""
        ...

    async def execute(self, statement: str, params: Params | None = None, /) -> int:
        """Run one statement with ``:name`` parameters; the rows it changed (0 for DDL)."""
        ...

    async def execute_many(self, statement: str, params: Sequence[Params], /) -> None:
        """Run one statement per parameter set, in one call (pipelined); nothing is counted."""
        ...

    async def execute_each(self, statement: str, params: Sequence[Params], /) -> int:
        """Run one statement per parameter set; the rows they changed in total."""
        ...

    async def fetch(self, statement: str, params: Params | None = None, /) -> list[Sequence[Any]]:
        """Run one query with ``:name`` parameters and return its rows."""
        ...

    async def has_table(self, name: str, /) -> bool:
        """True when the table exists (in the search path, on PostgreSQL)."""
        ...


class SqliteSession:
    """`Session` on an aiosqlite connection inside ``BEGIN IMMEDIATE``.

    Each method is one call on aiosqlite's thread (one hand-off): a cursor is not closed
    (that would be a second one); sqlite3 has already reset a statement it ran to its end.
    """

    def __init__(self, db: aiosqlite.Connection, /) -> None:
        self._db = db

    async def lock(self) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` holds the database's one write lock."""

    async def execute(self, statement: str, params: Params | None = None, /) -> int:
        """Run one statement; see `Session.execute`."""
        cursor = await self._db.execute(statement, params)
        return max(cursor.rowcount, 0)  # -1: not an INSERT, UPDATE or DELETE

    async def execute_many(self, statement: str, params: Sequence[Params], /) -> None:
        """Run one statement per parameter set; see `Session.execute_many`."""
        if params:
            await self._db.executemany(statement, params)

    async def execute_each(self, statement: str, params: Sequence[Params], /) -> int:
        """Run one statement per parameter set, counted; see `Session.execute_each`."""
        if not params:
            return 0
        cursor = await self._db.executemany(statement, params)
        return max(cursor.rowcount, 0)  # executemany sums the rows each run changed

    async def fetch(self, statement: str, params: Params | None = None, /) -> list[Sequence[Any]]:
        """Run one query; see `Session.fetch`."""
        return list(await self._db.execute_fetchall(statement, params))

    async def has_table(self, name: str, /) -> bool:
        """True when the table exists; see `Session.has_table`."""
        statement = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name"
        return bool(await self.fetch(statement, {"name": name}))


class PostgresSession:
    """`Session` on an asyncpg connection inside a transaction (``:name`` via `pg.statement`)."""

    def __init__(self, conn: asyncpg.Connection, /) -> None:
        self._conn = conn

    async def lock(self) -> None:
        """Take `MIGRATION_LOCK_KEY` until the transaction ends; see `Session.lock`."""
        await self._conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)

    async def execute(self, statement: str, params: Params | None = None, /) -> int:
        """Run one statement; see `Session.execute`."""
        text, names = pg.statement(statement)
        tag: str = await self._conn.execute(text, *pg.arguments(names, params or {}))
        count = tag.rpartition(" ")[2]  # "UPDATE 3", "INSERT 0 1"; "CREATE TABLE": none
        return int(count) if count.isdigit() else 0

    async def execute_many(self, statement: str, params: Sequence[Params], /) -> None:
        """Run one statement per parameter set, pipelined; see `Session.execute_many`."""
        if params:
            text, names = pg.statement(statement)
            await self._conn.executemany(text, [pg.arguments(names, p) for p in params])

    async def execute_each(self, statement: str, params: Sequence[Params], /) -> int:
        """One round trip per parameter set, for the counts (asyncpg's pipelined
        ``executemany`` reports none); see `Session.execute_each`."""
        changed = 0
        for one in params:
            changed += await self.execute(statement, one)
        return changed

    async def fetch(self, statement: str, params: Params | None = None, /) -> list[Sequence[Any]]:
        """Run one query; see `Session.fetch`."""
        text, names = pg.statement(statement)
        return list(await self._conn.fetch(text, *pg.arguments(names, params or {})))

    async def has_table(self, name: str, /) -> bool:
        """True when the table exists in the search path; see `Session.has_table`."""
        rows = await self.fetch("SELECT to_regclass(:name) IS NOT NULL", {"name": name})
        return bool(rows[0][0])


async def migrate(
    db: Session,
    /,
    *,
    component: str,
    steps: Sequence[Sequence[str]],
    baseline_table: str | None = None,
) -> Migrated:
    """migrate - bring the component's tables to the latest version, in the caller's transaction.

    :param steps: ``steps[n - 1]`` are the statements from version ``n - 1`` to ``n``.
    :param baseline_table: a table of the component; present without a recorded version,
        it means version 1 (a database made before versions were recorded).
    :raises SchemaTooNew: the recorded version is above ``len(steps)``; nothing was changed.
    """
    await db.lock()
    await db.execute(_CREATE_VERSION_TABLE)
    rows = await db.fetch(_GET_VERSION, {"component": component})
    if rows:
        found = int(rows[0][0])
    elif baseline_table is not None and await db.has_table(baseline_table):
        found = 1
    else:
        found = 0
    latest = len(steps)
    if found > latest:
        raise SchemaTooNew(component, found, latest)
    for step in steps[found:]:
        for statement in step:
            await db.execute(statement)
    if not rows or found != latest:
        await db.execute(_SET_VERSION, {"component": component, "version": latest})
    return Migrated(component, found, latest)
