"""From a message a client sent to what the queue stores: envelope, parameters, Received header.

Pure: the clock and our port are arguments. `new_message` turns a
`delivery.smtp.server.ReceivedMessage` into a `delivery.queue.model.NewMessage` (Received
header prepended, MAIL parameters decoded) and `recipient_requests` its RCPTs into
`RecipientRequest` values (NOTIFY decoded, ORCPT kept as received, duplicates dropped); the
intake then asks a `PlanRecipients` for each recipient's queue, schedule and expiry.

Outcomes: values. The server core has already validated every parameter's syntax, so
decoding here cannot fail on input the core let through.

Security:
    The EHLO name goes into the Received header only when it is a domain or an address
    literal (`esmtp.check_ehlo_name`); otherwise ``unknown`` stands in, so a client cannot put
    arbitrary text into a header. The client's address and TLS details come from our side of
    the connection.

Standards: RFC 5321 §4.4 (Received), RFC 3848 and RFC 6531 §4.3 (``with`` protocol names),
RFC 5322 §2.2.3 (folding), RFC 3461 (RET, ENVID, NOTIFY, ORCPT), RFC 6152, RFC 8689.
Limits: no ``id`` clause (the queue id is assigned by the store, after the header is
written); ``for`` only with a single recipient (more would disclose the Bcc list).
"""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Awaitable, Callable, Iterable, Sequence

from delivery.queue import model
from delivery.queue.model import RecipientRequest
from delivery.smtp import esmtp, server
from delivery.smtp.errors import InvalidArgument
from delivery.submit.policy import client_address

__all__ = [
    "HEADER_LINE_CHARS",
    "PlanRecipients",
    "RecipientRequest",
    "address_literal",
    "new_message",
    "protocol_name",
    "received_header",
    "recipient_requests",
    "unique_recipients",
]

HEADER_LINE_CHARS = 78
"""RFC 5322 §2.1.1: lines SHOULD be at most 78 characters; the header is folded to fit."""


PlanRecipients = Callable[
    [model.NewMessage, Sequence[RecipientRequest]], Awaitable[list[model.NewRecipient]]
]
"""``plan(message, recipients)``: the recipients to queue, in order, each with the virtual
queue, schedule, first due time and expiry the ``schedule`` expression chose for it. The
daemon wires the engine's intake planner (`delivery.submit.planning.make_planner`); it may
raise `delivery.errors.DeliveryError` (e.g. a failed lookup) to refuse the message with 451,
or `model.InvalidEnvelope` for an address that cannot be queued (554)."""


def address_literal(ip: str, /) -> str:
    """address_literal - the RFC 5321 §4.1.3 literal of an IP address.

    >>> address_literal("192.0.2.1"), address_literal("::1"), address_literal("::ffff:10.0.0.1")
    ('[192.0.2.1]', '[IPv6:::1]', '[10.0.0.1]')
    """
    address = client_address(ip)
    return f"[IPv6:{address}]" if address.version == 6 else f"[{address}]"


def protocol_name(message: server.ReceivedMessage, /) -> str:
    """protocol_name - the ``with`` keyword of the Received header (RFC 3848, RFC 6531 §4.3).

    SMTP after HELO, ESMTP after EHLO, UTF8SMTP for an SMTPUTF8 transaction; then S for TLS
    and A for an authenticated client: ESMTPS, ESMTPA, ESMTPSA, UTF8SMTPSA...
    """
    base = "ESMTP" if message.esmtp else "SMTP"
    if "SMTPUTF8" in message.mail_params:
        base = "UTF8SMTP"
    suffix = ("S" if message.tls is not None else "") + ("A" if message.auth is not None else "")
    return base + suffix


def _fold(words: Sequence[str]) -> str:
    """Join ``words`` with spaces, folding before a word that would pass HEADER_LINE_CHARS."""
    lines = [words[0]]
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) > HEADER_LINE_CHARS:
            lines.append("\t" + word)
        else:
            lines[-1] += " " + word
    return "\r\n".join(lines) + "\r\n"


