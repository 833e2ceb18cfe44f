"""Method-level errors of the management API (RFC 8620 §3.6.2), as values.

A method that cannot run answers ``["error", {"type": ..., "description": ...}, callId]``
instead of its normal response; the other calls of the request still run. Handlers return a
`MethodFailure` rather than raising, so that the dispatcher treats every outcome alike.

Outcomes (MethodFailure.type):
    unknownMethod           no such method, or its capability is missing from ``using``
    invalidArguments        an argument is missing, unknown or of the wrong type
    invalidResultReference  a ``#name`` result reference cannot be resolved (RFC 8620 §3.7)
    forbidden               the token lacks the method's permission
    requestTooLarge         more ids than MAX_OBJECTS_IN_GET / MAX_OBJECTS_IN_SET
    stateMismatch           ``ifInState`` differs from the current state (from the registry)
    unsupportedFilter       a query filter the object does not support (from the registry)
    serverFail              an unexpected fault; details are in the daemon log only

Standards: RFC 8620 §3.6.2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MethodFailure"]


@dataclass(frozen=True, slots=True)
class MethodFailure:
    """A method-level error: its RFC 8620 ``type`` and an operator-facing description."""

    type: str
    description: str

    def to_json(self) -> dict[str, Any]:
        """The arguments of the ``error`` response."""
        return {"type": self.type, "description": self.description}
