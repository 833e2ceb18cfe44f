"""Delivery status notifications (RFC 3464): who gets one, and the message itself.

`dsn_action` decides, for one recipient and one event, which DSN (if any) the
sender gets; `make_dsn` builds the notification for one message and one or more
recipients as a `NewMessage` ready to queue: null return path and source ``dsn``,
so a DSN never causes another DSN. Pure: the clock is passed in, nothing is sent.

Which DSN (RFC 3461 §4.1, §5.2):
    null return path               never any DSN (RFC 5321 §4.5.5)
    NOTIFY=NEVER                   none
    failed                         when NOTIFY has FAILURE, or NOTIFY was not given
    delayed                        when NOTIFY has DELAY, or NOTIFY was not given
    delivered (final delivery)     only when NOTIFY has SUCCESS
    relayed                        SUCCESS asked, next hop did not advertise DSN
    next hop advertised DSN        none from us: it got NOTIFY and reports from there

The message: multipart/report; report-type=delivery-status (RFC 6522) with
    1. text/plain for the sender: each recipient, its status and the reason
       (`Outcome.for_sender`: the operator's rule references left out);
    2. message/delivery-status: Reporting-MTA, Original-Envelope-Id (ENVID),
       Arrival-Date; per recipient Original-Recipient (ORCPT), Final-Recipient,
       Action, Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date and, for
       delayed, Will-Retry-Until;
    3. the original: full message/rfc822 in a failure DSN when RET=FULL and the
       message is at most `DSN_MAX_ORIGINAL_BYTES`; otherwise text/rfc822-headers
       (RET=HDRS, RET absent, delay and success DSNs: RFC 3461 §4.3).
From ``MAILER-DAEMON@<hostname>``, to the envelope sender, ``Auto-Submitted:
auto-replied`` (RFC 3834).

Security:
    Remote replies, addresses, ENVID and ORCPT are attacker-controlled. Every DSN
    field is cleaned of control characters, capped at `DSN_MAX_FIELD_CHARS`, and
    defused of RFC 2047 encoded-word syntax, so nothing can add a header or a
    field. The original's headers are capped at `DSN_MAX_HEADERS_BYTES`.

Standards: RFC 3461, RFC 3462/6522, RFC 3464, RFC 3834, RFC 5321.
Limits: for SMTPUTF8 messages the DSN carries UTF-8 in the usual parts and is
queued as SMTPUTF8; the RFC 6533 types (message/global-delivery-status, utf-8
address type) are not used.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy, utils
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from typing import Final, Literal, TypeAlias

from delivery.engine.outcome import Outcome
from delivery.queue import model
from delivery.smtp.esmtp import decode_xtext  # ENVID and ORCPT are queued as received

__all__ = [
    "DSN_MAX_FIELD_CHARS",
    "DSN_MAX_HEADERS_BYTES",
    "DSN_MAX_ORIGINAL_BYTES",
    "DsnAction",
    "Handoff",
    "RecipientReport",
    "build_report",
    "decode_xtext",
    "dsn_action",
    "make_dsn",
]

DSN_MAX_ORIGINAL_BYTES: Final = 100_000
"""Largest original returned whole (RET=FULL). Returning big attachments doubles the
traffic of every bounce, and of backscatter; larger ones come back as headers only
(truncating a message/rfc822 part would corrupt it)."""

DSN_MAX_HEADERS_BYTES: Final = 65_536
"""Most bytes of the original's header returned, cut at a line end: a header block
bigger than this is abuse, not mail."""

DSN_MAX_FIELD_CHARS: Final = 900
"""Longest DSN field value (a remote reply is the long one): keeps each field on one
line within RFC 5322's 998 characters and the DSN small."""


