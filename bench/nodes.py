"""Nodes: messages per second for one, two and three `delivery serve` nodes sharing one
PostgreSQL database, and for one node on SQLite, to the same sink, in one run.

    python -m bench.nodes [--quick] [--count N] [--repeat R] [--postgres URL] [--keep]

On loopback only: N messages (default 5,000, the 2 KB batch of bench.throughput, one recipient
each over ten domains whose MX hosts all point at the sink) are queued straight into the
shared queue, held, while the nodes (``python -m delivery serve``, one process each, default
managed objects, clear text) run; then released at one instant for every node (their due time
set a second ahead, which every node is sleeping towards by then), and each run is timed from
that instant to the moment the sink's counter reaches N. Each configuration gets a fresh
database: a new schema on the PostgreSQL server, a new SQLite file. R repetitions (default 3)
go round the configurations in turn.

Prints every run (msgs/s, time to the last message, time until every outcome was recorded,
the nodes' CPU seconds) and per configuration the median msgs/s and its ratio to one node on
PostgreSQL.

The sink is Postfix's `smtp-sink` when installed (bench.throughput's), else a harness receiver
in this process (slower: it may then be what is measured, and the output says so). The server
is ``--postgres``, else ``DELIVERY_TEST_POSTGRES_URL``, else the machine's
``postgresql://postgres@127.0.0.1:5432/test``; without one reachable, only SQLite is measured
and the output says so. ``--quick``: 200 messages, one repetition: well under a minute, as CI
runs it. It never fails on a figure: a run that does not finish within its deadline is
reported with the number of messages the sink got.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import aiosqlite
import asyncpg

from bench.throughput_kit import batch, procs, sink
from delivery import config as delivery_config
from delivery import pg, storage
from delivery.harness import dns_server, loopback, smtp_server
from delivery.queue import model

COUNT = 5_000
QUICK_COUNT = 200
REPEAT = 3
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
LOOPBACK_BLOCKS = range(200, 255)
"""Second octets of the loopback addresses the benchmark binds (127.200-254.x.y): away from
the test suite's blocks, as bench.throughput."""
FILL_CHUNK = 500
"""Messages per enqueue_many while queueing (not timed)."""
HELD_FOR_MS = 3_600_000
"""Messages are queued due an hour ahead, so that no node starts before the release."""
RELEASE_AHEAD_MS = 1200
"""The release makes everything due this far ahead: every node polls the queue at least once
a second (worker.DEFAULT_POLL_INTERVAL_MS), sees the new due time and sleeps exactly until
it, so all nodes start at one instant, which is when the clock starts."""
START_TIMEOUT_S = 60.0
"""How long a node may take to print its listening line (a cold interpreter on a busy box)."""
MIN_RATE_MSGS_PER_S = 20
"""A run gets N / this many seconds (at least `MIN_DEADLINE_S`) before it is cut off: far below
any configuration, so only a stuck run is cut, and the benchmark always ends."""
MIN_DEADLINE_S = 30.0
POSTGRES_PROBE_S = 5.0

Store = Literal["postgresql", "sqlite"]
CONFIGURATIONS: tuple[tuple[Store, int], ...] = (
    ("postgresql", 1),
    ("postgresql", 2),
    ("postgresql", 3),
    ("sqlite", 1),
)
_LISTENING = re.compile(r"listening on (http://\S+)")


