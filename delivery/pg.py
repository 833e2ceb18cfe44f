"""PostgreSQL connections for the stores: a pool from a ``[store] url``, statements written
once with ``:name`` parameters, and the URL as it may be shown.

The registry and TLS-RPT stores (and any store keeping tables in the shared database) open
their pool with `create_pool`; every store runs its ``:name`` statements through
`delivery.migrations.PostgresSession`, which rewrites them with `statement` (cached) and binds
a parameter dict with `arguments`.

Outcomes:
    create_pool   an asyncpg pool; a malformed URL raises ConfigError naming ``store.url``;
                  an unreachable or refusing server raises one of `DATABASE_ERRORS`, which the
                  store translates into its own error type.
    describe      the URL without its password, for errors and logs.

Security: the password (in the URL or its ``password`` parameter) never leaves through
`describe`, so no error message or log line carries it.

URL: ``postgresql://user[:password]@host[:port]/database[?parameter=value...]``; parameters
asyncpg does not know itself are PostgreSQL settings for every connection, e.g.
``?search_path=delivery`` keeps every table in the schema ``delivery``.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

import asyncpg

from delivery.errors import ConfigError

__all__ = [
    "DATABASE_ERRORS",
    "URL_SCHEMES",
    "arguments",
    "create_pool",
    "describe",
    "is_postgres_url",
    "statement",
]

URL_SCHEMES: Final = ("postgresql://", "postgres://")

DATABASE_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
"""What a statement or a connection attempt raises when the database fails or is unreachable
(asyncpg's own errors, refused or dropped connections, connect timeouts)."""

CONNECT_TIMEOUT_S: Final = 10.0
"""How long opening one connection may take: a server that does not answer fails the start
(or the call) instead of hanging it."""

_NAMED: Final = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
"""A ``:name`` parameter; ``::type`` casts and words are left alone. The statements given to
`statement` have no quoted string containing a colon, which this does not look into."""


def is_postgres_url(url: str, /) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) store URL."""
    return url.startswith(URL_SCHEMES)


def describe(url: str, /) -> str:
    """describe - ``url`` without its password, for messages.

    >>> describe("postgresql://app:s3cret@db.example:5432/mail?search_path=d&password=x")
    'postgresql://app@db.example:5432/mail?search_path=d'
    """
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    userinfo = netloc[0].partition(":")[0]
    host = netloc[2]
    query = urllib.parse.urlencode(
        [
            (key, value)
            for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if key != "password"
        ]
    )
    shown = f"{userinfo}@{host}" if userinfo else host
    return urllib.parse.urlunsplit((parts.scheme, shown, parts.path, query, ""))


async def create_pool(url: str, /, *, min_size: int, max_size: int) -> asyncpg.Pool:
    """create_pool - a pool of connections to the database at ``url``, ``min_size`` opened now.

    :raises ConfigError: ``store.url`` is not a PostgreSQL URL asyncpg can read.
    :raises DATABASE_ERRORS: the server is unreachable, or refused the connection.
    """
    if not is_postgres_url(url):
        raise ConfigError("store.url", f"{describe(url)!r} is not a postgresql:// URL")
    try:
        pool = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, timeout=CONNECT_TIMEOUT_S
        )
    except (ValueError, asyncpg.ClientConfigurationError) as exc:
        raise ConfigError("store.url", f"{describe(url)}: {exc}") from exc
    assert pool is not None  # create_pool returns the pool once it is initialised
    return pool


@functools.cache
def statement(text: str, /) -> tuple[str, tuple[str, ...]]:
    """statement - ``text`` with ``:name`` rewritten to ``$n``, and the names in their order.

    A name used twice gets one number. Cached: statements are module constants.

    >>> statement("SELECT :a, :b::text, :a")
    ('SELECT $1, $2::text, $1', ('a', 'b'))
    """
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _NAMED.sub(number, text), tuple(names)


def arguments(names: tuple[str, ...], params: Mapping[str, Any], /) -> list[Any]:
    """arguments - the values of ``params`` in the order of ``names`` (from `statement`).

    :raises KeyError: a name has no value.
    """
    return [params[name] for name in names]
