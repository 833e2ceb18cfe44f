"""The queue as the JMAP object ``QueuedMessage``: get, query and set (DESIGN §6, issue #6).

Methods (capability ``urn:stalwart:jmap``), served beside the registry's (`methods.Dispatcher`):
    x:QueuedMessage/get     messages by id with every recipient's state (sysQueuedMessageGet)
    x:QueuedMessage/query   ids in arrival order, filtered (sysQueuedMessageQuery)
    x:QueuedMessage/set     update only (sysQueuedMessageUpdate); the patch is one action:
                            ``{"action": "retry"}``           due now (scheduled recipients)
                            ``{"action": "cancel"}``          cancelled, with a failure DSN
                                                              to the sender (RFC 3464)
                            ``{"action": "cancelSilently"}``  cancelled, no DSN

A message: ``id``, ``sender`` ("" is the null sender), ``source``, ``size`` (bytes),
``receivedAt``, ``requireTls``, ``envId``, ``recipients``: ``[{id, address, domain, status
(scheduled|delivered|failed|cancelled), deferred (scheduled and attempted before), queue,
schedule, attempts, due, lastError, lastStatus, expiresAt}]``. Times are RFC 3339 UTC
(``2026-11-21T05:15:05Z``, milliseconds when not zero), null when there is none.

Query filter: a FilterCondition with any of ``status`` (one of the statuses, or ``deferred``),
``domain``, ``sender``, ``recipient`` (whole address; these three case-insensitive), ``queue``,
``dueBefore``, ``dueAfter`` (RFC 3339: a scheduled recipient due before / at or after), or an
``AND`` FilterOperator of such conditions. A message matches when its sender matches and one of
its recipients matches every recipient condition. Results are in arrival order.

The cancel DSN reports each scheduled recipient whose NOTIFY asks for failures (none for a null
sender or NOTIFY=NEVER: `dsn.dsn_action`), status `CANCEL_STATUS`, diagnostic
`CANCEL_DIAGNOSTIC`, returning the original as RET says (`dsn.make_dsn`); its recipient is
planned by the ``schedule`` expression like every DSN (`intake.plan_recipients`). The store
queues it in the same transaction as the cancellation.

Outcomes:
    Method errors (RFC 8620 §3.6.2): ``forbidden`` (checked by the dispatcher),
    ``invalidArguments`` (unknown property, negative position, bad limit), ``unsupportedFilter``
    (unknown condition, bad value, OR/NOT), ``unsupportedSort`` (any sort), ``requestTooLarge``
    (ids over MAX_OBJECTS_IN_GET, or /get of every message in a larger queue),
    ``stateMismatch`` (any ``ifInState``: see Limits), ``serverFail`` (the store failed).
    SetErrors: ``notFound``; ``forbidden`` for create and destroy; ``invalidProperties`` for a
    patch that is not one known action; ``notScheduled`` (no recipient left to act on: each
    one is delivered, failed or cancelled); ``changed`` (the message kept changing while a
    cancel was prepared, CANCEL_ATTEMPTS times: try again).

Security:
    Every method needs its permission, checked by the dispatcher before any store access.
    Filter values go to the store as bound parameters, never into SQL text. The DSN text sent
    to the sender names no token; the operator's ``lastStatus`` names the token that acted.

Standards: RFC 8620 §5.1, §5.3, §5.5; RFC 3339; RFC 3461, RFC 3464 (the cancel DSN).
Limits: the queue changes on its own, so ``state`` is the time of the read and never repeats:
``ifInState`` always mismatches and ``canCalculateChanges`` is false. ``position`` and
``calculateTotal`` walk the queue in pages of `MAX_LIST_LIMIT` messages (an operator's tool);
at most `MAX_QUERY_LIMIT` ids per /query. A recipient being delivered right now is not made due
again by retry; cancelled, its delivery may still complete (its outcome is then refused).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, Protocol, TypeAlias

from delivery import config, expr
from delivery.api import auth, request, session
from delivery.api.failures import MethodFailure
from delivery.api.methods import HandlerResult, MethodHandler
from delivery.dns import resolver as dns_resolver
from delivery.engine import attempt as engine_attempt
from delivery.engine import dsn, intake
from delivery.expr import resolve as expr_resolve
from delivery.queue import model
from delivery.queue import store as queue_store
from delivery.registry import snapshot as registry_snapshot

__all__ = [
    "CANCEL_ATTEMPTS",
    "CANCEL_DIAGNOSTIC",
    "CANCEL_STATUS",
    "DEFAULT_QUERY_LIMIT",
    "MAX_FILTER_DEPTH",
    "MAX_QUERY_LIMIT",
    "OBJECT_TYPE",
    "PROPERTIES",
    "Action",
    "CancelNotices",
    "QueueFilter",
    "QueuedMessages",
    "SetError",
    "SnapshotSource",
    "cancel_reports",
    "format_time",
    "message_to_json",
    "parse_action",
    "parse_filter",
    "parse_time",
]

log = logging.getLogger("delivery.api.queue")

OBJECT_TYPE: Final = "QueuedMessage"

CANCEL_STATUS: Final = "5.0.0"
"""RFC 3463 status of a cancelled recipient in its DSN: permanent, no more specific code fits
an operator's decision."""

