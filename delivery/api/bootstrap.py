"""The API tokens at start: configured ones, or an admin token created at first start.

With ``[[api.tokens]]`` configured, those are the only tokens. Without any, the first start
creates an admin token (all permissions); once the API is listening, `keep_admin_token()`
stores only its SHA-256 in registry meta (`ADMIN_TOKEN_META_KEY`) and the caller prints the
secret, once. Later starts load the digest and print nothing, so the secret exists only where
the operator put it. A first start that fails before the API listens stores nothing, so the
next start makes (and shows) a new token rather than keeping one nobody saw.

Outcomes:
    load_tokens() returns the TokenTable and, on a first start, the new secret (not yet
    stored); keep_admin_token() stores its digest.

Security:
    The secret is never stored or logged; losing it means deleting the meta key (or
    configuring tokens). It has 256 bits of entropy from the ``secrets`` module.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from delivery import config
from delivery.api import auth
from delivery.api.methods import RegistryLike

__all__ = [
    "ADMIN_TOKEN_BYTES",
    "ADMIN_TOKEN_META_KEY",
    "ADMIN_TOKEN_NAME",
    "Tokens",
    "keep_admin_token",
    "load_tokens",
]

ADMIN_TOKEN_META_KEY = "api.admin_token_sha256"
ADMIN_TOKEN_NAME = "admin"
ADMIN_TOKEN_BYTES = 32
"""Entropy of the generated token: 256 bits, beyond any online or offline guessing."""


@dataclass(frozen=True, slots=True)
class Tokens:
    """The accepted tokens; ``new_admin_secret`` is set only on a first start."""

    table: auth.TokenTable
    new_admin_secret: str | None = None


async def load_tokens(registry: RegistryLike, configured: Sequence[config.ApiToken], /) -> Tokens:
    """The tokens the API accepts; makes a new admin token on a first start without any."""
    if configured:
        return Tokens(auth.TokenTable.from_settings(configured))
    digest = await registry.get_meta(ADMIN_TOKEN_META_KEY)
    secret = None
    if digest is None:
        secret = secrets.token_urlsafe(ADMIN_TOKEN_BYTES)
        digest = auth.sha256_hex(secret)
    table = auth.TokenTable([(ADMIN_TOKEN_NAME, digest, [auth.ALL_PERMISSIONS])])
    return Tokens(table, secret)


async def keep_admin_token(registry: RegistryLike, tokens: Tokens, /) -> None:
    """Store the digest of a new admin token, so that later starts accept it."""
    if tokens.new_admin_secret is not None:
        await registry.set_meta(ADMIN_TOKEN_META_KEY, auth.sha256_hex(tokens.new_admin_secret))
