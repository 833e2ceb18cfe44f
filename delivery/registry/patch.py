"""Apply an RFC 8620 PatchObject to a wire object. Pure: no I/O, inputs never mutated.

Each key of the patch is a JSON pointer (RFC 6901) without its leading ``/``: ``"tls"`` sets a
whole property, ``"connection/else"`` or ``"tls/match/0/if"`` one part of it. A null value
removes what the pointer names: at the top level that resets the property to its default
(the schema fills it in again); inside an array it deletes the element.

Beyond RFC 8620, which forbids pointers into arrays, an array element may be addressed by its
index, because the reference pages let an Expression's ``match`` be written as an object keyed
"0", "1", ...: an index below the length replaces (or with null, deletes) that element; the
index equal to the length appends. Sets and appends run in path order ("match/2" before
"match/10"), then deletions from arrays, highest index first, so every index in a patch
refers to the array as it was before the patch.

Outcomes:
    apply_patch(base, patch) -> the patched copy, or SetError ``invalidPatch`` naming the key:
    a malformed pointer, a pointer through something missing or not a container, an index out
    of range, or two keys of which one is a prefix of the other (RFC 8620 §5.3).

Standards: RFC 8620 §5.3 (PatchObject), RFC 6901 (JSON Pointer).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from delivery.registry.errors import SetError

__all__ = ["apply_patch", "parse_pointer"]


class _BadPatch(Exception):
    """One key of the patch cannot be applied; carries the sentence for invalidPatch."""


def parse_pointer(key: str, /) -> list[str] | None:
    """The segments of a patch key, or None when it is not a valid pointer.

    >>> parse_pointer("tls/match/0/if"), parse_pointer("a~1b~0c"), parse_pointer("a~2")
    (['tls', 'match', '0', 'if'], ['a/b~c'], None)
    """
    if not key:
        return None
    segments = []
    for raw in key.split("/"):
        if not raw or "~" in raw.replace("~0", "").replace("~1", ""):
            return None
        segments.append(raw.replace("~1", "/").replace("~0", "~"))
    return segments


def apply_patch(base: Mapping[str, Any], patch: Mapping[str, Any], /) -> dict[str, Any] | SetError:
    """``base`` with every change of ``patch`` applied (see the module docstring)."""
    ops: list[tuple[list[str], str, Any]] = []
    for key, value in patch.items():
        segments = parse_pointer(key)
        if segments is None:
            return SetError("invalidPatch", f"{key!r} is not a valid JSON pointer")
        ops.append((segments, key, value))
    paths = {tuple(segments): key for segments, key, _ in ops}
    for segments, key, _ in ops:
        for cut in range(1, len(segments)):
            if tuple(segments[:cut]) in paths:
                return SetError(
                    "invalidPatch",
                    f"{paths[tuple(segments[:cut])]!r} and {key!r} overlap: patch one or the other",
                )
    result = copy.deepcopy(dict(base))
    deletions: list[tuple[list[Any], int]] = []
    try:
        for segments, key, value in sorted(ops, key=lambda op: _order(op[0])):
            parent = _walk(result, segments[:-1], key)
            last = segments[-1]
            if isinstance(parent, dict):
                if value is None:
                    parent.pop(last, None)
                else:
                    parent[last] = copy.deepcopy(value)
                continue
            index = _index(last, key)
            if value is None:
                if index >= len(parent):
                    raise _BadPatch(f"{key!r}: no element {index} to remove")
                deletions.append((parent, index))
            elif index < len(parent):
                parent[index] = copy.deepcopy(value)
            elif index == len(parent):
                parent.append(copy.deepcopy(value))
            else:
                raise _BadPatch(
                    f"{key!r}: index {index} is beyond the end of the array (length {len(parent)})"
                )
    except _BadPatch as exc:
        return SetError("invalidPatch", str(exc))
    for array, index in sorted(deletions, key=lambda d: -d[1]):
        del array[index]
    return result


def _walk(root: dict[str, Any], segments: list[str], key: str) -> dict[str, Any] | list[Any]:
    node: Any = root
    for depth, segment in enumerate(segments):
        if isinstance(node, dict):
            if segment not in node or node[segment] is None:
                where = "/".join(segments[: depth + 1])
                raise _BadPatch(f"{key!r}: {where!r} is not set; set it as a whole first")
            node = node[segment]
        elif isinstance(node, list):
            index = _index(segment, key)
            if index >= len(node):
                raise _BadPatch(f"{key!r}: index {index} is beyond the end of the array")
            node = node[index]
        else:
            raise _BadPatch(f"{key!r} goes through a value that is not an object or array")
    if not isinstance(node, dict | list):
        raise _BadPatch(f"{key!r} goes through a value that is not an object or array")
    return node


def _index(segment: str, key: str) -> int:
    if not segment.isdigit() or str(int(segment)) != segment:
        raise _BadPatch(f"{key!r}: {segment!r} is not an array index")
    return int(segment)


def _order(segments: list[str]) -> tuple[tuple[int, int, str], ...]:
    """Sort key of a path: numeric segments by value, so that "2" comes before "10"."""
    return tuple((0, int(s), "") if s.isdigit() else (1, 0, s) for s in segments)