CANCEL_DIAGNOSTIC: Final = "cancelled by the operator"
"""What the DSN tells the sender about each cancelled recipient."""

CANCEL_ATTEMPTS: Final = 3
"""Builds of a cancel DSN before giving up: each retry follows a recipient that was delivered
or failed meanwhile, so more than one is already rare."""

DEFAULT_QUERY_LIMIT: Final = 100
"""Ids per /query when no ``limit`` is given: a screenful of `delivery queue list`."""

MAX_QUERY_LIMIT: Final = queue_store.MAX_LIST_LIMIT
"""Most ids per /query: one store page; a larger ``limit`` is clamped and said so."""

PROPERTIES: Final = (
    "id",
    "sender",
    "source",
    "size",
    "receivedAt",
    "requireTls",
    "envId",
    "recipients",
)
"""The properties of a QueuedMessage, in the order /get returns them."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_STATUSES: Final = tuple(s.value for s in model.RecipientStatus)
_DEFERRED: Final = "deferred"


# --- Pure core: wire forms, filter and patch -------------------------------------------------


def format_time(ms: int | None, /) -> str | None:
    """format_time - epoch ms as an RFC 3339 UTC date (JMAP UTCDate), None for None.

    >>> format_time(1_700_000_000_000), format_time(1_700_000_000_250), format_time(None)
    ('2023-11-14T22:13:20Z', '2023-11-14T22:13:20.250Z', None)
    """
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)
    text = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


def parse_time(text: str, /) -> int:
    """parse_time - an RFC 3339 date with a time zone as epoch ms.

    >>> parse_time("2023-11-14T22:13:20Z"), parse_time("2023-11-14T23:13:20.25+01:00")
    (1700000000000, 1700000000250)

    :raises ValueError: not RFC 3339, or no time zone (a local time would be ambiguous).
    """
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 date such as 2026-01-31T12:00:00Z") from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add Z (UTC) or an offset such as +01:00")
    return (when - _EPOCH) // timedelta(milliseconds=1)


def _recipient_to_json(recipient: model.QueuedRecipient, /) -> dict[str, Any]:
    scheduled = recipient.status is model.RecipientStatus.SCHEDULED
    return {
        "id": str(recipient.id),
        "address": recipient.address,
        "domain": recipient.domain,
        "status": recipient.status.value,
        "deferred": scheduled and recipient.retry_num > 0,
        "queue": recipient.queue,
        "schedule": recipient.schedule,
        "attempts": recipient.retry_num,
        "due": format_time(recipient.due if scheduled else None),
        "lastError": recipient.last_error.value,
        "lastStatus": recipient.last_status,
        "expiresAt": format_time(recipient.expires_at),
    }


def message_to_json(message: model.QueuedMessage, /) -> dict[str, Any]:
    """message_to_json - the wire form of a queued message, every property (PROPERTIES)."""
    return {
        "id": message.id,
        "sender": message.sender,
        "source": message.source.value,
        "size": message.size,
        "receivedAt": format_time(message.received_at),
        "requireTls": message.requiretls,
        "envId": message.env_id,
        "recipients": [_recipient_to_json(r) for r in message.recipients],
    }


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """A /query filter as the store's `list_messages` arguments; None: no condition."""

    status: model.RecipientStatus | None = None
    deferred: bool | None = None
    domain: str | None = None
    sender: str | None = None
    recipient: str | None = None
    queue: str | None = None
    due_before: int | None = None
    due_after: int | None = None

    def store_arguments(self) -> dict[str, Any]:
        """The keyword arguments of `QueueStore.list_messages` for this filter."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_CONDITIONS: Final = {
    "status": "status",
    "domain": "domain",
    "sender": "sender",
    "recipient": "recipient",
    "queue": "queue",
    "dueBefore": "due_before",
    "dueAfter": "due_after",
}
"""Filter condition -> QueueFilter field (status fills ``deferred`` too)."""

MAX_FILTER_DEPTH: Final = 4
"""Deepest nesting of AND operators accepted: deeper is a runaway client, not a query."""


def _condition_value(name: str, value: Any) -> dict[str, Any] | str:
    """The QueueFilter fields one condition sets, or why its value is refused."""
    if not isinstance(value, str):
        return f"{name} must be a string"
    if name == "status":
        if value == _DEFERRED:
            return {"status": model.RecipientStatus.SCHEDULED, "deferred": True}
        if value not in _STATUSES:
            return f"status must be one of {', '.join((*_STATUSES, _DEFERRED))}, not {value!r}"
        return {"status": model.RecipientStatus(value)}
    if name in ("dueBefore", "dueAfter"):
        try:
            return {_CONDITIONS[name]: parse_time(value)}
        except ValueError as exc:
            return f"{name}: {exc}"
    return {_CONDITIONS[name]: value}


def parse_filter(value: Any, /) -> QueueFilter | MethodFailure:
    """parse_filter - the /query ``filter`` argument as a QueueFilter, or unsupportedFilter.

    >>> parse_filter({"status": "deferred", "domain": "example.org"}).deferred
    True
    >>> parse_filter({"operator": "OR", "conditions": []}).description
    'only AND combines conditions: the queue is filtered in the store, which ANDs them'
    """
    found: dict[str, Any] = {}
    problem = _collect(value, found, depth=0)
    if problem is not None:
        return MethodFailure("unsupportedFilter", problem)
    return QueueFilter(**found)


def _collect(value: Any, found: dict[str, Any], *, depth: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return "a filter is a FilterCondition or FilterOperator object"
    if "operator" in value:
        if value.get("operator") != "AND":
            return (
                "only AND combines conditions: the queue is filtered in the store, which ANDs them"
            )
        conditions = value.get("conditions")
        if set(value) != {"operator", "conditions"} or not isinstance(conditions, list):
            return "a FilterOperator has exactly 'operator' and a 'conditions' array"
        if depth >= MAX_FILTER_DEPTH:
            return f"filters nest at most {MAX_FILTER_DEPTH} operators deep"
        for condition in conditions:
            problem = _collect(condition, found, depth=depth + 1)
            if problem is not None:
                return problem
        return None
    for name, condition_value in value.items():
        if name not in _CONDITIONS:
            return f"unknown condition {name!r}; QueuedMessage has {', '.join(_CONDITIONS)}"
        fields_set = _condition_value(name, condition_value)
        if isinstance(fields_set, str):
            return fields_set
        for field_name, field_value in fields_set.items():
            if found.setdefault(field_name, field_value) != field_value:
                return f"two different values for {name}: no message could match both"
    return None


@dataclass(frozen=True, slots=True)
class SetError:
    """Why one /set item was refused (RFC 8620 §5.3); ``properties`` for invalidProperties."""

    type: str
    description: str
    properties: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The SetError object."""
        error: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.properties:
            error["properties"] = list(self.properties)
        return error


