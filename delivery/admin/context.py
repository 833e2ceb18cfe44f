"""What every admin handler shares: the app state and the signed-in visit of a request.

`Admin` is the state of the admin application (one per daemon): the API's dispatcher, the
token table, the sessions, the sign-in guard, and what the try-it box evaluates with.
`Visit` is set by the app's middleware on every request that has a live session: the session,
its id, an `AdminClient` acting as its principal, and the `Viewer` the layout draws.

Handlers answer through `html_response` and `refusal`, so that the status codes are the same
everywhere: 403 for forbidden (the API's or the CSRF guard's), 404 for unknown objects, 422
for a form the API refused (see `call_failed` for the rest).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from delivery import expr
from delivery.admin import expressions, layout
from delivery.admin.client import AdminClient, CallError
from delivery.admin.html import Markup
from delivery.admin.sessions import Session, SessionStore, SignInGuard
from delivery.api import auth
from delivery.api.methods import Dispatcher

__all__ = [
    "ADMIN_KEY",
    "VISIT_KEY",
    "Admin",
    "Visit",
    "call_failed",
    "html_response",
    "now_ms",
    "refusal",
    "visit_of",
]


def now_ms() -> int:
    """Wall-clock epoch milliseconds (session ages)."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Admin:
    """The admin application's state.

    :ivar env: ``[local] domains`` for ``is_local_domain()`` in the try-it box.
    :ivar lookup: the daemon's resolver for ``dns_query()`` there, or None.
    """

    dispatcher: Dispatcher
    tokens: auth.TokenTable
    env: expr.Environment = expr.EMPTY_ENVIRONMENT
    lookup: expressions.Lookup | None = None
    sessions: SessionStore = field(default_factory=SessionStore)
    signin: SignInGuard = field(default_factory=SignInGuard)
    clock: Callable[[], int] = now_ms


@dataclass(frozen=True, slots=True)
class Visit:
    """A request of a signed-in browser."""

    session_id: str
    session: Session
    client: AdminClient

    @property
    def viewer(self) -> layout.Viewer:
        """The principal and CSRF token, for the page shell and forms."""
        return layout.Viewer(self.session.principal, self.session.csrf)


ADMIN_KEY = web.AppKey("admin", Admin)
VISIT_KEY = web.RequestKey("admin_visit", Visit)


def visit_of(request: web.Request, /) -> Visit:
    """The visit the middleware set (every handler behind sign-in has one)."""
    return request[VISIT_KEY]


def html_response(markup: Markup, /, *, status: int = 200) -> web.Response:
    """An HTML page."""
    return web.Response(text=markup, status=status, content_type="text/html", charset="utf-8")


def refusal(visit: Visit, title: str, text: str, /, *, status: int) -> web.Response:
    """An error page inside the shell."""
    return html_response(layout.message_page(title, text, viewer=visit.viewer), status=status)


def call_failed(visit: Visit, error: CallError, /) -> web.Response:
    """The page for a method-level error: 403 forbidden, 404 notFound, 501 unknownMethod (this
    daemon lacks the API the page needs), else 500."""
    if error.forbidden:
        return refusal(visit, "Not allowed", f"The API refused: {error.description}", status=403)
    if error.type == "notFound":
        return refusal(visit, "Not found", error.description, status=404)
    status = 501 if error.type == "unknownMethod" else 500
    return refusal(visit, "The API failed", f"{error.type}: {error.description}", status=status)
