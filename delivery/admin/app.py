"""The web admin as an aiohttp sub-application, mounted at /admin by the API (api/app.py).

Routes (all under /admin):
    GET  /                      the first page the token may read
    GET  /login, POST /login    sign in with an API token
    POST /logout                sign out
    GET  /static/{name}         admin.js, admin.css
    /outbound/strategy...       Settings › MTA › Outbound › Strategy (strategy.py)
    /outbound/<collection>...   TLS strategies, routes, connection strategies, delivery
                                schedules, virtual queues (objects.py)
    /queue..., /explain         the queue and `delivery explain` (queue.py, explain.py)

Every page acts as an in-process JMAP client (client.py) with the signed-in token's
Principal: what the API refuses, the admin refuses, and with the API's own words.

Security:
    Sessions: sessions.py (random id in an HttpOnly, SameSite=Strict, Path=/admin cookie,
    Secure over TLS; idle and absolute expiry). Every POST passes guard.check_post (the
    session's CSRF token, and Origin / Sec-Fetch-Site when sent) in the middleware, before any
    handler runs; the sign-in form has its own token (sessions.SignInGuard). Every response
    carries SECURITY_HEADERS: a Content-Security-Policy without inline script or style, no
    framing, no referrer to other sites (``same-origin``: under ``no-referrer`` browsers send
    ``Origin: null`` with every POST), no caching. Pages only offer what the token may do
    (layout.NAV and the pages' checks), and the API refuses the rest anyway (403 page).

Outcomes: HTML pages; 303 after a successful POST (post/redirect/get); 401 sign-in page for a
wrong token; 403 for CSRF or permission refusals; 404 unknown pages and objects; 422 for a
form the API refused, re-shown with its errors.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from delivery import expr
from delivery.admin import explain, guard, layout, objects, queue, sessions, strategy
from delivery.admin.client import AdminClient
from delivery.admin.context import ADMIN_KEY, VISIT_KEY, Admin, Visit, html_response
from delivery.admin.expressions import Lookup
from delivery.admin.html import Markup, element, void
from delivery.api import auth
from delivery.api.methods import Dispatcher

__all__ = ["SECURITY_HEADERS", "AdminOptions", "make_admin_app", "set_cookie"]

log = logging.getLogger("delivery.admin")

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""Sent with every admin response (static files are revalidated, see _static)."""

_PUBLIC: Final = frozenset({"/login", "/static"})
"""Path prefixes (under /admin) reachable without a session."""

_STATIC_TYPES: Final = {"admin.js": "text/javascript", "admin.css": "text/css"}


def _static_files() -> dict[str, tuple[bytes, str]]:
    """name -> (content, ETag) of the files in delivery/admin/static, read once.

    A file that is missing (an install without the package data) is logged and answered 404:
    the pages still work, without style and without the script (they are progressive).
    """
    folder = importlib.resources.files("delivery.admin") / "static"
    out: dict[str, tuple[bytes, str]] = {}
    for name in _STATIC_TYPES:
        try:
            content = (folder / name).read_bytes()
        except OSError as exc:
            log.error("admin: %s is not installed (%s); the pages go without it", name, exc)
            continue
        out[name] = (content, '"' + hashlib.sha256(content).hexdigest()[:16] + '"')
    return out


_STATIC_KEY = web.AppKey("admin_static", dict)


def _local_path(request: web.Request) -> str:
    """The path below /admin ("/" for the index)."""
    return request.path.removeprefix(layout.BASE) or "/"


def _is_public(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in _PUBLIC)


