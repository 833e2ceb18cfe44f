"""The web admin over a real socket, without a browser: sign-in, cookies, CSRF, headers,
permission gating and refusals, against the in-process API (tests/plugins/api.py).

These are the security properties a browser would hide (it always sends the token and the
right Origin); tests/admin/test_browser.py drives the same pages in Chromium.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl

from delivery import config, expr
from delivery.admin import AdminOptions, sessions
from delivery.api import auth, health, metrics, server
from delivery.registry.service import Registry
from tests.plugins.api import (
    ADMIN_TOKEN,
    CREATOR_PERMISSIONS,
    CREATOR_TOKEN,
    READONLY_TOKEN,
    RunningApi,
)

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass(slots=True)
class Client:
    """A cookie-keeping HTTP client of the admin, as a browser would be."""

    base: str
    http: aiohttp.ClientSession

    async def get(self, path: str) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(self.base + path, allow_redirects=False) as response:
            return response.status, await response.text(), response

    async def post(
        self, path: str, data: dict[str, str], *, headers: dict[str, str] | None = None
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.post(
            self.base + path, data=data, headers=headers or {}, allow_redirects=False
        ) as response:
            return response.status, await response.text(), response

    async def csrf(self, path: str) -> str:
        status, text, _ = await self.get(path)
        assert status == 200, text
        match = CSRF.search(text)
        assert match is not None, text
        return match.group(1)

    async def sign_in(self, token: str) -> None:
        form_token = await self.csrf("/admin/login")
        status, text, response = await self.post(
            "/admin/login", {"csrf": form_token, "token": token, "next": "/admin/"}
        )
        assert status == 303, text
        assert response.headers["Location"] == "/admin/"


@pytest.fixture
async def client(api: RunningApi) -> AsyncIterator[Client]:
    # unsafe=True: keep cookies of an IP-address host (127.0.0.1), as browsers do.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield Client(api.url, http)


def _cookie_header(response: aiohttp.ClientResponse, name: str) -> str:
    [header] = [h for h in response.headers.getall("Set-Cookie") if h.startswith(name + "=")]
    return header


async def _tls_expression(api: RunningApi) -> dict[str, Any]:
    _, result, _ = await api.call("x:MtaOutboundStrategy/get", {"ids": ["singleton"]})
    tls: dict[str, Any] = result["list"][0]["tls"]
    return tls


# --- sign-in and the session cookie -------------------------------------------------------------


async def test_pages_need_a_session_and_send_to_sign_in(client: Client) -> None:
    status, _, response = await client.get("/admin/outbound/strategy")
    assert status == 303
    assert response.headers["Location"] == "/admin/login?next=/admin/outbound/strategy"
    status, text, _ = await client.post("/admin/outbound/strategy/tls", {"else": "'x'"})
    assert status == 401 and "sign in" in text.lower()


async def test_sign_in_sets_a_strict_http_only_admin_cookie(client: Client) -> None:
    form_token = await client.csrf("/admin/login")
    status, _, response = await client.post(
        "/admin/login", {"csrf": form_token, "token": ADMIN_TOKEN, "next": "/admin/queue"}
    )
    assert status == 303 and response.headers["Location"] == "/admin/queue"
    cookie = _cookie_header(response, sessions.SESSION_COOKIE)
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/admin"):
        assert attribute in cookie, cookie
    assert "Secure" not in cookie  # plain HTTP here; set when served over TLS
    assert "Max-Age" not in cookie and "expires" not in cookie.lower()
    assert ADMIN_TOKEN not in cookie


async def test_behind_a_tls_proxy_the_cookie_is_secure(client: Client) -> None:
    form_token = await client.csrf("/admin/login")
    _, _, response = await client.post(
        "/admin/login",
        {"csrf": form_token, "token": ADMIN_TOKEN},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert "Secure" in _cookie_header(response, sessions.SESSION_COOKIE)


async def test_a_failed_sign_in_keeps_where_it_was_going(client: Client) -> None:
    form_token = await client.csrf("/admin/login?next=/admin/queue")
    status, text, _ = await client.post(
        "/admin/login", {"csrf": form_token, "token": "wrong", "next": "/admin/queue"}
    )
    assert status == 401 and 'name="next" value="/admin/queue"' in text


async def test_a_wrong_token_is_refused_without_a_session(client: Client) -> None:
    form_token = await client.csrf("/admin/login")
    status, text, response = await client.post(
        "/admin/login", {"csrf": form_token, "token": "not-a-token"}
    )
    assert status == 401 and "not valid" in text
    assert sessions.SESSION_COOKIE not in response.cookies


@pytest.mark.parametrize(
    ("label", "form_token", "headers"),
    [
        ("no form token (login CSRF)", None, {}),
        ("a forged form token", "0" * 64, {}),
        ("another site's form", "valid", {"Origin": "http://evil.test"}),
    ],
)
async def test_sign_in_form_is_protected(
    client: Client, label: str, form_token: str | None, headers: dict[str, str]
) -> None:
    real = await client.csrf("/admin/login")
    data = {"token": ADMIN_TOKEN}
    if form_token is not None:
        data["csrf"] = real if form_token == "valid" else form_token
    status, _, response = await client.post("/admin/login", data, headers=headers)
    assert status == 403, label
    assert sessions.SESSION_COOKIE not in response.cookies


@pytest.mark.parametrize("target", ["//evil.test/x", "https://evil.test/", "/api", "javascript:x"])
async def test_sign_in_never_redirects_off_the_admin(client: Client, target: str) -> None:
    form_token = await client.csrf("/admin/login")
    _, _, response = await client.post(
        "/admin/login", {"csrf": form_token, "token": ADMIN_TOKEN, "next": target}
    )
    assert response.headers["Location"] == "/admin/"


async def test_sign_out_ends_the_session_on_the_server(client: Client) -> None:
    await client.sign_in(ADMIN_TOKEN)
    csrf = await client.csrf("/admin/outbound/strategy")
    cookie = client.http.cookie_jar.filter_cookies(yarl.URL(client.base + "/admin/"))
    status, _, _ = await client.post("/admin/logout", {"csrf": csrf})
    assert status == 303
    client.http.cookie_jar.update_cookies(cookie)  # replay the old cookie
    status, _, response = await client.get("/admin/outbound/strategy")
    assert status == 303 and response.headers["Location"].startswith("/admin/login")


async def test_every_page_sends_the_security_headers(client: Client) -> None:
    await client.sign_in(ADMIN_TOKEN)
    for path in ("/admin/login", "/admin/outbound/strategy", "/admin/outbound/tls-strategies"):
        _, _, response = await client.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Referrer-Policy"] == "same-origin"


async def test_static_script_is_revalidated_by_etag(client: Client) -> None:
    status, script, response = await client.get("/admin/static/admin.js")
    assert status == 200 and "X-CSRF-Token" in script
    assert response.headers["Content-Type"].startswith("text/javascript")
    async with client.http.get(
        client.base + "/admin/static/admin.js", headers={"If-None-Match": response.headers["ETag"]}
    ) as again:
        assert again.status == 304
    status, _, _ = await client.get("/admin/static/..%2Fapp.py")
    assert status == 404


# --- CSRF on every POST -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "csrf", "headers"),
    [
        ("no CSRF token", None, {}),
        ("a wrong CSRF token", "wrong", {}),
        ("right token, another origin", "right", {"Origin": "http://evil.test"}),
        ("right token, cross-site fetch", "right", {"Sec-Fetch-Site": "cross-site"}),
    ],
)
async def test_a_post_without_the_session_csrf_token_changes_nothing(
    api: RunningApi, client: Client, label: str, csrf: str | None, headers: dict[str, str]
) -> None:
    await client.sign_in(ADMIN_TOKEN)
    real = await client.csrf("/admin/outbound/strategy")
    before = await _tls_expression(api)
    data = {"action": "save", "else": "'changed'"}
    if csrf is not None:
        data["csrf"] = real if csrf == "right" else csrf
    status, text, _ = await client.post("/admin/outbound/strategy/tls", data, headers=headers)
    assert status == 403 and "Refused" in text, label
    assert await _tls_expression(api) == before


async def test_the_script_endpoints_need_the_csrf_header(client: Client) -> None:
    await client.sign_in(ADMIN_TOKEN)
    real = await client.csrf("/admin/outbound/strategy")
    body = {"prop": "tls", "expression": {"match": [], "else": "retry_num >"}}
    async with client.http.post(client.base + "/admin/outbound/strategy/check", json=body) as r:
        assert r.status == 403
    async with client.http.post(
        client.base + "/admin/outbound/strategy/check", json=body, headers={"X-CSRF-Token": real}
    ) as response:
        answer = await response.json()
    assert answer["ok"] is False
    assert answer["problems"][0] == {
        "clause": "else",
        "text": "retry_num >",
        "position": 11,
        "reason": answer["problems"][0]["reason"],
    }


# --- what a token may do ------------------------------------------------------------------------


async def test_a_read_only_token_sees_no_edit_controls_and_is_refused_anyway(
    api: RunningApi, client: Client
) -> None:
    await client.sign_in(READONLY_TOKEN)
    _, page, _ = await client.get("/admin/outbound/strategy")
    assert "read-only" in page
    assert 'value="save"' not in page and "Reset to default" not in page
    assert 'class="expr-input"' not in page  # the rules are shown, not offered for editing
    _, listing, _ = await client.get("/admin/outbound/tls-strategies")
    assert "New TLS strategy" not in listing
    _, result, _ = await api.call("x:MtaTlsStrategy/query", {"filter": {"name": "default"}})
    default_id = result["ids"][0]
    _, one, _ = await client.get(f"/admin/outbound/tls-strategies/{default_id}")
    assert "<input" not in one.split("<main>")[1].replace('type="hidden"', "")
    assert "Delete" not in one

    csrf = await client.csrf("/admin/outbound/strategy")
    before = await _tls_expression(api)
    status, text, _ = await client.post(
        "/admin/outbound/strategy/tls", {"csrf": csrf, "action": "save", "else": "'x'"}
    )
    assert status == 403 and "sysMtaOutboundStrategy" in text
    status, _, _ = await client.post(
        "/admin/outbound/tls-strategies/new", {"csrf": csrf, "name": "sneaky"}
    )
    assert status == 403
    status, _, _ = await client.post(
        f"/admin/outbound/tls-strategies/{default_id}/delete", {"csrf": csrf}
    )
    assert status == 403
    assert await _tls_expression(api) == before
    _, found, _ = await api.call("x:MtaTlsStrategy/query", {"filter": {"name": "sneaky"}})
    assert found["ids"] == []


async def test_a_token_sees_only_the_pages_it_may_read(client: Client) -> None:
    await client.sign_in(CREATOR_TOKEN)  # may create and get TLS strategies, nothing else
    status, page, _ = await client.get("/admin/")
    assert status == 200  # no page it may list: says so instead of redirecting
    assert "no permission" in page and 'href="/admin/outbound/strategy"' not in page
    status, _, _ = await client.get("/admin/outbound/strategy")
    assert status == 403


async def test_an_invalid_object_is_refused_with_errors_beside_the_fields(
    api: RunningApi, client: Client
) -> None:
    await client.sign_in(ADMIN_TOKEN)
    csrf = await client.csrf("/admin/outbound/tls-strategies/new")
    status, page, _ = await client.post(
        "/admin/outbound/tls-strategies/new",
        {"csrf": csrf, "name": "broken", "tlsTimeout": "soon", "startTls": "require"},
    )
    assert status == 422
    box = page.split('id="field-tlsTimeout"')[1].split("</div>")[0]
    assert "soon" in box and "not a duration" in box
    _, found, _ = await api.call("x:MtaTlsStrategy/query", {"filter": {"name": "broken"}})
    assert found["ids"] == []


# --- the same generic form for every collection -------------------------------------------------


async def _created(api: RunningApi, object_type: str, name: str) -> dict[str, Any]:
    _, found, _ = await api.call(f"x:{object_type}/query", {"filter": {"name": name}})
    _, got, _ = await api.call(f"x:{object_type}/get", {"ids": found["ids"]})
    [created] = [o for o in got["list"] if o["name"] == name]
    return dict(created)


async def test_every_collection_is_created_through_its_form(
    api: RunningApi, client: Client
) -> None:
    await client.sign_in(ADMIN_TOKEN)
    csrf = await client.csrf("/admin/outbound/routes/new?type=Relay")
    forms: list[tuple[str, str, dict[str, str]]] = [
        (
            "routes",
            "smarthost",
            {
                "@type": "Relay",
                "address": "relay.example",
                "port": "587",
                "protocol": "smtp",
                "implicitTls": "on",
                "authUsername": "mailer",
                "authSecret.@type": "Value",
                "authSecret.Value.secret": "s3cret",
            },
        ),
        (
            "connection-strategies",
            "pinned",
            {
                "sourceIps.0.sourceIp": "192.0.2.7",
                "sourceIps.0.ehloHostname": "out.example",
                "sourceIps.1.sourceIp": "",
                "dataTimeout": "20m",
            },
        ),
        (
            "schedules",
            "patient",
            {
                "queue": "remote",
                "retry": "1m, 10m, 1h",
                "notify": "",
                "expiry.@type": "Attempts",
                "expiry.Attempts.maxAttempts": "12",
            },
        ),
        ("virtual-queues", "bulk", {"threadsPerNode": "8"}),
    ]
    for slug, name, fields in forms:
        status, text, _ = await client.post(
            f"/admin/outbound/{slug}/new", {"csrf": csrf, "name": name, **fields}
        )
        assert status == 303, (slug, text)
    relay = await _created(api, "MtaRoute", "smarthost")
    assert (relay["@type"], relay["port"], relay["implicitTls"]) == ("Relay", 587, True)
    assert relay["authSecret"]["@type"] == "Value" and relay["authSecret"]["secret"] != "s3cret"
    pinned = await _created(api, "MtaConnectionStrategy", "pinned")
    assert pinned["sourceIps"] == [{"sourceIp": "192.0.2.7", "ehloHostname": "out.example"}]
    assert pinned["dataTimeout"] == 1_200_000
    patient = await _created(api, "MtaDeliverySchedule", "patient")
    assert patient["retry"] == [60_000, 600_000, 3_600_000] and patient["notify"] == []
    assert patient["expiry"] == {"@type": "Attempts", "maxAttempts": 12}
    assert (await _created(api, "MtaVirtualQueue", "bulk"))["threadsPerNode"] == 8

    # Edit the relay without retyping its secret: the mask /get shows keeps it.
    _, page, _ = await client.get(f"/admin/outbound/routes/{relay['id']}")
    assert "s3cret" not in page and 'type="password"' in page
    status, _, _ = await client.post(
        f"/admin/outbound/routes/{relay['id']}",
        {
            "csrf": csrf,
            "address": "relay2.example",
            "port": "587",
            "protocol": "smtp",
            "authUsername": "mailer",
            "authSecret.@type": "Value",
            "authSecret.Value.secret": "********",
        },
    )
    assert status == 303
    edited = await _created(api, "MtaRoute", "smarthost")
    assert edited["address"] == "relay2.example" and edited["implicitTls"] is False
    assert edited["authSecret"] == relay["authSecret"]


# --- the try-it box asks the daemon's resolver: only for who may read the strategy --------------


async def test_the_try_form_runs_no_lookup_for_a_token_that_may_not_read_the_strategy(
    tmp_path: Path,
) -> None:
    asked: list[tuple[str, str]] = []

    async def lookup(name: str, rtype: str) -> expr.Value:
        asked.append((name, rtype))
        return ["mx.example"]

    registry = await Registry.open(f"sqlite:///{tmp_path}/delivery.db")
    tokens = auth.TokenTable.from_settings(
        [config.ApiToken(name="creator", secret=CREATOR_TOKEN, permissions=CREATOR_PERMISSIONS)]
    )
    try:
        async with (
            server.ApiServer(
                registry,
                tokens,
                host="127.0.0.1",
                port=0,
                health_checks=health.HealthChecks(("store",)),
                metrics_registry=metrics.MetricsRegistry(),
                admin_options=AdminOptions(lookup=lookup),
            ) as listener,
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        ):
            client = Client(listener.url, http)
            await client.sign_in(CREATOR_TOKEN)  # TLS strategies only: not the Strategy page
            csrf = await client.csrf("/admin/outbound/tls-strategies/new")
            status, _, _ = await client.post(
                "/admin/outbound/strategy/route",
                {
                    "csrf": csrf,
                    "action": "try",
                    "else": "dns_query('probe.example', 'MX')[0]",
                    "samples": "rcpt_domain=example.com",
                },
            )
    finally:
        await registry.close()
    assert status == 403
    assert asked == []  # refused before the expression ran
