"""Every default of the managed objects (DESIGN §3), and the objects made at first start.

This module is the only home of these values (STYLE §9): the schema, the first-start seeding,
the built-in fallbacks of the engine snapshot and the README all read them from here. Values
are in wire form: durations in milliseconds, Expressions as ``{"match": [...], "else": ...}``.

First-start objects are created once, when the store is new; an operator who deletes or
changes them later is never overridden on restart.

Schedules beyond DESIGN §3 (chosen here, and documented in the README):
    local   retry 1m,2m,5m,10m,15m,30m,1h (last repeats), notify 1d, expire after 3d. Local
            delivery fails only when our own mailbox store is down: retry soon, tell the
            sender after a day, give up on the same horizon as remote mail.
    dsn     retry 2m,5m,10m,15m,30m,1h,2h, no delay notices, expire after 1d. A bounce has a
            null sender, so a delay notice about it has nowhere to go (RFC 5321 §4.5.5), and a
            bounce undeliverable for a day is nearly always backscatter to a forged sender.
    report  retry 2m,5m,10m,15m,30m,1h,2h, no delay notices, expire after 1d. DMARC and
            TLS-RPT reports are daily aggregates: one older than a day is superseded.
"""

from __future__ import annotations

from typing import Any, Final

from delivery.durations import UNIT_MS

__all__ = [
    "ALLOW_INVALID_CERTS",
    "CONNECT_TIMEOUT_MS",
    "DATA_TIMEOUT_MS",
    "EHLO_TIMEOUT_MS",
    "FIRST_START_OBJECTS",
    "GREETING_TIMEOUT_MS",
    "IMPLICIT_TLS",
    "IP_LOOKUP_STRATEGY",
    "MAIL_FROM_TIMEOUT_MS",
    "MAX_MULTIHOMED",
    "MAX_MX_HOSTS",
    "MTA_STS_TIMEOUT_MS",
    "OUTBOUND_CONNECTION",
    "OUTBOUND_ROUTE",
    "OUTBOUND_SCHEDULE",
    "OUTBOUND_TLS",
    "RCPT_TO_TIMEOUT_MS",
    "RELAY_PORT",
    "RELAY_PROTOCOL",
    "SCHEDULE_EXPIRY",
    "SCHEDULE_NOTIFY_MS",
    "SCHEDULE_QUEUE",
    "SCHEDULE_RETRY_MS",
    "THREADS_PER_NODE",
    "TLS_MODE",
    "TLS_TIMEOUT_MS",
]

_MINUTE_MS: Final = UNIT_MS["m"]
_HOUR_MS: Final = UNIT_MS["h"]
_DAY_MS: Final = UNIT_MS["d"]

# --- MtaOutboundStrategy (singleton): the four strategy expressions, exactly DESIGN §3 ---------

OUTBOUND_CONNECTION: Final[dict[str, Any]] = {"else": "'default'"}
"""Connection strategy, host variables."""

OUTBOUND_ROUTE: Final[dict[str, Any]] = {
    "match": [{"if": "is_local_domain(rcpt_domain)", "then": "'local'"}],
    "else": "'mx'",
}
"""Route, rcpt variables."""

OUTBOUND_SCHEDULE: Final[dict[str, Any]] = {
    "match": [
        {"if": "is_local_domain(rcpt_domain)", "then": "'local'"},
        {"if": "source == 'dsn'", "then": "'dsn'"},
        {"if": "source == 'report'", "then": "'report'"},
    ],
    "else": "'remote'",
}
"""Delivery schedule, rcpt variables."""

OUTBOUND_TLS: Final[dict[str, Any]] = {
    "match": [{"if": "retry_num > 0 && last_error == 'tls'", "then": "'invalid-tls'"}],
    "else": "'default'",
}
"""TLS strategy, host variables: after a certificate failure, retry without verification."""

# --- MtaTlsStrategy -------------------------------------------------------------------------

ALLOW_INVALID_CERTS: Final = False
TLS_MODE: Final = "optional"
"""Default of ``dane``, ``mtaSts`` and ``startTls``."""
MTA_STS_TIMEOUT_MS: Final = 5 * _MINUTE_MS
TLS_TIMEOUT_MS: Final = 3 * _MINUTE_MS

# --- MtaRoute -------------------------------------------------------------------------------

IP_LOOKUP_STRATEGY: Final = "v4ThenV6"
MAX_MULTIHOMED: Final = 2
MAX_MX_HOSTS: Final = 5
RELAY_PORT: Final = 25
RELAY_PROTOCOL: Final = "smtp"
IMPLICIT_TLS: Final = False

