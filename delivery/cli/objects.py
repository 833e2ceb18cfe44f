"""`delivery get|create|update|delete|query OBJECT ...`: managed objects through the API.

The same calls as stalwart-cli, sent as JMAP to a running `delivery serve`:

    delivery get MtaOutboundStrategy
    delivery get MtaTlsStrategy [ID ...]
    delivery create MtaTlsStrategy --field name=strict --field startTls=require
    delivery query MtaTlsStrategy [--where name=example]
    delivery update MtaTlsStrategy ID --field description='updated value'
    delivery update MtaOutboundStrategy --field connection='{"else":"'\\''default'\\''"}'
    delivery delete MtaTlsStrategy --ids ID[,ID]

The API is found from ``--url``, else ``DELIVERY_URL``, else ``[api] listen`` of the settings
(``--config FILE``); the token from ``--token``, else ``DELIVERY_TOKEN``. A ``--field`` or
``--where`` value is read as JSON when it parses (objects, arrays, numbers, true/false/null,
"quoted strings"), else taken as the raw string, so ``5m`` and ``strict`` need no quotes.
``update`` without an ID updates the singleton.

Outcomes (exit status):
    0  done; objects as rich tables, or the raw method result with ``--json``
    1  the API refused: a SetError, a method error, 401, unreachable, or an id not found;
       the message names the object, the id and the property
    2  usage: a malformed option, or an unreadable settings file

Security: the token is never printed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, TypeVar

import click
from rich import box
from rich.console import Console
from rich.table import Table

from delivery import config
from delivery.cli import client as api_client
from delivery.errors import ConfigError

__all__ = [
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "SINGLETON_ID",
    "ApiContext",
    "api_options",
    "create_command",
    "delete_command",
    "fail",
    "format_set_error",
    "get_command",
    "parse_assignment",
    "print_json",
    "query_command",
    "update_command",
]

SINGLETON_ID = "singleton"
"""The id of every singleton object (RFC 8620 style, as the reference pages use it)."""

EXIT_REFUSED = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


def parse_value(text: str, /) -> Any:
    """A ``--field`` value: JSON when it parses, else the raw string.

    >>> parse_value('{"else": "x"}'), parse_value("5m"), parse_value("true"), parse_value("3")
    ({'else': 'x'}, '5m', True, 3)
    """
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignment(text: str, /) -> tuple[str, Any]:
    """Split ``name=value`` into the name and the parsed value.

    >>> parse_assignment("description=updated value")
    ('description', 'updated value')
    """
    name, equals, value = text.partition("=")
    name = name.strip()
    if not equals or not name:
        raise click.BadParameter(f"{text!r} is not NAME=VALUE")
    return name, parse_value(value)


def format_set_error(object_type: str, item_id: str, verb: str, error: Any, /) -> str:
    """The message for one SetError: names the object, the id and the properties at fault.

    >>> format_set_error("MtaTlsStrategy", "a1", "update", {"type": "invalidProperties",
    ...     "description": "not a mode", "properties": ["startTls"]})
    'MtaTlsStrategy a1: cannot update (invalidProperties, property startTls): not a mode'
    """
    if not isinstance(error, dict):
        return f"{object_type} {item_id}: cannot {verb}: {error!r}"
    kind = error.get("type", "unknown")
    properties = error.get("properties") or []
    where = ""
    if properties:
        label = "property" if len(properties) == 1 else "properties"
        where = f", {label} {', '.join(map(str, properties))}"
    description = error.get("description") or "no description"
    return f"{object_type} {item_id}: cannot {verb} ({kind}{where}): {description}"


def fail(message: str, /, code: int = EXIT_REFUSED) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "))  # spaces let rich wrap long values


def _print_object(console: Console, object_type: str, obj: dict[str, Any]) -> None:
    table = Table(title=f"{object_type} {obj.get('id', '')}".strip(), box=box.SIMPLE_HEAD)
    table.add_column("Property", style="bold", no_wrap=True)
    table.add_column("Value", overflow="fold")
    for name, value in obj.items():
        table.add_row(name, _cell(value))
    console.print(table)


def _print_summary(console: Console, object_type: str, objects: Sequence[dict[str, Any]]) -> None:
    columns = ["id"] + [c for c in ("name", "description") if any(c in o for o in objects)]
    table = Table(title=f"{object_type}: {len(objects)} found", box=box.SIMPLE_HEAD)
    for column in columns:
        table.add_column(column, overflow="fold")
    for obj in objects:
        table.add_row(*(_cell(obj.get(c)) if obj.get(c) is not None else "" for c in columns))
    console.print(table)


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON (the ``--json`` output)."""
    click.echo(json.dumps(value, indent=2))


