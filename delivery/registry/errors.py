"""Failures of the registry: JMAP method errors, per-item SetErrors and store faults.

A JMAP /set answers each item on its own (RFC 8620 §5.3): one item's bad value is a
`SetError` *value* in ``notCreated`` / ``notUpdated`` / ``notDestroyed``, never an exception,
and the other items of the call go on. What stops a whole method call is a `MethodError`
(RFC 8620 §3.6.2): the API layer turns it into ``["error", {"type", "description"}, callId]``.
A `StoreError` is the database failing under us; the API answers serverFail.

Outcomes:
    SetError.to_json() -> {"type", "description", "properties"?, "existingId"?, ...}
    MethodError.type  -> stateMismatch, invalidArguments, unsupportedFilter, unsupportedSort,
                         unknownMethod

Standards: RFC 8620 §3.6.2 (method errors), §5.3 (SetError).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from delivery.errors import DeliveryError

__all__ = ["MethodError", "SetError", "StoreError"]


class MethodError(DeliveryError):
    """A JMAP method-level error: the whole call fails and changes nothing.

    :param type: the RFC 8620 error type, e.g. ``stateMismatch`` or ``unsupportedFilter``.
    :param description: a sentence for the operator saying what was wrong.
    """

    def __init__(self, type: str, description: str, /) -> None:
        super().__init__(type, description)
        self.type, self.description = type, description

    def __str__(self) -> str:
        return f"{self.type}: {self.description}"


class StoreError(DeliveryError):
    """The registry's database could not be read or written; nothing was changed."""


@dataclass(frozen=True, slots=True)
class SetError:
    """Why one create, update or destroy of a /set was refused (RFC 8620 §5.3).

    :param type: ``invalidProperties``, ``alreadyExists``, ``notFound``, ``singleton``,
        ``forbidden``, ``invalidPatch``, ``overQuota`` or ``objectIsLinked``.
    :param description: what was wrong, naming the property and the value.
    :param properties: for ``invalidProperties``, the top-level property names at fault.
    :param extra: more members of the SetError, e.g. ``{"existingId": "b"}``.
    """

    type: str
    description: str
    properties: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The SetError object as RFC 8620 writes it."""
        out: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.properties:
            out["properties"] = list(self.properties)
        out.update(self.extra)
        return out
