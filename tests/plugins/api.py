"""Fixtures for the management API: an in-process server and a `delivery serve` subprocess.

``api``: a running API on 127.0.0.1 (free port) over a fresh SQLite store in tmp_path, with
an admin token (`ADMIN_TOKEN`, all permissions), a read-only token (`READONLY_TOKEN`, every
Get and Query permission) and `CREATOR_TOKEN` (create and get TLS strategies only). Its
`RunningApi.post()` sends raw bodies, `jmap()` and `call()` send method calls.

``start_daemon``: a factory that runs ``python -m delivery serve --config FILE`` with a
settings file from `write_settings()`, waits for its "listening on" line and returns a
`Daemon` handle (URL, stdout lines so far, the process); every daemon still running at
teardown is killed. Its stderr goes to ``daemon.log`` beside the settings file.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest

from delivery import config
from delivery.api import auth, health, metrics, server
from delivery.registry.service import Registry

__all__ = [
    "ADMIN_TOKEN",
    "CREATOR_TOKEN",
    "READONLY_TOKEN",
    "USING",
    "Daemon",
    "HttpAnswer",
    "RunningApi",
]

ADMIN_TOKEN = "test-admin-token"
READONLY_TOKEN = "test-readonly-token"
CREATOR_TOKEN = "test-creator-token"
CREATOR_PERMISSIONS = ["sysMtaTlsStrategyCreate", "sysMtaTlsStrategyGet"]
"""A token that may create TLS strategies and read them, nothing else."""
USING = ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"]
DAEMON_START_TIMEOUT_S = 30.0
"""How long a subprocess daemon may take to print its listening line (a cold interpreter)."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """One HTTP answer: status, headers and the body parsed as JSON (None if not JSON)."""

    status: int
    headers: dict[str, str]
    body: Any
    text: str


@dataclass(slots=True)
class RunningApi:
    """A running in-process API and what it runs on."""

    url: str
    registry: Registry
    health_checks: health.HealthChecks
    metrics_registry: metrics.MetricsRegistry
    session: aiohttp.ClientSession

    async def post(
        self,
        body: bytes | str | dict[str, Any],
        *,
        token: str | None = ADMIN_TOKEN,
        headers: dict[str, str] | None = None,
        path: str = "/api",
    ) -> HttpAnswer:
        """POST ``body`` (a dict is sent as JSON) with ``token`` as Bearer (None: no header)."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        sent = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with self.session.post(self.url + path, data=data, headers=sent) as response:
            return await _answer(response)

    async def get(self, path: str, *, token: str | None = ADMIN_TOKEN) -> HttpAnswer:
        """GET ``path`` with ``token`` as Bearer (None: no header)."""
        sent = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self.session.get(self.url + path, headers=sent) as response:
            return await _answer(response)

    async def jmap(
        self, calls: Sequence[Sequence[Any]], *, token: str | None = ADMIN_TOKEN
    ) -> list[list[Any]]:
        """Send method calls; returns methodResponses (asserting HTTP 200)."""
        answer = await self.post({"using": USING, "methodCalls": list(calls)}, token=token)
        assert answer.status == 200, answer.text
        responses: list[list[Any]] = answer.body["methodResponses"]
        return responses

    async def call(
        self, method: str, arguments: dict[str, Any], *, token: str | None = ADMIN_TOKEN
    ) -> list[Any]:
        """Send one call; returns its [name, arguments, callId]."""
        return (await self.jmap([[method, arguments, "c1"]], token=token))[0]


async def _answer(response: aiohttp.ClientResponse) -> HttpAnswer:
    text = await response.text()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    return HttpAnswer(response.status, dict(response.headers), body, text)


