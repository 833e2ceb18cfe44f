"""The management API as an aiohttp application (DESIGN §6).

Routes:
    POST /api              JMAP requests (RFC 8620 §3), Bearer token required
    GET  /.well-known/jmap the JMAP Session (RFC 8620 §2), Bearer token required
    GET  /healthz          health of store, DNS and worker (health.py), no token
    GET  /metrics          Prometheus text (metrics.py), no token
    /admin/...             the web admin (delivery/admin): sign-in with a token, then the
                           same Dispatcher and permissions as POST /api

Outcomes:
    200 with the JMAP Response; 400 ``application/problem+json`` for request-level errors
    (request.py); 401 with ``WWW-Authenticate: Bearer`` for a missing or unknown token;
    405 for another HTTP method; /healthz answers 503 when a check failed.

Security:
    Every JMAP byte is behind a token; /healthz and /metrics carry no secrets and no client
    input (paths outside the routes are counted as ``other``, so clients cannot grow the
    metric set). The body is read up to MAX_SIZE_REQUEST_BYTES and no further; at most
    MAX_CONCURRENT_REQUESTS requests run at once. Bind the listener to loopback or a
    management network: the API is plain HTTP; put a TLS proxy in front for remote access.

Standards: RFC 8620, RFC 6750, RFC 7807.
Limits: the caps of request.py, each advertised in the Session.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from delivery import admin
from delivery.api import auth, health, metrics, session
from delivery.api import request as jmap
from delivery.api.methods import Dispatcher, MethodHandler, RegistryLike

__all__ = [
    "HEALTH_KEY",
    "METRICS_KEY",
    "REALM",
    "REGISTRY_KEY",
    "ROUTES",
    "TOKENS_KEY",
    "make_app",
]

REALM = "delivery"
"""The Bearer realm named in WWW-Authenticate."""

ROUTES = ("/api", "/.well-known/jmap", "/healthz", "/metrics")
"""Paths counted by name in the request metric; any other path is counted as ``other``."""

REGISTRY_KEY = web.AppKey("registry", RegistryLike)
TOKENS_KEY = web.AppKey("tokens", auth.TokenTable)
HEALTH_KEY = web.AppKey("health", health.HealthChecks)
METRICS_KEY = web.AppKey("metrics", metrics.MetricsRegistry)


@dataclass(slots=True)
class _InFlight:
    """Requests currently inside POST /api (for MAX_CONCURRENT_REQUESTS)."""

    count: int = 0


_DISPATCHER_KEY = web.AppKey("dispatcher", Dispatcher)
_IN_FLIGHT_KEY = web.AppKey("in_flight", _InFlight)
_HTTP_COUNTER_KEY = web.AppKey("http_requests", metrics.Counter)

_JSON = "application/json"
_PROBLEM_JSON = "application/problem+json"


def _json_response(body: Any, *, status: int = 200, content_type: str = _JSON) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type=content_type,
    )


def _problem(problem: jmap.RequestProblem) -> web.Response:
    return _json_response(problem.to_json(), status=problem.status, content_type=_PROBLEM_JSON)


def _unauthorized(detail: str, *, presented: bool) -> web.Response:
    """401 with the RFC 6750 §3 challenge; ``invalid_token`` when a token was presented."""
    challenge = f'Bearer realm="{REALM}"'
    if presented:
        challenge += ', error="invalid_token"'
    response = _json_response(
        {"type": "about:blank", "status": 401, "title": "Unauthorized", "detail": detail},
        status=401,
        content_type=_PROBLEM_JSON,
    )
    response.headers["WWW-Authenticate"] = challenge
    return response


def _authenticate(req: web.Request) -> auth.Principal | web.Response:
    header = req.headers.get("Authorization")
    principal = req.app[TOKENS_KEY].authenticate(auth.bearer_token(header))
    if principal is not None:
        return principal
    if header is None:
        return _unauthorized("send 'Authorization: Bearer <token>'", presented=False)
    return _unauthorized("the token is not valid", presented=True)


async def _read_body(req: web.Request) -> bytes | jmap.RequestProblem:
    """The body, or a limit problem as soon as it exceeds MAX_SIZE_REQUEST_BYTES."""
    if (req.content_length or 0) > jmap.MAX_SIZE_REQUEST_BYTES:
        return jmap.TOO_LARGE
    chunks: list[bytes] = []
    size = 0
    while chunk := await req.content.readany():
        size += len(chunk)
        if size > jmap.MAX_SIZE_REQUEST_BYTES:
            return jmap.TOO_LARGE
        chunks.append(chunk)
    return b"".join(chunks)


async def _api(req: web.Request) -> web.Response:
    principal = _authenticate(req)
    if isinstance(principal, web.Response):
        return principal
    in_flight = req.app[_IN_FLIGHT_KEY]
    if in_flight.count >= jmap.MAX_CONCURRENT_REQUESTS:
        return _problem(
            jmap.RequestProblem(
                "limit",
                f"more than {jmap.MAX_CONCURRENT_REQUESTS} requests in flight",
                "maxConcurrentRequests",
            )
        )
    in_flight.count += 1
    try:
        body = await _read_body(req)
        parsed = body if isinstance(body, jmap.RequestProblem) else jmap.parse_request(body)
        if isinstance(parsed, jmap.RequestProblem):
            return _problem(parsed)
        answer = await req.app[_DISPATCHER_KEY].run(parsed, principal)
        return _json_response(answer)
    finally:
        in_flight.count -= 1


async def _session(req: web.Request) -> web.Response:
    principal = _authenticate(req)
    if isinstance(principal, web.Response):
        return principal
    base_url = str(req.url.origin())
    object_types = req.app[_DISPATCHER_KEY].object_types  # the handlers' objects too
    return _json_response(session.make_session(principal, object_types, base_url=base_url))


async def _healthz(req: web.Request) -> web.Response:
    report = await req.app[HEALTH_KEY].report()
    return _json_response(report, status=503 if report["status"] == "failed" else 200)


async def _metrics(req: web.Request) -> web.Response:
    response = web.Response(text=await req.app[METRICS_KEY].scrape())
    response.headers["Content-Type"] = metrics.CONTENT_TYPE
    return response


@web.middleware
async def _count_requests(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count every request by route and HTTP status (errors raised by aiohttp included)."""
    path = request.path if request.path in ROUTES else "other"
    counter = request.app[_HTTP_COUNTER_KEY]
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        counter.inc(path=path, status=str(exc.status))
        raise
    counter.inc(path=path, status=str(response.status))
    return response


