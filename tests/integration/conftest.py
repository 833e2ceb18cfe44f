"""The daemon's own components over a harness lab: the fixtures of the integration tests.

``start_daemon(lab, ...)`` runs `delivery serve`'s components (store, worker, by default) in
the test's event loop, with settings pointing at the lab (its DNS server, SMTP port and CA),
and returns a `Daemon`: the `serve.Runtime` the components share and an `EngineWorld` view of
it (``send``, ``update``, ``outbound``, ``worker.wait_settled``). Everything real: the worker
built by `build_worker` with its resolver, MTA-STS resolver and DNSSEC probe, the TLS-RPT store
on the queue's database file, real TLS to the lab's receivers and HTTPS to its policy server
(port 443 of its own loopback address). Schedules ``remote``, ``dsn`` and ``report`` retry
every second, so a retry happens within a test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from delivery import config
from delivery.cli import serve
from delivery.engine import worker as engine_worker
from delivery.harness import lab as harness_lab
from delivery.policy import tlsrpt_store
from delivery.queue.sqlite import SqliteQueueStore
from tests.plugins.engine import EngineWorld

HOSTNAME = "mta.integration.test"
DNS_TIMEOUT_MS = 1000  # a lookup the harness times out costs one second, not five
RETRY_MS = 1000


@dataclass
class Daemon:
    """The running components and a handle to drive them."""

    runtime: serve.Runtime
    world: EngineWorld

    @property
    def tlsrpt(self) -> tlsrpt_store.TlsRptStore:
        assert self.runtime.tlsrpt is not None, "TLS reports are disabled in this daemon"
        return self.runtime.tlsrpt

    async def outcomes(
        self, *addresses: str, timeout_s: float = 15.0
    ) -> dict[str, engine_worker.Settled]:
        """Wait until each of ``addresses`` has an outcome recorded; the latest of each.

        (DSNs to the sender settle too, so a count of outcomes is not enough.)
        """
        worker = self.world.worker
        async with asyncio.timeout(timeout_s):
            while True:
                latest = {s.address: s for s in worker.settled}
                if all(address in latest for address in addresses):
                    return {address: latest[address] for address in addresses}
                await worker.wait_settled(worker.settled_total + 1, timeout_s=timeout_s)


StartDaemon = Callable[..., Awaitable[Daemon]]


@pytest.fixture
async def start_daemon(tmp_path: Path) -> AsyncIterator[StartDaemon]:
    """A factory of in-process daemons on a lab; each is stopped after the test."""
    started: list[Daemon] = []
    async with contextlib.AsyncExitStack() as stacks:

        async def start(
            lab: harness_lab.Lab,
            *,
            dnssec_probe: str | None = None,
            components: Sequence[serve.Component] = (serve.store, serve.worker),
            settings: dict[str, Any] | None = None,
        ) -> Daemon:
            """Start ``components`` on ``lab``.

            :param dnssec_probe: the signed name the DNSSEC probe asks (a secure zone of the
                lab); None asks the default root, which the lab does not serve: the
                resolver then counts as not validating and DANE is unavailable.
            :param settings: more settings sections, merged over the lab's.
            """
            folder = tmp_path / f"daemon{len(started)}"
            data: dict[str, Any] = {
                "hostname": HOSTNAME,
                "store": {"url": f"sqlite://{folder}/delivery.db"},
                **lab.settings(),
            }
            data["dns"] = {**data["dns"], "timeout": DNS_TIMEOUT_MS}
            data["dns"]["dnssec_probe"] = dnssec_probe or "."
            for section, values in (settings or {}).items():
                data[section] = {**data.get(section, {}), **values}
            runtime = serve.Runtime(config.Settings.model_validate(data))
            stack = contextlib.AsyncExitStack()
            await stacks.enter_async_context(stack)
            for component in components:
                await stack.enter_async_context(component(runtime))
            queue = runtime.require_queue()
            assert isinstance(queue, SqliteQueueStore)
            worker = runtime.require_worker()
            world = EngineWorld(
                lab, runtime.settings, runtime.require_registry(), queue, worker.resolver, worker
            )
            for schedule in ("remote", "dsn", "report"):
                await world.update("MtaDeliverySchedule", schedule, retry=[RETRY_MS])
            started.append(Daemon(runtime, world))
            return started[-1]

        yield start
