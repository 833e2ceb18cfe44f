"""`delivery send --from A --to B [--to C ...] [FILE|-]`: queue a message from this host.

    delivery send --from app@example.org --to bob@example.com message.eml
    printf 'Subject: hi\\n\\nhello\\n' | delivery send --from app@example.org --to bob@example.com

Reads the message (RFC 5322 text: headers, blank line, body) from FILE, or from stdin when
FILE is ``-`` or not given, and writes it straight into the queue store the settings name
(``[store] url``), with each recipient planned by the ``schedule`` expression exactly as the
submission listener and the engine plan theirs (`delivery.submit.planning`, over
`delivery.engine.intake`). The daemon need not run: its worker polls the store and picks the
message up when it does. The source is ``authenticated`` (a local operator); the message gets
a ``Received: by <hostname> (delivery send, uid N)`` header and CRLF line endings.

Options: ``--notify NEVER|SUCCESS,FAILURE,DELAY`` (DSN NOTIFY for every recipient),
``--ret FULL|HDRS``, ``--envid TEXT`` (RFC 3461), ``--requiretls`` (RFC 8689: delivered only
over verified TLS), ``--config FILE``.

Outcomes (exit status):
    0  queued; the message id on stdout
    1  the store could not be opened or written (nothing was queued), or planning failed
    2  bad input, named on stderr: an address that is not an RFC 5321 mailbox, a bad
       option value, a message over the size limit, invalid settings

Security: addresses are checked with the listener's syntax check (`server.mailbox_problem`):
no control characters, so no CR or LF can reach an SMTP command line later.
Limits: the message is read whole, at most `defaults.DEFAULT_MAX_MESSAGE_BYTES`.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import os
import re
import sys
from collections.abc import Sequence
from typing import BinaryIO

import click

from delivery import config, storage
from delivery.dns import resolver as dns_resolver
from delivery.engine import attempt
from delivery.errors import ConfigError, DeliveryError
from delivery.queue import model
from delivery.smtp import esmtp, server
from delivery.submit import defaults, planning
from delivery.submit import message as submit_message

__all__ = ["build_message", "build_recipients", "send_command"]

EXIT_FAILED = 1
EXIT_USAGE = 2

_LINE_ENDING = re.compile(rb"\r?\n")


def _address(option: str, text: str, *, empty_ok: bool) -> str:
    """The address of ``--from``/``--to`` text (one pair of angle brackets removed).

    :raises model.InvalidEnvelope: not an RFC 5321 mailbox (``""``/``<>`` for ``--from``).
    """
    address = text.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    if not address and empty_ok:
        return ""
    problem = server.mailbox_problem(address) if address else "it is empty"
    if problem is not None:
        raise model.InvalidEnvelope(option, f"{text!r} is not a valid address: {problem}")
    return address


def build_recipients(
    recipients: Sequence[str], /, *, notify: str | None
) -> list[submit_message.RecipientRequest]:
    """build_recipients - the ``--to`` addresses as recipients, each once.

    :raises model.InvalidEnvelope: a bad address or ``--notify`` value (field = the option).
    """
    keywords: frozenset[model.Notify] = frozenset()
    if notify is not None:
        try:
            keywords = frozenset(model.Notify(k) for k in esmtp.parse_notify(notify))
        except ValueError as exc:
            raise model.InvalidEnvelope("--notify", str(exc)) from exc
    return submit_message.unique_recipients(
        submit_message.RecipientRequest(_address("--to", to, empty_ok=False), keywords)
        for to in recipients
    )


def build_message(
    sender: str,
    recipients: Sequence[submit_message.RecipientRequest],
    content: bytes,
    /,
    *,
    hostname: str,
    received_at: int,
    ret: str | None = None,
    envid: str | None = None,
    requiretls: bool = False,
) -> model.NewMessage:
    """build_message - the message to queue: CRLF line endings, a Received header on top.

    SMTPUTF8 is set when an address or the header section is not ASCII, 8BITMIME when any
    byte is; ``envid`` is stored xtext-encoded, as a client would have sent it.

    :raises model.InvalidEnvelope: a bad ``--from`` or ``--envid`` (field = the option).
    """
    address = _address("--from", sender, empty_ok=True)
    if envid is not None and not (
        envid and envid.isascii() and envid.isprintable() and len(envid) <= esmtp.MAX_ENVID_CHARS
    ):
        raise model.InvalidEnvelope(
            "--envid", f"must be 1 to {esmtp.MAX_ENVID_CHARS} printable ASCII characters"
        )
    body = _LINE_ENDING.sub(b"\r\n", content)
    headers = body.split(b"\r\n\r\n", 1)[0]
    addresses = [address, *(r.address for r in recipients)]
    received = _received(hostname, received_at)
    return model.NewMessage(
        sender=address,
        body=received + body,
        source=model.MessageSource.AUTHENTICATED,
        received_at=received_at,
        env_id=esmtp.xtext(envid) if envid is not None else None,
        ret=model.Ret(ret.upper()) if ret is not None else None,
        smtputf8=not all(a.isascii() for a in addresses) or not headers.isascii(),
        eightbitmime=not body.isascii(),
        requiretls=requiretls,
    )


def _received(hostname: str, at: int) -> bytes:
    """The trace header of a message made on this host (RFC 5321 §4.4: ``by`` only)."""
    moment = datetime.datetime.fromtimestamp(at / 1000, tz=datetime.UTC)
    date = email.utils.format_datetime(moment)
    return f"Received: by {hostname} (delivery send, uid {os.getuid()});\r\n\t{date}\r\n".encode()


async def _enqueue(
    settings: config.Settings,
    message: model.NewMessage,
    recipients: Sequence[submit_message.RecipientRequest],
) -> str:
    """Plan the recipients from the registry's ``schedule`` expression and queue the message.

    The registry (first-start objects included) and the queue share the settings' database
    (`storage.open_stores`: a SQLite file or PostgreSQL).
    """
    resolver = dns_resolver.Resolver.from_settings(settings.dns)
    async with resolver, storage.open_stores(settings, reports=False) as stores:
        plan = planning.make_planner(
            stores.registry.snapshot,
            local_domains=settings.local.domains,
            lookup=attempt.make_lookup(resolver),
        )
        return await stores.queue.enqueue(message, await plan(message, recipients))


def _read(file: BinaryIO, limit: int) -> bytes:
    content = file.read(limit + 1)
    if len(content) > limit:
        raise model.InvalidEnvelope(
            "FILE", f"the message is larger than {limit} octets (the submission size limit)"
        )
    return content


@click.command("send")
@click.option("--from", "sender", required=True, metavar="ADDRESS", help="Envelope sender.")
@click.option(
    "--to",
    "recipients",
    required=True,
    multiple=True,
    metavar="ADDRESS",
    help="Envelope recipient (repeat for more).",
)
@click.argument("file", required=False, default="-", type=click.File("rb"))
@click.option(
    "--config",
    "cfg",
    type=click.Path(dir_okay=False),
    help="Settings file (default: ./delivery.toml if present, else the embedded defaults).",
)
@click.option("--notify", help="DSN NOTIFY for every recipient: NEVER, or SUCCESS,FAILURE,DELAY.")
@click.option(
    "--ret",
    type=click.Choice(["FULL", "HDRS"], case_sensitive=False),
    help="What a failure DSN returns: the FULL message or its HDRS.",
)
@click.option("--envid", help="Envelope id for DSNs (printable ASCII, at most 100 characters).")
@click.option("--requiretls", is_flag=True, help="Deliver only over verified TLS (RFC 8689).")
def send_command(
    sender: str,
    recipients: tuple[str, ...],
    file: BinaryIO,
    cfg: str | None,
    notify: str | None,
    ret: str | None,
    envid: str | None,
    requiretls: bool,
) -> None:
    """Queue a message (from FILE, or stdin) for delivery; prints its id."""
    try:
        settings = config.load(cfg)
        requests = build_recipients(recipients, notify=notify)
        message = build_message(
            sender,
            requests,
            _read(file, defaults.DEFAULT_MAX_MESSAGE_BYTES),
            hostname=settings.hostname,
            received_at=model.now_ms(),
            ret=ret,
            envid=envid,
            requiretls=requiretls,
        )
    except (ConfigError, model.InvalidEnvelope) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    try:
        message_id = asyncio.run(_enqueue(settings, message, requests))
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except (OSError, DeliveryError) as exc:
        click.echo(f"error: the message was not queued: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(message_id)
