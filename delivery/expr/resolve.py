"""Evaluate an expression that calls ``dns_query``: the thin async shell of the pure core.

The core (compile.py) is synchronous and never waits: when ``dns_query(name, type)`` needs an
answer the Environment lacks, it raises NeedsLookup. ``evaluate_resolving`` awaits the caller's
lookup for that name and type, adds the answer to a copy of the Environment and evaluates
again, until the expression has every answer it needs.

Outcomes:
    The expression's value. Whatever ``lookup`` raises (a DnsTempFail, a timeout,
    CancelledError) propagates unchanged: "could not find out" is the caller's decision,
    never silently "no records".

Limits: the number of lookups per evaluation is bounded by MAX_DNS_QUERIES, because compile
rejects expressions with more ``dns_query`` calls than that and nothing in the language loops:
each call is evaluated at most once per evaluation, so each pass either finishes or adds one
answer the next pass will not ask for again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping

from delivery.expr.compile import IfBlock, Program
from delivery.expr.environment import Environment, NeedsLookup
from delivery.expr.limits import MAX_DNS_QUERIES
from delivery.expr.values import Value

__all__ = ["Lookup", "evaluate_resolving"]

Lookup = Callable[[str, str], Awaitable[Value]]
"""``lookup(name, rtype)``: the answer list for a lowercase name and an uppercase type
(``[]`` for NXDOMAIN or no records), or an exception when the answer cannot be known."""


async def evaluate_resolving(
    block: IfBlock | Program,
    variables: Mapping[str, Value],
    env: Environment,
    lookup: Lookup,
) -> Value:
    """Evaluate ``block``, performing the DNS lookups its ``dns_query`` calls need.

    :param env: the starting Environment; answers already in it are not looked up again.
    :param lookup: awaited once per missing ``(name, TYPE)``.
    :returns: the value of the expression, as ``block.evaluate`` with every answer present.
    """
    for _ in range(MAX_DNS_QUERIES):
        try:
            return block.evaluate(variables, env)
        except NeedsLookup as need:
            answer = await lookup(need.name, need.rtype)
            answers = {**env.dns_answers, (need.name, need.rtype): answer}
            env = dataclasses.replace(env, dns_answers=answers)
    return block.evaluate(variables, env)
