"""The worker: what it records after an attempt (tables), and how it runs (harness)."""

from __future__ import annotations

import pytest

from delivery import config
from delivery.engine import attempt, dsn, outcome, planner, worker
from delivery.errors import LastError
from delivery.harness import lab as harness_lab
from delivery.queue import model
from delivery.queue.sqlite import SqliteQueueStore
from tests.plugins.engine import BODY, MakeEngine, make_snapshot
from tests.plugins.harness import MakeLab

T0 = 1_700_000_000_000
MINUTE, DAY = 60_000, 86_400_000
HOUR = 60 * MINUTE
SNAPSHOT = make_snapshot(
    objects=[
        (
            "MtaDeliverySchedule",
            {
                "name": "three-tries",
                "queue": "remote",
                "retry": [MINUTE],
                "notify": [],
                "expiry": {"@type": "Attempts", "maxAttempts": 3},
            },
        ),
        (
            "MtaDeliverySchedule",
            {
                "name": "notify-often",
                "queue": "remote",
                "retry": [MINUTE],
                "notify": [HOUR, 2 * HOUR, DAY],
                "expiry": {"@type": "Ttl", "expire": 3 * DAY},
            },
        ),
    ]
)
SUCCESS = frozenset({model.Notify.SUCCESS})
NEVER = frozenset({model.Notify.NEVER})
FAILURE_ONLY = frozenset({model.Notify.FAILURE})


def lease(*, sender: str = "a@sender.test", **recipient: object) -> model.Lease:
    fields: dict[str, object] = {
        "id": 1,
        "message_id": "m1",
        "address": "b@example.test",
        "domain": "example.test",
        "status": model.RecipientStatus.SCHEDULED,
        "due": T0,
        "retry_num": 0,
        "notify_num": 0,
        "notify_due": T0 + DAY,
        "expires_at": T0 + 3 * DAY,
        "max_attempts": None,
        "queue": "remote",
        "schedule": "remote",
        "last_error": LastError.NONE,
        "last_status": "",
        "notify": frozenset(),
        "orcpt": None,
        "lease_owner": "w",
        "lease_until": T0 + MINUTE,
    }
    fields.update(recipient)
    rcpt = model.QueuedRecipient(**fields)  # type: ignore[arg-type]
    message = model.QueuedMessage(
        id="m1",
        sender=sender,
        size=10,
        source=model.MessageSource.AUTHENTICATED,
        received_at=T0,
        received_from_ip="",
        received_via_port=0,
        priority=0,
        env_id=None,
        ret=None,
        smtputf8=False,
        eightbitmime=False,
        requiretls=False,
        recipients=(rcpt,),
    )
    return model.Lease("tok", "w", T0 + MINUTE, "example.test", message)


def result(
    action: str, status: str, kind: LastError = LastError.UNEXPECTED_REPLY
) -> outcome.Outcome:
    return outcome.Outcome(action, status, kind, "mx.test", "192.0.2.1", "450 x", "said no")  # type: ignore[arg-type]


DELIVERED = result("delivered", "2.0.0", LastError.NONE)
DELAYED = result("delayed", "4.2.1")
FAILED = result("failed", "5.1.1")

