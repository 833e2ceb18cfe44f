"""Values of the strategy expression language and the one home of its coercion rules.

A value is an ``int``, a ``float``, a ``str`` or a ``list`` of values. There is no boolean:
``true``/``false`` and every comparison give the integers 1 and 0 (DESIGN §4), as in Stalwart,
so that ``retry_num > 0`` and ``priority + (size > 1000)`` mean the same in both. A Python
``bool`` given as a variable behaves as 1/0.

The rules (DESIGN §4, and what this module decides where DESIGN is silent):
    truthiness   non-zero numbers, non-empty strings and arrays are true. This is exactly
                 Python's truth test for these four types, which is why the evaluator writes
                 ``if value:`` and why ``truthy`` is ``bool``: one rule, stated here.
    numbers      ``to_number``: numbers as they are; a string that reads as a number (``"42"``,
                 ``"-1.5"``, ``"1e3"``; at most MAX_NUMERIC_TEXT_LENGTH characters, finite)
                 is that number; any other string, and any array, is 0.
    text         ``to_text``: strings as they are; integers in decimal; floats as Python
                 prints them (``1.5``, ``2.0``, ``1e+20``); arrays as their items' text
                 joined with ``,``.
    ==  !=       number with number numerically (``1 == 1.0``); string with string exactly
                 (case-sensitive); string with number numerically when the string reads as a
                 number, else not equal; array with array item by item; array with anything
                 else: not equal.
    < <= > >=    numbers numerically, strings by code point, a string and a number
                 numerically when the string reads as a number. Anything else (an array, a
                 non-numeric string against a number) is unordered: all four give 0.
    +            an array on either side: the arrays concatenated (a non-array side is one
                 item); else a string on either side: the texts concatenated; else the sum.
    - * /        on the numbers of both sides; ``/`` always gives a float and 0.0 when
                 dividing by zero.
    integers     64-bit: results of ``+ - *`` and unary ``-`` saturate at the bounds.
    x[i]         ``i`` as a whole number; an array's item, or "" when out of range or
                 negative; a non-array at index 0 is itself (a single value is a one-item
                 array), "" at any other index.

Results are never mutated by the evaluator, and callers must not mutate them either: arrays in
results may be shared with the compiled program's constants.
"""

from __future__ import annotations

import math
import re
from typing import TypeAlias

from delivery.expr.limits import MAX_NUMERIC_TEXT_LENGTH
from delivery.expr.tokens import INT_MAX, INT_MIN

__all__ = [
    "Value",
    "add",
    "divide",
    "equals",
    "greater",
    "greater_equal",
    "index",
    "less",
    "less_equal",
    "multiply",
    "negate",
    "parse_number",
    "result_name",
    "subtract",
    "to_number",
    "to_text",
    "truthy",
]

Value: TypeAlias = int | float | str | list["Value"]

truthy = bool
"""Truthiness (DESIGN §4): Python's truth test is exactly the rule for the four value types."""

_NUMERIC_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def parse_number(text: str, /) -> int | float | None:
    """The number ``text`` reads as, or None when it is not one.

    >>> parse_number("42"), parse_number("-1.5"), parse_number("1e3"), parse_number("4 2")
    (42, -1.5, 1000.0, None)
    """
    if len(text) > MAX_NUMERIC_TEXT_LENGTH or not _NUMERIC_TEXT.fullmatch(text):
        return None
    if _INTEGER_TEXT.fullmatch(text):
        return int(text)
    number = float(text)
    return number if math.isfinite(number) else None


def to_number(value: Value, /) -> int | float:
    """``value`` as a number for arithmetic: see the module docstring.

    >>> to_number("7"), to_number("seven"), to_number([1]), to_number(2.5)
    (7, 0, 0, 2.5)
    """
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        number = parse_number(value)
        return 0 if number is None else number
    return 0


