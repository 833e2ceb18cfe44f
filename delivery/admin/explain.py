"""Queue › Explain: a recipient address in, the `delivery explain` answer out, in the browser.

``x:Explain/get`` (api/explain.py, permission sysExplainGet) walks a first delivery attempt
without connecting anywhere; this page shows its decision as a banner, then the very report
`delivery explain` prints (delivery/cli/explain.py `render`, as plain text), and the JSON.

Routes (under /admin):
    GET /explain?recipient=&sender=     the form, and the explanation when a recipient is given

Explaining changes nothing, so it is a GET (a link can be shared); it makes the DNS and
MTA-STS lookups a delivery would make, through the daemon's resolver and caches.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web
from rich.console import Console

from delivery.admin import layout
from delivery.admin.client import CallError
from delivery.admin.context import html_response, visit_of
from delivery.admin.html import Markup, element, void
from delivery.cli import explain as cli_explain

__all__ = ["REPORT_WIDTH", "add_routes", "report_text"]

PATH: Final = "/explain"
METHOD: Final = "x:Explain/get"
REPORT_WIDTH: Final = 120
"""Columns of the text report: the CLI's tables read well at this width on a page."""


def report_text(explained: Mapping[str, Any], /) -> str:
    """The `delivery explain` report of an explanation, as plain text (no colours)."""
    console = Console(
        file=io.StringIO(), width=REPORT_WIDTH, color_system=None, record=True, soft_wrap=False
    )
    console.print(cli_explain.render(dict(explained)))
    return console.export_text()


def _banner(explained: Mapping[str, Any]) -> Markup:
    decision = explained.get("decision") or {}
    action = str(decision.get("action", ""))
    text = str(decision.get("text", "")).removeprefix(f"{action}: ")
    if action == "connect":
        where = f"{decision.get('host')} [{decision.get('ip')}]:{decision.get('port')}"
        tls = "TLS required" if decision.get("tlsRequired") else "TLS if offered"
        text = f"connect to {where}; {tls}; authenticated by {decision.get('authentication')}"
    return element(
        "p",
        {"class": f"decision {action}", "role": "status"},
        element("strong", None, action or "decision"),
        ": ",
        text,
    )


async def _page(request: web.Request) -> web.StreamResponse:
    visit = visit_of(request)
    recipient = request.query.get("recipient", "").strip()
    sender = request.query.get("sender", "").strip()
    form = element(
        "form",
        {"method": "get", "action": layout.BASE + PATH, "class": "filter explain-form"},
        element("label", {"for": "recipient"}, "Recipient"),
        void(
            "input",
            {
                "id": "recipient",
                "name": "recipient",
                "value": recipient,
                "type": "email",
                "required": True,
                "placeholder": "bob@example.com",
            },
        ),
        element("label", {"for": "sender"}, "Sender (empty: <>)"),
        void("input", {"id": "sender", "name": "sender", "value": sender, "type": "text"}),
        layout.button("Explain", kind="primary"),
    )
    body: list[Markup | None] = [
        element(
            "p",
            {"class": "intro"},
            "What a delivery to this recipient would do now: route, schedule, MX hosts, "
            "MTA-STS, TLSA records, and the TLS each host requires. Nothing is sent.",
        ),
        form,
    ]
    status = 200
    if recipient:
        result = await visit.client.call(METHOD, {"recipient": recipient, "sender": sender})
        if isinstance(result, CallError):
            status = 403 if result.forbidden else 400 if result.type == "invalidArguments" else 500
            body.append(
                element(
                    "p",
                    {"class": "flash error", "role": "alert"},
                    f"{result.type}: {result.description}",
                )
            )
        else:
            [explained] = result.get("list") or [{}]
            body.append(_banner(explained))
            body.append(element("pre", {"class": "report"}, report_text(explained)))
            body.append(
                element(
                    "details",
                    None,
                    element("summary", None, "JSON"),
                    element("pre", {"class": "json"}, json.dumps(explained, indent=2)),
                )
            )
    markup = layout.page(
        visit.viewer,
        title="Explain",
        current=PATH,
        crumbs=["Queue"],
        flashes=visit.session.take_flashes(),
        body=body,
    )
    return html_response(markup, status=status)


def add_routes(router: web.UrlDispatcher, /) -> None:
    """The Explain page's route."""
    router.add_get(PATH, _page)