CASES = [  # (label, lease, outcome, schedule, handoff, now, status, due, dsn, notify_num)
    ("delivered", lease(), DELIVERED, "remote", dsn.Handoff.RELAY, T0, "delivered", None, None, 0),
    (
        "delivered, SUCCESS, next hop has no DSN",
        lease(notify=SUCCESS),
        DELIVERED,
        "remote",
        dsn.Handoff.RELAY,
        T0,
        "delivered",
        None,
        dsn.DsnAction.RELAYED,
        0,
    ),
    (
        "delivered locally, SUCCESS",
        lease(notify=SUCCESS),
        DELIVERED,
        "remote",
        dsn.Handoff.FINAL,
        T0,
        "delivered",
        None,
        dsn.DsnAction.DELIVERED,
        0,
    ),
    (
        "bounced",
        lease(),
        FAILED,
        "remote",
        dsn.Handoff.RELAY,
        T0,
        "failed",
        None,
        dsn.DsnAction.FAILED,
        0,
    ),
    (
        "bounced, NOTIFY=NEVER",
        lease(notify=NEVER),
        FAILED,
        "remote",
        dsn.Handoff.RELAY,
        T0,
        "failed",
        None,
        None,
        0,
    ),
    (
        "bounced, null sender",
        lease(sender=""),
        FAILED,
        "remote",
        dsn.Handoff.RELAY,
        T0,
        "failed",
        None,
        None,
        0,
    ),
    (
        "first retry",
        lease(),
        DELAYED,
        "remote",
        dsn.Handoff.RELAY,
        T0,
        "scheduled",
        T0 + 2 * MINUTE,
        None,
        0,
    ),
    (
        "third retry: third interval",
        lease(retry_num=2),
        DELAYED,
        "remote",
        dsn.Handoff.RELAY,
        T0,
        "scheduled",
        T0 + 10 * MINUTE,
        None,
        0,
    ),
    (
        "the last interval repeats",
        lease(retry_num=40),
        DELAYED,
        "remote",
        dsn.Handoff.RELAY,
        T0 + DAY + 1,
        "scheduled",
        T0 + 3 * DAY,  # 3d would pass the TTL: brought forward to the expiry
        dsn.DsnAction.DELAYED,
        1,
    ),
    (
        "a notify time passed: delay DSN",
        lease(retry_num=3),
        DELAYED,
        "remote",
        dsn.Handoff.RELAY,
        T0 + DAY,
        "scheduled",
        T0 + DAY + 15 * MINUTE,
        dsn.DsnAction.DELAYED,
        1,
    ),
    (
        "the notify time comes before the next retry: due then",
        lease(retry_num=7),
        DELAYED,
        "remote",
        dsn.Handoff.RELAY,
        T0 + 4 * HOUR,
        "scheduled",
        T0 + DAY,  # not T0 + 28h, the next retry (24h after this 8th attempt)
        None,
        0,
    ),
    (
        "no wake-up for a notice the sender did not ask for",
        lease(retry_num=7, notify=FAILURE_ONLY),
        DELAYED,
        "remote",
        dsn.Handoff.RELAY,
        T0 + 4 * HOUR,
        "scheduled",
        T0 + 28 * HOUR,
        None,
        0,
    ),
    (
        "no wake-up for a notice to the null sender",
        lease(retry_num=7, sender=""),
        DELAYED,
        "remote",
        dsn.Handoff.RELAY,
        T0 + 4 * HOUR,
        "scheduled",
        T0 + 28 * HOUR,
        None,
        0,
    ),
    (
        "notify times that passed unseen give one notice",
        lease(schedule="notify-often"),
        DELAYED,
        "notify-often",
        dsn.Handoff.RELAY,
        T0 + 2 * HOUR + 1,
        "scheduled",
        T0 + 2 * HOUR + 1 + MINUTE,
        dsn.DsnAction.DELAYED,
        2,
    ),
    (
        "TTL passed: expired",
        lease(retry_num=9),
        DELAYED,
        "remote",
        dsn.Handoff.RELAY,
        T0 + 3 * DAY,
        "failed",
        None,
        dsn.DsnAction.FAILED,
        0,
    ),
    (
        "max attempts reached: expired",
        lease(retry_num=2),
        DELAYED,
        "three-tries",
        dsn.Handoff.RELAY,
        T0,
        "failed",
        None,
        dsn.DsnAction.FAILED,
        0,
    ),
]


