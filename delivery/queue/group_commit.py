"""Group commit: concurrent submissions share one durable write.

`GroupCommit(write)` queues what `submit` is given; one flusher task at a time calls
``write`` with everything queued so far, in one transaction, and hands each submitter
its own results. What arrives while a write runs is written together by the next one,
so N concurrent enqueues cost about one commit (one fsync), not N. Used by both queue
stores for `enqueue_many`.

Outcomes:
    submit   the results of ``write`` for the caller's items, in order, once they are
             committed; the exception ``write`` raised for their batch (the other
             batches are not affected).

Cancellation: a submitter cancelled before its batch is taken is withdrawn (nothing is
written for it); cancelled while its batch is being written, the write goes on and
commits (RFC 5321 §6.1: a client that gave up retries, and a duplicate is better than
a loss). A cancelled flusher (the loop closing) cancels the waiters of its batch.

Limits: batches are unbounded: under a burst one write takes everything queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Items submitted while a write runs are written together by the next one.

    :param write: writes a batch durably, returning one result per item, in order.
    :param name: the flusher task's name, for debugging.
    """

    def __init__(self, write: Callable[[list[T]], Awaitable[list[R]]], /, *, name: str) -> None:
        self._write = write
        self._name = name
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[T], /) -> list[R]:
        """submit - write ``items`` with whatever else is pending; their results, in order.

        :raises Exception: what ``write`` raised for the batch holding these items.
        """
        loop = asyncio.get_running_loop()
        waiters = [(item, loop.create_future()) for item in items]
        self._pending.extend(waiters)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=self._name)
        try:
            return list(await asyncio.gather(*(future for _, future in waiters)))
        except asyncio.CancelledError:
            # Not taken yet: withdraw. Already being written: it will be committed.
            mine = {future for _, future in waiters}
            self._pending = [waiter for waiter in self._pending if waiter[1] not in mine]
            raise

    async def drain(self) -> None:
        """drain - wait until every pending item is written (or failed)."""
        if self._flusher is not None:
            await self._flusher

    async def _flush(self) -> None:
        """Write everything pending, batch after batch, until nothing is left."""
        while self._pending:
            # A cancelled submitter's futures are cancelled at once, its withdrawal from
            # _pending a few loop turns later: leave it out here already.
            batch = [waiter for waiter in self._pending if not waiter[1].done()]
            self._pending = []
            if not batch:
                continue
            try:
                results = await self._write([item for item, _ in batch])
            except BaseException as exc:
                # Every waiter must hear of the failure, or it would wait forever.
                for _, future in batch:
                    if future.done():
                        continue
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                    else:
                        future.cancel()
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
