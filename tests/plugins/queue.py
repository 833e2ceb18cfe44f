"""Queue store fixtures: one store suite runs over every store (STYLE §13).

``store_opener`` opens stores on one fresh database (call it twice for two
connections, as two nodes would have, or again after closing to test durability);
``store`` is one such store. Both are parametrized over `STORE_KINDS`; the
PostgreSQL store joins the list when it exists. ``make_message`` and
``make_recipient`` build valid envelopes with overridable defaults.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from delivery.queue import model
from delivery.queue.sqlite import SqliteQueueStore
from delivery.queue.store import QueueStore

__all__ = ["T0", "make_message", "make_recipient", "store", "store_opener"]

T0 = 1_700_000_000_000
"""A fixed 'now' (epoch ms) for store tests."""

STORE_KINDS = ["sqlite"]

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

    async def open_store() -> QueueStore:
        assert request.param == "sqlite"
        store = await SqliteQueueStore.open(tmp_path / "queue" / "delivery.db")
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        await store.close()


@pytest.fixture
async def store(store_opener: StoreOpener) -> QueueStore:
    """A queue store on a fresh database."""
    return await store_opener()
