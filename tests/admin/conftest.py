"""Fixtures of the browser tests: a real daemon, Debian's Chromium driven by Playwright.

``admin_daemon`` (one per test process): ``python -m delivery serve`` on loopback with two
tokens, `ADMIN_TOKEN` (``*``) and `READER_TOKEN` (every Get and Query permission, the queue's
and explain's included, nothing else), ``[local] domains = ["example.org"]``, and a resolver
address nothing answers on, so that mail to any other domain is deferred (last_error dns)
within DNS_TIMEOUT. Its `jmap()` calls the API as a script would.

``browser`` (one per test process): headless Chromium from CHROMIUM (Debian's ``chromium``
package; ``scripts/install-browser`` installs it). Nothing is downloaded: Playwright is only
the driver, pointed at that binary.

``page``: a fresh browser context and page per test; when the test fails, a screenshot of the
page goes to ARTIFACTS (``DELIVERY_TEST_ARTIFACTS``, else a folder in the system temp dir) and
its path is printed with the test's output.

`save_screenshot(page, name)`: the page as documentation. Written to docs/screenshots/ when
``DELIVERY_ADMIN_SCREENSHOTS=1`` (to refresh the committed images), else to ARTIFACTS.

Loopback only: the daemon, its submission listener and the dead resolver are on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from delivery.registry.service import Registry
from tests.plugins.api import USING, daemon_environment, readonly_permissions

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ADMIN_TOKEN = "browser-admin-token"
READER_TOKEN = "browser-reader-token"
CHROMIUM = Path(os.environ.get("DELIVERY_TEST_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
ARTIFACTS = (
    Path(
        os.environ.get("DELIVERY_TEST_ARTIFACTS")
        or Path(tempfile.gettempdir()) / "delivery-test-artifacts"
    )
    / "admin"
)
DNS_TIMEOUT = "200ms"
"""The dead resolver's timeout: how soon mail to a remote domain is deferred."""
START_TIMEOUT_S = 30.0
"""A cold interpreter starting the daemon on a loaded machine."""
VIEWPORT = {"width": 1280, "height": 860}
"""The size of every page and screenshot."""

_LISTENING = re.compile(r"Management API listening on (http://\S+)")
_SUBMISSION = re.compile(r"SMTP submission listening on (\S+):(\d+)")


def _dead_udp_port() -> int:
    """A loopback UDP port nothing listens on: the resolver's questions go unanswered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


@dataclass(slots=True)
class AdminDaemon:
    """A running `delivery serve` for the browser tests."""

    process: subprocess.Popen[bytes]
    url: str
    submission: tuple[str, int]
    output: list[str] = field(default_factory=list)

    @property
    def admin(self) -> str:
        """The admin's base URL."""
        return self.url + "/admin"

    def jmap(self, method: str, arguments: dict[str, Any], *, token: str = ADMIN_TOKEN) -> Any:
        """One JMAP call through POST /api; returns the response arguments."""
        body = json.dumps({"using": USING, "methodCalls": [[method, arguments, "c"]]}).encode()
        request = urllib.request.Request(
            self.url + "/api",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            [[name, result, _]] = json.load(response)["methodResponses"]
        assert name != "error", result
        return result


def _start(directory: Path) -> AdminDaemon:
    reader = [
        *readonly_permissions(Registry.object_types),
        "sysQueuedMessageGet",
        "sysQueuedMessageQuery",
        "sysExplainGet",
    ]
    settings = directory / "delivery.toml"
    settings.write_text(
        'hostname = "mta.admin.test"\n'
        f'[store]\nurl = "sqlite://{directory}/data/delivery.db"\n'
        '[api]\nlisten = "127.0.0.1:0"\n'
        f'[[api.tokens]]\nname = "admin"\nsecret = "{ADMIN_TOKEN}"\npermissions = ["*"]\n'
        f'[[api.tokens]]\nname = "reader"\nsecret = "{READER_TOKEN}"\n'
        f"permissions = {_toml_list(reader)}\n"
        '[submission]\nlisten = "127.0.0.1:0"\n'
        f'[dns]\nnameservers = ["127.0.0.1:{_dead_udp_port()}"]\ntimeout = "{DNS_TIMEOUT}"\n'
        '[local]\ndomains = ["example.org"]\n'
    )
    log = (directory / "daemon.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "delivery", "serve", "--config", str(settings)],
        stdout=subprocess.PIPE,
        bufsize=0,  # unbuffered: select() then sees every line that arrived
        stderr=log,
        env=daemon_environment(),
        cwd=directory,
    )
    log.close()
    assert process.stdout is not None
    output: list[str] = []
    url, submission = "", None
    deadline = time.monotonic() + START_TIMEOUT_S
    while not url:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = process.stdout.readline().decode() if ready else ""
        if not line:
            process.kill()
            raise AssertionError(f"daemon did not start: {(directory / 'daemon.log').read_text()}")
        output.append(line.rstrip("\n"))
        if match := _SUBMISSION.search(line):
            submission = (match.group(1), int(match.group(2)))
        if match := _LISTENING.search(line):
            url = match.group(1)
    assert submission is not None, output
    return AdminDaemon(process, url, submission, output)


@pytest.fixture(scope="session")
def admin_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminDaemon]:
    """One daemon per test process; tests leave it as they found it or use their own names."""
    daemon = _start(tmp_path_factory.mktemp("admin-daemon"))
    yield daemon
    daemon.process.send_signal(signal.SIGTERM)
    try:
        daemon.process.wait(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        daemon.process.kill()
        daemon.process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium (Debian's binary), one per test module.

    Not per session: Playwright's sync API keeps its event loop running in this thread while it
    is started, and every asyncio test the same xdist worker runs meanwhile would fail with
    "Runner.run() cannot be called from a running event loop".
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright for Python: pip install playwright")
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/install-browser (Debian's chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so that ``page`` knows the test failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"report_{report.when}", report)


def _artifact_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", nodeid).strip("-")[-150:]


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh context and page; a screenshot is saved when the test fails."""
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(10_000)
    opened = context.new_page()
    opened.on("dialog", lambda dialog: dialog.accept())  # confirm() of delete/reset/cancel
    yield opened
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{_artifact_name(request.node.nodeid)}.png"
        opened.screenshot(path=str(path), full_page=True)
        print(f"screenshot of the failed test: {path} (page {opened.url})")
    context.close()


def save_screenshot(page: Page, name: str) -> Path:
    """The page as documentation: docs/screenshots/<name>.png when refreshing, else ARTIFACTS."""
    folder = SCREENSHOTS if os.environ.get("DELIVERY_ADMIN_SCREENSHOTS") == "1" else ARTIFACTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Page, daemon: AdminDaemon, token: str, *, start: str = "/") -> None:
    """Sign in through the form, as a person would (from ``start``, which needs a session)."""
    page.goto(daemon.admin + start)
    page.fill("#token", token)
    page.click("button:has-text('Sign in')")
    page.wait_for_selector("header .token-name")
