"""The web admin's in-process JMAP client: every read and write goes through the API.

The pages never touch the registry or the queue directly. Each action is one JMAP method
call run by the API's own `Dispatcher` with the signed-in token's `Principal`, so permission
checks, validation, SetErrors and metrics are exactly those of ``POST /api``.

Outcomes:
    AdminClient.call(method, arguments) -> the method's response arguments, or a `CallError`
    (the RFC 8620 method-level error: forbidden, invalidArguments, unknownMethod, ...).
    SetOutcome.of(response, id) -> the one item's result or its SetError.

Security: the Principal is the session's; nothing here grants or widens a permission.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from delivery.api import auth
from delivery.api import request as jmap
from delivery.api.methods import OBJECT_PREFIX, Dispatcher

__all__ = ["AdminClient", "CallError", "SetOutcome"]

_USING = frozenset(jmap.CAPABILITIES)
_CALL_ID = "admin"


@dataclass(frozen=True, slots=True)
class CallError:
    """A method-level error (RFC 8620 §3.6.2): ``type`` and the server's description."""

    type: str
    description: str

    @property
    def forbidden(self) -> bool:
        """The token lacks the permission (answered 403 by the pages)."""
        return self.type == "forbidden"


@dataclass(frozen=True, slots=True)
class SetOutcome:
    """The result of one item of a /set: the object (created/updated) or the SetError."""

    ok: bool
    value: dict[str, Any]
    """The created object, the server-set properties of an update, or the SetError object."""

    @classmethod
    def of(
        cls, response: dict[str, Any], item_id: str, op: Literal["create", "update", "destroy"]
    ) -> SetOutcome:
        """Item ``item_id`` of a /set response for operation ``op``."""
        done_key, failed_key = {
            "create": ("created", "notCreated"),
            "update": ("updated", "notUpdated"),
            "destroy": ("destroyed", "notDestroyed"),
        }[op]
        failed = (response.get(failed_key) or {}).get(item_id)
        if failed is not None:
            return cls(False, failed)
        done = response.get(done_key)
        if isinstance(done, dict):
            return cls(True, done.get(item_id) or {})
        return cls(True, {})

    @property
    def error_type(self) -> str | None:
        """The SetError type, or None when the item succeeded."""
        return None if self.ok else str(self.value.get("type", "serverFail"))


class AdminClient:
    """Method calls on behalf of one signed-in principal."""

    def __init__(self, dispatcher: Dispatcher, principal: auth.Principal) -> None:
        self._dispatcher = dispatcher
        self.principal = principal

    def may(self, object_type: str, op: auth.Op, /) -> bool:
        """Whether the principal holds ``sys<object_type><op>``: what the pages offer."""
        return self.principal.may(auth.permission(object_type, op))

    async def call(self, method: str, arguments: dict[str, Any], /) -> dict[str, Any] | CallError:
        """Run one method call (``x:MtaTlsStrategy/get``, ...) through the API's dispatcher."""
        req = jmap.Request(_USING, (jmap.MethodCall(method, arguments, _CALL_ID),))
        answer = await self._dispatcher.run(req, self.principal)
        [(name, result, _)] = answer["methodResponses"]
        if name == "error":
            return CallError(str(result.get("type")), str(result.get("description", "")))
        return dict(result)

    async def object_call(
        self, object_type: str, op: str, arguments: dict[str, Any], /
    ) -> dict[str, Any] | CallError:
        """``x:<object_type>/<op>``."""
        return await self.call(f"{OBJECT_PREFIX}{object_type}/{op}", arguments)

    async def get(
        self, object_type: str, ids: list[str] | None = None, /
    ) -> list[dict[str, Any]] | CallError:
        """The objects of ``ids`` (None: every object) as /get lists them."""
        result = await self.object_call(object_type, "get", {"ids": ids})
        if isinstance(result, CallError):
            return result
        return list(result.get("list") or [])

    async def query_get(
        self,
        object_type: str,
        /,
        *,
        filter: dict[str, Any] | None = None,
        position: int = 0,
        limit: int | None = None,
    ) -> tuple[list[dict[str, Any]], int | None] | CallError:
        """/query then /get of the ids found: the objects in query order, and the total."""
        arguments: dict[str, Any] = {"filter": filter, "position": position, "limit": limit}
        arguments["calculateTotal"] = True
        found = await self.object_call(object_type, "query", arguments)
        if isinstance(found, CallError):
            return found
        ids = [str(i) for i in found.get("ids") or []]
        total = found.get("total")
        if not ids:
            return [], total if isinstance(total, int) else None
        objects = await self.get(object_type, ids)
        if isinstance(objects, CallError):
            return objects
        by_id = {str(o.get("id")): o for o in objects}
        ordered = [by_id[i] for i in ids if i in by_id]
        return ordered, total if isinstance(total, int) else None

    async def set_one(
        self,
        object_type: str,
        op: Literal["create", "update", "destroy"],
        item_id: str,
        value: dict[str, Any] | None = None,
        /,
    ) -> SetOutcome | CallError:
        """One create (``item_id`` is the creation id), update or destroy."""
        arguments: dict[str, Any] = (
            {"destroy": [item_id]} if op == "destroy" else {op: {item_id: value or {}}}
        )
        result = await self.object_call(object_type, "set", arguments)
        if isinstance(result, CallError):
            return result
        return SetOutcome.of(result, item_id, op)
