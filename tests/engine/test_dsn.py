"""DSNs: who gets one (a table), and every RFC 3464 field as the email package parses it."""

from __future__ import annotations

import dataclasses
from email import message_from_bytes, message_from_string, policy
from email.message import EmailMessage, Message
from typing import Any, Literal

import pytest

from delivery.engine import dsn, outcome
from delivery.engine.dsn import DsnAction, Handoff
from delivery.errors import LastError
from delivery.queue import model

T0 = 1_700_000_000_000  # Tue, 14 Nov 2023 22:13:20 +0000
HOST = "mta.example.org"
N = model.Notify
ORIGINAL = (
    b"Message-ID: <orig-1@example.org>\r\nFrom: Sender <sender@example.org>\r\n"
    b"To: rcpt@example.com\r\nSubject: quarterly report\r\n\r\n"
    b"The body text.\r\n"
)


# --- who gets which DSN -----------------------------------------------------------------

Event = Literal["delivered", "delayed", "failed"]
ABSENT: frozenset[model.Notify] = frozenset()
SENDER = "s@example.org"
FAILURE, DELAY, SUCCESS = frozenset({N.FAILURE}), frozenset({N.DELAY}), frozenset({N.SUCCESS})
NEVER = frozenset({N.NEVER})
RELAY, RELAY_DSN, FINAL = Handoff.RELAY, Handoff.RELAY_DSN, Handoff.FINAL
ACTION_CASES: list[tuple[str, Event, str, frozenset[model.Notify], Handoff, DsnAction | None]] = [
    # label, event, sender, notify, handoff, expected
    ("failure, NOTIFY absent", "failed", SENDER, ABSENT, RELAY, DsnAction.FAILED),
    ("failure, NOTIFY=FAILURE", "failed", SENDER, FAILURE, RELAY, DsnAction.FAILED),
    ("failure, NOTIFY=DELAY only", "failed", SENDER, DELAY, RELAY, None),
    ("failure, NOTIFY=SUCCESS only", "failed", SENDER, SUCCESS, RELAY, None),
    ("delay, NOTIFY absent", "delayed", SENDER, ABSENT, RELAY, DsnAction.DELAYED),
    ("delay, NOTIFY=DELAY,FAILURE", "delayed", SENDER, DELAY | FAILURE, RELAY, DsnAction.DELAYED),
    ("delay, NOTIFY=FAILURE only", "delayed", SENDER, FAILURE, RELAY, None),
    ("success, NOTIFY absent", "delivered", SENDER, ABSENT, FINAL, None),
    ("success asked, final delivery", "delivered", SENDER, SUCCESS, FINAL, DsnAction.DELIVERED),
    ("success asked, next hop lacks DSN", "delivered", SENDER, SUCCESS, RELAY, DsnAction.RELAYED),
    ("success asked, next hop has DSN", "delivered", SENDER, SUCCESS, RELAY_DSN, None),
    ("success not asked, relayed", "delivered", SENDER, FAILURE | DELAY, RELAY, None),
    ("NOTIFY=NEVER, failure", "failed", SENDER, NEVER, RELAY, None),
    ("NOTIFY=NEVER, delay", "delayed", SENDER, NEVER, RELAY, None),
    ("NOTIFY=NEVER, success", "delivered", SENDER, NEVER, FINAL, None),
    ("null sender, failure", "failed", "", ABSENT, RELAY, None),
    ("null sender, delay", "delayed", "", DELAY, RELAY, None),
    ("null sender, success", "delivered", "", SUCCESS, FINAL, None),
]


@pytest.mark.parametrize(
    ("label", "event", "sender", "notify", "handoff", "expected"),
    ACTION_CASES,
    ids=[case[0] for case in ACTION_CASES],
)
def test_dsn_action(
    label: str,
    event: Event,
    sender: str,
    notify: frozenset[model.Notify],
    handoff: Handoff,
    expected: DsnAction | None,
) -> None:
    assert dsn.dsn_action(event, sender=sender, notify=notify, handoff=handoff) is expected


# --- the DSN message --------------------------------------------------------------------


def queued(
    *,
    sender: str = "sender@example.org",
    ret: model.Ret | None = None,
    env_id: str | None = "ENV+2B42",
    smtputf8: bool = False,
    original: bytes = ORIGINAL,
) -> model.QueuedMessage:
    return model.QueuedMessage(
        id="018bcfe568009f3a1b2c3d4e5f60718",
        sender=sender,
        size=len(original),
        source=model.MessageSource.AUTHENTICATED,
        received_at=T0,
        received_from_ip="192.0.2.1",
        received_via_port=587,
        priority=0,
        env_id=env_id,
        ret=ret,
        smtputf8=smtputf8,
        eightbitmime=False,
        requiretls=False,
        recipients=(),
    )


