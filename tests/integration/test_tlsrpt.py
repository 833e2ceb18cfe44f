"""TLS-RPT end to end (RFC 8460) and the daemon's health report of DNSSEC.

A day of deliveries with mixed TLS results is recorded by the worker into the TLS-RPT store
on the queue's database file; `serve.send_reports` with tomorrow's time sends the day's report
to the domain's two ruas: a real HTTPS endpoint (harness certificate, name in the harness DNS)
and a mailto rua, whose mail the daemon queues and its worker delivers to the rua domain's MX.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp import web

from delivery.cli import serve
from delivery.harness import certs, loopback
from delivery.policy import tlsrpt
from delivery.queue import model
from tests.integration.conftest import StartDaemon
from tests.integration.test_mta_sts import today
from tests.plugins.api import free_port
from tests.plugins.harness import MakeLab

SCHEMA = json.loads(
    (Path(__file__).parents[1] / "policy" / "tlsrpt_schema.json").read_text(encoding="utf-8")
)
REPORT_HOST = "reports.rpt.test"


class Endpoint:
    """An HTTPS TLS-RPT endpoint on a loopback address; keeps each report POSTed to it."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.posted.append((request.headers.get("Content-Type", ""), await request.read()))
        return web.Response(status=201)


@pytest.fixture
async def endpoint(
    harness_certs: certs.CertFactory, harness_pool: loopback.LoopbackPool
) -> AsyncIterator[tuple[Endpoint, socket.socket]]:
    _, sock = harness_pool.bind(0)
    found = Endpoint()
    app = web.Application()
    app.router.add_post("/tlsrpt", found.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    context = harness_certs.credential(REPORT_HOST).server_context()
    await web.SockSite(runner, sock, ssl_context=context).start()
    try:
        yield found, sock
    finally:
        await runner.cleanup()


def tomorrow_at_one() -> int:
    """01:00 UTC tomorrow, epoch ms: today's reports are due (from 00:15)."""
    start = datetime.combine(today() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return int((start + timedelta(hours=1)).timestamp() * 1000)


def attachment(message: bytes) -> dict[str, Any]:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed["Auto-Submitted"] == "auto-generated"
    _, report = parsed.iter_parts()
    assert report.get_content_type() == tlsrpt.REPORT_MEDIA_TYPE
    content = report.get_content()
    assert isinstance(content, bytes)
    return tlsrpt.decode_report(content)


async def test_a_day_of_mixed_results_reaches_the_https_and_the_mailto_rua(
    make_lab: MakeLab,
    start_daemon: StartDaemon,
    endpoint: tuple[Endpoint, socket.socket],
) -> None:
    https, sock = endpoint
    ip, port = sock.getsockname()[:2]
    https_rua = f"https://{REPORT_HOST}:{port}/tlsrpt"
    lab = await make_lab(
        {
            "domains": {
                "rpt.test": {
                    "mx": [
                        {"name": "mx1.rpt.test", "preference": 10, "tls": "none"},
                        {"name": "mx2.rpt.test", "preference": 20},
                    ],
                    "mta_sts": {"mode": "enforce"},
                    "tlsrpt": f"v=TLSRPTv1; rua={https_rua},mailto:tls-reports@reports.test",
                    "records": [{"name": REPORT_HOST, "type": "A", "value": ip}],
                },
                "reports.test": {"mx": [{"name": "mx1.reports.test"}]},
            }
        }
    )
    daemon = await start_daemon(
        lab, settings={"tlsrpt": {"organization": "Integration", "contact": "ops@rpt.example"}}
    )
    world = daemon.world
    for local in ("b", "c"):
        await world.send("a@sender.test", [f"{local}@rpt.test"])
    settled = await daemon.outcomes("b@rpt.test", "c@rpt.test")
    assert all(s.status is model.RecipientStatus.DELIVERED for s in settled.values())
    assert len(lab.mx("mx2.rpt.test").received) == 2  # mx1 lacks STARTTLS: refused twice

    summary = await serve.send_reports(daemon.runtime, now=tomorrow_at_one())
    assert summary is not None
    assert sorted((o.rua, o.sent) for o in summary.ruas) == [
        (https_rua, True),
        ("mailto:tls-reports@reports.test", True),
    ]
    [(content_type, body)] = https.posted
    assert content_type == tlsrpt.REPORT_MEDIA_TYPE
    posted = tlsrpt.decode_report(body)
    [mail] = await lab.mx("mx1.reports.test").wait_for_messages(1)
    assert mail.mail_from == ""  # a report that bounces must not bounce back
    assert mail.rcpt_tos == ["tls-reports@reports.test"]
    mailed = attachment(mail.body)
    assert posted == mailed  # one report, one id, two ways

    jsonschema.Draft202012Validator(
        SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(posted)
    assert (posted["organization-name"], posted["contact-info"]) == (
        "Integration",
        "ops@rpt.example",
    )
    [policy] = posted["policies"]
    assert policy["policy"]["policy-type"] == "sts"
    assert policy["policy"]["policy-domain"] == "rpt.test"
    assert "mode: enforce" in policy["policy"]["policy-string"]
    assert policy["summary"] == {
        "total-successful-session-count": 2,
        "total-failure-session-count": 2,
    }
    details = policy["failure-details"]
    assert {d["result-type"] for d in details} == {"starttls-not-supported"}
    assert {d["receiving-mx-hostname"] for d in details} == {"mx1.rpt.test"}
    assert {d["receiving-ip"] for d in details} == {lab.addresses["mx1.rpt.test"]}
    assert sum(d["failed-session-count"] for d in details) == 2

    # The session that carried the report is in no report (RFC 8460 §5.3).
    await daemon.outcomes("tls-reports@reports.test")
    await daemon.tlsrpt.flush()
    assert await daemon.tlsrpt.aggregates("reports.test", today()) == []
    again = await serve.send_reports(daemon.runtime, now=tomorrow_at_one() + 3_600_000)
    assert again is not None and again.ruas == []  # each rua got it once


@pytest.mark.parametrize(
    ("probe", "status", "words"),
    [
        ("signed.test", "ok", "the resolver validates DNSSEC (AD on signed.test.)"),
        (None, "degraded", "does not validate DNSSEC (no AD on ., a signed name)"),
    ],
)
async def test_healthz_shows_the_dnssec_probe(
    probe: str | None, status: str, words: str, make_lab: MakeLab, start_daemon: StartDaemon
) -> None:
    lab = await make_lab(
        {"domains": {"signed.test": {"dnssec": "secure", "mx": [{"name": "mx1.signed.test"}]}}}
    )
    daemon = await start_daemon(
        lab,
        dnssec_probe=probe,
        components=(serve.store, serve.worker, serve.api),
        settings={"api": {"listen": f"127.0.0.1:{free_port()}"}},
    )
    await daemon.runtime.require_worker().dnssec.validating()  # the probe has answered
    assert daemon.runtime.api_url is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{daemon.runtime.api_url}/healthz") as response,
    ):
        report = await response.json()
    dns = report["checks"]["dns"]
    assert dns["status"] == status
    assert words in dns["detail"]
    assert report["status"] == status
