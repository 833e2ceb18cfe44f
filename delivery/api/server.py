"""Run the management API on a TCP listener, as an async context manager.

    host, port = config.host_port(settings.api.listen)
    async with ApiServer(registry, tokens, host=host, port=port,
                         health_checks=checks, metrics_registry=registry_of_metrics) as api:
        print(api.url)            # the bound address: port 0 asks the OS for a free port

On exit, the listener closes, in-flight requests get SHUTDOWN_TIMEOUT_S to finish, and the
application is cleaned up. The registry stays open: its owner closes it after the API.

`store_health(registry)` is the ``store`` health check: a trivial registry read.

Outcomes:
    __aenter__ raises OSError when the address cannot be bound (in use, not local).

Limits: SHUTDOWN_TIMEOUT_S bounds how long a stop waits for in-flight requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType

from aiohttp import web

from delivery import admin
from delivery.api import auth, health, metrics
from delivery.api.app import make_app
from delivery.api.methods import MethodHandler, RegistryLike

__all__ = ["HEALTH_META_KEY", "SHUTDOWN_TIMEOUT_S", "ApiServer", "store_health"]

SHUTDOWN_TIMEOUT_S = 5.0
"""How long a stop waits for in-flight API requests: they are short registry calls."""

HEALTH_META_KEY = "api.health"
"""The meta key the store health check reads (it need not exist)."""


def store_health(registry: RegistryLike, /) -> health.HealthCheck:
    """The ``store`` health check: ok when a trivial registry read succeeds."""

    async def check() -> health.Health:
        await registry.get_meta(HEALTH_META_KEY)
        return health.Health("ok")

    return check


class ApiServer:
    """The API application bound to ``host`` and ``port`` (0: a free port the OS picks).

    :param handlers: extra JMAP methods by name (see `make_app`).
    :param admin_options: the web admin's local domains and DNS lookup (see `make_app`).
    """

    def __init__(
        self,
        registry: RegistryLike,
        tokens: auth.TokenTable,
        *,
        host: str,
        port: int,
        health_checks: health.HealthChecks,
        metrics_registry: metrics.MetricsRegistry,
        handlers: Mapping[str, MethodHandler] | None = None,
        admin_options: admin.AdminOptions | None = None,
    ) -> None:
        self._app = make_app(
            registry,
            tokens,
            health_checks=health_checks,
            metrics_registry=metrics_registry,
            handlers=handlers,
            admin_options=admin_options,
        )
        self._runner: web.AppRunner | None = None
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """The base URL of the bound listener, e.g. ``http://127.0.0.1:8080``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> ApiServer:
        runner = web.AppRunner(
            self._app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S, handle_signals=False
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]  # the real port when 0 was asked for
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
