"""`delivery queue list|show|retry|cancel`: the queue of a running daemon, through the API.

    delivery queue list [--status deferred] [--domain example.com] [--sender A] [--recipient A]
                        [--queue remote] [--due-before 1h] [--due-after TIME] [--limit 50]
    delivery queue show ID
    delivery queue retry ID          (or --all-deferred)
    delivery queue cancel ID [--silent]

Each is a JMAP call on ``x:QueuedMessage`` (delivery/api/queue.py): ``list`` is one /query and
one /get in one request; ``retry`` and ``cancel`` are /set updates with an action. The API is
found and authenticated as for `delivery get` (``--url``, ``--token``, ``--config``, or
``DELIVERY_URL`` / ``DELIVERY_TOKEN``). ``--due-before`` and ``--due-after`` take an RFC 3339
time (``2026-01-31T12:00:00Z``) or a duration from now (``30m``, ``2h``). ``--json`` prints the
message objects (list, show) or the /set result (retry, cancel).

``retry --all-deferred`` collects the ids of every deferred message (pages of
`ALL_DEFERRED_PAGE`), then retries them in batches of at most `RETRY_BATCH`; a message
delivered or cancelled meanwhile is skipped, not an error.

Outcomes (exit status):
    0  done
    1  the API refused: an unknown id (notFound), a permission the token lacks (forbidden), a
       message with nothing left to retry or cancel (notScheduled), 401, unreachable
    2  usage: a bad option value (the message names the option), unreadable settings

Security: the token is never printed. Cancel sends the sender a DSN unless ``--silent``.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from delivery import durations
from delivery.cli import client as api_client
from delivery.cli import objects

__all__ = [
    "ALL_DEFERRED_PAGE",
    "RETRY_BATCH",
    "format_span",
    "format_when",
    "parse_when",
    "queue",
]

OBJECT = "QueuedMessage"
GET, QUERY, SET = (f"x:{OBJECT}/{op}" for op in ("get", "query", "set"))

ALL_DEFERRED_PAGE = 1000
"""Ids per /query when collecting every deferred message: the server's most per /query."""

RETRY_BATCH = 500
"""Updates per /set of ``retry --all-deferred``: the server's maxObjectsInSet."""

STATUSES = ("scheduled", "deferred", "delivered", "failed", "cancelled")

OPTION_OF_CONDITION = {
    "status": "--status",
    "domain": "--domain",
    "sender": "--sender",
    "recipient": "--recipient",
    "queue": "--queue",
    "dueBefore": "--due-before",
    "dueAfter": "--due-after",
}
"""The option that sets each filter condition: a refused condition is reported by its option."""


def parse_when(text: str, /, *, now: datetime.datetime) -> str:
    """parse_when - a ``--due-*`` value as RFC 3339 UTC: a duration is counted from ``now``;
    any other text is passed on for the server to check.

    >>> parse_when("90m", now=datetime.datetime(2026, 1, 31, 12, 0, tzinfo=datetime.UTC))
    '2026-01-31T13:30:00Z'
    >>> parse_when("2026-01-31T12:00:00Z", now=datetime.datetime.now(datetime.UTC))
    '2026-01-31T12:00:00Z'

    :raises ValueError: a duration that ends after the year 9999 (no date can say it).
    """
    try:
        ms = durations.parse_duration(text)
    except ValueError:
        return text
    try:
        when = now + datetime.timedelta(milliseconds=ms)
    except OverflowError:
        reason = f"{text!r} from now is after the year 9999: give a shorter duration"
        raise ValueError(reason) from None
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when_option(text: str | None, option: str, /, *, now: datetime.datetime) -> str | None:
    """A ``--due-*`` option's value for the filter; a usage error naming ``option``."""
    if text is None:
        return None
    try:
        return parse_when(text, now=now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{option}'") from None


_SPAN_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))


def format_span(seconds: int, /) -> str:
    """format_span - a span of time in its two largest units, for people.

    >>> format_span(119), format_span(259_199), format_span(3_600), format_span(0)
    ('1m59s', '2d23h', '1h', '0s')
    """
    parts: list[str] = []
    for unit, size in _SPAN_UNITS:
        count, seconds = divmod(seconds, size)
        if count or parts:
            parts.append(f"{count}{unit}" if count else "")
        if len(parts) == 2:
            break
    return "".join(parts) or "0s"


def format_when(value: str | None, /, *, now: datetime.datetime, style: str = "full") -> str:
    """format_when - an RFC 3339 time from the API for a table, in UTC.

    ``style`` is ``full`` (the time and how far from now), ``relative`` or ``short``.

    >>> now = datetime.datetime(2026, 1, 31, 12, 0, tzinfo=datetime.UTC)
    >>> format_when("2026-01-31T12:05:00Z", now=now), format_when("2026-01-31T11:00:00Z", now=now)
    ('2026-01-31 12:05:00Z (in 5m)', '2026-01-31 11:00:00Z (1h ago)')
    >>> format_when("2026-01-31T12:01:30Z", now=now, style="relative")
    'in 1m30s'
    >>> format_when("2026-01-31T11:00:00Z", now=now, style="short"), format_when(None, now=now)
    ('01-31 11:00Z', '-')
    """
    if value is None:
        return "-"
    try:
        when = datetime.datetime.fromisoformat(value).astimezone(datetime.UTC)
    except ValueError:
        return value
    if style == "short":
        return f"{when:%m-%d %H:%M}Z"
    seconds = int((when - now).total_seconds())
    span = format_span(abs(seconds))
    relative = "now" if abs(seconds) < 1 else f"in {span}" if seconds > 0 else f"{span} ago"
    if style == "relative":
        return relative
    return f"{when:%Y-%m-%d %H:%M:%S}Z ({relative})"


