"""SQLite queue store: `QueueStore` on one aiosqlite connection.

One connection per store, in WAL mode with ``synchronous=FULL``: a commit returns
only after the write-ahead log is fsynced, so an acknowledged message survives a
crash or power loss. Every SQLite call runs on aiosqlite's thread, never on the event
loop. The database file may be shared with the registry (tables ``registry_*``) and
with other processes: writers take the write lock with ``BEGIN IMMEDIATE`` and wait
up to `BUSY_TIMEOUT_MS` for it.

Transactions on the one connection are serialized by an asyncio lock. Enqueues are
group-committed (`group_commit`): the enqueues that arrive while a commit is running
are written together by the next one, sharing its fsync; each caller still returns
only after its own message is committed. Body reads are grouped the same way: the
`load_body` calls that arrive while one runs share the next read transaction (one
SELECT for all), so a worker starting many deliveries at once does not queue one
transaction per message on the lock. The schema is created or upgraded at open
(`delivery.migrations`, `sql.steps`), in one transaction.

Outcomes: as `delivery.queue.store` (`StoreError` wraps every ``sqlite3.Error``,
with the SQLite message, and a schema newer than this program's).

Security: the database file holds every queued message; create its directory
readable by the daemon's user only. No SQL is ever built from message data: all
values are bound parameters.

Limits: one writer at a time per database file (SQLite), which is what
`MAX_LEASE_BATCH` keeps short. An in-memory database is refused (not durable).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import aiosqlite

from delivery import migrations
from delivery.queue import model, sql, sqlite_tx, store
from delivery.queue.group_commit import GroupCommit
from delivery.queue.store import (
    PURGE_BATCH,
    Cancelled,
    MessageNotFound,
    NewEntry,
    Notice,
    Recorded,
    StoreError,
)

__all__ = ["BUSY_TIMEOUT_MS", "SqliteQueueStore"]

BODY_READ_CHUNK: Final = 500
"""Message ids bound in one body SELECT (``IN (...)``): well under SQLite's smallest
parameter limit (999 before 3.32), however many reads were grouped."""

BUSY_TIMEOUT_MS: Final = 30_000
"""How long a writer waits for another connection (the registry, another process on
the same file) to release the write lock before the operation fails with StoreError."""

_Params = Mapping[str, Any]


class SqliteQueueStore:
    """Durable queue in one SQLite database file (see the module docstring).

    Open it with `SqliteQueueStore.open` (or ``async with await ...open(path)``);
    the methods are documented on `delivery.queue.store.QueueStore`.
    """

    def __init__(self, db: aiosqlite.Connection, path: Path, /) -> None:
        """Wrap an open, configured connection; use `open` instead."""
        self.path = path
        self._db = db
        self._lock = asyncio.Lock()
        self._enqueues = GroupCommit(self._write_entries, name="queue-group-commit")
        self._body_reads = GroupCommit(self._read_bodies, name="queue-body-reads")
        self._closed = False

    @classmethod
    async def open(cls, path: str | PathLike[str], /) -> SqliteQueueStore:
        """Open (creating if needed) the queue in the database file at ``path``.

        Creates the parent directory, switches the file to WAL mode, and creates or
        upgrades the ``queue_*`` tables (`sql.steps`).

        :raises StoreError: the file cannot be opened or used in WAL mode, or its
            queue schema is newer than this program.
        """
        file = Path(path)
        if str(file) == ":memory:":
            raise StoreError("open", "an in-memory database is not durable")
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(file, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError("open", f"{file}: {exc}") from exc
        store = cls(db, file)
        try:
            await store._configure()
        except BaseException:
            await db.close()
            raise
        return store

    async def _configure(self) -> None:
        try:
            await self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            rows = list(await self._db.execute_fetchall("PRAGMA journal_mode = WAL"))
            if rows[0][0] != "wal":
                raise StoreError("open", f"{self.path}: WAL mode unavailable ({rows[0][0]})")
            await self._db.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise StoreError("open", f"{self.path}: {exc}") from exc
        try:
            async with self._transaction("open") as db:
                await migrations.migrate(
                    migrations.SqliteSession(db),
                    component=sql.COMPONENT,
                    steps=sql.steps(sql.SQLITE),
                    baseline_table=sql.BASELINE_TABLE,
                )
        except migrations.SchemaTooNew as exc:
            raise StoreError("open", f"{self.path}: {exc}") from exc

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Finish pending group commits, then close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self._enqueues.drain()
        await self._db.close()

    @contextlib.asynccontextmanager
    async def _transaction(
        self, operation: str, *, write: bool = True
    ) -> AsyncIterator[aiosqlite.Connection]:
        """Run the block in one transaction on the connection, serialized by the lock.

        A write transaction takes SQLite's write lock up front (``BEGIN IMMEDIATE``)
        so that its reads and writes see no other writer in between: this is what
        makes a lease exclusive. Any failure rolls back and becomes StoreError.

        Cancellation (`sqlite_tx.transaction`): a cancelled call has either no effect or its
        whole effect, and the connection is never left inside a transaction.
        """
        try:
            async with sqlite_tx.transaction(self._db, self._lock, write=write) as db:
                yield db
        except sqlite3.Error as exc:
            raise StoreError(operation, str(exc)) from exc

    # --- enqueue --------------------------------------------------------------------------

    async def enqueue(
        self, message: model.NewMessage, recipients: Sequence[model.NewRecipient], /
    ) -> str:
        """Queue one message durably; see `QueueStore.enqueue`."""
        return (await self.enqueue_many([(message, recipients)]))[0]

    async def enqueue_many(self, entries: Sequence[NewEntry], /) -> list[str]:
        """Queue messages in one durable commit; see `QueueStore.enqueue_many`."""
        store.check_entries(entries)
        return await self._enqueues.submit(entries)

    async def _write_entries(self, entries: list[NewEntry], /) -> list[str]:
        """One group commit: every pending entry in one transaction."""
        async with self._transaction("enqueue") as db:
            return await _insert(db, entries)

    # --- leases and outcomes --------------------------------------------------------------

    async def lease_due(
        self, *, now: int, owner: str, lease_ms: int, limit: int, queue: str | None = None
    ) -> list[model.Lease]:
        """Hand out due recipients; see `QueueStore.lease_due`."""
        store.check_lease(limit=limit, lease_ms=lease_ms)
        token = model.make_lease_token(owner)
        until = now + lease_ms
        params: dict[str, Any] = {"now": now, "limit": limit}
        if queue is None:
            statement = sql.LEASE_CANDIDATES
        else:
            statement, params["queue"] = sql.LEASE_CANDIDATES_IN_QUEUE, queue
        async with self._transaction("lease") as db:
            ids = [row[0] for row in await db.execute_fetchall(statement, params)]
            if not ids:
                return []
            claim = {"owner": owner, "token": token, "until": until, "now": now}
            await db.executemany(sql.CLAIM, [{**claim, "id": rid} for rid in ids])
            recipient_rows = await db.execute_fetchall(sql.LEASED_RECIPIENTS, {"token": token})
            message_rows = await db.execute_fetchall(
                sql.LEASED_MESSAGES, {"token": token, "body_max": store.LEASE_BODY_MAX_BYTES}
            )
        return sql.leases_from_rows(
            ids, recipient_rows, message_rows, token=token, owner=owner, until=until
        )

    async def record(
        self, updates: Sequence[model.RecipientUpdate], /, *, notices: Sequence[Notice] = ()
    ) -> Recorded:
        """Apply outcomes in one transaction; see `QueueStore.record`."""
        store.check_notices(updates, notices)
        updated = {update.recipient_id for update in updates}
        async with self._transaction("record") as db:
            held: set[int] = set()
            for token in {update.token for update in updates}:
                rows = await db.execute_fetchall(sql.HELD_BY_TOKEN, {"token": token})
                held.update(row[0] for row in rows)
            applied = [update for update in updates if update.recipient_id in held]
            await db.executemany(sql.RECORD, [sql.update_params(u) for u in applied])
            accepted = {update.recipient_id for update in applied}
            due = [notice for notice in notices if notice.about <= accepted]
            queued = iter(await _insert(db, [(n.message, n.recipients) for n in due]))
        message_ids = tuple(next(queued) if n.about <= accepted else None for n in notices)
        return Recorded(refused=frozenset(updated - held), message_ids=message_ids)

    async def release(self, owner: str, /, *, now: int) -> int:
        """Give back every lease of ``owner``; see `QueueStore.release`."""
        async with self._transaction("release") as db:
            return await _changes(db, sql.RELEASE, {"owner": owner, "now": now})

    async def release_leases(self, leases: Sequence[model.Lease], /, *, now: int) -> int:
        """Give back what these leases still hold; see `QueueStore.release_leases`."""
        params = [
            {"id": recipient.id, "token": lease.token, "now": now}
            for lease in leases
            for recipient in lease.recipients
        ]
        async with self._transaction("release") as db:
            cursor = await db.executemany(sql.RELEASE_LEASE, params)
            released: int = cursor.rowcount
            await cursor.close()
            return released

    async def retry_now(self, message_id: str, /, *, now: int) -> int:
        """Make the message due now; see `QueueStore.retry_now`."""
        async with self._transaction("retry") as db:
            return await _changes(db, sql.RETRY_NOW, {"message_id": message_id, "now": now})

    async def cancel(
        self, message_id: str, /, *, reason: str, notice: Notice | None = None
    ) -> Cancelled:
        """Cancel the message's scheduled recipients; see `QueueStore.cancel`."""
        store.check_cancel_notice(notice)
        params = {"message_id": message_id}
        async with self._transaction("cancel") as db:
            rows = await db.execute_fetchall(sql.SCHEDULED_OF_MESSAGE, params)
            ids = frozenset(row[0] for row in rows)
            if notice is not None and notice.about != ids:
                return Cancelled(frozenset(), stale=True)
            await db.execute(sql.CANCEL, {**params, "reason": reason})
            if notice is None:
                return Cancelled(ids)
            [notice_id] = await _insert(db, [(notice.message, notice.recipients)])
        return Cancelled(ids, notice_id)

    # --- reading --------------------------------------------------------------------------

    async def load_body(self, message_id: str, /) -> bytes:
        """Return the body; see `QueueStore.load_body` (grouped: see the module docstring)."""
        [body] = await self._body_reads.submit([message_id])
        if body is None:
            raise MessageNotFound(message_id)
        return body

    async def _read_bodies(self, message_ids: list[str], /) -> list[bytes | None]:
        """The bodies of ``message_ids`` in one read transaction; None for a missing one."""
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(message_ids))
        async with self._transaction("load body", write=False) as db:
            for start in range(0, len(unique), BODY_READ_CHUNK):
                chunk = unique[start : start + BODY_READ_CHUNK]
                marks = ", ".join("?" * len(chunk))  # placeholders only; ids are bound
                statement = (
                    f"SELECT message_id, body FROM queue_bodies WHERE message_id IN ({marks})"
                )
                rows = await db.execute_fetchall(statement, chunk)
                found.update((row[0], row[1]) for row in rows)
        return [found.get(message_id) for message_id in message_ids]

    async def get_message(self, message_id: str, /) -> model.QueuedMessage | None:
        """Return one message; see `QueueStore.get_message`."""
        params = {"message_id": message_id}
        async with self._transaction("get message", write=False) as db:
            rows = list(await db.execute_fetchall(sql.SELECT_MESSAGE, params))
            if not rows:
                return None
            recipient_rows = await db.execute_fetchall(sql.SELECT_RECIPIENTS, params)
        return sql.message_from_row(rows[0], [*map(sql.recipient_from_row, recipient_rows)])

    async def list_messages(
        self,
        *,
        status: model.RecipientStatus | None = None,
        domain: str | None = None,
        sender: str | None = None,
        queue: str | None = None,
        recipient: str | None = None,
        due_before: int | None = None,
        due_after: int | None = None,
        deferred: bool | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[model.QueuedMessage]:
        """List messages; see `QueueStore.list_messages`."""
        store.check_list_limit(limit)
        params = sql.list_params(
            status=status,
            domain=domain,
            sender=sender,
            queue=queue,
            recipient=recipient,
            due_before=due_before,
            due_after=due_after,
            deferred=deferred,
            after=after,
            limit=limit,
        )
        async with self._transaction("list", write=False) as db:
            message_rows = await db.execute_fetchall(sql.LIST_MESSAGES, params)
            recipient_rows = await db.execute_fetchall(sql.LIST_RECIPIENTS, params)
        return sql.messages_from_rows(message_rows, recipient_rows)

    async def due_soonest(self, *, queue: str | None = None) -> int | None:
        """Next due time; see `QueueStore.due_soonest`."""
        statement = sql.DUE_SOONEST if queue is None else sql.DUE_SOONEST_IN_QUEUE
        params = {} if queue is None else {"queue": queue}
        async with self._transaction("due soonest", write=False) as db:
            rows = list(await db.execute_fetchall(statement, params))
        due: int | None = rows[0][0]
        return due

    async def count_by_status(self) -> dict[model.RecipientStatus, int]:
        """Recipients per status; see `QueueStore.count_by_status`."""
        async with self._transaction("count", write=False) as db:
            rows = await db.execute_fetchall(sql.COUNT_BY_STATUS)
        counts = dict.fromkeys(model.RecipientStatus, 0)
        counts.update((model.RecipientStatus(status), count) for status, count in rows)
        return counts

    async def count_by_queue(self) -> dict[tuple[str, model.RecipientStatus], int]:
        """Recipients per queue and status; see `QueueStore.count_by_queue`."""
        async with self._transaction("count", write=False) as db:
            rows = await db.execute_fetchall(sql.COUNT_BY_QUEUE)
        return {(queue, model.RecipientStatus(status)): count for queue, status, count in rows}

    async def purge_finished(
        self, message_ids: Sequence[str] | None = None, /, *, limit: int = PURGE_BATCH
    ) -> list[str]:
        """Delete finished messages; see `QueueStore.purge_finished`."""
        deleted: list[str] = []
        async with self._transaction("purge") as db:
            if message_ids is None:
                rows = await db.execute_fetchall(sql.FINISHED_MESSAGES, {"limit": limit})
                candidates = [row[0] for row in rows]
            else:
                candidates = list(message_ids)
            for message_id in candidates:
                params = {"message_id": message_id}
                if list(await db.execute_fetchall(sql.UNFINISHED, params)):
                    continue
                await db.execute(sql.DELETE_RECIPIENTS, params)
                await db.execute(sql.DELETE_BODY, params)
                if await _changes(db, sql.DELETE_MESSAGE, params):
                    deleted.append(message_id)
        return deleted


async def _insert(db: aiosqlite.Connection, entries: Sequence[NewEntry], /) -> list[str]:
    """Insert messages, bodies and recipients inside the caller's transaction."""
    ids = [model.make_message_id(message.received_at) for message, _ in entries]
    if not entries:
        return ids
    await db.executemany(
        sql.INSERT_MESSAGE,
        [sql.message_params(mid, message) for mid, (message, _) in zip(ids, entries, strict=True)],
    )
    await db.executemany(
        sql.INSERT_BODY,
        [{"message_id": mid, "body": m.body} for mid, (m, _) in zip(ids, entries, strict=True)],
    )
    await db.executemany(
        sql.INSERT_RECIPIENT,
        [
            sql.recipient_params(mid, recipient)
            for mid, (_, recipients) in zip(ids, entries, strict=True)
            for recipient in recipients
        ],
    )
    return ids


async def _changes(db: aiosqlite.Connection, statement: str, params: _Params, /) -> int:
    """Run one statement and return how many rows it changed."""
    cursor = await db.execute(statement, params)
    count = cursor.rowcount
    await cursor.close()
    return count
