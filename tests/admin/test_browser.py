"""The web admin in a real headless Chromium against a running `delivery serve`.

What an operator does: sign in; change the tls expression and see it through the JMAP API; a
bad expression shows its error where it is and saves nothing; create, edit and delete a TLS
strategy; a read-only token sees no edit controls and is refused when it posts anyway; a
form without its CSRF token is refused; the queue shows a deferred message and Retry works;
Explain answers. Screenshots: see conftest.py (on failure, and of each page for the docs).
"""

from __future__ import annotations

import re
import smtplib
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.admin.conftest import (
    ADMIN_TOKEN,
    READER_TOKEN,
    AdminDaemon,
    save_screenshot,
    sign_in,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

WAIT_S = 15.0
"""Longest wait for the daemon to reach a state (a deferral takes DNS_TIMEOUT)."""


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _tls(daemon: AdminDaemon) -> dict[str, Any]:
    found = daemon.jmap("x:MtaOutboundStrategy/get", {"ids": ["singleton"]})
    tls: dict[str, Any] = found["list"][0]["tls"]
    return tls


def _tls_strategy(daemon: AdminDaemon, name: str) -> dict[str, Any] | None:
    found = daemon.jmap("x:MtaTlsStrategy/query", {"filter": {"name": name}})
    objects = daemon.jmap("x:MtaTlsStrategy/get", {"ids": found["ids"]})["list"]
    exact = [o for o in objects if o["name"] == name]
    return exact[0] if exact else None


def _wait_for(what: str, check: Callable[[], Any]) -> Any:
    """Poll the daemon (another process: nothing to await) until ``check`` gives a value."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sign_in_leads_to_the_strategy_page(page: Page, admin_daemon: AdminDaemon) -> None:
    page.goto(admin_daemon.admin + "/")
    assert page.url.endswith("/admin/login")
    page.fill("#token", "not-the-token")
    page.click("button:has-text('Sign in')")
    assert "not valid" in page.inner_text("main")
    page.fill("#token", ADMIN_TOKEN)
    page.click("button:has-text('Sign in')")
    page.wait_for_selector("h1:has-text('Strategy')")
    assert page.inner_text(".crumbs") == "Settings › MTA › Outbound › Strategy"
    assert page.inner_text("header .token-name") == "admin"
    cookie = next(c for c in page.context.cookies() if c["name"] == "delivery_admin")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"


def test_a_changed_tls_expression_is_seen_through_the_api(
    page: Page, admin_daemon: AdminDaemon
) -> None:
    sign_in(page, admin_daemon, ADMIN_TOKEN, start="/outbound/strategy")
    panel = page.locator("#expr-tls")
    panel.locator("input[name='if.0']").fill("retry_num > 1 && last_error == 'tls'")
    panel.locator("button.rule-add").click()
    panel.locator("tr.rule").last.locator("input[name^='if.']").fill("mx == 'mx.legacy.test'")
    panel.locator("tr.rule").last.locator("input[name^='then.']").fill("'invalid-tls'")
    panel.locator(".problems .compiles").wait_for()  # checked as typed: it compiles
    panel.locator("button[value='save']").click()
    page.wait_for_selector(".flash.ok:has-text('Saved the tls expression')")
    assert _tls(admin_daemon) == {
        "match": [
            {"if": "retry_num > 1 && last_error == 'tls'", "then": "'invalid-tls'"},
            {"if": "mx == 'mx.legacy.test'", "then": "'invalid-tls'"},
        ],
        "else": "'default'",
    }
    page.locator("#expr-tls form.reset button").click()  # back to the documented default
    page.wait_for_selector(".flash.ok:has-text('back to its default')")
    assert _tls(admin_daemon) == {
        "match": [{"if": "retry_num > 0 && last_error == 'tls'", "then": "'invalid-tls'"}],
        "else": "'default'",
    }


def test_a_bad_expression_shows_its_error_and_saves_nothing(
    page: Page, admin_daemon: AdminDaemon
) -> None:
    before = _tls(admin_daemon)
    sign_in(page, admin_daemon, ADMIN_TOKEN, start="/outbound/strategy")
    panel = page.locator("#expr-tls")
    condition = panel.locator("input[name='if.0']")
    condition.fill("retry_num >")
    problem = panel.locator(".problems li.problem[data-clause='match[0].if']")
    problem.wait_for()
    assert "at position 11" in problem.inner_text()
    assert problem.locator("pre.caret").inner_text() == "retry_num >\n           ^"
    assert condition.get_attribute("aria-invalid") == "true"
    panel.locator("button[value='save']").click()  # save anyway: the API refuses
    page.wait_for_selector("#expr-tls .problems .field-errors:has-text('Not saved')")
    assert "position 11" in page.inner_text("#expr-tls .problems")
    assert page.input_value("#expr-tls input[name='if.0']") == "retry_num >"  # kept as typed
    assert _tls(admin_daemon) == before


def test_try_it_evaluates_the_expression_as_typed(page: Page, admin_daemon: AdminDaemon) -> None:
    sign_in(page, admin_daemon, ADMIN_TOKEN, start="/outbound/strategy")
    panel = page.locator("#expr-route")
    panel.locator("textarea[name='samples']").fill("rcpt_domain=example.org")
    panel.locator("button[value='try']").click()
    result = panel.locator("output.trial.ok")
    result.wait_for()
    assert '"local"' in result.inner_text() and "rule 1 matched" in result.inner_text()


def test_create_edit_and_delete_a_tls_strategy(page: Page, admin_daemon: AdminDaemon) -> None:
    name = _unique("strict")
    sign_in(page, admin_daemon, ADMIN_TOKEN, start="/outbound/tls-strategies")
    page.click("a:has-text('New TLS strategy')")
    page.fill("#in-name", name)
    page.select_option("#in-startTls", "require")
    page.fill("#in-tlsTimeout", "soon")
    page.click("button:has-text('Create')")
    error = page.locator("#field-tlsTimeout .field-errors")
    assert "not a duration" in error.inner_text()  # beside the field; nothing created
    assert _tls_strategy(admin_daemon, name) is None
    page.fill("#in-tlsTimeout", "90s")
    page.click("button:has-text('Create')")
    page.wait_for_selector(f".flash.ok:has-text('{name}')")
    created = _tls_strategy(admin_daemon, name)
    assert created is not None
    assert (created["startTls"], created["tlsTimeout"], created["dane"]) == (
        "require",
        90_000,
        "optional",
    )

    page.fill("#name-filter", name)
    page.click("button:has-text('Filter')")
    row = page.locator(f"tr[data-name='{name}']")
    assert "90s" in row.inner_text() and page.locator("table.list tbody tr").count() == 1
    row.locator("a").click()
    assert page.inner_text("#in-name") == name  # shown, not editable: names are immutable
    assert page.input_value("#in-mtaStsTimeout") == "5m"
    page.fill("#in-description", "for partners that publish DANE")
    page.select_option("#in-dane", "require")
    page.click("button:has-text('Save')")
    page.wait_for_selector(".flash.ok:has-text('Saved')")
    edited = _tls_strategy(admin_daemon, name)
    assert edited is not None
    assert (edited["dane"], edited["description"]) == ("require", "for partners that publish DANE")

    page.click("button:has-text('Delete TLS strategy')")  # confirm() is accepted
    page.wait_for_selector(".flash.ok:has-text('Deleted')")
    assert _tls_strategy(admin_daemon, name) is None
    assert page.locator(f"tr[data-name='{name}']").count() == 0


def _post_in_page(page: Page, path: str, form: dict[str, str]) -> int:
    """POST a form from the page's own script context (same origin, its cookies)."""
    status: int = page.evaluate(
        """async ([path, form]) => {
            const response = await fetch(path, {method: "POST", body: new URLSearchParams(form)});
            return response.status;
        }""",
        [path, form],
    )
    return status


def test_a_read_only_token_is_offered_nothing_and_refused_anyway(
    page: Page, admin_daemon: AdminDaemon
) -> None:
    before = _tls(admin_daemon)
    sign_in(page, admin_daemon, READER_TOKEN, start="/outbound/strategy")
    assert page.inner_text("header .badge") == "read-only"
    assert page.locator("button[value='save']").count() == 0
    assert page.locator("form.reset").count() == 0
    assert page.locator("input.expr-input").count() == 0
    assert "retry_num > 0" in page.inner_text("#expr-tls table.rules")
    page.goto(admin_daemon.admin + "/outbound/tls-strategies")
    assert page.locator("a:has-text('New')").count() == 0
    page.click("tr[data-name='default'] a")
    assert page.locator("main input:not([type='hidden']), main select").count() == 0
    assert page.locator("button:has-text('Delete')").count() == 0
    assert page.inner_text("dd[data-prop='tlsTimeout']") == "3m"

    csrf = page.get_attribute("header form input[name='csrf']", "value")
    assert csrf
    status = _post_in_page(
        page, "/admin/outbound/strategy/tls", {"csrf": csrf, "action": "save", "else": "'x'"}
    )
    assert status == 403
    status = _post_in_page(
        page, "/admin/outbound/tls-strategies/new", {"csrf": csrf, "name": _unique("sneaky")}
    )
    assert status == 403
    assert _tls(admin_daemon) == before


def test_a_form_without_its_csrf_token_is_refused(page: Page, admin_daemon: AdminDaemon) -> None:
    before = _tls(admin_daemon)
    sign_in(page, admin_daemon, ADMIN_TOKEN, start="/outbound/strategy")
    page.fill("#expr-tls input[name='else']", "'forged'")
    page.evaluate("document.querySelector('#expr-tls form input[name=csrf]').remove()")
    page.click("#expr-tls button[value='save']")
    page.wait_for_selector("h1:has-text('Refused')")
    assert "no CSRF token" in page.inner_text("main")
    assert _post_in_page(page, "/admin/outbound/strategy/tls/reset", {"csrf": "guess"}) == 403
    assert _tls(admin_daemon) == before


def _submit(daemon: AdminDaemon, recipient: str) -> None:
    host, port = daemon.submission
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.sendmail(
            "alice@origin.test", [recipient], b"Subject: queued\r\n\r\nfor the admin\r\n"
        )


def _recipient(daemon: AdminDaemon, address: str) -> tuple[str, dict[str, Any]] | None:
    found = daemon.jmap("x:QueuedMessage/query", {"filter": {"recipient": address}})
    if not found["ids"]:
        return None
    [message] = daemon.jmap("x:QueuedMessage/get", {"ids": found["ids"]})["list"]
    [recipient] = message["recipients"]
    return message["id"], recipient


def test_the_queue_shows_a_deferred_message_and_retry_works(
    page: Page, admin_daemon: AdminDaemon
) -> None:
    address = f"{_unique('bob')}@deferred.test"
    _submit(admin_daemon, address)
    message_id, first = _wait_for(
        "the first attempt",
        lambda: (found := _recipient(admin_daemon, address)) and found[1]["deferred"] and found,
    )
    assert first["attempts"] == 1 and first["lastError"] == "dns"

    sign_in(page, admin_daemon, ADMIN_TOKEN, start="/queue?status=deferred&domain=deferred.test")
    row = page.locator(f"tr[data-id='{message_id}']")
    assert "deferred" in row.locator(".status").inner_text() and address in row.inner_text()
    row.locator("a").click()
    recipient_row = page.locator(f"tr.recipient[data-address='{address}']")
    assert recipient_row.locator(".attempts").inner_text() == "1"
    assert "could not be looked up" in page.inner_text("pre.last-status")
    page.click("button:has-text('Retry now')")
    page.wait_for_selector(f".flash.ok:has-text('{message_id} is due now')")
    _wait_for(
        "the retried attempt",
        lambda: (found := _recipient(admin_daemon, address)) and found[1]["attempts"] == 2,
    )
    page.reload()
    assert page.locator(f"tr.recipient[data-address='{address}'] .attempts").inner_text() == "2"


def test_explain_answers_for_a_recipient(page: Page, admin_daemon: AdminDaemon) -> None:
    sign_in(page, admin_daemon, ADMIN_TOKEN, start="/explain")
    page.fill("#recipient", "carol@example.org")
    page.click("button:has-text('Explain')")
    banner = page.locator("p.decision")
    assert "deliver-local" in banner.inner_text()
    assert "delivery explain carol@example.org" in page.inner_text("pre.report")
    page.fill("#recipient", "dave@deferred.test")
    page.click("button:has-text('Explain')")
    assert re.search(r"defer", page.inner_text("p.decision"))


def test_screenshots_of_each_page(page: Page, admin_daemon: AdminDaemon) -> None:
    """Every page renders (200) and is photographed for docs/screenshots."""
    page.goto(admin_daemon.admin + "/login")
    save_screenshot(page, "sign-in")
    sign_in(page, admin_daemon, ADMIN_TOKEN, start="/outbound/strategy")
    panel = page.locator("#expr-tls")
    panel.locator("input[name='if.0']").fill("retry_num > 0 && last_error == 'tls' &&")
    panel.locator(".problems li.problem").wait_for()
    page.locator("#expr-route button[value='try']").click()
    page.locator("#expr-route output.trial.ok").wait_for()
    save_screenshot(page, "strategy")
    address = f"{_unique('erin')}@deferred.test"
    _submit(admin_daemon, address)
    message_id, _ = _wait_for(
        "a deferral",
        lambda: (found := _recipient(admin_daemon, address)) and found[1]["deferred"] and found,
    )
    default_id = admin_daemon.jmap("x:MtaTlsStrategy/query", {"filter": {"name": "default"}})[
        "ids"
    ][0]
    pages = {
        "tls-strategies": "/outbound/tls-strategies",
        "tls-strategy": f"/outbound/tls-strategies/{default_id}",
        "routes": "/outbound/routes",
        "relay-route": "/outbound/routes/new?type=Relay",
        "connection-strategies": "/outbound/connection-strategies",
        "delivery-schedule": "/outbound/schedules/new",
        "virtual-queues": "/outbound/virtual-queues",
        "queue": "/queue",
        "message": f"/queue/{message_id}",
        "explain": "/explain?recipient=carol%40example.org",
    }
    for name, path in pages.items():
        response = page.goto(admin_daemon.admin + path)
        assert response is not None and response.status == 200, path
        save_screenshot(page, name)
