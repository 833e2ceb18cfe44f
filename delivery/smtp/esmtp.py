"""ESMTP extensions and the envelope commands (pure).

`parse_extensions` reads an EHLO/LHLO reply into a keyword -> parameters
table. `format_mail` and `format_rcpt` build the MAIL FROM and RCPT TO command
lines for an `Envelope`, adding each ESMTP parameter only when the server
announced the extension that defines it, and `missing_extensions` names what a
message needs but the server lacks; `decode_xtext` and `parse_notify` read the
DSN parameter values a client sent us (the server side). No I/O:
`delivery.smtp.session` sends the bytes.

Parameters, and when they are sent:
    SIZE=<octets>      SIZE announced (RFC 1870)
    BODY=8BITMIME      envelope.body_8bit and 8BITMIME announced (RFC 6152)
    SMTPUTF8           envelope.smtputf8; SMTPUTF8 must be announced (RFC 6531)
    RET=, ENVID=       DSN announced and the envelope asks (RFC 3461 §4.3, §4.4)
    REQUIRETLS         envelope.requiretls; must be announced (RFC 8689)
    NOTIFY=, ORCPT=    DSN announced and the recipient asks (RFC 3461 §4.1, §4.2)

Security:
    Addresses and ENVID come from messages, i.e. from users. A CR or LF in an
    address would end the command line and let its author inject commands;
    `InvalidArgument` is raised for any control character, for "<" and ">",
    and for non-ASCII without SMTPUTF8. xtext-encoded values (ENVID, ORCPT)
    cannot carry a space, "=" or control characters by construction.

Standards: RFC 5321 §4.1.1.2-3, RFC 1869, RFC 1870, RFC 3461, RFC 6152,
RFC 6531, RFC 8689.
Limits: ORCPT is always sent as "rfc822;" + xtext of the UTF-8 address
(RFC 6533's utf-8-addr-xtext is not used).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from delivery.smtp.errors import InvalidArgument
from delivery.smtp.reply import Reply

__all__ = [
    "MAX_ENVID_CHARS",
    "Envelope",
    "Notify",
    "Recipient",
    "check_ehlo_name",
    "decode_xtext",
    "format_mail",
    "format_rcpt",
    "missing_extensions",
    "parse_extensions",
    "parse_notify",
    "xtext",
]

MAX_ENVID_CHARS = 100
"""RFC 3461 §4.4: an ENVID longer than 100 characters may be refused; we refuse it first."""

Notify = Literal["NEVER", "SUCCESS", "FAILURE", "DELAY"]

_KEYWORD = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)(?: +(.*))?")
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f<>]")
_EHLO_NAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]|\[IPv6:[0-9A-Fa-f:.]+\]"
)


def parse_extensions(reply: Reply, /) -> dict[str, str]:
    """Return the extensions an EHLO/LHLO reply announces: KEYWORD -> parameters.

    The first line is the server's greeting text, not an extension. Keywords
    are upper-cased; parameters are kept as sent ("" when there are none).
    Lines that are not ``keyword [SP params]`` (RFC 5321 §4.1.1.1) are ignored,
    and the first announcement of a keyword wins. The table's size is bounded
    by `MAX_REPLY_LINES`.

    >>> r = Reply(250, None, ("mx.example.com", "SIZE 1000", "pipelining"))
    >>> parse_extensions(r)
    {'SIZE': '1000', 'PIPELINING': ''}
    """
    extensions: dict[str, str] = {}
    for line in reply.lines[1:]:
        match = _KEYWORD.fullmatch(line.strip())
        if match is not None:
            extensions.setdefault(match.group(1).upper(), (match.group(2) or "").strip())
    return extensions


def check_ehlo_name(name: str, /) -> str:
    """Return `name` if it may follow EHLO/HELO/LHLO: a domain or an address literal.

    :raises InvalidArgument: anything else (spaces, CR/LF, empty...).
    """
    if not _EHLO_NAME.fullmatch(name):
        raise InvalidArgument("ehlo name", f"{name!r} is not a domain name or address literal")
    return name


def xtext(value: str, /) -> str:
    """Encode `value` as RFC 3461 §4 xtext: "+" "=" and non-printables become "+HH".

    >>> xtext("a+b=c d")
    'a+2Bb+3Dc+20d'
    """
    return "".join(
        chr(byte) if 33 <= byte <= 126 and byte not in (0x2B, 0x3D) else f"+{byte:02X}"
        for byte in value.encode("utf-8")
    )


_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")


def decode_xtext(value: str, /) -> str:
    """Decode RFC 3461 §4 xtext: each "+HH" is the octet HH; the octets are read as UTF-8.

    The inverse of `xtext`. Invalid UTF-8 becomes U+FFFD; a "+" not followed by two
    uppercase hex digits is kept as it is (the server core refuses such values first).

    >>> decode_xtext("a+2Bb+3Dc+20d"), decode_xtext("J+C3+BCrg")
    ('a+b=c d', 'Jürg')
    """
    octets = bytearray()
    position = 0
    for match in _XTEXT_HEX.finditer(value):
        octets += value[position : match.start()].encode("utf-8")
        octets.append(int(match.group(1), 16))
        position = match.end()
    octets += value[position:].encode("utf-8")
    return octets.decode("utf-8", "replace")


def parse_notify(value: str, /) -> tuple[Notify, ...]:
    """The keywords of a NOTIFY value (RFC 3461 §4.1), uppercased, in a stable order.

    >>> parse_notify("delay,Failure")
    ('FAILURE', 'DELAY')

    :raises ValueError: an unknown keyword, a repeated one, or NEVER with another.
    """
    words = [word.strip().upper() for word in value.split(",")]
    order: tuple[Notify, ...] = ("NEVER", "SUCCESS", "FAILURE", "DELAY")
    unknown = [word for word in words if word not in order]
    if unknown:
        raise ValueError(
            f"unknown NOTIFY keyword {unknown[0]!r}: use NEVER or SUCCESS,FAILURE,DELAY"
        )
    if len(set(words)) != len(words):
        raise ValueError(f"NOTIFY {value!r} repeats a keyword")
    if "NEVER" in words and len(words) > 1:
        raise ValueError("NOTIFY=NEVER cannot be combined with other keywords")
    return tuple(keyword for keyword in order if keyword in words)


@dataclass(frozen=True, slots=True)
class Recipient:
    """One envelope recipient.

    :param address: the forward-path, without angle brackets.
    :param notify: DSN NOTIFY values (RFC 3461 §4.1); empty: do not send NOTIFY.
        ("NEVER",) or any of SUCCESS, FAILURE, DELAY.
    :param orcpt: the original recipient address for ORCPT, or None.
    """

    address: str
    notify: tuple[Notify, ...] = ()
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """What MAIL FROM and RCPT TO carry for one message.

    :param sender: the reverse-path without brackets; "" is the null sender (DSNs).
    :param recipients: in the order RCPT TO is sent; at least one.
    :param smtputf8: the message needs SMTPUTF8 (non-ASCII addresses or headers).
    :param body_8bit: the body has 8-bit content (BODY=8BITMIME when offered).
    :param requiretls: the message carries the REQUIRETLS flag (RFC 8689).
    :param dsn_ret: RET= value, or None not to send it.
    :param dsn_envid: ENVID= value (printable ASCII), or None not to send it.
    """

    sender: str
    recipients: tuple[Recipient, ...]
    smtputf8: bool = False
    body_8bit: bool = False
    requiretls: bool = False
    dsn_ret: Literal["FULL", "HDRS"] | None = None
    dsn_envid: str | None = None

    def __post_init__(self) -> None:
        if not self.recipients:
            raise InvalidArgument("recipients", "an envelope needs at least one recipient")
        _check_address("sender", self.sender, smtputf8=self.smtputf8, empty_ok=True)
        for rcpt in self.recipients:
            _check_address("recipient", rcpt.address, smtputf8=self.smtputf8, empty_ok=False)
            if rcpt.orcpt is not None:
                _check_address("orcpt", rcpt.orcpt, smtputf8=True, empty_ok=False)
            if "NEVER" in rcpt.notify and len(rcpt.notify) > 1:
                raise InvalidArgument("notify", "NEVER cannot be combined with other values")
        if self.dsn_envid is not None:
            if (
                not self.dsn_envid
                or not self.dsn_envid.isascii()
                or not self.dsn_envid.isprintable()
            ):
                raise InvalidArgument("envid", "ENVID must be printable ASCII")
            if len(self.dsn_envid) > MAX_ENVID_CHARS:
                raise InvalidArgument("envid", f"ENVID is longer than {MAX_ENVID_CHARS} characters")


def _check_address(what: str, address: str, *, smtputf8: bool, empty_ok: bool) -> None:
    if not address and not empty_ok:
        raise InvalidArgument(what, "address is empty")
    if _UNSAFE_CHARS.search(address):
        raise InvalidArgument(what, f"{address!r} contains a control character, '<' or '>'")
    if not smtputf8 and not address.isascii():
        raise InvalidArgument(what, f"{address!r} is not ASCII and the message is not SMTPUTF8")


def missing_extensions(envelope: Envelope, extensions: Mapping[str, str], /) -> tuple[str, ...]:
    """Name the extensions `envelope` requires that `extensions` lacks, in a stable order.

    >>> missing_extensions(Envelope("a@x", (Recipient("b@y"),), requiretls=True), {})
    ('REQUIRETLS',)
    """
    needed = (("SMTPUTF8", envelope.smtputf8), ("REQUIRETLS", envelope.requiretls))
    return tuple(ext for ext, wanted in needed if wanted and ext not in extensions)


def _encode(line: str, envelope: Envelope) -> bytes:
    return (line + "\r\n").encode("utf-8" if envelope.smtputf8 else "ascii")


def format_mail(envelope: Envelope, extensions: Mapping[str, str], size: int, /) -> bytes:
    """Build the MAIL FROM line, CRLF included.

    :param extensions: what the server announced (`parse_extensions`).
    :param size: the message size in octets, for SIZE=.

    >>> format_mail(Envelope("a@x", (Recipient("b@y"),), body_8bit=True), {"SIZE": ""}, 42)
    b'MAIL FROM:<a@x> SIZE=42\\r\\n'
    """
    params: list[str] = []
    if "SIZE" in extensions:
        params.append(f"SIZE={size}")
    if envelope.body_8bit and "8BITMIME" in extensions:
        params.append("BODY=8BITMIME")
    if envelope.smtputf8 and "SMTPUTF8" in extensions:
        params.append("SMTPUTF8")
    if "DSN" in extensions:
        if envelope.dsn_ret is not None:
            params.append(f"RET={envelope.dsn_ret}")
        if envelope.dsn_envid is not None:
            params.append(f"ENVID={xtext(envelope.dsn_envid)}")
    if envelope.requiretls and "REQUIRETLS" in extensions:
        params.append("REQUIRETLS")
    return _encode(" ".join([f"MAIL FROM:<{envelope.sender}>", *params]), envelope)


def format_rcpt(
    envelope: Envelope, recipient: Recipient, extensions: Mapping[str, str], /
) -> bytes:
    """Build one RCPT TO line, CRLF included.

    >>> format_rcpt(Envelope("", (Recipient("b@y", ("FAILURE",), "b@y"),)),
    ...             Recipient("b@y", ("FAILURE",), "b@y"), {"DSN": ""})
    b'RCPT TO:<b@y> NOTIFY=FAILURE ORCPT=rfc822;b@y\\r\\n'
    """
    params: list[str] = []
    if "DSN" in extensions:
        if recipient.notify:
            params.append("NOTIFY=" + ",".join(recipient.notify))
        if recipient.orcpt is not None:
            params.append("ORCPT=rfc822;" + xtext(recipient.orcpt))
    return _encode(" ".join([f"RCPT TO:<{recipient.address}>", *params]), envelope)
