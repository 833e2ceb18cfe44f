"""What the submission listener answers before the message: allowed networks, AUTH, addresses.

`SubmissionPolicy` is the `delivery.smtp.server.Policy` of the listener. Pure: every decision
is made from the session's state (peer, TLS, authenticated identity) and the command's values.

Outcomes (each a `Decision`; the reply names the problem):
    greeting  554 5.7.1   the client's address is outside ``[submission] networks``
    MAIL      530 5.7.0   AUTH is required and the client has not authenticated
              501 5.1.7   the sender is not an RFC 5321 mailbox (`server.mailbox_problem`)
              501 5.5.4   ENVID longer than 100 characters (RFC 3461 §4.4)
    RCPT      501 5.1.3   the recipient is not an RFC 5321 mailbox (`server.mailbox_problem`)
              501 5.5.4   ORCPT longer than 500 characters (RFC 3461 §4.2)
Address refusals count toward the session's error limit.

Security:
    The allowed networks are the first gate; an IPv4 client reaching an IPv6 socket
    (``::ffff:a.b.c.d``) is judged by its IPv4 address. Client data quoted in a reply is cut to
    `MAX_REPLY_TEXT_CHARS` (the core has already refused control characters).

Standards: RFC 5321 §3.1, §4.1.2, §4.5.3.1; RFC 4954 §6 (530); RFC 3461.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from delivery.errors import ConfigError
from delivery.smtp import esmtp, server
from delivery.submit.defaults import MAX_ORCPT_CHARS, MAX_REPLY_TEXT_CHARS

__all__ = ["SubmissionPolicy", "client_address", "parse_networks"]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(networks: Iterable[str], /) -> tuple[IpNetwork, ...]:
    """parse_networks - the allowed networks as values (``10.0.0.0/8``, ``::1/128``, an address).

    :raises ConfigError: ``submission.networks`` names something that is not a network.
    """
    parsed = []
    for text in networks:
        try:
            parsed.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ConfigError("submission.networks", f"{text!r} is not a network: {exc}") from exc
    return tuple(parsed)


def client_address(ip: str, /) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """client_address - the client's address, an IPv4-mapped IPv6 address as plain IPv4.

    >>> str(client_address("::ffff:127.0.0.3")), str(client_address("::1"))
    ('127.0.0.3', '::1')
    """
    address = ipaddress.ip_address(ip.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _cut(text: str) -> str:
    if len(text) <= MAX_REPLY_TEXT_CHARS:
        return text
    return text[: MAX_REPLY_TEXT_CHARS - 3] + "..."


class SubmissionPolicy(server.Policy):
    """The listener's decisions (see the module docstring).

    :param networks: the client networks allowed to submit.
    :param require_auth: refuse MAIL until the client has authenticated (AUTH).
    """

    def __init__(self, networks: Iterable[str], /, *, require_auth: bool = False) -> None:
        self.networks = parse_networks(networks)
        self.require_auth = require_auth

    def admits(self, ip: str, /) -> bool:
        """Whether a client at ``ip`` may submit."""
        address = client_address(ip)
        return any(address in network for network in self.networks)

    def greeting(self, session: server.ServerDialogue, /) -> server.Decision:
        ip = str(client_address(session.peer[0]))
        if self.admits(ip):
            return server.ACCEPT
        text = f"5.7.1 {session.hostname} Access denied: {ip} is not in a network allowed to submit"
        return server.Decision(server.Reply(554, text))

    def mail(
        self, session: server.ServerDialogue, sender: str, params: Mapping[str, str | None], /
    ) -> server.Decision:
        if self.require_auth and session.auth is None:
            return server.Decision(server.Reply(530, "5.7.0 Authentication required"))
        if sender and (problem := server.mailbox_problem(sender)) is not None:
            text = f"5.1.7 Bad sender address syntax: <{sender}>: {problem}"
            return server.Decision(server.Reply(501, _cut(text)), error=True)
        envid = params.get("ENVID")
        if envid is not None and len(envid) > esmtp.MAX_ENVID_CHARS:
            text = f"5.5.4 ENVID is longer than {esmtp.MAX_ENVID_CHARS} characters (RFC 3461 §4.4)"
            return server.Decision(server.Reply(501, text), error=True)
        return server.ACCEPT

    def rcpt(
        self, session: server.ServerDialogue, address: str, params: Mapping[str, str | None], /
    ) -> server.Decision:
        if (problem := server.mailbox_problem(address)) is not None:
            text = f"5.1.3 Bad recipient address syntax: <{address}>: {problem}"
            return server.Decision(server.Reply(501, _cut(text)), error=True)
        orcpt = params.get("ORCPT")
        if orcpt is not None and len(orcpt) > MAX_ORCPT_CHARS:
            text = f"5.5.4 ORCPT is longer than {MAX_ORCPT_CHARS} characters (RFC 3461 §4.2)"
            return server.Decision(server.Reply(501, text), error=True)
        return server.ACCEPT