def received_header(message: server.ReceivedMessage, /, *, hostname: str, at: int) -> bytes:
    """received_header - the RFC 5321 §4.4 trace header for ``message``, CRLF included.

    :param hostname: our name (the ``by`` clause).
    :param at: when the message was received, epoch ms (the date).
    """
    literal = address_literal(message.peer[0])
    helo = message.ehlo or ""
    try:
        esmtp.check_ehlo_name(helo)
    except InvalidArgument:
        helo = "unknown"
    words = ["Received:", "from", helo, f"({literal})", "by", hostname, "(delivery)"]
    words += ["with", protocol_name(message)]
    if message.tls is not None:
        words += ["(using", message.tls.version, "with", "cipher", f"{message.tls.cipher})"]
    if len(message.rcpts) == 1:
        words += ["for", f"<{message.rcpts[0].address}>"]
    moment = datetime.datetime.fromtimestamp(at / 1000, tz=datetime.UTC)
    words[-1] += ";"
    words.append(email.utils.format_datetime(moment))  # one word: never folded inside
    text = _fold(words)
    return text.encode("utf-8" if "SMTPUTF8" in message.mail_params else "ascii", "replace")


def new_message(
    message: server.ReceivedMessage, /, *, hostname: str, received_at: int, local_port: int
) -> model.NewMessage:
    """new_message - what the queue stores for a message a client sent.

    The source is ``authenticated`` when the client authenticated (AUTH), else
    ``unauthenticated``; the body gets a Received header on top.

    :param hostname: our name, for the Received header.
    :param received_at: epoch ms.
    :param local_port: the port the client connected to (``received_via_port``).
    """
    params = message.mail_params
    ret = params.get("RET")
    source = (
        model.MessageSource.AUTHENTICATED
        if message.auth is not None
        else model.MessageSource.UNAUTHENTICATED
    )
    return model.NewMessage(
        sender=message.mail_from,
        body=received_header(message, hostname=hostname, at=received_at) + message.body,
        source=source,
        received_at=received_at,
        received_from_ip=str(client_address(message.peer[0])),
        received_via_port=local_port,
        env_id=params.get("ENVID"),
        ret=model.Ret(ret.upper()) if ret is not None else None,
        smtputf8="SMTPUTF8" in params,
        eightbitmime=(params.get("BODY") or "").upper() == "8BITMIME",
        requiretls="REQUIRETLS" in params,
    )


def unique_recipients(requests: Iterable[RecipientRequest], /) -> list[RecipientRequest]:
    """unique_recipients - ``requests`` in order, each address once.

    An address given twice (the domain compared without case; the local part is
    case-sensitive, RFC 5321 §2.4) is queued once, with the parameters it had first.

    >>> [r.address for r in unique_recipients(
    ...     [RecipientRequest("a@X.org"), RecipientRequest("a@x.ORG"), RecipientRequest("A@x.org")]
    ... )]
    ['a@X.org', 'A@x.org']
    """
    seen: set[str] = set()
    unique = []
    for request in requests:
        local, at, domain = request.address.rpartition("@")
        key = f"{local}{at}{domain.lower()}"
        if key not in seen:
            seen.add(key)
            unique.append(request)
    return unique


def recipient_requests(message: server.ReceivedMessage, /) -> list[RecipientRequest]:
    """recipient_requests - the message's recipients with their DSN parameters, each once
    (`unique_recipients`)."""
    requests = []
    for rcpt in message.rcpts:
        notify_value = rcpt.params.get("NOTIFY")
        notify = esmtp.parse_notify(notify_value) if notify_value is not None else ()
        requests.append(
            RecipientRequest(
                rcpt.address,
                frozenset(model.Notify(keyword) for keyword in notify),
                rcpt.params.get("ORCPT"),
            )
        )
    return unique_recipients(requests)