class ApiContext:
    """What every command that calls the API needs: a client and the output mode."""

    def __init__(self, url: str | None, token: str | None, cfg: str | None, as_json: bool):
        if url is None:
            try:
                settings = config.load(cfg)
            except ConfigError as exc:
                fail(str(exc), EXIT_USAGE)
            url = "http://{}:{}".format(*_connectable(config.host_port(settings.api.listen)))
        self.client = api_client.ApiClient(url, token)
        self.as_json = as_json
        self.console = Console()

    def run(self, action: Callable[[], None]) -> None:
        try:
            action()
        except api_client.ClientError as exc:
            fail(str(exc))


def _connectable(address: tuple[str, int]) -> tuple[str, int]:
    """Turn a wildcard listen address into one a client can connect to."""
    host, port = address
    if host in ("", "0.0.0.0"):
        return "127.0.0.1", port
    if host == "::":
        return "[::1]", port
    return (f"[{host}]" if ":" in host else host), port


def api_options(function: F) -> F:
    """The options every command that calls the API takes: --json, --token, --url, --config."""
    options = [
        click.option("--json", "as_json", is_flag=True, help="Print the raw method result."),
        click.option(
            "--token",
            envvar="DELIVERY_TOKEN",
            help="API token (default: $DELIVERY_TOKEN).",
        ),
        click.option(
            "--url",
            envvar="DELIVERY_URL",
            help="API base URL (default: $DELIVERY_URL, else http://<[api] listen>).",
        ),
        click.option(
            "--config",
            "cfg",
            type=click.Path(dir_okay=False),
            help="Settings file (default: ./delivery.toml if present).",
        ),
    ]
    for option in options:
        function = option(function)
    return function


def _fields(values: Iterable[str]) -> dict[str, Any]:
    return dict(parse_assignment(v) for v in values)


def _split_ids(values: Iterable[str]) -> list[str]:
    return [i.strip() for v in values for i in v.split(",") if i.strip()]


_FIELD_HELP = "NAME=VALUE; VALUE is JSON when it parses, else a string. Repeatable."


@click.command("get")
@click.argument("object_type", metavar="OBJECT")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--properties", help="Comma-separated properties to return (default: all).")
@api_options
def get_command(
    object_type: str,
    ids: tuple[str, ...],
    properties: str | None,
    as_json: bool,
    token: str | None,
    url: str | None,
    cfg: str | None,
) -> None:
    """Show objects of type OBJECT: the given IDs, or all (a singleton: the one)."""
    ctx = ApiContext(url, token, cfg, as_json)

    def action() -> None:
        result = ctx.client.call(
            f"x:{object_type}/get",
            {
                "ids": list(ids) or None,
                "properties": _split_ids([properties]) if properties else None,
            },
        )
        if ctx.as_json:
            print_json(result)
        else:
            for obj in result.get("list", []):
                _print_object(ctx.console, object_type, obj)
        missing = result.get("notFound") or []
        if missing:
            fail(f"{object_type} {', '.join(missing)}: not found")

    ctx.run(action)


@click.command("create")
@click.argument("object_type", metavar="OBJECT")
@click.option("--field", "fields", multiple=True, metavar="NAME=VALUE", help=_FIELD_HELP)
@api_options
def create_command(
    object_type: str,
    fields: tuple[str, ...],
    as_json: bool,
    token: str | None,
    url: str | None,
    cfg: str | None,
) -> None:
    """Create an object of type OBJECT from --field values; prints its id."""
    values = _fields(fields)
    ctx = ApiContext(url, token, cfg, as_json)

    def action() -> None:
        result = ctx.client.call(f"x:{object_type}/set", {"create": {"new": values}})
        if ctx.as_json:
            print_json(result)
        refused = (result.get("notCreated") or {}).get("new")
        if refused is not None:
            fail(format_set_error(object_type, "(new)", "create", refused))
        created = (result.get("created") or {}).get("new") or {}
        if not ctx.as_json:
            click.echo(f"Created {object_type} {created.get('id', '?')}")

    ctx.run(action)


