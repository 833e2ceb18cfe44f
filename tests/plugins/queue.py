"""Queue store fixtures: one store suite runs over every store (STYLE §13).

``store_opener`` opens stores on one fresh database (call it twice for two
connections, or two pools, as two nodes would have; or again after closing to test
durability); ``store`` is one such store. Both are parametrized over `STORE_KINDS`:
SQLite in a temporary folder, and PostgreSQL in a fresh schema on the server
``DELIVERY_TEST_POSTGRES_URL`` names (`tests.plugins.postgres`), dropped after the test, so
that parallel tests never see each other's tables. Without that variable the
PostgreSQL cases fail, saying so: CI sets it, and a skipped store is an untested one.
``make_message`` and ``make_recipient`` build valid envelopes with overridable
defaults.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from delivery.queue import model
from delivery.queue.postgres import PostgresQueueStore
from delivery.queue.sqlite import SqliteQueueStore
from delivery.queue.store import QueueStore
from tests.plugins.postgres import STORE_KINDS, postgres_schema

__all__ = [
    "T0",
    "StoreOpener",
    "make_message",
    "make_recipient",
    "store",
    "store_opener",
]

T0 = 1_700_000_000_000
"""A fixed 'now' (epoch ms) for store tests."""

StoreOpener = Callable[[], Awaitable[QueueStore]]


def make_message(
    body: bytes = b"Subject: test\r\n\r\nhello\r\n", **fields: Any
) -> model.NewMessage:
    """A valid NewMessage received at T0 from an authenticated client."""
    defaults: dict[str, Any] = {
        "sender": "sender@example.org",
        "source": model.MessageSource.AUTHENTICATED,
        "received_at": T0,
        "received_from_ip": "192.0.2.1",
        "received_via_port": 587,
    }
    return model.NewMessage(body=body, **(defaults | fields))


def make_recipient(address: str = "rcpt@example.com", **fields: Any) -> model.NewRecipient:
    """A valid NewRecipient of the remote queue, due at T0, expiring after three days."""
    defaults: dict[str, Any] = {
        "queue": "remote",
        "schedule": "remote",
        "due": T0,
        "expires_at": T0 + 3 * 86_400_000,
    }
    return model.NewRecipient(address=address, **(defaults | fields))


@pytest.fixture(params=STORE_KINDS)
async def store_opener(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreOpener]:
    """Open stores on one fresh database; every store opened is closed at teardown."""
    opened: list[QueueStore] = []
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "postgresql":
            url = await stack.enter_async_context(postgres_schema())

            async def open_store() -> QueueStore:
                store = await PostgresQueueStore.open(url)
                opened.append(store)
                return store

        else:

            async def open_store() -> QueueStore:
                store = await SqliteQueueStore.open(tmp_path / "queue" / "delivery.db")
                opened.append(store)
                return store

        try:
            yield open_store
        finally:
            for store in opened:
                await store.close()


@pytest.fixture
async def store(store_opener: StoreOpener) -> QueueStore:
    """A queue store on a fresh database."""
    return await store_opener()
