"""JMAP /query over one type's objects: filter, sort, window (RFC 8620 §5.5). Pure: no I/O.

Filter conditions: ``{"name": "text"}`` matches names containing the text, ignoring case; an
empty condition ``{}`` matches everything. FilterOperators combine them:
``{"operator": "AND" | "OR" | "NOT", "conditions": [...]}`` (NOT: none of the conditions
matches), also spelled ``AllOf`` / ``AnyOf`` / ``Not`` as the reference pages do.
Sort: Comparators ``{"property": "name" | "id", "isAscending": bool}``; names compare ignoring
case (collation ``i;unicode-casemap``, the default, or ``i;ascii-casemap``). Ids are opaque,
so sorting by ``id`` and the default order are both creation order.

Outcomes:
    run_query(...) -> QueryResult(ids, position, total)
    MethodError unsupportedFilter (unknown condition or operator), unsupportedSort (unknown
    sort property), invalidArguments (a value of the wrong type).

Standards: RFC 8620 §5.5.
Limits: MAX_FILTER_DEPTH.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from delivery.registry.errors import MethodError

__all__ = ["MAX_FILTER_DEPTH", "QueryResult", "Row", "run_query"]

MAX_FILTER_DEPTH: Final = 16
"""Nesting of FilterOperators: far beyond any useful filter; bounds the recursion."""

_OPERATORS: Final = {
    "AND": "AND",
    "OR": "OR",
    "NOT": "NOT",
    "AllOf": "AND",
    "AnyOf": "OR",
    "Not": "NOT",
}
_SORTABLE: Final = ("name", "id")
_COLLATIONS: Final = ("i;unicode-casemap", "i;ascii-casemap")
"""Names compare case-insensitively (RFC 4790 collations); both of these mean that here."""


@dataclass(frozen=True, slots=True)
class Row:
    """What a query looks at of one object."""

    id: str
    seq: int
    """Creation order."""
    name: str
    """Empty for a singleton."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    ids: list[str]
    position: int
    """Index in the full result of ids[0]."""
    total: int


Predicate = Callable[[Row], bool]


def run_query(
    rows: Sequence[Row],
    /,
    *,
    filter: Mapping[str, Any] | None,
    sort: Sequence[Mapping[str, Any]] | None,
    position: int = 0,
    limit: int | None = None,
) -> QueryResult:
    """The ids of ``rows`` that pass ``filter``, sorted, from ``position``, at most ``limit``.

    A negative ``position`` counts from the end (RFC 8620 §5.5).
    """
    if isinstance(position, bool) or not isinstance(position, int):
        raise MethodError("invalidArguments", "position must be an integer")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise MethodError("invalidArguments", "limit must be a non-negative integer or null")
    matches = _compile(filter, depth=0) if filter is not None else _everything
    ordered = _sorted([row for row in rows if matches(row)], sort or [])
    total = len(ordered)
    start = max(0, total + position) if position < 0 else position
    end = total if limit is None else start + limit
    return QueryResult([row.id for row in ordered[start:end]], min(start, total), total)


def _everything(row: Row) -> bool:
    return True


def _compile(node: Any, *, depth: int) -> Predicate:
    if not isinstance(node, Mapping):
        raise MethodError("invalidArguments", "a filter must be a JSON object")
    if depth > MAX_FILTER_DEPTH:
        raise MethodError(
            "unsupportedFilter", f"filters may nest at most {MAX_FILTER_DEPTH} operators deep"
        )
    if "operator" in node:
        return _compile_operator(node, depth=depth)
    if "conditions" in node:
        raise MethodError("unsupportedFilter", "'conditions' without an 'operator'")
    tests: list[Predicate] = []
    for key, value in node.items():
        if key != "name":
            raise MethodError(
                "unsupportedFilter", f"unknown filter condition {key!r}; the only one is 'name'"
            )
        if not isinstance(value, str):
            raise MethodError("invalidArguments", "the 'name' condition must be a string")
        tests.append(_name_contains(value.casefold()))
    return lambda row: all(test(row) for test in tests)


def _compile_operator(node: Mapping[str, Any], *, depth: int) -> Predicate:
    extra = sorted(set(node) - {"operator", "conditions"})
    if extra:
        raise MethodError("unsupportedFilter", f"unknown FilterOperator member {extra[0]!r}")
    operator = _OPERATORS.get(node["operator"]) if isinstance(node["operator"], str) else None
    if operator is None:
        raise MethodError(
            "unsupportedFilter",
            f"unknown operator {node['operator']!r}: use AND, OR or NOT (or AllOf, AnyOf, Not)",
        )
    conditions = node.get("conditions")
    if not isinstance(conditions, list):
        raise MethodError("invalidArguments", "a FilterOperator needs a 'conditions' array")
    parts = [_compile(part, depth=depth + 1) for part in conditions]
    if operator == "AND":
        return lambda row: all(part(row) for part in parts)
    if operator == "OR":
        return lambda row: any(part(row) for part in parts)
    return lambda row: not any(part(row) for part in parts)


def _name_contains(text: str) -> Predicate:
    return lambda row: text in row.name.casefold()


def _sorted(rows: list[Row], comparators: Sequence[Mapping[str, Any]]) -> list[Row]:
    ordered = sorted(rows, key=lambda row: row.seq)
    # Stable sorts from the last comparator to the first give the first one precedence.
    for comparator in reversed(comparators):
        if not isinstance(comparator, Mapping):
            raise MethodError("invalidArguments", "each sort entry must be a Comparator object")
        unknown = sorted(set(comparator) - {"property", "isAscending", "collation"})
        if unknown:
            raise MethodError("invalidArguments", f"unknown Comparator member {unknown[0]!r}")
        prop = comparator.get("property")
        if prop not in _SORTABLE:
            raise MethodError("unsupportedSort", f"cannot sort by {prop!r}: sort by 'name' or 'id'")
        collation = comparator.get("collation", _COLLATIONS[0])
        if collation not in _COLLATIONS:
            raise MethodError(
                "unsupportedSort",
                f"unknown collation {collation!r}: use one of {', '.join(_COLLATIONS)}",
            )
        ascending = comparator.get("isAscending", True)
        if not isinstance(ascending, bool):
            raise MethodError("invalidArguments", "isAscending must be true or false")
        key: Callable[[Row], Any] = (
            (lambda row: row.name.casefold()) if prop == "name" else (lambda row: row.seq)
        )
        ordered.sort(key=key, reverse=not ascending)
    return ordered
