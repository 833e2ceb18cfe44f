"""/query filters (conditions, AND/OR/NOT and AllOf/AnyOf/Not), sorting and windows."""

from __future__ import annotations

from typing import Any

import pytest

from delivery.registry import MethodError, Registry
from delivery.registry import query as q
from tests.plugins.registry import set_ok

NAMES = ["alpha", "Beta", "gamma-strict", "delta", "strict-beta"]
ROWS = [q.Row(id=f"id{n}", seq=n, name=name) for n, name in enumerate(NAMES)]


def names(result: q.QueryResult) -> list[str]:
    by_id = {row.id: row.name for row in ROWS}
    return [by_id[i] for i in result.ids]


def cond(text: str) -> dict[str, Any]:
    return {"name": text}


# (label, filter, names in creation order)
FILTERS: list[tuple[str, dict[str, Any] | None, list[str]]] = [
    ("no filter", None, NAMES),
    ("empty condition", {}, NAMES),
    ("substring", cond("str"), ["gamma-strict", "strict-beta"]),
    ("case-insensitive", cond("BETA"), ["Beta", "strict-beta"]),
    ("no match", cond("zeta"), []),
    ("AND", {"operator": "AND", "conditions": [cond("beta"), cond("strict")]}, ["strict-beta"]),
    ("OR", {"operator": "OR", "conditions": [cond("alpha"), cond("delta")]}, ["alpha", "delta"]),
    ("NOT is none of", {"operator": "NOT", "conditions": [cond("a"), cond("t")]}, []),
    ("NOT", {"operator": "NOT", "conditions": [cond("beta")]}, ["alpha", "gamma-strict", "delta"]),
    ("AllOf", {"operator": "AllOf", "conditions": [cond("a"), cond("mm")]}, ["gamma-strict"]),
    (
        "AnyOf",
        {"operator": "AnyOf", "conditions": [cond("gamma"), cond("Beta")]},
        ["Beta", "gamma-strict", "strict-beta"],
    ),
    ("Not", {"operator": "Not", "conditions": [cond("a")]}, []),
    ("empty AND", {"operator": "AND", "conditions": []}, NAMES),
    ("empty OR", {"operator": "OR", "conditions": []}, []),
    (
        "nested",
        {
            "operator": "AND",
            "conditions": [
                {"operator": "OR", "conditions": [cond("beta"), cond("gamma")]},
                {"operator": "NOT", "conditions": [cond("strict-")]},
            ],
        },
        ["Beta", "gamma-strict"],
    ),
]


@pytest.mark.parametrize(("flt", "expected"), [c[1:] for c in FILTERS], ids=[c[0] for c in FILTERS])
def test_filters(flt: dict[str, Any] | None, expected: list[str]) -> None:
    result = q.run_query(ROWS, filter=flt, sort=None)
    assert names(result) == expected
    assert result.total == len(expected)


# (label, sort, names)
SORTS: list[tuple[str, list[dict[str, Any]], list[str]]] = [
    ("by name", [{"property": "name"}], ["alpha", "Beta", "delta", "gamma-strict", "strict-beta"]),
    (
        "by name, descending",
        [{"property": "name", "isAscending": False}],
        ["strict-beta", "gamma-strict", "delta", "Beta", "alpha"],
    ),
    ("by id is creation order", [{"property": "id"}], NAMES),
    ("by id, descending", [{"property": "id", "isAscending": False}], NAMES[::-1]),
    (
        "collation",
        [{"property": "name", "collation": "i;ascii-casemap"}],
        ["alpha", "Beta", "delta", "gamma-strict", "strict-beta"],
    ),
]


@pytest.mark.parametrize(("sort", "expected"), [c[1:] for c in SORTS], ids=[c[0] for c in SORTS])
def test_sorts(sort: list[dict[str, Any]], expected: list[str]) -> None:
    assert names(q.run_query(ROWS, filter=None, sort=sort)) == expected


# (label, position, limit, names, position answered)
WINDOWS: list[tuple[str, int, int | None, list[str], int]] = [
    ("from 1, two", 1, 2, ["Beta", "gamma-strict"], 1),
    ("negative position counts from the end", -2, None, ["delta", "strict-beta"], 3),
    ("far negative position starts at 0", -50, 1, ["alpha"], 0),
    ("past the end", 9, None, [], 5),
    ("limit 0", 0, 0, [], 0),
]