# --- MtaConnectionStrategy ------------------------------------------------------------------

CONNECT_TIMEOUT_MS: Final = 5 * _MINUTE_MS
GREETING_TIMEOUT_MS: Final = 5 * _MINUTE_MS
EHLO_TIMEOUT_MS: Final = 5 * _MINUTE_MS
MAIL_FROM_TIMEOUT_MS: Final = 5 * _MINUTE_MS
RCPT_TO_TIMEOUT_MS: Final = 5 * _MINUTE_MS
DATA_TIMEOUT_MS: Final = 10 * _MINUTE_MS

# --- MtaDeliverySchedule: defaults of a new schedule are those of `remote` ------------------

SCHEDULE_QUEUE: Final = "remote"
"""Virtual queue of the built-in fallback schedule (a schedule object must name its own)."""
SCHEDULE_RETRY_MS: Final[tuple[int, ...]] = (
    2 * _MINUTE_MS,
    5 * _MINUTE_MS,
    10 * _MINUTE_MS,
    15 * _MINUTE_MS,
    30 * _MINUTE_MS,
    1 * _HOUR_MS,
    2 * _HOUR_MS,
    24 * _HOUR_MS,
    3 * _DAY_MS,
)
"""Delay before each retry; the last one repeats until the message expires."""
SCHEDULE_NOTIFY_MS: Final[tuple[int, ...]] = (1 * _DAY_MS, 3 * _DAY_MS)
"""Queue age at which a delay DSN goes to the sender."""
SCHEDULE_EXPIRY: Final[dict[str, Any]] = {"@type": "Ttl", "expire": 3 * _DAY_MS}

# --- MtaVirtualQueue ------------------------------------------------------------------------

THREADS_PER_NODE: Final = 25
"""Concurrent deliveries of a new virtual queue on each node, when not given."""

# --- Objects created at first start (DESIGN §3), in creation order --------------------------

_SHORT_RETRY_MS: Final = [
    2 * _MINUTE_MS,
    5 * _MINUTE_MS,
    10 * _MINUTE_MS,
    15 * _MINUTE_MS,
    30 * _MINUTE_MS,
    1 * _HOUR_MS,
    2 * _HOUR_MS,
]
"""Retries of dsn and report: a few hours of effort within their one-day lifetime."""

FIRST_START_OBJECTS: Final[tuple[tuple[str, dict[str, Any]], ...]] = (
    ("MtaTlsStrategy", {"name": "default"}),
    ("MtaTlsStrategy", {"name": "invalid-tls", "allowInvalidCerts": True}),
    ("MtaRoute", {"name": "mx", "@type": "Mx"}),
    ("MtaRoute", {"name": "local", "@type": "Local"}),
    ("MtaConnectionStrategy", {"name": "default"}),
    ("MtaVirtualQueue", {"name": "local", "threadsPerNode": 25}),
    ("MtaVirtualQueue", {"name": "remote", "threadsPerNode": 50}),
    ("MtaVirtualQueue", {"name": "dsn", "threadsPerNode": 5}),
    ("MtaVirtualQueue", {"name": "report", "threadsPerNode": 5}),
    (
        "MtaDeliverySchedule",
        {
            "name": "local",
            "queue": "local",
            "retry": [
                1 * _MINUTE_MS,
                2 * _MINUTE_MS,
                5 * _MINUTE_MS,
                10 * _MINUTE_MS,
                15 * _MINUTE_MS,
                30 * _MINUTE_MS,
                1 * _HOUR_MS,
            ],
            "notify": [1 * _DAY_MS],
            "expiry": {"@type": "Ttl", "expire": 3 * _DAY_MS},
        },
    ),
    (
        "MtaDeliverySchedule",
        {
            "name": "remote",
            "queue": "remote",
            "retry": list(SCHEDULE_RETRY_MS),
            "notify": list(SCHEDULE_NOTIFY_MS),
            "expiry": dict(SCHEDULE_EXPIRY),
        },
    ),
    (
        "MtaDeliverySchedule",
        {
            "name": "dsn",
            "queue": "dsn",
            "retry": _SHORT_RETRY_MS,
            "notify": [],
            "expiry": {"@type": "Ttl", "expire": 1 * _DAY_MS},
        },
    ),
    (
        "MtaDeliverySchedule",
        {
            "name": "report",
            "queue": "report",
            "retry": _SHORT_RETRY_MS,
            "notify": [],
            "expiry": {"@type": "Ttl", "expire": 1 * _DAY_MS},
        },
    ),
)
"""(object type, wire object) pairs; omitted properties take the defaults above. The
MtaOutboundStrategy singleton is created alongside, with the four expressions above."""
