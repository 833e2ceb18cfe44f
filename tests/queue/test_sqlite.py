"""What is particular to the SQLite store: file format, sharing, crash safety, plans."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from delivery.queue import sql
from delivery.queue.sqlite import SqliteQueueStore
from delivery.queue.store import StoreError
from tests.plugins.queue import T0, make_message, make_recipient


def query(path: Path, statement: str, params: dict[str, object] | None = None) -> list[Any]:
    with sqlite3.connect(path) as db:
        return db.execute(statement, params or {}).fetchall()


async def test_the_file_is_in_wal_mode_with_only_queue_tables(tmp_path: Path) -> None:
    path = tmp_path / "data" / "delivery.db"
    async with await SqliteQueueStore.open(path):
        pass

    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    tables = [name for (name,) in query(path, "SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables and all(name.startswith("queue_") for name in tables)


async def test_the_file_is_shared_with_registry_tables(tmp_path: Path) -> None:
    path = tmp_path / "delivery.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE registry_objects (id TEXT PRIMARY KEY)")
        db.execute("INSERT INTO registry_objects VALUES ('x')")

    async with await SqliteQueueStore.open(path) as store:
        await store.enqueue(make_message(), [make_recipient()])

    assert query(path, "SELECT id FROM registry_objects") == [("x",)]


async def test_the_body_is_stored_once_per_message(tmp_path: Path) -> None:
    path = tmp_path / "delivery.db"
    async with await SqliteQueueStore.open(path) as store:
        rcpts = [make_recipient(f"r{n}@d{n}.example") for n in range(10)]
        await store.enqueue(make_message(body=b"x" * 10_000), rcpts)

    assert query(path, "SELECT COUNT(*), SUM(LENGTH(body)) FROM queue_bodies") == [(1, 10_000)]


async def test_a_message_survives_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "delivery.db"
    script = textwrap.dedent(f"""
        import asyncio, os
        from delivery.queue.sqlite import SqliteQueueStore
        from tests.plugins.queue import make_message, make_recipient
        async def main():
            store = await SqliteQueueStore.open({str(path)!r})
            print(await store.enqueue(make_message(), [make_recipient()]), flush=True)
            os._exit(0)  # no close, no checkpoint: as if killed right after the 250
        asyncio.run(main())
    """)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await child.communicate()
    assert child.returncode == 0
    message_id = stdout.decode().strip()

    async with await SqliteQueueStore.open(path) as store:
        assert await store.get_message(message_id) is not None


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "delivery.db"
    async with await SqliteQueueStore.open(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute("UPDATE queue_meta SET value = '99' WHERE name = 'schema_version'")

    with pytest.raises(StoreError, match="version 99"):
        await SqliteQueueStore.open(path)


async def test_an_in_memory_database_is_refused() -> None:
    with pytest.raises(StoreError, match="not durable"):
        await SqliteQueueStore.open(":memory:")


@pytest.mark.parametrize(
    ("statement", "indexes"),
    [
        (sql.LEASE_CANDIDATES, ["queue_recipients_due", "queue_recipients_group"]),
        (sql.LEASE_CANDIDATES_IN_QUEUE, ["queue_recipients_queue_due", "queue_recipients_group"]),
        (sql.DUE_SOONEST, ["queue_recipients_due"]),
        (sql.DUE_SOONEST_IN_QUEUE, ["queue_recipients_queue_due"]),
        (sql.HELD_BY_TOKEN, ["queue_recipients_token"]),
    ],
)
async def test_hot_statements_search_indexes_and_never_scan_the_queue(
    tmp_path: Path, statement: str, indexes: list[str]
) -> None:
    path = tmp_path / "delivery.db"
    async with await SqliteQueueStore.open(path):
        pass
    params = {"now": T0, "limit": 10, "queue": "remote", "token": "t"}

    plan = [row[3] for row in query(path, f"EXPLAIN QUERY PLAN {statement}", params)]

    searches = [step for step in plan if step.startswith("SEARCH")]
    assert [index for index in indexes if not any(index in step for step in searches)] == []
    assert not [step for step in plan if step.startswith(("SCAN queue_recipients", "SCAN r"))]
