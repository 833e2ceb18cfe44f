"""Every cap of the expression language, each with the reason it exists (STYLE §9).

Expressions arrive through the management API and `delivery eval`; the values they read
(recipient addresses, domains, DNS answers) come from the network. These caps bound the work
one compile or one evaluation can cause, so that neither an operator's typo nor a hostile
address can stall the worker. Each limit is enforced where the work happens and reported as an
``ExprError`` whose reason names the limit.
"""

from __future__ import annotations

__all__ = [
    "MAX_ARRAY_ITEMS",
    "MAX_DNS_NAME_LENGTH",
    "MAX_DNS_QUERIES",
    "MAX_EXPRESSION_LENGTH",
    "MAX_MATCH_RULES",
    "MAX_NESTING_DEPTH",
    "MAX_NUMERIC_TEXT_LENGTH",
    "MAX_REGEX_LENGTH",
    "RUNTIME_REGEX_CACHE_SIZE",
]

MAX_EXPRESSION_LENGTH = 4096
"""Characters in one expression text (one `if`, `then` or `else`). A strategy rule is a line or
two; this bounds tokenizer and parser work for each text saved through the API."""

MAX_NESTING_DEPTH = 64
"""Levels of nesting: parentheses, calls, brackets, unary and binary operators each add one
(a chain of ``&&`` or ``||`` counts once). Compiling and evaluating recurse once per level, so
this keeps both far below Python's recursion limit."""

MAX_ARRAY_ITEMS = 256
"""Items in one array literal such as ``['a.example', 'b.example']``. Longer lists of domains
belong in ``[local] domains`` or in several rules; this bounds the size of constants."""

MAX_REGEX_LENGTH = 1024
"""Characters in one ``matches()`` pattern. Python's ``re`` backtracks, so a pattern's size
bounds its compile cost; patterns computed at run time beyond this never match."""

MAX_MATCH_RULES = 256
"""Rules in one ``match`` list: each rule is evaluated in turn for every recipient or host."""

MAX_DNS_QUERIES = 8
"""``dns_query()`` calls in one expression (all rules and the ``else`` together). Nothing in the
language loops, so this also bounds the lookups one evaluation can wait for."""

MAX_DNS_NAME_LENGTH = 253
"""Characters in a name given to ``dns_query()`` (RFC 1035 §2.3.4 allows 253 in text form);
a longer name is answered with no records, without a lookup."""

MAX_NUMERIC_TEXT_LENGTH = 32
"""Characters in a string that is still read as a number (``'42' == 42``). Longer digit strings
are text: this keeps number parsing cheap and every such number convertible to a float."""

RUNTIME_REGEX_CACHE_SIZE = 64
"""Patterns computed at run time (``matches(variable, ...)``) that stay compiled. Literal
patterns are compiled once with their expression and do not count."""
