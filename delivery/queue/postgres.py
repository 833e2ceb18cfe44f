"""PostgreSQL queue store: `QueueStore` on an asyncpg connection pool.

The same tables and statements as the SQLite store (`delivery.queue.sql`), rewritten
once, at import, from ``:name`` to asyncpg's ``$n`` (`delivery.pg.statement`). Several
nodes may share one database: each opens its own store (its own pool) on the same URL.

How the `delivery.queue.store` guarantees hold here:
    Durable enqueue    every connection runs with ``synchronous_commit = on`` (forced:
                       the URL cannot lower it), so COMMIT returns only once the
                       server has flushed its write-ahead log; `enqueue` returns after
                       COMMIT. Concurrent enqueues share one transaction
                       (`group_commit`), and the server groups concurrent commits.
    Exclusive leases   `sql.lease_candidates` locks the rows it picks with ``FOR UPDATE
                       SKIP LOCKED``: concurrent leasers, in this process or on other
                       nodes, skip each other's rows instead of waiting, and the claim
                       re-checks ``due <= now``. A lease lapses at ``until`` (its
                       recipients' ``due``), so a dead node's recipients are taken over.
    Explicit outcomes  `record` locks the rows its tokens hold (``FOR UPDATE``) before
                       applying, so "held" cannot change between the check and the
                       update; notices follow the same rule as on SQLite.
    Flat cost          the (status, due) and (status, queue, due) indexes.

Transactions are READ COMMITTED, plus the row locks above; multi-statement reads
(`get_message`, `list_messages`) run in one read-only REPEATABLE READ snapshot.

Outcomes: as `delivery.queue.store`; `StoreError` wraps every database error (asyncpg's,
a refused or dropped connection, a statement over `STATEMENT_TIMEOUT_S`) with the
server's message, and a schema newer than this program's. A malformed URL raises
`ConfigError` naming ``store.url``.

Security: the database holds every queued message; give the role only this database.
No SQL is built from message data: every value is a bound parameter. Error messages
name the server by `delivery.pg.describe`, never with the password.

Limits: `POOL_MAX_SIZE` connections per store. A connection lost during COMMIT leaves
the outcome unknown to the caller (the transaction is atomic either way): an enqueue
is then retried by the client (a duplicate, never a loss), a lease lapses.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import asyncpg

from delivery import migrations, pg
from delivery.errors import ConfigError
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

__all__ = ["POOL_MAX_SIZE", "STATEMENT_TIMEOUT_S", "PostgresQueueStore"]

POOL_MAX_SIZE: Final = 10
"""Connections one store holds at most: concurrent transactions beyond wait for one.
PostgreSQL's default ``max_connections`` (100) is shared by every node and store."""

STATEMENT_TIMEOUT_S: Final = 30.0
"""How long one statement may take, lock waits included, before the operation fails
with StoreError: a stuck database shows as an error rather than a hang (SQLite's
``BUSY_TIMEOUT_MS`` plays this part there)."""

_DATABASE_ERRORS: Final = (*pg.DATABASE_ERRORS, asyncpg.InternalClientError)
"""`pg.DATABASE_ERRORS`, and what asyncpg raises for the first statement sent on a
connection the server has just closed (before it noticed): the pool replaces that
connection, and the next call works."""

_SERVER_SETTINGS: Final = {"synchronous_commit": "on"}
"""Forced on every connection (they override the URL's parameters): durable commits."""


@dataclass(frozen=True, slots=True)
class _Sql:
    """A statement in asyncpg's form, and its parameter names in ``$n`` order."""

    text: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, statement: str, /) -> _Sql:
        return cls(*pg.statement(statement))

    def args(self, params: Mapping[str, Any], /) -> list[Any]:
        return pg.arguments(self.names, params)


