"""Explain fixtures: a daemon (store, worker, API) on a harness lab, asked ``x:Explain/get``.

``explain_daemon(lab)`` starts `delivery serve`'s store, worker and api components in the
test's event loop (tests/integration/conftest.py's ``start_daemon``), with two API tokens:
`ADMIN_TOKEN` (every permission) and `NO_EXPLAIN_TOKEN` (every permission but
``sysExplainGet``). The DNSSEC probe asks the lab's first signed zone when it has one (so
DANE is in use there), else the root (the lab does not serve it: DANE unavailable).

    daemon = await explain_daemon(lab)
    explained = await daemon.explain("b@plain.test")          # the explanation JSON
    delivered = await daemon.deliver("b@plain.test")          # then a real delivery
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from delivery.cli import serve
from delivery.engine import worker as engine_worker
from delivery.harness import lab as harness_lab
from delivery.queue import model
from tests.integration.conftest import Daemon, StartDaemon, start_daemon  # noqa: F401 (fixture)
from tests.plugins.api import USING, free_port

ADMIN_TOKEN = "explain-admin"
NO_EXPLAIN_TOKEN = "explain-none"
SENDER = "a@sender.test"


@dataclasses.dataclass(frozen=True, slots=True)
class Delivered:
    """What the real delivery did: the first recorded outcome and the stored recipient."""

    settled: engine_worker.Settled
    recipient: model.QueuedRecipient


@dataclasses.dataclass
class ExplainDaemon:
    """A running daemon with the API, on a lab."""

    daemon: Daemon
    lab: harness_lab.Lab
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        assert self.daemon.runtime.api_url is not None
        return self.daemon.runtime.api_url + "/api"

    async def call(self, arguments: dict[str, Any], *, token: str = ADMIN_TOKEN) -> list[Any]:
        """One ``x:Explain/get`` call; its [name, arguments, callId]."""
        body = {"using": USING, "methodCalls": [["x:Explain/get", arguments, "c1"]]}
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.post(self.url, json=body, headers=headers) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
        [response_call] = answer["methodResponses"]
        return list(response_call)

    async def explain(self, recipient: str, sender: str = SENDER) -> dict[str, Any]:
        """The explanation JSON of ``recipient``."""
        name, arguments, _ = await self.call({"recipient": recipient, "sender": sender})
        assert name == "x:Explain/get", arguments
        [explained] = arguments["list"]
        assert isinstance(explained, dict)
        return explained

    async def deliver(self, recipient: str, sender: str = SENDER) -> Delivered:
        """Queue a message to ``recipient``; its first recorded outcome."""
        world = self.daemon.world
        message_id = await world.send(sender, [recipient])
        outcomes = await self.daemon.outcomes(recipient)
        [stored] = await world.recipients(message_id)
        return Delivered(outcomes[recipient], stored)


MakeExplainDaemon = Callable[..., Awaitable[ExplainDaemon]]


@pytest.fixture
async def explain_daemon(start_daemon: StartDaemon) -> AsyncIterator[MakeExplainDaemon]:  # noqa: F811
    """A factory of daemons with the API on a lab (see the module docstring)."""
    async with aiohttp.ClientSession() as http:

        async def make(lab: harness_lab.Lab, **settings: dict[str, Any]) -> ExplainDaemon:
            everything_but_explain = ["sysQueuedMessageGet", "sysMtaTlsStrategyGet"]
            api = {
                "listen": f"127.0.0.1:{free_port()}",
                "tokens": [
                    {"name": "admin", "secret": ADMIN_TOKEN, "permissions": ["*"]},
                    {
                        "name": "no-explain",
                        "secret": NO_EXPLAIN_TOKEN,
                        "permissions": everything_but_explain,
                    },
                ],
            }
            probe = lab.settings()["dns"].get("dnssec_probe")
            daemon = await start_daemon(
                lab,
                dnssec_probe=str(probe) if probe else None,
                components=(serve.store, serve.worker, serve.api),
                settings={"api": api, **settings},
            )
            return ExplainDaemon(daemon, lab, http)

        yield make
