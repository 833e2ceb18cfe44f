"""Durable daily TLS-RPT aggregates (RFC 8460) in the queue's SQLite database file.

The engine calls `TlsRptStore.record` once per TLS session attempt; the results are counted
per (policy domain, UTC day, policy) and per failure detail, and written in batches. The daily
run (`delivery.policy.tlsrpt_send.run_daily`) reads finished days with `days_ready` and
`aggregates`, keeps one report id per (domain, day) with `begin_report`, and marks each rua
with `mark_sent` once it has the report, so that a report goes once to each rua, across
restarts too; `mark_done` closes a (domain, day); `purge` forgets old days.

Tables (prefix ``tlsrpt_``, next to the queue's ``queue_*`` and the registry's tables):
    tlsrpt_policies   (domain, day, policy) -> successful and failed session counts
    tlsrpt_failures   (policy row, failure detail) -> failed session count
    tlsrpt_reports    (domain, day) -> report id, first attempt, done time
    tlsrpt_sent       (domain, day, rua) -> when the rua got the report
    tlsrpt_meta       schema version

Outcomes:
    `record` never blocks and never raises: it filters (reports are never about the
    delivery of reports: results of messages with source ``report`` are ignored, RFC 8460
    §5.3), counts in memory, and schedules a write. A write that fails is logged and retried
    with the next one; past `TLSRPT_MAX_PENDING_ENTRIES` distinct counts waiting, new results
    are dropped and counted in ``dropped`` (a report undercounts; delivery is never slowed).
    The other methods raise `TlsRptStoreError` when the database fails.

Durability: results are buffered for at most ``flush_interval_ms`` (default
`DEFAULT_FLUSH_INTERVAL_MS`), then committed with ``synchronous=NORMAL`` (WAL): a commit
survives a crash of the process; a power loss may lose the last commits, never corrupt the
file. Statistics do not justify an fsync per batch. So a crash loses at most the last
interval of counts, and a lost ``tlsrpt_sent`` mark sends a report a second time, with the
same report id, which receivers deduplicate (RFC 8460 §5.3).

Security: stored text is what `tlsrpt` already cleaned and capped; every value is a bound
parameter, no SQL is built from data.

Cost: `record` is a few dictionary updates (measured: under 2 µs a result); a write is one
transaction of one upsert per distinct (domain, day, policy) and per distinct failure
detail, whatever the number of sessions: thousands of sessions a second to hundreds of
domains cost one small transaction a second.

Standards: RFC 8460 §4 (what is counted), §5.3 (report sessions excluded), §5.5 (retries).
Limits: one connection per store; the file must be the queue's (or any) SQLite file on a
local disk. PostgreSQL stores are not supported yet.
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

from delivery.errors import DeliveryError
from delivery.policy import tlsrpt
from delivery.queue import model, sqlite_tx

__all__ = [
    "BUSY_TIMEOUT_MS",
    "DEFAULT_FLUSH_INTERVAL_MS",
    "FLUSH_BATCH_ENTRIES",
    "SCHEMA_VERSION",
    "TLSRPT_MAX_PENDING_ENTRIES",
    "ReportState",
    "TlsRptStore",
    "TlsRptStoreError",
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

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS tlsrpt_policies (
        id INTEGER PRIMARY KEY,
        domain TEXT NOT NULL,
        day TEXT NOT NULL,
        policy TEXT NOT NULL,
        successes INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        UNIQUE (domain, day, policy)
    )""",
    "CREATE INDEX IF NOT EXISTS tlsrpt_policies_day ON tlsrpt_policies (day)",
    """CREATE TABLE IF NOT EXISTS tlsrpt_failures (
        policy_id INTEGER NOT NULL,
        detail TEXT NOT NULL,
        sessions INTEGER NOT NULL,
        PRIMARY KEY (policy_id, detail)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS tlsrpt_reports (
        domain TEXT NOT NULL,
        day TEXT NOT NULL,
        report_id TEXT NOT NULL,
        first_attempt_at INTEGER NOT NULL,
        done_at INTEGER,
        PRIMARY KEY (domain, day)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS tlsrpt_sent (
        domain TEXT NOT NULL,
        day TEXT NOT NULL,
        rua TEXT NOT NULL,
        sent_at INTEGER NOT NULL,
        PRIMARY KEY (domain, day, rua)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS tlsrpt_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID""",
)

_UPSERT_POLICY: Final = """
    INSERT INTO tlsrpt_policies (domain, day, policy, successes, failures)
    VALUES (:domain, :day, :policy, :successes, :failures)
    ON CONFLICT (domain, day, policy) DO UPDATE SET
        successes = successes + excluded.successes,
        failures = failures + excluded.failures
    RETURNING id"""
