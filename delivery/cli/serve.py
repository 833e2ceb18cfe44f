"""`delivery serve [--config FILE]`: the daemon.

Loads the settings, then starts the daemon's components in the order of `COMPONENTS`, each an
async context manager, and runs until SIGTERM or SIGINT (Ctrl-C); it then unwinds them in
reverse order (STYLE §15): the API stops taking requests before the registry closes.

Outcomes (exit status):
    0  stopped by SIGTERM or SIGINT, every component closed
    1  a component could not start (address in use, store unreachable); the message says which
    2  the settings are invalid (the message names the setting)

Prints to stdout, once per start: where the API listens; and on the first start without
``[[api.tokens]]`` the admin token, which is stored only as a SHA-256 and never shown again.

Security: the admin token goes to stdout only, never to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import click

from delivery import config
from delivery.api import bootstrap, health, metrics, server
from delivery.errors import ConfigError, DeliveryError
from delivery.registry.service import Registry

__all__ = ["COMPONENTS", "Component", "Runtime", "run_daemon", "serve"]

log = logging.getLogger("delivery.serve")

EXPECTED_HEALTH_CHECKS = ("store", "dns", "worker")
"""Reported by /healthz from the start: not-started until their component adds its check."""


@dataclass(slots=True)
class Runtime:
    """What the components of one daemon share; each fills in what it provides."""

    settings: config.Settings
    health_checks: health.HealthChecks = field(
        default_factory=lambda: health.HealthChecks(EXPECTED_HEALTH_CHECKS)
    )
    metrics_registry: metrics.MetricsRegistry = field(default_factory=metrics.MetricsRegistry)
    registry: Registry | None = None
    """The managed objects; set by `store`, the first component."""
    api_url: str | None = None
    """The API's bound base URL; set by `api`."""

    def require_registry(self) -> Registry:
        """The registry, for components started after `store`."""
        if self.registry is None:
            raise RuntimeError("the store component must start before this one")
        return self.registry


Component = Callable[[Runtime], AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def store(runtime: Runtime) -> AsyncIterator[None]:
    """Open the registry (creating the first-start objects) and report it in /healthz."""
    registry = await Registry.open(runtime.settings.store.url)
    runtime.registry = registry
    runtime.health_checks.add("store", server.store_health(registry))
    try:
        yield
    finally:
        runtime.health_checks.remove("store")
        runtime.registry = None
        await registry.close()


@contextlib.asynccontextmanager
async def api(runtime: Runtime) -> AsyncIterator[None]:
    """Serve the management API on ``[api] listen``; prints the first-start admin token."""
    registry = runtime.require_registry()
    tokens = await bootstrap.load_tokens(registry, runtime.settings.api.tokens)
    host, port = config.host_port(runtime.settings.api.listen)
    async with server.ApiServer(
        registry,
        tokens.table,
        host=host,
        port=port,
        health_checks=runtime.health_checks,
        metrics_registry=runtime.metrics_registry,
    ) as listener:
        runtime.api_url = listener.url
        if tokens.new_admin_secret is not None:
            await bootstrap.keep_admin_token(registry, tokens)
            click.echo(
                "No API token is configured, so an admin token was created. It is shown only "
                "this once; store it now (only its SHA-256 is kept):\n"
                f"  DELIVERY_TOKEN={tokens.new_admin_secret}"
            )
        click.echo(f"Management API listening on {listener.url} (JMAP at {listener.url}/api)")
        sys.stdout.flush()
        yield


COMPONENTS: tuple[Component, ...] = (store, api)
"""The daemon's parts, started in this order and stopped in reverse. The delivery worker and
the submission listener go between `store` and `api`, so that the API (and its health report)
comes up last, once everything it reports on runs, and stops first."""


async def run_daemon(
    settings: config.Settings,
    stop: asyncio.Event,
    *,
    components: Sequence[Component] = COMPONENTS,
) -> None:
    """Start ``components`` in order, wait for ``stop``, unwind them in reverse."""
    runtime = Runtime(settings)
    async with contextlib.AsyncExitStack() as stack:
        for component in components:
            await stack.enter_async_context(component(runtime))
        log.info("delivery started (settings from %s)", settings.source)
        await stop.wait()
        log.info("stopping")


async def _main(settings: config.Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await run_daemon(settings, stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


@click.command("serve")
@click.option(
    "--config",
    "cfg",
    type=click.Path(dir_okay=False),
    help="Settings file (default: ./delivery.toml if present, else the embedded defaults).",
)
def serve(cfg: str | None) -> None:
    """Run the daemon: management API (and, as they land, worker and submission listener)."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        settings = config.load(cfg)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    try:
        asyncio.run(_main(settings))
    except (OSError, DeliveryError) as exc:
        click.echo(f"error: cannot start: {exc}", err=True)
        sys.exit(1)
