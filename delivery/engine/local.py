"""Local delivery: one message into one recipient's maildir under the data folder.

The `Local` route (DESIGN §3) delivers mail for the configured local domains without SMTP: the
message is written to ``<data_dir>/maildir/<domain>/<local part>/`` in the maildir format
(qmail's maildir(5)): written and fsynced under ``tmp/``, then renamed into ``new/``, and the
``new/`` directory fsynced, so that a reader never sees a partial message and a crash never
loses one that was reported delivered.

Outcomes:
    deliver() returns the path of the file in ``new/``; it is durable when deliver returns.
    OSError (disk full, permissions) propagates: the caller turns it into a temporary failure
    of kind io, never a bounce.

Security:
    The recipient address comes from a submitter. The domain and local part never reach the
    file system as given: every byte outside a conservative set is percent-encoded, and a
    leading dot is encoded too, so no name can be ``..``, hidden, or contain ``/``.

Standards: maildir(5) (tmp/new/cur, unique names); RFC 5322 (Return-Path, Delivered-To
trace headers are prepended); stored with LF line ends, as maildir readers expect.
Limits: no user database: every local part of a local domain is accepted; no quota.
"""

from __future__ import annotations

import itertools
import os
import socket
import string
import time
from pathlib import Path

__all__ = ["MAILDIR_FOLDER", "deliver", "mailbox_path", "safe_name"]

MAILDIR_FOLDER = "maildir"
"""The folder under the data folder that holds one maildir per local recipient."""

MAX_NAME_BYTES = 200
"""Longest encoded domain or local part kept as a directory name (file systems cap at 255)."""

_SAFE = frozenset(string.ascii_letters + string.digits + "-_+=.")
_counter = itertools.count()


def safe_name(text: str, /) -> str:
    """A directory name for an address part: conservative bytes kept, the rest %-encoded.

    >>> safe_name("Alice.Smith+tag"), safe_name("../etc"), safe_name("a/b c")
    ('Alice.Smith+tag', '%2E.%2Fetc', 'a%2Fb%20c')
    """
    encoded = "".join(
        chr(byte) if chr(byte) in _SAFE else f"%{byte:02X}" for byte in text.encode("utf-8")
    )
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    if not encoded:
        encoded = "%00"
    return encoded[:MAX_NAME_BYTES]


def mailbox_path(data_dir: Path, recipient: str, /) -> Path:
    """The maildir of ``recipient``: ``<data_dir>/maildir/<domain>/<local part>``.

    The domain is case-folded (DNS names are case-insensitive); the local part is kept as
    given (RFC 5321 §2.4: only the receiving host may interpret its case).
    """
    local, _, domain = recipient.rpartition("@")
    return data_dir / MAILDIR_FOLDER / safe_name(domain.lower()) / safe_name(local)


def deliver(data_dir: Path, recipient: str, data: bytes, /, *, return_path: str) -> Path:
    """deliver - write ``data`` durably into the maildir of ``recipient``; returns the file.

    Blocking (file I/O and fsync): run it in a thread from async code.

    :param data: the message as queued (CRLF line ends); stored with LF line ends.
    :param return_path: the envelope sender, "" for a null return path.
    :raises OSError: the message could not be written; nothing is left in ``new/``.
    """
    box = mailbox_path(data_dir, recipient)
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    name = _unique_name()
    tmp, new = box / "tmp" / name, box / "new" / name
    trace = f"Return-Path: <{return_path}>\nDelivered-To: {recipient}\n".encode()
    body = data.replace(b"\r\n", b"\n")
    try:
        with open(tmp, "xb") as file:
            file.write(trace + body)
            file.flush()
            os.fsync(file.fileno())
        os.rename(tmp, new)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(box / "new")
    return new


def _unique_name() -> str:
    """``<seconds>.M<microseconds>P<pid>Q<counter>.<host>``, unique per maildir(5)."""
    now = time.time()
    seconds, micros = int(now), int((now % 1) * 1_000_000)
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{seconds}.M{micros}P{os.getpid()}Q{next(_counter)}.{host}"


def _fsync_dir(path: Path) -> None:
    """Make the rename into ``new/`` durable (the directory entry is data too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
