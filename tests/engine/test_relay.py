"""The Relay route against aiosmtpd smart hosts: STARTTLS, implicit TLS, AUTH, LMTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from delivery.errors import LastError
from delivery.harness import certs
from delivery.harness import lab as harness_lab
from delivery.queue import model
from tests.plugins.engine import EngineWorld, MakeEngine

USER, PASSWORD = "mta", "s3cret-pass"


@dataclass
class SmartHost:
    """An aiosmtpd relay on a loopback address; records what it was given."""

    address: str
    port: int = 0
    messages: list[Any] = field(default_factory=list)
    logins: list[tuple[str, str, str]] = field(default_factory=list)  # mechanism, user, password
    tls_seen: list[bool] = field(default_factory=list)
    lmtp_replies: str | None = None

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        self.tls_seen.append(server.transport.get_extra_info("ssl_object") is not None)
        return self.lmtp_replies or "250 2.0.0 accepted"

    def authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        self.logins.append((mechanism, login, password))
        return AuthResult(success=(login, password) == (USER, PASSWORD), handled=False)


@pytest.fixture
async def smart_host(
    loopback_address: str, harness_certs: certs.CertFactory
) -> AsyncIterator[Callable[..., Awaitable[SmartHost]]]:
    servers: list[asyncio.Server] = []
    credential = harness_certs.credential("relay.engine.test")

    async def start(
        *,
        starttls: bool = True,
        implicit: bool = False,
        lmtp: bool = False,
        mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"),
    ) -> SmartHost:
        host = SmartHost(loopback_address)
        kind = LMTP if lmtp else SMTP
        excluded = [m for m in ("PLAIN", "LOGIN") if m not in mechanisms]

        def protocol() -> SMTP:
            return kind(
                host,
                hostname="relay.engine.test",
                tls_context=credential.server_context() if starttls else None,
                auth_require_tls=False,
                authenticator=host.authenticate,
                auth_exclude_mechanism=excluded,
            )

        loop = asyncio.get_running_loop()
        context = credential.server_context() if implicit else None
        server = await loop.create_server(protocol, loopback_address, 0, ssl=context)
        servers.append(server)
        host.port = server.sockets[0].getsockname()[1]
        return host

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def relay_world(
    harness: harness_lab.Lab, make_engine: MakeEngine, host: SmartHost, **route: Any
) -> EngineWorld:
    world = await make_engine(harness)
    properties = {"address": host.address, "port": host.port, "allowInvalidCerts": True} | route
    await world.create("MtaRoute", type_="Relay", name="smarthost", **properties)
    await world.outbound(route={"else": "'smarthost'"})
    return world


@pytest.mark.harness_mx("mx1.plain.test")
async def test_relay_with_starttls_and_auth_plain(
    harness: harness_lab.Lab,
    make_engine: MakeEngine,
    smart_host: Callable[..., Awaitable[SmartHost]],
) -> None:
    host = await smart_host()
    world = await relay_world(
        harness,
        make_engine,
        host,
        authUsername=USER,
        authSecret={"@type": "Value", "secret": PASSWORD},
    )
    await world.send("a@sender.test", ["b@anywhere.test"])
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.DELIVERED
    assert host.logins == [("PLAIN", USER, PASSWORD)]
    assert host.tls_seen == [True] and host.messages[0].rcpt_tos == ["b@anywhere.test"]
    assert harness.mx("mx1.plain.test").received == []
    assert PASSWORD not in settled.outcome.reason


@pytest.mark.harness_mx("mx1.plain.test")
async def test_relay_auth_login_with_the_secret_from_the_environment(
    harness: harness_lab.Lab,
    make_engine: MakeEngine,
    smart_host: Callable[..., Awaitable[SmartHost]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DELIVERY_TEST_RELAY_SECRET", PASSWORD)
    host = await smart_host(mechanisms=("LOGIN",))
    world = await relay_world(
        harness,
        make_engine,
        host,
        authUsername=USER,
        authSecret={"@type": "EnvironmentVariable", "variableName": "DELIVERY_TEST_RELAY_SECRET"},
    )
    await world.send("a@sender.test", ["b@anywhere.test"])
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.DELIVERED
    assert host.logins == [("LOGIN", USER, PASSWORD)]


@pytest.mark.harness_mx("mx1.plain.test")
async def test_relay_refusing_the_credentials_defers(
    harness: harness_lab.Lab,
    make_engine: MakeEngine,
    smart_host: Callable[..., Awaitable[SmartHost]],
    tmp_path: Path,
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("wrong\n")
    host = await smart_host()
    world = await relay_world(
        harness,
        make_engine,
        host,
        authUsername=USER,
        authSecret={"@type": "File", "filePath": str(secret)},
    )
    await world.send("a@sender.test", ["b@anywhere.test"])
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.SCHEDULED
    assert "535" in settled.outcome.reason and "AUTH" in settled.outcome.reason
    assert host.logins == [("PLAIN", USER, "wrong")] and host.messages == []


@pytest.mark.harness_mx("mx1.plain.test")
async def test_credentials_are_never_sent_in_clear_text(
    harness: harness_lab.Lab,
    make_engine: MakeEngine,
    smart_host: Callable[..., Awaitable[SmartHost]],
) -> None:
    host = await smart_host(starttls=False)
    world = await relay_world(
        harness,
        make_engine,
        host,
        authUsername=USER,
        authSecret={"@type": "Value", "secret": PASSWORD},
    )
    await world.send("a@sender.test", ["b@anywhere.test"])
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.SCHEDULED
    assert settled.outcome.kind is LastError.TLS
    assert "never sent in clear text" in settled.outcome.reason
    assert host.logins == [] and host.messages == []


@pytest.mark.harness_mx("mx1.plain.test")
async def test_relay_with_implicit_tls(
    harness: harness_lab.Lab,
    make_engine: MakeEngine,
    smart_host: Callable[..., Awaitable[SmartHost]],
) -> None:
    host = await smart_host(starttls=False, implicit=True)
    world = await relay_world(harness, make_engine, host, implicitTls=True)
    await world.send("a@sender.test", ["b@anywhere.test"])
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.DELIVERED
    assert host.tls_seen == [True]
    assert settled.tls.startswith("TLSv1")


@pytest.mark.harness_mx("mx1.plain.test")
async def test_implicit_tls_with_a_certificate_that_fails_verification_defers(
    harness: harness_lab.Lab,
    make_engine: MakeEngine,
    smart_host: Callable[..., Awaitable[SmartHost]],
) -> None:
    host = await smart_host(starttls=False, implicit=True)
    world = await relay_world(harness, make_engine, host, implicitTls=True, allowInvalidCerts=False)
    await world.send("a@sender.test", ["b@anywhere.test"])
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.SCHEDULED
    assert settled.outcome.kind is LastError.TLS and host.messages == []


@pytest.mark.harness_mx("mx1.plain.test")
async def test_lmtp_gives_each_recipient_its_own_outcome(
    harness: harness_lab.Lab,
    make_engine: MakeEngine,
    smart_host: Callable[..., Awaitable[SmartHost]],
) -> None:
    host = await smart_host(lmtp=True)
    host.lmtp_replies = "250 2.1.5 delivered to a\r\n550 5.1.1 no mailbox b"
    world = await relay_world(harness, make_engine, host, protocol="lmtp")
    await world.send("s@sender.test", ["a@box.test", "b@box.test"])
    settled = {s.address: s for s in await world.worker.wait_settled(2)}
    assert settled["a@box.test"].status is model.RecipientStatus.DELIVERED
    assert settled["a@box.test"].outcome.status == "2.1.5"
    assert settled["b@box.test"].status is model.RecipientStatus.FAILED
    assert settled["b@box.test"].outcome.status == "5.1.1"
