"""Every error `delivery` raises on purpose.

One base class, each error a category plus structured fields (STYLE §3), so that
callers can tell a bad setting from a bad expression from a failed delivery step
without parsing messages. Expected outcomes (no MX, no policy, NXDOMAIN) are
values, not exceptions; these classes are for what could not be done.
"""

from __future__ import annotations

import enum

__all__ = [
    "AttemptError",
    "ConfigError",
    "DeliveryError",
    "DnsTempFail",
    "DnsTimeout",
    "ExprError",
    "LastError",
]


class LastError(enum.StrEnum):
    """The `last_error` kinds of DESIGN §4: what the last failed attempt ran into."""

    NONE = "none"
    DNS = "dns"
    UNEXPECTED_REPLY = "unexpected-reply"
    CONNECTION = "connection"
    TLS = "tls"
    DANE = "dane"
    MTA_STS = "mta-sts"
    RATE = "rate"
    CONCURRENCY = "concurrency"
    IO = "io"


class DeliveryError(Exception):
    """Base class of every error delivery raises on purpose."""


class ConfigError(DeliveryError, ValueError):
    """A setting or managed-object property is invalid.

    :param field: the setting or property at fault, e.g. ``dns.timeout`` or ``startTls``.
    :param reason: a sentence saying what is wrong and what is expected.
    """

    def __init__(self, field: str, reason: str, /) -> None:
        super().__init__(field, reason)
        self.field, self.reason = field, reason

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class ExprError(DeliveryError, ValueError):
    """An expression failed to compile.

    :param expression: the expression text as the user wrote it.
    :param position: 0-based character offset of the fault in ``expression``.
    :param reason: what is wrong there.
    """

    def __init__(self, expression: str, position: int, reason: str, /) -> None:
        super().__init__(expression, position, reason)
        self.expression, self.position, self.reason = expression, position, reason

    def __str__(self) -> str:
        caret = " " * self.position + "^"
        return f"{self.reason} at position {self.position}\n  {self.expression}\n  {caret}"


class AttemptError(DeliveryError):
    """One delivery step could not complete; `kind` is the DESIGN §4 last_error."""

    kind: LastError = LastError.IO


class DnsTempFail(AttemptError):
    """SERVFAIL, timeout or bogus answer: the host is skipped for now, never downgraded."""

    kind = LastError.DNS


class DnsTimeout(DnsTempFail, TimeoutError):
    """The resolver did not answer within the lookup deadline."""
