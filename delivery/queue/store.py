"""The durable queue store contract, shared by the SQLite and PostgreSQL stores.

`QueueStore` is what the submitter, the worker, the API and the CLI use; they never
see SQL. Implementations: `delivery.queue.sqlite.SqliteQueueStore` and
`delivery.queue.postgres.PostgresQueueStore`, both `delivery.queue.sqlstore.SqlQueueStore`
(the methods written once, with the statements of `delivery.queue.sql`).

Guarantees every implementation keeps:
    Durable enqueue    `enqueue` returns only after the message is committed and
                       flushed to stable storage: only then may the submitter answer
                       250. Concurrent enqueues share one commit (group commit).
    Exclusive leases   a due recipient is handed to one lease at a time; concurrent
                       `lease_due` calls, from one process or several, never return
                       the same recipient. A lease lapses at its ``until`` time and
                       the recipient is then due again for anyone (crash safety).
    Explicit outcomes  nothing becomes final except through `record` (or `cancel`),
                       and `record` refuses an update whose lease token no longer
                       holds the recipient, so a recipient is never marked delivered
                       twice, nor after another worker took it over. A `Notice`
                       recorded with the outcomes (a DSN) is queued only when every
                       outcome it reports on was applied, so a refused outcome never
                       sends one: whoever holds the recipient now reports on it.
    Flat cost          leasing and `due_soonest` go through an index on
                       (status, due): their cost does not grow with queue size.

Outcomes:
    `MessageNotFound`  `load_body` for a message that is not (or no longer) queued
    `StoreError`       the database failed or stayed locked: nothing was changed
    `InvalidEnvelope`  (from `delivery.queue.model`) a message that cannot be queued

Limits: `MAX_LEASE_BATCH` recipients per lease call; `MAX_LIST_LIMIT` messages per
list page. A lease must outlast the longest delivery attempt, or another worker may
start the same delivery before the first one records its outcome (its record is
then refused, but the message may arrive twice).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from delivery.errors import DeliveryError
from delivery.queue import model

__all__ = [
    "LEASE_BODY_MAX_BYTES",
    "MAX_LEASE_BATCH",
    "MAX_LIST_LIMIT",
    "PURGE_BATCH",
    "Cancelled",
    "MessageNotFound",
    "NewEntry",
    "Notice",
    "QueueError",
    "QueueStore",
    "Recorded",
    "StoreError",
    "check_cancel_notice",
    "check_entries",
    "check_lease",
    "check_list_limit",
    "check_notices",
]

MAX_LEASE_BATCH = 1000
"""Most recipients one `lease_due` call hands out: a lease is one write transaction,
and a longer one holds the write lock that submissions wait for."""

LEASE_BODY_MAX_BYTES = 64 * 1024
"""Bodies up to this size come with their lease (`Lease.body`), read in the lease's own
transaction: a worker then starts the delivery without another store call. Larger ones
are left to `QueueStore.load_body`, so that one lease transaction copies at most
`MAX_LEASE_BATCH` times this (64 MiB), however large the queued messages are."""

MAX_LIST_LIMIT = 1000
"""Most messages one `list_messages` page returns: bounds the memory of one API or
CLI call on a large queue."""

PURGE_BATCH = 500
"""Default number of finished messages one `purge_finished` sweep deletes."""

NewEntry = tuple[model.NewMessage, Sequence[model.NewRecipient]]
"""A message to queue with its recipients."""


@dataclass(frozen=True, slots=True)
class Notice:
    """A message that reports on outcomes (a DSN), queued by `QueueStore.record` with them.

    ``about`` are the ids of the recipients it reports on, each with an update in the
    same `record` call: the notice is queued only if every one of them was applied.
    `QueueStore.cancel` takes one too: there ``about`` are the recipients it cancels.
    """

    message: model.NewMessage
    recipients: Sequence[model.NewRecipient]
    about: frozenset[int]


class QueueError(DeliveryError):
    """Base class of the queue store's errors."""


class StoreError(QueueError):
    """The database failed (I/O error, full disk, lock held too long); nothing changed.

    :param operation: the store operation, e.g. ``enqueue``.
    :param reason: what the database said.
    """

    def __init__(self, operation: str, reason: str, /) -> None:
        super().__init__(operation, reason)
        self.operation, self.reason = operation, reason

    def __str__(self) -> str:
        return f"queue {self.operation} failed: {self.reason}"


class MessageNotFound(QueueError, LookupError):
    """No queued message has this id (never queued, or purged).

    :param message_id: the id asked for.
    """

    def __init__(self, message_id: str, /) -> None:
        super().__init__(message_id)
        self.message_id = message_id

    def __str__(self) -> str:
        return f"no queued message {self.message_id}"


