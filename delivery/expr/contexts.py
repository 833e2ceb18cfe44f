"""Evaluation contexts: which variables each strategy expression may read (DESIGN §4).

``route`` and ``schedule`` are evaluated per recipient (RCPT); ``connection`` and ``tls`` per
MX host (HOST), which adds the host being connected to.

Variables (the engine fills them; one missing at run time reads as ""):
    rcpt, rcpt_domain        the recipient address and its domain
    recipients               every recipient address of the message (array)
    sender, sender_domain    the envelope sender and its domain ("" for the null sender)
    priority                 the message priority (integer)
    retry_num, notify_num    delivery attempts and delay notices so far (integers)
    expires_in               milliseconds until the message expires
    last_status              the last SMTP reply or status text for this recipient
    last_error               none, dns, unexpected-reply, connection, tls, dane, mta-sts,
                             rate, concurrency or io
    queue_name               the virtual queue of the recipient
    queue_age                milliseconds since the message was queued
    received_from_ip         the address the message was submitted from
    received_via_port        the port it was submitted to (integer)
    source                   authenticated, unauthenticated, dsn or report
    size                     the message size in bytes
    mx, remote_ip, local_ip  HOST only: the MX host name, its address, our source address
"""

from __future__ import annotations

import enum

__all__ = ["Context", "variables_of"]


class Context(enum.Enum):
    """Where an expression is evaluated; decides its variables."""

    RCPT = "rcpt"
    HOST = "host"


_RCPT_VARIABLES = frozenset(
    {
        "rcpt",
        "rcpt_domain",
        "recipients",
        "sender",
        "sender_domain",
        "priority",
        "retry_num",
        "notify_num",
        "expires_in",
        "last_status",
        "last_error",
        "queue_name",
        "queue_age",
        "received_from_ip",
        "received_via_port",
        "source",
        "size",
    }
)
_HOST_VARIABLES = _RCPT_VARIABLES | {"mx", "remote_ip", "local_ip"}

_VARIABLES = {Context.RCPT: _RCPT_VARIABLES, Context.HOST: _HOST_VARIABLES}


def variables_of(context: Context) -> frozenset[str]:
    """The variable names expressions of ``context`` may read.

    >>> sorted(variables_of(Context.HOST) - variables_of(Context.RCPT))
    ['local_ip', 'mx', 'remote_ip']
    """
    return _VARIABLES[context]