def _status(recipient: dict[str, Any], /) -> str:
    return "deferred" if recipient.get("deferred") else str(recipient.get("status", "?"))


def _next_due(message: dict[str, Any], /) -> str | None:
    dues = [r["due"] for r in message.get("recipients", []) if r.get("due")]
    return min(dues, key=datetime.datetime.fromisoformat) if dues else None


def _print_list(console: Console, messages: Sequence[dict[str, Any]], limit: int) -> None:
    now = datetime.datetime.now(datetime.UTC)
    more = " (--limit reached: more may match)" if len(messages) >= limit else ""
    noun = "message" if len(messages) == 1 else "messages"
    table = Table(title=f"{len(messages)} queued {noun}{more}", box=box.SIMPLE_HEAD)
    table.add_column("id / received", no_wrap=True)
    table.add_column("sender", overflow="fold", ratio=1)
    table.add_column("recipients", overflow="fold", ratio=2)
    table.add_column("next due", no_wrap=True)
    for message in messages:
        recipients = "\n".join(
            f"{r.get('address')} {_status(r)}" for r in message.get("recipients", [])
        )
        received = format_when(message.get("receivedAt"), now=now, style="short")
        table.add_row(
            f"{message.get('id', '')}\n{received}",
            message.get("sender") or "<>",
            recipients,
            format_when(_next_due(message), now=now, style="relative"),
        )
    console.print(table)


def _print_message(console: Console, message: dict[str, Any]) -> None:
    now = datetime.datetime.now(datetime.UTC)
    head = Table(title=f"{OBJECT} {message.get('id', '')}", box=box.SIMPLE_HEAD, show_header=False)
    head.add_column("property", style="bold", no_wrap=True)
    head.add_column("value", overflow="fold")
    head.add_row("sender", message.get("sender") or "<> (null sender)")
    head.add_row("source", str(message.get("source")))
    head.add_row("size", f"{message.get('size')} bytes")
    head.add_row("received", format_when(message.get("receivedAt"), now=now))
    head.add_row("requireTls", json.dumps(message.get("requireTls")))
    head.add_row("envId", message.get("envId") or "-")
    console.print(head)
    for r in message.get("recipients", []):  # one block each: the last status is long
        table = Table(title=str(r.get("address")), box=box.SIMPLE_HEAD, show_header=False)
        table.add_column("property", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold")
        table.add_row("status", _status(r))
        table.add_row("attempts", str(r.get("attempts")))
        table.add_row("due", format_when(r.get("due"), now=now))
        table.add_row("queue", f"{r.get('queue')} (schedule {r.get('schedule')})")
        table.add_row("expires", format_when(r.get("expiresAt"), now=now))
        table.add_row("last error", str(r.get("lastError")))
        table.add_row("last status", r.get("lastStatus") or "-")
        console.print(table)


@click.group("queue")
def queue() -> None:
    """Inspect and act on the queue of a running daemon (through the API)."""


@queue.command("list")
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    help="Messages with a recipient in this state (deferred: scheduled, attempted before).",
)
@click.option("--domain", help="Messages with a recipient in this domain.")
@click.option("--sender", help="Messages from this envelope sender ('' for the null sender).")
@click.option("--recipient", help="Messages to this address.")
@click.option("--queue", "queue_name", help="Messages with a recipient in this virtual queue.")
@click.option("--due-before", metavar="TIME", help="A recipient due before TIME (RFC 3339, or 1h).")
@click.option("--due-after", metavar="TIME", help="A recipient due at or after TIME.")
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="Show at most this many messages.",
)
@objects.api_options
def list_command(
    status: str | None,
    domain: str | None,
    sender: str | None,
    recipient: str | None,
    queue_name: str | None,
    due_before: str | None,
    due_after: str | None,
    limit: int,
    as_json: bool,
    token: str | None,
    url: str | None,
    cfg: str | None,
) -> None:
    """List queued messages in arrival order, filtered (every filter must hold)."""
    now = datetime.datetime.now(datetime.UTC)
    conditions = {
        "status": status,
        "domain": domain,
        "sender": sender,
        "recipient": recipient,
        "queue": queue_name,
        "dueBefore": _when_option(due_before, "--due-before", now=now),
        "dueAfter": _when_option(due_after, "--due-after", now=now),
    }
    query = {"filter": {k: v for k, v in conditions.items() if v is not None}, "limit": limit}
    ctx = objects.ApiContext(url, token, cfg, as_json)

    def action() -> None:
        reference = {"resultOf": "c0", "name": QUERY, "path": "/ids"}
        try:
            _, found = ctx.client.calls([(QUERY, query), (GET, {"#ids": reference})])
        except api_client.MethodRefused as exc:
            _refused_filter(exc)
        messages = found.get("list", [])
        if ctx.as_json:
            objects.print_json(messages)
        else:
            _print_list(ctx.console, messages, limit)

    ctx.run(action)


