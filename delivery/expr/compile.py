"""Compile strategy expressions once, when they are saved; evaluate them many times.

``compile_text`` turns one expression into a Program; ``compile_if_block`` turns a DESIGN §3
Expression (``match`` rules of ``if``/``then`` and an ``else``) into an IfBlock. Compiling
parses (parser.py), then checks every name against a signature registry and a context, the
way CEL checks against its Environment, and builds closures (evaluator.py), folding every
sub-expression whose value is known at compile time.

Checks, each an ExprError at the exact 0-based position of the fault:
    unknown function             ``foo(1)``, with a suggestion when a function is close
    wrong argument count         ``len(a, b)``
    unknown variable             ``default`` (to return the text, quote it: ``'default'``)
    variable not in the context  ``mx`` in a ``route`` (rcpt) expression
    a function without ()        ``len``
    a bad literal argument       ``hash(x, 'md4')``, ``email_part(x, 'user')``,
                                 ``dns_query(x, 'ANY')``, an invalid ``matches()`` pattern
    captures without matches()   ``$1`` where no ``matches()`` can have set it, or beyond
                                 the groups of the pattern
    the caps of limits.py        length, nesting, array size, pattern size, rules, dns_query

Captures: ``matches(regex, value)`` records its groups; ``$0`` (the whole match), ``$1``,
``$2``... read the groups of the last ``matches()`` evaluated in the same rule, its ``if``
then its ``then`` ("" when that match failed). ``$n`` may appear in a part that calls
``matches()`` itself, or in the ``then`` of a rule whose ``if`` does.

Evaluation: ``Program.evaluate`` and ``IfBlock.evaluate`` are synchronous and total: they
return a value and raise nothing but NeedsLookup (environment.py), which resolve.py turns into
DNS lookups. A variable missing from the mapping reads as "" (empty string).

Security: expressions come from administrators through the API; evaluation never touches
Python objects beyond the values it is given: no ``eval``, no attribute access.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Iterator, Mapping, Sequence

from delivery.errors import ExprError
from delivery.expr import ast, evaluator, functions, parser
from delivery.expr.contexts import Context, variables_of
from delivery.expr.environment import EMPTY_ENVIRONMENT, Environment
from delivery.expr.evaluator import Code, Compiled
from delivery.expr.limits import MAX_DNS_QUERIES, MAX_MATCH_RULES
from delivery.expr.values import Value, to_text, truthy

__all__ = ["ClauseError", "IfBlock", "Program", "compile_if_block", "compile_text"]

_NO_CAPTURES: list[str] = []
"""Passed to code that sets no captures: nothing ever writes to it (see evaluator.matches)."""

_CONTEXT_USES = {Context.RCPT: "rcpt (route, schedule)", Context.HOST: "host (connection, tls)"}


class ClauseError(ExprError):
    """An expression of an IfBlock failed to compile; ``clause`` names which one.

    ``clause`` is ``match[<i>].if``, ``match[<i>].then`` or ``else`` (0-based rule index).
    """

    def __init__(self, clause: str, expression: str, position: int, reason: str, /) -> None:
        super().__init__(expression, position, reason)
        self.clause = clause
        self.args = (clause, expression, position, reason)

    def __str__(self) -> str:
        return f"{self.clause}: {super().__str__()}"


class Program:
    """One compiled expression.

    :ivar text: the expression as written.
    :ivar context: the context it was checked against.
    :ivar uses_dns: True when it calls ``dns_query`` (evaluate it with resolve.py).
    """

    __slots__ = ("_captures", "_code", "context", "text", "uses_dns")

    def __init__(
        self, text: str, context: Context, code: Code, *, captures: bool, uses_dns: bool
    ) -> None:
        self.text, self.context, self.uses_dns = text, context, uses_dns
        self._code, self._captures = code, captures

    def evaluate(
        self, variables: Mapping[str, Value], env: Environment = EMPTY_ENVIRONMENT
    ) -> Value:
        """The value of the expression for ``variables`` (a missing one reads as "").

        :raises NeedsLookup: a ``dns_query`` answer is not in ``env`` (see resolve.py).
        """
        return self._code(variables, env, [] if self._captures else _NO_CAPTURES)

    def __repr__(self) -> str:
        return f"Program({self.text!r}, {self.context})"


class IfBlock:
    """A compiled Expression: the first rule whose ``if`` is true gives its ``then``.

    :ivar rules: the ``(if, then)`` texts as written.
    :ivar otherwise: the ``else`` text.
    :ivar uses_dns: True when ``dns_query`` appears anywhere (evaluate it with resolve.py).
    """

    __slots__ = ("_otherwise", "_rules", "context", "otherwise", "rules", "uses_dns")

    def __init__(
        self,
        rules: tuple[tuple[str, str], ...],
        otherwise: str,
        context: Context,
        compiled: tuple[tuple[Code, Code, bool], ...],
        compiled_otherwise: tuple[Code, bool],
        *,
        uses_dns: bool,
    ) -> None:
        self.rules, self.otherwise, self.context, self.uses_dns = (
            rules,
            otherwise,
            context,
            uses_dns,
        )
        self._rules, self._otherwise = compiled, compiled_otherwise

    def evaluate(
        self, variables: Mapping[str, Value], env: Environment = EMPTY_ENVIRONMENT
    ) -> Value:
        """The ``then`` of the first rule whose ``if`` is true, else the ``else``.

        :raises NeedsLookup: a ``dns_query`` answer is not in ``env`` (see resolve.py).
        """
        for condition, then, capturing in self._rules:
            captures = [] if capturing else _NO_CAPTURES
            if condition(variables, env, captures):
                return then(variables, env, captures)
        code, capturing = self._otherwise
        return code(variables, env, [] if capturing else _NO_CAPTURES)

    def __repr__(self) -> str:
        return f"IfBlock({len(self.rules)} rules, else {self.otherwise!r}, {self.context})"


def compile_text(text: str, context: Context) -> Program:
    """Compile one expression for ``context``.

    :raises ExprError: a syntax error or a failed check (module docstring), with its position.

    >>> compile_text("retry_num > 0 && last_error == 'tls'", Context.HOST).evaluate(
    ...     {"retry_num": 1, "last_error": "tls"})
    1
    """
    tree = parser.parse(text)
    scope = _Scope.of(tree)
    dns_calls = _check_dns_queries(text, tree, 0)
    compiled = _Compiler(text, context, scope).compile(tree)
    return Program(text, context, compiled.code, captures=scope.capturing, uses_dns=dns_calls > 0)


def compile_if_block(rules: Sequence[tuple[str, str]], otherwise: str, context: Context) -> IfBlock:
    """Compile an Expression: ``rules`` as ``(if_text, then_text)`` pairs, and the ``else``.

    Rules whose ``if`` is a constant are resolved now: a false one is dropped, a true one makes
    the rules after it unreachable (they are still checked).

    :raises ClauseError: the first part that fails, named ``match[i].if``, ``match[i].then``
        or ``else``.
    """
    if len(rules) > MAX_MATCH_RULES:
        raise ClauseError(
            f"match[{MAX_MATCH_RULES}].if",
            rules[MAX_MATCH_RULES][0],
            0,
            f"more than {MAX_MATCH_RULES} match rules",
        )
    dns_calls = 0
    compiled: list[tuple[Code, Code, bool]] = []
    decided: Compiled | None = None  # the then of a rule whose if is constant true
    for number, (if_text, then_text) in enumerate(rules):
        if_clause, then_clause = f"match[{number}].if", f"match[{number}].then"
        condition_tree = _parse_clause(if_clause, if_text)
        then_tree = _parse_clause(then_clause, then_text)
        scope = _Scope.of(condition_tree, then_tree)
        with _clause(if_clause):
            dns_calls = _check_dns_queries(if_text, condition_tree, dns_calls)
            condition = _Compiler(if_text, context, scope).compile(condition_tree)
        with _clause(then_clause):
            dns_calls = _check_dns_queries(then_text, then_tree, dns_calls)
            then = _Compiler(then_text, context, scope).compile(then_tree)
        if decided is not None or (condition.constant and not truthy(condition.value)):
            continue
        if condition.constant and not scope.capturing:
            decided = then
            continue
        compiled.append((condition.code, then.code, scope.capturing))
    otherwise_tree = _parse_clause("else", otherwise)
    otherwise_scope = _Scope.of(otherwise_tree)
    with _clause("else"):
        dns_calls = _check_dns_queries(otherwise, otherwise_tree, dns_calls)
        fallback = _Compiler(otherwise, context, otherwise_scope).compile(otherwise_tree)
    final = (fallback.code, otherwise_scope.capturing) if decided is None else (decided.code, False)
    return IfBlock(
        tuple((if_text, then_text) for if_text, then_text in rules),
        otherwise,
        context,
        tuple(compiled),
        final,
        uses_dns=dns_calls > 0,
    )


@contextlib.contextmanager
def _clause(clause: str) -> Iterator[None]:
    """Re-raise an ExprError from inside as a ClauseError naming ``clause``."""
    try:
        yield
    except ClauseError:
        raise
    except ExprError as error:
        raise ClauseError(clause, error.expression, error.position, error.reason) from error


def _parse_clause(clause: str, text: str) -> ast.Node:
    with _clause(clause):
        return parser.parse(text)


def _check_dns_queries(text: str, tree: ast.Node, before: int) -> int:
    """``before`` plus this part's ``dns_query`` calls; ExprError past MAX_DNS_QUERIES."""
    count = before
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.name == "dns_query":
            count += 1
            if count > MAX_DNS_QUERIES:
                raise ExprError(
                    text,
                    node.start,
                    f"more than {MAX_DNS_QUERIES} dns_query() calls in one expression",
                )
    return count


