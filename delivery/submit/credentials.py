"""Who may authenticate to the submission listener (AUTH PLAIN/LOGIN) and with which secret.

`Credentials` holds, per user name, the SHA-256 of the user's secret, never the secret once
built, and checks a claimed identity and secret in constant time.

Outcomes: `Credentials.check` is True or False; building from a malformed digest raises
ConfigError naming the user.

Security:
    Comparisons use `hmac.compare_digest` on digests, and an unknown user costs the same as
    a wrong secret, so timing tells neither. A bare SHA-256 suits long random secrets (like
    the API tokens); it is not a password hash, so give each user a random secret of 20+
    characters rather than a memorable password.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

from delivery.errors import ConfigError

__all__ = ["Credentials"]

_HEX_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_NO_USER = hashlib.sha256(b"\0no such user\0").digest()  # compared against for unknown users


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


class Credentials:
    """The users allowed to authenticate (see the module docstring).

    :param digests: user name -> SHA-256 of the secret, as 64 hex digits.
    :raises ConfigError: a digest that is not 64 hex digits.
    """

    def __init__(self, digests: Mapping[str, str], /) -> None:
        self._digests: dict[str, bytes] = {}
        for user, digest in digests.items():
            if not _HEX_SHA256.match(digest):
                raise ConfigError(
                    "submission.users", f"user {user!r}: secret_sha256 must be 64 hex digits"
                )
            self._digests[user] = bytes.fromhex(digest)

    @classmethod
    def from_secrets(cls, secrets: Mapping[str, str], /) -> Credentials:
        """Credentials from user name -> secret in clear (e.g. read from a settings file)."""
        return cls({user: _digest(secret).hex() for user, secret in secrets.items()})

    def __len__(self) -> int:
        return len(self._digests)

    def check(self, identity: str, secret: str, /) -> bool:
        """Whether ``identity`` exists and ``secret`` is its secret (constant time)."""
        expected = self._digests.get(identity, _NO_USER)
        matches = hmac.compare_digest(_digest(secret), expected)
        return matches and identity in self._digests