def _refused_filter(exc: api_client.MethodRefused, /) -> None:
    """A filter the server refused is a usage error naming the option; else re-raise."""
    if exc.type == "unsupportedFilter":
        for condition, option in OPTION_OF_CONDITION.items():
            if exc.description.startswith(condition):
                objects.fail(f"{option}: {exc.description}", objects.EXIT_USAGE)
    raise exc


@queue.command("show")
@click.argument("message_id", metavar="ID")
@objects.api_options
def show_command(
    message_id: str, as_json: bool, token: str | None, url: str | None, cfg: str | None
) -> None:
    """Show message ID: every recipient's status, attempts, due time and last status."""
    ctx = objects.ApiContext(url, token, cfg, as_json)

    def action() -> None:
        result = ctx.client.call(GET, {"ids": [message_id]})
        if result.get("notFound"):
            objects.fail(f"no queued message {message_id} (delivered and purged, or never queued)")
        [message] = result.get("list", [])
        if ctx.as_json:
            objects.print_json(message)
        else:
            _print_message(ctx.console, message)

    ctx.run(action)


def _update(ctx: objects.ApiContext, message_id: str, action: str, verb: str) -> dict[str, Any]:
    """One /set update; the message's recipients after it, or exit 1 with the SetError."""
    result = ctx.client.call(SET, {"update": {message_id: {"action": action}}})
    if ctx.as_json:
        objects.print_json(result)
    refused = (result.get("notUpdated") or {}).get(message_id)
    if refused is not None:
        objects.fail(objects.format_set_error(OBJECT, message_id, verb, refused))
    changed: dict[str, Any] = (result.get("updated") or {}).get(message_id) or {}
    return changed


@queue.command("retry")
@click.argument("message_id", metavar="ID", required=False)
@click.option("--all-deferred", is_flag=True, help="Retry every deferred message.")
@objects.api_options
def retry_command(
    message_id: str | None,
    all_deferred: bool,
    as_json: bool,
    token: str | None,
    url: str | None,
    cfg: str | None,
) -> None:
    """Make message ID (or every deferred message) due now; the worker tries it at once."""
    if (message_id is None) == (not all_deferred):
        raise click.UsageError("give a message ID or --all-deferred (not both)")
    ctx = objects.ApiContext(url, token, cfg, as_json)

    def action() -> None:
        if message_id is not None:
            changed = _update(ctx, message_id, "retry", "retry")
            if not ctx.as_json:
                due = [r["address"] for r in changed.get("recipients", []) if r.get("due")]
                click.echo(f"Retrying message {message_id}: {', '.join(due) or 'in flight'}")
            return
        ids = _all_deferred(ctx.client)
        retried = 0
        for start in range(0, len(ids), RETRY_BATCH):
            batch = ids[start : start + RETRY_BATCH]
            result = ctx.client.call(SET, {"update": {i: {"action": "retry"} for i in batch}})
            if ctx.as_json:
                objects.print_json(result)
            retried += len(result.get("updated") or {})
        if not ctx.as_json:
            skipped = len(ids) - retried
            gone = f" ({skipped} finished meanwhile)" if skipped else ""
            click.echo(f"Retrying {retried} deferred messages{gone}")

    ctx.run(action)


def _all_deferred(client: api_client.ApiClient, /) -> list[str]:
    """The ids of every deferred message, in arrival order."""
    ids: list[str] = []
    while True:
        page = client.call(
            QUERY,
            {"filter": {"status": "deferred"}, "position": len(ids), "limit": ALL_DEFERRED_PAGE},
        )
        found = page.get("ids", [])
        ids.extend(found)
        if len(found) < ALL_DEFERRED_PAGE:
            return list(dict.fromkeys(ids))  # a message that moved back a page comes twice


@queue.command("cancel")
@click.argument("message_id", metavar="ID")
@click.option("--silent", is_flag=True, help="Send the sender no DSN.")
@objects.api_options
def cancel_command(
    message_id: str,
    silent: bool,
    as_json: bool,
    token: str | None,
    url: str | None,
    cfg: str | None,
) -> None:
    """Cancel message ID's scheduled recipients; the sender gets a DSN unless --silent."""
    ctx = objects.ApiContext(url, token, cfg, as_json)

    def action() -> None:
        changed = _update(ctx, message_id, "cancelSilently" if silent else "cancel", "cancel")
        if ctx.as_json:
            return
        cancelled = [r for r in changed.get("recipients", []) if r.get("status") == "cancelled"]
        click.echo(f"Cancelled message {message_id}: {', '.join(r['address'] for r in cancelled)}")
        notes = dict.fromkeys(r.get("lastStatus", "") for r in cancelled)
        for note in notes:
            click.echo(f"  {note}")

    ctx.run(action)
