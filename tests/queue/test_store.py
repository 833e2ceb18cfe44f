"""The QueueStore contract, run over every store (tests/plugins/queue.py)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from delivery.errors import LastError
from delivery.queue import model
from delivery.queue.store import (
    LEASE_BODY_MAX_BYTES,
    Cancelled,
    MessageNotFound,
    Notice,
    QueueStore,
)
from tests.plugins.queue import T0, StoreOpener, make_message, make_recipient

Status = model.RecipientStatus
MINUTE = 60_000
HOUR = 60 * MINUTE


def deferred(lease: model.Lease, rcpt: model.QueuedRecipient, due: int) -> model.RecipientUpdate:
    return dataclasses.replace(
        model.RecipientUpdate.unchanged(lease, rcpt),
        status=Status.SCHEDULED,
        due=due,
        retry_num=rcpt.retry_num + 1,
        last_error=LastError.CONNECTION,
        last_status="mx.example.com: connection refused",
    )


def delivered(lease: model.Lease, rcpt: model.QueuedRecipient) -> model.RecipientUpdate:
    return dataclasses.replace(
        model.RecipientUpdate.unchanged(lease, rcpt),
        status=Status.DELIVERED,
        retry_num=rcpt.retry_num + 1,
        last_status="250 2.0.0 ok",
    )


def failed(lease: model.Lease, rcpt: model.QueuedRecipient) -> model.RecipientUpdate:
    return dataclasses.replace(
        model.RecipientUpdate.unchanged(lease, rcpt),
        status=Status.FAILED,
        retry_num=rcpt.retry_num + 1,
        last_error=LastError.UNEXPECTED_REPLY,
        last_status="550 5.1.1 no such user",
    )


def addresses(leases: list[model.Lease]) -> list[list[str]]:
    return [[r.address for r in lease.recipients] for lease in leases]


async def lease_all(store: QueueStore, now: int = T0, owner: str = "node1") -> list[model.Lease]:
    return await store.lease_due(now=now, owner=owner, lease_ms=MINUTE, limit=100)


# --- enqueue and read back -------------------------------------------------------------


async def test_enqueued_message_reads_back_with_every_field(store: QueueStore) -> None:
    message = make_message(
        body=b"Subject: x\r\n\r\n\xc3\xa9\r\n",
        sender="Sender@Example.org",
        priority=5,
        env_id="QQ+2B1",
        ret=model.Ret.HDRS,
        smtputf8=True,
        eightbitmime=True,
        requiretls=True,
    )
    rcpt = make_recipient(
        "User@Example.COM",
        notify=frozenset({model.Notify.SUCCESS, model.Notify.DELAY}),
        orcpt="rfc822;User@Example.COM",
        notify_due=T0 + 86_400_000,
        queue="q1",
        schedule="s1",
    )
    message_id = await store.enqueue(message, [rcpt, make_recipient("b@example.net")])

    got = await store.get_message(message_id)

    assert got is not None
    assert (got.id, got.sender, got.size, got.source) == (
        message_id,
        "Sender@Example.org",
        len(message.body),
        model.MessageSource.AUTHENTICATED,
    )
    assert (got.received_at, got.received_from_ip, got.received_via_port) == (
        T0,
        "192.0.2.1",
        587,
    )
    assert (got.priority, got.env_id, got.ret) == (5, "QQ+2B1", model.Ret.HDRS)
    assert (got.smtputf8, got.eightbitmime, got.requiretls) == (True, True, True)
    first, second = got.recipients
    assert (first.address, first.domain, first.status) == (
        "User@Example.COM",
        "example.com",
        Status.SCHEDULED,
    )
    assert (first.due, first.retry_num, first.notify_num, first.notify_due) == (
        T0,
        0,
        0,
        T0 + 86_400_000,
    )
    assert first.notify == {model.Notify.SUCCESS, model.Notify.DELAY}
    assert (first.orcpt, first.queue, first.schedule) == ("rfc822;User@Example.COM", "q1", "s1")
    assert (first.last_error, first.last_status) == (LastError.NONE, "")
    assert (first.expires_at, first.max_attempts) == (T0 + 3 * 86_400_000, None)
    assert (first.lease_owner, first.lease_until) == (None, None)
    assert (second.address, second.notify, second.orcpt) == ("b@example.net", frozenset(), None)
    assert await store.load_body(message_id) == message.body


async def test_null_sender_and_attempt_limit_are_kept(store: QueueStore) -> None:
    rcpt = make_recipient(expires_at=None, max_attempts=3)
    message_id = await store.enqueue(make_message(sender=""), [rcpt])

    got = await store.get_message(message_id)

    assert got is not None and got.sender == ""
    assert (got.recipients[0].expires_at, got.recipients[0].max_attempts) == (None, 3)


async def test_message_ids_are_unique_and_sort_by_arrival(store: QueueStore) -> None:
    ids = [
        await store.enqueue(make_message(received_at=T0 + n), [make_recipient()]) for n in range(5)
    ]
    assert len(set(ids)) == 5
    assert sorted(ids) == ids


async def test_enqueue_without_recipients_is_refused(store: QueueStore) -> None:
    with pytest.raises(model.InvalidEnvelope):
        await store.enqueue(make_message(), [])
    assert await store.list_messages() == []


async def test_unknown_message_reads_as_absent(store: QueueStore) -> None:
    assert await store.get_message("nope") is None
    with pytest.raises(MessageNotFound):
        await store.load_body("nope")


async def test_concurrent_enqueues_are_all_committed(store_opener: StoreOpener) -> None:
    store = await store_opener()
    ids = await asyncio.gather(
        *(store.enqueue(make_message(), [make_recipient(f"r{n}@example.com")]) for n in range(40))
    )
    await store.close()

    reopened = await store_opener()
    assert len(set(ids)) == 40
    for message_id in ids:
        assert await reopened.get_message(message_id) is not None


async def test_enqueue_many_commits_messages_together(store: QueueStore) -> None:
    entries = [(make_message(), [make_recipient(f"r{n}@example.com")]) for n in range(3)]
    ids = await store.enqueue_many(entries)
    got = [await store.get_message(message_id) for message_id in ids]
    assert [m.recipients[0].address for m in got if m] == [f"r{n}@example.com" for n in range(3)]


# --- durability -------------------------------------------------------------------------


async def test_queue_survives_close_and_reopen(store_opener: StoreOpener) -> None:
    store = await store_opener()
    message_id = await store.enqueue(make_message(), [make_recipient("a@example.com")])
    [lease] = await store.lease_due(now=T0, owner="node1", lease_ms=MINUTE, limit=10)
    before = await store.get_message(message_id)
    await store.close()

    reopened = await store_opener()

    assert await reopened.get_message(message_id) == before
    assert await reopened.load_body(message_id) == make_message().body
    # The lease is durable too: nobody else gets the recipient before it lapses.
    assert await reopened.lease_due(now=T0 + 1, owner="node2", lease_ms=MINUTE, limit=10) == []
    [again] = await reopened.lease_due(now=lease.until, owner="node2", lease_ms=MINUTE, limit=10)
    assert addresses([again]) == [["a@example.com"]]


# --- leasing ----------------------------------------------------------------------------


async def test_only_due_recipients_are_leased(store: QueueStore) -> None:
    await store.enqueue(make_message(), [make_recipient("now@example.com", due=T0)])
    await store.enqueue(make_message(), [make_recipient("later@example.com", due=T0 + 1)])

    assert addresses(await lease_all(store, now=T0)) == [["now@example.com"]]
    assert addresses(await lease_all(store, now=T0 + 1)) == [["later@example.com"]]


async def test_leases_come_oldest_due_first_one_per_message_and_domain(store: QueueStore) -> None:
    await store.enqueue(
        make_message(),
        [
            make_recipient("a1@a.example", due=T0 + 10),
            make_recipient("b1@b.example", due=T0 + 10),
            make_recipient("a2@A.EXAMPLE", due=T0 + 10),
        ],
    )
    await store.enqueue(make_message(), [make_recipient("c1@a.example", due=T0)])

    leases = await lease_all(store, now=T0 + 100)

    assert addresses(leases) == [
        ["c1@a.example"],
        ["a1@a.example", "a2@A.EXAMPLE"],
        ["b1@b.example"],
    ]
    assert [lease.domain for lease in leases] == ["a.example", "a.example", "b.example"]
    assert len({lease.token for lease in leases}) == 1
    for lease in leases:
        assert all(r.message_id == lease.message.id for r in lease.recipients)
        assert all(
            (r.lease_owner, r.lease_until) == ("node1", lease.until) for r in lease.recipients
        )


async def test_a_lease_brings_the_other_due_recipients_of_its_message_and_domain(
    store: QueueStore,
) -> None:
    first = await store.enqueue(
        make_message(),
        [make_recipient("x1@x.example", due=T0), make_recipient("x2@x.example", due=T0 + 2)],
    )
    await store.enqueue(make_message(), [make_recipient("y@y.example", due=T0 + 1)])

    leases = await store.lease_due(now=T0 + 5, owner="n", lease_ms=MINUTE, limit=2)

    assert [lease.message.id for lease in leases] == [first]
    assert addresses(leases) == [["x1@x.example", "x2@x.example"]]


async def test_a_lease_carries_the_body_of_a_small_message_only(store: QueueStore) -> None:
    head = b"Subject: size\r\n\r\n"
    small = head + b"x" * (LEASE_BODY_MAX_BYTES - len(head))  # the largest that comes along
    large = small + b"y"
    small_id = await store.enqueue(make_message(small), [make_recipient("s@example.com")])
    large_id = await store.enqueue(make_message(large), [make_recipient("l@example.com")])

    leases = {lease.message.id: lease for lease in await lease_all(store)}

    assert leases[small_id].body == small
    assert leases[large_id].body is None  # left to load_body, which still reads it
    assert await store.load_body(large_id) == large
    assert "Subject" not in repr(leases[small_id])  # content stays out of logs


async def test_limit_caps_recipients_and_the_rest_stays_due(store: QueueStore) -> None:
    await store.enqueue(make_message(), [make_recipient(f"r{n}@example.com") for n in range(3)])

    first = await store.lease_due(now=T0, owner="n", lease_ms=MINUTE, limit=2)
    second = await store.lease_due(now=T0, owner="n", lease_ms=MINUTE, limit=2)

    assert addresses(first) == [["r0@example.com", "r1@example.com"]]
    assert addresses(second) == [["r2@example.com"]]


async def test_lease_can_be_limited_to_one_virtual_queue(store: QueueStore) -> None:
    await store.enqueue(make_message(), [make_recipient("r@example.com", queue="remote")])
    await store.enqueue(make_message(), [make_recipient("l@example.org", queue="local")])

    local = await store.lease_due(now=T0, owner="n", lease_ms=MINUTE, limit=10, queue="local")

    assert addresses(local) == [["l@example.org"]]
    assert await store.due_soonest(queue="local") == T0 + MINUTE
    assert await store.due_soonest(queue="remote") == T0


@pytest.mark.parametrize(("limit", "lease_ms"), [(0, MINUTE), (1001, MINUTE), (1, 0)])
async def test_lease_arguments_are_checked(store: QueueStore, limit: int, lease_ms: int) -> None:
    with pytest.raises(ValueError):
        await store.lease_due(now=T0, owner="n", lease_ms=lease_ms, limit=limit)


async def test_a_leased_recipient_is_due_again_only_when_its_lease_lapses(
    store: QueueStore,
) -> None:
    await store.enqueue(make_message(), [make_recipient()])
    [lease] = await store.lease_due(now=T0, owner="dead-node", lease_ms=1_000, limit=10)

    assert await store.due_soonest() == T0 + 1_000
    assert await store.lease_due(now=T0 + 999, owner="node2", lease_ms=MINUTE, limit=10) == []
    [takeover] = await store.lease_due(now=T0 + 1_000, owner="node2", lease_ms=MINUTE, limit=10)

    assert takeover.recipients[0].id == lease.recipients[0].id
    assert takeover.token != lease.token
    assert takeover.recipients[0].lease_owner == "node2"


async def test_concurrent_leasers_never_get_the_same_recipient(store_opener: StoreOpener) -> None:
    node1, node2 = await store_opener(), await store_opener()
    for n in range(30):
        await node1.enqueue(
            make_message(received_at=T0 + n),
            [make_recipient(f"r{n}-{k}@d{k % 3}.example", due=T0 + n) for k in range(5)],
        )

    async def drain(store: QueueStore, owner: str) -> list[int]:
        got: list[int] = []
        while leases := await store.lease_due(now=T0 + 100, owner=owner, lease_ms=MINUTE, limit=7):
            got.extend(r.id for lease in leases for r in lease.recipients)
            await asyncio.sleep(0)
        return got

    results = await asyncio.gather(
        drain(node1, "node1-a"), drain(node1, "node1-b"), drain(node2, "node2")
    )

    every = [rid for got in results for rid in got]
    assert len(every) == len(set(every)) == 150


# --- outcomes ---------------------------------------------------------------------------


async def test_record_applies_outcomes_and_ends_the_leases(store: QueueStore) -> None:
    message_id = await store.enqueue(
        make_message(),
        [make_recipient(a) for a in ("ok@example.com", "later@example.com", "bad@example.com")],
    )
    [lease] = await lease_all(store)
    ok, later, bad = lease.recipients

    result = await store.record(
        [delivered(lease, ok), deferred(lease, later, T0 + 5 * MINUTE), failed(lease, bad)]
    )

    assert result.refused == frozenset()
    got = await store.get_message(message_id)
    assert got is not None
    ok_now, later_now, bad_now = got.recipients
    assert (ok_now.status, ok_now.due, ok_now.retry_num, ok_now.last_status) == (
        Status.DELIVERED,
        None,
        1,
        "250 2.0.0 ok",
    )
    assert (later_now.status, later_now.due, later_now.retry_num) == (
        Status.SCHEDULED,
        T0 + 5 * MINUTE,
        1,
    )
    assert (later_now.last_error, later_now.last_status) == (
        LastError.CONNECTION,
        "mx.example.com: connection refused",
    )
    assert (bad_now.status, bad_now.last_error) == (Status.FAILED, LastError.UNEXPECTED_REPLY)
    assert all(r.lease_owner is None and r.lease_until is None for r in got.recipients)
    assert await store.due_soonest() == T0 + 5 * MINUTE


async def test_recording_twice_is_refused_so_nothing_is_delivered_twice(
    store: QueueStore,
) -> None:
    await store.enqueue(make_message(), [make_recipient()])
    [lease] = await lease_all(store)
    [rcpt] = lease.recipients
    await store.record([delivered(lease, rcpt)])

    again = await store.record([failed(lease, rcpt)])

    assert again.refused == {rcpt.id}
    got = await store.get_message(rcpt.message_id)
    assert got is not None and got.recipients[0].status is Status.DELIVERED


async def test_outcome_of_a_lapsed_lease_is_refused_after_a_takeover(store: QueueStore) -> None:
    await store.enqueue(make_message(), [make_recipient()])
    [slow] = await store.lease_due(now=T0, owner="slow", lease_ms=1_000, limit=10)
    [fresh] = await store.lease_due(now=T0 + 1_000, owner="fresh", lease_ms=MINUTE, limit=10)

    late = await store.record([delivered(slow, slow.recipients[0])])
    current = await store.record([deferred(fresh, fresh.recipients[0], T0 + 9 * MINUTE)])

    assert late.refused == {slow.recipients[0].id}
    assert current.refused == frozenset()
    got = await store.get_message(slow.message.id)
    assert got is not None and got.recipients[0].due == T0 + 9 * MINUTE


async def test_outcome_of_a_lapsed_lease_nobody_took_over_is_kept(store: QueueStore) -> None:
    await store.enqueue(make_message(), [make_recipient()])
    [lease] = await store.lease_due(now=T0, owner="slow", lease_ms=1_000, limit=10)

    result = await store.record([delivered(lease, lease.recipients[0])])

    assert result.refused == frozenset()


def notice(*about: model.QueuedRecipient) -> Notice:
    """A DSN to the sender about ``about``, as a worker records it with their outcomes."""
    dsn = make_message(sender="", source=model.MessageSource.DSN, received_from_ip="")
    recipients = [make_recipient("sender@example.org", queue="dsn")]
    return Notice(dsn, recipients, frozenset(r.id for r in about))


async def test_record_queues_notices_in_the_same_transaction(store: QueueStore) -> None:
    await store.enqueue(make_message(), [make_recipient()])
    [lease] = await lease_all(store)

    result = await store.record(
        [failed(lease, lease.recipients[0])], notices=[notice(lease.recipients[0])]
    )

    [dsn_id] = result.message_ids
    assert dsn_id is not None
    got = await store.get_message(dsn_id)
    assert got is not None
    assert (got.sender, got.source, got.recipients[0].queue) == ("", model.MessageSource.DSN, "dsn")


async def test_a_lapsed_lease_records_no_dsn(store: QueueStore) -> None:
    # The slow worker's lease lapsed and another took the recipient over: the slow one's
    # bounce and its DSN are both refused, so the sender hears only from the new holder.
    await store.enqueue(make_message(), [make_recipient()])
    [slow] = await store.lease_due(now=T0, owner="slow", lease_ms=1_000, limit=10)
    await store.lease_due(now=T0 + 1_000, owner="fresh", lease_ms=MINUTE, limit=10)
    [rcpt] = slow.recipients

    late = await store.record([failed(slow, rcpt)], notices=[notice(rcpt)])

    assert late.refused == {rcpt.id} and late.message_ids == (None,)
    assert len(await store.list_messages()) == 1


async def test_a_lapsed_outcome_recorded_beside_its_new_holders_token_is_refused(
    store: QueueStore,
) -> None:
    # One record call carries outcomes under several tokens (the worker batches them). The
    # recipient the slow lease lost is held again, by the token of another update in the same
    # call: that must not make the slow lease's outcome, or its DSN, count as applied.
    await store.enqueue(make_message(), [make_recipient("a@example.com")])
    [slow] = await store.lease_due(now=T0, owner="w", lease_ms=1_000, limit=10)
    await store.enqueue(make_message(), [make_recipient("b@example.com")])
    retaken = await store.lease_due(now=T0 + 1_000, owner="w", lease_ms=MINUTE, limit=10)
    [other] = [lease for lease in retaken if lease.message.id != slow.message.id]
    [a], [b] = slow.recipients, other.recipients

    result = await store.record([failed(slow, a), delivered(other, b)], notices=[notice(a)])

    assert result.refused == {a.id} and result.message_ids == (None,)
    [held] = [lease for lease in retaken if lease.message.id == slow.message.id]
    assert (await store.record([delivered(held, held.recipients[0])])).refused == set()


async def test_a_notice_is_queued_only_when_all_it_reports_on_was_recorded(
    store: QueueStore,
) -> None:
    await store.enqueue(make_message(), [make_recipient("a@example.com"), make_recipient()])
    [slow] = await store.lease_due(now=T0, owner="slow", lease_ms=1_000, limit=10)
    a, b = slow.recipients
    await store.lease_due(now=T0 + 1_000, owner="fresh", lease_ms=MINUTE, limit=1)  # takes a

    result = await store.record(
        [failed(slow, a), failed(slow, b)], notices=[notice(a, b), notice(b)]
    )

    assert result.refused == {a.id}
    both, only_b = result.message_ids
    assert both is None and only_b is not None
    assert len(await store.list_messages()) == 2


async def test_a_notice_must_report_on_recorded_recipients(store: QueueStore) -> None:
    await store.enqueue(make_message(), [make_recipient("a@example.com"), make_recipient()])
    [lease] = await lease_all(store)
    a, b = lease.recipients

    with pytest.raises(ValueError):
        await store.record([failed(lease, a)], notices=[notice(a, b)])
    with pytest.raises(ValueError):
        await store.record([failed(lease, a)], notices=[notice()])
    assert not (await store.record([failed(lease, a)])).refused  # nothing was applied


async def test_release_makes_a_stopping_nodes_recipients_due_again(store: QueueStore) -> None:
    await store.enqueue(
        make_message(), [make_recipient("a@example.com"), make_recipient("b@x.org")]
    )
    await store.enqueue(make_message(), [make_recipient("c@example.com")])
    mine = await store.lease_due(now=T0, owner="stopping", lease_ms=MINUTE, limit=2)
    others = await store.lease_due(now=T0, owner="other", lease_ms=MINUTE, limit=10)

    released = await store.release("stopping", now=T0 + 5)

    assert released == 2
    assert await store.due_soonest() == T0 + 5
    taken = await store.lease_due(now=T0 + 5, owner="next", lease_ms=MINUTE, limit=10)
    assert sorted(a for group in addresses(taken) for a in group) == ["a@example.com", "b@x.org"]
    assert (await store.record([delivered(mine[0], mine[0].recipients[0])])).refused
    assert not (await store.record([delivered(others[0], others[0].recipients[0])])).refused


async def test_release_leases_hands_back_what_a_lease_still_holds(store: QueueStore) -> None:
    message_id = await store.enqueue(
        make_message(), [make_recipient("done@example.com"), make_recipient()]
    )
    await store.enqueue(make_message(), [make_recipient("other@example.com")])
    [lease, other] = await lease_all(store)
    done, unfinished = lease.recipients
    await store.record([failed(lease, done)])

    released = await store.release_leases([lease], now=T0 + 5)

    assert released == 1
    got = await store.get_message(message_id)
    assert got is not None
    done_now, back = got.recipients
    assert done_now.status is Status.FAILED
    assert (back.status, back.due, back.lease_owner, back.lease_until) == (
        Status.SCHEDULED,
        T0 + 5,
        None,
        None,
    )
    # No attempt counted, nothing else changed.
    assert dataclasses.replace(
        back, due=unfinished.due, lease_owner="node1"
    ) == dataclasses.replace(unfinished, lease_until=None)
    assert (await store.record([delivered(lease, unfinished)])).refused == {unfinished.id}
    assert not (await store.record([delivered(other, other.recipients[0])])).refused
    assert await store.release_leases([lease], now=T0 + 6) == 0


async def test_retry_now_brings_deferred_recipients_forward(store: QueueStore) -> None:
    message_id = await store.enqueue(make_message(), [make_recipient(due=T0 + 60 * MINUTE)])

    assert await store.retry_now(message_id, now=T0) == 1
    [lease] = await lease_all(store, now=T0)
    assert await store.retry_now(message_id, now=T0) == 0  # leased: left alone
    assert lease.message.id == message_id


async def test_cancel_finishes_scheduled_recipients_and_refuses_their_outcome(
    store: QueueStore,
) -> None:
    message_id = await store.enqueue(
        make_message(), [make_recipient("a@x.org"), make_recipient("b@y.org")]
    )
    [lease, other] = await store.lease_due(now=T0, owner="n", lease_ms=MINUTE, limit=10)
    await store.record([delivered(lease, lease.recipients[0])])

    result = await store.cancel(message_id, reason="cancelled by admin")

    assert result == Cancelled(frozenset({other.recipients[0].id}))

    got = await store.get_message(message_id)
    assert got is not None
    assert [(r.status, r.last_status) for r in got.recipients] == [
        (Status.DELIVERED, "250 2.0.0 ok"),
        (Status.CANCELLED, "cancelled by admin"),
    ]
    assert await store.due_soonest() is None


async def test_cancel_refuses_the_outcome_of_a_leased_recipient(store: QueueStore) -> None:
    message_id = await store.enqueue(make_message(), [make_recipient()])
    [lease] = await lease_all(store)
    await store.cancel(message_id, reason="stop")

    assert (await store.record([delivered(lease, lease.recipients[0])])).refused


async def test_cancel_queues_its_dsn_in_the_same_transaction(store: QueueStore) -> None:
    message_id = await store.enqueue(
        make_message(), [make_recipient("a@x.org"), make_recipient("b@y.org")]
    )
    [lease, _] = await store.lease_due(now=T0, owner="n", lease_ms=MINUTE, limit=10)
    await store.record([delivered(lease, lease.recipients[0])])
    got = await store.get_message(message_id)
    assert got is not None
    scheduled = [r for r in got.recipients if r.status is Status.SCHEDULED]

    result = await store.cancel(message_id, reason="cancelled by admin", notice=notice(*scheduled))

    assert result.ids == {scheduled[0].id} and not result.stale
    assert result.notice_id is not None
    dsn = await store.get_message(result.notice_id)
    assert dsn is not None and (dsn.sender, dsn.source) == ("", model.MessageSource.DSN)
    assert await store.list_messages(status=Status.CANCELLED) != []


async def test_cancel_with_a_stale_dsn_changes_nothing(store: QueueStore) -> None:
    # The DSN was built when both recipients were scheduled; one was delivered since: a
    # cancellation with it would tell the sender a delivered recipient was cancelled.
    message_id = await store.enqueue(
        make_message(), [make_recipient("a@x.org"), make_recipient("b@y.org")]
    )
    before = await store.get_message(message_id)
    assert before is not None
    [lease, _] = await store.lease_due(now=T0, owner="n", lease_ms=MINUTE, limit=10)
    await store.record([delivered(lease, lease.recipients[0])])
    after = await store.get_message(message_id)

    result = await store.cancel(message_id, reason="stop", notice=notice(*before.recipients))

    assert result == Cancelled(frozenset(), stale=True)
    assert await store.get_message(message_id) == after
    assert len(await store.list_messages()) == 1


async def test_cancel_of_a_finished_or_unknown_message_cancels_nothing(store: QueueStore) -> None:
    message_id = await store.enqueue(make_message(), [make_recipient()])
    await store.cancel(message_id, reason="first")

    assert await store.cancel(message_id, reason="again") == Cancelled(frozenset())
    assert await store.cancel("unknown", reason="stop") == Cancelled(frozenset())


async def test_cancel_checks_its_notice(store: QueueStore) -> None:
    message_id = await store.enqueue(make_message(), [make_recipient()])
    with pytest.raises(ValueError):
        await store.cancel(message_id, reason="stop", notice=notice())
    dsn = make_message(sender="", source=model.MessageSource.DSN)
    with pytest.raises(model.InvalidEnvelope):
        await store.cancel(message_id, reason="stop", notice=Notice(dsn, [], frozenset({1})))
    got = await store.get_message(message_id)
    assert got is not None and got.recipients[0].status is Status.SCHEDULED


# --- cancellation of the caller ---------------------------------------------------------

CUTS = [*(("ticks", n) for n in range(16)), *(("ms", n / 2) for n in range(1, 16))]
"""Where a cancellation falls: after n loop turns, then after n/2 ms (PostgreSQL answers
over a socket: its statements span wall time rather than loop turns)."""


async def test_a_record_cancelled_at_any_moment_is_all_or_nothing(store: QueueStore) -> None:
    """Wherever the cut falls (before BEGIN, mid-statement, in COMMIT), the outcome and its
    DSN are both applied or both not, and the store stays usable."""
    for n, (unit, amount) in enumerate(CUTS):
        message_id = await store.enqueue(make_message(), [make_recipient()])
        [lease] = await store.lease_due(now=T0, owner=f"w{n}", lease_ms=MINUTE, limit=1)
        [rcpt] = lease.recipients
        task = asyncio.ensure_future(store.record([failed(lease, rcpt)], notices=[notice(rcpt)]))
        if unit == "ticks":
            for _ in range(int(amount)):
                await asyncio.sleep(0)
        else:
            await asyncio.sleep(amount / 1000)
        task.cancel()
        try:
            recorded = await task
        except asyncio.CancelledError:
            recorded = None
        got = await store.get_message(message_id)
        assert got is not None
        [stored] = got.recipients
        dsns = await store.list_messages(sender="", limit=1000)
        if stored.status is Status.FAILED:
            assert stored.lease_owner is None
            assert len(dsns) == 1
            await store.cancel(dsns[0].id, reason="next cut")
            await store.purge_finished([message_id, dsns[0].id])
        else:
            assert recorded is None and stored.status is Status.SCHEDULED
            assert stored.lease_owner == f"w{n}" and dsns == []
            await store.cancel(message_id, reason="next cut")
            await store.purge_finished([message_id])
    assert await store.list_messages() == []
    await store.enqueue(make_message(), [make_recipient()])
    assert await lease_all(store, now=T0 + MINUTE)


# --- listing, counting, purging ---------------------------------------------------------


async def test_due_soonest_follows_scheduled_recipients_only(store: QueueStore) -> None:
    assert await store.due_soonest() is None
    await store.enqueue(make_message(), [make_recipient(due=T0 + 7)])
    await store.enqueue(make_message(), [make_recipient(due=T0 + 3)])
    assert await store.due_soonest() == T0 + 3

    leases = await store.lease_due(now=T0 + 3, owner="n", lease_ms=MINUTE, limit=1)
    await store.record([delivered(leases[0], leases[0].recipients[0])])

    assert await store.due_soonest() == T0 + 7


async def test_list_filters_combine_and_pages_follow_arrival(store: QueueStore) -> None:
    one = await store.enqueue(
        make_message(sender="A@Example.org", received_at=T0), [make_recipient("u@one.example")]
    )
    two = await store.enqueue(
        make_message(sender="", received_at=T0 + 1),
        [make_recipient("u@two.example", queue="dsn"), make_recipient("v@one.example")],
    )
    three = await store.enqueue(
        make_message(sender="b@example.org", received_at=T0 + 2),
        [make_recipient("w@three.example")],
    )
    [lease] = await store.lease_due(now=T0, owner="n", lease_ms=MINUTE, limit=1)
    await store.record([failed(lease, lease.recipients[0])])  # u@one.example

    async def ids(**filters: object) -> list[str]:
        return [m.id for m in await store.list_messages(**filters)]  # type: ignore[arg-type]

    assert await ids() == [one, two, three]
    assert await ids(domain="ONE.example") == [one, two]
    assert await ids(status=Status.FAILED) == [one]
    assert await ids(status=Status.SCHEDULED, domain="one.example") == [two]
    assert await ids(queue="dsn") == [two]
    assert await ids(sender="a@example.ORG") == [one]
    assert await ids(sender="") == [two]
    assert await ids(limit=2) == [one, two]
    assert await ids(after=two) == [three]
    [listed] = await store.list_messages(after=one, limit=1)
    assert [r.address for r in listed.recipients] == ["u@two.example", "v@one.example"]


async def test_list_filters_by_recipient_due_and_deferral(store: QueueStore) -> None:
    early = await store.enqueue(
        make_message(received_at=T0),
        [make_recipient("Early@one.example", due=T0), make_recipient("x@two.example", due=T0)],
    )
    late = await store.enqueue(
        make_message(received_at=T0 + 1), [make_recipient("late@one.example", due=T0 + HOUR)]
    )
    done = await store.enqueue(
        make_message(received_at=T0 + 2), [make_recipient("done@one.example", due=T0)]
    )
    leases = await lease_all(store, now=T0)
    by_address = {r.address: (lease, r) for lease in leases for r in lease.recipients}
    await store.record(
        [
            deferred(*by_address["Early@one.example"], T0 + 2 * HOUR),  # attempted: deferred
            delivered(*by_address["x@two.example"]),
            failed(*by_address["done@one.example"]),
        ]
    )

    async def ids(**filters: object) -> list[str]:
        return [m.id for m in await store.list_messages(**filters)]  # type: ignore[arg-type]

    assert await ids(recipient="early@ONE.example") == [early]
    assert await ids(recipient="early") == []  # the whole address, not a part
    assert await ids(deferred=True) == [early]
    assert await ids(deferred=False) == [early, late, done]  # x@ and done@ are final
    assert await ids(deferred=False, status=Status.SCHEDULED) == [late]
    assert await ids(due_before=T0 + HOUR) == []
    assert await ids(due_before=T0 + HOUR + 1) == [late]
    assert await ids(due_after=T0 + HOUR) == [early, late]
    assert await ids(due_after=T0 + HOUR + 1) == [early]
    assert await ids(due_after=T0 + HOUR, due_before=T0 + 2 * HOUR) == [late]
    assert await ids(due_after=T0 + HOUR, domain="two.example") == []  # one recipient, both
    assert await ids(recipient="x@two.example", status=Status.DELIVERED) == [early]


@pytest.mark.parametrize("limit", [0, 1001])
async def test_list_limit_is_checked(store: QueueStore, limit: int) -> None:
    with pytest.raises(ValueError):
        await store.list_messages(limit=limit)


async def test_count_by_status_covers_every_status(store: QueueStore) -> None:
    await store.enqueue(make_message(), [make_recipient(f"r{n}@example.com") for n in range(3)])
    [lease] = await lease_all(store)
    await store.record([delivered(lease, lease.recipients[0]), failed(lease, lease.recipients[1])])

    assert await store.count_by_status() == {
        Status.SCHEDULED: 1,
        Status.DELIVERED: 1,
        Status.FAILED: 1,
        Status.CANCELLED: 0,
    }


async def test_count_by_queue_counts_recipients_per_queue_and_status(store: QueueStore) -> None:
    await store.enqueue(
        make_message(),
        [make_recipient("a@example.com"), make_recipient("b@example.com", queue="local")],
    )
    await store.enqueue(make_message(), [make_recipient("c@example.com")])
    leases = await store.lease_due(now=T0, owner="n", lease_ms=MINUTE, limit=10, queue="local")
    await store.record([failed(leases[0], leases[0].recipients[0])])

    assert await store.count_by_queue() == {
        ("remote", Status.SCHEDULED): 2,
        ("local", Status.FAILED): 1,
    }


async def test_purge_deletes_only_finished_messages_with_their_body(store: QueueStore) -> None:
    done = await store.enqueue(make_message(), [make_recipient("a@example.com")])
    pending = await store.enqueue(
        make_message(), [make_recipient("b@example.com"), make_recipient("c@x.org")]
    )
    leases = await lease_all(store)
    by_address = {r.address: (lease, r) for lease in leases for r in lease.recipients}
    await store.record(
        [delivered(*by_address["a@example.com"]), failed(*by_address["b@example.com"])]
    )

    assert await store.purge_finished([done, pending, "unknown"]) == [done]
    assert await store.get_message(done) is None
    with pytest.raises(MessageNotFound):
        await store.load_body(done)
    assert await store.get_message(pending) is not None

    await store.cancel(pending, reason="cancelled")
    assert await store.purge_finished() == [pending]
    assert await store.list_messages() == []