_INSERT_MESSAGE: Final = _Sql.of(sql.INSERT_MESSAGE)
_INSERT_BODY: Final = _Sql.of(sql.INSERT_BODY)
_INSERT_RECIPIENT: Final = _Sql.of(sql.INSERT_RECIPIENT)
_LEASE_CANDIDATES: Final = _Sql.of(sql.lease_candidates(sql.POSTGRES, in_queue=False))
_LEASE_CANDIDATES_IN_QUEUE: Final = _Sql.of(sql.lease_candidates(sql.POSTGRES, in_queue=True))
_CLAIM: Final = _Sql.of(sql.CLAIM)
_LEASED_RECIPIENTS: Final = _Sql.of(sql.LEASED_RECIPIENTS)
_LEASED_MESSAGES: Final = _Sql.of(sql.LEASED_MESSAGES)
_HELD_BY_TOKEN: Final = _Sql.of(sql.held_by_token(sql.POSTGRES))
_RECORD: Final = _Sql.of(sql.RECORD)
_RELEASE: Final = _Sql.of(sql.RELEASE)
_RELEASE_LEASE: Final = _Sql.of(sql.RELEASE_LEASE)
_RETRY_NOW: Final = _Sql.of(sql.RETRY_NOW)
_SCHEDULED_OF_MESSAGE: Final = _Sql.of(sql.scheduled_of_message(sql.POSTGRES))
_CANCEL: Final = _Sql.of(sql.CANCEL)
_SELECT_BODY: Final = _Sql.of(sql.SELECT_BODY)
_SELECT_MESSAGE: Final = _Sql.of(sql.SELECT_MESSAGE)
_SELECT_RECIPIENTS: Final = _Sql.of(sql.SELECT_RECIPIENTS)
_LIST_MESSAGES: Final = _Sql.of(sql.LIST_MESSAGES)
_LIST_RECIPIENTS: Final = _Sql.of(sql.LIST_RECIPIENTS)
_DUE_SOONEST: Final = _Sql.of(sql.DUE_SOONEST)
_DUE_SOONEST_IN_QUEUE: Final = _Sql.of(sql.DUE_SOONEST_IN_QUEUE)
_COUNT_BY_STATUS: Final = _Sql.of(sql.COUNT_BY_STATUS)
_COUNT_BY_QUEUE: Final = _Sql.of(sql.COUNT_BY_QUEUE)
_UNFINISHED: Final = _Sql.of(sql.UNFINISHED)
_FINISHED_MESSAGES: Final = _Sql.of(sql.FINISHED_MESSAGES)
_DELETE_RECIPIENTS: Final = _Sql.of(sql.DELETE_RECIPIENTS)
_DELETE_BODY: Final = _Sql.of(sql.DELETE_BODY)
_DELETE_MESSAGE: Final = _Sql.of(sql.DELETE_MESSAGE)