class _Scope:
    """What the ``$n`` captures of one rule (or one lone expression) may refer to.

    :ivar has_matches: a ``matches()`` call can set captures.
    :ivar max_groups: the most groups of its literal patterns; None when a pattern is computed
        at run time or invalid (then any ``$n`` is accepted).
    :ivar capturing: a ``$n`` is used, so ``matches()`` must record its groups.
    """

    __slots__ = ("capturing", "has_matches", "max_groups")

    def __init__(self, has_matches: bool, max_groups: int | None, capturing: bool) -> None:
        self.has_matches, self.max_groups, self.capturing = has_matches, max_groups, capturing

    @classmethod
    def of(cls, *trees: ast.Node) -> _Scope:
        has_matches, capturing = False, False
        max_groups: int | None = 0
        for tree in trees:
            for node in ast.walk(tree):
                if isinstance(node, ast.Capture):
                    capturing = True
                elif isinstance(node, ast.Call) and node.name == "matches":
                    has_matches = True
                    groups = _literal_groups(node)
                    max_groups = (
                        None if groups is None or max_groups is None else max(max_groups, groups)
                    )
        return cls(has_matches, max_groups, capturing)


def _literal_groups(call: ast.Call) -> int | None:
    if not call.arguments or not isinstance(call.arguments[0], ast.Literal):
        return None
    compiled = functions.compile_regex(to_text(call.arguments[0].value))
    return compiled.groups if isinstance(compiled, re.Pattern) else None