def to_text(value: Value, /) -> str:
    """``value`` as text for string functions and concatenation.

    >>> to_text(42), to_text(1.5), to_text(["a", 1]), to_text(True)
    ('42', '1.5', 'a,1', '1')
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    return ",".join(map(to_text, value))


def _saturate(number: int, /) -> int:
    return INT_MAX if number > INT_MAX else INT_MIN if number < INT_MIN else number


def _arithmetic_result(number: int | float, /) -> int | float:
    if isinstance(number, int) and not INT_MIN <= number <= INT_MAX:
        return _saturate(number)
    return number


def add(left: Value, right: Value, /) -> Value:
    """``left + right``: array concatenation, text concatenation or sum (module docstring).

    >>> add(1, 2), add("a", 1), add([1], 2), add("2", 2)
    (3, 'a1', [1, 2], '22')
    """
    if isinstance(left, list) or isinstance(right, list):
        head = left if isinstance(left, list) else [left]
        tail = right if isinstance(right, list) else [right]
        return [*head, *tail]
    if isinstance(left, str) or isinstance(right, str):
        return to_text(left) + to_text(right)
    return _arithmetic_result(left + right)


def subtract(left: Value, right: Value, /) -> int | float:
    """``left - right`` on numbers."""
    return _arithmetic_result(to_number(left) - to_number(right))


def multiply(left: Value, right: Value, /) -> int | float:
    """``left * right`` on numbers."""
    return _arithmetic_result(to_number(left) * to_number(right))


def divide(left: Value, right: Value, /) -> float:
    """``left / right`` as a float; 0.0 when ``right`` is zero (DESIGN §4).

    >>> divide(1, 2), divide(1, 0), divide("9", "3")
    (0.5, 0.0, 3.0)
    """
    divisor = to_number(right)
    if divisor == 0:
        return 0.0
    return to_number(left) / divisor


def negate(value: Value, /) -> int | float:
    """Unary ``-`` on the number of ``value``."""
    return _arithmetic_result(-to_number(value))


def equals(left: Value, right: Value, /) -> bool:
    """``left == right`` under the language's rules (module docstring).

    >>> equals(1, 1.0), equals("1", 1), equals("one", 1), equals("A", "a"), equals([1], ["1"])
    (True, True, False, False, True)
    """
    if isinstance(left, str):
        if isinstance(right, str):
            return left == right
        if isinstance(right, list):
            return False
        number = parse_number(left)
        return number is not None and number == right
    if isinstance(left, list):
        if not isinstance(right, list) or len(left) != len(right):
            return False
        return all(map(equals, left, right))
    if isinstance(right, str):
        number = parse_number(right)
        return number is not None and left == number
    if isinstance(right, list):
        return False
    return left == right


def _ordered(left: Value, right: Value, /) -> tuple[str, str] | tuple[float, float] | None:
    """Two comparable operands (both numbers or both strings), or None when unordered."""
    if isinstance(left, str):
        if isinstance(right, str):
            return left, right
        if isinstance(right, list):
            return None
        number = parse_number(left)
        return None if number is None else (number, right)
    if isinstance(left, list) or isinstance(right, list):
        return None
    if isinstance(right, str):
        number = parse_number(right)
        return None if number is None else (left, number)
    return left, right


def less(left: Value, right: Value, /) -> bool:
    """``left < right`` (module docstring); False when the operands are unordered.

    >>> less(1, 2), less("a", "b"), less("10", 9), less("x", 1), less([1], [2])
    (True, True, False, False, False)
    """
    pair = _ordered(left, right)
    return pair is not None and pair[0] < pair[1]  # type: ignore[operator]


def less_equal(left: Value, right: Value, /) -> bool:
    """``left <= right``; False when unordered."""
    pair = _ordered(left, right)
    return pair is not None and pair[0] <= pair[1]  # type: ignore[operator]


def greater(left: Value, right: Value, /) -> bool:
    """``left > right``; False when unordered."""
    pair = _ordered(left, right)
    return pair is not None and pair[0] > pair[1]  # type: ignore[operator]


def greater_equal(left: Value, right: Value, /) -> bool:
    """``left >= right``; False when unordered."""
    pair = _ordered(left, right)
    return pair is not None and pair[0] >= pair[1]  # type: ignore[operator]


def index(target: Value, position: Value, /) -> Value:
    """``target[position]`` (module docstring).

    >>> index(["a", "b"], 1), index(["a"], 5), index(["a"], -1), index("solo", 0)
    ('b', '', '', 'solo')
    """
    number = to_number(position)
    if isinstance(number, float):
        if not math.isfinite(number):
            return ""
        number = int(number)
    if isinstance(target, list):
        return target[number] if 0 <= number < len(target) else ""
    return target if number == 0 else ""


def result_name(value: Value) -> str | None:
    """The strategy name an expression returned, or None meaning "use ``default``".

    DESIGN §4: a result that is not a string selects the default. An empty string selects it
    too: no object can be named "".

    >>> result_name("invalid-tls"), result_name(1), result_name("")
    ('invalid-tls', None, None)
    """
    if isinstance(value, str) and value:
        return value
    return None
