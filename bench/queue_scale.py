"""Queue cost against queue size: leasing and recording stay flat as the queue grows.

    python -m bench.queue_scale [--quick] [--store postgresql://user@host/database]

For each size (10,000 / 100,000 / 1,000,000 queued messages; ``--quick``: 1,000 and
10,000) it fills a fresh queue and reopens it: SQLite in a temporary folder, or with
``--store`` a new schema in that PostgreSQL database (dropped afterwards; the role must
be allowed to create schemas). Half of the
recipients due (spread over the last hour), half deferred into the next three days, like
a queue after an outage. Then it times what the worker does in a loop: lease a batch of
`BATCH` due recipients and record their outcomes (7 in 10 delivered, the rest deferred),
plus one enqueue (a durable commit) and ``due_soonest``. It prints the per-batch cost,
the process's resident memory and the file size side by side for every size, so one can
see the hot path does not grow with the queue; ``count_by_status`` (a full count, for
metrics) is printed as the one figure that does; "data MiB" is the file and its WAL, or
the tables and indexes. It never fails on a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import random
import resource
import secrets
import statistics
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from delivery.errors import LastError
from delivery.queue import model
from delivery.queue.postgres import PostgresQueueStore
from delivery.queue.sqlite import SqliteQueueStore
from delivery.queue.store import QueueStore

BATCH = 100
"""Recipients per lease, a worker's typical batch."""
LOAD_CHUNK = 5_000
"""Messages per enqueue_many while filling the queue."""
ROUNDS = 40
"""Lease-and-record rounds timed per size."""
SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)
BODY = b"From: bench@example.org\r\nTo: rcpt@example.com\r\nSubject: bench\r\n\r\n" + b"x" * 200
HOUR, DAY = 3_600_000, 86_400_000


def rss_mib() -> float:
    """Resident memory now (Linux), else the peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def timed(call: Callable[[], Coroutine[Any, Any, Any]], times: int) -> float:
    """Median wall time of ``times`` calls, in ms."""
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def fill(store: QueueStore, size: int, now: int, rng: random.Random) -> float:
    """Queue ``size`` one-recipient messages; return messages per second."""
    started = time.perf_counter()
    for first in range(0, size, LOAD_CHUNK):
        entries = []
        for n in range(first, min(size, first + LOAD_CHUNK)):
            due = now - rng.randrange(HOUR) if n % 2 else now + rng.randrange(3 * DAY)
            message = model.NewMessage(
                sender="bench@example.org",
                body=BODY,
                source=model.MessageSource.AUTHENTICATED,
                received_at=due - HOUR,
            )
            recipient = model.NewRecipient(
                address=f"r{n}@d{n % 5000}.example",
                queue="remote",
                schedule="remote",
                due=due,
                expires_at=due + 3 * DAY,
            )
            entries.append((message, [recipient]))
        await store.enqueue_many(entries)
    return size / (time.perf_counter() - started)


def outcomes(
    leases: list[model.Lease], now: int, rng: random.Random
) -> list[model.RecipientUpdate]:
    updates = []
    for lease in leases:
        for rcpt in lease.recipients:
            update = model.RecipientUpdate.unchanged(lease, rcpt)
            if rng.random() < 0.7:
                update = dataclasses.replace(
                    update, status=model.RecipientStatus.DELIVERED, last_status="250 ok"
                )
            else:
                update = dataclasses.replace(
                    update,
                    due=now + rng.randrange(HOUR, DAY),
                    retry_num=rcpt.retry_num + 1,
                    last_error=LastError.CONNECTION,
                    last_status="connection refused",
                )
            updates.append(update)
    return updates


def rounds(size: int) -> int:
    """Timed rounds: ROUNDS, or fewer when fewer batches are due."""
    return max(1, min(ROUNDS, size // 2 // BATCH))


class Database(Protocol):
    """A fresh queue database for one size."""

    async def open(self) -> QueueStore: ...

    async def data_mib(self) -> float: ...


class SqliteDatabase:
    """A queue file in ``folder``; `data_mib` counts the file and its WAL."""

    def __init__(self, folder: Path, size: int) -> None:
        self.folder, self.size = folder, size

    async def open(self) -> QueueStore:
        return await SqliteQueueStore.open(self.folder / f"queue-{self.size}.db")

    async def data_mib(self) -> float:
        return await asyncio.to_thread(file_mib, self.folder, self.size)


class PostgresDatabase:
    """A schema of its own in the database at ``url``; `data_mib` counts tables and indexes."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self) -> QueueStore:
        return await PostgresQueueStore.open(self.url)

    async def data_mib(self) -> float:
        conn = await asyncpg.connect(self.url)
        try:
            total = await conn.fetchval(
                "SELECT SUM(pg_total_relation_size(c.oid)) FROM pg_class c"
                " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
            )
        finally:
            await conn.close()
        return float(total or 0) / 2**20


