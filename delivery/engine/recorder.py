"""Group commit of attempt outcomes: the jobs that finish together share one store write.

`Recorder.record(updates, notices=...)` is `QueueStore.record` for one job. While a write is
in flight, the outcomes of the jobs that finish meanwhile wait; when it ends, they all go out
in the next single `record` call (one transaction, one fsync), and each caller gets its own
share of the answer. With one job at a time nothing waits and each call is a store call of its
own; under load the writes stay one at a time and carry whatever piled up.

Outcomes:
    Each caller returns only after the write carrying its outcomes committed (the store's
    `record` returns only after a durable commit): nothing is acknowledged, logged as done or
    reported as settled before it is durable. A caller's `Recorded` is exactly what a call of
    its own would have said: ``refused`` among its own recipients, one ``message_ids`` item
    per notice it gave, in order.
    A batch whose write raises is written again one caller at a time, so that one caller's
    bad input (or a failure caused by it) reaches that caller alone; a store that is down
    fails every caller with its own error, and their leases lapse (nothing is lost).

Security: callers never see each other's outcomes. A notice must be about updates its own
caller gave (checked here, per caller: in a shared write the store would also accept one about
another job's recipients), so it is queued only if that caller's outcomes were applied.

Limits: `MAX_BATCH_UPDATES` bounds one write; outcomes beyond it wait for the next, and so do
outcomes about a recipient the write already carries (the store answers by recipient id). A caller
cancelled while waiting does not withdraw its outcomes (they are written, as a job's
outcomes must be: see worker `_complete`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from delivery.queue import model
from delivery.queue import store as queue_store

__all__ = ["MAX_BATCH_UPDATES", "Recorder"]

log = logging.getLogger("delivery.engine")

MAX_BATCH_UPDATES = 2000
"""Recipient updates in one store write: a write is one transaction holding the store's write
lock, which enqueues and leases wait for; twice the largest lease (`MAX_LEASE_BATCH`) so that
a full lease's outcomes never wait for a second write."""


@dataclass(slots=True)
class _Request:
    updates: Sequence[model.RecipientUpdate]
    notices: Sequence[queue_store.Notice]
    answer: asyncio.Future[queue_store.Recorded]


class Recorder:
    """Writes the outcomes of jobs in shared `QueueStore.record` calls (see the docstring).

    :param store: the queue.
    """

    def __init__(self, store: queue_store.QueueStore, /) -> None:
        self._store = store
        self._pending: collections.deque[_Request] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self.writes = 0
        """Store writes made (for metrics and tests: fewer than calls under load)."""
        self.calls = 0
        """`record` calls answered."""

    async def record(
        self,
        updates: Sequence[model.RecipientUpdate],
        /,
        *,
        notices: Sequence[queue_store.Notice] = (),
    ) -> queue_store.Recorded:
        """Record one job's outcomes and DSNs; see `QueueStore.record` (same answer, same
        errors), returning once they are durable."""
        for notice in notices:
            # Checked per job: in a shared write the store would see other jobs' updates.
            if not notice.about or not notice.about <= {u.recipient_id for u in updates}:
                raise ValueError("a notice must be about recipients updated in the same record")
        answer: asyncio.Future[queue_store.Recorded] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(updates, notices, answer))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="outcome group commit")
        # shield: a cancelled job must not cancel the write its outcomes are in.
        return await asyncio.shield(answer)

    async def close(self) -> None:
        """Wait for the writes still pending."""
        if self._writer is not None:
            await asyncio.wait([self._writer])

    async def _write_all(self) -> None:
        """Write what is pending, batch after batch, until nothing is left."""
        try:
            while self._pending:
                batch: list[_Request] = []
                ids: set[int] = set()
                while self._pending and (not batch or self._fits(self._pending[0], ids)):
                    request = self._pending.popleft()
                    batch.append(request)
                    ids.update(update.recipient_id for update in request.updates)
                await self._write(batch)
        except asyncio.CancelledError:  # the loop is shutting down: nobody may wait forever
            while self._pending:
                self._pending.popleft().answer.cancel()
            raise

    @staticmethod
    def _fits(request: _Request, ids: set[int]) -> bool:
        """Whether ``request`` may join a write already carrying the updates of ``ids``.

        Not past `MAX_BATCH_UPDATES`, and never two updates of one recipient (a job whose
        lease lapsed and the job holding the recipient now): the store answers refusals by
        recipient id, so in one write the stale one would be told it was recorded, and its
        notice queued beside the new holder's.
        """
        updates = request.updates
        if len(ids) + len(updates) > MAX_BATCH_UPDATES:
            return False
        return all(update.recipient_id not in ids for update in updates)

    async def _write(self, batch: list[_Request]) -> None:
        if len(batch) == 1:
            await self._write_alone(batch[0])
            return
        updates = [update for request in batch for update in request.updates]
        notices = [notice for request in batch for notice in request.notices]
        try:
            recorded = await self._store.record(updates, notices=notices)
        except asyncio.CancelledError:
            for request in batch:
                request.answer.cancel()
            raise
        except Exception as exc:
            log.warning(
                "recording the outcomes of %d jobs together failed (%s); recording them one "
                "job at a time",
                len(batch),
                exc,
            )
            for done, request in enumerate(batch):
                try:
                    await self._write_alone(request)
                except asyncio.CancelledError:  # nobody in the batch may wait forever
                    for rest in batch[done + 1 :]:
                        rest.answer.cancel()
                    raise
            return
        self.writes += 1
        ids = iter(recorded.message_ids)
        for request in batch:
            mine = frozenset(update.recipient_id for update in request.updates)
            share = queue_store.Recorded(
                refused=recorded.refused & mine,
                message_ids=tuple(next(ids) for _ in request.notices),
            )
            self._answer(request, share)

    async def _write_alone(self, request: _Request) -> None:
        try:
            recorded = await self._store.record(request.updates, notices=request.notices)
        except asyncio.CancelledError:
            request.answer.cancel()
            raise
        except Exception as exc:
            self.calls += 1
            if not request.answer.done():
                request.answer.set_exception(exc)
            return
        self.writes += 1
        self._answer(request, recorded)

    def _answer(self, request: _Request, recorded: queue_store.Recorded) -> None:
        self.calls += 1
        if not request.answer.done():
            request.answer.set_result(recorded)