Action = Literal["retry", "cancel", "cancelSilently"]
_ACTIONS: Final[tuple[Action, ...]] = ("retry", "cancel", "cancelSilently")


def parse_action(patch: Mapping[str, Any], /) -> Action | SetError:
    """parse_action - the action of an update patch, or its invalidProperties SetError.

    >>> parse_action({"action": "retry"})
    'retry'
    >>> parse_action({"sender": "x"}).properties
    ('sender',)
    """
    others = tuple(sorted(name for name in patch if name != "action"))
    if others:
        return SetError(
            "invalidProperties",
            "only 'action' can be set (retry, cancel or cancelSilently); the rest of a "
            "queued message is read-only",
            others,
        )
    action = patch.get("action")
    for known in _ACTIONS:
        if action == known:
            return known
    return SetError(
        "invalidProperties",
        f"action must be one of {', '.join(_ACTIONS)}, not {action!r}",
        ("action",),
    )


def cancel_reports(message: model.QueuedMessage, /) -> list[dsn.RecipientReport]:
    """cancel_reports - the DSN lines of a cancel: one per scheduled recipient that wants one."""
    return [
        dsn.RecipientReport(
            address=recipient.address,
            orcpt=recipient.orcpt,
            action=action,
            status=CANCEL_STATUS,
            reason=CANCEL_DIAGNOSTIC,
            remote_host=None,
            remote_reply=None,
            last_attempt_at=None,
        )
        for recipient in message.recipients
        if recipient.status is model.RecipientStatus.SCHEDULED
        and (action := dsn.dsn_action("failed", sender=message.sender, notify=recipient.notify))
        is not None
    ]


