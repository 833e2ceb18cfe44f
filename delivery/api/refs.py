"""Result references between method calls of one request (RFC 8620 §3.7).

An argument named ``#ids`` whose value is ``{"resultOf": callId, "name": method, "path":
pointer}`` takes its value from the response of an earlier call in the same request, e.g. a
/get of the ids a /query just found. Paths are JSON Pointers (RFC 6901) extended with ``*``:
on an array, ``*`` applies the rest of the pointer to every item and flattens arrays one level.

Outcomes:
    resolve_references() returns the arguments with every ``#name`` replaced by ``name``, or a
    MethodFailure: invalidArguments when both ``name`` and ``#name`` are given or the reference
    is malformed, invalidResultReference when the call, the method name or the path is not
    found.

Standards: RFC 8620 §3.7, RFC 6901.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from delivery.api.failures import MethodFailure

__all__ = ["Response", "evaluate_pointer", "resolve_references"]

Response = tuple[str, dict[str, Any], str]
"""An answered invocation: (method name or "error", arguments, callId)."""


class _PointerError(Exception):
    """Internal: the pointer does not match the value; turned into a MethodFailure."""


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def evaluate_pointer(value: Any, path: str, /) -> Any:
    """Follow ``path`` into ``value``; raises LookupError when it does not match.

    >>> evaluate_pointer({"list": [{"id": "a"}, {"id": "b"}]}, "/list/*/id")
    ['a', 'b']
    >>> evaluate_pointer({"ids": ["a"]}, "/ids")
    ['a']
    """
    if path == "":
        return value
    if not path.startswith("/"):
        raise LookupError(f"path {path!r} must start with '/'")
    try:
        return _walk(value, [_unescape(t) for t in path[1:].split("/")])
    except _PointerError as exc:
        raise LookupError(str(exc)) from None


def _walk(value: Any, tokens: list[str]) -> Any:
    if not tokens:
        return value
    token, rest = tokens[0], tokens[1:]
    if isinstance(value, list):
        if token == "*":
            results = []
            for item in value:
                found = _walk(item, rest)
                if isinstance(found, list):
                    results.extend(found)
                else:
                    results.append(found)
            return results
        if not token.isdigit() or int(token) >= len(value):
            raise _PointerError(f"no array element {token!r}")
        return _walk(value[int(token)], rest)
    if isinstance(value, dict):
        if token not in value:
            raise _PointerError(f"no property {token!r}")
        return _walk(value[token], rest)
    raise _PointerError(f"cannot descend into a {type(value).__name__} at {token!r}")


def resolve_references(
    arguments: dict[str, Any], responses: Sequence[Response], /
) -> dict[str, Any] | MethodFailure:
    """Replace every ``#name`` argument by the value its result reference points at."""
    resolved: dict[str, Any] = {}
    for key, value in arguments.items():
        if not key.startswith("#"):
            resolved[key] = value
            continue
        name = key[1:]
        if name in arguments:
            return MethodFailure("invalidArguments", f"both {name!r} and {key!r} are given")
        if not (
            isinstance(value, dict)
            and set(value) == {"resultOf", "name", "path"}
            and all(isinstance(v, str) for v in value.values())
        ):
            return MethodFailure(
                "invalidArguments",
                f"{key!r} must be a ResultReference {{resultOf, name, path}}",
            )
        target = next((r for r in responses if r[2] == value["resultOf"]), None)
        if target is None or target[0] != value["name"]:
            return MethodFailure(
                "invalidResultReference",
                f"{key!r}: no earlier {value['name']} response with call id {value['resultOf']!r}",
            )
        try:
            resolved[name] = evaluate_pointer(target[1], value["path"])
        except LookupError as exc:
            return MethodFailure("invalidResultReference", f"{key!r}: {exc}")
    return resolved
