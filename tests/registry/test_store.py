"""Opening stores, concurrent calls, and two processes sharing one database."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from delivery import config
from delivery.errors import ConfigError
from delivery.registry import MethodError, Registry, StoreError
from tests.plugins.registry import set_ok


@pytest.mark.parametrize(
    "url",
    ["postgresql://postgres@127.0.0.1/test", "mysql://localhost/db", "sqlite://"],
)
async def test_urls_it_cannot_use_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        await Registry.open(url)
    assert caught.value.field == "store.url"


async def test_a_newer_schema_is_refused(registry_url: str) -> None:
    await (await Registry.open(registry_url)).close()
    with sqlite3.connect(config.sqlite_path(registry_url)) as db:
        db.execute("UPDATE registry_counters SET value = 99 WHERE name = 'schema_version'")
    with pytest.raises(StoreError, match="newer"):
        await Registry.open(registry_url)


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


async def test_tables_are_prefixed_and_the_database_is_durable(
    registry: Registry, registry_url: str
) -> None:
    with sqlite3.connect(config.sqlite_path(registry_url)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
    assert tables and all(t.startswith("registry_") for t in tables)
    assert mode == "wal"