@pytest.mark.parametrize(
    (
        "label",
        "leased",
        "got",
        "schedule",
        "handoff",
        "now",
        "status",
        "due",
        "action",
        "notify_num",
    ),
    CASES,
    ids=[case[0] for case in CASES],
)
def test_settle(
    label: str,
    leased: model.Lease,
    got: outcome.Outcome,
    schedule: str,
    handoff: dsn.Handoff,
    now: int,
    status: str,
    due: int | None,
    action: dsn.DsnAction | None,
    notify_num: int,
) -> None:
    [recipient] = leased.recipients
    settled = worker.settle(
        leased,
        recipient,
        got,
        schedule=planner.select_schedule(SNAPSHOT, schedule),
        handoff=handoff,
        now=now,
    )
    update = settled.update
    assert (update.status.value, update.due, settled.dsn, update.notify_num) == (
        status,
        due,
        action,
        notify_num,
    )
    assert update.retry_num == recipient.retry_num + 1
    assert update.last_error is got.kind and update.token == "tok"
    if status == "failed" and got.action == "delayed":
        assert settled.outcome.status.startswith("5.") and "gave up" in update.last_status
    if status == "scheduled":
        assert update.schedule == schedule and settled.will_retry_until is not None


# ---- the running worker -------------------------------------------------------------------


