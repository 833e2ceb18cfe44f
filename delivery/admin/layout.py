"""The page shell of the web admin: navigation by permission, breadcrumbs, messages, forms.

Every page is `page(...)`: a header with the signed-in token's name and a sign-out button,
the navigation (only the pages the token may read), the breadcrumb ("Settings › MTA ›
Outbound › TLS Strategies", the reference pages' words), one-time messages, then the body.
`post_form(...)` makes every form of the admin, and always puts the CSRF token in it.

Security: everything is built with html.element (escaped); no inline script or style, so the
Content-Security-Policy of app.py can forbid both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from delivery.admin import guard
from delivery.admin.html import Child, Markup, element, join, void
from delivery.admin.sessions import Flash
from delivery.api import auth

__all__ = [
    "BASE",
    "NAV",
    "NavItem",
    "Viewer",
    "bare_page",
    "button",
    "hidden",
    "message_page",
    "page",
    "post_form",
]

BASE: Final = "/admin"
"""Where the admin is mounted (api/app.py)."""

SETTINGS_CRUMBS: Final = ("Settings", "MTA", "Outbound")
"""The reference pages' path to the strategy objects."""


@dataclass(frozen=True, slots=True)
class NavItem:
    """A page in the navigation, shown when the token holds ``permission``."""

    title: str
    path: str
    permission: str
    group: str


NAV: Final[tuple[NavItem, ...]] = (
    NavItem("Strategy", "/outbound/strategy", "sysMtaOutboundStrategyGet", "Outbound"),
    NavItem("TLS Strategies", "/outbound/tls-strategies", "sysMtaTlsStrategyQuery", "Outbound"),
    NavItem("Routes", "/outbound/routes", "sysMtaRouteQuery", "Outbound"),
    NavItem(
        "Connection Strategies",
        "/outbound/connection-strategies",
        "sysMtaConnectionStrategyQuery",
        "Outbound",
    ),
    NavItem("Delivery Schedules", "/outbound/schedules", "sysMtaDeliveryScheduleQuery", "Outbound"),
    NavItem("Virtual Queues", "/outbound/virtual-queues", "sysMtaVirtualQueueQuery", "Outbound"),
    NavItem("Messages", "/queue", "sysQueuedMessageQuery", "Queue"),
    NavItem("Explain", "/explain", "sysExplainGet", "Queue"),
)
"""Every page, in menu order."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking, for the shell: the principal and the session's CSRF token."""

    principal: auth.Principal
    csrf: str

    @property
    def read_only(self) -> bool:
        """The token may change nothing the admin shows (its Session says isReadOnly)."""
        prefixes = {item.permission.removesuffix("Get").removesuffix("Query") for item in NAV}
        return not any(
            self.principal.may(prefix + op) for prefix in prefixes for op in auth.SET_OPS
        ) and not self.principal.may("sysQueuedMessageUpdate")

    def pages(self) -> list[NavItem]:
        """The pages this token may read."""
        return [item for item in NAV if self.principal.may(item.permission)]


def hidden(name: str, value: str) -> Markup:
    """A hidden input."""
    return void("input", {"type": "hidden", "name": name, "value": value})


def button(
    text: str, /, *, name: str | None = None, value: str | None = None, kind: str = ""
) -> Markup:
    """A submit button; ``kind`` is a CSS class (``primary``, ``danger``)."""
    return element(
        "button",
        {"type": "submit", "name": name, "value": value, "class": kind or None},
        text,
    )


def post_form(
    viewer: Viewer,
    action: str,
    /,
    *children: Child,
    css: str | None = None,
    confirm: str | None = None,
    form_id: str | None = None,
) -> Markup:
    """A POST form to ``action`` carrying the session's CSRF token.

    :param confirm: a question the page script asks before submitting (a destructive action).
    """
    return element(
        "form",
        {
            "method": "post",
            "action": action,
            "class": css,
            "data-confirm": confirm,
            "id": form_id,
        },
        hidden(guard.CSRF_FIELD, viewer.csrf),
        children,
    )


