"""What the registry needs of a database: the store protocol the service is written against.

The service (service.py) holds no SQL. A store keeps, per object type, the objects as JSON
wire objects and a state counter; a global sequence that numbers new objects (ids are made
from it, and it never goes back, so ids are never reused); a key/value table for other
components (the API's first-start token hash); and a schema version, whose absence marks a
new store. Every table is prefixed ``registry_``: the database may be shared with the queue
store (``queue_`` tables).

Outcomes:
    Reads and writes happen inside ``read()`` / ``write()`` transactions: a write transaction
    commits when its block ends normally and rolls back when it raises, so a /set call is
    all-or-nothing at the database. Database faults raise StoreError.

Implementations: sqlite.py (SQLite, WAL) and postgres.py (PostgreSQL), over the tables and
statements of sql.py; both hand out sql.Transaction, the Reader and Writer written once.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["SCHEMA_VERSION", "Reader", "Store", "StoredObject", "Writer"]

SCHEMA_VERSION = 1
"""Version of the registry tables (the number of steps in sql.MIGRATIONS); recorded when a
store is created, and when a store opened at an older version was migrated."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One managed object as stored.

    :param id: the server-assigned id.
    :param seq: its number in the global sequence: creation order.
    :param data: the wire object without ``id``, secrets in clear.
    """

    id: str
    seq: int
    data: dict[str, Any]


class Reader(Protocol):
    """Reads inside one transaction: all of them see the same committed state."""

    async def state(self, type_name: str, /) -> int:
        """The state counter of a type: 0 until its first change."""
        ...

    async def states(self) -> dict[str, int]:
        """The state counter of every type changed at least once (the others are at 0)."""
        ...

    async def objects(self, type_name: str, /) -> list[StoredObject]:
        """Every object of a type, in creation order."""
        ...

    async def get_meta(self, key: str, /) -> str | None:
        """A value of the key/value table, or None."""
        ...

    async def schema_version(self) -> int | None:
        """The recorded schema version; None for a store never initialised."""
        ...


class Writer(Reader, Protocol):
    """Reads and writes inside one write transaction."""

    async def next_seq(self) -> int:
        """The next number of the global sequence (starts at 1, never reused)."""
        ...

    async def insert(self, type_name: str, obj: StoredObject, name_key: str | None, /) -> None:
        """Add an object; ``name_key`` is its lowercase name (None for a singleton)."""
        ...

    async def replace(self, type_name: str, obj: StoredObject, /) -> None:
        """Overwrite the data of an existing object."""
        ...

    async def delete(self, type_name: str, object_id: str, /) -> None:
        """Remove an object."""
        ...

    async def bump_state(self, type_name: str, /) -> int:
        """Advance the state counter of a type; returns the new value."""
        ...

    async def set_meta(self, key: str, value: str, /) -> None:
        """Set a value of the key/value table."""
        ...

    async def set_schema_version(self, version: int, /) -> None:
        """Record the schema version (marks the store initialised)."""
        ...


class Store(Protocol):
    """A registry database: opened by its module's ``open()``, closed with close()."""

    def read(self) -> AbstractAsyncContextManager[Reader]:
        """A read transaction."""
        ...

    def write(self) -> AbstractAsyncContextManager[Writer]:
        """A write transaction: commit on normal exit, rollback on an exception."""
        ...

    async def close(self) -> None:
        """Release the database; the store is unusable afterwards."""
        ...