@click.command("update")
@click.argument("object_type", metavar="OBJECT")
@click.argument("object_id", metavar="[ID]", required=False)
@click.option("--field", "fields", multiple=True, metavar="NAME=VALUE", help=_FIELD_HELP)
@api_options
def update_command(
    object_type: str,
    object_id: str | None,
    fields: tuple[str, ...],
    as_json: bool,
    token: str | None,
    url: str | None,
    cfg: str | None,
) -> None:
    """Change --field values of object ID of type OBJECT (no ID: the singleton)."""
    values = _fields(fields)
    if not values:
        raise click.UsageError("give at least one --field NAME=VALUE to change")
    target = object_id or SINGLETON_ID
    ctx = ApiContext(url, token, cfg, as_json)

    def action() -> None:
        result = ctx.client.call(f"x:{object_type}/set", {"update": {target: values}})
        if ctx.as_json:
            print_json(result)
        refused = (result.get("notUpdated") or {}).get(target)
        if refused is not None:
            message = format_set_error(object_type, target, "update", refused)
            if object_id is None and refused.get("type") == "notFound":
                message += f" ({object_type} is not a singleton: give the ID to update)"
            fail(message)
        if not ctx.as_json:
            click.echo(f"Updated {object_type} {target}")

    ctx.run(action)


@click.command("delete")
@click.argument("object_type", metavar="OBJECT")
@click.option(
    "--ids", "id_values", multiple=True, required=True, help="Comma-separated ids. Repeatable."
)
@api_options
def delete_command(
    object_type: str,
    id_values: tuple[str, ...],
    as_json: bool,
    token: str | None,
    url: str | None,
    cfg: str | None,
) -> None:
    """Delete objects of type OBJECT by id."""
    ids = _split_ids(id_values)
    if not ids:
        raise click.UsageError("--ids needs at least one id")
    ctx = ApiContext(url, token, cfg, as_json)

    def action() -> None:
        result = ctx.client.call(f"x:{object_type}/set", {"destroy": ids})
        if ctx.as_json:
            print_json(result)
        refused = result.get("notDestroyed") or {}
        if not ctx.as_json:
            for destroyed in result.get("destroyed") or []:
                click.echo(f"Deleted {object_type} {destroyed}")
        if refused:
            fail(
                "\n       ".join(
                    format_set_error(object_type, i, "delete", e) for i, e in refused.items()
                )
            )

    ctx.run(action)


@click.command("query")
@click.argument("object_type", metavar="OBJECT")
@click.option(
    "--where",
    "conditions",
    multiple=True,
    metavar="NAME=VALUE",
    help="A filter condition (e.g. name=example: names containing it). Repeatable: all must hold.",
)
@click.option("--limit", type=click.IntRange(min=0), help="Return at most this many ids.")
@click.option("--position", type=int, default=0, show_default=True, help="Skip this many.")
@api_options
def query_command(
    object_type: str,
    conditions: tuple[str, ...],
    limit: int | None,
    position: int,
    as_json: bool,
    token: str | None,
    url: str | None,
    cfg: str | None,
) -> None:
    """List the objects of type OBJECT that match every --where condition."""
    parsed = [dict([parse_assignment(c)]) for c in conditions]
    filter_: dict[str, Any] | None = None
    if len(parsed) == 1:
        filter_ = parsed[0]
    elif parsed:
        filter_ = {"operator": "AND", "conditions": parsed}
    ctx = ApiContext(url, token, cfg, as_json)
    arguments: dict[str, Any] = {"filter": filter_, "position": position, "limit": limit}

    def action() -> None:
        if ctx.as_json:
            print_json(ctx.client.call(f"x:{object_type}/query", arguments))
            return
        # One round trip: the /get takes the ids from the /query (RFC 8620 §3.7).
        reference = {"resultOf": "c0", "name": f"x:{object_type}/query", "path": "/ids"}
        _, found = ctx.client.calls(
            [(f"x:{object_type}/query", arguments), (f"x:{object_type}/get", {"#ids": reference})]
        )
        _print_summary(ctx.console, object_type, found.get("list", []))

    ctx.run(action)