# --- The shell: store calls ------------------------------------------------------------------


class SnapshotSource(Protocol):
    """Where the registry is read from (a `delivery.registry.Registry`)."""

    def snapshot(self) -> registry_snapshot.Snapshot: ...


class CancelNotices:
    """Builds the failure DSN of a cancelled message, planned like every DSN the worker queues.

    :param hostname: this host's name (Reporting-MTA, From).
    :param registry: the ``schedule`` expression that places the DSN's recipient.
    :param env: the expression environment (local domains).
    :param lookup: answers ``dns_query()`` in the ``schedule`` expression.
    """

    def __init__(
        self,
        *,
        hostname: str,
        registry: SnapshotSource,
        env: expr.Environment,
        lookup: expr_resolve.Lookup,
    ) -> None:
        self._hostname = hostname
        self._registry = registry
        self._env = env
        self._lookup = lookup

    async def build(
        self, message: model.QueuedMessage, body: bytes, /, *, now: int
    ) -> queue_store.Notice | None:
        """The notice cancelling ``message``'s scheduled recipients, None when none wants one.

        :raises ValueError: the sender cannot be addressed (InvalidEnvelope), or the original
            defeats the DSN builder.
        """
        reports = cancel_reports(message)
        if not reports:
            return None
        notice = dsn.make_dsn(
            message, reports, original=body, reporting_mta=self._hostname, now=now
        )
        planned = await intake.plan_recipients(
            self._registry.snapshot(),
            notice,
            [intake.RecipientRequest(message.sender)],
            env=self._env,
            lookup=self._lookup,
            now=now,
        )
        about = frozenset(
            r.id for r in message.recipients if r.status is model.RecipientStatus.SCHEDULED
        )
        return queue_store.Notice(notice, planned, about)


Clock: TypeAlias = Callable[[], int]
_Method: TypeAlias = Callable[[dict[str, Any], auth.Principal], Awaitable[HandlerResult]]