class _Compiler:
    """Checks one parsed expression and builds its closure, bottom-up."""

    def __init__(self, text: str, context: Context, scope: _Scope) -> None:
        self.text, self.context, self.scope = text, context, scope
        self.allowed = variables_of(context)

    def error(self, node: ast.Node, reason: str) -> ExprError:
        return ExprError(self.text, node.start, reason)

    def compile(self, node: ast.Node) -> Compiled:
        match node:
            case ast.Literal(value=value):
                return evaluator.constant(value)
            case ast.Variable():
                return self.variable(node)
            case ast.Capture():
                return self.capture(node)
            case ast.Unary(operator=operator_text, operand=operand):
                inner = self.compile(operand)
                return _folded(evaluator.unary(operator_text, inner), inner)
            case ast.Binary(operator=operator_text, left=left, right=right):
                parts = self.compile(left), self.compile(right)
                return _folded(evaluator.binary(operator_text, *parts), *parts)
            case ast.Logical(operator=operator_text, operands=operands):
                return self.logical(operator_text, [self.compile(item) for item in operands])
            case ast.Call():
                return self.call(node)
            case ast.ArrayLiteral(items=items):
                compiled = [self.compile(item) for item in items]
                return _folded(evaluator.array(compiled), *compiled)
            case ast.Index(target=target, index=position):
                parts = self.compile(target), self.compile(position)
                return _folded(evaluator.index(*parts), *parts)

    def variable(self, node: ast.Variable) -> Compiled:
        name = node.name
        if name in self.allowed:
            return evaluator.variable(name)
        for context in Context:
            if name in variables_of(context):
                raise self.error(
                    node,
                    f"variable {name!r} is not allowed in {_CONTEXT_USES[self.context]} "
                    f"expressions; it is a {_CONTEXT_USES[context]} variable",
                )
        if functions.signature(name) is not None:
            raise self.error(node, f"function {name!r} must be called: {name}(...)")
        hint = f"to return the text, quote it: '{name}'"
        close = difflib.get_close_matches(name, sorted(self.allowed), n=1, cutoff=0.75)
        if close:
            hint = f"did you mean {close[0]!r}? {hint}"
        raise self.error(node, f"unknown variable {name!r} ({hint})")

    def capture(self, node: ast.Capture) -> Compiled:
        scope = self.scope
        if not scope.has_matches:
            raise self.error(
                node,
                f"capture ${node.group} needs a matches() call in this expression or in the "
                "if of its rule",
            )
        if scope.max_groups is not None and node.group > scope.max_groups:
            groups = "group" if scope.max_groups == 1 else "groups"
            raise self.error(
                node,
                f"capture ${node.group} is beyond the {scope.max_groups} {groups} of the "
                "matches() pattern",
            )
        return evaluator.capture(node.group)

    def logical(self, operator_text: str, operands: list[Compiled]) -> Compiled:
        """``&&``/``||`` with constant operands resolved: one that cannot decide is dropped,
        one that always decides ends the chain."""
        decides_when = operator_text == "||"  # || stops at a true operand, && at a false one
        kept: list[Compiled] = []
        for position, operand in enumerate(operands):
            last = position == len(operands) - 1
            if operand.constant and truthy(operand.value) is not decides_when and not last:
                continue
            kept.append(operand)
            if operand.constant:
                break
        if kept[0].constant:
            return kept[0]
        return evaluator.logical(operator_text, kept)

    def call(self, node: ast.Call) -> Compiled:
        name, arguments = node.name, node.arguments
        signature = functions.signature(name)
        if signature is None:
            close = difflib.get_close_matches(
                name, sorted({*functions.FUNCTIONS, *functions.SPECIAL_FORMS}), n=1, cutoff=0.75
            )
            hint = f" (did you mean {close[0]}()?)" if close else ""
            raise self.error(node, f"unknown function {name!r}{hint}")
        if not signature.min_args <= len(arguments) <= signature.max_args:
            raise self.error(node, _arity_reason(name, signature, len(arguments)))
        compiled = [self.compile(argument) for argument in arguments]
        for position, allowed in signature.choices.items():
            value = compiled[position].value
            accepted = {choice.lower() for choice in allowed}  # choices ignore case
            if compiled[position].constant and to_text(value).lower() not in accepted:
                choices = ", ".join(repr(choice) for choice in sorted(allowed))
                raise self.error(
                    arguments[position],
                    f"{name}() does not know {value!r}: use one of {choices}",
                )
        if name == "if_then":
            return self.if_then(*compiled)
        if name == "matches":
            return self.matches(arguments[0], *compiled)
        function = functions.FUNCTIONS[name]
        code = evaluator.call(function, compiled)
        return code if function.needs_env else _folded(code, *compiled)

    def if_then(self, condition: Compiled, then: Compiled, otherwise: Compiled) -> Compiled:
        if condition.constant:
            return then if truthy(condition.value) else otherwise
        return evaluator.if_then(condition, then, otherwise)

    def matches(self, pattern_node: ast.Node, pattern: Compiled, subject: Compiled) -> Compiled:
        regex: re.Pattern[str] | Compiled = pattern
        if pattern.constant:
            compiled = functions.compile_regex(to_text(pattern.value))
            if isinstance(compiled, str):
                raise self.error(pattern_node, compiled)
            regex = compiled
        capturing = self.scope.capturing
        code = evaluator.matches(regex, subject, capturing=capturing)
        # Folding would skip recording the groups, so only a non-capturing match folds.
        return code if capturing else _folded(code, pattern, subject)


def _folded(compiled: Compiled, *operands: Compiled) -> Compiled:
    """``compiled`` as a constant when all its operands are constants (it must be pure)."""
    return evaluator.fold(compiled) if all(operand.constant for operand in operands) else compiled


def _arity_reason(name: str, signature: functions.Signature, given: int) -> str:
    low, high = signature.min_args, signature.max_args
    wanted = str(low) if low == high else f"{low} to {high}"
    noun = "argument" if high == 1 else "arguments"
    return f"{name}() takes {wanted} {noun}, got {given}"
