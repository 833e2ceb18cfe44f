"""Pratt parser of the strategy expression language (DESIGN §4).

Precedence, high to low, exactly as DESIGN §4 lists it: unary ``!`` ``-``; ``*`` ``/``;
``+`` ``-``; ``<`` ``<=`` ``>`` ``>=``; ``==`` ``!=``; ``^``; ``&&`` (``&``); ``||`` (``|``).
``=`` is ``==``. Binary operators are left-associative; ``x[i]`` binds tighter than anything.

Outcomes:
    parse() returns the syntax tree (ast.py) of one expression. It checks syntax only: whether
    a name is a known variable or function is compile.py's job, against a context.
    Errors raise ExprError at the token at fault: an unexpected token, an empty expression, a
    missing ``)`` or ``]``, and the caps of limits.py (length, nesting depth, array size).
"""

from __future__ import annotations

from collections.abc import Callable

from delivery.errors import ExprError
from delivery.expr import ast
from delivery.expr.limits import MAX_ARRAY_ITEMS, MAX_EXPRESSION_LENGTH, MAX_NESTING_DEPTH
from delivery.expr.tokens import Token, TokenKind, tokenize

__all__ = ["BINDING_POWER", "SYNONYMS", "parse"]

# DESIGN §4's precedence list, high to low; larger binds tighter.
BINDING_POWER: dict[str, int] = {
    "*": 70,
    "/": 70,
    "+": 60,
    "-": 60,
    "<": 50,
    "<=": 50,
    ">": 50,
    ">=": 50,
    "==": 40,
    "!=": 40,
    "^": 30,
    "&&": 20,
    "||": 10,
}
UNARY_BINDING_POWER = 80
"""``!`` and ``-`` bind tighter than every binary operator."""
INDEX_BINDING_POWER = 90
"""``x[i]`` binds tighter than unary operators: ``-x[0]`` is ``-(x[0])``."""

SYNONYMS: dict[str, str] = {"=": "==", "&": "&&", "|": "||"}
"""Alternative spellings, stored in the tree under their canonical operator."""

_LOGICAL = frozenset({"&&", "||"})
_PREFIX = frozenset({"!", "-"})


def parse(text: str, /) -> ast.Node:
    """The syntax tree of ``text``.

    :raises ExprError: a syntax error or a cap of limits.py, at its 0-based position.

    >>> parse("1 + 2 * 3")  # doctest: +NORMALIZE_WHITESPACE
    Binary(operator='+', left=Literal(value=1, start=0, end=1),
           right=Binary(operator='*', left=Literal(value=2, start=4, end=5),
                        right=Literal(value=3, start=8, end=9), start=4, end=9),
           start=0, end=9)
    """
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExprError(
            text,
            MAX_EXPRESSION_LENGTH,
            f"expression longer than {MAX_EXPRESSION_LENGTH} characters",
        )
    parser = _Parser(text, tokenize(text))
    if parser.peek().kind is TokenKind.END:
        raise ExprError(text, 0, "empty expression")
    tree = parser.expression(0)
    parser.expect_end()
    levels, deepest = ast.depth(tree)
    if levels > MAX_NESTING_DEPTH:
        raise ExprError(text, deepest.start, _too_deep())
    return tree


def _too_deep() -> str:
    return f"expression nested deeper than {MAX_NESTING_DEPTH} levels"


class _Parser:
    """Pratt parser state: the tokens, the cursor and the current nesting level."""

    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.position = 0
        self.nesting = 0

    def peek(self) -> Token:
        return self.tokens[self.position]

    def advance(self) -> Token:
        token = self.tokens[self.position]
        if token.kind is not TokenKind.END:
            self.position += 1
        return token

    def error(self, token: Token, reason: str) -> ExprError:
        return ExprError(self.text, token.start, reason)

    def unexpected(self, token: Token, wanted: str) -> ExprError:
        found = "the end of the expression" if token.kind is TokenKind.END else repr(token.text)
        return self.error(token, f"expected {wanted}, found {found}")

    def expect(self, text: str, wanted: str) -> Token:
        token = self.peek()
        if token.kind is TokenKind.PUNCTUATION and token.text == text:
            return self.advance()
        raise self.unexpected(token, wanted)

    def expect_end(self) -> None:
        token = self.peek()
        if token.kind is not TokenKind.END:
            wanted = "an operator or the end of the expression"
            if token.text == ")":
                raise self.error(token, "unmatched ')'")
            raise self.unexpected(token, wanted)

    def expression(self, min_power: int) -> ast.Node:
        """Parse operands and every operator binding tighter than ``min_power``."""
        self.nesting += 1
        if self.nesting > MAX_NESTING_DEPTH:
            raise self.error(self.peek(), _too_deep())
        token = self.advance()
        nud = _NUD.get(token.kind)
        if nud is None or (token.kind is TokenKind.OPERATOR and token.text not in _PREFIX):
            raise self.unexpected(token, "a value, a name, '(', '[', '!' or '-'")
        left = nud(self, token)
        while True:
            token = self.peek()
            power = _led_power(token)
            if power <= min_power:
                break
            self.advance()
            left = _LED[_led_key(token)](self, left, token)
        self.nesting -= 1
        return left

    def arguments(self, closing: str, what: str) -> tuple[ast.Node, ...]:
        """Comma-separated expressions up to ``closing``, which is consumed."""
        items: list[ast.Node] = []
        token = self.peek()
        if token.kind is TokenKind.PUNCTUATION and token.text == closing:
            self.advance()
            return ()
        while True:
            items.append(self.expression(0))
            token = self.advance()
            if token.kind is TokenKind.PUNCTUATION and token.text == closing:
                return tuple(items)
            if not (token.kind is TokenKind.PUNCTUATION and token.text == ","):
                raise self.unexpected(token, f"',' or '{closing}' in {what}")


