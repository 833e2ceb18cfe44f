"""Registry fixtures: a Registry on a fresh database per test, over every store (STYLE §13).

``registry_url`` is the store URL (reopen it to test durability), parametrized over
`STORE_KINDS`: a SQLite file in a folder that does not exist yet, and a fresh PostgreSQL
schema (`tests.plugins.postgres`: those tests fail without ``DELIVERY_TEST_POSTGRES_URL``;
scripts/test sets it). ``registry`` is a Registry opened on it with the
first-start objects, closed after the test. ``set_ok`` runs a /set and fails the test unless
every item succeeded.

``run_sql(url, statement, params)`` runs one ``:name`` statement on the database of a store
URL of either kind, as an operator's hand edit (or an older version) would, and returns the
rows.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from delivery import config, pg
from delivery.registry import Registry
from tests.plugins.postgres import STORE_KINDS, postgres_schema

__all__ = [
    "registry",
    "registry_url",
    "run_sql",
    "set_ok",
    "store_kind",
]


async def run_sql(
    url: str, statement: str, params: Mapping[str, Any] | None = None, /
) -> list[tuple[Any, ...]]:
    """Run one statement (``:name`` parameters) on the database of ``url``; its rows."""
    if not pg.is_postgres_url(url):
        with contextlib.closing(sqlite3.connect(config.sqlite_path(url))) as db, db:
            return list(db.execute(statement, dict(params or {})).fetchall())
    query, names = pg.statement(statement)
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(query, *pg.arguments(names, params or {}))
    finally:
        await connection.close()
    return [tuple(row) for row in rows]


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store under test: ``sqlite`` or ``postgresql``."""
    kind: str = request.param
    return kind


@pytest.fixture
async def registry_url(store_kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A store URL on a fresh database of the kind under test."""
    if store_kind == "sqlite":
        yield f"sqlite://{tmp_path}/data/delivery.db"
        return
    async with postgres_schema() as url:
        yield url


@pytest.fixture
async def registry(registry_url: str) -> AsyncIterator[Registry]:
    reg = await Registry.open(registry_url)
    try:
        yield reg
    finally:
        await reg.close()


async def set_ok(
    reg: Registry,
    type_name: str,
    *,
    create: dict[str, Any] | None = None,
    update: dict[str, Any] | None = None,
    destroy: list[str] | None = None,
) -> dict[str, Any]:
    """A /set whose every item must succeed; returns the response."""
    result = await reg.set(
        type_name, if_in_state=None, create=create, update=update, destroy=destroy
    )
    for member in ("notCreated", "notUpdated", "notDestroyed"):
        assert result[member] is None, result[member]
    return result
