"""Fixtures of the SMTP client tests: the harness CA and receivers, and scripted servers.

Servers listen on MX_IP (a loopback address of their own) and port 0, so tests run in
parallel; every server is stopped when its test ends. Real-server tests use the harness
(`delivery.harness.smtp_server.SmtpReceiver`, `delivery.harness.certs.CertFactory`);
`tests.smtp.servers.ScriptedServer` plays what the harness does not model on purpose, and
`tests.smtp.relay.AuthRelay` is an aiosmtpd smart host taking AUTH (STARTTLS or implicit TLS).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from delivery.harness import certs, smtp_server
from tests.smtp.common import MX_IP, MX_NAME
from tests.smtp.relay import AuthRelay
from tests.smtp.servers import Behaviour, ScriptedServer


@pytest.fixture(scope="session")
def cert_factory() -> certs.CertFactory:
    """The harness CA and the certificates it issued, once per test session."""
    return certs.CertFactory()


@pytest.fixture(scope="session")
def ca_file(cert_factory: certs.CertFactory, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The harness CA as a PEM file: the extra trust anchor of `tls.pkix_context`."""
    return str(cert_factory.write_ca(tmp_path_factory.mktemp("ca") / "ca.pem"))


@pytest.fixture
def server_context(cert_factory: certs.CertFactory) -> ssl.SSLContext:
    """A server context presenting a valid certificate for MX_NAME (for scripted servers)."""
    return cert_factory.credential(MX_NAME, "valid").server_context()


@pytest.fixture
async def make_mx(
    cert_factory: certs.CertFactory,
) -> AsyncIterator[Callable[..., Awaitable[smtp_server.SmtpReceiver]]]:
    """Start a harness receiver for MX_NAME: ``await make_mx(tls="expired", script=...)``."""
    started: list[smtp_server.SmtpReceiver] = []

    async def start(**options: Any) -> smtp_server.SmtpReceiver:
        options.setdefault("factory", cert_factory)
        receiver = smtp_server.SmtpReceiver(MX_NAME, host=MX_IP, port=0, **options)
        await receiver.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.stop()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Behaviour], Awaitable[ScriptedServer]]]:
    """Start a scripted server running a behaviour: ``await scripted(respond(Dialect(...)))``."""
    started: list[ScriptedServer] = []

    async def start(behaviour: Behaviour) -> ScriptedServer:
        server = ScriptedServer(MX_IP, behaviour)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def make_relay(
    cert_factory: certs.CertFactory,
) -> AsyncIterator[Callable[..., Awaitable[AuthRelay]]]:
    """Start an aiosmtpd relay on MX_IP that takes AUTH: ``await make_relay(implicit=True)``."""
    started: list[AuthRelay] = []

    async def start(**options: Any) -> AuthRelay:
        relay = AuthRelay(MX_IP, cert_factory, **options)
        await relay.start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        await relay.stop()