def make_app(
    registry: RegistryLike,
    tokens: auth.TokenTable,
    *,
    health_checks: health.HealthChecks,
    metrics_registry: metrics.MetricsRegistry,
    handlers: Mapping[str, MethodHandler] | None = None,
    admin_options: admin.AdminOptions | None = None,
) -> web.Application:
    """The API application; the caller runs it (server.py) and owns ``registry``.

    :param handlers: extra JMAP methods by name, beside the registry's (`Dispatcher`).
    :param admin_options: what the web admin's try-it box evaluates with (local domains, DNS).
    """
    app = web.Application(middlewares=[_count_requests])
    app[REGISTRY_KEY] = registry
    app[TOKENS_KEY] = tokens
    app[HEALTH_KEY] = health_checks
    app[METRICS_KEY] = metrics_registry
    app[_DISPATCHER_KEY] = Dispatcher(registry, metrics_registry, handlers=handlers)
    app[_IN_FLIGHT_KEY] = _InFlight()
    app[_HTTP_COUNTER_KEY] = metrics_registry.counter(
        "delivery_api_requests_total",
        "HTTP requests to the management API by path and status code.",
        ("path", "status"),
    )
    app.router.add_post("/api", _api)
    app.router.add_get("/.well-known/jmap", _session)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    app.add_subapp("/admin", admin.make_admin_app(app[_DISPATCHER_KEY], tokens, admin_options))
    return app