def _say(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


class Sink(Protocol):
    """Where every node delivers; counts what it accepted."""

    address: tuple[str, int]
    description: str

    def accepted(self) -> int:
        """Messages accepted since the sink started."""
        ...

    async def wait_for(self, messages: int, /, *, timeout_s: float) -> float | None:
        """perf_counter time at which ``messages`` were accepted in all; None: not in time."""
        ...


class SmtpSinkCounter:
    """Postfix's smtp-sink (bench.throughput_kit.sink)."""

    description = "Postfix smtp-sink"

    def __init__(self, running: sink.SmtpSink) -> None:
        self._sink = running
        self.address = (running.host, running.port)

    def accepted(self) -> int:
        return self._sink.counters.messages

    async def wait_for(self, messages: int, /, *, timeout_s: float) -> float | None:
        return await self._sink.wait_for(messages, timeout_s=timeout_s)


class ReceiverCounter:
    """A harness receiver in this process, when smtp-sink is not installed."""

    description = "harness receiver in the benchmark process (smtp-sink not installed)"

    def __init__(self, receiver: smtp_server.SmtpReceiver) -> None:
        self._receiver = receiver
        self.address = receiver.address

    def accepted(self) -> int:
        return len(self._receiver.received)

    async def wait_for(self, messages: int, /, *, timeout_s: float) -> float | None:
        try:
            await self._receiver.wait_for_messages(messages, within=timeout_s)
        except TimeoutError:
            return None
        self._receiver.received.clear()  # the bodies are not needed: keep memory flat
        self._receiver.sessions.clear()
        return time.perf_counter()


@dataclass(frozen=True, slots=True)
class Run:
    """One timed run of one configuration."""

    store: Store
    nodes: int
    count: int
    seconds: float | None
    """From the release to the sink's last message; None: not all arrived in time."""
    done_s: float | None
    """From the release until no recipient was left scheduled."""
    accepted: int
    cpu_s: float
    """CPU of every node process from the release to done."""

    @property
    def msgs_per_s(self) -> float | None:
        return self.count / self.seconds if self.seconds else None

    @property
    def label(self) -> str:
        return f"{self.store} x{self.nodes}"


@contextlib.asynccontextmanager
async def running_sink(pool: loopback.LoopbackPool) -> AsyncIterator[Sink]:
    """smtp-sink on a free loopback address, else a harness receiver."""
    host, bound = pool.bind(0)
    port: int = bound.getsockname()[1]
    bound.close()
    if shutil.which("smtp-sink"):
        async with sink.SmtpSink(host, port) as running:
            yield SmtpSinkCounter(running)
        return
    receiver = smtp_server.SmtpReceiver("sink.bench.test", host=host, port=port)
    async with receiver:
        yield ReceiverCounter(receiver)


def zones(address: str, /) -> list[dns_server.ZoneSpec]:
    """The batch's ten domains, each with its own MX host, every one at ``address``."""
    return [
        dns_server.ZoneSpec(
            origin=domain,
            records=(
                dns_server.RecordSpec("@", "MX", f"10 {batch.mx_host(domain)}."),
                dns_server.RecordSpec(f"{batch.mx_host(domain)}.", "A", address),
            ),
        )
        for domain in batch.DOMAINS
    ]


async def postgres_available(url: str, /) -> str | None:
    """None when the server at ``url`` answers; else why not."""
    try:
        async with asyncio.timeout(POSTGRES_PROBE_S):
            connection = await asyncpg.connect(url)
        await connection.close()
    except (*pg.DATABASE_ERRORS, ValueError) as exc:
        return f"{pg.describe(url)}: {exc}"
    return None


@contextlib.asynccontextmanager
async def fresh_database(store: Store, base_url: str, folder: Path) -> AsyncIterator[str]:
    """A store URL on an empty database: a new schema (dropped after), or a new SQLite file."""
    if store == "sqlite":
        yield f"sqlite://{folder}/delivery.db"
        return
    schema = f"bench_nodes_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(base_url)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        parts = urllib.parse.urlsplit(base_url)
        query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "search_path"]
        query.append(("search_path", schema))
        try:
            yield urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()


@dataclass(frozen=True, slots=True)
class World:
    """What every run shares: the sink, the resolver, the folder."""

    sink: Sink
    dns: tuple[str, int]
    folder: Path
    postgres: str | None


def node_settings(world: World, url: str, folder: Path, index: int) -> Path:
    """The settings file of node ``index``: its own hostname (lease owner) and API port."""
    folder.mkdir(parents=True, exist_ok=True)
    port = world.sink.address[1]  # every MX host's address is the sink's: DNS says so
    with contextlib.closing(loopback.bind_tcp("127.0.0.1", 0)) as probe:
        api_port = probe.getsockname()[1]
    path = folder / "delivery.toml"
    path.write_text(
        f'hostname = "node{index}.bench.test"\n'
        f'[store]\nurl = "{url}"\n'
        f'[api]\nlisten = "127.0.0.1:{api_port}"\n'
        '[submission]\nlisten = "127.0.0.1:0"\n'
        f'[dns]\nnameservers = ["{world.dns[0]}:{world.dns[1]}"]\ndnssec = "off"\n'
        f"[smtp]\nport = {port}\n"
        "[tlsrpt]\nenabled = false\n"
    )
    return path


