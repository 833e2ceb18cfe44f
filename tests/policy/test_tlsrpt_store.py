"""TLS-RPT store: daily aggregates in the queue's database, durable across reopening.

Every store test runs over both databases (``open_reports``: a real SQLite file under tmp_path,
or a fresh schema on the test PostgreSQL server), the queue store on the same file where it
matters; the expected aggregates come from the pure `tlsrpt.aggregate`, so the store is
checked to keep exactly what the core counts.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from delivery.policy import tlsrpt
from delivery.policy.tlsrpt import FailureDetail, PolicyDescription, ResultType, SessionResult
from delivery.policy.tlsrpt_store import SCHEMA_VERSION, TlsRptStore, TlsRptStoreError
from delivery.queue import model
from delivery.queue.sqlite import SqliteQueueStore
from tests.plugins.postgres import postgres_schema
from tests.plugins.registry import run_sql

DAY = date(2024, 5, 1)
AUTHENTICATED = model.MessageSource.AUTHENTICATED


def _ms(day: date, hour: int = 12) -> int:
    return int(datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp() * 1000)


def _results(domain: str = "example.test", day: date = DAY) -> list[SessionResult]:
    sts = PolicyDescription.sts_unavailable()
    none = PolicyDescription.no_policy()
    expired = FailureDetail(ResultType.CERTIFICATE_EXPIRED, "mx1.example.test", "192.0.2.1")
    missing = FailureDetail(ResultType.STARTTLS_NOT_SUPPORTED, "mx2.example.test", "192.0.2.2")
    at = _ms(day)
    return [
        SessionResult(domain, none, True, None, at),
        SessionResult(domain, none, True, None, at + 1),
        SessionResult(domain, none, False, missing, at + 2),
        SessionResult(domain, sts, False, expired, at + 3),
        SessionResult(domain, sts, False, expired, at + 4),
    ]


OpenReports = Callable[[], Awaitable[TlsRptStore]]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "delivery.db"


@pytest.fixture
async def reports_url(store_kind: str, db_path: Path) -> AsyncIterator[str]:
    """A store URL on a fresh database of the kind under test (``store_kind``)."""
    if store_kind == "sqlite":
        yield f"sqlite://{db_path}"
        return
    async with postgres_schema() as url:
        yield url


@pytest.fixture
def open_reports(reports_url: str) -> OpenReports:
    """Opens a TLS-RPT store on the test's one database (again to test durability)."""

    async def open_store() -> TlsRptStore:
        return await TlsRptStore.open_url(reports_url)

    return open_store


async def test_recorded_results_are_the_core_aggregates(open_reports: OpenReports) -> None:
    results = _results()
    async with await open_reports() as store:
        store.record(results[:2], source=AUTHENTICATED)
        store.record(results[2:], source=AUTHENTICATED)
        await store.flush()
        assert store.recorded == len(results)
        got = await store.aggregates("EXAMPLE.test.", DAY)
    [expected] = tlsrpt.aggregate(results).values()
    assert got == expected


async def test_results_of_report_messages_are_ignored(open_reports: OpenReports) -> None:
    async with await open_reports() as store:
        store.record(_results(), source=model.MessageSource.REPORT)
        store.record(_results(domain="other.test"), source=model.MessageSource.DSN)
        await store.flush()
        assert await store.aggregates("example.test", DAY) == []
        assert await store.days_ready(date(2024, 5, 2)) == [("other.test", DAY)]


async def test_counts_add_up_across_reopening(open_reports: OpenReports) -> None:
    async with await open_reports() as store:
        store.record(_results(), source=AUTHENTICATED)
    # close wrote what was buffered, without a flush
    async with await open_reports() as store:
        store.record(_results(), source=AUTHENTICATED)
        await store.flush()
        got = await store.aggregates("example.test", DAY)
    [expected] = tlsrpt.aggregate(_results() + _results()).values()
    assert got == expected
    none = next(item for item in got if item.policy == PolicyDescription.no_policy())
    assert (none.successes, none.failures) == (4, 2)


async def test_days_ready_lists_finished_days_not_done(open_reports: OpenReports) -> None:
    next_day = date(2024, 5, 2)
    async with await open_reports() as store:
        store.record(_results("b.test"), source=AUTHENTICATED)
        store.record(_results("a.test"), source=AUTHENTICATED)
        store.record(_results("a.test", next_day), source=AUTHENTICATED)
        await store.flush()
        assert await store.days_ready(DAY) == []
        assert await store.days_ready(next_day) == [("a.test", DAY), ("b.test", DAY)]
        assert await store.days_ready(date(2024, 5, 3)) == [
            ("a.test", DAY),
            ("b.test", DAY),
            ("a.test", next_day),
        ]
        await store.mark_done("a.test", DAY, now=_ms(next_day))
        assert await store.days_ready(next_day) == [("b.test", DAY)]


