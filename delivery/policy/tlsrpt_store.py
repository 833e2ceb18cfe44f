"""Durable daily TLS-RPT aggregates (RFC 8460) in the queue's database: SQLite or PostgreSQL.

The engine calls `TlsRptStore.record` once per TLS session attempt; the results are counted
per (policy domain, UTC day, policy) and per failure detail, and written in batches. The daily
run (`delivery.policy.tlsrpt_send.run_daily`) reads finished days with `days_ready` and
`aggregates`, keeps one report id per (domain, day) with `begin_report`, and marks each rua
with `mark_sent` once it has the report, so that a report goes once to each rua, across
restarts too; `mark_done` closes a (domain, day); `purge` forgets old days.

Tables (prefix ``tlsrpt_``, next to the queue's ``queue_*`` and the registry's tables), written
once for both databases (`steps`; the few DDL differences are `tlsrpt_db.Dialect`'s) and
migrated by `delivery.migrations` (component ``tlsrpt``):
    tlsrpt_policies   (domain, day, policy) -> successful and failed session counts
    tlsrpt_failures   (policy row, failure detail) -> failed session count
    tlsrpt_reports    (domain, day) -> report id, first attempt, done time
    tlsrpt_sent       (domain, day, rua) -> when the rua got the report
    tlsrpt_meta       key -> value: release 1's schema version; who runs the reports now

Several nodes (PostgreSQL): every node records into the same tables (the upserts add counts
atomically, in one order, so concurrent writers never deadlock), so a report covers the
sessions of all nodes. The hourly run is claimed by one node at a time (`claim_daily_run`).

Outcomes:
    `record` never blocks and never raises: it filters (reports are never about the
    delivery of reports: results of messages with source ``report`` are ignored, RFC 8460
    §5.3), counts in memory, and schedules a write. A write that fails is logged and retried
    with the next one; past `TLSRPT_MAX_PENDING_ENTRIES` distinct counts waiting, new results
    are dropped and counted in ``dropped`` (a report undercounts; delivery is never slowed).
    The other methods raise `TlsRptStoreError` when the database fails.

Durability: results are buffered for at most ``flush_interval_ms`` (default
`DEFAULT_FLUSH_INTERVAL_MS`), then committed (SQLite: ``synchronous=NORMAL``, WAL): a commit
survives a crash of the process; on SQLite a power loss may lose the last commits, never
corrupt the file. Statistics do not justify an fsync per batch. So a crash loses at most the last
interval of counts, and a lost ``tlsrpt_sent`` mark sends a report a second time, with the
same report id, which receivers deduplicate (RFC 8460 §5.3).

Security: stored text is what `tlsrpt` already cleaned and capped; every value is a bound
parameter, no SQL is built from data.

Cost: `record` is a few dictionary updates (measured: under 2 µs a result); a write is one
transaction of one upsert per distinct (domain, day, policy) and per distinct failure
detail, whatever the number of sessions: thousands of sessions a second to hundreds of
domains cost one small transaction a second.

Standards: RFC 8460 §4 (what is counted), §5.3 (report sessions excluded), §5.5 (retries).
Limits: one connection per store on SQLite (the file must be on a local disk);
`tlsrpt_db.POOL_MAX_CONNECTIONS` on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import date
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import aiosqlite

from delivery import config, migrations, pg
from delivery.errors import DeliveryError
from delivery.policy import tlsrpt, tlsrpt_db
from delivery.queue import model

__all__ = [
    "BASELINE_TABLE",
    "BUSY_TIMEOUT_MS",
    "COMPONENT",
    "DAILY_RUN_CLAIM_MS",
    "DEFAULT_FLUSH_INTERVAL_MS",
    "FLUSH_BATCH_ENTRIES",
    "SCHEMA_VERSION",
    "TLSRPT_MAX_PENDING_ENTRIES",
    "ReportState",
    "TlsRptStore",
    "TlsRptStoreError",
    "steps",
]

log = logging.getLogger("delivery.policy.tlsrpt")

BUSY_TIMEOUT_MS: Final = 30_000
"""How long a write waits for another connection on the file (the queue, the registry) to
release the write lock, as the queue store does."""

DEFAULT_FLUSH_INTERVAL_MS: Final = 1000
"""How long results wait in memory before they are written: one transaction a second at
most, whatever the session rate; also the most a crash can lose."""

FLUSH_BATCH_ENTRIES: Final = 5000
"""Distinct counts (policy rows plus failure-detail rows) that start a write at once, without
waiting for the interval: bounds the size of one transaction when sessions to many domains
fail in many ways at once."""

TLSRPT_MAX_PENDING_ENTRIES: Final = 100_000
"""Most distinct counts held while writes fail (locked or full database), some tens of MB.
Identical sessions share one count, so this is many minutes of a busy server. Past it, new
results are dropped and counted in ``dropped``: TLS reports are statistics, and neither
memory nor delivery may suffer for them."""

DAILY_RUN_CLAIM_MS: Final = 50 * 60_000
"""How long a node that claimed the hourly report run holds it (`claim_daily_run`): less than
the hour between runs, so that the next run is never skipped, and far more than a run takes.
A node that dies mid-run leaves the claim to lapse: the next hour another node runs."""

COMPONENT: Final = "tlsrpt"
"""The component name of these tables in `delivery.migrations`."""
BASELINE_TABLE: Final = "tlsrpt_policies"
"""A table of release 1, which recorded no migration version: its presence means version 1."""


def steps(dialect: tlsrpt_db.Dialect, /) -> tuple[tuple[str, ...], ...]:
    """steps - the migration steps in ``dialect``: ``steps[n - 1]`` brings version n."""
    natural = dialect.without_rowid
    return (
        (  # 1: the tables of release 1
            f"""CREATE TABLE IF NOT EXISTS tlsrpt_policies (
                id {dialect.policy_key},
                domain TEXT NOT NULL,
                day TEXT NOT NULL,
                policy TEXT NOT NULL,
                successes BIGINT NOT NULL DEFAULT 0,
                failures BIGINT NOT NULL DEFAULT 0,
                UNIQUE (domain, day, policy)
            )""",
            "CREATE INDEX IF NOT EXISTS tlsrpt_policies_day ON tlsrpt_policies (day)",
            f"""CREATE TABLE IF NOT EXISTS tlsrpt_failures (
                policy_id BIGINT NOT NULL,
                detail TEXT NOT NULL,
                sessions BIGINT NOT NULL,
                PRIMARY KEY (policy_id, detail)
            ){natural}""",
            f"""CREATE TABLE IF NOT EXISTS tlsrpt_reports (
                domain TEXT NOT NULL,
                day TEXT NOT NULL,
                report_id TEXT NOT NULL,
                first_attempt_at BIGINT NOT NULL,
                done_at BIGINT,
                PRIMARY KEY (domain, day)
            ){natural}""",
            f"""CREATE TABLE IF NOT EXISTS tlsrpt_sent (
                domain TEXT NOT NULL,
                day TEXT NOT NULL,
                rua TEXT NOT NULL,
                sent_at BIGINT NOT NULL,
                PRIMARY KEY (domain, day, rua)
            ){natural}""",
            f"""CREATE TABLE IF NOT EXISTS tlsrpt_meta (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL
            ){natural}""",
        ),
    )


SCHEMA_VERSION: Final = len(steps(tlsrpt_db.SQLITE))

_UPSERT_POLICY: Final = """
    INSERT INTO tlsrpt_policies (domain, day, policy, successes, failures)
    VALUES (:domain, :day, :policy, :successes, :failures)
    ON CONFLICT (domain, day, policy) DO UPDATE SET
        successes = tlsrpt_policies.successes + excluded.successes,
        failures = tlsrpt_policies.failures + excluded.failures
    RETURNING id"""
_UPSERT_FAILURE: Final = """
    INSERT INTO tlsrpt_failures (policy_id, detail, sessions)
    VALUES (:policy_id, :detail, :sessions)
    ON CONFLICT (policy_id, detail) DO UPDATE SET
        sessions = tlsrpt_failures.sessions + excluded.sessions"""
_DAYS_READY: Final = """
    SELECT DISTINCT p.domain, p.day FROM tlsrpt_policies AS p
    LEFT JOIN tlsrpt_reports AS r ON r.domain = p.domain AND r.day = p.day
    WHERE p.day < :before AND r.done_at IS NULL
    ORDER BY p.day, p.domain"""
_POLICIES_OF: Final = """
    SELECT id, policy, successes, failures FROM tlsrpt_policies
    WHERE domain = :domain AND day = :day ORDER BY id"""
_FAILURES_OF: Final = """
    SELECT f.policy_id, f.detail, f.sessions FROM tlsrpt_failures AS f
    JOIN tlsrpt_policies AS p ON p.id = f.policy_id
    WHERE p.domain = :domain AND p.day = :day"""
_REPORT_INSERT: Final = """
    INSERT INTO tlsrpt_reports (domain, day, report_id, first_attempt_at)
    VALUES (:domain, :day, :report_id, :now) ON CONFLICT (domain, day) DO NOTHING"""
_REPORT_GET: Final = """
    SELECT report_id, first_attempt_at, done_at FROM tlsrpt_reports
    WHERE domain = :domain AND day = :day"""
_SENT_OF: Final = "SELECT rua FROM tlsrpt_sent WHERE domain = :domain AND day = :day"
_MARK_SENT: Final = """
    INSERT INTO tlsrpt_sent (domain, day, rua, sent_at) VALUES (:domain, :day, :rua, :now)
    ON CONFLICT (domain, day, rua) DO NOTHING"""
_MARK_DONE: Final = """
    INSERT INTO tlsrpt_reports (domain, day, report_id, first_attempt_at, done_at)
    VALUES (:domain, :day, '', :now, :now)
    ON CONFLICT (domain, day) DO UPDATE SET done_at = excluded.done_at"""
_PURGE_FAILURES: Final = """
    DELETE FROM tlsrpt_failures WHERE policy_id IN
        (SELECT id FROM tlsrpt_policies WHERE day < :before)"""
_PURGE_POLICIES: Final = "DELETE FROM tlsrpt_policies WHERE day < :before"
_PURGE_MARKS: Final = (
    "DELETE FROM tlsrpt_reports WHERE day < :before",
    "DELETE FROM tlsrpt_sent WHERE day < :before",
)
_CLAIM_RUN: Final = """
    INSERT INTO tlsrpt_meta (key, value) VALUES ('daily_run_until', :until)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value
    WHERE CAST(tlsrpt_meta.value AS BIGINT) <= :now
    RETURNING value"""


class TlsRptStoreError(DeliveryError):
    """The TLS-RPT tables could not be read or written; nothing was changed.

    :param operation: the store operation, e.g. ``mark_sent``.
    :param reason: what the database said.
    """

    def __init__(self, operation: str, reason: str, /) -> None:
        super().__init__(operation, reason)
        self.operation, self.reason = operation, reason

    def __str__(self) -> str:
        return f"TLS-RPT store {self.operation}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ReportState:
    """Where the report of one (domain, day) stands.

    :param report_id: the id every copy of this report carries, retries included.
    :param first_attempt_at: epoch ms of the first run that tried to send it.
    :param sent: the ruas (as published) that have it.
    :param done: nothing more will be sent for this (domain, day).
    """

    report_id: str
    first_attempt_at: int
    sent: frozenset[str]
    done: bool


class TlsRptStore:
    """TLS-RPT aggregates in the queue's database (see the module docstring).

    Open it with `TlsRptStore.open_url` (``[store] url``) or `TlsRptStore.open` (an SQLite file):
    ``async with await TlsRptStore.open(path) as store``.
    """

    def __init__(self, database: tlsrpt_db.Database, /, *, flush_interval_ms: int) -> None:
        """Wrap an open database; use `open` or `open_url` instead."""
        self._database = database
        self._flush_interval_s = flush_interval_ms / 1000
        self._tally = tlsrpt.Tally()
        self._timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._dropping = False
        self.dropped = 0
        """Results dropped because too many counts were waiting for a failing database."""
        self.recorded = 0
        """Results written so far by this store object."""

    @classmethod
    async def open_url(
        cls, url: str, /, *, flush_interval_ms: int = DEFAULT_FLUSH_INTERVAL_MS
    ) -> TlsRptStore:
        """Open (creating or migrating) the ``tlsrpt_*`` tables in the database of a store URL.

        :param url: ``[store] url``: ``sqlite://<file>`` or ``postgresql://...``.
        :param flush_interval_ms: how long results wait before they are written.
        :raises ConfigError: ``store.url`` is not a URL this store can use.
        :raises TlsRptStoreError: the database cannot be opened, or its TLS-RPT schema is newer
            than this program.
        """
        if not pg.is_postgres_url(url):
            return await cls.open(config.sqlite_path(url), flush_interval_ms=flush_interval_ms)
        _check_interval(flush_interval_ms)
        try:
            database = await tlsrpt_db.PostgresDatabase.open(url)
        except pg.DATABASE_ERRORS as exc:
            raise TlsRptStoreError("open", f"{pg.describe(url)}: {exc}") from exc
        return await cls._opened(database, flush_interval_ms)

    @classmethod
    async def open(
        cls,
        path: str | PathLike[str],
        /,
        *,
        flush_interval_ms: int = DEFAULT_FLUSH_INTERVAL_MS,
    ) -> TlsRptStore:
        """Open (creating or migrating) the ``tlsrpt_*`` tables in the SQLite file at ``path``.

        :param path: ``config.sqlite_path(settings.store.url)``: the queue's file.
        :param flush_interval_ms: how long results wait before they are written.
        :raises TlsRptStoreError: the file cannot be opened, or its TLS-RPT schema is newer
            than this program.
        :raises ValueError: an in-memory database, or a flush interval that is not positive.
        """
        file = Path(path)
        if str(file) == ":memory:":
            raise ValueError("an in-memory database is not durable")
        _check_interval(flush_interval_ms)
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(file, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise TlsRptStoreError("open", f"{file}: {exc}") from exc
        try:
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")  # see Durability
        except sqlite3.Error as exc:
            await db.close()
            raise TlsRptStoreError("open", f"{file}: {exc}") from exc
        except BaseException:
            await db.close()
            raise
        return await cls._opened(tlsrpt_db.SqliteDatabase(db, file), flush_interval_ms)

    @classmethod
    async def _opened(cls, database: tlsrpt_db.Database, flush_interval_ms: int) -> TlsRptStore:
        """The store on ``database``, once its tables are migrated (closed if they cannot be)."""
        store = cls(database, flush_interval_ms=flush_interval_ms)
        try:
            async with store._transaction("open") as session:
                await migrations.migrate(
                    session,
                    component=COMPONENT,
                    steps=steps(database.dialect),
                    baseline_table=BASELINE_TABLE,
                )
        except migrations.SchemaTooNew as exc:
            await database.close()
            raise TlsRptStoreError("open", f"{database.where}: {exc}") from exc
        except BaseException:
            await database.close()
            raise
        return store

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Write what is buffered, then close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            if self._writer is not None:
                await asyncio.gather(self._writer, return_exceptions=True)
            await self._write_pending()
        finally:
            await self._database.close()

    # ---- recording -------------------------------------------------------------------------

    def record(
        self, results: Iterable[tlsrpt.SessionResult], /, *, source: model.MessageSource
    ) -> None:
        """record - count ``results`` in their day's aggregates (written within the interval).

        Cheap enough for every TLS session: the results are counted in memory (`tlsrpt.Tally`)
        and written in the background (see the module docstring). Never raises, never blocks.

        :param results: the session results of one message's attempt.
        :param source: that message's source: results of ``report`` messages are ignored.
        """
        if self._closed or not tlsrpt.reportable(source):
            return
        for result in results:
            if self._tally.entries >= TLSRPT_MAX_PENDING_ENTRIES:
                self._drop()
            else:
                self._tally.add(result)
        if self._tally.entries >= FLUSH_BATCH_ENTRIES:
            self._start_write()
        else:
            self._schedule()

    def _drop(self) -> None:
        """Drop a result the full buffer has no room for; say so once per episode."""
        self.dropped += 1
        if not self._dropping:
            self._dropping = True
            log.warning(
                "TLS-RPT: %d distinct counts wait for the database: new session results are "
                "dropped until they are written",
                self._tally.entries,
            )

    def _schedule(self) -> None:
        """Start a write after the interval, unless one is waiting or running already."""
        if self._closed or self._timer is not None or self._writing():
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._flush_interval_s, self._start_write)

    def _writing(self) -> bool:
        return self._writer is not None and not self._writer.done()

    def _start_write(self) -> None:
        """Write the buffer now, in a background task the store owns (one at a time)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed or self._writing() or not self._tally:
            return
        self._writer = asyncio.get_running_loop().create_task(
            self._write_pending(), name="tlsrpt-store-write"
        )

    async def flush(self) -> None:
        """flush - write every buffered result now (the daily run does, before reading).

        :raises TlsRptStoreError: the write failed (the results stay buffered).
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._write_pending(raise_errors=True)

    async def _write_pending(self, *, raise_errors: bool = False) -> None:
        """One transaction for everything counted; on failure, keep it for the next one."""
        if not self._tally:
            return
        tally, self._tally = self._tally, tlsrpt.Tally()
        try:
            await self._write(tally.result())
        except TlsRptStoreError as exc:
            tally.update(self._tally)  # counts add up in any order
            self._tally = tally
            log.warning("TLS-RPT: %d session results not written yet: %s", len(tally), exc)
            self._writer = None
            self._schedule()
            if raise_errors:
                raise
            return
        self.recorded += len(tally)
        if self._dropping:
            self._dropping = False
            log.warning("TLS-RPT: written again; %d session results were dropped", self.dropped)
        if self._tally and not self._closed:
            loop = asyncio.get_running_loop()
            if self._tally.entries >= FLUSH_BATCH_ENTRIES:
                loop.call_soon(self._start_write)  # after this task is done
            else:
                self._timer = self._timer or loop.call_later(
                    self._flush_interval_s, self._start_write
                )

    async def _write(self, grouped: dict[tlsrpt.DayKey, list[tlsrpt.PolicyAggregate]]) -> None:
        # Rows are written in key order: two nodes writing the same rows at once then wait for
        # each other instead of deadlocking (PostgreSQL row locks).
        rows = sorted(
            (domain, day.isoformat(), item.policy.key(), item)
            for (domain, day), aggregates in grouped.items()
            for item in aggregates
        )
        async with self._transaction("record") as db:
            for domain, day, policy, item in rows:
                params = {
                    "domain": domain,
                    "day": day,
                    "policy": policy,
                    "successes": item.successes,
                    "failures": item.failures,
                }
                [(policy_id,)] = await db.fetch(_UPSERT_POLICY, params)
                if item.details:
                    await db.execute_many(
                        _UPSERT_FAILURE,
                        sorted(
                            (
                                {"policy_id": policy_id, "detail": detail.key(), "sessions": n}
                                for detail, n in item.details
                            ),
                            key=lambda row: str(row["detail"]),
                        ),
                    )

    # ---- reading and reporting -------------------------------------------------------------

    async def days_ready(self, before_day: date, /) -> list[tlsrpt.DayKey]:
        """days_ready - the (domain, day) pairs with results before ``before_day``, not done.

        Oldest day first. Does not include what is still buffered: `flush` first.
        """
        async with self._transaction("days_ready", write=False) as db:
            rows = await db.fetch(_DAYS_READY, {"before": before_day.isoformat()})
        return [(row[0], date.fromisoformat(row[1])) for row in rows]

    async def aggregates(self, domain: str, day: date, /) -> list[tlsrpt.PolicyAggregate]:
        """aggregates - the counts of ``domain`` on ``day``, one per policy applied."""
        params = {"domain": _domain(domain), "day": day.isoformat()}
        async with self._transaction("aggregates", write=False) as db:
            policies = await db.fetch(_POLICIES_OF, params)
            failures = await db.fetch(_FAILURES_OF, params)
        details: dict[int, list[tuple[tlsrpt.FailureDetail, int]]] = {}
        for policy_id, detail, sessions in failures:
            parsed = tlsrpt.FailureDetail.from_json(_json(detail))
            details.setdefault(policy_id, []).append((parsed, sessions))
        return tlsrpt.merge(
            tlsrpt.PolicyAggregate(
                tlsrpt.PolicyDescription.from_json(_json(policy)),
                successes,
                failed,
                tuple(details.get(policy_id, ())),
            )
            for policy_id, policy, successes, failed in policies
        )

    async def begin_report(
        self, domain: str, day: date, /, *, report_id: str, now: int
    ) -> ReportState:
        """begin_report - the report state of (domain, day), created on its first attempt.

        :param report_id: the id to use if this is the first attempt (else the stored one).
        :param now: epoch ms, recorded as the first attempt.
        """
        params = {"domain": _domain(domain), "day": day.isoformat()}
        async with self._transaction("begin_report") as db:
            await db.execute(_REPORT_INSERT, {**params, "report_id": report_id, "now": now})
            rows = await db.fetch(_REPORT_GET, params)
            sent = await db.fetch(_SENT_OF, params)
        stored_id, first, done_at = rows[0]
        return ReportState(stored_id, first, frozenset(row[0] for row in sent), done_at is not None)

    async def mark_sent(self, domain: str, day: date, rua: str, /, *, now: int) -> None:
        """mark_sent - ``rua`` (as published) has the report of (domain, day): never again."""
        params = {"domain": _domain(domain), "day": day.isoformat(), "rua": rua, "now": now}
        async with self._transaction("mark_sent") as db:
            await db.execute(_MARK_SENT, params)

    async def mark_done(self, domain: str, day: date, /, *, now: int) -> None:
        """mark_done - nothing more is sent for (domain, day): `days_ready` leaves it out."""
        params = {"domain": _domain(domain), "day": day.isoformat(), "now": now}
        async with self._transaction("mark_done") as db:
            await db.execute(_MARK_DONE, params)

    async def purge(self, older_than: date, /) -> int:
        """purge - forget every day before ``older_than``; the number of policy rows removed."""
        params = {"before": older_than.isoformat()}
        async with self._transaction("purge") as db:
            await db.execute(_PURGE_FAILURES, params)
            removed = await db.execute(_PURGE_POLICIES, params)
            for statement in _PURGE_MARKS:
                await db.execute(statement, params)
        return removed

    async def claim_daily_run(self, *, now: int, hold_ms: int = DAILY_RUN_CLAIM_MS) -> bool:
        """claim_daily_run - whether this node runs the reports now (`tlsrpt_send.run_daily`).

        True for one caller until ``now + hold_ms``, across every node sharing the database;
        the others get False and skip this run, so that a report leaves once.

        :param now: epoch ms.
        :param hold_ms: how long the claim keeps the others out.
        """
        async with self._transaction("claim_daily_run") as db:
            rows = await db.fetch(_CLAIM_RUN, {"until": str(now + hold_ms), "now": now})
        return bool(rows)

    # ---- transactions ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(
        self, operation: str, *, write: bool = True
    ) -> AsyncIterator[migrations.Session]:
        """One transaction (`tlsrpt_db.Database.transaction`: a cancelled caller never leaves
        it open); database errors become TlsRptStoreError naming ``operation``."""
        try:
            async with self._database.transaction(write=write) as db:
                yield db
        except self._database.errors as exc:
            raise TlsRptStoreError(operation, str(exc)) from exc


def _check_interval(flush_interval_ms: int) -> None:
    if flush_interval_ms <= 0:
        raise ValueError(f"flush_interval_ms must be positive, not {flush_interval_ms}")


def _domain(domain: str) -> str:
    return domain.lower().rstrip(".")


def _json(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text)
    return data
