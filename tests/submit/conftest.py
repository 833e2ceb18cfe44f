"""Submission fixtures: a real listener over a real SQLite queue store, on loopback.

    listener = await make_listener(max_recipients=2)   # started; stopped after the test
    host, port = listener.address

Each listener listens on a fresh loopback address (the harness pool) and port 0; clients bind
``client_ip``, another fresh address, so the received-from address is known. The planner is
`plan_remote`: every recipient in queue and schedule ``remote``, expiring after three days
(the planning over the registry is tested on its own). ``enqueued`` counts the listener's
``on_enqueued`` calls; ``gated_store`` is the real store with a gate before each enqueue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from delivery.harness import certs, loopback
from delivery.queue import model
from delivery.queue.sqlite import SqliteQueueStore
from delivery.queue.store import StoreError
from delivery.submit.listener import SubmissionListener
from delivery.submit.message import RecipientRequest

HOSTNAME = "mta.submit.test"
DAY_MS = 86_400_000

MakeListener = Callable[..., Awaitable[SubmissionListener]]


async def plan_remote(
    message: model.NewMessage, requests: Sequence[RecipientRequest], /
) -> list[model.NewRecipient]:
    """Every recipient in the remote queue, due now, expiring after three days."""
    return [
        model.NewRecipient(
            address=r.address,
            queue="remote",
            schedule="remote",
            due=message.received_at,
            notify=r.notify,
            orcpt=r.orcpt,
            expires_at=message.received_at + 3 * DAY_MS,
        )
        for r in requests
    ]


class GatedStore(SqliteQueueStore):
    """The SQLite store, whose enqueue first waits for ``gate`` and may fail on purpose."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.entered = asyncio.Event()  # an enqueue has started
        self.gate = asyncio.Event()  # enqueues go on once set
        self.gate.set()
        self.failure: StoreError | None = None  # raised instead of writing, when set

    async def enqueue(
        self, message: model.NewMessage, recipients: Sequence[model.NewRecipient], /
    ) -> str:
        self.entered.set()
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return await super().enqueue(message, recipients)


@pytest.fixture
async def gated_store(tmp_path: Path) -> AsyncIterator[GatedStore]:
    """The queue store of the test (see `GatedStore`)."""
    store = await GatedStore.open(tmp_path / "queue" / "delivery.db")
    assert isinstance(store, GatedStore)
    yield store
    await store.close()


@pytest.fixture
def enqueued() -> list[int]:
    """One entry per ``on_enqueued`` call of the test's listeners."""
    return []


@pytest.fixture
def client_ip(harness_pool: loopback.LoopbackPool) -> str:
    """A loopback address for clients to connect from."""
    return harness_pool.take()


@pytest.fixture
async def make_listener(
    gated_store: GatedStore, harness_pool: loopback.LoopbackPool, enqueued: list[int]
) -> AsyncIterator[MakeListener]:
    """A factory of started listeners on fresh addresses (options go to the listener)."""
    started: list[SubmissionListener] = []

    async def make(**options: Any) -> SubmissionListener:
        options.setdefault("hostname", HOSTNAME)
        options.setdefault("host", harness_pool.take())
        options.setdefault("networks", ["127.0.0.0/8"])
        options.setdefault("idle_timeout_s", 5.0)
        options.setdefault("auth_failure_delay_s", 0.01)
        options.setdefault("stop_grace_s", 2.0)
        options.setdefault("on_enqueued", lambda: enqueued.append(1))
        plan = options.pop("plan", plan_remote)
        listener = SubmissionListener(gated_store, plan, **options)
        await listener.start()
        started.append(listener)
        return listener

    try:
        yield make
    finally:
        for listener in reversed(started):
            await listener.stop()


@pytest.fixture
def tls_files(harness_certs: certs.CertFactory, tmp_path: Path) -> tuple[Path, Path]:
    """A certificate (full chain) and key for HOSTNAME from the harness CA."""
    files = harness_certs.credential(HOSTNAME, "valid").write(tmp_path / "tls", "submit")
    return files.fullchain, files.key
