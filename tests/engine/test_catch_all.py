"""threadsPerNode holds when mail becomes due between a queue's lease and the catch-all lease.

The worker leases each virtual queue within its free slots, then (when none is full) leases
what is due in queues that no longer exist. Mail that became due in between (a submission,
another node's lapsed lease) must not ride in on that second lease past its queue's limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from delivery import config
from delivery.dns import resolver as dns_resolver
from delivery.engine import worker
from delivery.queue import model
from delivery.queue.sqlite import SqliteQueueStore
from delivery.queue.store import NewEntry
from delivery.registry import Registry
from tests.plugins.harness import MakeLab
from tests.plugins.registry import set_ok

THREADS = 2
SLOW = {"replies": {"greeting": {"delay": 0.3}}}  # deliveries overlap long enough to count


class MailArrivesBetweenLeases(SqliteQueueStore):
    """The queue store, with ``arriving`` mail committed right after the first lease of the
    ``remote`` queue returns, as a submission landing at that moment would be."""

    arriving: Sequence[NewEntry] = ()

    async def lease_due(self, **arguments: Any) -> list[model.Lease]:
        leases = await super().lease_due(**arguments)
        if arguments.get("queue") == "remote" and self.arriving:
            entries, self.arriving = self.arriving, ()
            await self.enqueue_many(entries)
        return leases


def entry(address: str, *, due: int) -> NewEntry:
    message = model.NewMessage(
        sender="", body=b"Subject: x\r\n\r\nx\r\n", source=model.MessageSource.DSN, received_at=due
    )
    return message, [
        model.NewRecipient(address, "remote", "remote", due, expires_at=due + 86_400_000)
    ]


async def test_mail_due_after_its_queues_lease_waits_for_a_free_slot(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    lab = await make_lab({"domains": {"slow.test": {"mx": [{"name": "mx.slow.test", **SLOW}]}}})
    settings = config.Settings.model_validate(
        {"hostname": "mta.engine.test", "store": {"url": f"sqlite://{tmp_path}/d.db"}}
        | lab.settings()
    )
    past = model.now_ms() - 1000
    async with (
        await Registry.open(settings.store.url) as registry,
        await MailArrivesBetweenLeases.open(tmp_path / "d.db") as store,
        dns_resolver.Resolver(settings.dns.servers(), timeout_ms=1000, trust_ad=True) as dns,
    ):
        remote = await registry.query("MtaVirtualQueue", filter={"name": "remote"}, sort=None)
        await set_ok(
            registry, "MtaVirtualQueue", update={remote["ids"][0]: {"threadsPerNode": THREADS}}
        )
        await store.enqueue_many([entry("first@slow.test", due=past)])  # one slot of two taken
        store.arriving = [entry(f"late{n}@slow.test", due=past) for n in range(3)]
        engine = worker.Worker(
            settings, registry, store, dns, owner="catch-all", poll_interval_ms=200
        )
        async with engine:
            settled = await engine.wait_settled(4)
    assert {s.status for s in settled} == {model.RecipientStatus.DELIVERED}
    assert engine.peak["remote"] == THREADS