@pytest.mark.parametrize(
    ("position", "limit", "expected", "answered"),
    [c[1:] for c in WINDOWS],
    ids=[c[0] for c in WINDOWS],
)
def test_windows(position: int, limit: int | None, expected: list[str], answered: int) -> None:
    result = q.run_query(ROWS, filter=None, sort=None, position=position, limit=limit)
    assert names(result) == expected
    assert result.position == answered
    assert result.total == len(NAMES)


# (label, filter, sort, limit, error type)
ERRORS: list[tuple[str, Any, Any, Any, str]] = [
    ("unknown condition", {"startTls": "require"}, None, None, "unsupportedFilter"),
    ("unknown operator", {"operator": "XOR", "conditions": []}, None, None, "unsupportedFilter"),
    ("lowercase operator", {"operator": "and", "conditions": []}, None, None, "unsupportedFilter"),
    (
        "operator with a condition",
        {"operator": "AND", "conditions": [], "name": "x"},
        None,
        None,
        "unsupportedFilter",
    ),
    ("conditions without operator", {"conditions": []}, None, None, "unsupportedFilter"),
    (
        "conditions not a list",
        {"operator": "AND", "conditions": {}},
        None,
        None,
        "invalidArguments",
    ),
    ("name not a string", {"name": 5}, None, None, "invalidArguments"),
    (
        "too deep",
        {"operator": "NOT", "conditions": [{"operator": "NOT", "conditions": [{}]}]},
        None,
        None,
        "",
    ),
    ("unknown sort property", None, [{"property": "startTls"}], None, "unsupportedSort"),
    (
        "unknown collation",
        None,
        [{"property": "name", "collation": "i;octet"}],
        None,
        "unsupportedSort",
    ),
    (
        "isAscending not a bool",
        None,
        [{"property": "name", "isAscending": "yes"}],
        None,
        "invalidArguments",
    ),
    ("negative limit", None, None, -1, "invalidArguments"),
]


@pytest.mark.parametrize(
    ("flt", "sort", "limit", "error_type"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_query_errors(flt: Any, sort: Any, limit: Any, error_type: str) -> None:
    if not error_type:  # two levels deep is fine; the cap is far above
        q.run_query(ROWS, filter=flt, sort=sort, limit=limit)
        return
    with pytest.raises(MethodError) as caught:
        q.run_query(ROWS, filter=flt, sort=sort, limit=limit)
    assert caught.value.type == error_type


def test_nesting_beyond_the_cap_is_refused() -> None:
    flt: dict[str, Any] = {}
    for _ in range(q.MAX_FILTER_DEPTH + 1):
        flt = {"operator": "AND", "conditions": [flt]}
    with pytest.raises(MethodError) as caught:
        q.run_query(ROWS, filter=flt, sort=None)
    assert caught.value.type == "unsupportedFilter"


async def test_query_through_the_registry(registry: Registry) -> None:
    await set_ok(
        registry,
        "MtaTlsStrategy",
        create={"a": {"name": "example-strict"}, "b": {"name": "Example-Relaxed"}},
    )
    result = await registry.query(
        "MtaTlsStrategy",
        filter={
            "operator": "AllOf",
            "conditions": [
                {"name": "example"},
                {"operator": "Not", "conditions": [{"name": "relaxed"}]},
            ],
        },
        sort=[{"property": "name"}],
    )
    listed = await registry.get("MtaTlsStrategy", ids=result["ids"], properties=["name"])
    assert [o["name"] for o in listed["list"]] == ["example-strict"]
    assert result["total"] == 1
    assert result["canCalculateChanges"] is False
    assert (
        result["queryState"]
        == (await registry.get("MtaTlsStrategy", ids=[], properties=None))["state"]
    )
    everything = await registry.query("MtaTlsStrategy", filter=None, sort=None, limit=2)
    assert everything["total"] == 4 and len(everything["ids"]) == 2


async def test_query_of_the_singleton(registry: Registry) -> None:
    result = await registry.query("MtaOutboundStrategy", filter=None, sort=None)
    assert result["ids"] == ["singleton"]
    with pytest.raises(MethodError) as caught:
        await registry.query("MtaOutboundStrategy", filter={"name": "x"}, sort=None)
    assert caught.value.type == "unsupportedFilter"
