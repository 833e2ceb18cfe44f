"""Code generation: each syntax-tree construct becomes a Python closure, built once.

compile.py walks the tree, checks it, and calls these factories bottom-up; the result is one
closure per expression that evaluates it with no tree walking, no dispatch on node types and
no ``eval``: each closure calls its operands' closures and applies one rule of values.py. This
is why the evaluator lives apart from compile.py: compile.py decides *what* is allowed and
what folds to a constant, this module decides *how* each construct runs fast.

Every closure has the signature ``code(variables, env, captures) -> Value``:
    variables  the context variables (a missing one reads as "")
    env        the Environment (local domains, DNS answers)
    captures   the groups of the last ``matches()`` of the rule being evaluated: a fresh list
               when the rule uses ``$n``, else a shared empty list that nothing writes to

Speed: the common shapes of strategy rules get closures of their own: a comparison of a
variable with a constant reads the variable directly and compares same-typed values with one
operator call, ``&&``/``||`` of two operands avoid a loop, calls are unrolled by arity. The
type tests are on ``__class__`` identity, falling back to values.py for every mixed case, so
the fast paths never change a result.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from delivery.expr import functions, values
from delivery.expr.environment import EMPTY_ENVIRONMENT, Environment
from delivery.expr.values import Value

__all__ = [
    "Code",
    "Compiled",
    "array",
    "binary",
    "call",
    "capture",
    "constant",
    "fold",
    "if_then",
    "index",
    "logical",
    "matches",
    "unary",
    "variable",
]

Code = Callable[[Mapping[str, Value], Environment, list[str]], Value]


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled sub-expression.

    :param code: the closure.
    :param constant: True when the value is known at compile time (then ``value`` holds it).
    :param variable: the variable name when the sub-expression is just that variable.
    """

    code: Code
    constant: bool = False
    value: Value = ""
    variable: str | None = None


