"""Strategy expressions are compiled at /set: a bad one is refused with where and why."""

from __future__ import annotations

from typing import Any

import pytest

from delivery.registry import Registry
from tests.plugins.registry import set_ok

# (label, property, expression value, clause, text at fault, position, words of the reason)
BAD: list[tuple[str, str, dict[str, Any], str, str, int, str]] = [
    (
        "syntax error in an if",
        "tls",
        {"match": [{"if": "retry_num >", "then": "'a'"}], "else": "'b'"},
        "match[0].if",
        "retry_num >",
        11,
        "expected",
    ),
    (
        "unknown function in a then",
        "route",
        {"match": [{"if": "true", "then": "no_such_fn(rcpt)"}], "else": "'mx'"},
        "match[0].then",
        "no_such_fn(rcpt)",
        0,
        "unknown function",
    ),
    (
        "wrong argument count",
        "schedule",
        {
            "match": [{"if": "true", "then": "'a'"}, {"if": "len(rcpt, 2)", "then": "'b'"}],
            "else": "'c'",
        },
        "match[1].if",
        "len(rcpt, 2)",
        0,
        "argument",
    ),
    (
        "host variable in a rcpt expression",
        "route",
        {"match": [{"if": "mx == 'a'", "then": "'b'"}], "else": "'mx'"},
        "match[0].if",
        "mx == 'a'",
        0,
        "not allowed",
    ),
    (
        "syntax error in the else",
        "connection",
        {"else": "'a' +"},
        "else",
        "'a' +",
        5,
        "expected",
    ),
]


@pytest.mark.parametrize(
    ("prop", "value", "clause", "text", "position", "reason"),
    [c[1:] for c in BAD],
    ids=[c[0] for c in BAD],
)
async def test_bad_expression_is_refused_with_clause_text_position_and_reason(
    registry: Registry,
    prop: str,
    value: dict[str, Any],
    clause: str,
    text: str,
    position: int,
    reason: str,
) -> None:
    before = registry.snapshot()
    result = await registry.set(
        "MtaOutboundStrategy",
        if_in_state=None,
        create=None,
        update={"singleton": {prop: value}},
        destroy=None,
    )
    error = result["notUpdated"]["singleton"]
    assert error["type"] == "invalidProperties"
    assert error["properties"] == [prop]
    description = error["description"]
    for part in (prop, clause, repr(text), f"position {position}", reason):
        assert part in description
    assert registry.snapshot() is before


async def test_host_variables_are_allowed_in_host_expressions(registry: Registry) -> None:
    await set_ok(
        registry,
        "MtaOutboundStrategy",
        update={
            "singleton": {
                "tls/match/0/if": "mx == 'mx.example.net' && retry_num > 0",
                "connection/else": "if_then(remote_ip == '192.0.2.1', 'a', 'default')",
            }
        },
    )


async def test_every_failing_expression_is_named(registry: Registry) -> None:
    result = await registry.set(
        "MtaOutboundStrategy",
        if_in_state=None,
        create=None,
        update={"singleton": {"tls/else": "(", "route/else": ")"}},
        destroy=None,
    )
    assert result["notUpdated"]["singleton"]["properties"] == ["route", "tls"]


async def test_expression_shape_errors_are_invalid_properties(registry: Registry) -> None:
    result = await registry.set(
        "MtaOutboundStrategy",
        if_in_state=None,
        create=None,
        update={"singleton": {"tls": {"match": [{"if": "true"}]}, "route": "'mx'"}},
        destroy=None,
    )
    error = result["notUpdated"]["singleton"]
    assert sorted(error["properties"]) == ["route", "tls"]
    assert "tls/match/0/then" in error["description"]
    assert "tls/else" in error["description"]
