"""The web admin: Settings › MTA › Outbound, the queue and explain, in the browser (issue #9).

Served by `delivery serve` itself under ``/admin`` (an aiohttp sub-application the API mounts,
api/app.py): server-rendered pages plus one small script (static/admin.js) that adds checks
as you type; every form works without it. Nothing needs a build step or a download.

Every page is an in-process JMAP client of the API (client.py): reads and writes are method
calls run by the API's own Dispatcher with the signed-in token's Principal, so permissions,
validation and errors are exactly the API's.

Modules:
    app          the sub-application: routes, sign-in, the session and CSRF middleware
    context      app state and the signed-in visit each handler gets
    sessions     sessions (cookie id -> principal, CSRF token) and the sign-in form's guard
    guard        the CSRF / Origin decision for every POST (pure)
    client       the in-process JMAP client
    html         escaped-by-construction HTML
    layout       the page shell: navigation by permission, breadcrumbs, forms with CSRF
    fields       form fields from the registry's wire schema
    forms        render a form, read it back, place SetErrors beside fields (pure)
    expressions  the Strategy page's core: check as typed, try on samples (pure)
    strategy     Settings › MTA › Outbound › Strategy
    objects      TLS strategies, routes, connection strategies, schedules, virtual queues
    queue        Queue › Messages: by status and domain, recipients, retry and cancel
    explain      Queue › Explain: the `delivery explain` answer
"""

from __future__ import annotations

from delivery.admin.app import AdminOptions, make_admin_app

__all__ = ["AdminOptions", "make_admin_app"]
