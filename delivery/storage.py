"""Every store of one daemon, opened from ``[store] url``: the registry, the queue, the TLS reports.

`open_stores(settings)` is an async context manager yielding `Stores`. All three keep their
tables in the one database the URL names, each under its own prefix (``registry_``,
``queue_``, ``tlsrpt_``), and each migrates its tables at open (`delivery.migrations`):

    sqlite:///var/lib/delivery/delivery.db     one file on a local disk (the default): one node
    postgresql://user@db.example/delivery      PostgreSQL: one node or several sharing the
                                               database (``?search_path=schema`` for a schema)

Outcomes:
    `Stores` with every store open; on leaving the block they are closed in reverse order
    (the TLS reports write what they buffered first). A URL that is not one of the above is a
    ConfigError naming ``store.url``; a database that cannot be opened or migrated raises the
    store's error (registry StoreError, queue StoreError, TlsRptStoreError), after closing the
    stores already open. Nothing is left open when opening fails.

Security: the PostgreSQL password never appears in an error or log line (`delivery.pg`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from delivery import config, pg
from delivery.errors import ConfigError
from delivery.policy import tlsrpt_store
from delivery.queue import postgres as queue_postgres
from delivery.queue import sqlite as queue_sqlite
from delivery.queue import store as queue_store
from delivery.registry.service import Registry

__all__ = ["Stores", "open_stores"]


@dataclass(frozen=True, slots=True)
class Stores:
    """The open stores of one daemon (or command)."""

    registry: Registry
    queue: queue_store.QueueStore
    tlsrpt: tlsrpt_store.TlsRptStore | None
    """None when TLS reports are off (``[tlsrpt] enabled = false``, or not asked for)."""


@contextlib.asynccontextmanager
async def open_stores(
    settings: config.Settings, /, *, reports: bool | None = None
) -> AsyncIterator[Stores]:
    """open_stores - the registry, the queue and the TLS-RPT store on ``[store] url``.

    :param reports: open the TLS-RPT store; None: when ``[tlsrpt] enabled`` (``delivery send``
        passes False: it records no TLS sessions).
    :raises ConfigError: ``store.url`` names no database these stores can use.
    :raises DeliveryError: a store cannot be opened (see Outcomes).
    """
    url = settings.store.url
    if not (url.startswith(config.SQLITE_SCHEME) or pg.is_postgres_url(url)):
        raise ConfigError(
            "store.url", f"{pg.describe(url)!r} is neither sqlite:///path nor postgresql://..."
        )
    with_reports = settings.tlsrpt.enabled if reports is None else reports
    async with contextlib.AsyncExitStack() as stack:
        registry = await Registry.open(url)
        stack.push_async_callback(registry.close)
        queue = await _open_queue(url)
        stack.push_async_callback(queue.close)
        reports_store = None
        if with_reports:
            reports_store = await tlsrpt_store.TlsRptStore.open_url(url)
            stack.push_async_callback(reports_store.close)
        yield Stores(registry, queue, reports_store)


async def _open_queue(url: str) -> queue_store.QueueStore:
    if pg.is_postgres_url(url):
        return await queue_postgres.PostgresQueueStore.open(url)
    return await queue_sqlite.SqliteQueueStore.open(config.sqlite_path(url))
