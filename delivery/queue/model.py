"""Queue data model: messages, recipients, leases and updates as frozen values.

What the queue holds. A message is stored once, body included, with the envelope
facts that later decisions need (DESIGN §4 variables, RFC 3461 DSN parameters,
RFC 6531 SMTPUTF8, RFC 6152 8BITMIME, RFC 8689 REQUIRETLS); each of its recipients
carries its own delivery state. Every time is UTC epoch milliseconds (``int``), the
unit of every duration in DESIGN §3; callers read the clock once with `now_ms` and
pass ``now`` down, so decisions stay testable.

Recipient life cycle (`RecipientStatus`):
    SCHEDULED  waiting until ``due``. While a worker holds a lease, ``due`` is the
               lease expiry: if the worker dies, the recipient is due again then.
    DELIVERED  accepted by the next hop (final)
    FAILED     bounced, or expired (final)
    CANCELLED  removed by an operator (final)
A recipient leaves SCHEDULED only through `QueueStore.record` or `QueueStore.cancel`;
a final status never changes again.

Security:
    Addresses, ENVID, ORCPT and the body come from SMTP clients. They are stored
    verbatim (ENVID and ORCPT still xtext-encoded, RFC 3461 §4) and never parsed
    here beyond splitting the recipient domain.

Standards: RFC 3461 (NOTIFY, ORCPT, RET, ENVID), RFC 5321, RFC 6531, RFC 8689.
"""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import dataclass, field

from delivery.errors import DeliveryError, LastError

__all__ = [
    "InvalidEnvelope",
    "Lease",
    "MessageSource",
    "NewMessage",
    "NewRecipient",
    "Notify",
    "QueuedMessage",
    "QueuedRecipient",
    "RecipientRequest",
    "RecipientStatus",
    "RecipientUpdate",
    "Ret",
    "domain_of",
    "make_lease_token",
    "make_message_id",
    "now_ms",
]

MESSAGE_ID_RANDOM_BYTES = 8
"""Random bytes after the timestamp in a message id: 64 bits make a collision between
two messages created in the same millisecond negligible, across nodes too."""

LEASE_TOKEN_RANDOM_BYTES = 12
"""Random part of a lease token: tokens must never repeat, or a lapsed lease's late
outcome could be taken for the current one's."""


class InvalidEnvelope(DeliveryError, ValueError):
    """A message or recipient cannot be queued as given.

    :param field: the envelope field at fault, e.g. ``address`` or ``notify``.
    :param reason: what is wrong with it.
    """

    def __init__(self, field: str, reason: str, /) -> None:
        super().__init__(field, reason)
        self.field, self.reason = field, reason

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class MessageSource(enum.StrEnum):
    """How the message entered the queue: the `source` variable of DESIGN §4."""

    AUTHENTICATED = "authenticated"
    UNAUTHENTICATED = "unauthenticated"
    DSN = "dsn"
    REPORT = "report"


class Ret(enum.StrEnum):
    """RFC 3461 §4.3 RET: what a failure DSN returns of the original message."""

    FULL = "FULL"
    HDRS = "HDRS"


class Notify(enum.StrEnum):
    """RFC 3461 §4.1 NOTIFY keywords; an empty set means NOTIFY was not given."""

    NEVER = "NEVER"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELAY = "DELAY"


class RecipientStatus(enum.StrEnum):
    """Delivery state of one recipient (see the module docstring)."""

    SCHEDULED = "scheduled"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """True when no worker will ever look at the recipient again."""
        return self is not RecipientStatus.SCHEDULED


def now_ms() -> int:
    """now_ms - the current time in UTC epoch milliseconds."""
    return time.time_ns() // 1_000_000