async def _given_csrf(request: web.Request) -> str | None:
    header = request.headers.get(guard.CSRF_HEADER)
    if header:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get(guard.CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def _over_tls(request: web.Request) -> bool:
    """Whether the browser reached us over TLS: directly, or through a TLS proxy that says so.

    ``X-Forwarded-Proto`` is trusted for this one use: a client that lies gets a cookie its
    browser will not send over plain HTTP, which harms only itself.
    """
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def set_cookie(response: web.StreamResponse, name: str, value: str, /, *, secure: bool) -> None:
    """Set one of the admin's cookies (the session, or the sign-in form's).

    HttpOnly: no script reads it. SameSite=Strict: no other site's link or form sends it.
    Path=/admin: never sent to /api. Secure when the page came over TLS (`_over_tls`). No
    Max-Age: the browser drops it when it closes, and the server ends sessions sooner
    (sessions.py).
    """
    response.set_cookie(
        name, value, httponly=True, samesite="Strict", path=sessions.COOKIE_PATH, secure=secure
    )


@web.middleware
async def _admin_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Security headers on everything; a live session and a CSRF check before any handler."""
    try:
        response = await _guarded(request, handler)
    except web.HTTPException as exc:
        exc.headers.update({k: v for k, v in SECURITY_HEADERS.items() if k not in exc.headers})
        raise
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def _guarded(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    admin = request.app[ADMIN_KEY]
    path = _local_path(request)
    if _is_public(path):
        return await handler(request)
    session_id = request.cookies.get(sessions.SESSION_COOKIE)
    session = admin.sessions.find(session_id, now=admin.clock())
    if session is None or session_id is None:
        if request.method == "GET":
            target = layout.BASE + "/login" + (f"?next={request.path_qs}" if path != "/" else "")
            raise web.HTTPSeeOther(target)
        return html_response(
            layout.message_page(
                "Signed out",
                "Your session has ended; sign in again.",
                link=("Sign in", layout.BASE + "/login"),
            ),
            status=401,
        )
    visit = Visit(session_id, session, AdminClient(admin.dispatcher, session.principal))
    if request.method not in ("GET", "HEAD"):
        refused = guard.check_post(
            expected=session.csrf,
            given=await _given_csrf(request),
            origin=request.headers.get("Origin"),
            host=request.host,
            fetch_site=request.headers.get("Sec-Fetch-Site"),
        )
        if refused is not None:
            log.warning("admin: refused %s %s: %s", request.method, request.path, refused.reason)
            return html_response(
                layout.message_page("Refused", refused.reason, viewer=visit.viewer), status=403
            )
    request[VISIT_KEY] = visit
    return await handler(request)


# --- sign-in ----------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    """Where to go after sign-in: an admin path only (never another site)."""
    if value and value.startswith(layout.BASE + "/") and not value.startswith("//"):
        return value
    return layout.BASE + "/"


def _signin_page(form_token: str, next_path: str, error: str | None) -> Markup:
    form = element(
        "form",
        {"method": "post", "action": f"{layout.BASE}/login", "class": "signin"},
        layout.hidden(guard.CSRF_FIELD, form_token),
        layout.hidden("next", next_path),
        element("label", {"for": "token"}, "API token"),
        void(
            "input",
            {
                "id": "token",
                "name": "token",
                "type": "password",
                "autocomplete": "current-password",
                "required": True,
                "autofocus": True,
            },
        ),
        element("p", {"class": "field-errors", "role": "alert"}, error) if error else None,
        layout.button("Sign in", kind="primary"),
    )
    hint = element(
        "p",
        {"class": "hint"},
        "A token of [[api.tokens]] in the settings, or the admin token `delivery serve` "
        "printed at first start. The admin offers what the token may do through the API.",
    )
    return layout.bare_page("Sign in", [form, hint])


async def _login_form(request: web.Request) -> web.StreamResponse:
    return _signin_response(request, None, status=200, next_path=request.query.get("next"))


def _signin_response(
    request: web.Request, error: str | None, *, status: int, next_path: str | None
) -> web.Response:
    admin = request.app[ADMIN_KEY]
    cookie = request.cookies.get(sessions.PRE_COOKIE) or admin.signin.new_cookie()
    next_path = _safe_next(next_path)
    response = html_response(
        _signin_page(admin.signin.form_token(cookie), next_path, error), status=status
    )
    set_cookie(response, sessions.PRE_COOKIE, cookie, secure=_over_tls(request))
    return response


async def _login(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN_KEY]
    form = await request.post()
    next_value = form.get("next")
    next_path = next_value if isinstance(next_value, str) else None
    pre_cookie = request.cookies.get(sessions.PRE_COOKIE)
    given = form.get(guard.CSRF_FIELD)
    refused = guard.check_post(
        expected=admin.signin.form_token(pre_cookie) if pre_cookie else "",
        given=given if isinstance(given, str) else None,
        origin=request.headers.get("Origin"),
        host=request.host,
        fetch_site=request.headers.get("Sec-Fetch-Site"),
    )
    if refused is not None or not pre_cookie:
        reason = refused.reason if refused else "cookies are needed to sign in"
        return _signin_response(request, f"Refused: {reason}", status=403, next_path=next_path)
    token = form.get("token")
    principal = admin.tokens.authenticate(
        token.strip()[: auth.MAX_TOKEN_CHARS + 1] if isinstance(token, str) else None
    )
    if principal is None:
        log.warning("admin: sign-in with an unknown token from %s", request.remote)
        return _signin_response(
            request, "That token is not valid.", status=401, next_path=next_path
        )
    session_id, _ = admin.sessions.open(principal, now=admin.clock())
    log.info("admin: %s signed in from %s", principal.name, request.remote)
    response = web.HTTPSeeOther(_safe_next(next_path))
    set_cookie(response, sessions.SESSION_COOKIE, session_id, secure=_over_tls(request))
    response.del_cookie(sessions.PRE_COOKIE, path=sessions.COOKIE_PATH)
    raise response


async def _logout(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN_KEY]
    visit = request[VISIT_KEY]
    admin.sessions.close(visit.session_id)
    response = web.HTTPSeeOther(layout.BASE + "/login")
    response.del_cookie(sessions.SESSION_COOKIE, path=sessions.COOKIE_PATH)
    raise response


async def _index(request: web.Request) -> web.StreamResponse:
    visit = request[VISIT_KEY]
    pages = visit.viewer.pages()
    if pages:
        raise web.HTTPSeeOther(layout.BASE + pages[0].path)
    return html_response(
        layout.message_page(
            "Nothing to show",
            "This token holds no permission to read anything the admin shows.",
            viewer=visit.viewer,
        )
    )


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    found = request.app[_STATIC_KEY].get(name)
    if found is None:
        raise web.HTTPNotFound()
    content, etag = found
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=content, content_type=_STATIC_TYPES[name], headers=headers)


@dataclass(frozen=True, slots=True)
class AdminOptions:
    """What the try-it box of the Strategy page evaluates with, beyond the API.

    :param local_domains: ``[local] domains``, for ``is_local_domain()``.
    :param lookup: the daemon's DNS lookup for ``dns_query()`` (None: such a call is reported
        as not answerable here).
    """

    local_domains: frozenset[str] = frozenset()
    lookup: Lookup | None = None


def make_admin_app(
    dispatcher: Dispatcher, tokens: auth.TokenTable, /, options: AdminOptions | None = None
) -> web.Application:
    """The admin application; the API mounts it with ``app.add_subapp("/admin", ...)``.

    :param dispatcher: the API's dispatcher: every page's reads and writes go through it.
    :param tokens: the API's tokens: the ones that may sign in.
    """
    options = options or AdminOptions()
    env = expr.Environment(local_domains=frozenset(d.lower() for d in options.local_domains))
    app = web.Application(middlewares=[_admin_middleware])
    app[ADMIN_KEY] = Admin(dispatcher, tokens, env=env, lookup=options.lookup)
    app[_STATIC_KEY] = _static_files()
    app.router.add_get("/", _index)
    app.router.add_get("/login", _login_form)
    app.router.add_post("/login", _login)
    app.router.add_post("/logout", _logout)
    app.router.add_get("/static/{name}", _static)
    strategy.add_routes(app.router)
    objects.add_routes(app.router)
    queue.add_routes(app.router)
    explain.add_routes(app.router)
    return app
