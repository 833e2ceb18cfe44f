"""From what a client sent to what the queue stores: parameters, recipients, Received header."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from delivery.queue import model
from delivery.smtp.server import ReceivedMessage, Recipient, TlsInfo
from delivery.submit import message as submit_message
from delivery.submit.message import RecipientRequest

T0 = 1_700_000_000_000  # Tue, 14 Nov 2023 22:13:20 +0000
TLS = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")


def received(
    params: dict[str, str | None] | None = None,
    rcpts: tuple[tuple[str, dict[str, str | None]], ...] = (("b@example.test", {}),),
    **fields: object,
) -> ReceivedMessage:
    values: dict[str, object] = {
        "mail_from": "a@origin.test",
        "mail_params": MappingProxyType(params or {}),
        "rcpts": tuple(Recipient(a, MappingProxyType(p)) for a, p in rcpts),
        "body": b"Subject: t\r\n\r\nhi\r\n",
        "tls": None,
        "ehlo": "client.test",
        "peer": ("192.0.2.7", 40000),
    }
    values.update(fields)
    return ReceivedMessage(**values)  # type: ignore[arg-type]


PROTOCOLS = [  # (esmtp, SMTPUTF8, TLS, authenticated) -> "with" keyword
    (False, False, False, False, "SMTP"),
    (True, False, False, False, "ESMTP"),
    (True, False, True, False, "ESMTPS"),
    (True, False, False, True, "ESMTPA"),
    (True, False, True, True, "ESMTPSA"),
    (True, True, False, False, "UTF8SMTP"),
    (True, True, True, True, "UTF8SMTPSA"),
]


@pytest.mark.parametrize(("esmtp", "utf8", "tls", "auth", "expected"), PROTOCOLS)
def test_protocol_name(esmtp: bool, utf8: bool, tls: bool, auth: bool, expected: str) -> None:
    message = received(
        {"SMTPUTF8": None} if utf8 else {},
        esmtp=esmtp,
        tls=TLS if tls else None,
        auth="app" if auth else None,
    )
    assert submit_message.protocol_name(message) == expected


def test_received_header_exactly() -> None:
    header = submit_message.received_header(received(), hostname="mta.example.org", at=T0)
    assert header == (
        b"Received: from client.test ([192.0.2.7]) by mta.example.org (delivery) with\r\n"
        b"\tESMTP for <b@example.test>; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    )


def test_received_header_with_tls_folds_within_78_characters() -> None:
    message = received(tls=TLS, auth="app", rcpts=(("b@x.test", {}), ("c@x.test", {})))
    header = submit_message.received_header(message, hostname="mta.example.org", at=T0)
    lines = header.decode().split("\r\n")
    assert lines[-1] == "" and all(len(line) <= 78 for line in lines)
    assert all(line.startswith("\t") for line in lines[1:-1])
    unfolded = header.decode().replace("\r\n\t", " ")
    assert "with ESMTPSA (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384);" in unfolded
    assert " for " not in unfolded  # two recipients: none named


@pytest.mark.parametrize(
    ("ehlo", "peer", "expected"),
    [
        ("[192.0.2.7]", "192.0.2.7", b"from [192.0.2.7] ([192.0.2.7])"),
        ("bad name\\x", "192.0.2.7", b"from unknown ([192.0.2.7])"),
        (None, "2001:db8::1", b"from unknown ([IPv6:2001:db8::1])"),
        ("c.test", "::ffff:192.0.2.9", b"from c.test ([192.0.2.9])"),
    ],
)
def test_received_header_from_clause(ehlo: str | None, peer: str, expected: bytes) -> None:
    message = received(ehlo=ehlo, peer=(peer, 1))
    header = submit_message.received_header(message, hostname="m.test", at=T0)
    assert header.startswith(b"Received: " + expected)


def test_new_message_decodes_parameters_and_keeps_envid_as_sent() -> None:
    message = received(
        {"RET": "hdrs", "ENVID": "AbC+2Bd", "BODY": "8bitmime", "REQUIRETLS": None},
        peer=("::ffff:192.0.2.9", 40000),
        auth="app",
    )
    new = submit_message.new_message(message, hostname="m.test", received_at=T0, local_port=587)
    assert (new.sender, new.source, new.received_at) == (
        "a@origin.test",
        model.MessageSource.AUTHENTICATED,
        T0,
    )
    assert (new.received_from_ip, new.received_via_port) == ("192.0.2.9", 587)
    assert (new.env_id, new.ret, new.eightbitmime, new.requiretls, new.smtputf8) == (
        "AbC+2Bd",
        model.Ret.HDRS,
        True,
        True,
        False,
    )
    assert new.body.startswith(b"Received: from client.test ([192.0.2.9])")
    assert new.body.endswith(b"\r\nSubject: t\r\n\r\nhi\r\n")


def test_new_message_without_parameters() -> None:
    new = submit_message.new_message(
        received({"BODY": "7BIT"}), hostname="m.test", received_at=T0, local_port=25
    )
    assert new.source is model.MessageSource.UNAUTHENTICATED
    assert (new.env_id, new.ret, new.eightbitmime, new.requiretls) == (None, None, False, False)


def test_recipients_decode_notify_keep_orcpt_and_are_queued_once() -> None:
    message = received(
        rcpts=(
            ("Bob@Example.test", {"NOTIFY": "delay,Failure", "ORCPT": "rfc822;Bob+2B1@x"}),
            ("Bob@example.TEST", {"NOTIFY": "NEVER"}),
            ("bob@example.test", {}),
        )
    )
    assert submit_message.recipient_requests(message) == [
        RecipientRequest(
            "Bob@Example.test",
            frozenset({model.Notify.DELAY, model.Notify.FAILURE}),
            "rfc822;Bob+2B1@x",
        ),
        RecipientRequest("bob@example.test"),
    ]
