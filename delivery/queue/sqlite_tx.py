"""Transactions on one aiosqlite connection that a cancelled caller cannot leave half done.

`transaction(db, lock)` runs a block in one BEGIN ... COMMIT on ``db``, serialized by ``lock``;
`complete(step)` awaits a step to its end even when the caller is cancelled meanwhile. For the
stores that keep tables in the queue's SQLite file: the queue store and the TLS-RPT store.

Outcomes:
    transaction   yields ``db`` inside BEGIN (BEGIN IMMEDIATE for a write, so that the block's
                  reads and writes see no other writer in between), then COMMITs. A failure of
                  the block or of COMMIT rolls back and propagates unchanged: sqlite3.Error
                  from the database (the caller turns it into its own error type),
                  CancelledError for a cancelled caller, anything else as raised.
    complete      the step's result; CancelledError, once the step has ended, when the caller
                  was cancelled meanwhile (a failure of the step is then dropped: the
                  cancellation wins, and the caller's cleanup still runs).

Why: aiosqlite runs every call it was handed on its thread, in order, whether or not its caller
still waits. So BEGIN, COMMIT and ROLLBACK are awaited to their end even by a cancelled caller,
and a block cut off by cancellation is rolled back before the lock is released: a cancelled
call has either no effect (cancelled before its COMMIT) or its whole effect (cancelled during
it), and the connection is never left inside a transaction.

Limits: one connection, used only through `transaction` while it is shared by tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import aiosqlite

__all__ = ["complete", "transaction"]

T = TypeVar("T")


@contextlib.asynccontextmanager
async def transaction(
    db: aiosqlite.Connection, lock: asyncio.Lock, /, *, write: bool = True
) -> AsyncIterator[aiosqlite.Connection]:
    """transaction - the block in one transaction on ``db``, serialized by ``lock``.

    :param write: take SQLite's write lock up front (BEGIN IMMEDIATE); False for a reader.
    :raises sqlite3.Error: BEGIN, a statement of the block or COMMIT failed (rolled back).
    """
    async with lock:
        try:
            await complete(db.execute("BEGIN IMMEDIATE" if write else "BEGIN"))
            yield db
        except BaseException:
            # ROLLBACK queues behind whatever the block left running on the thread.
            await complete(_rollback(db))
            raise
        try:
            await complete(db.execute("COMMIT"))
        except sqlite3.Error:
            await complete(_rollback(db))  # e.g. SQLITE_FULL: nothing was written
            raise


async def _rollback(db: aiosqlite.Connection) -> None:
    """ROLLBACK, if a transaction is open (BEGIN may have failed, or COMMIT succeeded)."""
    with contextlib.suppress(sqlite3.Error):
        await db.execute("ROLLBACK")


async def complete(step: Awaitable[T], /) -> T:
    """complete - await ``step`` to its end even if the caller is cancelled meanwhile.

    :raises asyncio.CancelledError: the caller was cancelled while ``step`` ran.
    """
    task = asyncio.ensure_future(step)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])  # never cancels ``task`` itself
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved, so that asyncio does not log it
        raise asyncio.CancelledError
    return task.result()