def _nav(viewer: Viewer, current: str) -> Markup:
    groups: dict[str, list[Markup]] = {}
    for item in viewer.pages():
        link = element(
            "a",
            {"href": BASE + item.path, "aria-current": "page" if item.path == current else None},
            item.title,
        )
        groups.setdefault(item.group, []).append(element("li", None, link))
    sections = [
        element(
            "div",
            {"class": "nav-group"},
            element("h2", None, "Settings › MTA › Outbound" if group == "Outbound" else group),
            element("ul", None, links),
        )
        for group, links in groups.items()
    ]
    return element("nav", {"aria-label": "Pages"}, sections)


def _flashes(flashes: Sequence[Flash]) -> Markup:
    return join(
        element(
            "p",
            {"class": f"flash {f.level}", "role": "status" if f.level == "ok" else "alert"},
            f.text,
        )
        for f in flashes
    )


def _document(title: str, body: Child) -> Markup:
    return Markup("<!DOCTYPE html>\n") + element(
        "html",
        {"lang": "en"},
        element(
            "head",
            None,
            void("meta", {"charset": "utf-8"}),
            void("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}),
            element("title", None, f"{title} · delivery admin"),
            void("link", {"rel": "stylesheet", "href": f"{BASE}/static/admin.css"}),
            element("script", {"src": f"{BASE}/static/admin.js", "defer": True}),
        ),
        element("body", None, body),
    )


def page(
    viewer: Viewer,
    *,
    title: str,
    current: str,
    crumbs: Sequence[str | tuple[str, str]] = (),
    flashes: Sequence[Flash] = (),
    body: Child,
) -> Markup:
    """A full admin page.

    :param current: the NAV path of the page (marks it in the navigation).
    :param crumbs: breadcrumb parts before the title: text, or (text, path under BASE).
    """
    crumb_parts: list[Markup] = []
    for crumb in crumbs:
        if isinstance(crumb, tuple):
            crumb_parts.append(element("a", {"href": BASE + crumb[1]}, crumb[0]))
        else:
            crumb_parts.append(element("span", None, crumb))
    crumb_parts.append(element("span", {"aria-current": "location"}, title))
    separated: list[Markup] = []
    for index, part in enumerate(crumb_parts):
        if index:
            separated.append(element("span", {"class": "sep", "aria-hidden": "true"}, " › "))
        separated.append(part)
    who = element(
        "div",
        {"class": "who"},
        element("span", {"class": "token-name"}, viewer.principal.name),
        element("span", {"class": "badge"}, "read-only") if viewer.read_only else None,
        post_form(viewer, f"{BASE}/logout", button("Sign out"), css="inline"),
    )
    header = element(
        "header",
        None,
        element("a", {"class": "brand", "href": f"{BASE}/"}, "delivery"),
        who,
    )
    main = element(
        "main",
        None,
        element("p", {"class": "crumbs"}, separated),
        element("h1", None, title),
        _flashes(flashes),
        body,
    )
    return _document(
        title, [header, element("div", {"class": "layout"}, _nav(viewer, current), main)]
    )


def message_page(
    title: str, text: str, /, *, viewer: Viewer | None = None, link: tuple[str, str] | None = None
) -> Markup:
    """A page that only says something (an error, a refusal), with or without the shell."""
    body = [
        element("p", {"class": "flash error", "role": "alert"}, text),
        element("p", None, element("a", {"href": link[1]}, link[0])) if link else None,
    ]
    if viewer is None:
        return bare_page(title, body)
    return page(viewer, title=title, current="", body=body)


def bare_page(title: str, body: Child, /) -> Markup:
    """A page without the shell, for who is not signed in (sign-in, signed out)."""
    return _document(title, element("main", {"class": "narrow"}, element("h1", None, title), body))
