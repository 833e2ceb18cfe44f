"""STARTTLS: PKIX verification, certificate failures, handshake failures, refusal, timeout."""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from delivery.errors import LastError
from delivery.harness import certs
from delivery.harness.smtp_server import SmtpReceiver
from delivery.smtp import tls
from delivery.smtp.errors import CertificateRejected, HandshakeFailed, StartTlsRefused
from delivery.smtp.esmtp import Envelope, Recipient
from tests.smtp.common import MX_IP, MX_NAME, connect
from tests.smtp.servers import (
    Behaviour,
    Dialect,
    ScriptedServer,
    handshake_then_smtp,
    hang_up,
    not_tls,
    respond,
    silent,
    starttls_then,
)

MakeMx = Callable[..., Awaitable[SmtpReceiver]]
StartScripted = Callable[[Behaviour], Awaitable[ScriptedServer]]

ENVELOPE = Envelope("sender@example.org", (Recipient("rcpt@example.com"),))
TLS_TIMEOUT_MS = 5000


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


async def test_starttls_with_pkix_verification(
    make_mx: MakeMx, cert_factory: certs.CertFactory, ca_file: str
) -> None:
    credential = cert_factory.credential(MX_NAME, "valid", intermediate=True)
    mx = await make_mx(tls="valid", credential=credential)
    async with await connect(mx.address) as session:
        await session.ehlo("client.example.org")
        assert session.supports("STARTTLS") and session.peer_chain() == []
        info = await session.starttls(
            tls.pkix_context(ca_file), server_hostname=MX_NAME, timeout_ms=TLS_TIMEOUT_MS
        )
        assert session.is_tls and session.tls == info
        assert info.version in ("TLSv1.2", "TLSv1.3") and info.cipher
        assert info.peer_leaf_der == der(credential.cert)
        # The chain as sent: leaf, then the intermediate that signed it.
        assert session.peer_chain() == [der(credential.cert), der(credential.chain[0])]
        # RFC 3207 §4.2: what the server said before TLS is forgotten until the next EHLO.
        assert session.extensions == {}
        with pytest.raises(RuntimeError):
            await session.send(ENVELOPE, b"x")
        await session.ehlo("client.example.org")
        assert not session.supports("STARTTLS")
        await session.send(ENVELOPE, b"over TLS")
    [message] = mx.received
    assert message.tls is not None and message.tls.version == info.version
    assert message.body == b"over TLS\r\n"


BAD_CERTIFICATES = [  # (harness TLS mode, what OpenSSL says)
    ("self-signed", "self-signed certificate"),
    ("expired", "certificate has expired"),
    ("not-yet-valid", "certificate is not yet valid"),
    ("wrong-name", "Hostname mismatch"),
    ("unknown-ca", "unable to get local issuer certificate"),
    ("no-server-auth", "unsuitable certificate purpose"),
]


@pytest.mark.parametrize(("kind", "verdict"), BAD_CERTIFICATES)
async def test_bad_certificate_is_rejected_under_pkix(
    make_mx: MakeMx, ca_file: str, kind: str, verdict: str
) -> None:
    mx = await make_mx(tls=kind)
    session = await connect(mx.address)
    await session.ehlo("client.example.org")
    with pytest.raises(CertificateRejected) as caught:
        await session.starttls(
            tls.pkix_context(ca_file), server_hostname=MX_NAME, timeout_ms=TLS_TIMEOUT_MS
        )
    error = caught.value
    assert (error.kind, error.phase) == (LastError.TLS, "starttls")
    assert verdict in error.verify_message and error.verify_code != 0
    assert str(error).startswith(f"{MX_NAME}[{MX_IP}]:{mx.address[1]} presented a certificate")
    assert session.closed and not session.is_tls
    assert mx.received == []


@pytest.mark.parametrize("kind", [kind for kind, _ in BAD_CERTIFICATES])
async def test_unverified_context_accepts_any_certificate(make_mx: MakeMx, kind: str) -> None:
    mx = await make_mx(tls=kind)
    async with await connect(mx.address) as session:
        await session.ehlo("client.example.org")
        info = await session.starttls(
            tls.unverified_context(), server_hostname=MX_NAME, timeout_ms=TLS_TIMEOUT_MS
        )
        assert info.peer_leaf_der is not None
        await session.ehlo("client.example.org")
        await session.send(ENVELOPE, b"x")
    assert mx.received[0].tls is not None


