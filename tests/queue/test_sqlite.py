"""What is particular to the SQLite store: file format, sharing, crash safety, plans."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import sys
import textwrap
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from delivery.queue import model, sql
from delivery.queue.sqlite import SqliteQueueStore
from delivery.queue.store import Notice, StoreError
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
        (sql.RELEASE_LEASE, []),  # by primary key
    ],
)
async def test_hot_statements_search_indexes_and_never_scan_the_queue(
    tmp_path: Path, statement: str, indexes: list[str]
) -> None:
    path = tmp_path / "delivery.db"
    async with await SqliteQueueStore.open(path):
        pass
    params = {"now": T0, "limit": 10, "queue": "remote", "token": "t", "id": 1}

    plan = [row[3] for row in query(path, f"EXPLAIN QUERY PLAN {statement}", params)]

    searches = [step for step in plan if step.startswith("SEARCH")]
    assert [index for index in indexes if not any(index in step for step in searches)] == []
    assert not [step for step in plan if step.startswith(("SCAN queue_recipients", "SCAN r"))]


# --- cancellation -----------------------------------------------------------------------


class Gate:
    """Holds aiosqlite's thread when a statement starting with ``prefix`` begins to run.

    Installed as the connection's trace callback (called on aiosqlite's thread as each
    statement starts), so the test can cancel the store call while exactly that
    statement is in flight, as a worker being stopped would.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.upper()
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, statement: str) -> None:
        if not self.reached.is_set() and statement.lstrip().upper().startswith(self.prefix):
            self.reached.set()
            self.release.wait(10)


async def cancel_at(store: SqliteQueueStore, prefix: str, call: Awaitable[object]) -> None:
    """Run ``call``, cancel it while its statement ``prefix`` runs; expect CancelledError."""
    gate = Gate(prefix)
    await store._db.set_trace_callback(gate)
    task = asyncio.ensure_future(call)
    try:
        assert await asyncio.to_thread(gate.reached.wait, 10), f"{prefix} never ran"
        task.cancel()
        for _ in range(5):  # let the cancellation reach the call while the statement runs
            await asyncio.sleep(0)
    finally:
        gate.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store._db.set_trace_callback(None)  # type: ignore[arg-type]  # None clears it


# The statements of one `record` with a DSN, in order; cancelled at COMMIT, the record is
# complete (the commit ran), cancelled before, it never happened.
RECORD_STEPS = [
    ("BEGIN", False),
    ("SELECT id FROM queue_recipients", False),
    ("UPDATE queue_recipients", False),
    ("INSERT INTO queue_messages", False),
    ("COMMIT", True),
]


@pytest.mark.parametrize(("prefix", "applied"), RECORD_STEPS, ids=[p for p, _ in RECORD_STEPS])
async def test_a_cancelled_record_rolls_back_or_completes(
    tmp_path: Path, prefix: str, applied: bool
) -> None:
    async with await SqliteQueueStore.open(tmp_path / "delivery.db") as store:
        message_id = await store.enqueue(make_message(), [make_recipient()])
        [lease] = await store.lease_due(now=T0, owner="w", lease_ms=60_000, limit=10)
        [rcpt] = lease.recipients
        update = dataclasses.replace(
            model.RecipientUpdate.unchanged(lease, rcpt), status=model.RecipientStatus.FAILED
        )
        dsn = make_message(sender="", source=model.MessageSource.DSN)
        notices = [Notice(dsn, [make_recipient()], frozenset({rcpt.id}))]

        await cancel_at(store, prefix, store.record([update], notices=notices))

        # The connection is usable: reads and writes work, nothing is half done.
        [stored] = (await store.get_message(message_id) or pytest.fail()).recipients
        messages = await store.list_messages()
        if applied:
            assert stored.status is model.RecipientStatus.FAILED and len(messages) == 2
        else:
            assert stored.status is model.RecipientStatus.SCHEDULED and len(messages) == 1
            assert stored.lease_owner == "w"
            assert not (await store.record([update])).refused
        assert await store.enqueue(make_message(), [make_recipient()])


@pytest.mark.parametrize("prefix", ["BEGIN", "SELECT", "COMMIT"])
async def test_a_cancelled_read_leaves_the_connection_usable(tmp_path: Path, prefix: str) -> None:
    async with await SqliteQueueStore.open(tmp_path / "delivery.db") as store:
        message_id = await store.enqueue(make_message(), [make_recipient()])

        await cancel_at(store, prefix, store.load_body(message_id))

        assert await store.load_body(message_id) == make_message().body
        assert await store.lease_due(now=T0, owner="w", lease_ms=60_000, limit=10)


@pytest.mark.parametrize("prefix", ["BEGIN", "WITH candidates", "UPDATE", "COMMIT"])
async def test_a_cancelled_lease_hands_out_all_or_nothing(tmp_path: Path, prefix: str) -> None:
    async with await SqliteQueueStore.open(tmp_path / "delivery.db") as store:
        await store.enqueue(make_message(), [make_recipient("a@x.example"), make_recipient()])

        await cancel_at(store, prefix, store.lease_due(now=T0, owner="w", lease_ms=60, limit=10))

        leased = await store.lease_due(now=T0, owner="v", lease_ms=60, limit=10)
        assert sum(len(lease.recipients) for lease in leased) == (0 if prefix == "COMMIT" else 2)
        assert await store.release("w", now=T0) == (2 if prefix == "COMMIT" else 0)


async def test_store_calls_cancelled_at_any_moment_leave_it_consistent(tmp_path: Path) -> None:
    """Cancel a record after 0, 1, 2, ... loop iterations: wherever the cut falls (in
    aiosqlite's queue, mid-statement, in COMMIT), the store stays usable and atomic."""
    async with await SqliteQueueStore.open(tmp_path / "delivery.db") as store:
        for ticks in range(40):
            message_id = await store.enqueue(make_message(), [make_recipient()])
            [lease] = await store.lease_due(now=T0, owner=f"w{ticks}", lease_ms=60, limit=1)
            [rcpt] = lease.recipients
            update = dataclasses.replace(
                model.RecipientUpdate.unchanged(lease, rcpt), status=model.RecipientStatus.FAILED
            )
            task = asyncio.ensure_future(store.record([update]))
            for _ in range(ticks):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            [stored] = (await store.get_message(message_id) or pytest.fail()).recipients
            assert stored.status in (model.RecipientStatus.FAILED, model.RecipientStatus.SCHEDULED)
            assert (stored.lease_owner is None) == (stored.status is model.RecipientStatus.FAILED)
