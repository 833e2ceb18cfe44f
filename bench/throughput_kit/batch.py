"""The batch both engines deliver in bench.throughput: same senders, recipients and bytes.

Message ``n`` (0-based) goes from `SENDER` to ``r<n>@d<n % 10>.bench.test``: one recipient
each, spread evenly over the ten `DOMAINS`, whose MX hosts (`mx_host`) all point at the sink.
Its content is `MESSAGE_BYTES` long: a few headers, a ``Subject:`` (the Postfix sender holds
messages on it), and lines of text; no line starts with "." (so it needs no dot-stuffing when
written to ``sendmail -bs``).

Outcomes: pure functions; the same ``n`` always gives the same message.
"""

from __future__ import annotations

__all__ = [
    "DOMAINS",
    "DOMAIN_COUNT",
    "MESSAGE_BYTES",
    "SENDER",
    "content",
    "mx_host",
    "recipient",
]

DOMAIN_COUNT = 10
DOMAINS = tuple(f"d{n}.bench.test" for n in range(DOMAIN_COUNT))
"""The recipient domains (RFC 6761 .test: never resolvable outside the benchmark)."""

SENDER = "bench@sender.bench.test"

MESSAGE_BYTES = 2048
"""Size of every message's content (headers and body, CRLF line ends), about 2 KB."""

_LINE = b"The quick brown fox jumps over the lazy dog, and the benchmark counts it. 0123456789"


def mx_host(domain: str, /) -> str:
    """The MX host of ``domain`` (every one has its own name and the sink's address).

    >>> mx_host("d3.bench.test")
    'mx.d3.bench.test'
    """
    return f"mx.{domain}"


def recipient(n: int, /) -> str:
    """The recipient of message ``n``.

    >>> recipient(12)
    'r12@d2.bench.test'
    """
    return f"r{n}@{DOMAINS[n % DOMAIN_COUNT]}"


def content(n: int, /) -> bytes:
    """The content of message ``n``: exactly `MESSAGE_BYTES` bytes, CRLF line ends.

    >>> len(content(7)), content(7).startswith(b"From: ")
    (2048, True)
    """
    head = (
        f"From: Bench <{SENDER}>\r\n"
        f"To: <{recipient(n)}>\r\n"
        f"Subject: bench message {n}\r\n"
        f"Message-ID: <bench.{n}@sender.bench.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    ).encode()
    lines = []
    size = len(head)
    while size + len(_LINE) + 2 <= MESSAGE_BYTES - 2:
        lines.append(_LINE)
        size += len(_LINE) + 2
    last = b"x" * (MESSAGE_BYTES - size - 2)  # the rest, so that every message is the same size
    body = b"".join(line + b"\r\n" for line in [*lines, last])
    return head + body
