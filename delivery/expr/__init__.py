"""The strategy expression language (DESIGN §4): compile once when saved, evaluate many times.

    from delivery import expr
    block = expr.compile_if_block([("retry_num > 0 && last_error == 'tls'", "'invalid-tls'")],
                                  "'default'", expr.Context.HOST)
    name = expr.result_name(block.evaluate({"retry_num": 1, "last_error": "tls"}))

Modules: tokens (tokenizer), parser (Pratt parser), ast (syntax tree), compile (checks and
folding; Program, IfBlock), evaluator (closures), values (coercion rules), functions (the
function table), contexts (variables per context), environment (local domains, DNS answers),
resolve (the async shell that performs DNS lookups), limits (every cap, with its reason).
"""

from __future__ import annotations

from delivery.expr.compile import ClauseError, IfBlock, Program, compile_if_block, compile_text
from delivery.expr.contexts import Context, variables_of
from delivery.expr.environment import EMPTY_ENVIRONMENT, Environment, NeedsLookup
from delivery.expr.resolve import evaluate_resolving
from delivery.expr.values import Value, result_name

__all__ = [
    "EMPTY_ENVIRONMENT",
    "ClauseError",
    "Context",
    "Environment",
    "IfBlock",
    "NeedsLookup",
    "Program",
    "Value",
    "compile_if_block",
    "compile_text",
    "evaluate_resolving",
    "result_name",
    "variables_of",
]
