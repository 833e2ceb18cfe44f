"""`delivery eval`: evaluate a strategy expression from the command line (DESIGN §6).

    delivery eval "retry_num > 0 && last_error == 'tls'" --var retry_num=1 --var last_error=tls
    delivery eval "is_local_domain(rcpt_domain)" --context rcpt --var rcpt_domain=example.org

Outcomes:
    exit 0   the result on stdout: a string as is, a number in decimal, an array as JSON;
             with ``--json``, every result as JSON (``"tls"``, ``1``, ``0.5``, ``["a"]``).
    exit 1   a ``dns_query()`` lookup could not be answered (timeout, SERVFAIL...).
    exit 2   the compile error with a caret under its position, a bad ``--var``, or a bad
             settings file, on stderr.

Variables: ``--var NAME=VALUE``, repeatable. A VALUE that reads as a number (``3``, ``1.5``,
``-2``) is a number, one starting with ``[`` is a JSON array, anything else is a string. A
variable not given reads as "", as in the engine.

Settings: ``is_local_domain()`` reads ``[local] domains`` and ``dns_query()`` asks the
``[dns]`` nameservers of the settings (``--config FILE``, else ``./delivery.toml`` when
present, else the embedded defaults), never the system's resolver directly.
"""

from __future__ import annotations

import asyncio
import json
import math

import click

from delivery import config, expr
from delivery.dns import resolver as dns_resolver
from delivery.dns.result import Lookup
from delivery.errors import ConfigError, DnsTempFail, ExprError
from delivery.expr import values

__all__ = ["eval_command", "format_result", "parse_assignment", "parse_value"]

EXIT_LOOKUP_FAILED = 1
EXIT_USAGE = 2
"""Compile errors exit like click's usage errors: the input, not the system, is at fault."""


def parse_value(raw: str, /) -> expr.Value:
    """The value of ``--var NAME=VALUE`` text: a number, a JSON array, or the text itself.

    :raises click.BadParameter: a ``[``-prefixed text that is not a JSON array of values.

    >>> parse_value("3"), parse_value("1.5"), parse_value('["a", 2]'), parse_value("tls")
    (3, 1.5, ['a', 2], 'tls')
    """
    number = values.parse_number(raw)
    if number is not None:
        return number
    if raw.startswith("["):
        try:
            return _array(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise click.BadParameter(
                f"{raw!r} is not a JSON array of strings, numbers and arrays ({exc})",
                param_hint="'--var'",
            ) from exc
    return raw


def _array(decoded: object, /) -> expr.Value:
    """A decoded JSON value as an expression value; booleans become 1/0 (values.py)."""
    if isinstance(decoded, bool):
        return 1 if decoded else 0
    if isinstance(decoded, int | float | str):
        return decoded
    if isinstance(decoded, list):
        return [_array(item) for item in decoded]
    raise TypeError(f"{decoded!r} is not a string, number or array")


def parse_assignment(text: str, context: expr.Context, /) -> tuple[str, expr.Value]:
    """``NAME=VALUE`` as a variable of ``context`` and its value.

    :raises click.BadParameter: no ``=``, or a name that is not a variable of ``context``.
    """
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"{text!r} is not NAME=VALUE", param_hint="'--var'")
    allowed = expr.variables_of(context)
    if name not in allowed:
        others = [other for other in expr.Context if name in expr.variables_of(other)]
        where = f"; it is a {others[0].value} variable" if others else ""
        raise click.BadParameter(
            f"unknown variable {name!r} in the {context.value} context{where} "
            f"(variables: {', '.join(sorted(allowed))})",
            param_hint="'--var'",
        )
    return name, parse_value(raw)


def format_result(value: expr.Value, /, *, as_json: bool) -> str:
    """The text printed for a result (module docstring)."""
    if as_json or isinstance(value, list):
        return json.dumps(_json_ready(value), ensure_ascii=False)
    return values.to_text(value)


def _json_ready(value: expr.Value) -> expr.Value:
    """``value`` with non-finite floats as text: JSON has no inf or nan."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    return value


async def _evaluate_with_dns(
    program: expr.Program,
    variables: dict[str, expr.Value],
    env: expr.Environment,
    settings: config.Settings,
) -> expr.Value:
    """Evaluate, answering ``dns_query()`` from the configured nameservers."""
    async with dns_resolver.Resolver.from_settings(settings.dns) as resolver:

        async def lookup(name: str, rtype: str) -> expr.Value:
            found = await resolver.query(name, rtype)
            if found.status is Lookup.TEMPFAIL:
                raise DnsTempFail(f"dns_query({name!r}, {rtype!r}) failed: {found.detail}")
            return list(found.records)

        return await expr.evaluate_resolving(program, variables, env, lookup)


@click.command("eval")
@click.argument("expression")
@click.option(
    "--var",
    "assignments",
    multiple=True,
    metavar="NAME=VALUE",
    help="A variable: a number, a JSON array ('[...]') or text. Repeatable.",
)
@click.option(
    "--context",
    "context_name",
    type=click.Choice([context.value for context in expr.Context]),
    default=expr.Context.HOST.value,
    show_default=True,
    help="rcpt: the variables of route and schedule; host: those of connection and tls.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(),
    default=None,
    help="Settings file (default: ./delivery.toml if present) for [local] and [dns].",
)
@click.pass_context
def eval_command(
    ctx: click.Context,
    expression: str,
    assignments: tuple[str, ...],
    context_name: str,
    as_json: bool,
    config_file: str | None,
) -> None:
    """Evaluate the strategy expression EXPRESSION and print its result.

    A result that is not a string would make a strategy expression select `default`.
    """
    context = expr.Context(context_name)
    try:
        program = expr.compile_text(expression, context)
    except ExprError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(EXIT_USAGE)
    variables = dict(parse_assignment(text, context) for text in assignments)
    try:
        settings = config.load(config_file)
    except ConfigError as error:
        click.echo(f"error: settings: {error}", err=True)
        ctx.exit(EXIT_USAGE)
    env = expr.Environment(local_domains=frozenset(settings.local.domains))
    if program.uses_dns:
        try:
            value = asyncio.run(_evaluate_with_dns(program, variables, env, settings))
        except ConfigError as error:
            click.echo(f"error: settings: {error}", err=True)
            ctx.exit(EXIT_USAGE)
        except DnsTempFail as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(EXIT_LOOKUP_FAILED)
    else:
        value = program.evaluate(variables, env)
    click.echo(format_result(value, as_json=as_json))