_UPSERT_FAILURE: Final = """
    INSERT INTO tlsrpt_failures (policy_id, detail, sessions)
    VALUES (:policy_id, :detail, :sessions)
    ON CONFLICT (policy_id, detail) DO UPDATE SET sessions = sessions + excluded.sessions"""
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
_VERSION_GET: Final = "SELECT value FROM tlsrpt_meta WHERE key = 'schema_version'"
_VERSION_SET: Final = "INSERT INTO tlsrpt_meta (key, value) VALUES ('schema_version', :version)"


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
    """TLS-RPT aggregates in one SQLite database file (see the module docstring).

    Open it with `TlsRptStore.open` (``async with await TlsRptStore.open(path) as store``).
    """

    def __init__(self, db: aiosqlite.Connection, path: Path, /, *, flush_interval_ms: int) -> None:
        """Wrap an open, configured connection; use `open` instead."""
        self.path = path
        self._db = db
        self._lock = asyncio.Lock()
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
    async def open(
        cls,
        path: str | PathLike[str],
        /,
        *,
        flush_interval_ms: int = DEFAULT_FLUSH_INTERVAL_MS,
    ) -> TlsRptStore:
        """Open (creating if needed) the ``tlsrpt_*`` tables in the database file at ``path``.

        :param path: ``config.sqlite_path(settings.store.url)``: the queue's file.
        :param flush_interval_ms: how long results wait before they are written.
        :raises TlsRptStoreError: the file cannot be opened, or its TLS-RPT schema is newer
            than this program.
        :raises ValueError: an in-memory database, or a flush interval that is not positive.
        """
        file = Path(path)
        if str(file) == ":memory:":
            raise ValueError("an in-memory database is not durable")
        if flush_interval_ms <= 0:
            raise ValueError(f"flush_interval_ms must be positive, not {flush_interval_ms}")
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(file, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise TlsRptStoreError("open", f"{file}: {exc}") from exc
        store = cls(db, file, flush_interval_ms=flush_interval_ms)
        try:
            await store._configure()
        except BaseException:
            await db.close()
            raise
        return store

    async def _configure(self) -> None:
        try:
            await self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await self._db.execute("PRAGMA journal_mode = WAL")
            await self._db.execute("PRAGMA synchronous = NORMAL")  # see Durability
        except sqlite3.Error as exc:
            raise TlsRptStoreError("open", f"{self.path}: {exc}") from exc
        async with self._transaction("open") as db:
            for statement in _SCHEMA:
                await db.execute(statement)
            rows = list(await db.execute_fetchall(_VERSION_GET))
            if not rows:
                await db.execute(_VERSION_SET, {"version": str(SCHEMA_VERSION)})
            elif int(rows[0][0]) > SCHEMA_VERSION:
                raise TlsRptStoreError(
                    "open",
                    f"{self.path}: TLS-RPT schema version {rows[0][0]} is newer than this "
                    f"program's ({SCHEMA_VERSION})",
                )

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
            await self._db.close()

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
        async with self._transaction("record") as db:
            for (domain, day), aggregates in grouped.items():
                for item in aggregates:
                    params = {
                        "domain": domain,
                        "day": day.isoformat(),
                        "policy": item.policy.key(),
                        "successes": item.successes,
                        "failures": item.failures,
                    }
                    rows = list(await db.execute_fetchall(_UPSERT_POLICY, params))
                    policy_id = rows[0][0]
                    if item.details:
                        await db.executemany(
                            _UPSERT_FAILURE,
                            [
                                {"policy_id": policy_id, "detail": detail.key(), "sessions": n}
                                for detail, n in item.details
                            ],
                        )

    # ---- reading and reporting -------------------------------------------------------------

    async def days_ready(self, before_day: date, /) -> list[tlsrpt.DayKey]:
        """days_ready - the (domain, day) pairs with results before ``before_day``, not done.

        Oldest day first. Does not include what is still buffered: `flush` first.
        """
        async with self._transaction("days_ready", write=False) as db:
            rows = await db.execute_fetchall(_DAYS_READY, {"before": before_day.isoformat()})
        return [(row[0], date.fromisoformat(row[1])) for row in rows]

    async def aggregates(self, domain: str, day: date, /) -> list[tlsrpt.PolicyAggregate]:
        """aggregates - the counts of ``domain`` on ``day``, one per policy applied."""
        params = {"domain": _domain(domain), "day": day.isoformat()}
        async with self._transaction("aggregates", write=False) as db:
            policies = list(await db.execute_fetchall(_POLICIES_OF, params))
            failures = list(await db.execute_fetchall(_FAILURES_OF, params))
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
            rows = list(await db.execute_fetchall(_REPORT_GET, params))
            sent = await db.execute_fetchall(_SENT_OF, params)
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
            cursor = await db.execute(_PURGE_POLICIES, params)
            removed = cursor.rowcount
            await cursor.close()
            for statement in _PURGE_MARKS:
                await db.execute(statement, params)
        return removed

    # ---- transactions ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(
        self, operation: str, *, write: bool = True
    ) -> AsyncIterator[aiosqlite.Connection]:
        """One transaction on the connection, serialized by the lock (`sqlite_tx.transaction`:
        a cancelled caller never leaves the connection inside a transaction); errors become
        TlsRptStoreError."""
        try:
            async with sqlite_tx.transaction(self._db, self._lock, write=write) as db:
                yield db
        except sqlite3.Error as exc:
            raise TlsRptStoreError(operation, str(exc)) from exc


def _domain(domain: str) -> str:
    return domain.lower().rstrip(".")


def _json(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text)
    return data
