"""The public API others code against (delivery.expr), as the engine and the registry use it."""

from __future__ import annotations

import pytest

from delivery import expr
from delivery.errors import ExprError, LastError

TLS_RULES = [("retry_num > 0 && last_error == 'tls'", "'invalid-tls'")]


def test_contexts_and_their_variables() -> None:
    rcpt, host = expr.variables_of(expr.Context.RCPT), expr.variables_of(expr.Context.HOST)
    assert len(rcpt) == 17 and rcpt < host
    assert host - rcpt == {"mx", "remote_ip", "local_ip"}
    assert expr.Context("rcpt") is expr.Context.RCPT and expr.Context("host") is expr.Context.HOST


@pytest.mark.parametrize(
    ("value", "name"),
    [("invalid-tls", "invalid-tls"), ("", None), (0, None), (1, None), (1.5, None), (["a"], None)],
)
def test_result_name_selects_default_for_anything_but_a_name(
    value: expr.Value, name: str | None
) -> None:
    assert expr.result_name(value) == name


def test_the_engine_may_pass_enum_members_and_booleans_as_variables() -> None:
    block = expr.compile_if_block(TLS_RULES, "'default'", expr.Context.HOST)
    assert block.evaluate({"retry_num": True, "last_error": LastError.TLS}) == "invalid-tls"
    assert block.evaluate({"retry_num": False, "last_error": LastError.TLS}) == "default"
    assert block.evaluate({"retry_num": 1, "last_error": LastError.DANE}) == "default"


def test_a_non_string_result_selects_default() -> None:
    block = expr.compile_if_block([("size > 10", "size")], "'remote'", expr.Context.RCPT)
    assert expr.result_name(block.evaluate({"size": 11})) is None
    assert expr.result_name(block.evaluate({"size": 1})) == "remote"


def test_clause_error_names_the_clause_and_renders_a_caret() -> None:
    with pytest.raises(expr.ClauseError) as raised:
        expr.compile_if_block([("true", "'a'")], "default", expr.Context.HOST)
    error = raised.value
    assert isinstance(error, ExprError)
    assert (error.clause, error.expression, error.position) == ("else", "default", 0)
    assert str(error) == (
        "else: unknown variable 'default' (to return the text, quote it: 'default') "
        "at position 0\n  default\n  ^"
    )


def test_captures_do_not_leak_between_evaluations() -> None:
    block = expr.compile_if_block(
        [("matches('^(.+)@relay', rcpt) || rcpt == 'x'", "'[' + $1 + ']'")],
        "'none'",
        expr.Context.RCPT,
    )
    assert block.evaluate({"rcpt": "alice@relay"}) == "[alice]"
    assert block.evaluate({"rcpt": "x"}) == "[]"
    program = expr.compile_text("matches('(b)', rcpt) && $1", expr.Context.RCPT)
    assert (program.evaluate({"rcpt": "abc"}), program.evaluate({"rcpt": "ac"})) == ("b", 0)


def test_uses_dns() -> None:
    assert not expr.compile_if_block(TLS_RULES, "'default'", expr.Context.HOST).uses_dns
    block = expr.compile_if_block([("1", "'a'")], "dns_query(mx, 'A')[0]", expr.Context.HOST)
    assert block.uses_dns
    assert expr.compile_text("dns_query(mx, 'A')", expr.Context.HOST).uses_dns
    assert not expr.compile_text("is_local_domain(mx)", expr.Context.HOST).uses_dns


def test_compiled_objects_keep_their_source() -> None:
    block = expr.compile_if_block(TLS_RULES, "'default'", expr.Context.HOST)
    assert (block.rules, block.otherwise, block.context) == (
        tuple(TLS_RULES),
        "'default'",
        expr.Context.HOST,
    )
    program = expr.compile_text("1 + 1", expr.Context.RCPT)
    assert (program.text, program.context, program.evaluate({})) == ("1 + 1", expr.Context.RCPT, 2)


def test_environment_defaults_to_nothing_known() -> None:
    env = expr.Environment()
    assert (env.local_domains, dict(env.dns_answers)) == (frozenset(), {})
    assert expr.compile_text("is_local_domain('example.org')", expr.Context.RCPT).evaluate({}) == 0
