"""What is particular to the SQLite store: file format, sharing, crash safety, plans."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import sys
import textwrap
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from delivery.errors import LastError
from delivery.migrations import VERSION_TABLE
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
    assert tables and all(name.startswith("queue_") or name == VERSION_TABLE for name in tables)


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
        db.execute(f"UPDATE {VERSION_TABLE} SET version = 99 WHERE component = 'queue'")

    with pytest.raises(StoreError, match="version 99, newer than this program's 2"):
        await SqliteQueueStore.open(path)
    assert query(path, f"SELECT version FROM {VERSION_TABLE}") == [(99,)]  # left alone


# The tables of release 1 exactly as it created them, before versions were recorded in
# schema_versions: a database it wrote must open, upgraded in place, with nothing lost.
RELEASE_1_SCHEMA = """
CREATE TABLE queue_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE queue_messages (
    id TEXT PRIMARY KEY, sender TEXT NOT NULL, size BIGINT NOT NULL, source TEXT NOT NULL,
    received_at BIGINT NOT NULL, received_from_ip TEXT NOT NULL,
    received_via_port INTEGER NOT NULL, priority INTEGER NOT NULL, env_id TEXT, ret TEXT,
    smtputf8 INTEGER NOT NULL, eightbitmime INTEGER NOT NULL, requiretls INTEGER NOT NULL);
CREATE TABLE queue_bodies (message_id TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE queue_recipients (
    id INTEGER PRIMARY KEY, message_id TEXT NOT NULL, address TEXT NOT NULL,
    domain TEXT NOT NULL, status TEXT NOT NULL, due BIGINT, retry_num INTEGER NOT NULL,
    notify_num INTEGER NOT NULL, notify_due BIGINT, expires_at BIGINT, max_attempts INTEGER,
    queue TEXT NOT NULL, schedule TEXT NOT NULL, last_error TEXT NOT NULL,
    last_status TEXT NOT NULL, notify TEXT NOT NULL, orcpt TEXT, lease_owner TEXT,
    lease_token TEXT, lease_until BIGINT);
CREATE INDEX queue_recipients_due ON queue_recipients (status, due);
CREATE INDEX queue_recipients_queue_due ON queue_recipients (status, queue, due);
CREATE INDEX queue_recipients_group ON queue_recipients (message_id, domain, status, due);
CREATE INDEX queue_recipients_token ON queue_recipients (lease_token)
    WHERE lease_token IS NOT NULL;
CREATE INDEX queue_recipients_owner ON queue_recipients (lease_owner)
    WHERE lease_owner IS NOT NULL;
INSERT INTO queue_meta VALUES ('schema_version', '1');
INSERT INTO queue_messages VALUES ('018bcfe56800aaaaaaaaaaaaaaaa', 'a@example.org', 5,
    'authenticated', 1700000000000, '192.0.2.1', 587, 3, 'QQ+2B1', 'HDRS', 1, 0, 1);
INSERT INTO queue_bodies VALUES ('018bcfe56800aaaaaaaaaaaaaaaa', X'68656C6C6F');
INSERT INTO queue_recipients VALUES (7, '018bcfe56800aaaaaaaaaaaaaaaa', 'b@example.com',
    'example.com', 'scheduled', 1700000060000, 1, 0, NULL, 1700259200000, NULL, 'remote',
    'remote', 'connection', 'connection refused', 'DELAY,FAILURE', 'rfc822;b@example.com',
    'old-node', 'old-node/0011', 1700000060000);
INSERT INTO queue_recipients VALUES (8, '018bcfe56800aaaaaaaaaaaaaaaa', 'c@example.net',
    'example.net', 'delivered', NULL, 1, 0, NULL, NULL, 5, 'remote', 'remote', 'none',
    '250 ok', '', NULL, NULL, NULL, NULL);
"""


async def test_a_release_1_database_is_upgraded_in_place_with_nothing_lost(
    tmp_path: Path,
) -> None:
    path = tmp_path / "delivery.db"
    with sqlite3.connect(path) as db:
        db.executescript(RELEASE_1_SCHEMA)

    async with await SqliteQueueStore.open(path) as store:
        got = await store.get_message("018bcfe56800aaaaaaaaaaaaaaaa")
        assert await store.load_body("018bcfe56800aaaaaaaaaaaaaaaa") == b"hello"
        # The old lease lapses as it would have: the recipient is taken over, then recorded.
        [lease] = await store.lease_due(now=T0 + 60_000, owner="new", lease_ms=60_000, limit=9)
        update = dataclasses.replace(
            model.RecipientUpdate.unchanged(lease, lease.recipients[0]),
            status=model.RecipientStatus.DELIVERED,
        )
        assert not (await store.record([update])).refused
        new_id = await store.enqueue(make_message(), [make_recipient()])
        listed = {m.id for m in await store.list_messages()}
        assert listed == {"018bcfe56800aaaaaaaaaaaaaaaa", new_id}

    assert got is not None
    assert (got.sender, got.size, got.priority, got.env_id, got.ret) == (
        "a@example.org",
        5,
        3,
        "QQ+2B1",
        model.Ret.HDRS,
    )
    assert (got.smtputf8, got.eightbitmime, got.requiretls) == (True, False, True)
    pending, done = got.recipients
    assert (pending.id, pending.status, pending.retry_num, pending.lease_owner) == (
        7,
        model.RecipientStatus.SCHEDULED,
        1,
        "old-node",
    )
    assert pending.notify == {model.Notify.DELAY, model.Notify.FAILURE}
    assert (pending.last_error, pending.orcpt) == (LastError.CONNECTION, "rfc822;b@example.com")
    assert (done.id, done.status, done.max_attempts) == (8, model.RecipientStatus.DELIVERED, 5)
    assert query(path, f"SELECT component, version FROM {VERSION_TABLE}") == [("queue", 2)]
    # Release 1 reads its version here and refuses anything above 1.
    assert query(path, "SELECT value FROM queue_meta") == [("2",)]


async def test_a_new_database_is_created_at_the_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "delivery.db"
    async with await SqliteQueueStore.open(path):
        pass
    async with await SqliteQueueStore.open(path):  # a second open migrates nothing
        pass

    assert query(path, f"SELECT component, version FROM {VERSION_TABLE}") == [
        ("queue", sql.SCHEMA_VERSION)
    ]
    assert query(path, "SELECT value FROM queue_meta") == [(str(sql.SCHEMA_VERSION),)]


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