@dataclass(frozen=True, slots=True)
class Recorded:
    """What `QueueStore.record` did.

    ``refused`` are the recipient ids whose update was not applied because the lease
    token no longer held them (lease lapsed and taken over, recipient cancelled, or
    already final). ``message_ids`` has one item per notice, in order: the id it was
    queued under, or ``None`` when one of the outcomes it reports on was refused.
    """

    refused: frozenset[int]
    message_ids: tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What `QueueStore.cancel` did.

    ``ids`` are the recipients it cancelled (empty: none was scheduled, or ``stale``).
    ``notice_id`` is the id the notice was queued under, ``None`` when none was given or
    ``stale``. ``stale`` is True when a notice was given but the message's scheduled
    recipients were no longer exactly the ones it reports on (one was delivered or failed
    meanwhile): then nothing changed; read the message again and build the notice anew.
    """

    ids: frozenset[int]
    notice_id: str | None = None
    stale: bool = False


class QueueStore(Protocol):
    """Durable message queue (see the module docstring for the guarantees).

    Times are UTC epoch milliseconds. Every method may raise `StoreError`.
    """

    async def enqueue(
        self, message: model.NewMessage, recipients: Sequence[model.NewRecipient], /
    ) -> str:
        """Queue one message durably; return its id.

        :raises InvalidEnvelope: no recipients.
        """
        ...

    async def enqueue_many(self, entries: Sequence[NewEntry], /) -> list[str]:
        """Queue several messages in one durable commit; return their ids in order.

        :raises InvalidEnvelope: an entry has no recipients (nothing is queued).
        """
        ...

    async def lease_due(
        self, *, now: int, owner: str, lease_ms: int, limit: int, queue: str | None = None
    ) -> list[model.Lease]:
        """Hand out due recipients to ``owner`` until ``now + lease_ms``.

        Recipients whose ``due`` is at or before ``now`` (including those whose
        lease lapsed) are taken oldest due first, at most ``limit`` of them, then
        completed with the other due recipients of the same message and domain
        while ``limit`` allows; one `Lease` per message and domain, in order of
        their oldest due recipient. Each lease of a message up to
        `LEASE_BODY_MAX_BYTES` carries its body (`Lease.body`); the others have None.

        :param owner: the node (or worker) name; `release` gives its leases back.
        :param queue: only recipients of this virtual queue.
        :raises ValueError: ``limit`` outside 1..`MAX_LEASE_BATCH`, or
            ``lease_ms`` not positive.
        """
        ...

    async def record(
        self, updates: Sequence[model.RecipientUpdate], /, *, notices: Sequence[Notice] = ()
    ) -> Recorded:
        """Apply attempt outcomes and release their leases, in one transaction.

        Updates whose token no longer holds their recipient are skipped and
        returned in `Recorded.refused`; the others are applied. ``notices`` are
        queued in the same transaction, so that a recipient never fails without
        its DSN: each one only if every update it is ``about`` was applied (a DSN
        about a refused outcome would duplicate the one its new holder sends).

        :raises InvalidEnvelope: a notice without recipients (nothing is recorded).
        :raises ValueError: a notice about no recipient, or about one without an
            update here.
        """
        ...

    async def release(self, owner: str, /, *, now: int) -> int:
        """Give back every lease of ``owner`` (a node stopping); return how many.

        The recipients are due again at ``now``; their state is otherwise unchanged.
        """
        ...

    async def release_leases(self, leases: Sequence[model.Lease], /, *, now: int) -> int:
        """Give back what these leases still hold (a job that did not finish); return how many.

        The recipients not recorded under them are due again at ``now``, their state
        otherwise unchanged: no attempt is counted. A later `record` under these leases
        is refused for them.
        """
        ...

    async def retry_now(self, message_id: str, /, *, now: int) -> int:
        """Make the message's unleased scheduled recipients due at ``now``.

        :returns: how many recipients were rescheduled.
        """
        ...

    async def cancel(
        self, message_id: str, /, *, reason: str, notice: Notice | None = None
    ) -> Cancelled:
        """Mark the message's scheduled recipients CANCELLED, with ``notice`` if given.

        ``reason`` becomes their ``last_status``. A leased recipient is cancelled
        too; its worker's later `record` is refused. ``notice`` (the DSN to the sender)
        is queued in the same transaction, so that the cancellation and its DSN happen
        together or not at all; its ``about`` must be the message's scheduled
        recipients, the ones cancelled: if they changed since it was built, nothing is
        cancelled and `Cancelled.stale` says so. Without a notice, no DSN is sent.

        :returns: the recipients cancelled and the notice's message id.
        :raises InvalidEnvelope: a notice without recipients.
        :raises ValueError: a notice about no recipient.
        """
        ...

    async def load_body(self, message_id: str, /) -> bytes:
        """Return the message body as queued.

        :raises MessageNotFound: no such message.
        """
        ...

    async def get_message(self, message_id: str, /) -> model.QueuedMessage | None:
        """Return the message with all its recipients, or ``None``."""
        ...

    async def list_messages(
        self,
        *,
        status: model.RecipientStatus | None = None,
        domain: str | None = None,
        sender: str | None = None,
        queue: str | None = None,
        recipient: str | None = None,
        due_before: int | None = None,
        due_after: int | None = None,
        deferred: bool | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[model.QueuedMessage]:
        """List messages by id (arrival order), with all their recipients.

        Filters combine with AND. The recipient filters keep messages with at least
        one recipient matching all of them: ``status``; ``domain`` (case-insensitive);
        ``queue``; ``recipient``, the address (case-insensitive, whole address);
        ``due_before`` and ``due_after`` (epoch ms), a scheduled recipient due
        before that time (``due < due_before``), or at or after it (``due >=
        due_after``), as RFC 8621 reads ``before`` and ``after`` (a leased recipient
        is due when its lease lapses); ``deferred``, True for a scheduled recipient
        already attempted (``retry_num > 0``), False for any other. ``sender``
        matches the envelope sender case-insensitively (``""`` is the null sender).
        ``after`` is the last id of the previous page. An operator's tool: it walks
        messages in id order, so a filter that matches few messages reads many.

        :raises ValueError: ``limit`` outside 1..`MAX_LIST_LIMIT`.
        """
        ...

    async def due_soonest(self, *, queue: str | None = None) -> int | None:
        """When the next scheduled recipient is due (lease expiries included).

        :returns: epoch ms, possibly in the past; ``None`` when nothing is scheduled.
        """
        ...

    async def purge_finished(
        self, message_ids: Sequence[str] | None = None, /, *, limit: int = PURGE_BATCH
    ) -> list[str]:
        """Delete messages whose recipients are all final, body included.

        :param message_ids: check these messages only (a worker after `record`);
            ``None`` sweeps the queue for at most ``limit`` finished messages.
        :returns: the ids deleted.
        """
        ...

    async def count_by_status(self) -> dict[model.RecipientStatus, int]:
        """Recipients per status, every status present (for metrics)."""
        ...

    async def count_by_queue(self) -> dict[tuple[str, model.RecipientStatus], int]:
        """Recipients per virtual queue and status (for metrics).

        Only the pairs that have recipients are present: the store does not know
        which queues are configured. A full count, like `count_by_status`.
        """
        ...

    async def close(self) -> None:
        """Finish pending commits and close the store."""
        ...


# --- argument checks every store makes the same way -----------------------------------------


def check_lease(*, limit: int, lease_ms: int) -> None:
    """check_lease - `QueueStore.lease_due`'s arguments.

    :raises ValueError: ``limit`` outside 1..`MAX_LEASE_BATCH`, or ``lease_ms`` not positive.
    """
    if not 1 <= limit <= MAX_LEASE_BATCH:
        raise ValueError(f"limit must be 1..{MAX_LEASE_BATCH}, not {limit}")
    if lease_ms <= 0:
        raise ValueError(f"lease_ms must be positive, not {lease_ms}")


def check_list_limit(limit: int, /) -> None:
    """check_list_limit - `QueueStore.list_messages`' page size.

    :raises ValueError: ``limit`` outside 1..`MAX_LIST_LIMIT`.
    """
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIST_LIMIT}, not {limit}")


def check_entries(entries: Iterable[NewEntry], /) -> None:
    """check_entries - messages to queue.

    :raises InvalidEnvelope: an entry has no recipients.
    """
    for _, recipients in entries:
        if not recipients:
            raise model.InvalidEnvelope("recipients", "a message needs at least one recipient")


def check_notices(updates: Sequence[model.RecipientUpdate], notices: Sequence[Notice], /) -> None:
    """check_notices - `QueueStore.record`'s notices, against its updates.

    :raises InvalidEnvelope: a notice without recipients.
    :raises ValueError: a notice about no recipient, or about one without an update.
    """
    check_entries((notice.message, notice.recipients) for notice in notices)
    updated = {update.recipient_id for update in updates}
    for notice in notices:
        if not notice.about or not notice.about <= updated:
            raise ValueError("a notice must be about recipients updated in the same record")


def check_cancel_notice(notice: Notice | None, /) -> None:
    """check_cancel_notice - `QueueStore.cancel`'s notice.

    :raises InvalidEnvelope: a notice without recipients.
    :raises ValueError: a notice about no recipient.
    """
    if notice is None:
        return
    check_entries([(notice.message, notice.recipients)])
    if not notice.about:
        raise ValueError("a notice must be about the recipients it cancels")
