"""Syntax tree of the strategy expression language: frozen nodes that keep their source span.

The parser builds these; compile.py checks them against a context and turns them into closures.
Every node has ``start`` and ``end``: 0-based character offsets into the expression text (end
exclusive), so that a compile error can point at the node at fault.

``&&`` and ``||`` chains are one ``Logical`` node with all their operands (``a || b || c``), so
that long lists of alternatives neither nest deeply nor evaluate through nested calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "ArrayLiteral",
    "Binary",
    "Call",
    "Capture",
    "Index",
    "Literal",
    "Logical",
    "Node",
    "Unary",
    "Variable",
    "children",
    "depth",
    "walk",
]


@dataclass(frozen=True, slots=True)
class Literal:
    """A number, string, duration or ``true``/``false`` written in the expression."""

    value: int | float | str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Variable:
    """A name that is not a call: a context variable (checked at compile time)."""

    name: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Capture:
    """``$n``: group ``n`` of the last successful ``matches()`` (0 is the whole match)."""

    group: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Unary:
    """``!operand`` or ``-operand``."""

    operator: str
    operand: Node
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Binary:
    """``left operator right`` for the arithmetic, comparison and ``^`` operators.

    ``operator`` is canonical: ``=`` is stored as ``==``.
    """

    operator: str
    left: Node
    right: Node
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Logical:
    """A chain of ``&&`` (or of ``||``): at least two operands, evaluated left to right."""

    operator: str
    operands: tuple[Node, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Call:
    """``name(arguments)``; ``start`` is the position of the name."""

    name: str
    arguments: tuple[Node, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ArrayLiteral:
    """``[item, item, ...]``."""

    items: tuple[Node, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Index:
    """``target[index]``."""

    target: Node
    index: Node
    start: int
    end: int


Node = Literal | Variable | Capture | Unary | Binary | Logical | Call | ArrayLiteral | Index


def children(node: Node, /) -> tuple[Node, ...]:
    """The direct sub-nodes of ``node``, left to right."""
    match node:
        case Literal() | Variable() | Capture():
            return ()
        case Unary(operand=operand):
            return (operand,)
        case Binary(left=left, right=right):
            return (left, right)
        case Logical(operands=items) | Call(arguments=items) | ArrayLiteral(items=items):
            return items
        case Index(target=target, index=index):
            return (target, index)


def walk(node: Node, /) -> Iterator[Node]:
    """Every node of the tree under ``node`` (itself included), without recursion."""
    pending = [node]
    while pending:
        current = pending.pop()
        yield current
        pending.extend(reversed(children(current)))


def depth(node: Node, /) -> tuple[int, Node]:
    """The number of levels of the tree, and the first node found at the deepest level.

    Iterative, so that it can measure a tree deeper than Python's recursion limit.
    """
    deepest, deepest_node = 0, node
    pending = [(node, 1)]
    while pending:
        current, level = pending.pop()
        if level > deepest:
            deepest, deepest_node = level, current
        pending.extend((child, level + 1) for child in reversed(children(current)))
    return deepest, deepest_node
