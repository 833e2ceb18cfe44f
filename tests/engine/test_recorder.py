"""The outcome recorder: jobs that finish together share one durable store write."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from delivery.engine import recorder
from delivery.errors import LastError
from delivery.queue import model
from delivery.queue import store as queue_store
from delivery.queue.sqlite import SqliteQueueStore

T0 = 1_700_000_000_000
LEASE_MS = 60_000
WAIT_S = 5.0
"""Bound on a wait that must end at once: a hang fails the test instead of the run."""


def new_message(n: int) -> queue_store.NewEntry:
    message = model.NewMessage(
        sender="s@sender.test",
        body=f"Subject: {n}\r\n\r\nbody\r\n".encode(),
        source=model.MessageSource.AUTHENTICATED,
        received_at=T0,
    )
    recipient = model.NewRecipient(
        address=f"r{n}@example.test",
        queue="remote",
        schedule="remote",
        due=T0,
        expires_at=T0 + 86_400_000,
    )
    return message, [recipient]


def delivered(lease: model.Lease) -> list[model.RecipientUpdate]:
    return [
        dataclasses.replace(
            model.RecipientUpdate.unchanged(lease, recipient),
            status=model.RecipientStatus.DELIVERED,
            retry_num=1,
            last_error=LastError.NONE,
            last_status="250 ok",
        )
        for recipient in lease.recipients
    ]


def notice_about(lease: model.Lease, ids: frozenset[int]) -> queue_store.Notice:
    message, recipients = new_message(99)
    return queue_store.Notice(dataclasses.replace(message, sender=""), recipients, ids)


class CountingStore(SqliteQueueStore):
    """The SQLite store, counting `record` calls (how many writes the recorder made)."""

    record_calls = 0

    async def record(
        self,
        updates: object,
        /,
        *,
        notices: object = (),
    ) -> queue_store.Recorded:
        self.record_calls += 1
        return await super().record(updates, notices=notices)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    opened = await CountingStore.open(tmp_path / "queue.db")
    assert isinstance(opened, CountingStore)
    yield opened
    await opened.close()


async def leases(store: SqliteQueueStore, count: int) -> list[model.Lease]:
    await store.enqueue_many([new_message(n) for n in range(count)])
    found = await store.lease_due(now=T0, owner="test", lease_ms=LEASE_MS, limit=count)
    assert len(found) == count
    return found


async def statuses(store: SqliteQueueStore, leased: list[model.Lease]) -> list[str]:
    result = []
    for lease in leased:
        message = await store.get_message(lease.message.id)
        assert message is not None
        result.append(message.recipients[0].status.value)
    return result


async def test_jobs_finishing_together_share_one_durable_write(store: CountingStore) -> None:
    leased = await leases(store, 5)
    outcomes = recorder.Recorder(store)
    answers = await asyncio.gather(*(outcomes.record(delivered(lease)) for lease in leased))
    assert [a.refused for a in answers] == [frozenset()] * 5
    # All five finished before the first write started: they share it.
    assert store.record_calls == 1
    assert await statuses(store, leased) == ["delivered"] * 5


async def test_one_job_alone_is_one_write(store: CountingStore) -> None:
    [lease] = await leases(store, 1)
    outcomes = recorder.Recorder(store)
    answer = await outcomes.record(delivered(lease))
    assert answer == queue_store.Recorded(frozenset(), ())
    assert store.record_calls == 1


async def test_each_job_hears_of_its_own_refused_outcomes_only(store: CountingStore) -> None:
    first, second, third = await leases(store, 3)
    await store.release_leases([second], now=T0)  # its outcome will be refused
    outcomes = recorder.Recorder(store)
    answers = await asyncio.gather(
        outcomes.record(delivered(first)),
        outcomes.record(delivered(second)),
        outcomes.record(delivered(third)),
    )
    assert [a.refused for a in answers] == [
        frozenset(),
        frozenset({second.recipients[0].id}),
        frozenset(),
    ]
    assert await statuses(store, [first, second, third]) == [
        "delivered",
        "scheduled",
        "delivered",
    ]


async def test_each_job_gets_the_ids_of_its_own_notices(store: CountingStore) -> None:
    first, second, third = await leases(store, 3)
    await store.release_leases([second], now=T0)
    outcomes = recorder.Recorder(store)
    mine = {lease.message.id: frozenset({lease.recipients[0].id}) for lease in (first, second)}
    answers = await asyncio.gather(
        outcomes.record(delivered(third)),
        outcomes.record(delivered(first), notices=[notice_about(first, mine[first.message.id])]),
        outcomes.record(delivered(second), notices=[notice_about(second, mine[second.message.id])]),
    )
    assert answers[0].message_ids == ()
    [queued] = answers[1].message_ids
    assert queued is not None and await store.get_message(queued) is not None
    assert answers[2].message_ids == (None,)  # about a refused outcome: not queued


async def test_a_notice_about_another_jobs_recipient_is_refused(store: CountingStore) -> None:
    good, bad = await leases(store, 2)
    outcomes = recorder.Recorder(store)
    wrong = notice_about(bad, frozenset({good.recipients[0].id}))  # not about its own update
    answers = await asyncio.gather(
        outcomes.record(delivered(good)),
        outcomes.record(delivered(bad), notices=[wrong]),
        return_exceptions=True,
    )
    assert isinstance(answers[1], ValueError)
    assert await statuses(store, [good, bad]) == ["delivered", "scheduled"]


async def test_a_failed_shared_write_is_made_again_one_job_at_a_time(store: CountingStore) -> None:
    good, bad, other = await leases(store, 3)
    outcomes = recorder.Recorder(store)
    # A notice the store refuses (InvalidEnvelope: no recipients) fails the shared write.
    empty = dataclasses.replace(notice_about(bad, frozenset({bad.recipients[0].id})), recipients=[])
    answers = await asyncio.gather(
        outcomes.record(delivered(other)),
        outcomes.record(delivered(good)),
        outcomes.record(delivered(bad), notices=[empty]),
        return_exceptions=True,
    )
    assert isinstance(answers[2], model.InvalidEnvelope)
    assert store.record_calls == 4  # the shared write, then each job's own
    assert await statuses(store, [other, good, bad]) == ["delivered", "delivered", "scheduled"]


class StallingStore(CountingStore):
    """Fails every shared write; each job's own write waits until ``go`` is set."""

    entered: asyncio.Event
    go: asyncio.Event

    async def record(
        self,
        updates: object,
        /,
        *,
        notices: object = (),
    ) -> queue_store.Recorded:
        assert isinstance(updates, list)
        if len(updates) > 1:
            self.record_calls += 1
            raise queue_store.QueueError("the shared write failed")
        self.entered.set()
        await self.go.wait()
        return await super().record(updates, notices=notices)