class QueuedMessages:
    """The QueuedMessage methods over one queue store.

    :param store: the queue.
    :param notices: builds cancel DSNs.
    :param wake: called after a change the worker should see at once (retry, a queued DSN).
    :param clock: epoch ms now (tests pass their own).
    """

    def __init__(
        self,
        store: queue_store.QueueStore,
        *,
        notices: CancelNotices,
        wake: Callable[[], None],
        clock: Clock = model.now_ms,
    ) -> None:
        self._store = store
        self._notices = notices
        self._wake = wake
        self._clock = clock

    @classmethod
    def for_daemon(
        cls,
        settings: config.Settings,
        registry: SnapshotSource,
        store: queue_store.QueueStore,
        *,
        resolver: dns_resolver.Resolver,
        wake: Callable[[], None],
    ) -> QueuedMessages:
        """The methods as `delivery serve` runs them: DSNs planned through the worker's resolver."""
        notices = CancelNotices(
            hostname=settings.hostname,
            registry=registry,
            env=expr.Environment(local_domains=frozenset(settings.local.domains)),
            lookup=engine_attempt.make_lookup(resolver),
        )
        return cls(store, notices=notices, wake=wake)

    def handlers(self) -> dict[str, MethodHandler]:
        """The dispatcher's handler table entries of QueuedMessage."""
        return {
            f"x:{OBJECT_TYPE}/get": MethodHandler(
                auth.permission(OBJECT_TYPE, "Get"), self._guarded(self.get)
            ),
            f"x:{OBJECT_TYPE}/query": MethodHandler(
                auth.permission(OBJECT_TYPE, "Query"), self._guarded(self.query)
            ),
            f"x:{OBJECT_TYPE}/set": MethodHandler(
                auth.permission(OBJECT_TYPE, "Update"), self._guarded(self.set)
            ),
        }

    @staticmethod
    def _guarded(method: _Method, /) -> _Method:
        """``method`` answering serverFail when the queue store fails (logged)."""

        async def run(arguments: dict[str, Any], principal: auth.Principal) -> HandlerResult:
            try:
                return await method(arguments, principal)
            except queue_store.StoreError as exc:
                log.error("queue store failed: %s", exc)
                return MethodFailure("serverFail", "the queue store failed; see the daemon log")

        return run

    def _state(self) -> str:
        return str(self._clock())

    # /get

    async def get(self, arguments: dict[str, Any], principal: auth.Principal, /) -> HandlerResult:
        """x:QueuedMessage/get (RFC 8620 §5.1)."""
        properties = arguments.get("properties")
        if properties is not None:
            unknown = [p for p in properties if p not in PROPERTIES]
            if unknown:
                return MethodFailure(
                    "invalidArguments",
                    f"unknown properties {', '.join(map(repr, unknown))}; "
                    f"QueuedMessage has {', '.join(PROPERTIES)}",
                )
        state = self._state()
        ids = arguments.get("ids")
        found: list[model.QueuedMessage] = []
        not_found: list[str] = []
        if ids is None:
            everything, _ = await self._walk(
                QueueFilter(), position=0, limit=request.MAX_OBJECTS_IN_GET + 1
            )
            if len(everything) > request.MAX_OBJECTS_IN_GET:
                return MethodFailure(
                    "requestTooLarge",
                    f"more than {request.MAX_OBJECTS_IN_GET} queued messages: give ids "
                    "(x:QueuedMessage/query finds them)",
                )
            found = everything
        else:
            if len(ids) > request.MAX_OBJECTS_IN_GET:
                return MethodFailure(
                    "requestTooLarge",
                    f"{len(ids)} ids; at most {request.MAX_OBJECTS_IN_GET} per /get",
                )
            for message_id in dict.fromkeys(ids):
                message = await self._store.get_message(message_id)
                if message is None:
                    not_found.append(message_id)
                else:
                    found.append(message)
        wanted = set(properties or PROPERTIES) | {"id"}
        return {
            "accountId": session.ACCOUNT_ID,
            "state": state,
            "list": [{k: v for k, v in message_to_json(m).items() if k in wanted} for m in found],
            "notFound": not_found,
        }

    # /query

    async def query(self, arguments: dict[str, Any], principal: auth.Principal, /) -> HandlerResult:
        """x:QueuedMessage/query (RFC 8620 §5.5): arrival order, no sort."""
        if arguments.get("sort"):
            return MethodFailure(
                "unsupportedSort", "queued messages come in arrival order only: omit 'sort'"
            )
        position = arguments.get("position") or 0
        if position < 0:
            return MethodFailure(
                "invalidArguments", "position must be 0 or more (no counting from the end)"
            )
        parsed = parse_filter(arguments.get("filter"))
        if isinstance(parsed, MethodFailure):
            return parsed
        asked = arguments.get("limit")
        limit = DEFAULT_QUERY_LIMIT if asked is None else min(asked, MAX_QUERY_LIMIT)
        total = bool(arguments.get("calculateTotal"))
        state = self._state()
        page, seen = await self._walk(parsed, position=position, limit=limit, to_end=total)
        answer: dict[str, Any] = {
            "accountId": session.ACCOUNT_ID,
            "queryState": state,
            "canCalculateChanges": False,
            "position": position,
            "ids": [m.id for m in page],
        }
        if total:
            answer["total"] = seen
        if asked is not None and asked > MAX_QUERY_LIMIT:
            answer["limit"] = MAX_QUERY_LIMIT
        return answer

    async def _walk(
        self,
        found: QueueFilter,
        *,
        position: int,
        limit: int,
        to_end: bool = False,
    ) -> tuple[list[model.QueuedMessage], int]:
        """Messages ``position`` .. ``position + limit`` of the filtered queue, in arrival
        order, and how many were read: with ``to_end``, every match (the total)."""
        taken: list[model.QueuedMessage] = []
        seen = 0
        after: str | None = None
        arguments = found.store_arguments()
        while True:
            wanted = position + limit - seen
            if not to_end and wanted <= 0:
                break
            size = queue_store.MAX_LIST_LIMIT if to_end else min(queue_store.MAX_LIST_LIMIT, wanted)
            batch = await self._store.list_messages(**arguments, after=after, limit=size)
            for message in batch:
                if position <= seen < position + limit:
                    taken.append(message)
                seen += 1
            if len(batch) < size:
                break
            after = batch[-1].id
        return taken, seen

    # /set

    async def set(self, arguments: dict[str, Any], principal: auth.Principal, /) -> HandlerResult:
        """x:QueuedMessage/set (RFC 8620 §5.3): update with an action; no create, no destroy."""
        state = self._state()
        if arguments.get("ifInState") is not None:
            return MethodFailure(
                "stateMismatch",
                "the queue changes on its own: its state never repeats, so ifInState cannot "
                "match; send the update without it",
            )
        create = arguments.get("create") or {}
        update = arguments.get("update") or {}
        destroy = arguments.get("destroy") or []
        count = len(create) + len(update) + len(destroy)
        if count > request.MAX_OBJECTS_IN_SET:
            return MethodFailure(
                "requestTooLarge",
                f"{count} changes; at most {request.MAX_OBJECTS_IN_SET} per /set",
            )
        not_created = {
            cid: SetError(
                "forbidden",
                "messages enter the queue by SMTP submission or `delivery send`, not by the API",
            ).to_json()
            for cid in create
        }
        not_destroyed = {
            mid: SetError(
                "forbidden",
                'a queued message is not deleted: update it with {"action": "cancel"}',
            ).to_json()
            for mid in destroy
        }
        updated: dict[str, Any] = {}
        not_updated: dict[str, Any] = {}
        for message_id, patch in update.items():
            action = parse_action(patch)
            result = (
                action
                if isinstance(action, SetError)
                else await self._act(message_id, action, principal)
            )
            if isinstance(result, SetError):
                not_updated[message_id] = result.to_json()
            else:
                updated[message_id] = result
        return {
            "accountId": session.ACCOUNT_ID,
            "oldState": state,
            "newState": self._state() if updated else state,
            "created": None,
            "updated": updated or None,
            "destroyed": None,
            "notCreated": not_created or None,
            "notUpdated": not_updated or None,
            "notDestroyed": not_destroyed or None,
        }

    async def _act(
        self, message_id: str, action: Action, principal: auth.Principal
    ) -> dict[str, Any] | SetError:
        """Do ``action``: the properties it changed, or why it could not."""
        message = await self._store.get_message(message_id)
        if message is None:
            return SetError("notFound", f"no queued message {message_id}")
        if not _scheduled(message):
            return _not_scheduled(message)
        if action == "retry":
            now = self._clock()
            count = await self._store.retry_now(message_id, now=now)
            log.info(
                "message %s: %d recipients due now (retry by token %s)",
                message_id,
                count,
                principal.name,
            )
            self._wake()
        else:
            outcome = await self._cancel(
                message, silent=action == "cancelSilently", by=principal.name
            )
            if outcome is not None:
                return outcome
        after = await self._store.get_message(message_id)
        return {"recipients": message_to_json(after or message)["recipients"]}

    async def _cancel(
        self, message: model.QueuedMessage, *, silent: bool, by: str
    ) -> SetError | None:
        """Cancel with the DSN (unless ``silent``); None when done."""
        for _ in range(CANCEL_ATTEMPTS):
            now = self._clock()
            notice, dsn_note = (
                (None, "no DSN: cancelled silently") if silent else await self._notice(message, now)
            )
            reason = f"{CANCEL_DIAGNOSTIC} (token {by}); {dsn_note}"
            done = await self._store.cancel(message.id, reason=reason, notice=notice)
            if not done.stale:
                log.info(
                    "message %s: %d recipients cancelled by token %s; %s",
                    message.id,
                    len(done.ids),
                    by,
                    f"DSN queued as {done.notice_id}" if done.notice_id else "no DSN",
                )
                if done.notice_id is not None:
                    self._wake()
                if not done.ids:
                    return _not_scheduled(message)
                return None
            fresh = await self._store.get_message(message.id)
            if fresh is None:
                return SetError("notFound", f"no queued message {message.id}")
            if not _scheduled(fresh):
                return _not_scheduled(fresh)
            message = fresh
        return SetError(
            "changed",
            f"message {message.id} kept changing while its cancellation was prepared "
            f"({CANCEL_ATTEMPTS} times): try again",
        )

    async def _notice(
        self, message: model.QueuedMessage, now: int
    ) -> tuple[queue_store.Notice | None, str]:
        """The cancel DSN (None when none is due or it cannot be made), and a note saying which,
        for the recipients' ``lastStatus``."""
        if not cancel_reports(message):
            return None, "no DSN: a null sender, or NOTIFY asks for none"
        try:
            body = await self._store.load_body(message.id)
        except queue_store.MessageNotFound:
            log.warning("no cancel DSN for message %s: its body is gone", message.id)
            return None, "no DSN: the message body is gone"
        try:
            notice = await self._notices.build(message, body, now=now)
        except ValueError as exc:  # InvalidEnvelope: a sender no DSN can be addressed to
            log.warning("no cancel DSN for message %s to %r: %s", message.id, message.sender, exc)
            return None, "no DSN: it could not be made (see the daemon log)"
        if notice is None:
            return None, "no DSN: a null sender, or NOTIFY asks for none"
        return notice, f"DSN queued to <{message.sender}>"


def _scheduled(message: model.QueuedMessage, /) -> bool:
    return any(r.status is model.RecipientStatus.SCHEDULED for r in message.recipients)


def _not_scheduled(message: model.QueuedMessage, /) -> SetError:
    statuses = ", ".join(f"{r.address} {r.status.value}" for r in message.recipients)
    return SetError(
        "notScheduled",
        f"message {message.id} has no scheduled recipient left ({statuses}): nothing to do",
    )
