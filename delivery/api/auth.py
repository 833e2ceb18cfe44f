"""Bearer-token authentication and per-method permissions of the management API.

A request carries ``Authorization: Bearer <token>`` (RFC 6750). The token is checked against
the configured tokens (``[[api.tokens]]``: a ``secret``, or the ``secret_sha256`` hex digest of
it), or, when none is configured, against the SHA-256 of the admin token created at first start
(see api/bootstrap.py). A match yields a `Principal`: the token's name and permissions.

Permissions are named ``sys<Object><Op>`` with Op one of Get, Create, Update, Destroy, Query
(``sysMtaTlsStrategyGet``, ``sysMtaOutboundStrategyUpdate``); ``*`` grants every permission.

Outcomes:
    TokenTable.authenticate() returns the Principal, or None for a missing, malformed or
    unknown token (the caller answers 401).

Security:
    Every configured token is compared, in constant time (hmac.compare_digest), whether or not
    an earlier one matched, so response time does not tell which token or prefix was close.
    Plain secrets are compared as SHA-256 digests, so inputs of different length take the same
    time. Token secrets never appear in logs, errors or the Principal.

Standards: RFC 6750 (Bearer tokens), RFC 8620 §3.6.2 (forbidden).
Limits: MAX_TOKEN_CHARS caps the presented token before hashing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from delivery import config

__all__ = [
    "ALL_PERMISSIONS",
    "MAX_TOKEN_CHARS",
    "SET_OPS",
    "Op",
    "Principal",
    "TokenTable",
    "bearer_token",
    "permission",
    "sha256_hex",
]

ALL_PERMISSIONS = "*"
"""The permission that grants every other one."""

MAX_TOKEN_CHARS = 512
"""Longest token accepted: real tokens are ~43 characters; this bounds the work per request."""

Op = Literal["Get", "Create", "Update", "Destroy", "Query"]

SET_OPS: tuple[Op, ...] = ("Create", "Update", "Destroy")
"""The operations of /set: a token holding none of them on any type is read-only."""


def permission(object_type: str, op: Op, /) -> str:
    """The permission a method needs.

    >>> permission("MtaTlsStrategy", "Get")
    'sysMtaTlsStrategyGet'
    """
    return f"sys{object_type}{op}"


def sha256_hex(secret: str, /) -> str:
    """The lowercase hex SHA-256 of a token secret, as stored in ``secret_sha256``.

    >>> sha256_hex("change-me")[:16]
    'e2186dbdb1bb4193'
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer_token(header: str | None, /) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None.

    >>> bearer_token("Bearer abc"), bearer_token("bearer  abc "), bearer_token("Basic abc")
    ('abc', 'abc', None)
    """
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
        return None
    return token


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the token's name and what it may do."""

    name: str
    permissions: frozenset[str]

    def may(self, permission_name: str, /) -> bool:
        """Whether this principal holds ``permission_name`` (or ``*``)."""
        return ALL_PERMISSIONS in self.permissions or permission_name in self.permissions

    def may_any(self, names: Iterable[str], /) -> bool:
        """Whether this principal holds at least one of ``names``."""
        return any(self.may(name) for name in names)


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    principal: Principal


class TokenTable:
    """The tokens the API accepts, held only as SHA-256 digests."""

    def __init__(self, entries: Iterable[tuple[str, str, Iterable[str]]] = ()) -> None:
        """:param entries: (name, secret SHA-256 hex, permissions) per token."""
        self._entries = tuple(
            _Entry(bytes.fromhex(digest), Principal(name, frozenset(perms)))
            for name, digest, perms in entries
        )

    @classmethod
    def from_settings(cls, tokens: Iterable[config.ApiToken], /) -> TokenTable:
        """The table of the ``[[api.tokens]]`` settings."""
        return cls(
            (
                token.name,
                token.secret_sha256.lower()
                if token.secret_sha256 is not None
                else sha256_hex(token.secret or ""),
                token.permissions,
            )
            for token in tokens
        )

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str | None, /) -> Principal | None:
        """The principal ``token`` belongs to, or None; constant time per configured token."""
        if token is None:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.digest) and found is None:
                found = entry.principal
        return found