class PostgresQueueStore:
    """Durable queue in a PostgreSQL database (see the module docstring).

    Open it with `PostgresQueueStore.open` (or ``async with await ...open(url)``);
    the methods are documented on `delivery.queue.store.QueueStore`.
    """

    def __init__(self, pool: asyncpg.Pool, where: str, /) -> None:
        """Wrap an open pool; use `open` instead. ``where`` names the database in errors."""
        self.where = where
        self._pool = pool
        self._enqueues = GroupCommit(self._write_entries, name="queue-group-commit")
        self._closed = False

    @classmethod
    async def open(cls, url: str, /, *, max_connections: int = POOL_MAX_SIZE) -> PostgresQueueStore:
        """Connect to the database at ``url`` and create or upgrade the ``queue_*`` tables.

        ``url`` is ``postgresql://user[:password]@host[:port]/database[?setting=value]``;
        settings such as ``search_path=delivery`` apply to every connection. The role
        needs to create tables (at the first start and at upgrades) and to use them.

        :raises ConfigError: ``url`` is not a PostgreSQL URL asyncpg can read.
        :raises StoreError: the server is unreachable or refused the connection, or the
            queue schema is newer than this program's.
        """
        where = pg.describe(url)
        if not pg.is_postgres_url(url):
            raise ConfigError("store.url", f"{where!r} is not a postgresql:// URL")
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=max_connections,
                timeout=pg.CONNECT_TIMEOUT_S,
                command_timeout=STATEMENT_TIMEOUT_S,
                server_settings=_SERVER_SETTINGS,
            )
        except (ValueError, asyncpg.ClientConfigurationError) as exc:
            raise ConfigError("store.url", f"{where}: {exc}") from exc
        except pg.DATABASE_ERRORS as exc:
            raise StoreError("open", f"{where}: {exc}") from exc
        queue = cls(pool, where)
        try:
            async with queue._transaction("open") as conn:
                await migrations.migrate(
                    migrations.PostgresSession(conn),
                    component=sql.COMPONENT,
                    steps=sql.steps(sql.POSTGRES),
                    baseline_table=sql.BASELINE_TABLE,
                )
        except migrations.SchemaTooNew as exc:
            await pool.close()
            raise StoreError("open", f"{where}: {exc}") from exc
        except BaseException:
            await pool.close()
            raise
        return queue

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
        """Finish pending group commits, then close the pool (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self._enqueues.drain()
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def _transaction(
        self, operation: str, *, write: bool = True
    ) -> AsyncIterator[asyncpg.Connection]:
        """Run the block in one transaction on a pooled connection.

        A write transaction is READ COMMITTED (its statements lock what they must); a
        read is one read-only REPEATABLE READ snapshot. Any database failure rolls back
        and becomes StoreError; a cancelled block rolls back, and the pool resets the
        connection before handing it out again.
        """
        isolation = "read_committed" if write else "repeatable_read"
        try:
            async with (
                self._pool.acquire() as conn,
                conn.transaction(isolation=isolation, readonly=not write),
            ):
                yield conn
        except _DATABASE_ERRORS as exc:
            raise StoreError(operation, f"{self.where}: {exc}") from exc

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
        async with self._transaction("enqueue") as conn:
            return await _insert(conn, entries)

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
            statement = _LEASE_CANDIDATES
        else:
            statement, params["queue"] = _LEASE_CANDIDATES_IN_QUEUE, queue
        async with self._transaction("lease") as conn:
            ids = [row[0] for row in await _fetch(conn, statement, params)]
            if not ids:
                return []
            claim = {"owner": owner, "token": token, "until": until, "now": now}
            await _execute_many(conn, _CLAIM, [{**claim, "id": rid} for rid in ids])
            recipient_rows = await _fetch(conn, _LEASED_RECIPIENTS, {"token": token})
            message_rows = await _fetch(
                conn,
                _LEASED_MESSAGES,
                {"token": token, "body_max": store.LEASE_BODY_MAX_BYTES},
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
        async with self._transaction("record") as conn:
            held: set[int] = set()
            for token in {update.token for update in updates}:
                rows = await _fetch(conn, _HELD_BY_TOKEN, {"token": token})
                held.update(row[0] for row in rows)
            applied = [update for update in updates if update.recipient_id in held]
            await _execute_many(conn, _RECORD, [sql.update_params(u) for u in applied])
            accepted = {update.recipient_id for update in applied}
            due = [notice for notice in notices if notice.about <= accepted]
            queued = iter(await _insert(conn, [(n.message, n.recipients) for n in due]))
        message_ids = tuple(next(queued) if n.about <= accepted else None for n in notices)
        return Recorded(refused=frozenset(updated - held), message_ids=message_ids)

    async def release(self, owner: str, /, *, now: int) -> int:
        """Give back every lease of ``owner``; see `QueueStore.release`."""
        async with self._transaction("release") as conn:
            return await _execute(conn, _RELEASE, {"owner": owner, "now": now})

    async def release_leases(self, leases: Sequence[model.Lease], /, *, now: int) -> int:
        """Give back what these leases still hold; see `QueueStore.release_leases`."""
        released = 0
        async with self._transaction("release") as conn:
            for lease in leases:
                for recipient in lease.recipients:
                    params = {"id": recipient.id, "token": lease.token, "now": now}
                    released += await _execute(conn, _RELEASE_LEASE, params)
        return released

    async def retry_now(self, message_id: str, /, *, now: int) -> int:
        """Make the message due now; see `QueueStore.retry_now`."""
        async with self._transaction("retry") as conn:
            return await _execute(conn, _RETRY_NOW, {"message_id": message_id, "now": now})

    async def cancel(
        self, message_id: str, /, *, reason: str, notice: Notice | None = None
    ) -> Cancelled:
        """Cancel the message's scheduled recipients; see `QueueStore.cancel`."""
        store.check_cancel_notice(notice)
        params = {"message_id": message_id}
        async with self._transaction("cancel") as conn:
            rows = await _fetch(conn, _SCHEDULED_OF_MESSAGE, params)
            ids = frozenset(row[0] for row in rows)
            if notice is not None and notice.about != ids:
                return Cancelled(frozenset(), stale=True)
            await _execute(conn, _CANCEL, {**params, "reason": reason})
            if notice is None:
                return Cancelled(ids)
            [notice_id] = await _insert(conn, [(notice.message, notice.recipients)])
        return Cancelled(ids, notice_id)

    # --- reading --------------------------------------------------------------------------

    async def load_body(self, message_id: str, /) -> bytes:
        """Return the body; see `QueueStore.load_body`."""
        async with self._transaction("load body", write=False) as conn:
            rows = await _fetch(conn, _SELECT_BODY, {"message_id": message_id})
        if not rows:
            raise MessageNotFound(message_id)
        body: bytes = rows[0][0]
        return body

    async def get_message(self, message_id: str, /) -> model.QueuedMessage | None:
        """Return one message; see `QueueStore.get_message`."""
        params = {"message_id": message_id}
        async with self._transaction("get message", write=False) as conn:
            rows = await _fetch(conn, _SELECT_MESSAGE, params)
            if not rows:
                return None
            recipient_rows = await _fetch(conn, _SELECT_RECIPIENTS, params)
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
        async with self._transaction("list", write=False) as conn:
            message_rows = await _fetch(conn, _LIST_MESSAGES, params)
            recipient_rows = await _fetch(conn, _LIST_RECIPIENTS, params)
        return sql.messages_from_rows(message_rows, recipient_rows)

    async def due_soonest(self, *, queue: str | None = None) -> int | None:
        """Next due time; see `QueueStore.due_soonest`."""
        statement = _DUE_SOONEST if queue is None else _DUE_SOONEST_IN_QUEUE
        async with self._transaction("due soonest", write=False) as conn:
            rows = await _fetch(conn, statement, {"queue": queue})
        due: int | None = rows[0][0]
        return due

    async def count_by_status(self) -> dict[model.RecipientStatus, int]:
        """Recipients per status; see `QueueStore.count_by_status`."""
        async with self._transaction("count", write=False) as conn:
            rows = await _fetch(conn, _COUNT_BY_STATUS, {})
        counts = dict.fromkeys(model.RecipientStatus, 0)
        counts.update((model.RecipientStatus(status), count) for status, count in rows)
        return counts

    async def count_by_queue(self) -> dict[tuple[str, model.RecipientStatus], int]:
        """Recipients per queue and status; see `QueueStore.count_by_queue`."""
        async with self._transaction("count", write=False) as conn:
            rows = await _fetch(conn, _COUNT_BY_QUEUE, {})
        return {(queue, model.RecipientStatus(status)): count for queue, status, count in rows}

    async def purge_finished(
        self, message_ids: Sequence[str] | None = None, /, *, limit: int = PURGE_BATCH
    ) -> list[str]:
        """Delete finished messages; see `QueueStore.purge_finished`."""
        deleted: list[str] = []
        async with self._transaction("purge") as conn:
            if message_ids is None:
                rows = await _fetch(conn, _FINISHED_MESSAGES, {"limit": limit})
                candidates = [row[0] for row in rows]
            else:
                candidates = list(message_ids)
            for message_id in candidates:
                params = {"message_id": message_id}
                # A final status never changes: a message without scheduled recipients
                # stays finished, whatever runs concurrently.
                if await _fetch(conn, _UNFINISHED, params):
                    continue
                await _execute(conn, _DELETE_RECIPIENTS, params)
                await _execute(conn, _DELETE_BODY, params)
                if await _execute(conn, _DELETE_MESSAGE, params):
                    deleted.append(message_id)
        return deleted


