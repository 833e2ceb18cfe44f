"""The variables strategy expressions read (DESIGN §4), built from a queued message.

``route`` and ``schedule`` see the rcpt variables of one recipient; ``connection`` and ``tls``
see the host variables: the same plus the MX host, its address and our source address. Pure:
the clock is an argument, nothing is looked up.

Outcomes:
    rcpt_variables()  a fresh dict of every rcpt variable, each of its documented type
    host_variables()  a fresh dict: the rcpt variables plus ``mx``, ``remote_ip``, ``local_ip``

Meanings where DESIGN §4 leaves room (also in the README):
    recipients   the recipients the engine holds with this one: those of the same message and
                 domain due together (one lease), not every recipient the message ever had
    expires_in   milliseconds until the recipient's TTL expiry, 0 once past it, and 0 for a
                 schedule that expires by attempts (no time is known)
    queue_age    milliseconds since the message was queued
    mx           the MX host name without the trailing dot; for a Relay route the relay's
                 address as configured; "" for a Local route
    local_ip     the source address the connection strategy binds, "" when the kernel chooses
                 (expressions are evaluated before connecting)

Security: every value comes from the queue (hence from a submitter) as plain data; expressions
cannot reach anything else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from delivery.expr import Value
from delivery.queue import model

__all__ = ["host_variables", "new_rcpt_variables", "rcpt_variables"]


def rcpt_variables(
    message: model.QueuedMessage,
    recipient: model.QueuedRecipient,
    /,
    *,
    now: int,
    recipients: Sequence[str] | None = None,
) -> dict[str, Value]:
    """rcpt_variables - the rcpt context of ``recipient`` of ``message`` at ``now`` (epoch ms).

    :param recipients: the addresses for ``recipients``; by default those ``message`` holds.
    """
    addresses = (
        list(recipients) if recipients is not None else [r.address for r in message.recipients]
    )
    return {
        "rcpt": recipient.address,
        "rcpt_domain": recipient.domain,
        "recipients": list[Value](addresses),
        "retry_num": recipient.retry_num,
        "notify_num": recipient.notify_num,
        "expires_in": 0 if recipient.expires_at is None else max(0, recipient.expires_at - now),
        "last_status": recipient.last_status,
        "last_error": str(recipient.last_error),
        "queue_name": recipient.queue,
        **_message_variables(message, size=message.size, now=now),
    }


def new_rcpt_variables(
    message: model.NewMessage, address: str, /, *, recipients: Sequence[str], now: int
) -> dict[str, Value]:
    """new_rcpt_variables - the rcpt context of a recipient about to be queued.

    For the ``schedule`` (and ``route``) expression at intake: no attempt yet (``retry_num``
    0, ``last_error`` none), not in a queue yet (``queue_name`` ""), no expiry known yet
    (``expires_in`` 0).
    """
    return {
        "rcpt": address,
        "rcpt_domain": address.rpartition("@")[2].lower(),
        "recipients": list[Value](recipients),
        "retry_num": 0,
        "notify_num": 0,
        "expires_in": 0,
        "last_status": "",
        "last_error": "none",
        "queue_name": "",
        **_message_variables(message, size=len(message.body), now=now),
    }


def _message_variables(
    message: model.NewMessage | model.QueuedMessage, /, *, size: int, now: int
) -> dict[str, Value]:
    """The rcpt variables that come from the message, whether queued or about to be."""
    sender = message.sender
    return {
        "sender": sender,
        "sender_domain": sender.rpartition("@")[2].lower() if "@" in sender else "",
        "priority": message.priority,
        "queue_age": max(0, now - message.received_at),
        "received_from_ip": message.received_from_ip,
        "received_via_port": message.received_via_port,
        "source": str(message.source),
        "size": size,
    }


def host_variables(
    rcpt: Mapping[str, Value], /, *, mx: str, remote_ip: str, local_ip: str
) -> dict[str, Value]:
    """host_variables - the host context: the rcpt variables plus the host being connected to.

    >>> host_variables({"rcpt": "a@b.test"}, mx="mx1.b.test.", remote_ip="192.0.2.1",
    ...                local_ip="")["mx"]
    'mx1.b.test'
    """
    return {**rcpt, "mx": mx.rstrip("."), "remote_ip": remote_ip, "local_ip": local_ip}
