"""`delivery serve [--config FILE]`: the daemon.

Loads the settings, then starts the daemon's components in the order of `COMPONENTS`, each an
async context manager, and runs until SIGTERM or SIGINT (Ctrl-C); it then unwinds them in
reverse order (STYLE §15): the API stops taking requests before the registry closes.

    store        registry, queue and (``[tlsrpt] enabled``) the TLS-RPT aggregates, all in the
                 one database ``[store] url`` names (SQLite file or PostgreSQL)
    worker       the delivery worker, its MTA-STS resolver and DNSSEC probe; /healthz "worker"
                 and "dns" (degraded while the resolver does not validate DNSSEC: no DANE);
                 the delivery metrics (engine/metrics.py) in the /metrics registry
    tlsrpt       the daily TLS reports (RFC 8460): `send_reports` every hour, in a task it
                 owns; mail reports are queued with source ``report`` (null sender)
    submission   the SMTP submission listener
    api          the management API, /healthz and /metrics

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

from delivery import admin, config, expr, storage
from delivery.api import bootstrap, health, metrics, server
from delivery.api import explain as api_explain
from delivery.api import queue as api_queue
from delivery.dns import names as dns_names
from delivery.engine import attempt as engine_attempt
from delivery.engine import eventloop, intake
from delivery.engine import metrics as engine_metrics
from delivery.engine import worker as engine_worker
from delivery.errors import ConfigError, DeliveryError
from delivery.policy import tlsrpt_send, tlsrpt_store
from delivery.queue import model
from delivery.queue import store as queue_store
from delivery.registry.service import Registry
from delivery.submit import credentials as submit_credentials
from delivery.submit import listener as submit_listener
from delivery.submit import planning as submit_planning

__all__ = [
    "COMPONENTS",
    "Component",
    "Runtime",
    "report_sender",
    "run_daemon",
    "send_reports",
    "serve",
]

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
    tlsrpt: tlsrpt_store.TlsRptStore | None = None
    """The TLS-RPT aggregates; set by `store` when ``[tlsrpt] enabled``."""
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
    """Open every store on ``[store] url`` (`storage.open_stores`: the registry with its
    first-start objects, the queue and the TLS-RPT aggregates); report in /healthz."""
    async with storage.open_stores(runtime.settings) as stores:
        registry, queue = stores.registry, stores.queue
        runtime.registry, runtime.queue, runtime.tlsrpt = registry, queue, stores.tlsrpt
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
            runtime.tlsrpt = None


@contextlib.asynccontextmanager
async def worker(runtime: Runtime) -> AsyncIterator[None]:
    """Run the delivery worker; it drains in-flight deliveries when the daemon stops."""
    settings = runtime.settings
    registry, queue = runtime.require_registry(), runtime.require_queue()
    delivery_metrics = engine_metrics.DeliveryMetrics(runtime.metrics_registry)
    delivery_worker = engine_worker.build_worker(
        settings, registry, queue, tlsrpt=runtime.tlsrpt, metrics=delivery_metrics
    )
    delivery_metrics.watch(
        queue=queue,
        queue_names=lambda: [q.name for q in registry.snapshot().virtual_queues],
        dns_cache=delivery_worker.resolver.cache,
        mta_sts=delivery_worker.mta_sts,
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
        listed = ", ".join(dns_names.format_nameserver(server) for server in servers)
        probe = delivery_worker.dnssec
        # A resolver that does not validate leaves every signed domain without DANE: the
        # daemon works, with a weaker guarantee than its operator asked for.
        status: health.Status = "degraded" if probe.state in ("not-validating", "off") else "ok"
        return health.Health(
            status,
            f"{probe.describe()}; nameservers {listed}; "
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


def report_sender(settings: config.Settings, /) -> tlsrpt_send.ReportSender:
    """report_sender - who signs the TLS reports: ``[tlsrpt]``, else derived from ``hostname``."""
    default = tlsrpt_send.ReportSender.for_host(settings.hostname)
    contact = settings.tlsrpt.contact or default.contact_info
    return tlsrpt_send.ReportSender(
        organization_name=settings.tlsrpt.organization or default.organization_name,
        contact_info=contact,
        from_address=contact,
        reporting_mta=settings.hostname,
    )


async def send_reports(runtime: Runtime, /, *, now: int) -> tlsrpt_send.RunSummary | None:
    """send_reports - one run of the daily TLS reports (`tlsrpt_send.run_daily`) at ``now``.

    Mail reports are queued like any mail (the ``schedule`` expression places them, with
    source ``report`` and a null sender: a report that bounces must not bounce back), and the
    worker is woken. None when TLS reports are disabled, or when another node sharing the
    database runs them now (`TlsRptStore.claim_daily_run`: one node a run, so that a report
    leaves once).

    :param now: epoch ms: which days are finished (the reports of a UTC day leave from 00:15
        the next day). The queued mail itself is stamped with the real time.
    :raises TlsRptStoreError: the aggregates cannot be read.
    """
    reports = runtime.tlsrpt
    if reports is None or not await reports.claim_daily_run(now=now):
        return None
    settings = runtime.settings
    registry, queue = runtime.require_registry(), runtime.require_queue()
    delivery_worker = runtime.require_worker()
    env = expr.Environment(local_domains=frozenset(settings.local.domains))
    lookup = engine_attempt.make_lookup(delivery_worker.resolver)

    async def enqueue_report(message: bytes, to: str) -> None:
        received = model.now_ms()
        new = model.NewMessage(
            sender="", body=message, source=model.MessageSource.REPORT, received_at=received
        )
        planned = await intake.plan_recipients(
            registry.snapshot(),
            new,
            [intake.RecipientRequest(to)],
            env=env,
            lookup=lookup,
            now=received,
        )
        await queue.enqueue(new, planned)
        delivery_worker.wake()

    return await tlsrpt_send.run_daily(
        reports,
        sender=report_sender(settings),
        resolver=delivery_worker.resolver,
        enqueue_report=enqueue_report,
        ca_file=settings.tls.ca_file,
        now=now,
    )


@contextlib.asynccontextmanager
async def tlsrpt(runtime: Runtime) -> AsyncIterator[None]:
    """Send the TLS reports of finished days: at start, then every hour (RFC 8460 §5)."""
    runtime.require_worker()

    async def every_hour() -> None:
        while True:
            try:
                await send_reports(runtime, now=model.now_ms())
            except tlsrpt_store.TlsRptStoreError as exc:
                log.error("TLS reports not sent: %s; trying again in an hour", exc)
            except Exception:  # the reports must outlive any one bug: log, wait, go on
                log.exception("TLS reports failed; trying again in an hour")
            await asyncio.sleep(tlsrpt_send.RUN_INTERVAL_MS / 1000)

    task = asyncio.create_task(every_hour(), name="tls reports")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])


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
    """Serve the management API on ``[api] listen``; prints the first-start admin token.

    With the worker running, ``x:Explain/get`` explains with its resolver and MTA-STS cache,
    and ``x:QueuedMessage`` serves the queue (a retry or a cancel DSN wakes the worker).
    """
    registry = runtime.require_registry()
    tokens = await bootstrap.load_tokens(registry, runtime.settings.api.tokens)
    host, port = config.host_port(runtime.settings.api.listen, allow_port_zero=True)
    handlers = {}
    if runtime.worker is not None:
        handlers.update(api_explain.handlers(runtime.settings, registry, runtime.worker))
        queued = api_queue.QueuedMessages.for_daemon(
            runtime.settings,
            registry,
            runtime.require_queue(),
            resolver=runtime.worker.resolver,
            wake=runtime.worker.wake,
        )
        handlers.update(queued.handlers())
    admin_options = admin.AdminOptions(
        frozenset(runtime.settings.local.domains),
        engine_attempt.make_lookup(runtime.worker.resolver) if runtime.worker else None,
    )
    async with server.ApiServer(
        registry,
        tokens.table,
        host=host,
        port=port,
        health_checks=runtime.health_checks,
        metrics_registry=runtime.metrics_registry,
        handlers=handlers,
        admin_options=admin_options,
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


COMPONENTS: tuple[Component, ...] = (store, worker, tlsrpt, submission, api)
"""The daemon's parts, started in this order and stopped in reverse: the API (and its health
report) comes up last, once everything it reports on runs, and stops first; the worker stops
before the store closes, so that in-flight deliveries are recorded or handed back; the TLS
reports stop before the worker they queue mail for."""


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
        eventloop.run(_main(settings))  # uvloop when installed
    except (OSError, DeliveryError) as exc:
        click.echo(f"error: cannot start: {exc}", err=True)
        sys.exit(1)
