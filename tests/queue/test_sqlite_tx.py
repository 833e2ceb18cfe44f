"""sqlite_tx: a transaction commits or rolls back whole, even for a cancelled caller."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from delivery.queue import sqlite_tx


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await aiosqlite.connect(tmp_path / "t.db", isolation_level=None)
    await connection.execute("CREATE TABLE t (v INTEGER)")
    yield connection
    await connection.close()


async def rows(db: aiosqlite.Connection) -> list[int]:
    return [row[0] for row in await db.execute_fetchall("SELECT v FROM t ORDER BY v")]


async def test_a_block_commits_and_a_failing_block_rolls_back(db: aiosqlite.Connection) -> None:
    lock = asyncio.Lock()
    async with sqlite_tx.transaction(db, lock) as conn:
        await conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.OperationalError):
        async with sqlite_tx.transaction(db, lock) as conn:
            await conn.execute("INSERT INTO t VALUES (2)")
            await conn.execute("INSERT INTO nowhere VALUES (3)")
    assert await rows(db) == [1]
    assert not db.in_transaction and not lock.locked()


class Gate:
    """Holds aiosqlite's thread when a statement starting with ``prefix`` begins to run."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, statement: str) -> None:
        if not self.reached.is_set() and statement.startswith(self.prefix):
            self.reached.set()
            self.release.wait(10)


@pytest.mark.parametrize(
    ("prefix", "kept"), [("BEGIN", []), ("INSERT", []), ("COMMIT", [1])], ids=str
)
async def test_a_cancelled_caller_leaves_all_or_nothing(
    db: aiosqlite.Connection, prefix: str, kept: list[int]
) -> None:
    lock = asyncio.Lock()

    async def insert() -> None:
        async with sqlite_tx.transaction(db, lock) as conn:
            await conn.execute("INSERT INTO t VALUES (1)")

    gate = Gate(prefix)
    await db.set_trace_callback(gate)
    task = asyncio.ensure_future(insert())
    try:
        assert await asyncio.to_thread(gate.reached.wait, 10), f"{prefix} never ran"
        task.cancel()
        for _ in range(5):  # let the cancellation reach the call while the statement runs
            await asyncio.sleep(0)
    finally:
        gate.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    await db.set_trace_callback(None)  # type: ignore[arg-type]  # None clears it
    assert await rows(db) == kept
    assert not db.in_transaction and not lock.locked()
