"""Property tests: compiling never fails but with ExprError; evaluating never fails at all.

The only exception evaluation may raise is NeedsLookup, the request for a DNS answer.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery.errors import ExprError
from delivery.expr import Context, NeedsLookup, Program, Value, compile_text, variables_of
from delivery.expr.functions import FUNCTIONS, SPECIAL_FORMS
from delivery.expr.tokens import INT_MAX, INT_MIN

HOST_VARIABLES = sorted(variables_of(Context.HOST))

# Pieces of valid and invalid syntax, so that random texts reach the parser and the checks.
FRAGMENTS = [
    *HOST_VARIABLES,
    *(f"{name}(" for name in [*FUNCTIONS, *SPECIAL_FORMS]),
    *"!-*/+<>=^&|()[],",
    *["<=", ">=", "==", "!=", "&&", "||"],
    *["0", "1", "-1", "2.5", "9223372036854775807", "90s", "5m", "100ms", "true", "false"],
    *["'tls'", "''", "'a@b.example'", "'(a)(b)'", "'^(.+)@(.+)$'", "'md5'", "'local'", "'A'"],
    *["'10.0.0.0/8'", "'::1'", "','", "'\\d+'", '"x"', "$0", "$1", "$2", "default", "nope"],
]

values_strategy: st.SearchStrategy[Value] = st.recursive(
    st.one_of(
        st.integers(min_value=INT_MIN, max_value=INT_MAX),
        st.floats(),
        st.text(max_size=20),
        st.sampled_from(["tls", "1", "a@b.example", "10.1.2.3", "::1", "", "1e3"]),
    ),
    lambda children: st.lists(children, max_size=4),
    max_leaves=8,
)


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# Literal arguments that compile checks (functions.Signature.choices), and safe patterns.
_CHOICES = {"hash": ["'md5'", "'sha256'"], "email_part": ["'local'", "'domain'"]}
_PATTERNS = ["'^(.+)@(.+)$'", "'(a)(b)?'", "'\\d+'", "'(?i)TLS'", "''", "'^x$'"]
_ARITY = {
    name: function.signature.min_args
    for name, function in FUNCTIONS.items()
    if name != "dns_query"  # needs a lookup: covered by the cases and test_resolve
}

_leaves = st.one_of(
    st.sampled_from(HOST_VARIABLES),
    st.integers(min_value=0, max_value=INT_MAX).map(str),
    st.floats(min_value=0, max_value=1e6).map(lambda number: f"{number:.3f}"),
    st.sampled_from(["90s", "5m", "100ms", "true", "false", "[]"]),
    st.text(max_size=12).map(_quoted),
    st.sampled_from(["'tls'", "'10.0.0.0/8'", "'a@b.example'", "'1'", "'2.5'", "','"]),
)


def _compound(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    operators = st.sampled_from(["*", "/", "+", "-", "<", "<=", ">", ">=", "==", "=", "!="])
    logical = st.sampled_from(["^", "&&", "&", "||", "|"])
    call = st.sampled_from(sorted(_ARITY)).flatmap(
        lambda name: st.tuples(
            *[
                st.sampled_from(_CHOICES[name]) if position == 1 and name in _CHOICES else children
                for position in range(_ARITY[name])
            ]
        ).map(lambda arguments: f"{name}({', '.join(arguments)})")
    )
    return st.one_of(
        st.tuples(children, st.one_of(operators, logical), children).map(
            lambda parts: f"({parts[0]} {parts[1]} {parts[2]})"
        ),
        st.tuples(st.sampled_from(["!", "-"]), children).map("".join),
        st.lists(children, max_size=3).map(lambda items: f"[{', '.join(items)}]"),
        st.tuples(children, children).map(lambda parts: f"{parts[0]}[{parts[1]}]"),
        st.tuples(children, children, children).map(lambda p: f"if_then({p[0]}, {p[1]}, {p[2]})"),
        st.tuples(st.sampled_from(_PATTERNS), children, st.sampled_from(["$0", "$1", "$2"])).map(
            lambda p: f"(matches({p[0]}, {p[1]}) && {p[2]})"
        ),
        st.tuples(children, children).map(lambda p: f"matches({p[0]}, {p[1]})"),
        call,
    )


well_formed = st.recursive(_leaves, _compound, max_leaves=12)
"""Expressions built from the grammar: most compile, so evaluation is exercised."""

texts = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(FRAGMENTS), max_size=14).map(" ".join),
    st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join),
    well_formed,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, context=st.sampled_from(Context))
def test_compile_returns_a_program_or_raises_expr_error(text: str, context: Context) -> None:
    try:
        program = compile_text(text, context)
    except ExprError as error:
        assert 0 <= error.position <= len(text)
        assert error.expression == text and error.reason
        return
    assert isinstance(program, Program)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(texts, well_formed, well_formed),
    variables=st.dictionaries(st.sampled_from(HOST_VARIABLES), values_strategy, max_size=6),
)
def test_evaluation_raises_nothing_but_needs_lookup(text: str, variables: dict[str, Value]) -> None:
    try:
        program = compile_text(text, Context.HOST)
    except ExprError:
        return
    try:
        result = program.evaluate(variables)
    except NeedsLookup:
        return
    assert isinstance(result, int | float | str | list)