def readonly_permissions(object_types: Iterable[str]) -> list[str]:
    """Every Get and Query permission: what the read-only token holds."""
    ops: tuple[auth.Op, ...] = ("Get", "Query")
    return [auth.permission(t, op) for t in object_types for op in ops]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningApi]:
    """A running API over a fresh store, with the admin and read-only tokens."""
    registry = await Registry.open(f"sqlite:///{tmp_path}/delivery.db")
    tokens = auth.TokenTable.from_settings(
        [
            config.ApiToken(name="admin", secret=ADMIN_TOKEN, permissions=["*"]),
            config.ApiToken(
                name="reader",
                secret_sha256=auth.sha256_hex(READONLY_TOKEN),
                permissions=readonly_permissions(registry.object_types),
            ),
            config.ApiToken(name="creator", secret=CREATOR_TOKEN, permissions=CREATOR_PERMISSIONS),
        ]
    )
    checks = health.HealthChecks(("store", "dns", "worker"))
    checks.add("store", server.store_health(registry))
    registry_of_metrics = metrics.MetricsRegistry()
    try:
        async with (
            server.ApiServer(
                registry,
                tokens,
                host="127.0.0.1",
                port=0,
                health_checks=checks,
                metrics_registry=registry_of_metrics,
            ) as listener,
            aiohttp.ClientSession() as session,
        ):
            yield RunningApi(listener.url, registry, checks, registry_of_metrics, session)
    finally:
        await registry.close()


# --- The daemon as a subprocess ---------------------------------------------------------------

_LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass(slots=True)
class Daemon:
    """A `delivery serve` subprocess; ``output`` holds its stdout lines read so far."""

    process: asyncio.subprocess.Process
    url: str = ""
    output: list[str] = field(default_factory=list)

    async def stop(self, signum: int) -> int:
        """Send ``signum`` and wait for the exit status; the rest of stdout joins ``output``."""
        self.process.send_signal(signum)
        assert self.process.stdout is not None
        rest = await asyncio.wait_for(self.process.stdout.read(), DAEMON_START_TIMEOUT_S)
        self.output.extend(rest.decode().splitlines())
        return await asyncio.wait_for(self.process.wait(), DAEMON_START_TIMEOUT_S)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the settings file cannot say "port 0")."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_settings(directory: Path, *, port: int | None = None, extra: str = "") -> Path:
    """A settings file for a test daemon: loopback API on ``port`` (default 0: the daemon
    binds a free port and prints it), store in ``directory``, then the ``extra`` TOML."""
    path = directory / "delivery.toml"
    path.write_text(
        'hostname = "mta.test"\n'
        f'[store]\nurl = "sqlite://{directory}/data/delivery.db"\n'
        f'[api]\nlisten = "127.0.0.1:{0 if port is None else port}"\n'
        '[submission]\nlisten = "127.0.0.1:0"\n'
        '[dns]\nnameservers = ["127.0.0.1:53"]\n' + extra
    )
    return path


def daemon_environment() -> dict[str, str]:
    """The test's environment without DELIVERY_* overrides, which would change the settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}


StartDaemon = Callable[[Path], Awaitable[Daemon]]


@pytest.fixture
async def start_daemon() -> AsyncIterator[StartDaemon]:
    """Start `delivery serve --config FILE` subprocesses; kills any left at teardown."""
    started: list[Daemon] = []

    async def start(settings_file: Path) -> Daemon:
        log = settings_file.parent / "daemon.log"
        with log.open("ab") as stderr:
            process = await _spawn(settings_file, stderr)
        daemon = Daemon(process)
        started.append(daemon)
        assert process.stdout is not None
        async with asyncio.timeout(DAEMON_START_TIMEOUT_S):
            while not daemon.url:
                line = (await process.stdout.readline()).decode()
                if not line:
                    raise AssertionError(f"daemon exited before listening: {log.read_text()}")
                daemon.output.append(line.rstrip("\n"))
                if match := _LISTENING.search(line):
                    daemon.url = match.group(1)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.returncode is None:
            daemon.process.kill()
            await daemon.process.wait()


async def _spawn(settings_file: Path, stderr: IO[bytes]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "delivery",
        "serve",
        "--config",
        str(settings_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env=daemon_environment(),
        cwd=settings_file.parent,
    )
