"""Registry fixtures: a Registry on a fresh database per test, over every store (STYLE §13).

``registry_url`` is the store URL (reopen it to test durability), parametrized over
`STORE_KINDS`: a SQLite file in a folder that does not exist yet, and a fresh PostgreSQL
schema (`postgres_schema`) on the server ``DELIVERY_TEST_POSTGRES_URL`` names (those tests
are skipped without it; CI sets it). ``registry`` is a Registry opened on it with the
first-start objects, closed after the test. ``set_ok`` runs a /set and fails the test unless
every item succeeded.

``run_sql(url, statement, params)`` runs one ``:name`` statement on the database of a store
URL of either kind, as an operator's hand edit (or an older version) would, and returns the
rows. ``postgres_schema(base_url)`` is an async context manager yielding the URL of a new, empty
schema (``?search_path=<schema>``: every connection of every store made from that URL works
in it), dropped with everything in it afterwards; the cluster tests use it too.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from delivery import config, pg
from delivery.registry import Registry

__all__ = [
    "POSTGRES_URL_VARIABLE",
    "STORE_KINDS",
    "postgres_base_url",
    "postgres_schema",
    "registry",
    "registry_url",
    "run_sql",
    "set_ok",
    "store_kind",
]

POSTGRES_URL_VARIABLE = "DELIVERY_TEST_POSTGRES_URL"
STORE_KINDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def postgres_base_url() -> str:
    """The test server's URL; skips the test when the variable is unset."""
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        pytest.skip(f"{POSTGRES_URL_VARIABLE} is not set (scripts/test sets it)")
    return url


def with_search_path(url: str, schema: str, /) -> str:
    """``url`` with ``search_path=<schema>`` added to its parameters."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    query = [(k, v) for k, v in query if k != "search_path"] + [("search_path", schema)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@contextlib.asynccontextmanager
async def postgres_schema(base_url: str, /) -> AsyncIterator[str]:
    """A fresh schema on the server at ``base_url``: yields its URL, drops it afterwards."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(base_url)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield with_search_path(base_url, schema)
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()


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
    async with postgres_schema(postgres_base_url()) as url:
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
