"""Implicit TLS (RFC 8314): TLS from the first byte, classified as STARTTLS's handshake is."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest

from delivery.errors import LastError
from delivery.harness import certs
from delivery.smtp import tls
from delivery.smtp.errors import CertificateRejected, HandshakeFailed, InvalidArgument
from delivery.smtp.esmtp import Envelope, Recipient
from delivery.smtp.session import SmtpSession
from tests.smtp.common import MX_IP, MX_NAME, TIMEOUTS, connect
from tests.smtp.relay import PASSWORD, USER, AuthRelay
from tests.smtp.servers import Behaviour, Dialect, ScriptedServer, respond, silent

MakeRelay = Callable[..., Awaitable[AuthRelay]]
StartScripted = Callable[[Behaviour], Awaitable[ScriptedServer]]

ENVELOPE = Envelope("sender@example.org", (Recipient("rcpt@example.com"),))
TLS_TIMEOUT_MS = 5000


async def test_implicit_tls_with_pkix_verification_then_auth(
    make_relay: MakeRelay, ca_file: str
) -> None:
    relay = await make_relay(implicit=True)
    session = await connect(
        relay.address, tls_context=tls.pkix_context(ca_file), tls_timeout_ms=TLS_TIMEOUT_MS
    )
    async with session:
        assert session.is_tls and session.tls is not None
        assert session.tls.version in ("TLSv1.2", "TLSv1.3") and session.tls.cipher
        assert session.greeting is not None and session.greeting.code == 220
        await session.ehlo("client.example.org")
        with pytest.raises(RuntimeError):
            await session.starttls(
                tls.pkix_context(ca_file), server_hostname=MX_NAME, timeout_ms=TLS_TIMEOUT_MS
            )
        await session.auth(USER, PASSWORD)
        await session.send(ENVELOPE, b"over implicit TLS")
    assert relay.logins == [("PLAIN", USER, PASSWORD)] and relay.tls_seen == [True]


BAD: list[tuple[certs.CertKind, str]] = [
    ("self-signed", "self-signed certificate"),
    ("expired", "certificate has expired"),
    ("wrong-name", "Hostname mismatch"),
]


@pytest.mark.parametrize(("kind", "verdict"), BAD, ids=[kind for kind, _ in BAD])
async def test_a_certificate_that_fails_verification_is_refused(
    make_relay: MakeRelay, ca_file: str, kind: certs.CertKind, verdict: str
) -> None:
    relay = await make_relay(implicit=True, kind=kind)
    with pytest.raises(CertificateRejected) as caught:
        await connect(
            relay.address, tls_context=tls.pkix_context(ca_file), tls_timeout_ms=TLS_TIMEOUT_MS
        )
    error = caught.value
    assert (error.phase, error.kind) == ("tls", LastError.TLS)
    assert verdict in error.verify_message and error.verify_code != 0
    assert str(error).startswith(f"{MX_NAME}[{MX_IP}]:{relay.port} presented a certificate")
    assert relay.logins == [] and relay.messages == []


async def test_the_unverified_context_accepts_any_certificate(make_relay: MakeRelay) -> None:
    relay = await make_relay(implicit=True, kind="expired")
    session = await connect(
        relay.address, tls_context=tls.unverified_context(), tls_timeout_ms=TLS_TIMEOUT_MS
    )
    async with session:
        assert session.is_tls and session.peer_chain()
        await session.ehlo("client.example.org")
        await session.send(ENVELOPE, b"x")
    assert relay.tls_seen == [True]


async def test_a_server_without_tls_is_a_handshake_failure(scripted: StartScripted) -> None:
    server = await scripted(respond(Dialect()))  # greets in clear text
    with pytest.raises(HandshakeFailed) as caught:
        await connect(
            server.address, tls_context=tls.unverified_context(), tls_timeout_ms=TLS_TIMEOUT_MS
        )
    assert (caught.value.phase, caught.value.kind) == ("tls", LastError.TLS)
    # the ClientHello, and not a word of SMTP in clear text
    assert not any(line.upper().startswith(("EHLO", "QUIT")) for line in server.conns[0].lines)


async def test_tls_timeout_bounds_the_handshake(scripted: StartScripted) -> None:
    server = await scripted(silent)
    started = time.monotonic()
    with pytest.raises(HandshakeFailed) as caught:
        await connect(server.address, tls_context=tls.unverified_context(), tls_timeout_ms=300)
    assert time.monotonic() - started < 3
    assert "did not complete the TLS handshake within 0.3s" in str(caught.value)


async def test_implicit_tls_needs_a_timeout() -> None:
    with pytest.raises(InvalidArgument):
        await SmtpSession.connect(
            MX_IP, 465, server_name=MX_NAME, timeouts=TIMEOUTS, tls_context=tls.unverified_context()
        )
