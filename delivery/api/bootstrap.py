"""The API tokens at start: configured ones, or an admin token created at first start.

With ``[[api.tokens]]`` configured, those are the only tokens. Without any, the first start
creates an admin token (all permissions), stores only its SHA-256 in registry meta
(`ADMIN_TOKEN_META_KEY`) and hands the secret back once, for `delivery serve` to print; later
starts load the digest and hand back nothing, so the secret exists only where the operator put
it.

Outcomes:
    load_tokens() returns the TokenTable and, on the first start only, the new secret.

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

__all__ = ["ADMIN_TOKEN_BYTES", "ADMIN_TOKEN_META_KEY", "ADMIN_TOKEN_NAME", "Tokens", "load_tokens"]

ADMIN_TOKEN_META_KEY = "api.admin_token_sha256"
ADMIN_TOKEN_NAME = "admin"
ADMIN_TOKEN_BYTES = 32
"""Entropy of the generated token: 256 bits, beyond any online or offline guessing."""


@dataclass(frozen=True, slots=True)
class Tokens:
    """The accepted tokens; ``new_admin_secret`` is set only on the start that created it."""

    table: auth.TokenTable
    new_admin_secret: str | None = None


async def load_tokens(registry: RegistryLike, configured: Sequence[config.ApiToken], /) -> Tokens:
    """The tokens the API accepts, creating the admin token on the first start without any."""
    if configured:
        return Tokens(auth.TokenTable.from_settings(configured))
    digest = await registry.get_meta(ADMIN_TOKEN_META_KEY)
    secret = None
    if digest is None:
        secret = secrets.token_urlsafe(ADMIN_TOKEN_BYTES)
        digest = auth.sha256_hex(secret)
        await registry.set_meta(ADMIN_TOKEN_META_KEY, digest)
    table = auth.TokenTable([(ADMIN_TOKEN_NAME, digest, [auth.ALL_PERMISSIONS])])
    return Tokens(table, secret)
