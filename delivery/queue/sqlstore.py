"""The queue store's logic, written once for SQLite and PostgreSQL: `SqlQueueStore`.

Every `delivery.queue.store.QueueStore` method is written here once, with the statements of
`delivery.queue.sql`, against a `delivery.migrations.Session` (fetch, execute,
execute_many). A store subclasses `SqlQueueStore` and adds only what differs between the
databases:

    open, `_close_database`  opening, configuring and closing the connection (SQLite) or
                             the pool (PostgreSQL); `_migrate` creates or upgrades the tables
    `_transaction`           one transaction, yielding a session: SQLite's one connection
                             under a lock with BEGIN IMMEDIATE (`sqlite_tx`), PostgreSQL's
                             pooled connection and row locks (``sql.Dialect.row_locks``)
                             and the mapping of the database's errors to `StoreError`
    ``group_reads``          whether concurrent `load_body` calls share one read transaction
                             (SQLite's one connection) or read side by side (a pool)

Enqueues are group-committed on both (`group_commit`): the enqueues that arrive while a
commit runs are written together by the next one, sharing its durable commit.

Outcomes: as `delivery.queue.store`; `StoreError` from `_transaction`.

Security: no SQL is built from message data: every value is a bound parameter (the body read
varies only in its number of placeholders, `sql.select_bodies`).

Limits: `sql.BODY_READ_CHUNK` ids per body SELECT; the limits of `delivery.queue.store`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

from delivery import migrations
from delivery.queue import model, sql, store
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

__all__ = ["SqlQueueStore"]


class SqlQueueStore(abc.ABC):
    """Every `QueueStore` method over a database session (see the module docstring).

    :param dialect: the database's `sql.Dialect`: its tables and its row locks.
    :param group_reads: concurrent `load_body` calls share one read transaction.
    """

    def __init__(self, dialect: sql.Dialect, /, *, group_reads: bool) -> None:
        self._dialect = dialect
        self._lease_candidates = sql.lease_candidates(dialect, in_queue=False)
        self._lease_candidates_in_queue = sql.lease_candidates(dialect, in_queue=True)
        self._held_by_token = sql.held_by_token(dialect)
        self._scheduled_of_message = sql.scheduled_of_message(dialect)
        self._enqueues = GroupCommit(self._write_entries, name="queue-group-commit")
        self._body_reads = (
            GroupCommit(self._read_bodies, name="queue-body-reads") if group_reads else None
        )
        self._closed = False

    @abc.abstractmethod
    def _transaction(
        self, operation: str, *, write: bool = True
    ) -> AbstractAsyncContextManager[migrations.Session]:
        """One transaction: committed when the block ends normally, else rolled back.

        A write transaction reads and writes what no concurrent writer changes in between
        (the store's way: a database-wide write lock, or row locks). Cancellation leaves no
        half-done transaction.

        :param operation: names the operation in the `StoreError`.
        :param write: False for a read-only transaction (one consistent view).
        :raises StoreError: any database failure (rolled back).
        """

    @abc.abstractmethod
    async def _close_database(self) -> None:
        """Close the connection or the pool."""

    async def _migrate(self, where: str, /) -> None:
        """Create or upgrade the ``queue_*`` tables (`sql.steps`), in one transaction.

        :raises StoreError: the queue schema is newer than this program's (naming ``where``).
        """
        try:
            async with self._transaction("open") as db:
                await migrations.migrate(
                    db,
                    component=sql.COMPONENT,
                    steps=sql.steps(self._dialect),
                    baseline_table=sql.BASELINE_TABLE,
                )
        except migrations.SchemaTooNew as exc:
            raise StoreError("open", f"{where}: {exc}") from exc

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
        """Finish pending group commits, then close the database (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self._enqueues.drain()
        await self._close_database()

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
            statement = self._lease_candidates
        else:
            statement, params["queue"] = self._lease_candidates_in_queue, queue
        async with self._transaction("lease") as db:
            ids = [row[0] for row in await db.fetch(statement, params)]
            if not ids:
                return []
            claim = {"owner": owner, "token": token, "until": until, "now": now}
            await db.execute_many(sql.CLAIM, [{**claim, "id": rid} for rid in ids])
            recipient_rows = await db.fetch(sql.LEASED_RECIPIENTS, {"token": token})
            message_rows = await db.fetch(
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
            # Held by the update's own token: one call carries several leases' outcomes, and
            # a recipient a lapsed lease lost may be held again by another token in the call.
            held: set[tuple[int, str]] = set()
            for token in {update.token for update in updates}:
                rows = await db.fetch(self._held_by_token, {"token": token})
                held.update((row[0], token) for row in rows)
            applied = [u for u in updates if (u.recipient_id, u.token) in held]
            await db.execute_many(sql.RECORD, [sql.update_params(u) for u in applied])
            accepted = {update.recipient_id for update in applied}
            due = [notice for notice in notices if notice.about <= accepted]
            queued = iter(await _insert(db, [(n.message, n.recipients) for n in due]))
        message_ids = tuple(next(queued) if n.about <= accepted else None for n in notices)
        return Recorded(refused=frozenset(updated - accepted), message_ids=message_ids)

    async def release(self, owner: str, /, *, now: int) -> int:
        """Give back every lease of ``owner``; see `QueueStore.release`."""
        async with self._transaction("release") as db:
            return await db.execute(sql.RELEASE, {"owner": owner, "now": now})

    async def release_leases(self, leases: Sequence[model.Lease], /, *, now: int) -> int:
        """Give back what these leases still hold; see `QueueStore.release_leases`."""
        params = [
            {"id": recipient.id, "token": lease.token, "now": now}
            for lease in leases
            for recipient in lease.recipients
        ]
        async with self._transaction("release") as db:
            return await db.execute_each(sql.RELEASE_LEASE, params)

    async def retry_now(self, message_id: str, /, *, now: int) -> int:
        """Make the message due now; see `QueueStore.retry_now`."""
        async with self._transaction("retry") as db:
            return await db.execute(sql.RETRY_NOW, {"message_id": message_id, "now": now})

    async def cancel(
        self, message_id: str, /, *, reason: str, notice: Notice | None = None
    ) -> Cancelled:
        """Cancel the message's scheduled recipients; see `QueueStore.cancel`."""
        store.check_cancel_notice(notice)
        params = {"message_id": message_id}
        async with self._transaction("cancel") as db:
            rows = await db.fetch(self._scheduled_of_message, params)
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
        """Return the body; see `QueueStore.load_body` (grouped: see ``group_reads``)."""
        if self._body_reads is None:
            [body] = await self._read_bodies([message_id])
        else:
            [body] = await self._body_reads.submit([message_id])
        if body is None:
            raise MessageNotFound(message_id)
        return body

    async def _read_bodies(self, message_ids: list[str], /) -> list[bytes | None]:
        """The bodies of ``message_ids`` in one read transaction; None for a missing one."""
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(message_ids))
        async with self._transaction("load body", write=False) as db:
            for start in range(0, len(unique), sql.BODY_READ_CHUNK):
                chunk = unique[start : start + sql.BODY_READ_CHUNK]
                rows = await db.fetch(sql.select_bodies(len(chunk)), sql.bodies_params(chunk))
                found.update((row[0], row[1]) for row in rows)
        return [found.get(message_id) for message_id in message_ids]

    async def get_message(self, message_id: str, /) -> model.QueuedMessage | None:
        """Return one message; see `QueueStore.get_message`."""
        params = {"message_id": message_id}
        async with self._transaction("get message", write=False) as db:
            rows = await db.fetch(sql.SELECT_MESSAGE, params)
            if not rows:
                return None
            recipient_rows = await db.fetch(sql.SELECT_RECIPIENTS, params)
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
            message_rows = await db.fetch(sql.LIST_MESSAGES, params)
            recipient_rows = await db.fetch(sql.LIST_RECIPIENTS, params)
        return sql.messages_from_rows(message_rows, recipient_rows)

    async def due_soonest(self, *, queue: str | None = None) -> int | None:
        """Next due time; see `QueueStore.due_soonest`."""
        statement = sql.DUE_SOONEST if queue is None else sql.DUE_SOONEST_IN_QUEUE
        async with self._transaction("due soonest", write=False) as db:
            rows = await db.fetch(statement, {"queue": queue})
        due: int | None = rows[0][0]
        return due

    async def count_by_status(self) -> dict[model.RecipientStatus, int]:
        """Recipients per status; see `QueueStore.count_by_status`."""
        async with self._transaction("count", write=False) as db:
            rows = await db.fetch(sql.COUNT_BY_STATUS)
        counts = dict.fromkeys(model.RecipientStatus, 0)
        counts.update((model.RecipientStatus(status), count) for status, count in rows)
        return counts

    async def count_by_queue(self) -> dict[tuple[str, model.RecipientStatus], int]:
        """Recipients per queue and status; see `QueueStore.count_by_queue`."""
        async with self._transaction("count", write=False) as db:
            rows = await db.fetch(sql.COUNT_BY_QUEUE)
        return {(queue, model.RecipientStatus(status)): count for queue, status, count in rows}

    async def purge_finished(
        self, message_ids: Sequence[str] | None = None, /, *, limit: int = PURGE_BATCH
    ) -> list[str]:
        """Delete finished messages; see `QueueStore.purge_finished`."""
        deleted: list[str] = []
        async with self._transaction("purge") as db:
            if message_ids is None:
                rows = await db.fetch(sql.FINISHED_MESSAGES, {"limit": limit})
                candidates = [row[0] for row in rows]
            else:
                candidates = list(message_ids)
            for message_id in candidates:
                params = {"message_id": message_id}
                # A final status never changes: a message without scheduled recipients
                # stays finished, whatever runs concurrently.
                if await db.fetch(sql.UNFINISHED, params):
                    continue
                await db.execute(sql.DELETE_RECIPIENTS, params)
                await db.execute(sql.DELETE_BODY, params)
                if await db.execute(sql.DELETE_MESSAGE, params):
                    deleted.append(message_id)
        return deleted


async def _insert(db: migrations.Session, entries: Sequence[NewEntry], /) -> list[str]:
    """Insert messages, bodies and recipients inside the caller's transaction."""
    ids = [model.make_message_id(message.received_at) for message, _ in entries]
    if not entries:
        return ids
    pairs = list(zip(ids, entries, strict=True))
    await db.execute_many(
        sql.INSERT_MESSAGE, [sql.message_params(mid, message) for mid, (message, _) in pairs]
    )
    await db.execute_many(
        sql.INSERT_BODY, [{"message_id": mid, "body": m.body} for mid, (m, _) in pairs]
    )
    await db.execute_many(
        sql.INSERT_RECIPIENT,
        [
            sql.recipient_params(mid, recipient)
            for mid, (_, recipients) in pairs
            for recipient in recipients
        ],
    )
    return ids
