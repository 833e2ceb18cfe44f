"""Tokenizer of the strategy expression language (DESIGN §4).

Turns expression text into a list of tokens, each carrying its 0-based character span so that
every later error can point at the exact position.

Lexical rules:
    strings     ``'...'`` or ``"..."``; ``\\n`` ``\\r`` ``\\t`` ``\\\\`` ``\\'`` ``\\"`` are
                escapes, any other backslash is kept as written so that regular expressions
                such as ``'^\\d+$'`` need no doubling.
    numbers     ``42`` (integer), ``1.5`` (float); no exponent, no sign (``-`` is an operator).
    durations   ``100ms`` ``90s`` ``5m`` ``1h`` ``2d`` ``1w``: integers in milliseconds.
    names       ``[A-Za-z_][A-Za-z0-9_]*``: variables, functions, ``true``, ``false``.
    captures    ``$0`` ``$1`` ...: groups of the last ``matches()`` (see compile.py).
    operators   ``! * / + - < <= > >= == = != ^ && & || |``, and ``( ) [ ] ,``.
    whitespace  space, tab, CR, LF.

Outcomes:
    tokenize() returns the tokens followed by one END token at ``len(text)``.
    Anything else raises ExprError at the offending character: an unterminated string, a
    malformed number (``5x``, ``1.2.3``), an integer beyond 64 bits, a stray character.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from delivery import durations
from delivery.errors import ExprError

__all__ = ["INT_MAX", "INT_MIN", "Token", "TokenKind", "tokenize"]

INT_MAX = 2**63 - 1
"""Integers are 64-bit, as in Stalwart: literals beyond are errors, arithmetic saturates."""
INT_MIN = -(2**63)


class TokenKind(enum.Enum):
    """What a token is; ``Token.text`` tells which operator or punctuation."""

    INTEGER = "integer"
    FLOAT = "float"
    STRING = "string"
    NAME = "name"
    CAPTURE = "capture"
    OPERATOR = "operator"
    PUNCTUATION = "punctuation"
    END = "end"


@dataclass(frozen=True, slots=True)
class Token:
    """One token: ``text`` as written, ``value`` the literal's value (0 / "" when none).

    ``start`` and ``end`` are 0-based character offsets into the expression, end exclusive.
    """

    kind: TokenKind
    text: str
    start: int
    end: int
    value: int | float | str = 0


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", '"': '"'}

# One alternative per token class, tried at the current position; order matters only where
# prefixes overlap (two-character operators before one-character ones).
_SCANNER = re.compile(
    r"""
    (?P<space>[ \t\r\n]+)
  | (?P<number>[0-9][A-Za-z0-9_.]*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<capture>\$[0-9]+)
  | (?P<operator>&&|\|\||==|!=|<=|>=|[-+*/<>=!^&|])
  | (?P<punctuation>[()\[\],])
  | (?P<quote>['"])
    """,
    re.VERBOSE,
)
_INTEGER = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"[0-9]+\.[0-9]+")
_DURATION = re.compile(r"[0-9]+(?:" + "|".join(durations.UNIT_MS) + ")")
"""A duration literal: digits and a unit, which is required (``42`` alone is an integer)."""
_MAX_CAPTURE_DIGITS = 2
"""``$0`` to ``$99``: Python's ``re`` supports at most 100 groups per pattern."""


def _token(kind: TokenKind, text: str, start: int, value: int | float | str = 0) -> Token:
    """The one place that sets token offsets: ``end`` is ``start`` plus the text as written."""
    return Token(kind, text, start, start + len(text), value)


def tokenize(text: str, /) -> list[Token]:
    """Split ``text`` into tokens ending with an END token.

    :raises ExprError: at the first character that cannot start or continue a token.

    >>> [t.text for t in tokenize("retry_num > 0 && last_error == 'tls'")]
    ['retry_num', '>', '0', '&&', 'last_error', '==', "'tls'", '']
    """
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _SCANNER.match(text, position)
        if match is None:
            raise ExprError(text, position, f"unexpected character {text[position]!r}")
        group, word = match.lastgroup, match.group()
        if group == "number":
            tokens.append(_number(text, word, position))
        elif group == "name":
            tokens.append(_token(TokenKind.NAME, word, position))
        elif group == "capture":
            if len(word) - 1 > _MAX_CAPTURE_DIGITS:
                raise ExprError(text, position, f"capture {word} is beyond $99")
            tokens.append(_token(TokenKind.CAPTURE, word, position, int(word[1:])))
        elif group == "operator":
            tokens.append(_token(TokenKind.OPERATOR, word, position))
        elif group == "punctuation":
            tokens.append(_token(TokenKind.PUNCTUATION, word, position))
        elif group == "quote":
            tokens.append(_string(text, position))
        position = tokens[-1].end if group != "space" else match.end()
    tokens.append(_token(TokenKind.END, "", len(text)))
    return tokens


def _number(text: str, word: str, start: int) -> Token:
    """An integer, float or duration literal; anything else in ``word`` is an error."""
    value: int | float
    if _INTEGER.fullmatch(word):
        kind, value = TokenKind.INTEGER, int(word)
    elif _FLOAT.fullmatch(word):
        kind, value = TokenKind.FLOAT, float(word)
    elif _DURATION.fullmatch(word):
        kind, value = TokenKind.INTEGER, durations.parse_duration(word)
    else:
        units = ", ".join(durations.UNIT_MS)
        raise ExprError(
            text,
            start,
            f"invalid number {word!r}: use digits (42), a decimal (1.5) or a duration with a "
            f"unit ({units}), e.g. 90s",
        )
    if value == float("inf") or (kind is TokenKind.INTEGER and value > INT_MAX):
        raise ExprError(text, start, f"number {word!r} is beyond the 64-bit integer range")
    return _token(kind, word, start, value)


def _string(text: str, start: int) -> Token:
    """The quoted string starting at ``start``, escapes applied (see the module docstring)."""
    quote = text[start]
    parts: list[str] = []
    position = start + 1
    while position < len(text):
        char = text[position]
        if char == quote:
            return _token(TokenKind.STRING, text[start : position + 1], start, "".join(parts))
        if char == "\\" and position + 1 < len(text):
            following = text[position + 1]
            parts.append(_ESCAPES.get(following, "\\" + following))
            position += 2
            continue
        parts.append(char)
        position += 1
    raise ExprError(text, start, f"unterminated string: no closing {quote}")