async def test_no_job_waits_forever_when_the_writer_is_cancelled_one_job_at_a_time(
    tmp_path: Path,
) -> None:
    opened = await StallingStore.open(tmp_path / "queue.db")
    assert isinstance(opened, StallingStore)
    opened.entered, opened.go = asyncio.Event(), asyncio.Event()
    try:
        leased = await leases(opened, 3)
        outcomes = recorder.Recorder(opened)
        jobs = [asyncio.ensure_future(outcomes.record(delivered(lease))) for lease in leased]
        await opened.entered.wait()  # the shared write failed; the first job's own is under way
        [writer] = [t for t in asyncio.all_tasks() if t.get_name() == "outcome group commit"]
        writer.cancel()  # the loop is shutting down
        done, pending = await asyncio.wait(jobs, timeout=WAIT_S)
        assert not pending, "a job was left waiting for an answer that never comes"
        assert all(job.cancelled() for job in done)
    finally:
        opened.go.set()
        await opened.close()


async def test_a_lapsed_jobs_outcome_never_shares_a_write_with_the_new_holders(
    store: CountingStore,
) -> None:
    await store.enqueue_many([new_message(1)])
    [lapsed] = await store.lease_due(now=T0, owner="test", lease_ms=LEASE_MS, limit=1)
    [holder] = await store.lease_due(now=T0 + LEASE_MS, owner="test", lease_ms=LEASE_MS, limit=1)
    rid = lapsed.recipients[0].id
    outcomes = recorder.Recorder(store)
    answers = await asyncio.gather(
        outcomes.record(delivered(lapsed), notices=[notice_about(lapsed, frozenset({rid}))]),
        outcomes.record(delivered(holder)),
    )
    # The lapsed job hears its outcome was refused, and its DSN is not queued beside the
    # holder's outcome (the holder reports on the recipient now).
    assert answers[0] == queue_store.Recorded(frozenset({rid}), (None,))
    assert answers[1].refused == frozenset()
    assert await statuses(store, [holder]) == ["delivered"]
