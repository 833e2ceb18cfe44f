"""delivery's side of bench.throughput: the worker in a process of its own, queued, then released.

    python -m bench.throughput_kit.delivery_runner --workdir DIR --dns HOST:PORT --port PORT
        --count N [--ca-file PEM] [--profile FILE] [--timeout S]

The process builds what `delivery serve` runs (`engine.worker.build_worker` over a SQLite
queue and registry in DIR, first-start objects, settings pointing at the benchmark's DNS
server and sink port, logging at INFO to standard error as `serve` does), queues the batch
(`throughput_kit.batch`) through `engine.intake.plan_recipients` and `enqueue_many` with the
worker not started, then tells its parent on standard output and waits. On ``go`` (a line on
standard input) it starts the worker and waits until every recipient's outcome is recorded.

Protocol: one JSON object per line on standard output: ``{"ready": {...}}`` when queued,
``{"done": {...}}`` at the end (CPU seconds of this process and of each of its threads since
``go``, recipients per final status, store calls with their wall time, DNS cache figures, an
example of each non-delivered reason). With ``--profile`` the main thread runs under cProfile
from ``go`` until done and the stats are written to FILE (pstats format).

Outcomes: exit 0 when the protocol completed (whatever was delivered); 1 on a setup error.
Security: loopback only: the DNS server and sink the parent gives.
Limits: cProfile sees only the main thread (the event loop); the SQLite store runs its
statements on a thread of its own, whose CPU is reported per thread instead.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from bench.throughput_kit import batch, procs
from delivery import config, expr
from delivery.engine import attempt, eventloop, intake
from delivery.engine import worker as engine_worker
from delivery.queue import model
from delivery.queue import store as queue_store
from delivery.queue.sqlite import SqliteQueueStore
from delivery.registry.service import Registry

__all__ = ["FILL_CHUNK", "HOSTNAME", "CountingStore", "main"]

HOSTNAME = "delivery.bench.test"
FILL_CHUNK = 500
"""Messages per enqueue_many while queueing the batch (not timed)."""
OWNER = "bench"
REASON_EXAMPLES = 5
"""Distinct reasons of non-delivered outcomes reported (the worker keeps the recent ones)."""


class TimedLock(asyncio.Lock):
    """An asyncio.Lock that adds up how long it was held, and how often."""

    def __init__(self) -> None:
        super().__init__()
        self.held_s, self.holds, self._since = 0.0, 0, 0.0

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        self._since = time.perf_counter()
        return True

    def release(self) -> None:
        self.held_s += time.perf_counter() - self._since
        self.holds += 1
        super().release()


class CountingStore(SqliteQueueStore):
    """The SQLite queue, counting the worker's calls and the wall time each took (lock wait
    and commit included): how the store shares the run's time, without touching its code."""

    def __init__(self, db: aiosqlite.Connection, path: Path, /) -> None:
        super().__init__(db, path)
        self.calls: collections.Counter[str] = collections.Counter()
        self.wall_s: collections.defaultdict[str, float] = collections.defaultdict(float)
        # The store runs one transaction at a time under its lock: timing the lock shows how
        # busy that one lane is. A private attribute: if it is renamed, nothing is timed.
        self.lock: TimedLock | None = None
        if isinstance(getattr(self, "_lock", None), asyncio.Lock):
            self.lock = self._lock = TimedLock()

    def _note(self, name: str, started: float) -> None:
        self.calls[name] += 1
        self.wall_s[name] += time.perf_counter() - started

    # The wrappers pass every argument through untouched, so that they keep working while
    # the store's signatures evolve.

    async def lease_due(self, *args: Any, **kwargs: Any) -> list[model.Lease]:
        started = time.perf_counter()
        try:
            return await super().lease_due(*args, **kwargs)
        finally:
            self._note("lease_due", started)

    async def record(self, *args: Any, **kwargs: Any) -> queue_store.Recorded:
        started = time.perf_counter()
        try:
            return await super().record(*args, **kwargs)
        finally:
            self._note("record", started)

    async def load_body(self, *args: Any, **kwargs: Any) -> bytes:
        started = time.perf_counter()
        try:
            return await super().load_body(*args, **kwargs)
        finally:
            self._note("load_body", started)

    async def due_soonest(self, *args: Any, **kwargs: Any) -> int | None:
        started = time.perf_counter()
        try:
            return await super().due_soonest(*args, **kwargs)
        finally:
            self._note("due_soonest", started)


def _emit(kind: str, payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({kind: payload}) + "\n")
    sys.stdout.flush()


