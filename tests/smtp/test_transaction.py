"""Mail transactions: PIPELINING, per-recipient results, ESMTP parameters, LMTP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from delivery.errors import LastError
from delivery.harness.smtp_script import Extensions
from delivery.harness.smtp_server import SmtpReceiver
from delivery.smtp import tls
from delivery.smtp.errors import ExtensionNotOffered, InvalidArgument
from delivery.smtp.esmtp import Envelope, Recipient
from delivery.smtp.reply import Reply
from delivery.smtp.session import MAX_RECIPIENTS_PER_TRANSACTION, TransactionResult
from tests.smtp.common import MX_NAME, connect
from tests.smtp.servers import Behaviour, Dialect, ScriptedServer, respond

MakeMx = Callable[..., Awaitable[SmtpReceiver]]
StartScripted = Callable[[Behaviour], Awaitable[ScriptedServer]]

TWO = Envelope("s@example.org", (Recipient("good@example.com"), Recipient("bad@example.com")))
ALL_BAD = Envelope("s@example.org", (Recipient("bad@example.com"), Recipient("worse@example.com")))
REJECT = {"bad@example.com": "550 5.1.1 no such user", "worse@example.com": "450 4.2.1 try later"}


async def deliver(
    server: ScriptedServer, envelope: Envelope, body: bytes = b"hi"
) -> TransactionResult:
    async with await connect(server.address) as session:
        await session.ehlo("client.example.org")
        return await session.send(envelope, body)


async def test_pipelining_sends_the_envelope_in_one_group(scripted: StartScripted) -> None:
    # This server answers nothing until DATA has arrived: a client that waited for the
    # MAIL FROM reply before sending RCPT TO would time out here.
    server = await scripted(respond(Dialect(extensions=("PIPELINING",), hold_until_data=True)))
    result = await deliver(server, TWO)
    conn = server.conns[0]
    group = conn.lines[1:5]
    assert group == [
        "MAIL FROM:<s@example.org>",
        "RCPT TO:<good@example.com>",
        "RCPT TO:<bad@example.com>",
        "DATA",
    ]
    assert len(set(conn.chunk_of_line[1:5])) == 1  # one read on the server: one write
    assert [r.code for _, r in result.per_recipient()] == [250, 250]


async def test_no_pipelining_when_not_offered(scripted: StartScripted) -> None:
    server = await scripted(respond(Dialect(extensions=("SIZE",))))
    await deliver(server, TWO)
    conn = server.conns[0]
    assert conn.lines[1:5] == [
        "MAIL FROM:<s@example.org> SIZE=4",
        "RCPT TO:<good@example.com>",
        "RCPT TO:<bad@example.com>",
        "DATA",
    ]
    assert not conn.commands_batched()  # every command waited for the previous reply


@pytest.mark.parametrize("extensions", [(), ("PIPELINING",)], ids=["one at a time", "pipelined"])
async def test_one_rejected_recipient_does_not_stop_the_others(
    scripted: StartScripted, extensions: tuple[str, ...]
) -> None:
    server = await scripted(respond(Dialect(extensions=extensions, rcpt=REJECT)))
    result = await deliver(server, TWO, b"the message")
    assert [(a, r.code) for a, r in result.rcpts] == [
        ("good@example.com", 250),
        ("bad@example.com", 550),
    ]
    assert result.data is not None and result.data.code == 354
    assert [(a, r.code) for a, r in result.final] == [("good@example.com", 250)]
    assert [(a, r.code) for a, r in result.per_recipient()] == [
        ("good@example.com", 250),
        ("bad@example.com", 550),
    ]
    assert server.conns[0].messages == [b"the message\r\n"]


async def test_all_rejected_no_data_but_rset(scripted: StartScripted) -> None:
    server = await scripted(respond(Dialect(rcpt=REJECT)))
    result = await deliver(server, ALL_BAD)
    assert result.data is None and result.final == ()
    assert [r.code for _, r in result.per_recipient()] == [550, 450]
    lines = server.conns[0].lines
    assert "DATA" not in lines and lines[-2:] == ["RSET", "QUIT"]


async def test_all_rejected_pipelined_data_refused_then_rset(scripted: StartScripted) -> None:
    server = await scripted(respond(Dialect(extensions=("PIPELINING",), rcpt=REJECT)))
    result = await deliver(server, ALL_BAD)
    assert result.data is not None and result.data.code == 554 and result.final == ()
    assert [r.code for _, r in result.per_recipient()] == [550, 450]
    assert server.conns[0].lines[-2:] == ["RSET", "QUIT"]
    assert server.conns[0].messages == []


async def test_all_rejected_pipelined_but_data_accepted_sends_a_lone_dot(
    scripted: StartScripted,
) -> None:
    # RFC 2920 §3.1: a server may say 354 anyway; the client then ends the data at once.
    dialect = Dialect(extensions=("PIPELINING",), rcpt=REJECT, replies={"DATA": "354 go on"})
    server = await scripted(respond(dialect))
    result = await deliver(server, ALL_BAD, b"must not be sent")
    assert result.final == () and [r.code for _, r in result.per_recipient()] == [550, 450]
    assert server.conns[0].messages == [b""]


@pytest.mark.parametrize("extensions", [(), ("PIPELINING",)], ids=["one at a time", "pipelined"])
async def test_mail_from_refused(scripted: StartScripted, extensions: tuple[str, ...]) -> None:
    dialect = Dialect(extensions=extensions, replies={"MAIL": "553 5.7.1 sender refused"})
    server = await scripted(respond(dialect))
    result = await deliver(server, TWO)
    assert result.mail.code == 553 and result.final == ()
    assert [r.code for _, r in result.per_recipient()] == [553, 553]
    assert server.conns[0].messages == []
    if not extensions:
        assert result.rcpts == () and not any(
            line.startswith("RCPT") for line in server.conns[0].lines
        )


async def test_data_refused_is_every_accepted_recipients_outcome(scripted: StartScripted) -> None:
    dialect = Dialect(rcpt=REJECT, replies={"DATA": "451 4.3.0 not now"})
    server = await scripted(respond(dialect))
    result = await deliver(server, TWO)
    assert [(a, r.code) for a, r in result.per_recipient()] == [
        ("good@example.com", 451),
        ("bad@example.com", 550),
    ]
    assert server.conns[0].lines[-2:] == ["RSET", "QUIT"]


async def test_end_of_data_refused(scripted: StartScripted) -> None:
    server = await scripted(respond(Dialect(replies={"DOT": "554 5.7.1 spam"})))
    result = await deliver(server, TWO)
    assert [r.code for _, r in result.per_recipient()] == [554, 554]


RICH = Envelope(
    "s@example.org",
    (Recipient("rcpt@example.com", ("FAILURE", "DELAY"), "rcpt@example.com"),),
    smtputf8=True,
    body_8bit=True,
    requiretls=True,
    dsn_ret="HDRS",
    dsn_envid="queue-id-1",
)


async def test_parameters_sent_when_offered(make_mx: MakeMx, ca_file: str) -> None:
    mx = await make_mx(tls="valid", extensions=Extensions(size=1000000, requiretls=True))
    async with await connect(mx.address) as session:
        await session.ehlo("client.example.org")
        await session.starttls(tls.pkix_context(ca_file), server_hostname=MX_NAME, timeout_ms=5000)
        await session.ehlo("client.example.org")  # REQUIRETLS is announced inside TLS only
        result = await session.send(RICH, b"body")
        assert result.final[0][1].code == 250
    [message] = mx.received
    assert dict(message.mail_params) == {
        "SIZE": "6",
        "BODY": "8BITMIME",
        "SMTPUTF8": None,
        "RET": "HDRS",
        "ENVID": "queue-id-1",
        "REQUIRETLS": None,
    }
    assert dict(message.rcpts[0].params) == {
        "NOTIFY": "FAILURE,DELAY",
        "ORCPT": "rfc822;rcpt@example.com",
    }


async def test_parameters_not_sent_when_not_offered(make_mx: MakeMx) -> None:
    # This receiver refuses (555) any parameter of an extension it did not announce.
    bare = Extensions(
        pipelining=False,
        size=None,
        eightbitmime=False,
        smtputf8=False,
        dsn=False,
        enhancedstatuscodes=False,
    )
    mx = await make_mx(extensions=bare)
    envelope = Envelope(
        "s@example.org",
        (Recipient("rcpt@example.com", ("NEVER",), "rcpt@example.com"),),
        body_8bit=True,
        dsn_ret="FULL",
        dsn_envid="queue-id-1",
    )
    async with await connect(mx.address) as session:
        await session.ehlo("client.example.org")
        result = await session.send(envelope, b"x")
    assert [r.code for _, r in result.per_recipient()] == [250]
    assert mx.commands[1:3] == ["MAIL FROM:<s@example.org>", "RCPT TO:<rcpt@example.com>"]
    assert dict(mx.received[0].mail_params) == {} and dict(mx.received[0].rcpts[0].params) == {}


async def test_size_counts_octets_of_the_normalised_body(make_mx: MakeMx) -> None:
    mx = await make_mx()
    async with await connect(mx.address) as session:
        await session.ehlo("client.example.org")
        envelope = Envelope("s@x.org", (Recipient("r@y.org"),), body_8bit=True)
        await session.send(envelope, "héllo\n".encode())  # 6 octets + CRLF, not 5 characters
    assert dict(mx.received[0].mail_params) == {"SIZE": "8", "BODY": "8BITMIME"}
    assert mx.received[0].body == "héllo\r\n".encode()


@pytest.mark.parametrize(
    ("envelope", "tls_on", "extension", "kind"),
    [
        (Envelope("s@x", (Recipient("r@y"),), requiretls=True), False, "REQUIRETLS", LastError.TLS),
        (
            Envelope("s@x", (Recipient("δ@y"),), smtputf8=True),
            False,
            "SMTPUTF8",
            LastError.UNEXPECTED_REPLY,
        ),
        (Envelope("s@x", (Recipient("r@y"),), requiretls=True), True, "REQUIRETLS", LastError.TLS),
    ],
    ids=["REQUIRETLS in clear text", "SMTPUTF8 not offered", "REQUIRETLS not offered over TLS"],
)
async def test_required_extension_missing_sends_nothing(
    make_mx: MakeMx,
    envelope: Envelope,
    tls_on: bool,
    extension: str,
    kind: LastError,
) -> None:
    mx = await make_mx(tls="valid", extensions=Extensions(smtputf8=False))
    async with await connect(mx.address) as session:
        await session.ehlo("client.example.org")
        if tls_on:
            await session.starttls(
                tls.unverified_context(), server_hostname=MX_NAME, timeout_ms=5000
            )
            await session.ehlo("client.example.org")
        with pytest.raises(ExtensionNotOffered) as caught:
            await session.send(envelope, b"x")
    error = caught.value
    assert (error.extension, error.kind, error.phase) == (extension, kind, "mail")
    assert not any(command.startswith("MAIL") for command in mx.commands)


async def test_too_many_recipients_refused_before_sending(scripted: StartScripted) -> None:
    server = await scripted(respond(Dialect()))
    many = tuple(Recipient(f"r{i}@example.com") for i in range(MAX_RECIPIENTS_PER_TRANSACTION + 1))
    async with await connect(server.address) as session:
        await session.ehlo("client.example.org")
        with pytest.raises(InvalidArgument):
            await session.send(Envelope("s@x", many), b"x")


async def test_lmtp_gives_one_reply_per_accepted_recipient(scripted: StartScripted) -> None:
    dialect = Dialect(
        extensions=("PIPELINING", "ENHANCEDSTATUSCODES"),
        rcpt={"gone@example.com": "550 5.1.1 no such mailbox"},
        lmtp_replies=("250 2.1.5 a delivered", "452 4.2.2 b over quota"),
    )
    server = await scripted(respond(dialect))
    envelope = Envelope(
        "s@example.org",
        (Recipient("a@example.com"), Recipient("gone@example.com"), Recipient("b@example.com")),
    )
    async with await connect(server.address, lmtp=True) as session:
        await session.ehlo("client.example.org")
        result = await session.send(envelope, b"for LMTP")
        await session.reset()
    assert server.conns[0].lines[0] == "LHLO client.example.org"
    assert [(a, r.code) for a, r in result.final] == [
        ("a@example.com", 250),
        ("b@example.com", 452),
    ]
    assert [(a, r.enhanced) for a, r in result.per_recipient()] == [
        ("a@example.com", "2.1.5"),
        ("gone@example.com", "5.1.1"),
        ("b@example.com", "4.2.2"),
    ]


async def test_lmtp_has_no_helo_fallback(scripted: StartScripted) -> None:
    server = await scripted(respond(Dialect(replies={"LHLO": "500 5.5.1 unknown"})))
    session = await connect(server.address, lmtp=True)
    with pytest.raises(Exception, match="refused LHLO"):
        await session.ehlo("client.example.org")
    await session.quit()
    assert server.conns[0].lines == ["LHLO client.example.org", "QUIT"]


def reply(code: int) -> Reply:
    return Reply(code, None, ("",))


PER_RECIPIENT = [  # (label, result, expected deciding codes)
    (
        "MAIL refused, nothing else sent",
        TransactionResult(("a", "b"), reply(451), (), None, ()),
        [451, 451],
    ),
    (
        "MAIL refused, pipelined RCPT replies ignored",
        TransactionResult(("a",), reply(550), (("a", reply(250)),), reply(503), ()),
        [550],
    ),
    (
        "no recipient accepted",
        TransactionResult(("a", "b"), reply(250), (("a", reply(550)), ("b", reply(452))), None, ()),
        [550, 452],
    ),
    (
        "DATA refused",
        TransactionResult(
            ("a", "b"), reply(250), (("a", reply(250)), ("b", reply(550))), reply(554), ()
        ),
        [554, 550],
    ),
    (
        "354 but content never sent is not a delivery",
        TransactionResult(("a",), reply(250), (("a", reply(250)),), reply(354), ()),
        [354],
    ),
    (
        "LMTP replies follow the accepted recipients",
        TransactionResult(
            ("a", "b", "c"),
            reply(250),
            (("a", reply(250)), ("b", reply(550)), ("c", reply(250))),
            reply(354),
            (("a", reply(452)), ("c", reply(250))),
        ),
        [452, 550, 250],
    ),
]


@pytest.mark.parametrize(
    ("label", "result", "codes"), PER_RECIPIENT, ids=[c[0] for c in PER_RECIPIENT]
)
def test_per_recipient(label: str, result: TransactionResult, codes: list[int]) -> None:
    assert [r.code for _, r in result.per_recipient()] == codes
