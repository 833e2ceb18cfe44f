"""The daemon's own components over a harness lab, for the queue commands.

``queue_daemon`` runs `delivery serve`'s components (store, worker, submission, api) in the
test's event loop, with settings pointing at a lab of three mail domains:

    dest.test    its MX answers 451 to RCPT: mail there is deferred (retry in 2 minutes,
                 the default ``remote`` schedule), until a test changes the script
    ok.test      its MX accepts: mail there is delivered
    origin.test  the senders' domain; its MX accepts, so a DSN to a sender arrives there

Mail enters by SMTP submission (`QueueDaemon.submit`, DSN parameters included); the API is
called raw (`QueueDaemon.call`) or through the CLI (`QueueDaemon.cli`, `delivery queue ...`
run by click in a thread, against the daemon's URL). Tokens: `ADMIN` (``*``), `READER` (get
and query of QueuedMessage), `OUTSIDER` (no queue permission).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import pytest
from click.testing import CliRunner, Result

from delivery import config
from delivery.cli import serve
from delivery.cli.main import main as cli_main
from delivery.engine import worker as engine_worker
from delivery.harness import lab as harness_lab
from tests.plugins.api import USING, free_port
from tests.plugins.harness import MakeLab

ADMIN = "queue-admin-token"
READER = "queue-reader-token"
OUTSIDER = "queue-outsider-token"
SCENARIO = {
    "domains": {
        "dest.test": {
            "mx": [{"name": "mx1.dest.test", "replies": {"rcpt": {"*": "451 4.3.0 try later"}}}]
        },
        "ok.test": {"mx": [{"name": "mx1.ok.test"}]},
        "origin.test": {"mx": [{"name": "mx1.origin.test"}]},
    }
}
_QUEUED_AS = re.compile(r"queued as (\S+)")


@dataclass
class QueueDaemon:
    """A running daemon, its lab and the ways in: SMTP submission, the API, the CLI."""

    runtime: serve.Runtime
    lab: harness_lab.Lab
    submission_port: int
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        assert self.runtime.api_url is not None
        return self.runtime.api_url

    @property
    def worker(self) -> engine_worker.Worker:
        return self.runtime.require_worker()

    async def submit(
        self,
        sender: str,
        *recipients: str,
        notify: str | None = None,
        ret: str | None = None,
        subject: str = "queued",
    ) -> str:
        """Submit a message over SMTP; returns its queue id."""
        body = f"Subject: {subject}\r\nMessage-ID: <{subject}@origin.test>\r\n\r\nhello\r\n"
        _, reply = await aiosmtplib.send(
            body.encode(),
            sender=sender,
            recipients=list(recipients),
            hostname="127.0.0.1",
            port=self.submission_port,
            start_tls=False,
            mail_options=[f"RET={ret}"] if ret else [],
            rcpt_options=[f"NOTIFY={notify}"] if notify else [],
        )
        match = _QUEUED_AS.search(reply)
        assert match, reply
        return match.group(1)

    async def settled(self, *addresses: str, timeout_s: float = 15.0) -> None:
        """Wait until each of ``addresses`` has an outcome recorded."""
        async with asyncio.timeout(timeout_s):
            while not {s.address for s in self.worker.settled} >= set(addresses):
                await self.worker.wait_settled(self.worker.settled_total + 1, timeout_s=timeout_s)

    async def deferred(self, sender: str, *recipients: str, **options: Any) -> str:
        """Submit a message and wait until its recipients were tried (and deferred)."""
        message_id = await self.submit(sender, *recipients, **options)
        await self.settled(*recipients)
        return message_id

    async def call(
        self, method: str, arguments: dict[str, Any], *, token: str = ADMIN
    ) -> list[Any]:
        """One JMAP call; returns its [name, arguments, callId]."""
        body = {"using": USING, "methodCalls": [[method, arguments, "c"]]}
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.post(self.url + "/api", json=body, headers=headers) as response:
            assert response.status == 200, await response.text()
            answer: list[Any] = (await response.json())["methodResponses"][0]
            return answer

    async def message(self, message_id: str) -> dict[str, Any]:
        """The QueuedMessage ``message_id`` as /get returns it."""
        _, result, _ = await self.call("x:QueuedMessage/get", {"ids": [message_id]})
        [found] = result["list"]
        found_message: dict[str, Any] = found
        return found_message

    async def cli(self, *args: str, token: str = ADMIN) -> Result:
        """``delivery queue ARGS`` against this daemon (in a thread: the daemon runs here)."""
        argv = ["queue", *args, "--url", self.url, "--token", token]
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, cli_main, argv, catch_exceptions=False)

    async def cli_json(self, *args: str) -> Any:
        """``delivery queue ARGS --json``, parsed; asserts exit status 0."""
        result = await self.cli(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


def _tokens() -> list[dict[str, Any]]:
    reader = ["sysQueuedMessageGet", "sysQueuedMessageQuery"]
    return [
        {"name": "admin", "secret": ADMIN, "permissions": ["*"]},
        {"name": "reader", "secret": READER, "permissions": reader},
        {"name": "outsider", "secret": OUTSIDER, "permissions": ["sysMtaTlsStrategyGet"]},
    ]


COMPONENTS: Sequence[serve.Component] = (serve.store, serve.worker, serve.submission, serve.api)
"""The daemon's components this needs: everything but the hourly TLS reports."""


@pytest.fixture
async def queue_daemon(make_lab: MakeLab, tmp_path: Path) -> AsyncIterator[QueueDaemon]:
    """A daemon (store, worker, submission, API) over the three-domain lab."""
    lab = await make_lab(SCENARIO)
    submission_port = free_port()
    data: dict[str, Any] = {
        "hostname": "mta.queue.test",
        "store": {"url": f"sqlite://{tmp_path}/delivery.db"},
        "api": {"listen": f"127.0.0.1:{free_port()}", "tokens": _tokens()},
        "submission": {"listen": f"127.0.0.1:{submission_port}"},
        "tlsrpt": {"enabled": False},  # not what these tests are about
        **lab.settings(),
    }
    data["dns"] = {**data["dns"], "dnssec_probe": "."}
    runtime = serve.Runtime(config.Settings.model_validate(data))
    async with contextlib.AsyncExitStack() as stack:
        for component in COMPONENTS:
            await stack.enter_async_context(component(runtime))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield QueueDaemon(runtime, lab, submission_port, http)
