"""Retries at the schedule's times (the last interval repeats), and expiry by attempts or TTL."""

from __future__ import annotations

import itertools

import pytest

from delivery.harness import lab as harness_lab
from delivery.queue import model
from tests.plugins.engine import MakeEngine

POLL_SLACK_MS = 1000  # an attempt starts within a poll interval (and a job's run) of its due


@pytest.mark.harness_mx("mx1.later.test", replies={"rcpt": {"*": "451 4.3.0 later"}})
async def test_retries_follow_the_intervals_and_expire_after_max_attempts(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness)
    await world.update(
        "MtaDeliverySchedule",
        "remote",
        retry=["1s", "2s"],
        notify=[],
        expiry={"@type": "Attempts", "maxAttempts": 4},
    )
    message_id = await world.send("", ["b@later.test"])
    attempts = await world.worker.wait_settled(4, timeout_s=15)
    waits = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    assert [a.due - a.at for a in attempts[:3] if a.due is not None] == [1000, 2000, 2000]
    for wait, expected in zip(waits, [1000, 2000, 2000], strict=True):
        assert expected <= wait < expected + POLL_SLACK_MS
    assert [a.status for a in attempts] == [model.RecipientStatus.SCHEDULED] * 3 + [
        model.RecipientStatus.FAILED
    ]
    last = attempts[-1].outcome
    assert last.action == "failed" and last.status == "5.3.0"
    assert "gave up after 4 attempts" in last.reason and "451 4.3.0 later" in last.reason
    # One transaction per attempt (a retry may reuse the previous attempt's connection).
    assert sum(c.startswith("MAIL FROM") for c in harness.mx("mx1.later.test").commands) == 4
    [stored] = await world.recipients(message_id)
    assert stored.status is model.RecipientStatus.FAILED and stored.retry_num == 4


@pytest.mark.harness_mx("mx1.later.test", replies={"rcpt": {"*": "451 4.3.0 later"}})
async def test_a_ttl_expiry_brings_the_last_attempt_forward_and_then_fails(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness)
    await world.update(
        "MtaDeliverySchedule",
        "remote",
        retry=["10s"],
        notify=[],
        expiry={"@type": "Ttl", "expire": "2s"},
    )
    await world.send("", ["b@later.test"])
    first, last = await world.worker.wait_settled(2, timeout_s=10)
    assert first.due is not None and first.due - first.at < 2000  # not 10s: the TTL comes first
    assert last.status is model.RecipientStatus.FAILED
    assert "in the queue for 2s" in last.outcome.reason
