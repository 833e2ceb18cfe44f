"""Each cap of limits.py: the largest allowed input compiles, one more is an ExprError naming it."""

from __future__ import annotations

import pytest

from delivery import expr
from delivery.errors import ExprError
from delivery.expr import limits


def compile_host(text: str) -> expr.Program:
    return expr.compile_text(text, expr.Context.HOST)


def test_expression_length() -> None:
    longest = "'" + "x" * (limits.MAX_EXPRESSION_LENGTH - 2) + "'"
    assert compile_host(longest).evaluate({}) == "x" * (limits.MAX_EXPRESSION_LENGTH - 2)
    with pytest.raises(ExprError, match="longer than 4096 characters") as error:
        compile_host(longest + " ")
    assert error.value.position == limits.MAX_EXPRESSION_LENGTH


def test_nesting_of_parentheses() -> None:
    depth = limits.MAX_NESTING_DEPTH
    assert compile_host("(" * (depth - 1) + "1" + ")" * (depth - 1)).evaluate({}) == 1
    with pytest.raises(ExprError, match="nested deeper than 64 levels") as error:
        compile_host("(" * depth + "1" + ")" * depth)
    assert error.value.position == depth


def test_nesting_of_operators_and_calls() -> None:
    depth = limits.MAX_NESTING_DEPTH
    assert compile_host("-" * (depth - 1) + "1").evaluate({}) == -1
    with pytest.raises(ExprError, match="nested deeper"):
        compile_host("!" * depth + "1")
    with pytest.raises(ExprError, match="nested deeper"):
        compile_host("len(" * depth + "'x'" + ")" * depth)
    with pytest.raises(ExprError, match="nested deeper"):
        compile_host(" + ".join(["1"] * (depth + 1)))


def test_long_chains_of_alternatives_count_once() -> None:
    alternatives = " || ".join(f"size == {number}" for number in range(200))
    program = compile_host(alternatives)
    assert program.evaluate({"size": 199}) == 1
    assert program.evaluate({"size": 200}) == 0


def test_array_literal_size() -> None:
    items = limits.MAX_ARRAY_ITEMS
    assert compile_host("[" + ", ".join(["1"] * items) + "]").evaluate({}) == [1] * items
    too_many = "[" + ",".join(["1"] * (items + 1)) + "]"
    with pytest.raises(ExprError, match="more than 256 items") as error:
        compile_host(too_many)
    assert error.value.position == 1 + 2 * items  # the first item beyond the cap


def test_regex_length() -> None:
    pattern = "a" * limits.MAX_REGEX_LENGTH
    assert compile_host(f"matches('{pattern}', rcpt)").evaluate({"rcpt": pattern}) == 1
    with pytest.raises(ExprError, match="longer than 1024 characters") as error:
        compile_host(f"matches('{pattern}a', rcpt)")
    assert error.value.position == len("matches(")


def test_a_run_time_pattern_beyond_the_cap_never_matches() -> None:
    program = compile_host("matches(last_status, rcpt)")
    pattern = "a" * (limits.MAX_REGEX_LENGTH + 1)
    assert program.evaluate({"last_status": pattern, "rcpt": pattern}) == 0
    assert program.evaluate({"last_status": "a+", "rcpt": pattern}) == 1


def test_match_rules() -> None:
    rules = [("rcpt == 'x'", "'x'")] * limits.MAX_MATCH_RULES
    block = expr.compile_if_block(rules, "'else'", expr.Context.RCPT)
    assert block.evaluate({"rcpt": "x"}) == "x"
    with pytest.raises(expr.ClauseError, match="more than 256 match rules") as error:
        expr.compile_if_block([*rules, ("1", "'y'")], "'else'", expr.Context.RCPT)
    assert error.value.clause == "match[256].if"


def test_dns_queries_per_expression() -> None:
    query = "dns_query('a.test', 'A')"
    compile_host(" + ".join([query] * limits.MAX_DNS_QUERIES))
    with pytest.raises(ExprError, match="more than 8 dns_query") as error:
        compile_host(" || ".join([query] * (limits.MAX_DNS_QUERIES + 1)))
    assert error.value.position == (len(query) + 4) * limits.MAX_DNS_QUERIES


def test_dns_queries_count_across_the_clauses_of_an_if_block() -> None:
    query = "count(dns_query(rcpt_domain, 'MX'))"
    rules = [(query, "'r'")] * limits.MAX_DNS_QUERIES
    with pytest.raises(expr.ClauseError, match="more than 8 dns_query") as error:
        expr.compile_if_block(rules, query, expr.Context.RCPT)
    assert (error.value.clause, error.value.position) == ("else", 6)


def test_numeric_text_length() -> None:
    program = compile_host("last_status == 1")
    digits = "0" * (limits.MAX_NUMERIC_TEXT_LENGTH - 1) + "1"
    assert program.evaluate({"last_status": digits}) == 1
    assert program.evaluate({"last_status": "0" + digits}) == 0
