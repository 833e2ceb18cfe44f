"""TLS-RPT delivery over real sockets: HTTPS POST and the daily run.

A real aiohttp HTTPS endpoint on a loopback address with a certificate from the harness CA,
its name (and the ``_smtp._tls`` TXT records) served by the harness DNS server and resolved
by the engine's own resolver; reports by mail go to a callback standing for the queue. The
same (domain, day) is run again, across a store reopen too, to show that each rua gets the
report once, and that a failed one is tried again by the next run.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web

from delivery.dns import resolver as dns_resolver
from delivery.harness import certs, loopback
from delivery.harness.dns_server import DnsServer, RecordSpec, ZoneSpec
from delivery.policy import tlsrpt, tlsrpt_send
from delivery.policy.tlsrpt_store import TlsRptStore
from delivery.queue import model
from tests.policy import test_tlsrpt

DOMAIN = "example.test"
REPORT_HOST = "report.example.test"
DAY = date(2024, 5, 1)
RUN_AT = int(datetime(2024, 5, 2, 1, 0, tzinfo=UTC).timestamp() * 1000)  # day's end + 1 h
HOUR_MS = 3_600_000
SENDER = tlsrpt_send.ReportSender.for_host("mta.example.org")
SCHEMA = json.loads((Path(__file__).parent / "tlsrpt_schema.json").read_text(encoding="utf-8"))
AUTHENTICATED = model.MessageSource.AUTHENTICATED


# ---- the HTTPS endpoint -----------------------------------------------------------------------


@dataclass
class Endpoint:
    """A TLS-RPT HTTPS endpoint: records each POST, answers ``status`` (with ``location``)."""

    status: int = 200
    location: str = ""
    hang: bool = False
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append((dict(request.headers), await request.read()))
        if self.hang:
            await asyncio.Event().wait()  # never answers: the client's timeout must end it
        headers = {"Location": self.location} if self.location else {}
        return web.Response(status=self.status, headers=headers, text="")

    def reports(self) -> list[dict[str, Any]]:
        return [tlsrpt.decode_report(body) for _, body in self.received]


StartEndpoint = Callable[..., Awaitable[Endpoint]]


@pytest.fixture
async def start_endpoint(harness_certs: certs.CertFactory) -> AsyncIterator[StartEndpoint]:
    """``await start_endpoint(sock, kind="valid")``: an Endpoint served on a bound socket."""
    runners: list[web.AppRunner] = []

    async def start(
        sock: socket.socket, kind: certs.CertKind = "valid", **options: Any
    ) -> Endpoint:
        endpoint = Endpoint(**options)
        app = web.Application()
        app.router.add_post("/tlsrpt", endpoint.handle)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        runners.append(runner)
        context = harness_certs.credential(REPORT_HOST, kind).server_context()
        await web.SockSite(runner, sock, ssl_context=context).start()
        return endpoint

    try:
        yield start
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


@dataclass
class World:
    """Two loopback addresses sharing one port (a good and a bad endpoint), and the DNS."""

    dns: DnsServer
    port: int
    good_ip: str
    bad_ip: str
    sockets: dict[str, socket.socket]

    @property
    def url(self) -> str:
        return f"https://{REPORT_HOST}:{self.port}/tlsrpt"

    def serve(self, *, report_ip: str, tlsrpt_txt: str | None = None, **faults: Any) -> None:
        """Point the report host at ``report_ip``; publish ``tlsrpt_txt`` (default: both ruas)."""
        txt = tlsrpt_txt or f"v=TLSRPTv1; rua={self.url},mailto:tls@{DOMAIN}"
        records = (
            RecordSpec("_smtp._tls", "TXT", txt, ttl=0),
            RecordSpec("report", "A", report_ip, ttl=0),
        )
        zones = [
            ZoneSpec(DOMAIN, records=records),
            ZoneSpec("norecord.test"),
            ZoneSpec("reports-only.test"),
            ZoneSpec("broken.test", faults=faults.get("broken", {})),
        ]
        self.dns.set_zones(zones)

    def resolver(self) -> dns_resolver.Resolver:
        return dns_resolver.Resolver([self.dns.address], timeout_ms=2000)


@pytest.fixture
async def world(harness_pool: loopback.LoopbackPool) -> AsyncIterator[World]:
    good_ip, bad_ip, dns_ip = harness_pool.take_many(3)
    port, sockets = loopback.bind_same_port([good_ip, bad_ip])
    async with DnsServer([], host=dns_ip) as dns:
        the_world = World(dns, port, good_ip, bad_ip, sockets)
        the_world.serve(report_ip=good_ip)
        try:
            yield the_world
        finally:
            for sock in sockets.values():
                sock.close()


@pytest.fixture
async def resolvers(world: World) -> AsyncIterator[Callable[[], dns_resolver.Resolver]]:
    """Fresh resolvers on the world's DNS (each run may take its own: no cached answers)."""
    made: list[dns_resolver.Resolver] = []

    def make() -> dns_resolver.Resolver:
        made.append(world.resolver())
        return made[-1]

    try:
        yield make
    finally:
        for resolver in made:
            await resolver.close()


