"""Intake planning: each new recipient is queued under the schedule its expression picks."""

from __future__ import annotations

from delivery.queue import model
from tests.plugins.engine import MakeEngine
from tests.plugins.harness import MakeLab

DAY_MS = 86_400_000


async def test_schedule_expression_picks_queue_and_expiry_and_dns_failure_falls_back(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab(
        {
            "domains": {
                "slow.test": {
                    "mx": [{"name": "mx1.slow.test"}],
                    "records": [{"name": "slow.test", "type": "TXT", "value": '"bulk"'}],
                },
                "broken.test": {
                    "mx": [{"name": "mx1.broken.test"}],
                    "faults": {"broken.test": "servfail"},
                },
            }
        }
    )
    world = await make_engine(lab, start=False)
    await world.create("MtaVirtualQueue", name="bulk", threadsPerNode=2)
    await world.create(
        "MtaDeliverySchedule",
        name="bulk",
        queue="bulk",
        retry=["1m"],
        notify=[],
        expiry={"@type": "Ttl", "expire": "1d"},
    )
    await world.outbound(
        schedule={
            "match": [{"if": "len(dns_query(rcpt_domain, 'TXT')) > 0", "then": "'bulk'"}],
            "else": "'remote'",
        }
    )
    bulk_id = await world.send("a@origin.test", ["a@slow.test"])
    broken_id = await world.send("a@origin.test", ["b@broken.test"])

    [bulk] = await world.recipients(bulk_id)
    assert (bulk.queue, bulk.schedule) == ("bulk", "bulk")
    assert bulk.due is not None and bulk.expires_at == bulk.due + DAY_MS
    assert bulk.notify_due is None
    [fallback] = await world.recipients(broken_id)
    assert fallback.schedule == "default"  # no schedule has that name: built-in defaults
    assert fallback.status is model.RecipientStatus.SCHEDULED
    assert fallback.due is not None and fallback.expires_at is not None
    assert fallback.expires_at > fallback.due
