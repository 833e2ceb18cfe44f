"""Run the method calls of one JMAP request against the registry (RFC 8620 §3.3-3.7, §5).

`Dispatcher.run(request, principal)` answers every call of a checked `Request` in order:
``x:<Object>/get``, ``x:<Object>/set`` and ``x:<Object>/query`` for each managed object type
(the registry's ``object_types``), ``Core/echo``, and the methods of the ``handlers`` table
(objects outside the registry: ``x:QueuedMessage/get``, ``x:Explain/get``, each a
`MethodHandler` with its permission). Before a call runs, its result references are resolved
(refs.py), its arguments are checked against the method's signature, creation ids (``#new1``)
are replaced by the ids created earlier in the request (registry objects), and the token's
permission is checked. The registry, or the handler, does the rest: validation of values,
SetErrors, states, filters.

Outcomes:
    Each call yields its normal response, or ``["error", {"type", "description"}, callId]``
    (see failures.py). A failing call never stops the calls after it (RFC 8620 §3.6.2).

Security:
    get/query need ``sys<Object>Get`` / ``sys<Object>Query``; /set needs at least one of
    ``sys<Object>Create|Update|Destroy`` and each item is checked by the registry against the
    one its operation needs, so a token never changes more than it is granted. A handler's
    method needs the one permission its `MethodHandler` names, checked here before it runs, so
    no handler can forget it. Unexpected faults answer serverFail without details; the
    traceback goes to the log.

Standards: RFC 8620 §3.3-3.7 (Request, errors, references), §5.1 /get, §5.3 /set, §5.5 /query.
Limits: MAX_OBJECTS_IN_GET ids per /get, MAX_OBJECTS_IN_SET entries per /set (request.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from delivery.api import auth, metrics, refs, request, session
from delivery.api.failures import MethodFailure
from delivery.registry.errors import MethodError, StoreError

__all__ = [
    "OBJECT_PREFIX",
    "SIGNATURES",
    "ArgumentCheck",
    "Dispatcher",
    "HandlerResult",
    "MethodHandler",
    "RegistryLike",
    "check_arguments",
]

log = logging.getLogger("delivery.api")

OBJECT_PREFIX = "x:"
"""Method names of managed objects are ``x:<Object>/<op>`` (capability urn:stalwart:jmap)."""

ECHO = "Core/echo"


class RegistryLike(Protocol):
    """What the API needs of delivery.registry.Registry."""

    @property
    def object_types(self) -> tuple[str, ...]: ...

    async def get(
        self, type_name: str, /, *, ids: list[str] | None, properties: list[str] | None
    ) -> dict[str, Any]: ...

    async def set(
        self,
        type_name: str,
        /,
        *,
        if_in_state: str | None,
        create: dict[str, Any] | None,
        update: dict[str, Any] | None,
        destroy: list[str] | None,
        allowed: Callable[[str], bool],
    ) -> dict[str, Any]: ...

    async def query(
        self,
        type_name: str,
        /,
        *,
        filter: Any,
        sort: list[Any] | None,
        position: int,
        limit: int | None,
    ) -> dict[str, Any]: ...

    async def get_meta(self, key: str, /) -> str | None: ...

    async def set_meta(self, key: str, value: str, /) -> None: ...


ArgumentCheck = tuple[Callable[[Any], bool], str]
"""One argument's check: (accepts the value?, what it must be, for the error). None is always
accepted: every optional argument of RFC 8620 /get, /set and /query may be null."""


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _objects_by_id(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_ACCOUNT: ArgumentCheck = (lambda v: isinstance(v, str), "a string")
SIGNATURES: dict[str, dict[str, ArgumentCheck]] = {
    "get": {
        "accountId": _ACCOUNT,
        "ids": (_strings, "an array of ids"),
        "properties": (_strings, "an array of property names"),
    },
    "set": {
        "accountId": _ACCOUNT,
        "ifInState": (lambda v: isinstance(v, str), "a state string"),
        "create": (_objects_by_id, "an object mapping creation ids to objects"),
        "update": (_objects_by_id, "an object mapping ids to patch objects"),
        "destroy": (_strings, "an array of ids"),
    },
    "query": {
        "accountId": _ACCOUNT,
        "filter": (lambda v: isinstance(v, dict), "a FilterCondition or FilterOperator object"),
        "sort": (
            lambda v: isinstance(v, list) and all(isinstance(c, dict) for c in v),
            "an array of Comparator objects",
        ),
        "position": (_int, "an integer"),
        "limit": (lambda v: _int(v) and v >= 0, "a non-negative integer"),
        "calculateTotal": (lambda v: isinstance(v, bool), "a boolean"),
    },
}
"""The arguments each method accepts; any other is invalidArguments."""


def check_arguments(
    op: str,
    arguments: Mapping[str, Any],
    /,
    *,
    signature: Mapping[str, ArgumentCheck] | None = None,
) -> MethodFailure | None:
    """Check ``arguments`` against ``signature``, by default that of ``op`` (get, set, query).

    >>> check_arguments("get", {"ids": None}) is None
    True
    >>> check_arguments("get", {"ids": "a"}).description
    "'ids' must be an array of ids"
    >>> check_arguments("query", {"fitler": {}}).description
    "unknown argument 'fitler' for /query; expected one of accountId, filter, sort, ..."
    """
    if signature is None:
        signature = SIGNATURES[op]
    for name, value in arguments.items():
        check = signature.get(name)
        if check is None:
            expected = ", ".join(list(signature)[:3]) + (", ..." if len(signature) > 3 else "")
            return MethodFailure(
                "invalidArguments",
                f"unknown argument {name!r} for /{op}; expected one of {expected}",
            )
        accepts, what = check
        if value is not None and not accepts(value):
            return MethodFailure("invalidArguments", f"{name!r} must be {what}")
    return None


def _substitute(value: str, created: Mapping[str, str]) -> str:
    """An id, or the id created earlier in the request for a ``#creationId``."""
    if value.startswith("#"):
        return created.get(value[1:], value)
    return value