def _report() -> dict[str, Any]:
    return test_tlsrpt._mixed_report()


# ---- post_report ------------------------------------------------------------------------------


async def test_post_reaches_the_https_endpoint(
    world: World, start_endpoint: StartEndpoint, harness_ca_file: Path, resolvers: Any
) -> None:
    endpoint = await start_endpoint(world.sockets[world.good_ip])
    report = _report()
    result = await tlsrpt_send.post_report(
        world.url, tlsrpt.encode_report(report), ca_file=str(harness_ca_file), resolver=resolvers()
    )
    assert result.delivered, result.reason
    assert result.status == 200
    [(headers, body)] = endpoint.received
    assert headers["Content-Type"] == "application/tlsrpt+gzip"
    assert json.loads(gzip.decompress(body)) == report
    assert (f"{REPORT_HOST}.", "A") in world.dns.queries  # our resolver, not the system's


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_post_any_2xx_is_delivered(
    world: World,
    start_endpoint: StartEndpoint,
    harness_ca_file: Path,
    resolvers: Any,
    status: int,
) -> None:
    await start_endpoint(world.sockets[world.good_ip], status=status)
    result = await tlsrpt_send.post_report(
        world.url, b"x", ca_file=str(harness_ca_file), resolver=resolvers()
    )
    assert (result.delivered, result.status) == (True, status)


async def test_post_redirect_is_not_followed(
    world: World, start_endpoint: StartEndpoint, harness_ca_file: Path, resolvers: Any
) -> None:
    elsewhere = f"https://{REPORT_HOST}:{world.port}/tlsrpt"
    endpoint = await start_endpoint(world.sockets[world.good_ip], status=307, location=elsewhere)
    result = await tlsrpt_send.post_report(
        world.url, b"x", ca_file=str(harness_ca_file), resolver=resolvers()
    )
    assert not result.delivered
    assert result.status == 307
    assert "redirects (307)" in result.reason and "not followed" in result.reason
    assert len(endpoint.received) == 1  # the redirect was not followed


@pytest.mark.parametrize("kind", ["unknown-ca", "expired", "wrong-name", "self-signed"])
async def test_post_bad_certificate_is_a_failure(
    world: World,
    start_endpoint: StartEndpoint,
    harness_ca_file: Path,
    resolvers: Any,
    kind: certs.CertKind,
) -> None:
    endpoint = await start_endpoint(world.sockets[world.good_ip], kind)
    result = await tlsrpt_send.post_report(
        world.url, b"x", ca_file=str(harness_ca_file), resolver=resolvers()
    )
    assert not result.delivered
    assert result.status is None
    assert "certificate" in result.reason
    assert endpoint.received == []  # nothing was sent to it


async def test_post_error_status_is_a_failure(
    world: World, start_endpoint: StartEndpoint, harness_ca_file: Path, resolvers: Any
) -> None:
    await start_endpoint(world.sockets[world.good_ip], status=503)
    result = await tlsrpt_send.post_report(
        world.url, b"x", ca_file=str(harness_ca_file), resolver=resolvers()
    )
    assert (result.delivered, result.status) == (False, 503)
    assert "answered 503" in result.reason


async def test_post_to_a_name_without_address_is_a_failure(
    world: World, harness_ca_file: Path, resolvers: Any
) -> None:
    url = f"https://nowhere.{DOMAIN}:{world.port}/tlsrpt"
    result = await tlsrpt_send.post_report(
        url, b"x", ca_file=str(harness_ca_file), resolver=resolvers()
    )
    assert not result.delivered
    assert f"nowhere.{DOMAIN} has no address" in result.reason


async def test_post_times_out(
    world: World, start_endpoint: StartEndpoint, harness_ca_file: Path, resolvers: Any
) -> None:
    await start_endpoint(world.sockets[world.good_ip], hang=True)
    result = await tlsrpt_send.post_report(
        world.url, b"x", ca_file=str(harness_ca_file), resolver=resolvers(), timeout_ms=300
    )
    assert not result.delivered
    assert "no answer within 300 ms" in result.reason


async def test_post_refuses_plain_http(harness_ca_file: Path, world: World, resolvers: Any) -> None:
    result = await tlsrpt_send.post_report(
        f"http://{REPORT_HOST}/tlsrpt", b"x", ca_file=str(harness_ca_file), resolver=resolvers()
    )
    assert not result.delivered and "only https" in result.reason


