"""The PostgreSQL server the store tests run on, and a fresh schema per test.

Every store test runs over SQLite and PostgreSQL (``STORE_KINDS``). The PostgreSQL cases use
the server ``DELIVERY_TEST_POSTGRES_URL`` names (scripts/test sets it) and fail, saying so,
when it is unset: a skipped store is an untested one. Each test gets a schema of its own
(``search_path`` in the URL), dropped afterwards, so parallel tests never see each other.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import urllib.parse
from collections.abc import AsyncIterator

import asyncpg
import pytest

__all__ = ["POSTGRES_URL_VARIABLE", "STORE_KINDS", "postgres_schema", "postgres_url"]

POSTGRES_URL_VARIABLE = "DELIVERY_TEST_POSTGRES_URL"
"""The test server's URL; scripts/test sets postgresql://postgres@127.0.0.1:5432/test."""

STORE_KINDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
"""The stores every store test runs over."""


def postgres_url() -> str:
    """The test server's URL, or the test fails saying how to set it."""
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        pytest.fail(
            f"{POSTGRES_URL_VARIABLE} is not set: the PostgreSQL store tests need a server"
            f" (scripts/test sets {POSTGRES_URL_VARIABLE}=postgresql://postgres@127.0.0.1"
            ":5432/test; or deselect them with -m 'not postgres')"
        )
    return url


def with_search_path(url: str, schema: str, /) -> str:
    """``url`` with ``search_path=<schema>`` in place of any it had."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "search_path"]
    query.append(("search_path", schema))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A new, empty schema on the test server: yields a URL whose connections use only it,
    and drops it with everything in it afterwards."""
    base = postgres_url()
    schema = f"test_{secrets.token_hex(8)}"
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield with_search_path(base, schema)
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()
