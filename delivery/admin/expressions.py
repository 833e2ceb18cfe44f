"""The strategy page's core: the four expressions, checked as typed, tried on sample values.

Pure functions over the expression compiler (delivery.expr), used by the Strategy page, its
script (``POST .../check`` and ``.../try`` answer JSON made here) and its no-script form.

    STRATEGY_PROPERTIES          connection, route, schedule, tls: context, object type, text
    rules_from_form(form)        the Expression a submitted form describes
    check(expression, context)   every clause that does not compile, at its position
    parse_samples(text, context) ``name=value`` lines as variables, the rules of `delivery eval`
    try_expression(...)          the value, the strategy name it selects and the rule that matched

Outcomes: values only. ``check`` returns a list of `Problem` (empty: it compiles);
``try_expression`` returns a `Trial` whose ``problems`` are set when it could not run.

Security:
    The text comes from a signed-in administrator and is only compiled and evaluated by the
    expression language (no ``eval``, no host objects). ``dns_query()`` is answered only
    through the daemon's configured resolver when one is given, else not at all.

Limits: the caps of delivery.expr.limits (length, nesting, rules, dns_query count); at most
MAX_SAMPLE_LINES sample variables.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from delivery import expr
from delivery.errors import DeliveryError, ExprError
from delivery.expr import values as expr_values
from delivery.registry import defaults

__all__ = [
    "MAX_SAMPLE_LINES",
    "STRATEGY_PROPERTIES",
    "Problem",
    "StrategyProperty",
    "Trial",
    "check",
    "parse_samples",
    "rules_from_form",
    "try_expression",
]

MAX_SAMPLE_LINES: Final = 64
"""Sample variables in one try: a context has fewer than 25 variables."""

Lookup = Callable[[str, str], Awaitable[expr.Value]]
"""``dns_query()`` answers: the daemon's resolver (see delivery.expr.resolve.Lookup)."""


@dataclass(frozen=True, slots=True)
class StrategyProperty:
    """One of the four expressions of MtaOutboundStrategy."""

    prop: str
    context: expr.Context
    object_type: str
    """The objects whose names it returns."""
    default: Mapping[str, Any]
    text: str
    sample: str
    """Sample variables offered in the try-it box."""


STRATEGY_PROPERTIES: Final[tuple[StrategyProperty, ...]] = (
    StrategyProperty(
        "connection",
        expr.Context.HOST,
        "MtaConnectionStrategy",
        defaults.OUTBOUND_CONNECTION,
        "Returns the connection strategy to use when delivering messages to remote SMTP servers.",
        "rcpt_domain=example.com\nmx=mx1.example.com\nremote_ip=192.0.2.25",
    ),
    StrategyProperty(
        "route",
        expr.Context.RCPT,
        "MtaRoute",
        defaults.OUTBOUND_ROUTE,
        "Returns the route name to use when delivering queued messages.",
        "rcpt=bob@example.com\nrcpt_domain=example.com\nsource=authenticated",
    ),
    StrategyProperty(
        "schedule",
        expr.Context.RCPT,
        "MtaDeliverySchedule",
        defaults.OUTBOUND_SCHEDULE,
        "Returns the scheduling strategy to use when queueing messages.",
        "rcpt_domain=example.com\nsource=dsn",
    ),
    StrategyProperty(
        "tls",
        expr.Context.HOST,
        "MtaTlsStrategy",
        defaults.OUTBOUND_TLS,
        "Returns the TLS strategy to use when delivering messages to remote SMTP servers.",
        "retry_num=1\nlast_error=tls\nmx=mx1.example.com",
    ),
)

BY_PROP: Final = {p.prop: p for p in STRATEGY_PROPERTIES}


@dataclass(frozen=True, slots=True)
class Problem:
    """A clause that does not compile: where, and why.

    :ivar clause: ``match[<i>].if``, ``match[<i>].then``, ``else`` or "" (the whole block).
    :ivar position: 0-based offset in ``text``.
    """

    clause: str
    text: str
    position: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        """The JSON the page script reads."""
        return {
            "clause": self.clause,
            "text": self.text,
            "position": self.position,
            "reason": self.reason,
        }


def rules_from_form(form: Mapping[str, str], /) -> dict[str, Any]:
    """The Expression (wire form) of ``if.<n>``/``then.<n>``/``else`` fields; rows whose if
    and then are both blank are left out, the others keep their order.

    >>> rules_from_form({"if.1": "b", "then.1": "'y'", "if.0": "a", "then.0": "'x'",
    ...                  "if.2": "", "then.2": " ", "else": "'z'"})
    {'match': [{'if': 'a', 'then': "'x'"}, {'if': 'b', 'then': "'y'"}], 'else': "'z'"}
    """
    indexes = sorted(
        {
            int(key.split(".", 1)[1])
            for key in form
            if key.startswith(("if.", "then.")) and key.split(".", 1)[1].isdigit()
        }
    )
    match = []
    for index in indexes:
        condition, then = form.get(f"if.{index}", ""), form.get(f"then.{index}", "")
        if condition.strip() or then.strip():
            match.append({"if": condition, "then": then})
    return {"match": match, "else": form.get("else", "")}


def _rules(expression: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(str(r.get("if", "")), str(r.get("then", ""))) for r in expression.get("match") or []]


