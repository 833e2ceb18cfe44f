"""Queue › Messages: the queue by status and domain, one message's recipients, retry, cancel.

Reads and acts through ``x:QueuedMessage/query|get|set`` (api/queue.py), with the signed-in
token's permissions: sysQueuedMessageQuery for the list, sysQueuedMessageGet for a message,
sysQueuedMessageUpdate for Retry / Cancel / Cancel silently (not offered without it; the API
refuses anyway).

Routes (under /admin):
    GET  /queue?status=&domain=&position=    messages in arrival order, PAGE_SIZE a page
    GET  /queue/{id}                         one message: envelope and every recipient with
                                             its status, attempts, due time, last error and
                                             last status (the TLS details of the last try)
    POST /queue/{id}/{action}                action = retry | cancel | cancelSilently

Outcomes: after an action, back to the page it came from (``back``, an /admin path only) with
a message: done, or the API's SetError (``notScheduled``: nothing left to act on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from delivery.admin import layout
from delivery.admin.client import CallError
from delivery.admin.context import Visit, call_failed, html_response, refusal, visit_of
from delivery.admin.html import Markup, element, join, url, void

__all__ = ["ACTIONS", "PAGE_SIZE", "STATUSES", "add_routes", "recipient_state"]

PATH: Final = "/queue"
TYPE: Final = "QueuedMessage"
PAGE_SIZE: Final = 50
"""Messages per list page: a screenful; the API caps one /query page anyway."""

STATUSES: Final = ("", "scheduled", "deferred", "delivered", "failed", "cancelled")
"""The status filter's choices ("" = any), as the API's filter names them."""

ACTIONS: Final = {
    "retry": ("Retry now", "Make every scheduled recipient due now."),
    "cancel": ("Cancel", "Cancel the scheduled recipients and tell the sender (a DSN)."),
    "cancelSilently": ("Cancel silently", "Cancel the scheduled recipients; no DSN."),
}
"""The /set actions: button text and what it does."""


def recipient_state(recipient: Mapping[str, Any], /) -> str:
    """The status shown for a recipient: ``deferred`` for a scheduled one tried before.

    >>> recipient_state({"status": "scheduled", "deferred": True})
    'deferred'
    """
    if recipient.get("status") == "scheduled" and recipient.get("deferred"):
        return "deferred"
    return str(recipient.get("status", ""))


def _badge(state: str) -> Markup:
    return element("span", {"class": f"status {state}"}, state)


def _when(value: Any) -> str:
    """An RFC 3339 UTC time of the API, to the second, for reading.

    >>> _when("2026-11-21T05:27:27.518Z"), _when(None)
    ('2026-11-21 05:27:27 UTC', '—')
    """
    if not value:
        return "—"
    return str(value).replace("T", " ").removesuffix("Z").partition(".")[0] + " UTC"


def _actions(
    visit: Visit, message: Mapping[str, Any], back: str, *, names: Sequence[str]
) -> Markup | None:
    if not visit.client.may(TYPE, "Update"):
        return None
    if not any(r.get("status") == "scheduled" for r in message.get("recipients") or []):
        return None
    forms = []
    for name in names:
        text, why = ACTIONS[name]
        forms.append(
            layout.post_form(
                visit.viewer,
                layout.BASE + url(PATH, str(message.get("id")), name),
                layout.hidden("back", back),
                element(
                    "button",
                    {
                        "type": "submit",
                        "title": why,
                        "class": "danger" if name != "retry" else None,
                    },
                    text,
                ),
                css="inline",
                confirm=None if name == "retry" else f"{text}: {why}",
            )
        )
    return element("div", {"class": "row-actions"}, forms)


async def _list(request: web.Request) -> web.StreamResponse:
    visit = visit_of(request)
    status = request.query.get("status", "")
    status = status if status in STATUSES else ""
    domain = request.query.get("domain", "").strip()
    try:
        position = max(0, int(request.query.get("position", "0")))
    except ValueError:
        position = 0
    conditions: dict[str, Any] = {}
    if status:
        conditions["status"] = status
    if domain:
        conditions["domain"] = domain
    found = await visit.client.query_get(
        TYPE, filter=conditions or None, position=position, limit=PAGE_SIZE
    )
    if isinstance(found, CallError):
        return call_failed(visit, found)
    messages, total = found
    back = request.path_qs
    filter_form = element(
        "form",
        {"method": "get", "action": layout.BASE + PATH, "class": "filter", "role": "search"},
        element("label", {"for": "status"}, "Status"),
        element(
            "select",
            {"id": "status", "name": "status"},
            [
                element("option", {"value": s, "selected": s == status}, s or "any")
                for s in STATUSES
            ],
        ),
        element("label", {"for": "domain"}, "Recipient domain"),
        void("input", {"id": "domain", "name": "domain", "value": domain, "type": "search"}),
        layout.button("Show"),
    )
    rows = []
    for message in messages:
        recipients = message.get("recipients") or []
        link = element(
            "a", {"href": layout.BASE + url(PATH, str(message.get("id")))}, str(message.get("id"))
        )
        rcpts = join(
            element(
                "div", {"class": "rcpt"}, _badge(recipient_state(r)), " ", str(r.get("address", ""))
            )
            for r in recipients
        )
        due = min((str(r["due"]) for r in recipients if r.get("due")), default=None)
        rows.append(
            element(
                "tr",
                {"data-id": str(message.get("id"))},
                element("td", None, link),
                element("td", None, _when(message.get("receivedAt"))),
                element("td", None, str(message.get("sender") or "<>")),
                element("td", None, rcpts),
                element("td", None, _when(due)),
                element("td", None, _actions(visit, message, back, names=("retry",))),
            )
        )
    head = element(
        "tr",
        None,
        [
            element("th", None, h)
            for h in ("Id", "Received", "Sender", "Recipients", "Next try", "")
        ],
    )
    table = (
        element(
            "table",
            {"class": "list queue"},
            element("thead", None, head),
            element("tbody", None, rows),
        )
        if rows
        else element("p", {"class": "empty"}, "No message matches.")
    )
    pager = []
    query = {"status": status, "domain": domain}
    if position > 0:
        pager.append(
            element(
                "a",
                {
                    "href": layout.BASE
                    + url(PATH, query={**query, "position": str(max(0, position - PAGE_SIZE))})
                },
                "← Previous",
            )
        )
    if total is not None and position + len(messages) < total:
        pager.append(
            element(
                "a",
                {
                    "href": layout.BASE
                    + url(PATH, query={**query, "position": str(position + PAGE_SIZE)})
                },
                "Next →",
            )
        )
    count = element(
        "p",
        {"class": "count"},
        f"{total} message{'s' if total != 1 else ''}"
        if total is not None
        else f"{len(messages)} shown",
        f" (from {position + 1})" if position else "",
    )
    markup = layout.page(
        visit.viewer,
        title="Messages",
        current=PATH,
        crumbs=["Queue"],
        flashes=visit.session.take_flashes(),
        body=[
            element("div", {"class": "toolbar"}, filter_form),
            count,
            table,
            element("p", {"class": "pager"}, pager),
        ],
    )
    return html_response(markup)


def _envelope(message: Mapping[str, Any]) -> Markup:
    items = [
        ("Sender", str(message.get("sender") or "<> (null sender)")),
        ("Received", _when(message.get("receivedAt"))),
        ("Source", str(message.get("source", ""))),
        ("Size", f"{message.get('size', 0)} bytes"),
        ("REQUIRETLS", "yes" if message.get("requireTls") else "no"),
        ("ENVID", str(message.get("envId") or "—")),
    ]
    return element(
        "dl",
        {"class": "values"},
        [join([element("dt", None, k), element("dd", None, v)]) for k, v in items],
    )


def _recipients(message: Mapping[str, Any]) -> Markup:
    head = element(
        "tr",
        None,
        [
            element("th", None, h)
            for h in (
                "Recipient",
                "Status",
                "Attempts",
                "Next try",
                "Expires",
                "Queue / schedule",
                "Last error",
            )
        ],
    )
    rows = []
    for r in message.get("recipients") or []:
        state = recipient_state(r)
        rows.append(
            element(
                "tr",
                {"class": "recipient", "data-address": str(r.get("address", ""))},
                element("td", None, str(r.get("address", ""))),
                element("td", None, _badge(state)),
                element("td", {"class": "attempts"}, str(r.get("attempts", 0))),
                element("td", None, _when(r.get("due"))),
                element("td", None, _when(r.get("expiresAt"))),
                element("td", None, f"{r.get('queue', '')} / {r.get('schedule', '')}"),
                element("td", None, str(r.get("lastError", ""))),
            )
        )
        if r.get("lastStatus"):
            rows.append(
                element(
                    "tr",
                    {"class": "last-status"},
                    element(
                        "td",
                        {"colspan": 7},
                        element("span", {"class": "hint"}, "Last status: "),
                        element("pre", {"class": "last-status"}, str(r["lastStatus"])),
                    ),
                )
            )
    return element(
        "table",
        {"class": "list recipients"},
        element("thead", None, head),
        element("tbody", None, rows),
    )


async def _show(request: web.Request) -> web.StreamResponse:
    visit = visit_of(request)
    message_id = request.match_info["id"]
    found = await visit.client.get(TYPE, [message_id])
    if isinstance(found, CallError):
        return call_failed(visit, found)
    if not found:
        return refusal(
            visit, "Not found", f"There is no message {message_id!r} in the queue.", status=404
        )
    message = found[0]
    markup = layout.page(
        visit.viewer,
        title=f"Message {message_id}",
        current=PATH,
        crumbs=[("Queue", PATH)],
        flashes=visit.session.take_flashes(),
        body=[
            _envelope(message),
            element("h2", None, "Recipients"),
            _recipients(message),
            _actions(visit, message, request.path, names=tuple(ACTIONS)),
        ],
    )
    return html_response(markup)


def _safe_back(value: Any, fallback: str) -> str:
    if (
        isinstance(value, str)
        and value.startswith(layout.BASE + "/")
        and not value.startswith("//")
    ):
        return value
    return fallback


async def _act(request: web.Request) -> web.StreamResponse:
    visit = visit_of(request)
    message_id, action = request.match_info["id"], request.match_info["action"]
    form = await request.post()
    back = _safe_back(form.get("back"), layout.BASE + url(PATH, message_id))
    outcome = await visit.client.set_one(TYPE, "update", message_id, {"action": action})
    if isinstance(outcome, CallError):
        return call_failed(visit, outcome)
    if not outcome.ok:
        description = str(outcome.value.get("description", outcome.error_type))
        if outcome.error_type == "forbidden":
            return refusal(visit, "Not allowed", description, status=403)
        if outcome.error_type == "notFound":
            return refusal(visit, "Not found", description, status=404)
        visit.session.flash("error", f"{ACTIONS[action][0]} of {message_id}: {description}")
    else:
        done = {
            "retry": "is due now",
            "cancel": "is cancelled; the sender is told",
            "cancelSilently": "is cancelled",
        }
        visit.session.flash("ok", f"Message {message_id} {done[action]}.")
    raise web.HTTPSeeOther(back)


def add_routes(router: web.UrlDispatcher, /) -> None:
    """The queue pages' routes."""
    router.add_get(PATH, _list)
    router.add_get(f"{PATH}/{{id}}", _show)
    router.add_post(f"{PATH}/{{id}}/{{action:{'|'.join(ACTIONS)}}}", _act)