async def _fill(
    registry: Registry,
    store: SqliteQueueStore,
    worker: engine_worker.Worker,
    settings: config.Settings,
    count: int,
) -> None:
    """Queue the batch as a submitter would: schedule from the `schedule` expression."""
    env = expr.Environment(local_domains=frozenset(settings.local.domains))
    lookup = attempt.make_lookup(worker.resolver)
    for first in range(0, count, FILL_CHUNK):
        entries: list[queue_store.NewEntry] = []
        now = model.now_ms()
        for n in range(first, min(count, first + FILL_CHUNK)):
            message = model.NewMessage(
                sender=batch.SENDER,
                body=batch.content(n),
                source=model.MessageSource.AUTHENTICATED,
                received_at=now,
            )
            recipients = await intake.plan_recipients(
                registry.snapshot(),
                message,
                [intake.RecipientRequest(batch.recipient(n))],
                env=env,
                lookup=lookup,
                now=now,
            )
            entries.append((message, recipients))
        await store.enqueue_many(entries)


async def _wait_for_go() -> None:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if line.strip() != "go":
        raise SystemExit(f"expected 'go' on standard input, got {line!r}")


async def run(args: argparse.Namespace) -> None:
    """Queue, wait for go, deliver, report (see the module docstring)."""
    folder = Path(args.workdir)
    settings = config.Settings.model_validate(
        {
            "hostname": HOSTNAME,
            "store": {"url": f"sqlite://{folder / 'delivery.db'}"},
            "dns": {"nameservers": [args.dns]},
            "smtp": {"port": args.port},
            "tls": {"ca_file": args.ca_file},
        }
    )
    registry = await Registry.open(settings.store.url)
    store = await CountingStore.open(config.sqlite_path(settings.store.url))
    assert isinstance(store, CountingStore)  # `open` makes an instance of the class it is on
    try:
        started = time.perf_counter()
        worker = engine_worker.build_worker(settings, registry, store, owner=OWNER)
        await _fill(registry, store, worker, settings, args.count)
        _emit("ready", {"fill_s": time.perf_counter() - started})
        await _wait_for_go()

        profiler = cProfile.Profile() if args.profile else None
        usage0, threads0 = resource.getrusage(resource.RUSAGE_SELF), procs.thread_cpu()
        store.calls.clear()
        store.wall_s.clear()
        if store.lock is not None:
            store.lock.held_s, store.lock.holds = 0.0, 0
        released = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        await worker.start()
        complete = True
        try:
            await worker.wait_settled(args.count, timeout_s=args.timeout)
        except TimeoutError:
            complete = False
        if profiler is not None:
            profiler.disable()
        settled_s = time.perf_counter() - released
        lock = store.lock
        lock_figures = None if lock is None else {"held_s": lock.held_s, "holds": lock.holds}
        calls, wall_s = dict(store.calls), dict(store.wall_s)
        usage1, threads1 = resource.getrusage(resource.RUSAGE_SELF), procs.thread_cpu()
        settled = worker.settled_total
        reasons = collections.Counter(
            s.outcome.reason for s in worker.settled if s.outcome.action != "delivered"
        )
        cache = worker.resolver.cache
        dns_cache = {"hits": cache.hits, "misses": cache.misses}
        await worker.stop()
        if profiler is not None:
            profiler.dump_stats(args.profile)
        statuses = await store.count_by_status()
    finally:
        await store.close()
        await registry.close()
    before = {t.tid: t.cpu_s for t in threads0}
    threads = [
        {"main": t.tid == os.getpid(), "name": t.name, "cpu_s": t.cpu_s - before.get(t.tid, 0.0)}
        for t in threads1
    ]
    _emit(
        "done",
        {
            "complete": complete,
            "loop": eventloop.loop_name(),
            "settled": settled,
            "settled_s": settled_s,
            "cpu_s": (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime),
            "threads": threads,
            "statuses": {status.value: n for status, n in statuses.items()},
            "store_calls": calls,
            "store_wall_s": wall_s,
            "store_lock": lock_figures,
            "dns_cache": dns_cache,
            "reasons": [reason for reason, _ in reasons.most_common(REASON_EXAMPLES)],
        },
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments and run (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="folder for the queue and registry")
    parser.add_argument("--dns", required=True, help="the DNS server, HOST:PORT")
    parser.add_argument("--port", type=int, required=True, help="the sink's port ([smtp] port)")
    parser.add_argument("--count", type=int, required=True, help="messages to queue")
    parser.add_argument("--ca-file", help="PEM file of the harness CA ([tls] ca_file)")
    parser.add_argument("--profile", help="write cProfile stats of the delivery here")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for every outcome"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(  # as `delivery serve` does
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    eventloop.run(run(args))


if __name__ == "__main__":
    main()