def report(action: DsnAction, **fields: Any) -> dsn.RecipientReport:
    defaults: dict[str, Any] = {
        "address": "rcpt@example.com",
        "orcpt": "rfc822;Rcpt+2BTag@Example.com",
        "action": action,
        "status": {"failed": "5.1.1", "delayed": "4.4.1"}.get(action, "2.0.0"),
        "reason": "mx1.example.com[192.0.2.7] said: 550 5.1.1 no such user (in reply to RCPT TO)",
        "remote_host": "mx1.example.com",
        "remote_reply": "550 5.1.1 no such user",
        "last_attempt_at": T0 + 60_000,
        "will_retry_until": T0 + 3 * 86_400_000 if action is DsnAction.DELAYED else None,
    }
    return dsn.RecipientReport(**(defaults | fields))


def parse(
    message: model.QueuedMessage,
    reports: list[dsn.RecipientReport],
    original: bytes = ORIGINAL,
) -> tuple[model.NewMessage, EmailMessage]:
    new = dsn.make_dsn(message, reports, original=original, reporting_mta=HOST, now=T0 + 120_000)
    if new.smtputf8:  # RFC 6532 headers: UTF-8 text, which the bytes parser would escape
        parsed = message_from_string(new.body.decode("utf-8"), policy=policy.default)
    else:
        parsed = message_from_bytes(new.body, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return new, parsed


def parts(parsed: EmailMessage) -> tuple[str, list[Message], EmailMessage]:
    """The human text, the delivery-status blocks and the original part."""
    human, status, original = (part for part in parsed.iter_parts())
    assert isinstance(human, EmailMessage) and isinstance(original, EmailMessage)
    assert human.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    return str(human.get_content()), [b for b in blocks if isinstance(b, Message)], original


def fields(block: Message) -> dict[str, str]:
    return {name: str(value) for name, value in block.items()}


def test_failure_dsn_carries_every_rfc3464_field() -> None:
    new, parsed = parse(queued(), [report(DsnAction.FAILED)])

    assert (new.sender, new.source, new.received_at) == ("", model.MessageSource.DSN, T0 + 120_000)
    assert parsed["From"] == f"Mail Delivery System <MAILER-DAEMON@{HOST}>"
    assert parsed["To"].addresses[0].addr_spec == "sender@example.org"
    assert parsed["Subject"] == "Undelivered Mail Returned to Sender"
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["Date"] == "Tue, 14 Nov 2023 22:15:20 +0000"
    assert parsed["In-Reply-To"] == "<orig-1@example.org>"
    assert parsed["Message-ID"].endswith(f"@{HOST}>")
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"

    human, (per_message, per_rcpt), original = parts(parsed)

    assert fields(per_message) == {
        "Reporting-MTA": f"dns; {HOST}",
        "Original-Envelope-Id": "ENV+42",
        "Arrival-Date": "Tue, 14 Nov 2023 22:13:20 +0000",
    }
    assert fields(per_rcpt) == {
        "Original-Recipient": "rfc822;Rcpt+Tag@Example.com",
        "Final-Recipient": "rfc822; rcpt@example.com",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; mx1.example.com",
        "Diagnostic-Code": "smtp; 550 5.1.1 no such user",
        "Last-Attempt-Date": "Tue, 14 Nov 2023 22:14:20 +0000",
    }
    assert "<rcpt@example.com>: failed, 5.1.1" in human
    assert "mx1.example.com[192.0.2.7] said: 550 5.1.1 no such user (in reply to RCPT TO)" in human
    assert original.get_content_type() == "text/rfc822-headers"


def test_delay_dsn_says_until_when_it_retries() -> None:
    _, parsed = parse(queued(), [report(DsnAction.DELAYED, remote_reply=None, remote_host=None)])

    human, (_, per_rcpt), _ = parts(parsed)

    assert parsed["Subject"] == "Delayed Mail (still being retried)"
    assert (per_rcpt["Action"], per_rcpt["Status"]) == ("delayed", "4.4.1")
    assert per_rcpt["Will-Retry-Until"] == "Fri, 17 Nov 2023 22:13:20 +0000"
    assert per_rcpt["Remote-MTA"] is None and per_rcpt["Diagnostic-Code"] is None
    assert "you do not need to send it again" in human
    assert "Will retry until Fri, 17 Nov 2023 22:13:20 +0000." in human


@pytest.mark.parametrize(
    ("action", "words"),
    [
        (DsnAction.DELIVERED, "was delivered"),
        (DsnAction.RELAYED, "does not report delivery"),
    ],
)
def test_success_dsns(action: DsnAction, words: str) -> None:
    success = report(action, remote_reply="250 2.0.0 queued as 4XYZ", reason="delivered")

    _, parsed = parse(queued(ret=model.Ret.FULL), [success])
    human, (_, per_rcpt), original = parts(parsed)

    assert parsed["Subject"] == "Successful Mail Delivery Report"
    assert (per_rcpt["Action"], per_rcpt["Status"]) == (action.value, "2.0.0")
    assert per_rcpt["Diagnostic-Code"] == "smtp; 250 2.0.0 queued as 4XYZ"
    assert per_rcpt["Will-Retry-Until"] is None
    assert words in human
    assert original.get_content_type() == "text/rfc822-headers"  # RET=FULL is for failures


@pytest.mark.parametrize(
    ("ret", "original", "returned"),
    [
        (None, ORIGINAL, "headers"),
        (model.Ret.HDRS, ORIGINAL, "headers"),
        (model.Ret.FULL, ORIGINAL, "full"),
        (model.Ret.FULL, ORIGINAL + b"x" * dsn.DSN_MAX_ORIGINAL_BYTES, "headers"),
    ],
)
def test_ret_chooses_what_comes_back(ret: model.Ret | None, original: bytes, returned: str) -> None:
    _, parsed = parse(queued(ret=ret, original=original), [report(DsnAction.FAILED)], original)
    _, _, part = parts(parsed)

    if returned == "full":
        assert part.get_content_type() == "message/rfc822"
        inner = part.get_content()
        assert isinstance(inner, EmailMessage)
        assert inner["Subject"] == "quarterly report"
        assert inner.get_content().rstrip() == "The body text."
    else:
        assert part.get_content_type() == "text/rfc822-headers"
        text = part.get_content()
        assert "Subject: quarterly report" in text
        assert "The body text." not in text


def test_optional_fields_are_left_out_when_absent() -> None:
    bare = report(DsnAction.FAILED, orcpt=None, remote_host=None, remote_reply=None)
    bare = dataclasses.replace(bare, last_attempt_at=None)

    _, parsed = parse(queued(env_id=None), [bare])
    _, (per_message, per_rcpt), _ = parts(parsed)

    assert "Original-Envelope-Id" not in per_message
    assert list(fields(per_rcpt)) == ["Final-Recipient", "Action", "Status"]


def test_one_dsn_can_report_several_recipients() -> None:
    reports = [
        report(DsnAction.DELAYED, address="later@example.com"),
        report(DsnAction.FAILED, address="gone@example.net"),
    ]
    _, parsed = parse(queued(), reports)
    human, (_, *per_rcpt), _ = parts(parsed)

    assert parsed["Subject"] == "Undelivered Mail Returned to Sender"
    assert [(b["Final-Recipient"], b["Action"]) for b in per_rcpt] == [
        ("rfc822; later@example.com", "delayed"),
        ("rfc822; gone@example.net", "failed"),
    ]
    assert human.index("gone@example.net") < human.index("later@example.com")  # worst first


def test_a_hostile_reply_cannot_add_fields_or_headers() -> None:
    hostile = "550 no\r\nAction: delivered\r\n\r\nX-Injected: =?utf-8?q?evil?= " + "z" * 5000
    _, parsed = parse(queued(), [report(DsnAction.FAILED, remote_reply=hostile)])

    _, (_, per_rcpt), _ = parts(parsed)

    assert per_rcpt.get_all("Action") == ["failed"]
    assert "X-Injected" not in per_rcpt and "X-Injected" not in parsed
    diagnostic = per_rcpt["Diagnostic-Code"]
    assert diagnostic.startswith("smtp; 550 no Action: delivered X-Injected: = ?utf-8?q?evil?=")
    assert len(diagnostic) <= len("smtp; ") + dsn.DSN_MAX_FIELD_CHARS


def test_eight_bit_and_smtputf8_originals_set_the_dsn_flags() -> None:
    latin = ORIGINAL.replace(b"The body text.", b"Caf\xc3\xa9 au lait.")
    full = queued(ret=model.Ret.FULL, original=latin)
    eight, _ = parse(full, [report(DsnAction.FAILED)], latin)
    utf8_message = queued(sender="expéditeur@exemple.fr", smtputf8=True)
    utf8, parsed = parse(utf8_message, [report(DsnAction.FAILED, address="dés@exemple.fr")])
    plain, _ = parse(queued(), [report(DsnAction.FAILED)])

    assert (eight.eightbitmime, eight.smtputf8) == (True, False)
    assert (utf8.smtputf8, utf8.eightbitmime) == (True, True)
    assert parsed["To"].addresses[0].addr_spec == "expéditeur@exemple.fr"
    assert parts(parsed)[1][1]["Final-Recipient"] == "rfc822; dés@exemple.fr"
    assert (plain.eightbitmime, plain.smtputf8) == (False, False)


def test_original_headers_are_capped() -> None:
    huge = b"".join(b"X-Filler-%06d: %s\r\n" % (n, b"y" * 60) for n in range(2000))
    original = huge + b"\r\nbody\r\n"
    _, parsed = parse(queued(original=original), [report(DsnAction.FAILED)], original)

    text = parts(parsed)[2].get_content()

    assert len(text.encode()) <= dsn.DSN_MAX_HEADERS_BYTES
    assert text.endswith("\n") and "X-Filler-000000" in text


@pytest.mark.parametrize(
    ("message", "reports"),
    [(queued(sender=""), [report(DsnAction.FAILED)]), (queued(), [])],
    ids=["null sender", "no reports"],
)
def test_no_dsn_for_the_null_sender_or_nobody(
    message: model.QueuedMessage, reports: list[dsn.RecipientReport]
) -> None:
    with pytest.raises(ValueError):
        dsn.make_dsn(message, reports, original=ORIGINAL, reporting_mta=HOST, now=T0)


def test_report_of_a_queued_recipient_and_its_outcome() -> None:
    rcpt = model.QueuedRecipient(
        id=7, message_id="m", address="a@example.com", domain="example.com",
        status=model.RecipientStatus.SCHEDULED, due=T0, retry_num=3, notify_num=0,
        notify_due=None, expires_at=None, max_attempts=5, queue="remote", schedule="remote",
        last_error=LastError.CONNECTION, last_status="", notify=frozenset(),
        orcpt="rfc822;a@example.com", lease_owner=None, lease_until=None,
    )  # fmt: skip
    failure = outcome.transport_failure(
        outcome.Stage.CONNECT, "refused", remote_host="mx1.example.com", remote_ip="192.0.2.7"
    )
    result = outcome.make_outcome(failure, outcome.decide(failure, final_host=True))

    delayed = dsn.RecipientReport.of(
        rcpt, result, DsnAction.DELAYED, last_attempt_at=T0, will_retry_until=T0 + 1
    )
    failed = dsn.RecipientReport.of(
        rcpt, result, DsnAction.FAILED, last_attempt_at=T0, will_retry_until=T0 + 1
    )

    assert (delayed.address, delayed.orcpt, delayed.status) == (
        "a@example.com",
        "rfc822;a@example.com",
        "4.4.1",
    )
    assert delayed.reason.startswith("connecting to mx1.example.com[192.0.2.7] was refused")
    assert (delayed.remote_host, delayed.remote_reply) == ("mx1.example.com", None)
    assert (delayed.will_retry_until, failed.will_retry_until) == (T0 + 1, None)


def test_the_sender_reads_what_happened_without_our_rule_numbers() -> None:
    rcpt = model.QueuedRecipient(
        id=7, message_id="m", address="a@example.com", domain="example.com",
        status=model.RecipientStatus.SCHEDULED, due=T0, retry_num=3, notify_num=0,
        notify_due=None, expires_at=None, max_attempts=5, queue="remote", schedule="remote",
        last_error=LastError.NONE, last_status="", notify=frozenset(), orcpt=None,
        lease_owner=None, lease_until=None,
    )  # fmt: skip
    refused = outcome.reply_failure(
        outcome.Stage.RCPT, 550, "5.1.1 no such user", remote_host="mx1.example.com",
        remote_ip="192.0.2.7",
    )  # fmt: skip
    bounced = outcome.make_outcome(refused, outcome.decide(refused, final_host=True))
    busy = outcome.reply_failure(
        outcome.Stage.RCPT, 451, "4.3.0 later", remote_host="mx1.example.com", remote_ip=None
    )
    expired = outcome.expired(
        outcome.make_outcome(busy, outcome.decide(busy, final_host=True)),
        reason="gave up after 5 attempts",
    )
    assert "(rule 6)" in bounced.reason and "(rule 6)" in expired.reason  # for operators

    reports = [
        dsn.RecipientReport.of(rcpt, bounced, DsnAction.FAILED, last_attempt_at=T0),
        dsn.RecipientReport.of(
            dataclasses.replace(rcpt, id=8, address="b@example.com"),
            expired,
            DsnAction.FAILED,
            last_attempt_at=T0,
        ),
    ]
    _, parsed = parse(queued(), reports)
    human, blocks, _ = parts(parsed)

    assert "rule" not in human
    assert "mx1.example.com[192.0.2.7] said: 550 5.1.1 no such user (in reply to RCPT TO)" in human
    assert (
        "gave up after 5 attempts; last problem: mx1.example.com said: 451 4.3.0 later "
        "(in reply to RCPT TO)" in human
    )
    assert fields(blocks[1])["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
