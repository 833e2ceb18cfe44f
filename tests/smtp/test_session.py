"""Client sessions against harness receivers (and scripted servers for what they do not model)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from delivery.errors import LastError
from delivery.harness.smtp_script import Extensions
from delivery.harness.smtp_server import SmtpReceiver
from delivery.smtp.errors import InvalidArgument, UnexpectedReply
from delivery.smtp.esmtp import Envelope, Recipient
from delivery.smtp.session import SmtpSession
from tests.smtp.common import MX_IP, MX_NAME, SOURCE_IP, TIMEOUTS, connect
from tests.smtp.servers import Behaviour, Dialect, ScriptedServer, idle_421, respond

MakeMx = Callable[..., Awaitable[SmtpReceiver]]
StartScripted = Callable[[Behaviour], Awaitable[ScriptedServer]]

ENVELOPE = Envelope("sender@example.org", (Recipient("rcpt@example.com"),))


def normalised(body: bytes) -> bytes:
    body = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    return body if not body or body.endswith(b"\r\n") else body + b"\r\n"


async def test_plain_delivery(make_mx: MakeMx) -> None:
    mx = await make_mx()
    session = await connect(mx.address)
    assert session.greeting is not None and session.greeting.code == 220
    await session.ehlo("client.example.org")
    result = await session.send(ENVELOPE, b"Subject: hello\r\n\r\nHello.\r\n")
    await session.quit()

    assert [r.code for _, r in result.per_recipient()] == [250]
    assert session.closed and not session.is_tls
    [message] = mx.received
    assert (message.mail_from, message.rcpt_tos) == ("sender@example.org", ["rcpt@example.com"])
    assert message.body == b"Subject: hello\r\n\r\nHello.\r\n"
    assert message.tls is None and message.ehlo == "client.example.org"


async def test_ehlo_extensions(make_mx: MakeMx) -> None:
    mx = await make_mx(extensions=Extensions(size=10240000, chunking=True))
    async with await connect(mx.address) as session:
        reply = await session.ehlo("client.example.org")
        assert reply.lines[0] == f"{MX_NAME} greets client.example.org"
        assert session.extensions == {
            "PIPELINING": "",
            "SIZE": "10240000",
            "ENHANCEDSTATUSCODES": "",
            "8BITMIME": "",
            "DSN": "",
            "SMTPUTF8": "",
            "CHUNKING": "",
        }
        assert session.supports("pipelining") and session.supports("SIZE")
        assert not session.supports("STARTTLS") and not session.supports("REQUIRETLS")


async def test_helo_fallback_when_ehlo_is_refused(scripted: StartScripted) -> None:
    server = await scripted(respond(Dialect(replies={"EHLO": "502 5.5.1 what is EHLO?"})))
    async with await connect(server.address) as session:
        reply = await session.ehlo("client.example.org")
        assert reply.code == 250 and session.extensions == {}
        result = await session.send(ENVELOPE, b"x")
        assert result.final[0][1].code == 250
    conn = server.conns[0]
    assert conn.lines[:3] == [
        "EHLO client.example.org",
        "HELO client.example.org",
        "MAIL FROM:<sender@example.org>",
    ]


@pytest.mark.parametrize(
    ("replies", "fragment"),
    [
        ({"EHLO": "421 4.3.2 busy"}, "refused EHLO: 421 4.3.2 busy"),  # 4xx: no HELO fallback
        ({"EHLO": "500 no", "HELO": "550 5.7.1 go away"}, "refused EHLO (500 no) and HELO: 550"),
    ],
)
async def test_ehlo_refused(
    scripted: StartScripted, replies: dict[str, str], fragment: str
) -> None:
    server = await scripted(respond(Dialect(replies=replies)))
    session = await connect(server.address)
    with pytest.raises(UnexpectedReply) as caught:
        await session.ehlo("client.example.org")
    assert caught.value.kind is LastError.UNEXPECTED_REPLY and caught.value.phase == "ehlo"
    assert fragment in str(caught.value) and f"{MX_NAME}[{MX_IP}]" in str(caught.value)
    await session.quit()


async def test_greeting_refused_is_classified_and_quits(scripted: StartScripted) -> None:
    server = await scripted(respond(Dialect(replies={"GREETING": "554 5.7.1 no service for you"})))
    with pytest.raises(UnexpectedReply) as caught:
        await connect(server.address)
    error = caught.value
    assert (error.phase, error.kind, error.reply and error.reply.code) == (
        "greeting",
        LastError.UNEXPECTED_REPLY,
        554,
    )
    peer = f"{MX_NAME}[{MX_IP}]:{server.address[1]}"
    assert str(error) == f"{peer} refused the session: 554 5.7.1 no service for you"
    assert server.conns[0].lines == ["QUIT"]


async def test_source_ip_binding(make_mx: MakeMx) -> None:
    mx = await make_mx()
    async with await connect(mx.address, source_ip=SOURCE_IP) as session:
        assert session.local_ip == SOURCE_IP and session.remote_ip == MX_IP
        await session.ehlo("client.example.org")
        await session.send(ENVELOPE, b"x")
    assert mx.received[0].peer[0] == SOURCE_IP


async def test_rset_reuses_the_connection_for_a_second_message(make_mx: MakeMx) -> None:
    mx = await make_mx()
    async with await connect(mx.address) as session:
        await session.ehlo("client.example.org")
        await session.send(ENVELOPE, b"first")
        await session.reset()
        second = Envelope("other@example.org", (Recipient("rcpt2@example.com"),))
        result = await session.send(second, b"second")
        assert result.final[0][1].code == 250
    assert mx.connections == 1 and mx.commands.count("RSET") == 1
    assert [(m.mail_from, m.body) for m in mx.received] == [
        ("sender@example.org", b"first\r\n"),
        ("other@example.org", b"second\r\n"),
    ]


SMUGGLING_BODIES = [
    b"Subject: a\n\nhello\n.\nMAIL FROM:<evil@example.net>\nRCPT TO:<victim@example.com>\n"
    b"DATA\nevil\n.\n",
    b"Subject: a\r\n\r\nhello\r\n.\r\nMAIL FROM:<evil@example.net>\r\n",
    b"Subject: a\r\n\r\nhello\r.\rMAIL FROM:<evil@example.net>\r",
    b"Subject: a\r\n\r\nhello\n.\r\nQUIT\r\n",
    b"Subject: a\r\n\r\nhello\r\n.\nRSET\n",
    b"no final newline",
    b"",
]


@pytest.mark.parametrize("body", SMUGGLING_BODIES)
async def test_bare_cr_lf_and_dots_arrive_as_one_message(make_mx: MakeMx, body: bytes) -> None:
    mx = await make_mx()
    async with await connect(mx.address) as session:
        await session.ehlo("client.example.org")
        result = await session.send(ENVELOPE, body)
        assert result.final[0][1].code == 250
        await session.reset()  # still in step with the server after the message
    [message] = mx.received
    assert message.body == normalised(body)
    assert message.mail_from == "sender@example.org"
    assert [c.split(":")[0] for c in mx.commands if c.startswith(("MAIL", "RCPT"))] == [
        "MAIL FROM",
        "RCPT TO",
    ]


async def test_only_ip_literals_are_connected_to() -> None:
    with pytest.raises(InvalidArgument):
        await SmtpSession.connect("mx1.example.test", 25, server_name=MX_NAME, timeouts=TIMEOUTS)


async def test_unsolicited_reply_before_a_command_is_classified(scripted: StartScripted) -> None:
    # The server says 421 (shutting down) on its own, after the EHLO reply.
    server = await scripted(idle_421)
    session = await connect(server.address)
    await session.ehlo("client.example.org")
    with pytest.raises(UnexpectedReply) as caught:
        await session.send(ENVELOPE, b"x")
    assert caught.value.phase == "mail" and caught.value.reply is not None
    assert caught.value.reply.code == 421 and session.closed


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_timeouts_must_be_positive_milliseconds(bad: Any) -> None:
    with pytest.raises(InvalidArgument):
        dataclasses.replace(TIMEOUTS, rcpt_to=bad)
