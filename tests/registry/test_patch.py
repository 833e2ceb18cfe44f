"""RFC 8620 PatchObject application (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from delivery.registry.errors import SetError
from delivery.registry.patch import apply_patch

RULES = [{"if": "a", "then": "1"}, {"if": "b", "then": "2"}, {"if": "c", "then": "3"}]
BASE: dict[str, Any] = {"tls": {"match": RULES, "else": "x"}, "name": "n", "n~/": 1}

# (label, patch, expected tls value or whole object)
APPLIED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("set a property", {"name": "m"}, {**BASE, "name": "m"}),
    ("null removes a property", {"name": None}, {k: v for k, v in BASE.items() if k != "name"}),
    ("set a nested member", {"tls/else": "y"}, {**BASE, "tls": {"match": RULES, "else": "y"}}),
    (
        "set inside an array element",
        {"tls/match/1/if": "B"},
        {**BASE, "tls": {"match": [RULES[0], {"if": "B", "then": "2"}, RULES[2]], "else": "x"}},
    ),
    (
        "append at the end",
        {"tls/match/3": {"if": "d", "then": "4"}},
        {**BASE, "tls": {"match": [*RULES, {"if": "d", "then": "4"}], "else": "x"}},
    ),
    (
        "appends in index order: 3 before 4",
        {"tls/match/4": {"if": "e", "then": "5"}, "tls/match/3": {"if": "d", "then": "4"}},
        {
            **BASE,
            "tls": {
                "match": [*RULES, {"if": "d", "then": "4"}, {"if": "e", "then": "5"}],
                "else": "x",
            },
        },
    ),
    (
        "deletions use the indexes before the patch",
        {"tls/match/0": None, "tls/match/2": None, "tls/match/1/then": "two"},
        {**BASE, "tls": {"match": [{"if": "b", "then": "two"}], "else": "x"}},
    ),
    ("escaped pointer", {"n~0~1": 2}, {**BASE, "n~/": 2}),
]


@pytest.mark.parametrize(
    ("patch", "expected"), [c[1:] for c in APPLIED], ids=[c[0] for c in APPLIED]
)
def test_patch_applies(patch: dict[str, Any], expected: dict[str, Any]) -> None:
    snapshot = repr(BASE)
    assert apply_patch(BASE, patch) == expected
    assert repr(BASE) == snapshot  # the input is never mutated


# (label, patch, words of the description)
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("empty key", {"": 1}, "not a valid JSON pointer"),
    ("empty segment", {"tls//else": 1}, "not a valid JSON pointer"),
    ("bad escape", {"tls~2": 1}, "not a valid JSON pointer"),
    ("through a missing member", {"expiry/expire": 1}, "not set"),
    ("through a string", {"name/x": 1}, "not an object or array"),
    ("index past the end", {"tls/match/4": {}}, "beyond the end"),
    ("index with a leading zero", {"tls/match/01/if": "x"}, "not an array index"),
    ("index not a number", {"tls/match/first": {}}, "not an array index"),
    ("delete past the end", {"tls/match/3": None}, "no element"),
    ("overlapping keys", {"tls": None, "tls/else": "y"}, "overlap"),
]


@pytest.mark.parametrize(("patch", "words"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_patch_is_refused(patch: dict[str, Any], words: str) -> None:
    result = apply_patch(BASE, patch)
    assert isinstance(result, SetError)
    assert result.type == "invalidPatch"
    assert words in result.description