async def test_threads_per_node_bounds_concurrent_deliveries(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    slow = {"replies": {"greeting": {"delay": 0.3}}}
    lab = await make_lab(
        {"domains": {f"d{n}.test": {"mx": [{"name": f"mx.d{n}.test", **slow}]} for n in range(3)}}
    )
    world = await make_engine(lab, start=False)
    await world.update("MtaVirtualQueue", "remote", threadsPerNode=1)
    for n in range(3):
        await world.send("", [f"x@d{n}.test"])
    await world.worker.start()
    settled = await world.worker.wait_settled(3)
    assert {s.status for s in settled} == {model.RecipientStatus.DELIVERED}
    assert world.worker.peak["remote"] == 1

    await world.update("MtaVirtualQueue", "remote", threadsPerNode=3)
    await world.worker.stop()
    for n in range(3):
        await world.send("", [f"y@d{n}.test"])
    await world.worker.start()
    await world.worker.wait_settled(6)
    assert world.worker.peak["remote"] == 3


async def test_a_hostile_server_is_a_classified_failure_and_others_are_served(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab(
        {
            "domains": {
                "huge.test": {
                    "mx": [{"name": "mx.huge.test", "replies": {"greeting": "220 " + "x" * 5000}}]
                },
                "fine.test": {"mx": [{"name": "mx.fine.test"}]},
            }
        }
    )
    world = await make_engine(lab)
    await world.send("", ["a@huge.test"])
    await world.send("", ["b@fine.test"])
    settled = {s.address: s for s in await world.worker.wait_settled(2)}
    hostile = settled["a@huge.test"]
    assert hostile.status is model.RecipientStatus.SCHEDULED
    assert hostile.outcome.kind is LastError.UNEXPECTED_REPLY
    assert "malformed" in hostile.outcome.reason
    assert settled["b@fine.test"].status is model.RecipientStatus.DELIVERED


@pytest.mark.harness_mx("mx1.plain.test")
async def test_an_internal_error_defers_with_kind_io_and_the_worker_goes_on(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    """A hostname that is no EHLO name makes the SMTP layer raise a ValueError: a bug-like
    failure the attempt does not classify. The guard defers; local delivery goes on."""
    world = await make_engine(harness, local_domains=["here.test"], hostname="not a hostname")
    message_id = await world.send("", ["b@plain.test"])
    await world.send("", ["me@here.test"])
    settled = {s.address: s for s in await world.worker.wait_settled(2)}
    broken = settled["b@plain.test"]
    assert broken.status is model.RecipientStatus.SCHEDULED
    assert broken.outcome.kind is LastError.IO and "internal error" in broken.outcome.reason
    assert settled["me@here.test"].status is model.RecipientStatus.DELIVERED
    [stored] = await world.recipients(message_id)
    assert stored.last_error is LastError.IO and stored.retry_num == 1


@pytest.mark.harness_mx("mx1.slow.test", replies={"end_of_data": {"delay": 5}})
async def test_stop_hands_back_an_unfinished_delivery_never_marking_it_delivered(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness, grace_ms=200)
    message_id = await world.send("", ["b@slow.test"])
    await harness.mx("mx1.slow.test").wait_for_messages(1)  # the content is in, no reply yet
    await world.worker.stop()
    [stored] = await world.recipients(message_id)
    assert stored.status is model.RecipientStatus.SCHEDULED
    assert stored.retry_num == 0 and stored.lease_owner is None
    assert stored.due is not None and stored.due <= model.now_ms()


@pytest.mark.harness_mx("mx1.plain.test")
async def test_a_restart_takes_back_its_own_leases_at_once(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness, start=False, owner="node1")
    message_id = await world.send("", ["b@plain.test"])
    # a previous run of node1 leased it and died without recording anything
    [held] = await world.store.lease_due(
        now=model.now_ms(), owner="node1", lease_ms=3_600_000, limit=10
    )
    assert held.message.id == message_id
    await world.worker.start()
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.DELIVERED


@pytest.mark.harness_mx("mx1.plain.test")
async def test_mail_queued_by_another_process_is_found_by_polling(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness)
    other = await SqliteQueueStore.open(config.sqlite_path(world.settings.store.url))
    try:
        now = model.now_ms()
        await other.enqueue(
            model.NewMessage(
                sender="", body=BODY, source=model.MessageSource.AUTHENTICATED, received_at=now
            ),
            [
                model.NewRecipient(
                    "b@plain.test", queue="remote", schedule="remote", due=now, expires_at=now + DAY
                )
            ],
        )
    finally:
        await other.close()
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.DELIVERED


@pytest.mark.harness_mx("mx1.plain.test")
async def test_recipients_of_a_vanished_virtual_queue_are_still_delivered(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness)
    now = model.now_ms()
    await world.store.enqueue(
        model.NewMessage(
            sender="", body=BODY, source=model.MessageSource.AUTHENTICATED, received_at=now
        ),
        [
            model.NewRecipient(
                "b@plain.test", queue="gone", schedule="gone", due=now, expires_at=now + DAY
            )
        ],
    )
    world.worker.wake()
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.DELIVERED


@pytest.mark.harness_mx("mx1.plain.test")
async def test_build_worker_runs_from_the_settings(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness, start=False)
    built = worker.build_worker(world.settings, world.registry, world.store, owner="built")
    async with built:
        await world.send("", ["b@plain.test"])
        built.wake()
        [settled] = await built.wait_settled(1)
    assert settled.status is model.RecipientStatus.DELIVERED
    assert not built.running


@pytest.mark.harness_mx("mx1.plain.test")
async def test_a_partly_taken_over_lease_sends_a_dsn_for_what_it_recorded_only(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    """The lease of x and y lapsed and another worker took x over: the bounce of y is
    recorded with a DSN about y alone; x is reported by its new holder, never twice."""
    world = await make_engine(harness, start=False)
    await world.send("a@sender.test", ["x@plain.test", "y@plain.test"])
    now = model.now_ms()
    [lease] = await world.store.lease_due(now=now, owner="slow", lease_ms=1, limit=10)
    x, y = lease.recipients
    await world.store.lease_due(now=now + 1, owner="fresh", lease_ms=60_000, limit=1)  # x
    bounced = result("failed", "5.1.1")
    results = {
        r.id: attempt.RecipientResult(attempt.Target(r, {}, None), bounced, None, dsn.Handoff.RELAY)
        for r in (x, y)
    }
    snapshot, engine = world.registry.snapshot(), world.worker

    settlements = await engine._settlements(lease, snapshot, results, None, now)
    await engine._apply(
        lease.message, await engine._prepare(lease, snapshot, settlements, BODY, now)
    )

    [notice] = [m for m in await world.store.list_messages() if m.source is model.MessageSource.DSN]
    text = await world.store.load_body(notice.id)
    assert b"<y@plain.test>" in text and b"x@plain.test" not in text
    assert [s.address for s in engine.settled] == ["y@plain.test"]