def check(expression: Mapping[str, Any], context: expr.Context, /) -> list[Problem]:
    """Every rule's first fault and the else's, at their positions; [] when it compiles.

    Each rule is compiled on its own (so one bad rule does not hide the next), then the whole
    block, for the caps that count across rules.

    >>> [p.clause for p in check({"match": [{"if": "retry_num >", "then": "'a'"}],
    ...                           "else": "mx"}, expr.Context.RCPT)]
    ['match[0].if', 'else']
    """
    rules = _rules(expression)
    otherwise = str(expression.get("else", ""))
    problems: list[Problem] = []
    for index, rule in enumerate(rules):
        try:
            expr.compile_if_block([rule], "''", context)
        except expr.ClauseError as exc:
            clause = exc.clause.replace("match[0]", f"match[{index}]")
            problems.append(Problem(clause, exc.expression, exc.position, exc.reason))
    try:
        expr.compile_text(otherwise, context)
    except ExprError as exc:
        problems.append(Problem("else", exc.expression, exc.position, exc.reason))
    if not problems:
        try:
            expr.compile_if_block(rules, otherwise, context)
        except expr.ClauseError as exc:
            problems.append(Problem(exc.clause, exc.expression, exc.position, exc.reason))
    return problems


def _sample_value(raw: str) -> expr.Value:
    """A sample's value, as ``delivery eval --var``: a number, a JSON array, else the text."""
    number = expr_values.parse_number(raw)
    if number is not None:
        return number
    if raw.startswith("["):
        try:
            decoded = json.loads(raw)
            if not isinstance(decoded, list):
                raise ValueError("not an array")
            return _array(decoded)
        except RecursionError:  # the parser's or _array's depth: refused, never a 500
            raise ValueError("arrays nested too deeply") from None
    return raw


def _array(decoded: object) -> expr.Value:
    if isinstance(decoded, bool):
        return 1 if decoded else 0
    if isinstance(decoded, int | float | str):
        return decoded
    if isinstance(decoded, list):
        return [_array(item) for item in decoded]
    raise ValueError(f"{decoded!r} is not a string, number or array")


def parse_samples(text: str, context: expr.Context, /) -> tuple[dict[str, expr.Value], list[str]]:
    """Variables from ``name=value`` lines (blank lines and ``#`` comments skipped), and a
    message per line that is not one.

    >>> parse_samples("retry_num=1\\nlast_error=tls\\nbogus=1", expr.Context.HOST)[1]
    ["line 3: unknown variable 'bogus' in the host context"]
    """
    variables: dict[str, expr.Value] = {}
    problems: list[str] = []
    allowed = expr.variables_of(context)
    lines = text.splitlines()
    if len(lines) > MAX_SAMPLE_LINES:
        return {}, [f"at most {MAX_SAMPLE_LINES} sample lines"]
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, raw = stripped.partition("=")
        name = name.strip()
        if not sep or not name:
            problems.append(f"line {number}: write name=value")
            continue
        if name not in allowed:
            problems.append(
                f"line {number}: unknown variable {name!r} in the {context.value} context"
            )
            continue
        try:
            variables[name] = _sample_value(raw.strip())
        except ValueError as exc:
            problems.append(f"line {number}: {raw.strip()!r} is not a JSON array ({exc})")
    return variables, problems


@dataclass(frozen=True, slots=True)
class Trial:
    """What an expression gives for sample variables.

    :ivar value: the result as JSON (None when it could not run).
    :ivar selects: the strategy name it selects (None: the result selects ``default``).
    :ivar matched: the index of the rule whose ``if`` was true, or None for the else.
    """

    value: Any = None
    selects: str | None = None
    matched: int | None = None
    problems: tuple[Problem, ...] = ()
    messages: tuple[str, ...] = field(default=())

    @property
    def ran(self) -> bool:
        """It compiled and evaluated."""
        return not self.problems and not self.messages

    def to_json(self) -> dict[str, Any]:
        """The JSON the page script reads."""
        return {
            "ok": self.ran,
            "value": self.value,
            "selects": self.selects,
            "matched": self.matched,
            "problems": [p.to_json() for p in self.problems],
            "messages": list(self.messages),
        }


async def _evaluate(
    code: expr.IfBlock | expr.Program,
    variables: Mapping[str, expr.Value],
    env: expr.Environment,
    lookup: Lookup | None,
) -> expr.Value:
    if lookup is None:
        return code.evaluate(variables, env)
    return await expr.evaluate_resolving(code, variables, env, lookup)


async def try_expression(
    expression: Mapping[str, Any],
    context: expr.Context,
    samples: str,
    /,
    *,
    env: expr.Environment = expr.EMPTY_ENVIRONMENT,
    lookup: Lookup | None = None,
) -> Trial:
    """Evaluate ``expression`` for the variables of ``samples`` (`parse_samples`).

    :param env: ``[local] domains`` of the daemon, for ``is_local_domain()``.
    :param lookup: the daemon's resolver for ``dns_query()``; None: such a call is reported.
    """
    problems = check(expression, context)
    variables, messages = parse_samples(samples, context)
    if problems or messages:
        return Trial(problems=tuple(problems), messages=tuple(messages))
    rules = _rules(expression)
    block = expr.compile_if_block(rules, str(expression.get("else", "")), context)
    try:
        value = await _evaluate(block, variables, env, lookup)
        matched = None
        for index, (condition, _) in enumerate(rules):
            if expr_values.truthy(
                await _evaluate(expr.compile_text(condition, context), variables, env, lookup)
            ):
                matched = index
                break
    except expr.NeedsLookup as need:
        return Trial(
            messages=(
                f"dns_query({need.name!r}, {need.rtype!r}) needs the daemon's resolver, "
                "which this page was not given; try it with `delivery eval`",
            )
        )
    except DeliveryError as exc:
        return Trial(messages=(f"a lookup failed: {exc}",))
    return Trial(value=value, selects=expr.result_name(value), matched=matched)