async def start_node(settings: Path) -> asyncio.subprocess.Process:
    """``delivery serve`` on ``settings``, once it listens; its log beside the settings."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    with (settings.parent / "daemon.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "delivery",
            "serve",
            "--config",
            str(settings),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=environment,
            cwd=settings.parent,
        )
    assert process.stdout is not None
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                log_text = (settings.parent / "daemon.log").read_text()[-2000:]
                raise RuntimeError(f"node {settings.parent.name} did not start:\n{log_text}")
            if _LISTENING.search(line):
                return process


async def stop_node(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, and wait (its stdout is drained so that it never blocks on a full pipe)."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    assert process.stdout is not None
    await process.stdout.read()
    await process.wait()


def _settings(url: str) -> delivery_config.Settings:
    """Settings that name only the store (for opening it from this process)."""
    return delivery_config.Settings.model_validate({"store": {"url": url}})


async def queue_held(url: str, count: int) -> None:
    """Queue the batch, due an hour ahead (held until `release`)."""
    now = model.now_ms()
    async with storage.open_stores(_settings(url), reports=False) as stores:
        for start in range(0, count, FILL_CHUNK):
            entries = [
                (
                    model.NewMessage(
                        sender=batch.SENDER,
                        body=batch.content(n),
                        source=model.MessageSource.AUTHENTICATED,
                        received_at=now,
                    ),
                    [
                        model.NewRecipient(
                            batch.recipient(n),
                            queue="remote",
                            schedule="remote",
                            due=now + HELD_FOR_MS,
                            expires_at=now + 86_400_000,
                        )
                    ],
                )
                for n in range(start, min(count, start + FILL_CHUNK))
            ]
            await stores.queue.enqueue_many(entries)


async def release(url: str) -> float:
    """Make every held recipient due `RELEASE_AHEAD_MS` from now; the perf_counter time then."""
    due = model.now_ms() + RELEASE_AHEAD_MS
    statement = "UPDATE queue_recipients SET due = :due WHERE status = 'scheduled'"
    if pg.is_postgres_url(url):
        connection = await asyncpg.connect(url)
        try:
            query, names = pg.statement(statement)
            await connection.execute(query, *pg.arguments(names, {"due": due}))
        finally:
            await connection.close()
    else:
        async with aiosqlite.connect(delivery_config.sqlite_path(url)) as db:
            await db.execute(statement, {"due": due})
            await db.commit()
    return time.perf_counter() + (due - model.now_ms()) / 1000


async def drained(url: str, *, deadline: float) -> float | None:
    """perf_counter time once no recipient is left scheduled; None past ``deadline``."""
    async with storage.open_stores(_settings(url), reports=False) as stores:
        while time.perf_counter() < deadline:
            counts = await stores.queue.count_by_status()
            if counts[model.RecipientStatus.SCHEDULED] == 0:
                return time.perf_counter()
            await asyncio.sleep(0.1)
    return None


async def run_once(world: World, store: Store, nodes: int, count: int, name: str) -> Run:
    """One timed run: fresh database, nodes started, batch held, released, clocked."""
    folder = world.folder / name
    base = world.postgres or ""
    async with fresh_database(store, base, folder) as url:
        await queue_held(url, count)  # first: the nodes then start on an initialised database
        processes = []
        try:
            for index in range(1, nodes + 1):
                settings = node_settings(world, url, folder / f"node{index}", index)
                processes.append(await start_node(settings))
            before = world.sink.accepted()
            target = before + count
            cpu_before = sum(procs.tree_cpu_s(p.pid) for p in processes)
            released = await release(url)
            deadline_s = max(MIN_DEADLINE_S, count / MIN_RATE_MSGS_PER_S)
            last = await world.sink.wait_for(target, timeout_s=deadline_s)
            done = await drained(url, deadline=released + deadline_s)
            cpu = sum(procs.tree_cpu_s(p.pid) for p in processes) - cpu_before
            accepted = world.sink.accepted() - before
        finally:
            for process in processes:
                await stop_node(process)
    return Run(
        store,
        nodes,
        count,
        last - released if last is not None else None,
        done - released if done is not None else None,
        accepted,
        cpu,
    )


def run_line(rep: int, run: Run) -> str:
    """One run, as a row of the table."""
    rate = f"{run.msgs_per_s:8.0f}" if run.msgs_per_s is not None else "       -"
    last = f"{run.seconds:8.2f}" if run.seconds is not None else "       -"
    done = f"{run.done_s:8.2f}" if run.done_s is not None else "       -"
    row = (
        f"  {rep:>3} {run.label:<14}{rate} {last} {done} {run.cpu_s:8.2f} "
        f"{run.cpu_s / run.count * 1000:8.3f}"
    )
    if run.seconds is None:
        row += f"   INCOMPLETE: {run.accepted} of {run.count} accepted"
    return row


RUN_HEADER = (
    f"  {'run':>3} {'store x nodes':<14}{'msgs/s':>8} {'last 250':>8} {'done':>8} "
    f"{'CPU s':>8} {'CPU ms/m':>8}"
)
RUN_LEGEND = (
    "  last 250: seconds from the release to the sink's last accepted message (msgs/s is N "
    "over it); done: until every outcome was recorded; CPU: every node process's CPU seconds "
    "from the release to done (the database server's is not counted)",
)


def summary_lines(runs: Sequence[Run]) -> list[str]:
    """Median msgs/s per configuration, and its ratio to one node on PostgreSQL."""
    lines = [f"  {'store x nodes':<14}{'median msgs/s':>14} {'vs postgresql x1':>17}"]
    medians: dict[str, float] = {}
    for store, nodes in CONFIGURATIONS:
        mine = [r for r in runs if (r.store, r.nodes) == (store, nodes)]
        rates = [r.msgs_per_s for r in mine if r.msgs_per_s is not None]
        if not mine:
            continue
        label = mine[0].label
        if not rates:
            lines.append(f"  {label:<14}{'no complete run':>14}")
            continue
        medians[label] = statistics.median(rates)
        reference = medians.get("postgresql x1")
        ratio = f"{medians[label] / reference:17.2f}" if reference else f"{'-':>17}"
        lines.append(f"  {label:<14}{medians[label]:14.0f} {ratio}")
    return lines


async def measure(args: argparse.Namespace, folder: Path) -> None:
    """Every configuration, R times, then the table's summary."""
    pool = loopback.LoopbackPool(random.choice(LOOPBACK_BLOCKS), start=random.randrange(200))
    postgres_url = args.postgres or os.environ.get("DELIVERY_TEST_POSTGRES_URL") or DEFAULT_POSTGRES
    problem = await postgres_available(postgres_url)
    configurations = [c for c in CONFIGURATIONS if problem is None or c[0] == "sqlite"]
    async with (
        running_sink(pool) as the_sink,
        dns_server.DnsServer(zones(the_sink.address[0]), host=pool.take()) as dns,
    ):
        world = World(the_sink, dns.address, folder, None if problem else postgres_url)
        _say(
            f"delivery nodes (`delivery serve` processes, default objects, clear text) on "
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
            f"{platform.machine()}",
            f"batch: {args.count} messages of {batch.MESSAGE_BYTES} bytes, one recipient "
            f"each, {batch.DOMAIN_COUNT} domains; sink: {the_sink.description}; "
            f"{args.repeat} repetition(s); work folder {folder}",
            f"PostgreSQL: {pg.describe(postgres_url)}, a fresh schema per run"
            if problem is None
            else f"PostgreSQL not measured ({problem}): SQLite only",
            "",
            RUN_HEADER,
        )
        runs: list[Run] = []
        for rep in range(1, args.repeat + 1):
            for store, nodes in configurations:
                run = await run_once(world, store, nodes, args.count, f"{store}-{nodes}-{rep}")
                runs.append(run)
                _say(run_line(rep, run))
        _say(*RUN_LEGEND, "", *summary_lines(runs))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.nodes", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200 messages, one repetition")
    parser.add_argument("--count", type=int, default=None, help=f"messages (default {COUNT})")
    parser.add_argument("--repeat", type=int, default=None, help=f"repetitions ({REPEAT})")
    parser.add_argument("--postgres", default=None, help="PostgreSQL server URL")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    args.count = args.count or (QUICK_COUNT if args.quick else COUNT)
    args.repeat = args.repeat or (1 if args.quick else REPEAT)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    try:
        asyncio.run(measure(args, folder))
    finally:
        if args.keep:
            _say(f"work folder kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