def make_message_id(now: int, /) -> str:
    """make_message_id - a unique id that sorts by creation time.

    Twelve hex digits of the millisecond timestamp, then 16 random hex digits, so
    that sorting ids as strings sorts messages by arrival (within a millisecond the
    order is arbitrary).

    >>> make_message_id(1_700_000_000_000)[:12]
    '018bcfe56800'
    """
    return f"{now:012x}{secrets.token_hex(MESSAGE_ID_RANDOM_BYTES)}"


def make_lease_token(owner: str, /) -> str:
    """make_lease_token - a token no other lease ever had: the owner, then random hex.

    >>> make_lease_token("node1").startswith("node1/")
    True
    """
    return f"{owner}/{secrets.token_hex(LEASE_TOKEN_RANDOM_BYTES)}"


def domain_of(address: str, /) -> str:
    """domain_of - the lowercased domain of a recipient address.

    The domain is what follows the last ``@`` (a quoted local part may contain
    ``@``). Non-ASCII domains (SMTPUTF8) are lowercased, not converted to A-labels.

    >>> domain_of('"a@b"@Example.ORG')
    'example.org'

    :raises InvalidEnvelope: no ``@`` or an empty domain.
    """
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidEnvelope("address", f"{address!r} is not local-part@domain")
    return domain.lower()


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to queue, as the submitter (or the DSN builder) received it.

    ``sender`` is the envelope sender; ``""`` is the null return path (RFC 5321
    §4.5.5), which never gets a DSN. ``body`` is the RFC 5322 message with CRLF line
    endings, dot-unstuffed, stored once however many recipients it has.
    ``received_from_ip`` is ``""`` and ``received_via_port`` 0 for mail made on this
    host (``delivery send``, DSNs, reports). ``received_at`` is in epoch ms.
    ``env_id`` is the ENVID parameter still xtext-encoded, ``None`` when absent;
    ``ret`` is ``None`` when RET was not given.
    """

    sender: str
    body: bytes
    source: MessageSource
    received_at: int
    received_from_ip: str = ""
    received_via_port: int = 0
    priority: int = 0
    env_id: str | None = None
    ret: Ret | None = None
    smtputf8: bool = False
    eightbitmime: bool = False
    requiretls: bool = False


@dataclass(frozen=True, slots=True)
class RecipientRequest:
    """A recipient as the submitter asked for it, before the `schedule` expression places it.

    ``notify`` is empty when NOTIFY was not given; ``orcpt`` is the ORCPT parameter as
    received (``addr-type;xtext``), None when absent (RFC 3461).
    """

    address: str
    notify: frozenset[Notify] = frozenset()
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class NewRecipient:
    """A recipient to queue with its initial schedule.

    ``queue`` and ``schedule`` are the names the `schedule` expression chose.
    ``due`` is the first attempt time (usually ``received_at``); ``notify_due`` the
    first delay DSN time, ``None`` for none. The recipient expires at
    ``expires_at`` (epoch ms) or after ``max_attempts`` attempts: at least one must
    be given, so that no recipient stays queued forever. ``notify`` is empty when
    NOTIFY was not given; ``orcpt`` is the ORCPT parameter as received
    (``addr-type;xtext``), ``None`` when absent.

    :raises InvalidEnvelope: malformed address, NEVER combined with another
        keyword (RFC 3461 §4.1), or no expiry.
    """

    address: str
    queue: str
    schedule: str
    due: int
    notify: frozenset[Notify] = frozenset()
    orcpt: str | None = None
    notify_due: int | None = None
    expires_at: int | None = None
    max_attempts: int | None = None
    domain: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "domain", domain_of(self.address))
        if Notify.NEVER in self.notify and len(self.notify) > 1:
            raise InvalidEnvelope("notify", "NEVER cannot be combined with other keywords")
        if self.expires_at is None and self.max_attempts is None:
            raise InvalidEnvelope("expires_at", "give expires_at or max_attempts")


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    """One recipient as stored, with its delivery state.

    ``id`` is the store's key for the recipient. ``due`` (epoch ms) is ``None``
    once the status is final. ``retry_num`` counts the attempts made so far and
    ``notify_num`` the delay DSNs sent; ``notify_due`` is the next delay DSN time,
    ``None`` for none. ``last_error`` is `LastError.NONE` and ``last_status`` ``""``
    until the first attempt. ``lease_owner`` and ``lease_until`` (epoch ms) are
    ``None`` unless a worker holds the recipient.
    """

    id: int
    message_id: str
    address: str
    domain: str
    status: RecipientStatus
    due: int | None
    retry_num: int
    notify_num: int
    notify_due: int | None
    expires_at: int | None
    max_attempts: int | None
    queue: str
    schedule: str
    last_error: LastError
    last_status: str
    notify: frozenset[Notify]
    orcpt: str | None
    lease_owner: str | None
    lease_until: int | None


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """One stored message (without its body: see `QueueStore.load_body`).

    ``size`` is the body size in bytes. ``recipients`` are in the order they were
    queued; in a `Lease` they are only the leased recipients.
    """

    id: str
    sender: str
    size: int
    source: MessageSource
    received_at: int
    received_from_ip: str
    received_via_port: int
    priority: int
    env_id: str | None
    ret: Ret | None
    smtputf8: bool
    eightbitmime: bool
    requiretls: bool
    recipients: tuple[QueuedRecipient, ...]


@dataclass(frozen=True, slots=True)
class Lease:
    """Due recipients of one message and one domain, held by one worker.

    One lease is one delivery job: its recipients can share an SMTP transaction.
    ``token`` identifies this lease: every `RecipientUpdate` for these recipients
    must carry it. ``until`` (epoch ms) is when the lease lapses and the
    recipients become due for any worker again. ``message.recipients`` are the
    leased recipients only, all in ``domain``. ``body`` is the message body when it
    came with the lease (`QueueStore.lease_due` reads small bodies in the same
    transaction); None: read it with `QueueStore.load_body`.
    """

    token: str
    owner: str
    until: int
    domain: str
    message: QueuedMessage
    body: bytes | None = field(default=None, repr=False)  # message content: kept out of logs

    @property
    def recipients(self) -> tuple[QueuedRecipient, ...]:
        """The leased recipients."""
        return self.message.recipients


@dataclass(frozen=True, slots=True)
class RecipientUpdate:
    """The new state of one leased recipient after an attempt.

    Every field is the new value; start from `RecipientUpdate.unchanged` and change
    what the attempt changed with `dataclasses.replace`. ``due`` is required when
    ``status`` is SCHEDULED and ignored (stored as ``None``) otherwise.

    :raises InvalidEnvelope: SCHEDULED without ``due``.
    """

    recipient_id: int
    token: str
    status: RecipientStatus
    due: int | None
    retry_num: int
    notify_num: int
    notify_due: int | None
    last_error: LastError
    last_status: str
    queue: str
    schedule: str
    expires_at: int | None
    max_attempts: int | None

    def __post_init__(self) -> None:
        if self.status is RecipientStatus.SCHEDULED and self.due is None:
            raise InvalidEnvelope("due", "a rescheduled recipient needs its next due time")

    @classmethod
    def unchanged(cls, lease: Lease, recipient: QueuedRecipient, /) -> RecipientUpdate:
        """An update that keeps the recipient's state, to derive the real one from.

        :param lease: the lease the recipient was handed out in.
        :param recipient: the recipient as leased.
        """
        return cls(
            recipient_id=recipient.id,
            token=lease.token,
            status=recipient.status,
            due=recipient.due,
            retry_num=recipient.retry_num,
            notify_num=recipient.notify_num,
            notify_due=recipient.notify_due,
            last_error=recipient.last_error,
            last_status=recipient.last_status,
            queue=recipient.queue,
            schedule=recipient.schedule,
            expires_at=recipient.expires_at,
            max_attempts=recipient.max_attempts,
        )