HandlerResult = dict[str, Any] | MethodFailure
"""What a handler answers: the method's response arguments, or a method-level error."""


@dataclass(frozen=True, slots=True)
class MethodHandler:
    """A method served outside the registry (``x:QueuedMessage/get``, ``x:Explain/get``).

    The dispatcher resolves result references, checks ``using``, the arguments against
    ``signature`` (None: the standard one of the method's /get, /set or /query) and the
    token against ``permission``, and only then awaits ``run(arguments, principal)``. ``run``
    returns the whole response (``accountId`` included) or a `MethodFailure`; an exception it
    raises answers serverFail, logged.
    """

    permission: str
    run: Callable[[dict[str, Any], auth.Principal], Awaitable[HandlerResult]]
    signature: Mapping[str, ArgumentCheck] | None = None


@dataclass(frozen=True, slots=True)
class _Call:
    object_type: str
    op: str


class Dispatcher:
    """Answers the method calls of checked requests; one per running API.

    :param registry: the managed objects.
    :param metrics_registry: where the per-method call counter is registered.
    :param handlers: the other methods, by full name (``x:Explain/get``).
    :raises ValueError: a handler name that is not ``x:<Object>/<op>``, or that names a
        registry object; a handler without a signature whose op is not get, set or query.
    """

    def __init__(
        self,
        registry: RegistryLike,
        metrics_registry: metrics.MetricsRegistry,
        *,
        handlers: Mapping[str, MethodHandler] | None = None,
    ) -> None:
        self._registry = registry
        self._types = frozenset(registry.object_types)
        self._handlers = dict(handlers or {})
        handled: dict[str, None] = {}  # the handlers' object types, in order, once each
        for name, handler in self._handlers.items():
            object_type, slash, op = name.removeprefix(OBJECT_PREFIX).partition("/")
            if not name.startswith(OBJECT_PREFIX) or not slash or not object_type or not op:
                raise ValueError(f"handler {name!r} is not named x:<Object>/<op>")
            if object_type in self._types:
                raise ValueError(f"handler {name!r}: {object_type} is a registry object")
            if handler.signature is None and op not in SIGNATURES:
                raise ValueError(f"handler {name!r} needs a signature: /{op} has no standard one")
            handled[object_type] = None
        self._object_types = (*registry.object_types, *handled)
        self._calls = metrics_registry.counter(
            "delivery_api_method_calls_total",
            "JMAP method calls by method and outcome (ok or the error type).",
            ("method", "outcome"),
        )

    async def run(self, req: request.Request, principal: auth.Principal) -> dict[str, Any]:
        """The Response object (RFC 8620 §3.4) for ``req`` made by ``principal``."""
        responses: list[refs.Response] = []
        created: dict[str, str] = dict(req.created_ids or {})
        for call in req.calls:
            outcome = await self._answer(call, req.using, principal, responses, created)
            method = call.name if self._known(call.name) else "unknown"
            if isinstance(outcome, MethodFailure):
                self._calls.inc(method=method, outcome=outcome.type)
                responses.append(("error", outcome.to_json(), call.call_id))
            else:
                self._calls.inc(method=method, outcome="ok")
                responses.append((call.name, outcome, call.call_id))
        answer: dict[str, Any] = {
            "methodResponses": [list(r) for r in responses],
            "sessionState": session.SESSION_STATE,
        }
        if req.created_ids is not None:
            answer["createdIds"] = created
        return answer

    @property
    def object_types(self) -> tuple[str, ...]:
        """Every object type served: the registry's, then the handlers' (for the Session)."""
        return self._object_types

    def _known(self, name: str) -> bool:
        return name == ECHO or name in self._handlers or self._parse(name) is not None

    def _parse(self, name: str) -> _Call | None:
        object_type, slash, op = name.removeprefix(OBJECT_PREFIX).partition("/")
        if (
            not name.startswith(OBJECT_PREFIX)
            or not slash
            or object_type not in self._types
            or op not in SIGNATURES
        ):
            return None
        return _Call(object_type, op)

    def _unknown(self, name: str) -> MethodFailure:
        """unknownMethod, saying what the server does have."""
        object_type = name.removeprefix(OBJECT_PREFIX).partition("/")[0]
        handled = [n.partition("/")[2] for n in self._handlers if n.startswith(f"x:{object_type}/")]
        if name.startswith(OBJECT_PREFIX) and object_type in self._types:
            hint = f"{object_type} has the methods {', '.join(f'/{o}' for o in SIGNATURES)}"
        elif name.startswith(OBJECT_PREFIX) and handled:
            hint = f"{object_type} has the methods {', '.join(f'/{o}' for o in handled)}"
        else:
            hint = f"methods are x:<Object>/get|set|query for {', '.join(sorted(self._types))}"
            hint += "".join(f", and {n}" for n in sorted(self._handlers))
        return MethodFailure("unknownMethod", f"unknown method {name!r}: {hint}")

    async def _answer(
        self,
        call: request.MethodCall,
        using: frozenset[str],
        principal: auth.Principal,
        responses: list[refs.Response],
        created: dict[str, str],
    ) -> dict[str, Any] | MethodFailure:
        arguments = refs.resolve_references(call.arguments, responses)
        if isinstance(arguments, MethodFailure):
            return arguments
        if call.name == ECHO and request.CORE_CAPABILITY in using:
            return arguments
        handler = self._handlers.get(call.name)
        target = None if handler is not None else self._parse(call.name)
        if target is None and handler is None:
            return self._unknown(call.name)
        if request.STALWART_CAPABILITY not in using:
            return MethodFailure(
                "unknownMethod", f"{call.name} needs {request.STALWART_CAPABILITY!r} in 'using'"
            )
        if handler is not None:
            failure = check_arguments(
                call.name.partition("/")[2], arguments, signature=handler.signature
            )
            if failure is None and not principal.may(handler.permission):
                failure = MethodFailure(
                    "forbidden", f"this token lacks the {handler.permission} permission"
                )
        else:
            assert target is not None
            failure = check_arguments(target.op, arguments)
        if failure is not None:
            return failure
        try:
            if handler is not None:
                return await handler.run(arguments, principal)
            assert target is not None
            if target.op == "get":
                return await self._get(target.object_type, arguments, principal, created)
            if target.op == "set":
                return await self._set(target.object_type, arguments, principal, created)
            return await self._query(target.object_type, arguments, principal)
        except MethodError as exc:
            return MethodFailure(exc.type, exc.description)
        except StoreError:
            log.exception("method %s (call %s): store failure", call.name, call.call_id)
            return MethodFailure("serverFail", "the store failed; see the daemon log")
        except Exception:  # the outermost guard of one call: RFC 8620 serverFail
            log.exception("method %s (call %s) failed", call.name, call.call_id)
            return MethodFailure("serverFail", "internal error; see the daemon log")

    async def _get(
        self,
        object_type: str,
        arguments: dict[str, Any],
        principal: auth.Principal,
        created: Mapping[str, str],
    ) -> dict[str, Any] | MethodFailure:
        needed = auth.permission(object_type, "Get")
        if not principal.may(needed):
            return MethodFailure("forbidden", f"this token lacks the {needed} permission")
        ids = arguments.get("ids")
        if ids is not None:
            if len(ids) > request.MAX_OBJECTS_IN_GET:
                return MethodFailure(
                    "requestTooLarge",
                    f"{len(ids)} ids; at most {request.MAX_OBJECTS_IN_GET} per /get",
                )
            ids = [_substitute(i, created) for i in ids]
        result = await self._registry.get(
            object_type, ids=ids, properties=arguments.get("properties")
        )
        return {"accountId": session.ACCOUNT_ID, **result}

    async def _set(
        self,
        object_type: str,
        arguments: dict[str, Any],
        principal: auth.Principal,
        created: dict[str, str],
    ) -> dict[str, Any] | MethodFailure:
        permissions = {op.lower(): auth.permission(object_type, op) for op in auth.SET_OPS}
        if not principal.may_any(permissions.values()):
            return MethodFailure(
                "forbidden",
                f"this token has none of {', '.join(permissions.values())}",
            )
        create = arguments.get("create")
        update = arguments.get("update")
        destroy = arguments.get("destroy")
        count = len(create or ()) + len(update or ()) + len(destroy or ())
        if count > request.MAX_OBJECTS_IN_SET:
            return MethodFailure(
                "requestTooLarge",
                f"{count} changes; at most {request.MAX_OBJECTS_IN_SET} per /set",
            )
        if update is not None:
            update = {_substitute(k, created): v for k, v in update.items()}
        if destroy is not None:
            destroy = [_substitute(i, created) for i in destroy]

        def allowed(op: str) -> bool:
            return principal.may(permissions[op])

        result = await self._registry.set(
            object_type,
            if_in_state=arguments.get("ifInState"),
            create=create,
            update=update,
            destroy=destroy,
            allowed=allowed,
        )
        for creation_id, obj in (result.get("created") or {}).items():
            if isinstance(obj, dict) and isinstance(obj.get("id"), str):
                created[creation_id] = obj["id"]
        return {"accountId": session.ACCOUNT_ID, **result}

    async def _query(
        self, object_type: str, arguments: dict[str, Any], principal: auth.Principal
    ) -> dict[str, Any] | MethodFailure:
        needed = auth.permission(object_type, "Query")
        if not principal.may(needed):
            return MethodFailure("forbidden", f"this token lacks the {needed} permission")
        result = await self._registry.query(
            object_type,
            filter=arguments.get("filter"),
            sort=arguments.get("sort"),
            position=arguments.get("position") or 0,
            limit=arguments.get("limit"),
        )
        return {"accountId": session.ACCOUNT_ID, **result}
