"""An aiosmtpd smart host for the AUTH and implicit TLS tests: real SASL, real TLS.

`AuthRelay` listens on a loopback address and port 0, offers STARTTLS (or speaks TLS from the
first byte with ``implicit=True``) with a harness certificate for MX_NAME, offers AUTH with the
given mechanisms (also in clear text, so that a client's refusal to use it can be seen), and
records every login attempt, every message and whether it came over TLS.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from delivery.harness import certs
from tests.smtp.common import MX_NAME

USER, PASSWORD = "mta", "s3cret-pass"


class AuthRelay:
    """An aiosmtpd relay with an authenticator (see the module docstring).

    :param kind: the harness certificate kind the relay presents, e.g. ``expired``.
    :param mechanisms: the AUTH mechanisms offered.
    """

    def __init__(
        self,
        host: str,
        factory: certs.CertFactory,
        *,
        implicit: bool = False,
        starttls: bool = True,
        kind: certs.CertKind = "valid",
        mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"),
    ) -> None:
        self.host, self.port = host, 0
        self.implicit, self.starttls = implicit, starttls and not implicit
        self.mechanisms = mechanisms
        self.credential = factory.credential(MX_NAME, kind)
        self.logins: list[tuple[str, str, str]] = []  # mechanism, user, password
        self.messages: list[Any] = []
        self.tls_seen: list[bool] = []
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        transport = server.transport
        assert transport is not None  # a DATA command came over it
        self.tls_seen.append(transport.get_extra_info("ssl_object") is not None)
        return "250 2.0.0 accepted"

    def authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        self.logins.append((mechanism, login, password))
        return AuthResult(success=(login, password) == (USER, PASSWORD), handled=False)

    async def start(self) -> None:
        excluded = [m for m in ("PLAIN", "LOGIN") if m not in self.mechanisms]

        def protocol() -> SMTP:
            return SMTP(
                self,
                hostname=MX_NAME,
                tls_context=self.credential.server_context() if self.starttls else None,
                auth_require_tls=False,
                authenticator=self.authenticate,
                auth_exclude_mechanism=excluded,
            )

        context = self.credential.server_context() if self.implicit else None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, self.host, 0, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