class DsnAction(enum.StrEnum):
    """RFC 3464 §2.3.3 actions this engine reports (``expanded`` is not used)."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"


class Handoff(enum.Enum):
    """Who reports on a delivered recipient from now on (RFC 3461 §5.2)."""

    FINAL = "final"  # delivered into the mailbox here (local route, LMTP)
    RELAY_DSN = "relay-dsn"  # relayed to a host that advertised DSN: it reports
    RELAY = "relay"  # relayed to a host without DSN: the trail ends here


def dsn_action(
    event: Literal["delivered", "delayed", "failed"],
    /,
    *,
    sender: str,
    notify: frozenset[model.Notify],
    handoff: Handoff = Handoff.RELAY,
) -> DsnAction | None:
    """dsn_action - the DSN a recipient's event calls for, or ``None``.

    :param event: the `Outcome` action (or ``delayed`` at a notify time).
    :param sender: the envelope sender; ``""`` never gets a DSN.
    :param notify: the recipient's NOTIFY keywords, empty when not given.
    :param handoff: for ``delivered``: who took the message.

    >>> dsn_action("failed", sender="a@example.org", notify=frozenset())
    <DsnAction.FAILED: 'failed'>
    >>> dsn_action("failed", sender="", notify=frozenset()) is None
    True
    """
    if not sender or model.Notify.NEVER in notify:
        return None
    match event:
        case "failed":
            asked = not notify or model.Notify.FAILURE in notify
            return DsnAction.FAILED if asked else None
        case "delayed":
            asked = not notify or model.Notify.DELAY in notify
            return DsnAction.DELAYED if asked else None
        case "delivered":
            if model.Notify.SUCCESS not in notify:
                return None
            return {
                Handoff.FINAL: DsnAction.DELIVERED,
                Handoff.RELAY: DsnAction.RELAYED,
                Handoff.RELAY_DSN: None,
            }[handoff]


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """One recipient's lines in a DSN.

    ``orcpt`` is the ORCPT parameter as received (``addr-type;xtext``), ``None``
    when absent. ``reason`` is shown to the sender: plain words, no internal
    references (`Outcome.for_sender`). Times are epoch ms; ``will_retry_until``
    only for delayed.
    """

    address: str
    orcpt: str | None
    action: DsnAction
    status: str
    reason: str
    remote_host: str | None
    remote_reply: str | None
    last_attempt_at: int | None
    will_retry_until: int | None = None

    @classmethod
    def of(
        cls,
        recipient: model.QueuedRecipient,
        outcome: Outcome,
        action: DsnAction,
        /,
        *,
        last_attempt_at: int | None,
        will_retry_until: int | None = None,
    ) -> RecipientReport:
        """The report of a queued recipient from its last outcome (its sender-facing reason)."""
        return cls(
            address=recipient.address,
            orcpt=recipient.orcpt,
            action=action,
            status=outcome.status,
            reason=outcome.for_sender(),
            remote_host=outcome.remote_host,
            remote_reply=outcome.remote_reply,
            last_attempt_at=last_attempt_at,
            will_retry_until=will_retry_until if action is DsnAction.DELAYED else None,
        )


_MESSAGE_ID = re.compile(r"<[!-;=?-~]{1,250}>")  # printable ASCII but < and >, capped
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _field(text: str, /, *, utf8: bool) -> str:
    """Make untrusted text safe as one DSN field value (see Security)."""
    text = _CONTROL.sub(" ", text).strip().replace("=?", "= ?")
    if not utf8:
        text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text[:DSN_MAX_FIELD_CHARS]


def _date(ms: int, /) -> str:
    return utils.format_datetime(datetime.fromtimestamp(ms / 1000, tz=UTC))


_SUBJECTS: Final = {
    DsnAction.FAILED: "Undelivered Mail Returned to Sender",
    DsnAction.DELAYED: "Delayed Mail (still being retried)",
    DsnAction.DELIVERED: "Successful Mail Delivery Report",
    DsnAction.RELAYED: "Successful Mail Delivery Report",
}

_INTRO: Final = {
    DsnAction.FAILED: "Your message could not be delivered to the recipients below.\n"
    "This is a permanent error: the mail system has given up.",
    DsnAction.DELAYED: "Your message has not been delivered yet to the recipients below.\n"
    "The mail system keeps trying; you do not need to send it again.",
    DsnAction.DELIVERED: "Your message was delivered to the recipients below.",
    DsnAction.RELAYED: "Your message was passed on to the recipients' mail system below.\n"
    "That system does not report delivery: this is the last notice you will get.",
}


def _worst(reports: Sequence[RecipientReport], /) -> DsnAction:
    actions = {report.action for report in reports}
    return next(action for action in DsnAction if action in actions)


def _human_text(reports: Sequence[RecipientReport], *, reporting_mta: str, utf8: bool) -> str:
    lines = [f"This is the mail system at {_field(reporting_mta, utf8=utf8)}.", ""]
    for action in DsnAction:
        group = [report for report in reports if report.action is action]
        if not group:
            continue
        lines += [_INTRO[action], ""]
        for report in group:
            lines.append(f"<{_field(report.address, utf8=utf8)}>: {action}, {report.status}")
            lines.append(f"    {_field(report.reason, utf8=utf8)}")
            if report.will_retry_until is not None:
                lines.append(f"    Will retry until {_date(report.will_retry_until)}.")
            lines.append("")
    return "\n".join(lines)


_Policy: TypeAlias = "policy.EmailPolicy[EmailMessage]"  # generic in typeshed only


def _delivery_status(
    message: model.QueuedMessage,
    reports: Sequence[RecipientReport],
    *,
    reporting_mta: str,
    utf8: bool,
    dsn_policy: _Policy,
) -> EmailMessage:
    per_message = Message(policy=dsn_policy)
    per_message["Reporting-MTA"] = f"dns; {_field(reporting_mta, utf8=utf8)}"
    if message.env_id:
        per_message["Original-Envelope-Id"] = _field(decode_xtext(message.env_id), utf8=utf8)
    per_message["Arrival-Date"] = _date(message.received_at)
    blocks: list[Message | str] = [per_message]
    for report in reports:
        block = Message(policy=dsn_policy)
        if report.orcpt and ";" in report.orcpt:
            kind, _, address = report.orcpt.partition(";")
            orcpt = f"{kind.strip()};{decode_xtext(address.strip())}"
            block["Original-Recipient"] = _field(orcpt, utf8=utf8)
        block["Final-Recipient"] = f"rfc822; {_field(report.address, utf8=utf8)}"
        block["Action"] = report.action.value
        block["Status"] = _field(report.status, utf8=False)
        if report.remote_host:
            block["Remote-MTA"] = f"dns; {_field(report.remote_host, utf8=utf8)}"
        if report.remote_reply:
            block["Diagnostic-Code"] = f"smtp; {_field(report.remote_reply, utf8=utf8)}"
        if report.last_attempt_at is not None:
            block["Last-Attempt-Date"] = _date(report.last_attempt_at)
        if report.will_retry_until is not None:
            block["Will-Retry-Until"] = _date(report.will_retry_until)
        blocks.append(block)
    part = EmailMessage(policy=dsn_policy)
    part.set_type("message/delivery-status")
    part.set_payload(blocks)
    del part["MIME-Version"]
    return part


def _original_part(original: bytes, *, full: bool, utf8: bool, dsn_policy: _Policy) -> EmailMessage:
    part = EmailMessage(policy=dsn_policy)
    if full:
        cte = "7bit" if original.isascii() else "8bit"  # message/rfc822 allows no other
        part.set_content(message_from_bytes(original, policy=dsn_policy), cte=cte)
        del part["MIME-Version"]
        return part
    end = original.find(b"\r\n\r\n")
    headers = original if end < 0 else original[: end + 2]
    if len(headers) > DSN_MAX_HEADERS_BYTES:
        cut = headers.rfind(b"\r\n", 0, DSN_MAX_HEADERS_BYTES)
        headers = headers[: cut + 2] if cut > 0 else headers[:DSN_MAX_HEADERS_BYTES]
    text = headers.decode("utf-8", "replace")
    if not utf8:
        text = text.encode("ascii", "replace").decode("ascii")
    part.set_content(text, subtype="rfc822-headers", cte="8bit" if utf8 else "7bit")
    del part["MIME-Version"]
    return part


def _needs_utf8(message: model.QueuedMessage, reports: Sequence[RecipientReport], /) -> bool:
    """SMTPUTF8 originals, and non-ASCII addresses, make a UTF-8 DSN."""
    addresses = (message.sender, *(report.address for report in reports))
    return message.smtputf8 or not all(address.isascii() for address in addresses)


def build_report(
    message: model.QueuedMessage,
    reports: Sequence[RecipientReport],
    /,
    *,
    original: bytes,
    reporting_mta: str,
    now: int,
) -> EmailMessage:
    """build_report - the DSN for ``reports`` about ``message``, as an email message.

    :param original: the queued body (`QueueStore.load_body`).
    :param reporting_mta: this host's name (the ``hostname`` setting).
    :param now: epoch ms, the Date of the DSN.
    :raises ValueError: no reports, or a null sender (which never gets a DSN).
    """
    if not reports:
        raise ValueError("a DSN needs at least one recipient report")
    if not message.sender:
        raise ValueError("the null return path never gets a DSN")
    utf8 = _needs_utf8(message, reports)
    dsn_policy = (policy.SMTPUTF8 if utf8 else policy.SMTP).clone(max_line_length=998)
    worst = _worst(reports)
    full = (
        message.ret is model.Ret.FULL
        and any(report.action is DsnAction.FAILED for report in reports)
        and len(original) <= DSN_MAX_ORIGINAL_BYTES
    )

    dsn = EmailMessage(policy=dsn_policy)
    dsn["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    dsn["To"] = f"<{message.sender}>"
    dsn["Subject"] = _SUBJECTS[worst]
    dsn["Date"] = _date(now)
    dsn["Message-ID"] = utils.make_msgid(idstring=message.id, domain=reporting_mta)
    dsn["Auto-Submitted"] = "auto-replied"
    original_id = str(BytesHeaderParser(policy=policy.compat32).parsebytes(original)["Message-ID"])
    if _MESSAGE_ID.fullmatch(original_id.strip()):
        dsn["In-Reply-To"] = original_id.strip()
        dsn["References"] = original_id.strip()
    dsn.set_content(
        _human_text(reports, reporting_mta=reporting_mta, utf8=utf8),
        cte="8bit" if utf8 else "7bit",
    )
    dsn.make_mixed()
    dsn.set_type("multipart/report")
    dsn.set_param("report-type", "delivery-status")
    dsn.attach(
        _delivery_status(
            message, reports, reporting_mta=reporting_mta, utf8=utf8, dsn_policy=dsn_policy
        )
    )
    dsn.attach(_original_part(original, full=full, utf8=utf8, dsn_policy=dsn_policy))
    return dsn


def make_dsn(
    message: model.QueuedMessage,
    reports: Sequence[RecipientReport],
    /,
    *,
    original: bytes,
    reporting_mta: str,
    now: int,
) -> model.NewMessage:
    """make_dsn - the DSN as a message to queue (null sender, source ``dsn``).

    Arguments and errors as `build_report`. Its single recipient is
    ``message.sender``, queued by the caller with the queue and schedule that the
    ``schedule`` expression picks for source ``dsn``.
    """
    report = build_report(message, reports, original=original, reporting_mta=reporting_mta, now=now)
    body = report.as_bytes()
    return model.NewMessage(
        sender="",
        body=body,
        source=model.MessageSource.DSN,
        received_at=now,
        smtputf8=_needs_utf8(message, reports),
        eightbitmime=not body.isascii(),
    )
