"""Compile the four strategy expressions of MtaOutboundStrategy (DESIGN §3, §4).

Expressions are compiled once, when saved: /set refuses one that does not compile, and the
engine snapshot holds the compiled IfBlocks. ``connection`` and ``tls`` see the host
variables, ``route`` and ``schedule`` the recipient variables.

Outcomes:
    compile_outbound(model) -> CompiledOutbound, or SetError ``invalidProperties`` listing every
    expression that failed, each with the clause (``match[0].if``), the text, the position and
    the reason, e.g.
    ``tls: match[0].if 'retry_num >' does not compile at position 11: expected a value ...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from delivery import expr
from delivery.registry import validation
from delivery.registry.errors import SetError
from delivery.registry.schema import Expression, OutboundStrategyModel

__all__ = ["CONTEXTS", "CompiledOutbound", "compile_outbound"]

CONTEXTS: Final[dict[str, expr.Context]] = {
    "connection": expr.Context.HOST,
    "route": expr.Context.RCPT,
    "schedule": expr.Context.RCPT,
    "tls": expr.Context.HOST,
}
"""Property -> the variables its expression may use (DESIGN §4)."""


@dataclass(frozen=True, slots=True)
class CompiledOutbound:
    """The four strategy expressions, compiled; each returns an object name."""

    connection: expr.IfBlock
    route: expr.IfBlock
    schedule: expr.IfBlock
    tls: expr.IfBlock


def compile_outbound(model: OutboundStrategyModel, /) -> CompiledOutbound | SetError:
    """Compile all four expressions; the first failure does not hide the others."""
    compiled: dict[str, expr.IfBlock] = {}
    problems: list[tuple[str, str]] = []
    for prop, context in CONTEXTS.items():
        expression: Expression = getattr(model, prop)
        try:
            compiled[prop] = expr.compile_if_block(expression.rules, expression.else_, context)
        except expr.ClauseError as exc:
            problems.append(
                (
                    prop,
                    f"{exc.clause} {exc.expression!r} does not compile at position "
                    f"{exc.position}: {exc.reason}",
                )
            )
    if problems:
        return validation.invalid(problems)
    return CompiledOutbound(**compiled)
