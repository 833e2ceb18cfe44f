"""Cancel while the worker settles a recipient: the DSN is built again for what is left."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from delivery import expr
from delivery.api import auth
from delivery.api import queue as api_queue
from delivery.errors import DnsTempFail
from delivery.queue import model
from delivery.queue import store as queue_store
from delivery.queue.sqlite import SqliteQueueStore
from delivery.registry.service import Registry

ADMIN = auth.Principal("admin", frozenset({"*"}))
NOW = 1_769_860_800_000


async def no_dns(name: str, rtype: str) -> expr.Value:
    raise DnsTempFail(f"no DNS in this test ({name} {rtype})")


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[SqliteQueueStore, Registry]]:
    queue = await SqliteQueueStore.open(tmp_path / "delivery.db")
    registry = await Registry.open(f"sqlite:///{tmp_path}/delivery.db")
    try:
        yield queue, registry
    finally:
        await queue.close()
        await registry.close()


class WorkerDeliversFirst(api_queue.CancelNotices):
    """The real DSN builder, while a worker delivers ``r1`` just as the first one is built."""

    def __init__(self, queue: SqliteQueueStore, registry: Registry) -> None:
        super().__init__(
            hostname="mta.test", registry=registry, env=expr.Environment(), lookup=no_dns
        )
        self.queue = queue
        self.builds = 0

    async def build(
        self, message: model.QueuedMessage, body: bytes, /, *, now: int
    ) -> queue_store.Notice | None:
        self.builds += 1
        if self.builds == 1:
            [lease] = await self.queue.lease_due(now=now, owner="w", lease_ms=60_000, limit=10)
            first = lease.recipients[0]
            delivered = dataclasses.replace(
                model.RecipientUpdate.unchanged(lease, first),
                status=model.RecipientStatus.DELIVERED,
                due=None,
                retry_num=1,
            )
            await self.queue.record([delivered])
            await self.queue.release_leases([lease], now=now)
        return await super().build(message, body, now=now)


async def test_a_recipient_delivered_meanwhile_is_left_out_of_the_dsn(
    stores: tuple[SqliteQueueStore, Registry],
) -> None:
    queue, registry = stores
    new = model.NewMessage(
        sender="alice@origin.test",
        body=b"Subject: race\r\n\r\nhello\r\n",
        source=model.MessageSource.AUTHENTICATED,
        received_at=NOW,
    )
    recipients = [
        model.NewRecipient(f"{name}@dest.test", "remote", "remote", NOW, expires_at=NOW + 10**9)
        for name in ("r1", "r2")
    ]
    message_id = await queue.enqueue(new, recipients)
    notices = WorkerDeliversFirst(queue, registry)
    woken: list[bool] = []
    methods = api_queue.QueuedMessages(
        queue, notices=notices, wake=lambda: woken.append(True), clock=lambda: NOW
    )

    result = await methods.set({"update": {message_id: {"action": "cancel"}}}, ADMIN)

    assert isinstance(result, dict) and result["notUpdated"] is None, result
    r1, r2 = result["updated"][message_id]["recipients"]
    assert (r1["status"], r2["status"]) == ("delivered", "cancelled")
    assert notices.builds == 2 and woken
    [dsn] = await queue.list_messages(sender="")
    body = await queue.load_body(dsn.id)
    assert b"r2@dest.test" in body and b"r1@dest.test" not in body
    assert [r.address for r in dsn.recipients] == ["alice@origin.test"]
    assert dsn.recipients[0].queue == "dsn"  # placed by the schedule expression, like any DSN
