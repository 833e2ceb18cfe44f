"""Named health checks, reported together by `GET /healthz`.

Each component adds its own check when it starts (the store, the resolver, the worker, ...);
`HealthChecks.report()` runs them concurrently, each within `HEALTH_CHECK_TIMEOUT_S`. A name
that is expected but has no check yet reports ``not-started``, so that a probe sees which parts
of the daemon are not running rather than a shorter list.

Outcomes (per check, and overall):
    ok           the component works
    degraded     it works with a reduced guarantee (e.g. DNSSEC validation unavailable)
    failed       it does not work; the overall status is then failed (HTTP 503)
    not-started  no check registered yet under an expected name; does not fail the report

Security:
    The report is served without authentication. A check's ``detail`` must never carry
    secrets (store passwords, tokens); when a check raises, only the exception's class name is
    reported, and the full error goes to the log.

Limits: HEALTH_CHECK_TIMEOUT_S bounds each check, so that one hung component cannot hang the
probe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "HEALTH_CHECK_TIMEOUT_S",
    "Health",
    "HealthCheck",
    "HealthChecks",
    "Status",
]

log = logging.getLogger("delivery.api.health")

HEALTH_CHECK_TIMEOUT_S = 2.0
"""Each check's deadline: a probe (load balancer, orchestrator) must get an answer quickly."""

Status = Literal["ok", "degraded", "failed", "not-started"]


@dataclass(frozen=True, slots=True)
class Health:
    """One component's state; ``detail`` is a short operator-facing sentence or empty."""

    status: Status
    detail: str = ""


HealthCheck = Callable[[], Awaitable[Health]]


def overall(statuses: Iterable[Status]) -> Literal["ok", "degraded", "failed"]:
    """The report's status: the worst of its checks, not-started counting as ok.

    >>> overall(["ok", "not-started"]), overall(["ok", "degraded"]), overall(["failed", "ok"])
    ('ok', 'degraded', 'failed')
    """
    seen = set(statuses)
    if "failed" in seen:
        return "failed"
    if "degraded" in seen:
        return "degraded"
    return "ok"


class HealthChecks:
    """The daemon's health checks, by component name.

    :param expected: names reported as ``not-started`` until a check is added under them.
    """

    def __init__(self, expected: Iterable[str] = ()) -> None:
        self._expected = tuple(expected)
        self._checks: dict[str, HealthCheck] = {}

    def add(self, name: str, check: HealthCheck, /) -> None:
        """Register ``check`` under ``name``, replacing an earlier one of that name."""
        self._checks[name] = check

    def remove(self, name: str, /) -> None:
        """Forget the check of a component that stopped (it reports not-started again)."""
        self._checks.pop(name, None)

    async def report(self) -> dict[str, object]:
        """Run every check; returns ``{"status": ..., "checks": {name: {"status", "detail"}}}``."""
        names = list(dict.fromkeys([*self._expected, *self._checks]))
        results = await asyncio.gather(*(self._run(name) for name in names))
        checks = {
            name: {"status": health.status, "detail": health.detail}
            for name, health in zip(names, results, strict=True)
        }
        return {"status": overall(h.status for h in results), "checks": checks}

    async def _run(self, name: str) -> Health:
        check = self._checks.get(name)
        if check is None:
            return Health("not-started")
        try:
            async with asyncio.timeout(HEALTH_CHECK_TIMEOUT_S):
                return await check()
        except TimeoutError:
            return Health("failed", f"no answer within {HEALTH_CHECK_TIMEOUT_S:g}s")
        except Exception as exc:  # a health probe reports every failure, it never raises
            log.warning("health check %s failed", name, exc_info=True)
            return Health("failed", f"check raised {type(exc).__name__}")