async def test_report_state_survives_reopening(open_reports: OpenReports) -> None:
    now = _ms(date(2024, 5, 2), 1)
    async with await open_reports() as store:
        store.record(_results(), source=AUTHENTICATED)
        state = await store.begin_report("example.test", DAY, report_id="first@x.test", now=now)
        assert (state.report_id, state.first_attempt_at, state.sent, state.done) == (
            "first@x.test",
            now,
            frozenset(),
            False,
        )
        await store.mark_sent("example.test", DAY, "mailto:tls@example.test", now=now)
        await store.mark_sent("example.test", DAY, "mailto:tls@example.test", now=now + 1)
    async with await open_reports() as store:
        again = await store.begin_report(
            "Example.Test", DAY, report_id="second@x.test", now=now + 3_600_000
        )
        assert again.report_id == "first@x.test"  # one id for every copy of the report
        assert again.first_attempt_at == now
        assert again.sent == frozenset({"mailto:tls@example.test"})
        assert not again.done
        await store.mark_done("example.test", DAY, now=now)
        assert (await store.begin_report("example.test", DAY, report_id="x", now=now)).done


async def test_purge_forgets_old_days_only(open_reports: OpenReports) -> None:
    old, kept = date(2024, 4, 1), DAY
    async with await open_reports() as store:
        store.record(_results(day=old) + _results(day=kept), source=AUTHENTICATED)
        await store.flush()
        await store.mark_sent("example.test", old, "mailto:a@example.test", now=0)
        assert await store.purge(kept) == 2  # the two policies of the old day
        assert await store.aggregates("example.test", old) == []
        assert await store.days_ready(date(2024, 6, 1)) == [("example.test", kept)]
        state = await store.begin_report("example.test", old, report_id="new", now=1)
        assert state.sent == frozenset() and state.report_id == "new"
        assert len(await store.aggregates("example.test", kept)) == 2


async def test_shares_the_queue_database_file(db_path: Path) -> None:
    queue = await SqliteQueueStore.open(db_path)
    try:
        async with await TlsRptStore.open(db_path) as store:
            message = model.NewMessage(
                sender="a@example.org",
                body=b"Subject: x\r\n\r\nx\r\n",
                source=AUTHENTICATED,
                received_at=_ms(DAY),
            )
            recipient = model.NewRecipient(
                "b@example.test", "default", "default", _ms(DAY), expires_at=_ms(DAY) + 1
            )
            store.record(_results(), source=AUTHENTICATED)
            message_id = await queue.enqueue(message, [recipient])
            await store.flush()
            assert len(await store.aggregates("example.test", DAY)) == 2
            assert (await queue.load_body(message_id)).startswith(b"Subject: x")
    finally:
        await queue.close()


async def test_open_refuses_what_is_not_durable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not durable"):
        await TlsRptStore.open(":memory:")
    with pytest.raises(ValueError, match="flush_interval_ms"):
        await TlsRptStore.open(tmp_path / "x.db", flush_interval_ms=0)


async def test_record_after_close_is_ignored(open_reports: OpenReports) -> None:
    store = await open_reports()
    await store.close()
    store.record(_results(), source=AUTHENTICATED)  # never raises, even now
    await store.close()


async def test_nodes_add_up_into_one_aggregate(open_reports: OpenReports) -> None:
    """Two nodes write the same rows at once: every count lands, nothing deadlocks."""
    results = _results("a.test") + _results("b.test") + _results("c.test")
    async with await open_reports() as node_a, await open_reports() as node_b:
        for _ in range(5):
            node_a.record(results, source=AUTHENTICATED)
            node_b.record(list(reversed(results)), source=AUTHENTICATED)
            await asyncio.gather(node_a.flush(), node_b.flush())
        got = await node_a.aggregates("b.test", DAY)
    [expected] = tlsrpt.aggregate(_results("b.test") * 10).values()
    assert got == expected


async def test_one_node_at_a_time_runs_the_reports(open_reports: OpenReports) -> None:
    now = _ms(date(2024, 5, 2), 0)
    async with await open_reports() as node_a, await open_reports() as node_b:
        claims = await asyncio.gather(
            node_a.claim_daily_run(now=now, hold_ms=60_000),
            node_b.claim_daily_run(now=now, hold_ms=60_000),
        )
        assert sorted(claims) == [False, True]
        assert not await node_a.claim_daily_run(now=now + 59_999, hold_ms=60_000)
        assert await node_b.claim_daily_run(now=now + 60_000, hold_ms=60_000)  # lapsed


async def test_a_release_1_database_is_adopted_as_it_is(db_path: Path) -> None:
    """Tables made before migrations were recorded keep their counts and gain a version."""
    async with await TlsRptStore.open(db_path) as store:
        store.record(_results(), source=AUTHENTICATED)
    with sqlite3.connect(db_path) as db:
        db.execute("DELETE FROM schema_versions WHERE component = 'tlsrpt'")
        db.execute("INSERT INTO tlsrpt_meta (key, value) VALUES ('schema_version', '1')")
    [expected] = tlsrpt.aggregate(_results()).values()
    async with await TlsRptStore.open(db_path) as store:
        assert await store.aggregates("example.test", DAY) == expected
    with sqlite3.connect(db_path) as db:
        [(version,)] = db.execute(
            "SELECT version FROM schema_versions WHERE component = 'tlsrpt'"
        ).fetchall()
    assert version == SCHEMA_VERSION


async def test_a_newer_schema_is_refused(open_reports: OpenReports, reports_url: str) -> None:
    await (await open_reports()).close()
    await run_sql(reports_url, "UPDATE schema_versions SET version = 99 WHERE component = 'tlsrpt'")
    with pytest.raises(TlsRptStoreError, match="newer"):
        await open_reports()
