"""Connection reuse: the pool's keys and limits, and the check of a reused session (RSET)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from delivery.harness.smtp_script import Limits
from delivery.harness.smtp_server import SmtpReceiver
from delivery.smtp import pool as smtp_pool
from delivery.smtp.esmtp import Envelope, Recipient
from delivery.smtp.session import SmtpSession, StaleConnection
from tests.smtp.common import MX_NAME, TIMEOUTS, connect
from tests.smtp.servers import Behaviour, Conn, Dialect, ScriptedServer, respond

MakeMx = Callable[..., Awaitable[SmtpReceiver]]
StartScripted = Callable[[Behaviour], Awaitable[ScriptedServer]]

ENVELOPE = Envelope("s@example.org", (Recipient("r@example.com"),))
BODY = b"Subject: t\r\n\r\nhello\r\n"
WAIT_S = 5.0


def key(receiver: SmtpReceiver | ScriptedServer, **changes: object) -> smtp_pool.PoolKey:
    """The key of a connection to ``receiver`` under a plain opportunistic plan."""
    ip, port = receiver.address
    fields: dict[str, object] = {
        "source_ip": "",
        "ehlo_name": "client.example.org",
        "policy_domain": "example.com",
        "tls": ("default", "opportunistic"),
        "timeouts": TIMEOUTS,
    }
    return smtp_pool.pool_key(MX_NAME, ip, port, **(fields | changes))  # type: ignore[arg-type]


async def opened(receiver: SmtpReceiver | ScriptedServer) -> SmtpSession:
    session = await connect(receiver.address)
    await session.ehlo("client.example.org")
    return session


async def closed_by_peer(session: SmtpSession) -> None:
    """Wait until the client side has seen the server close the connection."""
    async with asyncio.timeout(WAIT_S):
        # The session has no event for it (nothing in delivery waits for it): one loop turn
        # at a time until the transport has handed over the EOF.
        while not session.closed:  # noqa: ASYNC110
            await asyncio.sleep(0)


def quits(receiver: SmtpReceiver) -> int:
    return sum(line.upper() == "QUIT" for line in receiver.commands)


# ---- keys ------------------------------------------------------------------------------------

KEY_CHANGES = [  # (label, change): each makes a key that must never share a connection
    ("another policy domain", {"policy_domain": "other.example"}),
    ("another TLS requirement", {"tls": ("strict", "required")}),
    ("another source address", {"source_ip": "127.0.0.9"}),
    ("another EHLO name", {"ehlo_name": "other.example.org"}),
    ("another AUTH identity", {"auth": "relay/user"}),
    ("LMTP", {"lmtp": True}),
    ("implicit TLS", {"implicit_tls": True}),
]


@pytest.mark.parametrize(("label", "change"), KEY_CHANGES, ids=[c[0] for c in KEY_CHANGES])
async def test_a_connection_is_only_handed_out_under_its_own_key(
    label: str, change: dict[str, object], make_mx: MakeMx
) -> None:
    receiver = await make_mx()
    pool: smtp_pool.ConnectionPool[str] = smtp_pool.ConnectionPool()
    entry = pool.entry(key(receiver), await opened(receiver), "info")
    pool.put(entry)
    assert pool.take(key(receiver, **change)) is None, label
    assert pool.take(key(receiver)) is entry
    assert pool.reused == 1
    pool.discard(entry)
    await pool.close()


# ---- limits ----------------------------------------------------------------------------------


async def test_a_connection_is_closed_after_max_messages(make_mx: MakeMx) -> None:
    receiver = await make_mx()
    pool: smtp_pool.ConnectionPool[None] = smtp_pool.ConnectionPool(max_messages=2)
    entry = pool.entry(key(receiver), await opened(receiver), None)
    await entry.session.send(ENVELOPE, BODY)
    pool.put(entry)
    taken = pool.take(key(receiver))
    assert taken is entry
    await taken.session.send(ENVELOPE, BODY, reset_first=True)
    pool.put(taken)  # its second message: closed with QUIT, not kept
    assert pool.take(key(receiver)) is None
    [session] = await receiver.wait_for_connections(1, closed=True, within=WAIT_S)
    assert session.messages == 2 and session.commands[-1].upper() == "QUIT"
    await pool.close()


async def test_an_idle_connection_is_closed_after_the_idle_time(make_mx: MakeMx) -> None:
    receiver = await make_mx()
    pool: smtp_pool.ConnectionPool[None] = smtp_pool.ConnectionPool(idle_ms=50)
    pool.put(pool.entry(key(receiver), await opened(receiver), None))
    assert len(pool) == 1
    await receiver.wait_for_connections(1, closed=True, within=WAIT_S)
    assert len(pool) == 0 and quits(receiver) == 1
    assert pool.take(key(receiver)) is None
    await pool.close()


async def test_a_connection_past_its_age_is_not_reused(make_mx: MakeMx) -> None:
    receiver = await make_mx()
    now = [0.0]
    pool: smtp_pool.ConnectionPool[None] = smtp_pool.ConnectionPool(
        max_age_ms=1000, clock=lambda: now[0]
    )
    pool.put(pool.entry(key(receiver), await opened(receiver), None))
    now[0] = 1.0
    assert pool.take(key(receiver)) is None
    await receiver.wait_for_connections(1, closed=True, within=WAIT_S)
    assert quits(receiver) == 1
    await pool.close()


async def test_beyond_max_idle_the_least_recently_used_is_closed(make_mx: MakeMx) -> None:
    receiver = await make_mx()
    pool: smtp_pool.ConnectionPool[int] = smtp_pool.ConnectionPool(max_idle=2)
    for number in range(3):
        pool.put(
            pool.entry(
                key(receiver, policy_domain=f"d{number}.test"), await opened(receiver), number
            )
        )
    assert len(pool) == 2
    assert pool.take(key(receiver, policy_domain="d0.test")) is None
    taken = pool.take(key(receiver, policy_domain="d2.test"))
    assert taken is not None and taken.info == 2
    pool.discard(taken)
    await pool.close()
    await receiver.wait_for_connections(3, closed=True, within=WAIT_S)
    assert quits(receiver) == 3


async def test_close_quits_every_idle_connection(make_mx: MakeMx) -> None:
    receiver = await make_mx()
    pool: smtp_pool.ConnectionPool[None] = smtp_pool.ConnectionPool()
    for domain in ("a.test", "b.test"):
        pool.put(pool.entry(key(receiver, policy_domain=domain), await opened(receiver), None))
    await pool.close()
    assert len(pool) == 0
    await receiver.wait_for_connections(2, closed=True, within=WAIT_S)
    assert quits(receiver) == 2


async def test_a_connection_the_server_closed_while_idle_is_not_handed_out(
    make_mx: MakeMx,
) -> None:
    receiver = await make_mx(limits=Limits(idle_timeout_s=0.1))  # 421, then close
    pool: smtp_pool.ConnectionPool[None] = smtp_pool.ConnectionPool()
    session = await opened(receiver)
    pool.put(pool.entry(key(receiver), session, None))
    await closed_by_peer(session)
    assert pool.take(key(receiver)) is None
    await pool.close()


# ---- the check of a reused session -----------------------------------------------------------


async def test_a_reused_session_sends_rset_in_the_same_write_as_mail_from(
    scripted: StartScripted,
) -> None:
    server = await scripted(respond(Dialect(extensions=("PIPELINING",))))
    session = await opened(server)
    await session.send(ENVELOPE, BODY)
    result = await session.send(ENVELOPE, BODY, reset_first=True)
    assert [reply.code for _, reply in result.per_recipient()] == [250]
    conn = server.conns[0]
    start = conn.lines.index("RSET")
    assert conn.lines[start : start + 4] == [
        "RSET",
        "MAIL FROM:<s@example.org>",
        "RCPT TO:<r@example.com>",
        "DATA",
    ]
    assert len(set(conn.chunk_of_line[start : start + 4])) == 1  # one write
    assert len(conn.messages) == 2
    await session.quit()


async def test_without_pipelining_rset_goes_first_on_its_own(scripted: StartScripted) -> None:
    server = await scripted(respond(Dialect()))
    session = await opened(server)
    await session.send(ENVELOPE, BODY)
    await session.send(ENVELOPE, BODY, reset_first=True)
    lines = server.conns[0].lines
    assert lines[lines.index("RSET") + 1].startswith("MAIL FROM:")
    assert len(server.conns[0].messages) == 2
    await session.quit()


def first_message_then(after: Callable[[Conn], Awaitable[None]]) -> Behaviour:
    """Greet, EHLO with PIPELINING, take one message, then run ``after`` on the connection."""

    async def behaviour(conn: Conn) -> None:
        conn.send("220 mx1.example.test ESMTP")
        await conn.read_command()
        conn.send("250-mx1.example.test", "250 PIPELINING")
        for _ in range(3):  # MAIL, RCPT, DATA
            await conn.read_command()
        conn.send("250 ok", "250 ok", "354 go on")
        await conn.read_message()
        conn.send("250 2.0.0 queued")
        await after(conn)

    return behaviour


async def answer_rset_421(conn: Conn) -> None:
    await conn.read_command()
    conn.send("421 4.3.2 shutting down")
    conn.writer.close()


async def answer_mail_421(conn: Conn) -> None:
    await conn.read_command()  # RSET
    conn.send("250 2.0.0 ok", "421 4.7.0 too many messages on this connection")
    conn.writer.close()


async def answer_mail_550(conn: Conn) -> None:
    for _ in range(4):  # RSET, MAIL, RCPT, DATA
        await conn.read_command()
    conn.send("250 2.0.0 ok", "550 5.7.1 sender refused", "503 5.5.1 no", "503 5.5.1 no")
    await conn.until_closed()


async def close_silently(conn: Conn) -> None:
    await conn.read_command()
    conn.writer.close()


STALE = [  # (label, what the server does on the reused connection)
    ("RSET answered 421", answer_rset_421),
    ("MAIL FROM answered 421", answer_mail_421),
    ("connection closed before any reply", close_silently),
]


@pytest.mark.parametrize(("label", "after"), STALE, ids=[s[0] for s in STALE])
async def test_a_stale_reused_session_raises_stale_connection(
    label: str, after: Callable[[Conn], Awaitable[None]], scripted: StartScripted
) -> None:
    server = await scripted(first_message_then(after))
    session = await opened(server)
    await session.send(ENVELOPE, BODY)
    with pytest.raises(StaleConnection) as raised:
        await session.send(ENVELOPE, BODY, reset_first=True)
    assert session.closed, label
    assert raised.value.phase in ("rset", "mail")
    assert len(server.conns[0].messages) == 1  # the second message was never sent


async def test_a_refusal_on_a_reused_session_is_the_messages_own(scripted: StartScripted) -> None:
    server = await scripted(first_message_then(answer_mail_550))
    session = await opened(server)
    await session.send(ENVELOPE, BODY)
    result = await session.send(ENVELOPE, BODY, reset_first=True)
    assert [reply.code for _, reply in result.per_recipient()] == [550]
    session.close()


async def test_a_session_closed_while_idle_is_stale_before_anything_is_sent(
    scripted: StartScripted,
) -> None:
    server = await scripted(first_message_then(lambda conn: conn.until_closed()))
    session = await opened(server)
    await session.send(ENVELOPE, BODY)
    server.conns[0].writer.close()
    await closed_by_peer(session)
    with pytest.raises(StaleConnection, match="closed while idle"):
        await session.send(ENVELOPE, BODY, reset_first=True)


async def test_421_to_mail_from_on_a_new_session_is_an_ordinary_reply(
    scripted: StartScripted,
) -> None:
    server = await scripted(
        respond(Dialect(extensions=("PIPELINING",), replies={"MAIL": "421 4.3.2 busy"}))
    )
    session = await opened(server)
    result = await session.send(ENVELOPE, BODY)  # not reused: nothing to retry elsewhere
    assert result.mail.code == 421
    session.close()
