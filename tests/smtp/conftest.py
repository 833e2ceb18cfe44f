"""Fixtures of the SMTP client tests: a test PKI, aiosmtpd receivers, scripted servers.

Servers listen on MX_IP (a loopback address of their own) and port 0, so tests run in
parallel; every server is stopped when its test ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.smtp.common import MX_IP
from tests.smtp.pki import MX_NAME, Pki, make_pki
from tests.smtp.servers import AiosmtpdMx, Behaviour, ScriptedServer


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(Path(tmp_path_factory.mktemp("pki")))


@pytest.fixture
async def aiosmtpd_mx() -> AsyncIterator[Callable[..., Awaitable[AiosmtpdMx]]]:
    """Start an aiosmtpd receiver: ``await aiosmtpd_mx(tls_context=..., reject={...})``."""
    started: list[AiosmtpdMx] = []

    async def start(**options: Any) -> AiosmtpdMx:
        mx = AiosmtpdMx(MX_IP, hostname=MX_NAME, **options)
        await mx.start()
        started.append(mx)
        return mx

    yield start
    for mx in started:
        await mx.stop()


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
