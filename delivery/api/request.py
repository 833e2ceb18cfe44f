"""The JMAP Request envelope (RFC 8620 §3.3): parse and check, before any method runs.

`parse_request(body)` turns the raw body of ``POST /api`` into a `Request`, or into a
`RequestProblem`: the request-level errors of RFC 8620 §3.6.1, answered with HTTP 400 and an
``application/problem+json`` body (RFC 7807).

Outcomes (RequestProblem.type, all ``urn:ietf:params:jmap:error:...``):
    notJSON            the body is not UTF-8 I-JSON (NaN/Infinity and over-deep nesting
                       included)
    notRequest         JSON, but not a Request object: ``using``/``methodCalls`` missing or of
                       the wrong type, or a method call that is not [name, arguments, callId]
    unknownCapability  ``using`` names a capability this server does not have
    limit              a named cap is exceeded (``limit`` names it, as the Session advertises)

Security:
    The body comes from any authenticated client. Its size is capped before parsing
    (MAX_SIZE_REQUEST_BYTES, enforced by the HTTP layer) and so is the number of calls.

Standards: RFC 8620 §3.3, §3.6.1; RFC 7807; RFC 7493 (I-JSON).
Limits: the MAX_* constants below; each is advertised in the Session object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CAPABILITIES",
    "CORE_CAPABILITY",
    "MAX_CALLS_IN_REQUEST",
    "MAX_CONCURRENT_REQUESTS",
    "MAX_OBJECTS_IN_GET",
    "MAX_OBJECTS_IN_SET",
    "MAX_SIZE_REQUEST_BYTES",
    "STALWART_CAPABILITY",
    "TOO_LARGE",
    "MethodCall",
    "Request",
    "RequestProblem",
    "parse_request",
]

CORE_CAPABILITY = "urn:ietf:params:jmap:core"
STALWART_CAPABILITY = "urn:stalwart:jmap"
CAPABILITIES = (CORE_CAPABILITY, STALWART_CAPABILITY)
"""Every capability this server implements; any other in ``using`` is unknownCapability."""

MAX_SIZE_REQUEST_BYTES = 1_000_000
"""Largest request body: generous for bulk object changes, bounds memory per request."""

MAX_CALLS_IN_REQUEST = 64
"""Most method calls in one request: bounds the store work one request can queue."""

MAX_CONCURRENT_REQUESTS = 32
"""Most requests in flight at once: management traffic is light; more is a runaway script."""

MAX_OBJECTS_IN_GET = 1_000
"""Most ids in one /get: the object tables are small, this bounds the response size."""

MAX_OBJECTS_IN_SET = 500
"""Most create + update + destroy entries in one /set: each runs validation and a store write."""

_PROBLEM_PREFIX = "urn:ietf:params:jmap:error:"


@dataclass(frozen=True, slots=True)
class RequestProblem:
    """A request-level error (RFC 8620 §3.6.1); ``limit`` names the cap for type limit."""

    type: str
    detail: str
    limit: str | None = None
    status: int = 400

    def to_json(self) -> dict[str, Any]:
        """The ``application/problem+json`` body."""
        body: dict[str, Any] = {
            "type": _PROBLEM_PREFIX + self.type,
            "status": self.status,
            "detail": self.detail,
        }
        if self.limit is not None:
            body["limit"] = self.limit
        return body


TOO_LARGE = RequestProblem(
    "limit", f"the request is larger than {MAX_SIZE_REQUEST_BYTES} bytes", "maxSizeRequest"
)
"""A body over MAX_SIZE_REQUEST_BYTES, whether the HTTP layer or parse_request finds it."""


@dataclass(frozen=True, slots=True)
class MethodCall:
    """One Invocation: [name, arguments, callId]."""

    name: str
    arguments: dict[str, Any]
    call_id: str


@dataclass(frozen=True, slots=True)
class Request:
    """A checked Request; ``created_ids`` is None when the client sent no createdIds."""

    using: frozenset[str]
    calls: tuple[MethodCall, ...]
    created_ids: dict[str, str] | None = field(default=None)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_request(body: bytes, /) -> Request | RequestProblem:
    """Parse and check a Request body.

    >>> parse_request(b"{").type, parse_request(b"[]").type
    ('notJSON', 'notRequest')
    >>> parse_request(b'{"using": ["urn:x"], "methodCalls": []}').type
    'unknownCapability'
    """
    if len(body) > MAX_SIZE_REQUEST_BYTES:
        return TOO_LARGE
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        return RequestProblem("notJSON", "the request body is not UTF-8")
    except RecursionError:
        return RequestProblem("notJSON", "the request body is nested too deeply")
    except ValueError as exc:
        return RequestProblem("notJSON", f"the request body is not valid JSON: {exc}")
    return check_request(data)


def check_request(data: Any, /) -> Request | RequestProblem:
    """Check parsed JSON against the Request type signature, then capabilities and limits."""
    if not isinstance(data, dict):
        return RequestProblem("notRequest", "the request must be a JSON object")
    using = data.get("using")
    if not isinstance(using, list) or not all(isinstance(u, str) for u in using):
        return RequestProblem("notRequest", "'using' must be an array of capability strings")
    raw_calls = data.get("methodCalls")
    if not isinstance(raw_calls, list):
        return RequestProblem("notRequest", "'methodCalls' must be an array of invocations")
    calls = []
    for index, call in enumerate(raw_calls):
        if not (
            isinstance(call, list)
            and len(call) == 3
            and isinstance(call[0], str)
            and isinstance(call[1], dict)
            and isinstance(call[2], str)
        ):
            return RequestProblem(
                "notRequest",
                f"methodCalls[{index}] must be [name, arguments object, call id]",
            )
        calls.append(MethodCall(call[0], call[1], call[2]))
    created = data.get("createdIds")
    if created is not None and not (
        isinstance(created, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in created.items())
    ):
        return RequestProblem("notRequest", "'createdIds' must map creation ids to ids")
    unknown = [u for u in using if u not in CAPABILITIES]
    if unknown:
        return RequestProblem(
            "unknownCapability",
            f"unknown capability {unknown[0]!r}; this server has {', '.join(CAPABILITIES)}",
        )
    if len(calls) > MAX_CALLS_IN_REQUEST:
        return RequestProblem(
            "limit",
            f"{len(calls)} method calls; at most {MAX_CALLS_IN_REQUEST} per request",
            "maxCallsInRequest",
        )
    return Request(frozenset(using), tuple(calls), dict(created) if created is not None else None)