def _led_key(token: Token) -> str:
    if token.kind is TokenKind.OPERATOR:
        return SYNONYMS.get(token.text, token.text)
    return token.text


def _led_power(token: Token) -> int:
    """How tightly ``token`` binds as an infix or postfix operator; 0 when it is none."""
    if token.kind is TokenKind.OPERATOR:
        return BINDING_POWER.get(SYNONYMS.get(token.text, token.text), 0)
    if token.kind is TokenKind.PUNCTUATION and token.text == "[":
        return INDEX_BINDING_POWER
    return 0


# nud: a token that starts an operand.


def _nud_literal(parser: _Parser, token: Token) -> ast.Node:
    return ast.Literal(token.value, token.start, token.end)


def _nud_name(parser: _Parser, token: Token) -> ast.Node:
    following = parser.peek()
    if following.kind is TokenKind.PUNCTUATION and following.text == "(":
        parser.advance()
        arguments = parser.arguments(")", f"the arguments of {token.text}()")
        return ast.Call(token.text, arguments, token.start, parser.tokens[parser.position - 1].end)
    if token.text == "true":
        return ast.Literal(1, token.start, token.end)
    if token.text == "false":
        return ast.Literal(0, token.start, token.end)
    return ast.Variable(token.text, token.start, token.end)


def _nud_capture(parser: _Parser, token: Token) -> ast.Node:
    assert isinstance(token.value, int)
    return ast.Capture(token.value, token.start, token.end)


def _nud_unary(parser: _Parser, token: Token) -> ast.Node:
    operand = parser.expression(UNARY_BINDING_POWER)
    return ast.Unary(token.text, operand, token.start, operand.end)


def _nud_punctuation(parser: _Parser, token: Token) -> ast.Node:
    if token.text == "(":
        inner = parser.expression(0)
        parser.expect(")", "')'")
        return inner
    if token.text == "[":
        items = parser.arguments("]", "the array")
        if len(items) > MAX_ARRAY_ITEMS:
            raise ExprError(
                parser.text,
                items[MAX_ARRAY_ITEMS].start,
                f"array literal with more than {MAX_ARRAY_ITEMS} items",
            )
        return ast.ArrayLiteral(items, token.start, parser.tokens[parser.position - 1].end)
    raise parser.unexpected(token, "a value, a name, '(', '[', '!' or '-'")


_NUD: dict[TokenKind, Callable[[_Parser, Token], ast.Node]] = {
    TokenKind.INTEGER: _nud_literal,
    TokenKind.FLOAT: _nud_literal,
    TokenKind.STRING: _nud_literal,
    TokenKind.NAME: _nud_name,
    TokenKind.CAPTURE: _nud_capture,
    TokenKind.OPERATOR: _nud_unary,
    TokenKind.PUNCTUATION: _nud_punctuation,
}


# led: a token that continues an operand already parsed (``left``).


def _led_binary(parser: _Parser, left: ast.Node, token: Token) -> ast.Node:
    operator = _led_key(token)
    right = parser.expression(BINDING_POWER[operator])
    return ast.Binary(operator, left, right, left.start, right.end)


def _led_logical(parser: _Parser, left: ast.Node, token: Token) -> ast.Node:
    operator = _led_key(token)
    right = parser.expression(BINDING_POWER[operator])
    # Left-associative chains of the same operator become one node (see ast.Logical).
    if isinstance(left, ast.Logical) and left.operator == operator:
        return ast.Logical(operator, (*left.operands, right), left.start, right.end)
    return ast.Logical(operator, (left, right), left.start, right.end)


def _led_index(parser: _Parser, left: ast.Node, token: Token) -> ast.Node:
    index = parser.expression(0)
    closing = parser.expect("]", "']'")
    return ast.Index(left, index, left.start, closing.end)


_LED: dict[str, Callable[[_Parser, ast.Node, Token], ast.Node]] = {
    **{operator: _led_binary for operator in BINDING_POWER if operator not in _LOGICAL},
    **{operator: _led_logical for operator in _LOGICAL},
    "[": _led_index,
}