async def _insert(conn: asyncpg.Connection, entries: Sequence[NewEntry], /) -> list[str]:
    """Insert messages, bodies and recipients inside the caller's transaction."""
    ids = [model.make_message_id(message.received_at) for message, _ in entries]
    if not entries:
        return ids
    pairs = list(zip(ids, entries, strict=True))
    await _execute_many(
        conn, _INSERT_MESSAGE, [sql.message_params(mid, message) for mid, (message, _) in pairs]
    )
    await _execute_many(
        conn, _INSERT_BODY, [{"message_id": mid, "body": m.body} for mid, (m, _) in pairs]
    )
    await _execute_many(
        conn,
        _INSERT_RECIPIENT,
        [
            sql.recipient_params(mid, recipient)
            for mid, (_, recipients) in pairs
            for recipient in recipients
        ],
    )
    return ids


async def _fetch(
    conn: asyncpg.Connection, statement: _Sql, params: Mapping[str, Any], /
) -> list[Any]:
    """Run one query; its rows (asyncpg Records: indexable, unpackable)."""
    rows: list[Any] = await conn.fetch(statement.text, *statement.args(params))
    return rows


async def _execute(conn: asyncpg.Connection, statement: _Sql, params: Mapping[str, Any], /) -> int:
    """Run one statement; how many rows it changed (from the command tag, ``UPDATE 3``)."""
    tag: str = await conn.execute(statement.text, *statement.args(params))
    return int(tag.rpartition(" ")[2])


async def _execute_many(
    conn: asyncpg.Connection, statement: _Sql, params: Sequence[Mapping[str, Any]], /
) -> None:
    """Run one statement per parameter set, pipelined."""
    if params:
        await conn.executemany(statement.text, [statement.args(p) for p in params])