def constant(value: Value, /) -> Compiled:
    """A value known at compile time."""

    def read_constant(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
        return value

    return Compiled(read_constant, constant=True, value=value)


def fold(compiled: Compiled, /) -> Compiled:
    """``compiled`` evaluated now, as a constant: only for pure code over constants."""
    return constant(compiled.code({}, EMPTY_ENVIRONMENT, []))


def variable(name: str, /) -> Compiled:
    """A context variable; "" when the mapping does not hold it."""

    def read_variable(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
        return variables.get(name, "")

    return Compiled(read_variable, variable=name)


def capture(group: int, /) -> Compiled:
    """``$group`` of the last ``matches()``; "" when there is no such group or no match."""

    def read_capture(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
        return caps[group] if group < len(caps) else ""

    return Compiled(read_capture)


def unary(operator_text: str, operand: Compiled, /) -> Compiled:
    """``!operand`` (1 when false, else 0) or ``-operand``."""
    inner = operand.code
    if operator_text == "!":

        def negation(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
            return 0 if inner(variables, env, caps) else 1

        return Compiled(negation)
    negate = values.negate

    def minus(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
        return negate(inner(variables, env, caps))

    return Compiled(minus)


# Comparison operators: the values.py rule, and the plain Python operator that gives the same
# answer when both operands have the same class (str/str, int/int, float/float).
_COMPARISONS: dict[str, tuple[Callable[[Value, Value], bool], Callable[[Value, Value], bool]]] = {
    "==": (values.equals, operator.eq),
    "!=": (lambda left, right: not values.equals(left, right), operator.ne),
    "<": (values.less, operator.lt),
    "<=": (values.less_equal, operator.le),
    ">": (values.greater, operator.gt),
    ">=": (values.greater_equal, operator.ge),
}
_ARITHMETIC: dict[str, Callable[[Value, Value], Value]] = {
    "+": values.add,
    "-": values.subtract,
    "*": values.multiply,
    "/": values.divide,
}


def binary(operator_text: str, left: Compiled, right: Compiled, /) -> Compiled:
    """``left operator right`` for arithmetic, comparisons and ``^``."""
    if operator_text == "^":
        return Compiled(_xor(left.code, right.code))
    if operator_text in _ARITHMETIC:
        return Compiled(_apply(_ARITHMETIC[operator_text], left.code, right.code))
    rule, fast = _COMPARISONS[operator_text]
    if left.variable is not None and right.constant and not isinstance(right.value, list):
        return Compiled(_compare_variable(left.variable, right.value, rule, fast, swapped=False))
    if right.variable is not None and left.constant and not isinstance(left.value, list):
        return Compiled(_compare_variable(right.variable, left.value, rule, fast, swapped=True))
    return Compiled(_compare(left.code, right.code, rule, fast))


def _xor(left: Code, right: Code) -> Code:
    def xor(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
        return 1 if bool(left(variables, env, caps)) is not bool(right(variables, env, caps)) else 0

    return xor


def _apply(rule: Callable[[Value, Value], Value], left: Code, right: Code) -> Code:
    def arithmetic(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
        return rule(left(variables, env, caps), right(variables, env, caps))

    return arithmetic


def _compare(
    left: Code,
    right: Code,
    rule: Callable[[Value, Value], bool],
    fast: Callable[[Value, Value], bool],
) -> Code:
    def compare(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
        a = left(variables, env, caps)
        b = right(variables, env, caps)
        if a.__class__ is b.__class__ and a.__class__ is not list:
            return 1 if fast(a, b) else 0
        return 1 if rule(a, b) else 0

    return compare


def _compare_variable(
    name: str,
    known: Value,
    rule: Callable[[Value, Value], bool],
    fast: Callable[[Value, Value], bool],
    *,
    swapped: bool,
) -> Code:
    """A variable compared with a constant (``last_error == 'tls'``, ``0 < retry_num``)."""
    known_class = known.__class__
    if swapped:

        def compare_to_variable(
            variables: Mapping[str, Value], env: Environment, caps: list[str]
        ) -> Value:
            a = variables.get(name, "")
            if a.__class__ is known_class:
                return 1 if fast(known, a) else 0
            return 1 if rule(known, a) else 0

        return compare_to_variable

    def compare_variable(
        variables: Mapping[str, Value], env: Environment, caps: list[str]
    ) -> Value:
        a = variables.get(name, "")
        if a.__class__ is known_class:
            return 1 if fast(a, known) else 0
        return 1 if rule(a, known) else 0

    return compare_variable


def logical(operator_text: str, operands: Sequence[Compiled], /) -> Compiled:
    """``&&`` / ``||`` over two or more operands: short-circuit, returning the deciding operand.

    ``&&`` returns the first false operand, else the last; ``||`` the first true, else the last.
    """
    codes = [operand.code for operand in operands]
    if len(codes) == 1:
        return operands[0]
    if len(codes) == 2:
        first, second = codes
        if operator_text == "&&":

            def and_two(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
                a = first(variables, env, caps)
                return second(variables, env, caps) if a else a

            return Compiled(and_two)

        def or_two(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
            a = first(variables, env, caps)
            return a if a else second(variables, env, caps)

        return Compiled(or_two)
    head, last = tuple(codes[:-1]), codes[-1]
    stop_when_true = operator_text == "||"

    def chain(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
        for code in head:
            a = code(variables, env, caps)
            if bool(a) is stop_when_true:
                return a
        return last(variables, env, caps)

    return Compiled(chain)


def call(function: functions.Function, arguments: Sequence[Compiled], /) -> Compiled:
    """A call of a table function, unrolled for one, two and three arguments."""
    impl = function.impl
    codes = [argument.code for argument in arguments]
    if function.needs_env:
        return Compiled(_call_with_env(impl, codes))
    if len(codes) == 1:
        (only,) = codes

        def call_one(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
            return impl(only(variables, env, caps))

        return Compiled(call_one)
    if len(codes) == 2:
        first, second = codes

        def call_two(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
            return impl(first(variables, env, caps), second(variables, env, caps))

        return Compiled(call_two)

    def call_many(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
        return impl(*[code(variables, env, caps) for code in codes])

    return Compiled(call_many)


def _call_with_env(impl: Callable[..., Value], codes: Sequence[Code]) -> Code:
    if len(codes) == 1:
        (only,) = codes

        def call_env_one(
            variables: Mapping[str, Value], env: Environment, caps: list[str]
        ) -> Value:
            return impl(env, only(variables, env, caps))

        return call_env_one

    def call_env(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
        return impl(env, *[code(variables, env, caps) for code in codes])

    return call_env


def if_then(condition: Compiled, then: Compiled, otherwise: Compiled, /) -> Compiled:
    """``if_then(condition, then, otherwise)``: only the branch taken is evaluated."""
    test, yes, no = condition.code, then.code, otherwise.code

    def choose(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
        if test(variables, env, caps):
            return yes(variables, env, caps)
        return no(variables, env, caps)

    return Compiled(choose)


def matches(
    pattern: re.Pattern[str] | Compiled, subject: Compiled, /, *, capturing: bool
) -> Compiled:
    """``matches(regex, value)``: 1 or 0; when ``capturing``, records the groups as ``$n``.

    ``pattern`` is the compiled literal pattern, or the code of a pattern computed at run time.
    """
    find = _finder(pattern, subject.code)
    if not capturing:

        def test(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
            return 0 if find(variables, env, caps) is None else 1

        return Compiled(test)

    def test_and_capture(
        variables: Mapping[str, Value], env: Environment, caps: list[str]
    ) -> Value:
        found = find(variables, env, caps)
        if found is None:
            caps.clear()
            return 0
        caps[:] = [found.group(0), *(group or "" for group in found.groups())]
        return 1

    return Compiled(test_and_capture)


Finder = Callable[[Mapping[str, Value], Environment, list[str]], "re.Match[str] | None"]


def _finder(pattern: re.Pattern[str] | Compiled, text: Code) -> Finder:
    search = functions.search
    if isinstance(pattern, re.Pattern):
        literal = pattern

        def find_literal(
            variables: Mapping[str, Value], env: Environment, caps: list[str]
        ) -> re.Match[str] | None:
            return search(literal, text(variables, env, caps))

        return find_literal
    regex = pattern.code

    def find(
        variables: Mapping[str, Value], env: Environment, caps: list[str]
    ) -> re.Match[str] | None:
        return search(regex(variables, env, caps), text(variables, env, caps))

    return find


def array(items: Sequence[Compiled], /) -> Compiled:
    """``[item, ...]``: a new list on every evaluation."""
    codes = tuple(item.code for item in items)

    def build(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
        return [code(variables, env, caps) for code in codes]

    return Compiled(build)


def index(target: Compiled, position: Compiled, /) -> Compiled:
    """``target[position]`` (values.index)."""
    of, at, pick = target.code, position.code, values.index

    def item(variables: Mapping[str, Value], env: Environment, caps: list[str]) -> Value:
        return pick(of(variables, env, caps), at(variables, env, caps))

    return Compiled(item)