async def test_harness_broken_tls_is_handshake_failed(make_mx: MakeMx) -> None:
    mx = await make_mx(tls="broken")
    session = await connect(mx.address)
    await session.ehlo("client.example.org")
    with pytest.raises(HandshakeFailed) as caught:
        await session.starttls(
            tls.unverified_context(), server_hostname=MX_NAME, timeout_ms=TLS_TIMEOUT_MS
        )
    assert (caught.value.kind, caught.value.phase) == (LastError.TLS, "starttls")
    assert session.closed and mx.received == []


@pytest.mark.parametrize("after_220", [not_tls, hang_up], ids=["not TLS", "hang up"])
async def test_broken_handshake_is_handshake_failed(
    scripted: StartScripted, after_220: Behaviour
) -> None:
    server = await scripted(starttls_then(after_220))
    session = await connect(server.address)
    await session.ehlo("client.example.org")
    with pytest.raises(HandshakeFailed) as caught:
        await session.starttls(
            tls.unverified_context(), server_hostname=MX_NAME, timeout_ms=TLS_TIMEOUT_MS
        )
    assert (caught.value.kind, caught.value.phase) == (LastError.TLS, "starttls")
    assert f"{MX_NAME}[{MX_IP}]" in str(caught.value)
    assert not str(caught.value).rstrip().endswith("failed:"), "the reason names the fault"
    assert session.closed


async def test_starttls_refused_leaves_the_session_usable(scripted: StartScripted) -> None:
    dialect = Dialect(extensions=("STARTTLS",), replies={"STARTTLS": "454 4.7.0 TLS not available"})
    server = await scripted(respond(dialect))
    async with await connect(server.address) as session:
        await session.ehlo("client.example.org")
        with pytest.raises(StartTlsRefused) as caught:
            await session.starttls(
                tls.unverified_context(), server_hostname=MX_NAME, timeout_ms=TLS_TIMEOUT_MS
            )
        assert caught.value.kind is LastError.TLS and caught.value.reply is not None
        assert caught.value.reply.code == 454 and caught.value.reply.enhanced == "4.7.0"
        assert not session.closed
        result = await session.send(ENVELOPE, b"in clear text")  # the caller's choice
        assert result.final[0][1].code == 250


@pytest.mark.parametrize(
    "behaviour",
    [
        starttls_then(silent),  # 220, then never a ServerHello
        respond(Dialect(extensions=("STARTTLS",), silent_at="STARTTLS")),  # no reply to STARTTLS
    ],
    ids=["silent handshake", "silent STARTTLS"],
)
async def test_tls_timeout_bounds_starttls_and_handshake(
    scripted: StartScripted, behaviour: Behaviour
) -> None:
    server = await scripted(behaviour)
    session = await connect(server.address)
    await session.ehlo("client.example.org")
    started = time.monotonic()
    with pytest.raises(HandshakeFailed) as caught:
        await session.starttls(tls.unverified_context(), server_hostname=MX_NAME, timeout_ms=300)
    assert time.monotonic() - started < 3
    assert "did not complete STARTTLS and the TLS handshake within 0.3s" in str(caught.value)
    assert caught.value.kind is LastError.TLS and session.closed


@pytest.mark.parametrize(
    "injected",
    [b"250-mx1.example.test\r\n250 INJECTED\r\n", b"\x00 not even a reply\r\n250 INJECTED"],
    ids=["fake EHLO reply", "garbage"],
)
async def test_cleartext_after_220_is_never_read_inside_tls(
    scripted: StartScripted, server_context: ssl.SSLContext, ca_file: str, injected: bytes
) -> None:
    # A man in the middle appends bytes to the 220 (CVE-2011-0411 style): RFC 3207 §4.2
    # says discard them; they must neither be read as a reply inside TLS nor fail the session.
    server = await scripted(starttls_then(handshake_then_smtp(server_context), injected))
    async with await connect(server.address) as session:
        await session.ehlo("client.example.org")
        await session.starttls(
            tls.pkix_context(ca_file), server_hostname=MX_NAME, timeout_ms=TLS_TIMEOUT_MS
        )
        reply = await session.ehlo("client.example.org")
        assert reply.lines == ("mx1.example.test", "PIPELINING")
        assert "INJECTED" not in session.extensions
