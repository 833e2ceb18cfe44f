"""AUTH (RFC 4954): PLAIN and LOGIN against a real aiosmtpd relay, only ever inside TLS."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Awaitable, Callable

import pytest

from delivery.errors import LastError
from delivery.smtp import tls
from delivery.smtp.errors import (
    AuthNotProtected,
    AuthRefused,
    AuthUnavailable,
    InvalidArgument,
    UnexpectedReply,
)
from delivery.smtp.esmtp import Envelope, Recipient
from delivery.smtp.session import SmtpSession
from tests.smtp.common import MX_NAME, connect
from tests.smtp.relay import PASSWORD, USER, AuthRelay
from tests.smtp.servers import Behaviour, Conn, Dialect, ScriptedServer, respond

MakeRelay = Callable[..., Awaitable[AuthRelay]]
StartScripted = Callable[[Behaviour], Awaitable[ScriptedServer]]

ENVELOPE = Envelope("sender@example.org", (Recipient("rcpt@example.com"),))
TLS_TIMEOUT_MS = 5000


async def secured(address: tuple[str, int], ca_file: str) -> SmtpSession:
    """A session to the relay, STARTTLS done with PKIX verification, EHLO'd again."""
    session = await connect(address)
    await session.ehlo("client.example.org")
    await session.starttls(
        tls.pkix_context(ca_file), server_hostname=MX_NAME, timeout_ms=TLS_TIMEOUT_MS
    )
    await session.ehlo("client.example.org")
    return session


@pytest.mark.parametrize(
    ("offered", "preferred", "used"),
    [
        (("PLAIN", "LOGIN"), ("PLAIN", "LOGIN"), "PLAIN"),
        (("LOGIN",), ("PLAIN", "LOGIN"), "LOGIN"),
        (("PLAIN", "LOGIN"), ("LOGIN", "PLAIN"), "LOGIN"),
    ],
    ids=["PLAIN first", "LOGIN when PLAIN is not offered", "our preference order"],
)
async def test_auth_then_send(
    make_relay: MakeRelay,
    ca_file: str,
    offered: tuple[str, ...],
    preferred: tuple[str, ...],
    used: str,
) -> None:
    relay = await make_relay(mechanisms=offered)
    async with await secured(relay.address, ca_file) as session:
        reply = await session.auth(USER, PASSWORD, mechanisms=preferred)
        assert reply.code == 235
        await session.send(ENVELOPE, b"Subject: relayed\r\n\r\nhi\r\n")
    assert relay.logins == [(used, USER, PASSWORD)]
    assert relay.tls_seen == [True] and relay.messages[0].rcpt_tos == ["rcpt@example.com"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_refused_credentials_are_classified_and_never_quoted(
    make_relay: MakeRelay, ca_file: str, mechanism: str
) -> None:
    relay = await make_relay(mechanisms=(mechanism,))
    async with await secured(relay.address, ca_file) as session:
        with pytest.raises(AuthRefused) as caught:
            await session.auth(USER, "wrong-pass")
        error = caught.value
        assert isinstance(error, UnexpectedReply)
        assert (error.phase, error.kind) == ("auth", LastError.UNEXPECTED_REPLY)
        assert error.reply is not None and error.reply.code == 535
        assert error.reply.enhanced == "5.7.8"
        assert f"refused AUTH {mechanism} for 'mta'" in str(error)
        assert "wrong-pass" not in str(error) and "wrong-pass" not in repr(error.args)
        assert not session.closed  # a refusal leaves the session usable
    assert relay.logins == [(mechanism, USER, "wrong-pass")] and relay.messages == []


async def test_credentials_are_never_sent_in_clear_text(scripted: StartScripted) -> None:
    server = await scripted(respond(Dialect(extensions=("AUTH PLAIN LOGIN",))))
    async with await connect(server.address) as session:
        await session.ehlo("client.example.org")
        assert session.supports("AUTH")
        with pytest.raises(AuthNotProtected) as caught:
            await session.auth(USER, PASSWORD)
        assert (caught.value.phase, caught.value.kind) == ("auth", LastError.TLS)
        assert "credentials are never sent in clear text" in str(caught.value)
        assert not session.closed
    assert not any(line.upper().startswith("AUTH") for line in server.conns[0].lines)


async def test_aiosmtpd_offering_auth_in_clear_text_gets_nothing(make_relay: MakeRelay) -> None:
    relay = await make_relay(starttls=False)
    async with await connect(relay.address) as session:
        await session.ehlo("client.example.org")
        assert "PLAIN" in session.extensions["AUTH"]
        with pytest.raises(AuthNotProtected):
            await session.auth(USER, PASSWORD)
    assert relay.logins == []


async def test_no_mechanism_we_use(
    scripted: StartScripted, server_context: ssl.SSLContext, ca_file: str
) -> None:
    dialect = Dialect(extensions=("STARTTLS", "AUTH CRAM-MD5 XOAUTH2"), tls_context=server_context)
    server = await scripted(respond(dialect))
    async with await secured(server.address, ca_file) as session:
        with pytest.raises(AuthUnavailable) as caught:
            await session.auth(USER, PASSWORD)
        assert caught.value.kind is LastError.UNEXPECTED_REPLY
        assert "CRAM-MD5 XOAUTH2" in str(caught.value)
    assert not any(line.upper().startswith("AUTH") for line in server.conns[0].lines)


def echoing_auth(context: ssl.SSLContext) -> Behaviour:
    """A server that answers AUTH with a 535 quoting what it was sent, then a bad line."""

    async def behaviour(conn: Conn) -> None:
        conn.send("220 mx1.example.test ESMTP")
        while (line := await conn.read_command()) is not None:
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                conn.send("250-mx1.example.test", "250-AUTH PLAIN", "250 STARTTLS")
            elif verb == "STARTTLS":
                conn.send("220 go ahead")
                await conn.writer.start_tls(context)
            elif verb == "AUTH":
                conn.send(f"535 5.7.8 bad credentials in {line!r}")
            elif verb == "QUIT":
                conn.send("221 bye")
                return

    return behaviour


async def test_a_reply_echoing_the_credentials_is_quoted_redacted(
    scripted: StartScripted, server_context: ssl.SSLContext, ca_file: str
) -> None:
    server = await scripted(echoing_auth(server_context))
    token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    async with await secured(server.address, ca_file) as session:
        with pytest.raises(AuthRefused) as caught:
            await session.auth(USER, PASSWORD)
    assert f"AUTH PLAIN {token}" in server.conns[0].lines  # it was sent, inside TLS
    error = caught.value
    assert error.reply is not None
    for text in (str(error), error.reply.text, repr(error.args)):
        assert token not in text and PASSWORD not in text
    assert "[redacted]" in error.reply.text


async def test_auth_arguments_are_checked(make_relay: MakeRelay, ca_file: str) -> None:
    relay = await make_relay()
    async with await secured(relay.address, ca_file) as session:
        with pytest.raises(InvalidArgument):
            await session.auth(USER, PASSWORD, mechanisms=("CRAM-MD5",))
        with pytest.raises(InvalidArgument):
            await session.auth(USER, "pass\0word")
    assert relay.logins == []


async def test_auth_needs_ehlo_after_starttls(make_relay: MakeRelay, ca_file: str) -> None:
    relay = await make_relay()
    async with await connect(relay.address) as session:
        await session.ehlo("client.example.org")
        await session.starttls(
            tls.pkix_context(ca_file), server_hostname=MX_NAME, timeout_ms=TLS_TIMEOUT_MS
        )
        with pytest.raises(RuntimeError):
            await session.auth(USER, PASSWORD)
