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
from delivery.engine import attempt as engine_attempt
from delivery.engine import worker as engine_worker
from delivery.errors import ConfigError, DeliveryError
from delivery.queue import sqlite as queue_sqlite
from delivery.queue import store as queue_store
from delivery.registry.service import Registry
from delivery.submit import credentials as submit_credentials
from delivery.submit import listener as submit_listener
from delivery.submit import planning as submit_planning

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
    queue: queue_store.QueueStore | None = None
    """The message queue; set by `store`."""
    worker: engine_worker.Worker | None = None
    """The delivery worker; set by `worker`."""
    api_url: str | None = None
    """The API's bound base URL; set by `api`."""

    def require_registry(self) -> Registry:
        """The registry, for components started after `store`."""
        if self.registry is None:
            raise RuntimeError("the store component must start before this one")
        return self.registry

    def require_worker(self) -> engine_worker.Worker:
        """The delivery worker, for components started after `worker`."""
        if self.worker is None:
            raise RuntimeError("the worker component must start before this one")
        return self.worker

    def require_queue(self) -> queue_store.QueueStore:
        """The queue store, for components started after `store`."""
        if self.queue is None:
            raise RuntimeError("the store component must start before this one")
        return self.queue


Component = Callable[[Runtime], AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def store(runtime: Runtime) -> AsyncIterator[None]:
    """Open the registry (creating the first-start objects) and the queue; report in /healthz."""
    url = runtime.settings.store.url
    if not url.startswith(config.SQLITE_SCHEME):
        raise ConfigError("store.url", "only sqlite:// stores are supported in this version")
    registry = await Registry.open(url)
    try:
        queue = await queue_sqlite.SqliteQueueStore.open(config.sqlite_path(url))
    except BaseException:
        await registry.close()
        raise
    runtime.registry, runtime.queue = registry, queue
    registry_health = server.store_health(registry)

    async def store_health() -> health.Health:
        await queue.due_soonest()
        return await registry_health()

    runtime.health_checks.add("store", store_health)
    try:
        yield
    finally:
        runtime.health_checks.remove("store")
        runtime.registry = runtime.queue = None
        try:
            await queue.close()
        finally:
            await registry.close()


@contextlib.asynccontextmanager
async def worker(runtime: Runtime) -> AsyncIterator[None]:
    """Run the delivery worker; it drains in-flight deliveries when the daemon stops."""
    settings = runtime.settings
    delivery_worker = engine_worker.build_worker(
        settings, runtime.require_registry(), runtime.require_queue()
    )
    servers = settings.dns.servers()

    async def worker_health() -> health.Health:
        if not delivery_worker.running:
            return health.Health("failed", "the delivery worker is not running")
        return health.Health("ok", f"{delivery_worker.in_flight} deliveries in flight")

    async def dns_health() -> health.Health:
        if not servers:
            return health.Health("failed", "no nameserver: set [dns] nameservers")
        cache = delivery_worker.resolver.cache
        listed = ", ".join(f"{host}:{port}" for host, port in servers)
        return health.Health(
            "ok",
            f"nameservers {listed}; dnssec {settings.dns.dnssec}; "
            f"cache {cache.hits} hits, {cache.misses} misses",
        )

    async with delivery_worker:
        runtime.worker = delivery_worker
        runtime.health_checks.add("worker", worker_health)
        runtime.health_checks.add("dns", dns_health)
        try:
            yield
        finally:
            runtime.health_checks.remove("dns")
            runtime.health_checks.remove("worker")
            runtime.worker = None


@contextlib.asynccontextmanager
async def submission(runtime: Runtime) -> AsyncIterator[None]:
    """SMTP submission on ``[submission] listen``; each queued message wakes the worker."""
    settings, sub = runtime.settings, runtime.settings.submission
    registry, delivery_worker = runtime.require_registry(), runtime.require_worker()
    host, port = config.host_port(sub.listen, allow_port_zero=True)
    plan = submit_planning.make_planner(
        registry.snapshot,
        local_domains=settings.local.domains,
        lookup=engine_attempt.make_lookup(delivery_worker.resolver),
    )
    users = {user.name: user.digest() for user in sub.users}
    async with submit_listener.SubmissionListener(
        runtime.require_queue(),
        plan,
        hostname=settings.hostname,
        host=host,
        port=port,
        networks=sub.networks,
        tls_cert=sub.tls_cert,
        tls_key=sub.tls_key,
        credentials=submit_credentials.Credentials(users) if users else None,
        require_auth=sub.require_auth,
        auth_in_clear=sub.auth_in_clear,
        max_message_bytes=sub.max_message_size,
        max_recipients=sub.max_recipients,
        max_sessions=sub.max_sessions,
        idle_timeout_s=sub.idle_timeout_ms / 1000,
        on_enqueued=delivery_worker.wake,
    ) as listener:
        listen_host, listen_port = listener.address
        click.echo(f"SMTP submission listening on {listen_host}:{listen_port}")
        sys.stdout.flush()
        yield


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


COMPONENTS: tuple[Component, ...] = (store, worker, submission, api)
"""The daemon's parts, started in this order and stopped in reverse: the API (and its health
report) comes up last, once everything it reports on runs, and stops first; the worker stops
before the store closes, so that in-flight deliveries are recorded or handed back."""


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
    """Run the daemon: delivery worker, SMTP submission listener and management API."""
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