@contextlib.asynccontextmanager
async def postgres_database(base_url: str, size: int) -> AsyncIterator[PostgresDatabase]:
    """A new schema in the database at ``base_url``, dropped afterwards."""
    schema = f"bench_queue_{size}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(base_url)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            parts = urllib.parse.urlsplit(base_url)
            query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "search_path"]
            query.append(("search_path", schema))
            url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
            yield PostgresDatabase(url)
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()


async def measure(size: int, database: Database) -> dict[str, float]:
    rng = random.Random(size)
    now = model.now_ms()
    filling = await database.open()
    try:
        load_rate = await fill(filling, size, now, rng)
    finally:
        await filling.close()
    # Measure the steady state of a running daemon, not the wake of a bulk load
    # (closing SQLite checkpoints and removes the load's write-ahead log).
    store = await database.open()
    try:
        lease_ms, record_ms = [], []
        for _ in range(rounds(size)):
            started = time.perf_counter()
            leases = await store.lease_due(now=now, owner="bench", lease_ms=60_000, limit=BATCH)
            leased = time.perf_counter()
            await store.record(outcomes(leases, now, rng))
            lease_ms.append((leased - started) * 1000)
            record_ms.append((time.perf_counter() - leased) * 1000)
        enqueue_ms = await timed(
            lambda: store.enqueue(
                model.NewMessage("bench@example.org", BODY, model.MessageSource.DSN, now),
                [
                    model.NewRecipient(
                        "x@example.com", "dsn", "dsn", now + DAY, expires_at=now + 2 * DAY
                    )
                ],
            ),
            20,
        )
        soonest_ms = await timed(store.due_soonest, 20)
        count_ms = await timed(store.count_by_status, 3)
        return {
            "load msg/s": load_rate,
            "lease ms": statistics.median(lease_ms),
            "record ms": statistics.median(record_ms),
            "enqueue ms": enqueue_ms,
            "soonest ms": soonest_ms,
            "count ms": count_ms,
            "rss MiB": rss_mib(),
            "data MiB": await database.data_mib(),
        }
    finally:
        await store.close()


def file_mib(folder: Path, size: int) -> float:
    """Size of the database and its WAL."""
    return sum(path.stat().st_size for path in folder.glob(f"queue-{size}.db*")) / 2**20


COLUMNS = ("lease ms", "record ms", "enqueue ms", "soonest ms", "count ms", "rss MiB", "data MiB")


async def run(sizes: tuple[int, ...], store_url: str | None) -> None:
    where = "SQLite" if store_url is None else "PostgreSQL"
    print(f"{where}; batch = {BATCH} recipients; lease/record: median of up to {ROUNDS} rounds")
    header = " ".join(f"{name:>10}" for name in (*COLUMNS, "load msg/s", "rounds"))
    print(f"{'queued':>10} {header}")
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            if store_url is None:
                figures = await measure(size, SqliteDatabase(Path(folder), size))
                await asyncio.to_thread(remove_files, Path(folder), size)
            else:
                async with postgres_database(store_url, size) as database:
                    figures = await measure(size, database)
            cells = " ".join(f"{figures[name]:>10.2f}" for name in COLUMNS)
            load = f"{figures['load msg/s']:>10,.0f}"
            print(f"{size:>10,} {cells} {load} {rounds(size):>10}", flush=True)


def remove_files(folder: Path, size: int) -> None:
    """Free the disk before the next size."""
    for path in folder.glob(f"queue-{size}.db*"):
        path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 messages only")
    parser.add_argument(
        "--store",
        metavar="URL",
        help="a postgresql:// database to measure instead of SQLite (a schema per size)",
    )
    args = parser.parse_args()
    asyncio.run(run(QUICK_SIZES if args.quick else SIZES, args.store))


if __name__ == "__main__":
    main()
