"""`storage.open_stores`: every store of a node on ``[store] url``, SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from delivery import config, storage
from delivery.errors import ConfigError
from delivery.policy import tlsrpt_store
from delivery.registry import StoreError
from tests.plugins.postgres import postgres_schema
from tests.plugins.queue import make_message, make_recipient
from tests.plugins.registry import run_sql


def settings_for(url: str, **sections: object) -> config.Settings:
    return config.Settings.model_validate({"store": {"url": url}, **sections})


@pytest.fixture
async def store_url(store_kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A store URL on a fresh database of the kind under test."""
    if store_kind == "sqlite":
        yield f"sqlite://{tmp_path}/data/delivery.db"
        return
    async with postgres_schema() as url:
        yield url


async def test_every_store_opens_on_one_database(store_url: str) -> None:
    async with storage.open_stores(settings_for(store_url)) as stores:
        names = await stores.registry.get("MtaVirtualQueue", ids=None, properties=["name"])
        assert [o["name"] for o in names["list"]] == ["local", "remote", "dsn", "report"]
        message_id = await stores.queue.enqueue(make_message(), [make_recipient()])
        assert stores.tlsrpt is not None
        assert await stores.tlsrpt.claim_daily_run(now=0)
    async with storage.open_stores(settings_for(store_url)) as again:  # durable, reopened
        assert (await again.queue.load_body(message_id)).startswith(b"Subject: test")
    if store_url.startswith(config.SQLITE_SCHEME):
        listing = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        listing = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    prefixes = {name.split("_")[0] for (name,) in await run_sql(store_url, listing)}
    assert prefixes == {"registry", "queue", "tlsrpt", "schema"}  # schema_versions


async def test_tls_reports_open_only_when_enabled_and_asked(store_url: str) -> None:
    off = settings_for(store_url, tlsrpt={"enabled": False})
    async with storage.open_stores(off) as stores:
        assert stores.tlsrpt is None
    async with storage.open_stores(settings_for(store_url), reports=False) as stores:
        assert stores.tlsrpt is None
    async with storage.open_stores(off, reports=True) as stores:
        assert isinstance(stores.tlsrpt, tlsrpt_store.TlsRptStore)


async def test_a_url_it_cannot_read_names_the_setting() -> None:
    broken = settings_for("postgresql://app@127.0.0.1:notaport/mail")
    with pytest.raises(ConfigError) as caught:
        async with storage.open_stores(broken):
            pass
    assert caught.value.field == "store.url"


async def test_an_unreachable_server_fails_without_the_password() -> None:
    unreachable = settings_for("postgresql://app:s3cret@127.0.0.1:1/mail")
    with pytest.raises(StoreError) as caught:
        async with storage.open_stores(unreachable):
            pass
    assert "s3cret" not in str(caught.value)
