"""Validate one wire object against its schema; turn pydantic's findings into a SetError.

Outcomes:
    validate(spec, data) -> the validated model, or SetError ``invalidProperties`` whose
    ``properties`` are the top-level property names at fault and whose ``description`` names
    each fault by its JSON-pointer path ("sourceIps/0/sourceIp: ..."), joined by "; ".

Security:
    Values are quoted back to the operator in descriptions (cut at MAX_QUOTED_CHARS), except
    anything under a ``secret`` property, which is never echoed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from delivery.registry.errors import SetError
from delivery.registry.schema import ObjectSpec, WireModel

__all__ = ["MAX_QUOTED_CHARS", "invalid", "pointer", "validate"]

MAX_QUOTED_CHARS: Final = 60
"""Longest value quoted back in a description: enough to recognise it, short enough to read."""

_UNQUOTED: Final = frozenset(
    {"missing", "extra_forbidden", "value_error", "union_tag_not_found", "union_tag_invalid"}
)
"""Kinds whose message already says all there is (or quotes the value itself)."""
_SHAPES: Final = {
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "list_type": "must be a JSON array",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "string_type": "must be a string",
    "extra_forbidden": "unknown property",
    "missing": "required property is missing",
}


def validate(spec: ObjectSpec, data: Mapping[str, Any], /) -> WireModel | SetError:
    """The model of ``data`` (a complete wire object, without ``id``), or why it is invalid."""
    model = spec.model_for(data)
    if model is None:
        expected = ", ".join(repr(tag) for tag in spec.variants)
        tag = data.get("@type")
        if tag is None:
            return invalid([("@type", f"required property is missing: one of {expected}")])
        return invalid([("@type", f"must be one of {expected}, not {_quote(tag)}")])
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        return invalid([_problem(error, data) for error in exc.errors(include_url=False)])


def invalid(problems: Sequence[tuple[str, str]], /) -> SetError:
    """SetError invalidProperties from (path, message) pairs."""
    properties = dict.fromkeys(path.split("/", 1)[0] for path, _ in problems)
    description = "; ".join(f"{path}: {message}" for path, message in problems)
    return SetError("invalidProperties", description, tuple(properties))


def pointer(segments: Sequence[str | int], /) -> str:
    """The JSON-pointer path (without the leading ``/``) of a location.

    >>> pointer(["tls", "match", 0, "if"])
    'tls/match/0/if'
    """
    return "/".join(str(s).replace("~", "~0").replace("/", "~1") for s in segments)


def _problem(error: ErrorDetails, data: Mapping[str, Any]) -> tuple[str, str]:
    segments = _segments(error["loc"], data)
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
    elif kind == "union_tag_not_found":
        segments.append("@type")
        message = "required property is missing"
    elif kind == "union_tag_invalid":
        segments.append("@type")
        message = f"must be one of {ctx.get('expected_tags')}, not {_quote(ctx.get('tag'))}"
    elif kind in _SHAPES:
        message = _SHAPES[kind]
    else:
        message = error["msg"].replace("Input should be", "must be")
        message = message[0].lower() + message[1:]
    quotable = (
        kind not in _UNQUOTED
        and "secret" not in segments
        and not isinstance(error["input"], dict | list)
    )
    if quotable:
        message += f", not {_quote(error['input'])}"
    return pointer(segments), message


def _segments(loc: Sequence[str | int], data: Any) -> list[str | int]:
    """The location in the user's terms: pydantic adds the tag of a tagged union
    (``expiry/Ttl/expire``); the user wrote ``expiry/expire``."""
    segments: list[str | int] = []
    current = data
    for part in loc:
        if isinstance(current, Mapping) and part not in current and current.get("@type") == part:
            continue
        segments.append(part)
        if isinstance(current, Mapping):
            current = current.get(part)
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        else:
            current = None
    return segments


def _quote(value: Any) -> str:
    text = repr(value)
    if len(text) > MAX_QUOTED_CHARS:
        text = text[: MAX_QUOTED_CHARS - 3] + "..."
    return text