# ---- run_daily --------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """The enqueue_report callback: what the daemon would queue with source ``report``."""

    queued: list[tuple[bytes, str]] = field(default_factory=list)
    fail: bool = False

    async def __call__(self, message: bytes, to: str) -> None:
        if self.fail:
            raise OSError("the queue is not writable")
        self.queued.append((message, to))

    def reports(self) -> list[dict[str, Any]]:
        out = []
        for message, _ in self.queued:
            parsed = email.message_from_bytes(message, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            _, attachment = parsed.iter_parts()
            out.append(tlsrpt.decode_report(attachment.get_content()))
        return out


async def _run(
    store: TlsRptStore,
    resolver: dns_resolver.Resolver,
    mailbox: Mailbox,
    ca_file: Path,
    now: int = RUN_AT,
) -> tlsrpt_send.RunSummary:
    return await tlsrpt_send.run_daily(
        store,
        sender=SENDER,
        resolver=resolver,
        enqueue_report=mailbox,
        ca_file=str(ca_file),
        now=now,
        timeout_ms=5000,
    )


def _validate(report: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(
        SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(report)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "delivery.db"


async def test_a_mixed_day_reaches_the_https_and_the_mailto_rua(
    world: World,
    start_endpoint: StartEndpoint,
    harness_ca_file: Path,
    resolvers: Any,
    db_path: Path,
) -> None:
    endpoint = await start_endpoint(world.sockets[world.good_ip])
    mailbox = Mailbox()
    async with await TlsRptStore.open(db_path) as store:
        store.record(test_tlsrpt._mixed_day(), source=AUTHENTICATED)
        summary = await _run(store, resolvers(), mailbox, harness_ca_file)
        assert sorted((o.rua, o.sent) for o in summary.ruas) == [
            (world.url, True),
            (f"mailto:tls@{DOMAIN}", True),
        ]
        assert summary.closed == [(DOMAIN, DAY, "sent")]

        [posted] = endpoint.reports()
        [mailed] = mailbox.reports()
        assert mailbox.queued[0][1] == f"tls@{DOMAIN}"
        assert posted == mailed  # one report, one id, two ways
        _validate(posted)
        expected = _report()
        assert posted["policies"] == expected["policies"]
        assert posted["contact-info"] == SENDER.contact_info
        assert posted["date-range"] == expected["date-range"]

        again = await _run(store, resolvers(), mailbox, harness_ca_file, now=RUN_AT + HOUR_MS)
        assert again.ruas == [] and again.pending == []
        assert len(endpoint.received) == 1 and len(mailbox.queued) == 1


@pytest.mark.parametrize("trouble", ["redirect", "bad-certificate", "status-500"])
async def test_a_failed_https_rua_is_retried_by_the_next_run_once(
    world: World,
    start_endpoint: StartEndpoint,
    harness_ca_file: Path,
    resolvers: Any,
    db_path: Path,
    trouble: str,
) -> None:
    good = await start_endpoint(world.sockets[world.good_ip])
    troubles: dict[str, dict[str, Any]] = {
        "redirect": {"status": 302, "location": world.url},
        "bad-certificate": {"kind": "unknown-ca"},
        "status-500": {"status": 500},
    }
    bad_options = troubles[trouble]
    bad = await start_endpoint(world.sockets[world.bad_ip], **bad_options)
    world.serve(report_ip=world.bad_ip)
    mailbox = Mailbox()
    async with await TlsRptStore.open(db_path) as store:
        store.record(test_tlsrpt._mixed_day(), source=AUTHENTICATED)
        first = await _run(store, resolvers(), mailbox, harness_ca_file)
    sent = {o.rua: o.sent for o in first.ruas}
    assert sent == {world.url: False, f"mailto:tls@{DOMAIN}": True}
    assert first.pending == [(DOMAIN, DAY, "1 destinations failed")]
    assert good.received == []
    assert len(bad.received) == (0 if trouble == "bad-certificate" else 1)

    world.serve(report_ip=world.good_ip)  # the domain fixed its endpoint
    async with await TlsRptStore.open(db_path) as store:  # across a restart
        second = await _run(store, resolvers(), mailbox, harness_ca_file, now=RUN_AT + HOUR_MS)
        assert [(o.rua, o.sent) for o in second.ruas] == [(world.url, True)]
        assert second.closed == [(DOMAIN, DAY, "sent")]
        third = await _run(store, resolvers(), mailbox, harness_ca_file, now=RUN_AT + 2 * HOUR_MS)
        assert third.ruas == []
    assert len(mailbox.queued) == 1  # the mailto rua got it once
    [posted] = good.reports()
    [mailed] = mailbox.reports()
    assert posted["report-id"] == mailed["report-id"]  # a retry is the same report


async def test_a_failed_mail_enqueue_is_retried(
    world: World,
    start_endpoint: StartEndpoint,
    harness_ca_file: Path,
    resolvers: Any,
    db_path: Path,
) -> None:
    endpoint = await start_endpoint(world.sockets[world.good_ip])
    mailbox = Mailbox(fail=True)
    async with await TlsRptStore.open(db_path) as store:
        store.record(test_tlsrpt._mixed_day(), source=AUTHENTICATED)
        first = await _run(store, resolvers(), mailbox, harness_ca_file)
        [failed] = [o for o in first.ruas if not o.sent]
        assert failed.rua == f"mailto:tls@{DOMAIN}"
        assert "not queued: the queue is not writable" in failed.reason
        mailbox.fail = False
        await _run(store, resolvers(), mailbox, harness_ca_file, now=RUN_AT + HOUR_MS)
    assert len(mailbox.queued) == 1 and len(endpoint.received) == 1


async def test_results_of_report_messages_never_make_a_report(
    world: World, harness_ca_file: Path, resolvers: Any, db_path: Path
) -> None:
    mailbox = Mailbox()
    results = [
        tlsrpt.SessionResult(
            "reports-only.test",
            tlsrpt.PolicyDescription.no_policy(),
            True,
            None,
            RUN_AT - 12 * HOUR_MS,
        )
    ]
    async with await TlsRptStore.open(db_path) as store:
        store.record(results, source=model.MessageSource.REPORT)
        summary = await _run(store, resolvers(), mailbox, harness_ca_file)
    assert (summary.ruas, summary.closed, summary.pending) == ([], [], [])
    assert ("_smtp._tls.reports-only.test.", "TXT") not in world.dns.queries


async def test_a_domain_without_a_record_is_closed_at_once(
    world: World, harness_ca_file: Path, resolvers: Any, db_path: Path
) -> None:
    mailbox = Mailbox()
    results = [
        tlsrpt.SessionResult(
            "norecord.test", tlsrpt.PolicyDescription.no_policy(), True, None, RUN_AT - 12 * HOUR_MS
        )
    ]
    async with await TlsRptStore.open(db_path) as store:
        store.record(results, source=AUTHENTICATED)
        first = await _run(store, resolvers(), mailbox, harness_ca_file)
        assert first.closed == [("norecord.test", DAY, "no TLS-RPT record (nxdomain)")]
        lookups = len(world.dns.queries)
        await _run(store, resolvers(), mailbox, harness_ca_file, now=RUN_AT + HOUR_MS)
        assert len(world.dns.queries) == lookups  # not looked up again
    assert mailbox.queued == []


async def test_a_dns_failure_is_retried_then_given_up_after_24_hours(
    world: World, harness_ca_file: Path, resolvers: Any, db_path: Path
) -> None:
    world.serve(report_ip=world.good_ip, broken={"_smtp._tls": "servfail"})
    mailbox = Mailbox()
    results = [
        tlsrpt.SessionResult(
            "broken.test", tlsrpt.PolicyDescription.no_policy(), True, None, RUN_AT - 12 * HOUR_MS
        )
    ]
    async with await TlsRptStore.open(db_path) as store:
        store.record(results, source=AUTHENTICATED)
        first = await _run(store, resolvers(), mailbox, harness_ca_file)
        [(domain, day, why)] = first.pending
        assert (domain, day) == ("broken.test", DAY) and "TXT lookup" in why
        later = await _run(store, resolvers(), mailbox, harness_ca_file, now=RUN_AT + 23 * HOUR_MS)
        assert [p[:2] for p in later.pending] == [("broken.test", DAY)]
        given_up = await _run(
            store, resolvers(), mailbox, harness_ca_file, now=RUN_AT + 25 * HOUR_MS
        )
        assert given_up.closed == [("broken.test", DAY, "not sent within 24 hours: given up")]
        assert await store.days_ready(DAY + timedelta(days=5)) == []


async def test_today_is_not_reported_yet(
    world: World, harness_ca_file: Path, resolvers: Any, db_path: Path
) -> None:
    mailbox = Mailbox()
    just_after_midnight = RUN_AT - HOUR_MS + 5 * 60_000  # 00:05, inside the grace period
    async with await TlsRptStore.open(db_path) as store:
        store.record(test_tlsrpt._mixed_day(), source=AUTHENTICATED)
        summary = await _run(store, resolvers(), mailbox, harness_ca_file, now=just_after_midnight)
        assert (summary.ruas, summary.closed, summary.pending) == ([], [], [])
        assert await store.days_ready(DAY + timedelta(days=1)) == [(DOMAIN, DAY)]
