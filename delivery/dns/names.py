"""Domain names and nameserver addresses, normalised once.

Every name the resolver takes or returns goes through `normalize_name`:
absolute (trailing dot) and lowercase, IDNs as A-labels, so that cache keys,
CNAME chains and policy comparisons never differ by case or a missing dot.
Nameservers are IP literals with a port; a host name is refused because
resolving it would need the system resolver, which delivery never uses.

Outcomes:
    normalize_name     "Example.TEST" -> "example.test."; InvalidName otherwise
    parse_nameserver   "127.0.0.1:53", "[::1]:5353", "127.0.0.1" -> (host, port);
                       ConfigError("dns.nameservers", reason) otherwise
    format_nameserver  the inverse of parse_nameserver

Standards: RFC 1035 §2.3.4 (name and label lengths), RFC 4343 (case), RFC 5891 (IDNA).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

import dns.exception
import dns.name

from delivery.errors import ConfigError, DeliveryError

__all__ = [
    "DEFAULT_DNS_PORT",
    "MAX_NAME_WIRE_OCTETS",
    "InvalidName",
    "format_nameserver",
    "normalize_name",
    "parse_nameserver",
]

DEFAULT_DNS_PORT = 53
"""The port of a nameserver written without one (RFC 1035 §4.2)."""

MAX_NAME_WIRE_OCTETS: Final = 255
"""A name's length on the wire, length octets and the root label included (RFC 1035 §2.3.4)."""

_PLAIN_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?")
"""Names dnspython would give back unchanged but for case: ASCII letters, digits, hyphen and
underscore, labels of 1-63 octets, no escapes. The fast path of `normalize_name` (every DNS
lookup and every cache hit passes there); anything else goes through dnspython."""


class InvalidName(DeliveryError, ValueError):
    """Text that cannot be a domain name (empty label, label over 63 or name over 255 octets).

    :param name: the text as given.
    :param reason: what is wrong with it.
    """

    def __init__(self, name: str, reason: str, /) -> None:
        super().__init__(name, reason)
        self.name, self.reason = name, reason

    def __str__(self) -> str:
        return f"invalid domain name {self.name!r}: {self.reason}"


def normalize_name(text: str) -> str:
    """Return `text` as an absolute lowercase domain name.

    >>> normalize_name("MX1.Example.Test")
    'mx1.example.test.'
    >>> normalize_name(".")
    '.'

    :raises InvalidName: when `text` is empty or not a valid name.
    """
    if not text:
        raise InvalidName(text, "empty")
    if _PLAIN_NAME.fullmatch(text):
        absolute = text[-1] == "."
        # Wire length: one length octet per label, plus the root's: len + 2, or len + 1
        # when the text already ends with the root's dot.
        if len(text) + (1 if absolute else 2) <= MAX_NAME_WIRE_OCTETS:
            return text.lower() if absolute else f"{text.lower()}."
    try:
        return dns.name.from_text(text).to_text().lower()
    except dns.exception.DNSException as exc:
        raise InvalidName(text, str(exc) or type(exc).__name__) from exc


def parse_nameserver(text: str) -> tuple[str, int]:
    """Parse a `[dns] nameservers` entry into (IP literal, port).

    >>> parse_nameserver("127.0.0.1:5353")
    ('127.0.0.1', 5353)
    >>> parse_nameserver("[::1]:53")
    ('::1', 53)
    >>> parse_nameserver("127.0.0.1")
    ('127.0.0.1', 53)

    :raises ConfigError: field ``dns.nameservers`` when the entry is not an IP
        address with an optional port 1-65535.
    """
    host, port_text = text.strip(), ""
    if host.startswith("["):
        host, bracket, port_text = host[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ConfigError("dns.nameservers", f"{text!r}: expected [IPv6]:port")
        port_text = port_text[1:]
    elif host.count(":") == 1:  # IPv4:port; a bare IPv6 address has several colons
        host, _, port_text = host.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            "dns.nameservers",
            f"{text!r}: a nameserver must be an IP address (a host name would need "
            "the system resolver)",
        ) from None
    if not port_text:
        return str(address), DEFAULT_DNS_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError("dns.nameservers", f"{text!r}: port must be 1-65535")
    return str(address), int(port_text)


def format_nameserver(nameserver: tuple[str, int], /) -> str:
    """Write (host, port) as parse_nameserver reads it.

    >>> format_nameserver(("::1", 53))
    '[::1]:53'
    """
    host, port = nameserver
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
