"""The registry's tables and statements, written once for SQLite and PostgreSQL.

Every statement uses named ``:name`` parameters and only SQL both databases run the same way
(``ON CONFLICT ... DO UPDATE ... RETURNING``, columns qualified by their table where
PostgreSQL would find them ambiguous). `Transaction`, the store's reads and writes
(store.Reader and store.Writer), is written once too, over a `delivery.migrations.Session`:
the SQLite and PostgreSQL stores differ only in how they open and get a transaction.

Tables, all prefixed ``registry_`` (the database is shared with the queue's ``queue_`` and the
TLS reports' ``tlsrpt_`` tables):
    registry_objects   (type, id) -> seq, name_key (lowercase name, unique per type), data (JSON)
    registry_states    type -> state counter: moves on every /set that changed the type, in its
                       transaction, so a node that polls it sees every change (service.py)
    registry_counters  'object_seq' (ids), 'schema_version'
    registry_meta      key -> value, for other components

Migrations: `MIGRATIONS[n - 1]` takes the tables from version ``n - 1`` to ``n``; version 1
creates them. A store runs them at open, in one write transaction, through the shared runner
(`migrate`: `delivery.migrations`, component ``registry``); a database of release 1, made
before migration versions were recorded, has `BASELINE_TABLE` and is adopted as version 1.
A newer version than this program knows is refused. Apart from that, ``registry_counters``
keeps ``schema_version``: written with the first-start objects, it marks a registry that has
them (service.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from delivery import migrations
from delivery.registry.errors import StoreError
from delivery.registry.store import StoredObject

__all__ = [
    "BASELINE_TABLE",
    "BUMP_STATE",
    "COMPONENT",
    "DELETE_OBJECT",
    "GET_META",
    "INSERT_OBJECT",
    "MIGRATIONS",
    "NEXT_SEQ",
    "OBJECTS_OF",
    "REPLACE_OBJECT",
    "SCHEMA_VERSION_GET",
    "SCHEMA_VERSION_SET",
    "SET_META",
    "STATES",
    "STATE_OF",
    "Transaction",
    "migrate",
    "object_from_row",
    "object_params",
]

COMPONENT: Final = "registry"
"""The component name of these tables in `delivery.migrations`."""
BASELINE_TABLE: Final = "registry_objects"
"""A table of release 1, which recorded no migration version: its presence means version 1."""

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (  # 1: the tables
        """CREATE TABLE IF NOT EXISTS registry_objects (
            type TEXT NOT NULL,
            id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            name_key TEXT,
            data TEXT NOT NULL,
            PRIMARY KEY (type, id)
        )""",
        "CREATE UNIQUE INDEX IF NOT EXISTS registry_objects_name"
        " ON registry_objects (type, name_key)",
        "CREATE TABLE IF NOT EXISTS registry_states (type TEXT PRIMARY KEY, state BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS registry_counters"
        " (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS registry_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
)
"""Schema steps; the position of a step (from 1) is the version it brings the tables to."""

SCHEMA_VERSION_GET: Final = "SELECT value FROM registry_counters WHERE name = 'schema_version'"
SCHEMA_VERSION_SET: Final = (
    "INSERT INTO registry_counters (name, value) VALUES ('schema_version', :version) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)

STATE_OF: Final = "SELECT state FROM registry_states WHERE type = :type"
STATES: Final = "SELECT type, state FROM registry_states"
OBJECTS_OF: Final = "SELECT id, seq, data FROM registry_objects WHERE type = :type ORDER BY seq"
GET_META: Final = "SELECT value FROM registry_meta WHERE key = :key"
NEXT_SEQ: Final = (
    "INSERT INTO registry_counters (name, value) VALUES ('object_seq', 1) "
    "ON CONFLICT (name) DO UPDATE SET value = registry_counters.value + 1 RETURNING value"
)
BUMP_STATE: Final = (
    "INSERT INTO registry_states (type, state) VALUES (:type, 1) "
    "ON CONFLICT (type) DO UPDATE SET state = registry_states.state + 1 RETURNING state"
)
INSERT_OBJECT: Final = (
    "INSERT INTO registry_objects (type, id, seq, name_key, data) "
    "VALUES (:type, :id, :seq, :name_key, :data)"
)
REPLACE_OBJECT: Final = "UPDATE registry_objects SET data = :data WHERE type = :type AND id = :id"
DELETE_OBJECT: Final = "DELETE FROM registry_objects WHERE type = :type AND id = :id"
SET_META: Final = (
    "INSERT INTO registry_meta (key, value) VALUES (:key, :value) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


async def migrate(session: migrations.Session, /) -> None:
    """migrate - bring the registry tables to the latest version, in the caller's transaction.

    :raises StoreError: the tables are newer than this program (`migrations.SchemaTooNew`).
    :raises Exception: whatever the database raises (the store translates it).
    """
    try:
        await migrations.migrate(
            session, component=COMPONENT, steps=MIGRATIONS, baseline_table=BASELINE_TABLE
        )
    except migrations.SchemaTooNew as exc:
        raise StoreError(str(exc)) from exc


def object_params(type_name: str, obj: StoredObject, name_key: str | None, /) -> dict[str, Any]:
    """object_params - the parameters of INSERT_OBJECT (and REPLACE_OBJECT) for ``obj``."""
    data = json.dumps(obj.data, ensure_ascii=False, separators=(",", ":"))
    return {"type": type_name, "id": obj.id, "seq": obj.seq, "name_key": name_key, "data": data}


def object_from_row(type_name: str, object_id: str, seq: int, data: str, /) -> StoredObject:
    """object_from_row - a row of OBJECTS_OF as a StoredObject.

    :raises StoreError: the data is not a JSON object.
    """
    try:
        parsed = json.loads(data)
    except ValueError as exc:
        raise StoreError(f"{type_name} {object_id} is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise StoreError(f"{type_name} {object_id} is not a JSON object")
    return StoredObject(object_id, seq, parsed)


class Transaction:
    """The registry tables inside one transaction (store.Reader and store.Writer).

    Database errors propagate as the session raises them: the store maps them to StoreError.
    """

    def __init__(self, session: migrations.Session, /) -> None:
        self._session = session

    async def state(self, type_name: str, /) -> int:
        """See store.Reader.state."""
        row = await self._one(STATE_OF, {"type": type_name})
        return int(row[0]) if row else 0

    async def states(self) -> dict[str, int]:
        """See store.Reader.states."""
        rows = await self._session.fetch(STATES)
        return {str(type_name): int(state) for type_name, state in rows}

    async def objects(self, type_name: str, /) -> list[StoredObject]:
        """See store.Reader.objects."""
        rows = await self._session.fetch(OBJECTS_OF, {"type": type_name})
        return [object_from_row(type_name, str(i), int(seq), text) for i, seq, text in rows]

    async def get_meta(self, key: str, /) -> str | None:
        """See store.Reader.get_meta."""
        row = await self._one(GET_META, {"key": key})
        return str(row[0]) if row else None

    async def schema_version(self) -> int | None:
        """See store.Reader.schema_version."""
        row = await self._one(SCHEMA_VERSION_GET, {})
        return int(row[0]) if row else None

    async def next_seq(self) -> int:
        """See store.Writer.next_seq."""
        return await self._returned(NEXT_SEQ, {})

    async def insert(self, type_name: str, obj: StoredObject, name_key: str | None, /) -> None:
        """See store.Writer.insert."""
        await self._session.execute(INSERT_OBJECT, object_params(type_name, obj, name_key))

    async def replace(self, type_name: str, obj: StoredObject, /) -> None:
        """See store.Writer.replace."""
        await self._session.execute(REPLACE_OBJECT, object_params(type_name, obj, None))

    async def delete(self, type_name: str, object_id: str, /) -> None:
        """See store.Writer.delete."""
        await self._session.execute(DELETE_OBJECT, {"type": type_name, "id": object_id})

    async def bump_state(self, type_name: str, /) -> int:
        """See store.Writer.bump_state."""
        return await self._returned(BUMP_STATE, {"type": type_name})

    async def set_meta(self, key: str, value: str, /) -> None:
        """See store.Writer.set_meta."""
        await self._session.execute(SET_META, {"key": key, "value": value})

    async def set_schema_version(self, version: int, /) -> None:
        """See store.Writer.set_schema_version."""
        await self._session.execute(SCHEMA_VERSION_SET, {"version": version})

    async def migrate(self) -> None:
        """Bring the tables to the current version (`MIGRATIONS`), in this transaction.

        :raises StoreError: the tables are newer than this program.
        """
        await migrate(self._session)

    async def _returned(self, statement: str, params: migrations.Params, /) -> int:
        row = await self._one(statement, params)
        assert row is not None  # RETURNING always yields the row it wrote
        return int(row[0])

    async def _one(self, statement: str, params: migrations.Params, /) -> Sequence[Any] | None:
        rows = await self._session.fetch(statement, params)
        return rows[0] if rows else None
