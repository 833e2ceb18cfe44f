"""Opening stores, migrations, concurrent calls, and several nodes sharing one database.

Every test here runs over both stores (``registry_url``: SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Iterator

import pytest

from delivery import config
from delivery.errors import ConfigError
from delivery.registry import MethodError, Registry, StoreError, sql, store
from tests.plugins.registry import run_sql, set_ok

# ---- URLs and schema versions -------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "mysql://localhost/db",
        "sqlite://",
        "postgresql://postgres@127.0.0.1:notaport/test",
    ],
)
async def test_urls_it_cannot_use_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        await Registry.open(url)
    assert caught.value.field == "store.url"


async def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    with pytest.raises(StoreError) as caught:
        await Registry.open("postgresql://app:s3cret@127.0.0.1:1/mail")
    assert "postgresql://app@127.0.0.1:1/mail" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_the_schema_version_counts_the_migration_steps() -> None:
    assert len(sql.MIGRATIONS) == store.SCHEMA_VERSION


async def test_a_newer_schema_is_refused(registry_url: str) -> None:
    await (await Registry.open(registry_url)).close()
    await run_sql(
        registry_url, "UPDATE registry_counters SET value = 99 WHERE name = 'schema_version'"
    )
    with pytest.raises(StoreError, match="newer"):
        await Registry.open(registry_url)


async def test_tables_migrated_by_a_newer_release_are_refused(registry_url: str) -> None:
    await (await Registry.open(registry_url)).close()
    await run_sql(
        registry_url, "UPDATE schema_versions SET version = 99 WHERE component = 'registry'"
    )
    with pytest.raises(StoreError, match="newer"):
        await Registry.open(registry_url)


async def test_a_release_1_database_is_adopted(registry_url: str) -> None:
    """Tables made before migration versions were recorded are taken as version 1."""
    async with await Registry.open(registry_url) as reg:
        await set_ok(reg, "MtaTlsStrategy", create={"s": {"name": "kept"}})
    await run_sql(registry_url, "DROP TABLE schema_versions")
    async with await Registry.open(registry_url) as reopened:
        names = await reopened.get("MtaTlsStrategy", ids=None, properties=["name"])
        assert [o["name"] for o in names["list"]] == ["default", "invalid-tls", "kept"]
    assert await run_sql(
        registry_url, "SELECT version FROM schema_versions WHERE component = 'registry'"
    ) == [(store.SCHEMA_VERSION,)]


async def test_an_interrupted_first_start_is_completed(registry_url: str) -> None:
    """A database whose tables exist but which never got its first-start objects (the first
    start stopped in between) gets them on the next open."""
    await (await Registry.open(registry_url, refresh_interval_ms=None)).close()
    await run_sql(registry_url, "DELETE FROM registry_objects")
    await run_sql(registry_url, "DELETE FROM registry_counters WHERE name = 'schema_version'")
    async with await Registry.open(registry_url) as reopened:
        names = await reopened.get("MtaTlsStrategy", ids=None, properties=["name"])
        assert [o["name"] for o in names["list"]] == ["default", "invalid-tls"]
    [(version,)] = await run_sql(
        registry_url, "SELECT value FROM registry_counters WHERE name = 'schema_version'"
    )
    assert version == store.SCHEMA_VERSION


async def test_tables_are_prefixed(registry: Registry, registry_url: str) -> None:
    if registry_url.startswith(config.SQLITE_SCHEME):
        listing = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        listing = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    tables = {name for (name,) in await run_sql(registry_url, listing)}
    assert tables - {"schema_versions"}  # the shared table of migration versions
    assert all(t.startswith("registry_") for t in tables - {"schema_versions"})


async def test_sqlite_is_in_wal_mode(registry: Registry, registry_url: str) -> None:
    if not registry_url.startswith(config.SQLITE_SCHEME):
        pytest.skip("SQLite only")
    with sqlite3.connect(config.sqlite_path(registry_url)) as db:
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"


# ---- concurrency, one node and several ------------------------------------------------------


async def test_concurrent_sets_are_serialised(registry: Registry) -> None:
    results = await asyncio.gather(
        *(
            registry.set(
                "MtaVirtualQueue",
                if_in_state=None,
                create={"q": {"name": "race"}},
                update=None,
                destroy=None,
            )
            for _ in range(5)
        )
    )
    assert sum(r["created"] is not None for r in results) == 1
    states = sorted(int(r["newState"]) for r in results)
    assert states == [1, 1, 1, 1, 1]


async def test_nodes_starting_together_make_the_first_start_objects_once(
    registry_url: str,
) -> None:
    nodes = await asyncio.gather(*(Registry.open(registry_url) for _ in range(3)))
    try:
        for node in nodes:
            names = await node.get("MtaVirtualQueue", ids=None, properties=["name"])
            assert [o["name"] for o in names["list"]] == ["local", "remote", "dsn", "report"]
    finally:
        for node in nodes:
            await node.close()


async def test_sets_on_two_nodes_take_turns(registry_url: str) -> None:
    """Two nodes creating one name at once: one wins, the other sees it (alreadyExists),
    and each change has its own state."""
    async with (
        await Registry.open(registry_url) as node_a,
        await Registry.open(registry_url) as node_b,
    ):
        results = await asyncio.gather(
            *(
                node.set(
                    "MtaVirtualQueue",
                    if_in_state=None,
                    create={"q": {"name": "race"}, f"own{i}": {"name": f"own{i}"}},
                    update=None,
                    destroy=None,
                )
                for i, node in enumerate((node_a, node_b, node_a, node_b))
            )
        )
    assert sum("q" in (r["created"] or {}) for r in results) == 1
    assert sum(r["notCreated"] is not None for r in results) == 3
    assert {r["notCreated"]["q"]["type"] for r in results if r["notCreated"]} == {"alreadyExists"}
    assert sorted(int(r["newState"]) for r in results) == [1, 2, 3, 4]


async def test_two_registries_on_one_database_see_each_others_changes(
    registry_url: str,
) -> None:
    node_a = await Registry.open(registry_url)
    node_b = await Registry.open(registry_url)  # a second process: first start ran once
    try:
        names = await node_b.get("MtaTlsStrategy", ids=None, properties=["name"])
        assert [o["name"] for o in names["list"]] == ["default", "invalid-tls"]
        await set_ok(node_a, "MtaTlsStrategy", create={"s": {"name": "shared"}})
        clash = await node_b.set(
            "MtaTlsStrategy",
            if_in_state=None,
            create={"s": {"name": "SHARED"}},
            update=None,
            destroy=None,
        )
        assert clash["notCreated"]["s"]["type"] == "alreadyExists"
        with pytest.raises(MethodError) as caught:  # node_b's client saw state 0
            await node_b.set(
                "MtaTlsStrategy", if_in_state="0", create=None, update=None, destroy=None
            )
        assert caught.value.type == "stateMismatch"
    finally:
        await node_a.close()
        await node_b.close()


# ---- propagation to the engine of every node ------------------------------------------------


async def test_refresh_brings_another_nodes_change_into_the_snapshot(
    registry_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        await Registry.open(registry_url, refresh_interval_ms=None) as node_a,
        await Registry.open(registry_url, refresh_interval_ms=None) as node_b,
    ):
        before = node_b.snapshot()
        assert not await node_b.refresh()  # nothing changed: the same snapshot
        assert node_b.snapshot() is before

        remote = await node_a.query("MtaVirtualQueue", filter={"name": "remote"}, sort=None)
        await set_ok(node_a, "MtaVirtualQueue", update={remote["ids"][0]: {"threadsPerNode": 7}})
        assert node_b.snapshot().virtual_queue("remote").threads_per_node == 50  # not yet
        with caplog.at_level(logging.INFO, logger="delivery.registry"):
            assert await node_b.refresh()
        assert node_b.snapshot().virtual_queue("remote").threads_per_node == 7
        assert before.virtual_queue("remote").threads_per_node == 50  # held snapshots stay
        assert "MtaVirtualQueue" in caplog.text
        assert not await node_a.refresh()  # its own /set already rebuilt it


@contextlib.contextmanager
def watch_log(text: str, /) -> Iterator[asyncio.Event]:
    """An event set when the ``delivery.registry`` logger writes a record containing ``text``."""
    seen = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                seen.set()  # the registry logs from the event loop's thread

    logger = logging.getLogger("delivery.registry")
    handler, level = Watch(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_a_change_reaches_every_node_within_the_refresh_interval(
    registry_url: str,
) -> None:
    async with (
        await Registry.open(registry_url) as node_a,
        await Registry.open(registry_url, refresh_interval_ms=50) as node_b,
    ):
        with watch_log("snapshot rebuilt") as rebuilt:
            await set_ok(
                node_a, "MtaTlsStrategy", create={"s": {"name": "strict", "startTls": "require"}}
            )
            async with asyncio.timeout(5):
                await rebuilt.wait()
        assert node_b.snapshot().tls_strategy("strict").start_tls == "require"


async def test_a_failing_refresh_keeps_the_snapshot_and_says_so_once(
    registry_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    node = await Registry.open(registry_url, refresh_interval_ms=10)
    kept = node.snapshot()
    with (
        caplog.at_level(logging.WARNING, logger="delivery.registry"),
        watch_log("cannot look for changes") as failed,
    ):
        await run_sql(registry_url, "DROP TABLE registry_states")  # a broken database
        async with asyncio.timeout(5):
            await failed.wait()
        await asyncio.sleep(0.1)  # several more rounds, failing quietly
    assert caplog.text.count("cannot look for changes") == 1
    assert node.snapshot() is kept
    await node.close()
