"""TLS-RPT delivery (RFC 8460 §5): HTTPS POST of a report, and the daily run.

`run_daily` is what the daemon calls every `RUN_INTERVAL_MS`: for each finished UTC day and
policy domain with results (`tlsrpt_store.TlsRptStore.days_ready`), it looks up
``_smtp._tls.<domain>`` through the engine's resolver, builds the report once (one report id
per domain and day, kept across retries), POSTs it to each https rua (`post_report`) and
hands the mail for each mailto rua to the daemon's ``enqueue_report(message, to)`` callback,
which queues it with source ``report``. Each rua that has the report is marked, so it never
gets it twice, across restarts too; a rua that failed is tried again by the next run.

Outcomes:
    post_report   PostResult: delivered (a 2xx answer), or not with a reason naming the URL
                  and the fault (no address, connect, TLS/certificate, redirect, status,
                  timeout). Never raises, except CancelledError.
    run_daily     RunSummary: per rua, sent or failed with the reason; per (domain, day)
                  without a report, why (no TLS-RPT record, an invalid one, given up).
                  Every failure is logged (``delivery.policy.tlsrpt``) and retried by the
                  next run, for `REPORT_RETRY_WINDOW_MS` after the first attempt (RFC 8460
                  §5.5); then the (domain, day) is given up. A DNS failure of the TXT lookup
                  is retried the same way; a definite "no record" closes the day at once.

Security:
    The rua comes from DNS (attacker-influenced): the report POSTed to it is the one about
    that same domain. HTTPS only, the certificate PKIX-checked for the URL's host (system
    trust store plus ``[tls] ca_file``, TLS >= 1.2, SNI), the host resolved by the engine's
    resolver only (``[dns] nameservers``), no proxy from the environment, no redirect
    followed (a 3xx is a failure), no cookie, the answer body never read. mailto reports go
    through the queue like any mail (the engine's TLS policy applies to them).

Standards: RFC 8460 §3 (record), §5.2 (gzip), §5.3 (mail), §5.4 (HTTPS: 2xx is success),
§5.5 (retries within 24 hours); RFC 9110 §15.4 (3xx).
Limits: reports are at-least-once: a crash between sending and marking sends the report
again, with the same report id (receivers deduplicate on it, RFC 8460 §5.3). The answer's
body is not read, so a server's error text is not logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final, assert_never

import aiohttp

from delivery.dns import http as dns_http
from delivery.dns import resolver as dns_resolver
from delivery.dns.result import Lookup
from delivery.errors import DeliveryError
from delivery.policy import tlsrpt, tlsrpt_store
from delivery.smtp import tls as smtp_tls

__all__ = [
    "DEFAULT_POST_TIMEOUT_MS",
    "REPORT_GRACE_MS",
    "REPORT_RETRY_WINDOW_MS",
    "RUN_CONCURRENCY",
    "RUN_INTERVAL_MS",
    "TLSRPT_KEEP_DAYS",
    "EnqueueReport",
    "PostResult",
    "ReportSender",
    "RuaOutcome",
    "RunSummary",
    "post_report",
    "ready_before",
    "run_daily",
]

log = logging.getLogger("delivery.policy.tlsrpt")

DEFAULT_POST_TIMEOUT_MS: Final = 30_000
"""Bound of one HTTPS POST, connect to answer: a report is a few KiB; a slower endpoint is
tried again by the next run rather than holding the run."""

RUN_INTERVAL_MS: Final = 3_600_000
"""How often the daemon calls `run_daily`: hourly, so a day's reports leave within an hour
of `REPORT_GRACE_MS` after midnight UTC and failed ones are retried hourly (RFC 8460 §5.5
asks for retries within 24 hours, ideally with backoff; hourly is gentle enough)."""

REPORT_GRACE_MS: Final = 15 * 60_000
"""How long after a UTC day ends its reports wait: sessions that straddled midnight and
results still buffered are in by then (`tlsrpt_store.DEFAULT_FLUSH_INTERVAL_MS`)."""

REPORT_RETRY_WINDOW_MS: Final = 24 * 3_600_000
"""How long after its first attempt a report is still retried (RFC 8460 §5.5: 24 hours)."""

TLSRPT_KEEP_DAYS: Final = 8
"""Days of aggregates kept (a week back from yesterday): enough to retry and to look into a
report a domain asks about; `run_daily` purges older ones."""

RUN_CONCURRENCY: Final = 16
"""(domain, day) reports prepared at once by one run: TXT lookups and POSTs overlap, but a
day with thousands of domains does not open thousands of connections at once."""

_CONTENT_HEADERS: Final = {
    "Content-Type": tlsrpt.REPORT_MEDIA_TYPE,  # RFC 8460 §5.4
    "Accept-Encoding": "identity",
}

EnqueueReport = Callable[[bytes, str], Awaitable[None]]
"""``await enqueue_report(message, to)``: queue the RFC 5322 ``message`` (CRLF, ASCII) for
``to`` with source ``report``, returning once it is durably queued; raise to have the run
try again later."""


@dataclass(frozen=True, slots=True)
class PostResult:
    """How one HTTPS POST of a report ended.

    :param delivered: the endpoint answered 2xx (RFC 8460 §5.4).
    :param reason: an operator sentence: the URL and the status, or the fault.
    :param status: the HTTP status, or None when no answer came.
    """

    delivered: bool
    reason: str
    status: int | None = None


@dataclass(frozen=True, slots=True)
class ReportSender:
    """Who sends the reports (from the settings).

    :param organization_name: the report's ``organization-name``.
    :param contact_info: the report's ``contact-info`` address; its domain is the
        submitter (file name, Subject, TLS-Report-Submitter).
    :param from_address: From of report mails.
    :param reporting_mta: this host's name (``hostname``).
    """

    organization_name: str
    contact_info: str
    from_address: str
    reporting_mta: str

    @classmethod
    def for_host(cls, hostname: str, /) -> ReportSender:
        """for_host - defaults from the ``hostname`` setting alone.

        >>> ReportSender.for_host("mta.example.org").contact_info
        'tlsrpt-noreply@mta.example.org'
        """
        address = f"tlsrpt-noreply@{hostname}"
        return cls(hostname, address, address, hostname)


@dataclass(frozen=True, slots=True)
class RuaOutcome:
    """What one run did with one rua of one (domain, day)."""

    domain: str
    day: date
    rua: str
    sent: bool
    reason: str = ""


@dataclass(slots=True)
class RunSummary:
    """What one `run_daily` did.

    :param ruas: each rua tried, sent or not.
    :param closed: (domain, day, why) closed without (more) sending: no record, invalid
        record, nothing to report, every rua served, or given up after the retry window.
    :param pending: (domain, day, why) left for the next run.
    """

    ruas: list[RuaOutcome] = field(default_factory=list)
    closed: list[tuple[str, date, str]] = field(default_factory=list)
    pending: list[tuple[str, date, str]] = field(default_factory=list)


# ---- HTTPS POST (RFC 8460 §5.4) --------------------------------------------------------------


async def post_report(
    url: str,
    gzipped_json: bytes,
    /,
    *,
    ca_file: str | None,
    resolver: dns_resolver.Resolver,
    timeout_ms: int = DEFAULT_POST_TIMEOUT_MS,
) -> PostResult:
    """post_report - POST a gzipped report to an https rua (see the module docstring).

    :param url: the rua's URL (`tlsrpt.Rua.target`).
    :param gzipped_json: `tlsrpt.encode_report` of the report.
    :param ca_file: extra PKIX trust anchors (``[tls] ca_file``), or None.
    :param resolver: the engine's resolver: the URL's host is resolved through it only.
    :param timeout_ms: bound of the whole POST.
    """
    where = f"the TLS report was not delivered to {url}"
    if not url.lower().startswith("https://"):
        return PostResult(False, f"{where}: only https is used (RFC 8460 §5.4)")
    try:
        context = smtp_tls.pkix_context(ca_file)
    except (OSError, ssl.SSLError) as exc:
        return PostResult(False, f"{where}: the CA file {ca_file} cannot be used: {exc}")
    connector = aiohttp.TCPConnector(
        # The MTA-STS fetcher's adapter: our resolver, never the system's (DESIGN §5 step 1).
        resolver=dns_http.HttpResolver(resolver),
        use_dns_cache=False,  # the engine's resolver caches, by TTL
        ssl=context,
        force_close=True,  # one POST per rua per day: nothing worth keeping open
    )
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),  # bounded below, as a whole
        auto_decompress=False,
        trust_env=False,  # no proxy from the environment: it would resolve for us
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                return await _post(session, url, gzipped_json, where)
        except TimeoutError:
            return PostResult(False, f"{where}: no answer within {timeout_ms} ms")


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, where: str) -> PostResult:
    """One POST; every expected failure is a PostResult."""
    try:
        async with session.post(
            url, data=body, headers=_CONTENT_HEADERS, allow_redirects=False
        ) as response:
            status = response.status
            if 200 <= status < 300:
                return PostResult(True, f"delivered to {url}: {status} {response.reason}", status)
            if 300 <= status < 400:
                location = _shorten(response.headers.get("Location", "(no Location header)"))
                return PostResult(
                    False,
                    f"{where}: the server redirects ({status}) to {location}; redirects are "
                    "not followed",
                    status,
                )
            return PostResult(
                False, f"{where}: the server answered {status} {response.reason}", status
            )
    except aiohttp.ClientConnectorDNSError as exc:
        return PostResult(False, f"{where}: {exc.os_error}")
    except aiohttp.ClientConnectorCertificateError as exc:
        cert_error = exc.certificate_error
        detail = getattr(cert_error, "verify_message", "") or str(cert_error)
        return PostResult(False, f"{where}: the server's certificate is not valid: {detail}")
    except aiohttp.ClientSSLError as exc:
        return PostResult(False, f"{where}: the TLS handshake failed: {exc.os_error}")
    except aiohttp.ClientConnectorError as exc:
        return PostResult(False, f"{where}: could not connect: {exc.os_error}")
    except (aiohttp.ClientError, OSError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return PostResult(False, f"{where}: the HTTPS exchange failed: {_shorten(detail)}")


def _shorten(text: str) -> str:
    """Server-sent text quoted for a message: possibly long or hostile."""
    limit = 120
    return repr(text if len(text) <= limit else text[:limit] + "...")


# ---- the daily run ----------------------------------------------------------------------------


def ready_before(now: int, /) -> date:
    """ready_before - the first UTC day whose reports are not due yet at ``now`` (epoch ms).

    A day is due `REPORT_GRACE_MS` after it ends.

    >>> from datetime import datetime, UTC
    >>> at = lambda text: int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)
    >>> ready_before(at("2024-05-02T00:10:00")), ready_before(at("2024-05-02T00:20:00"))
    (datetime.date(2024, 5, 1), datetime.date(2024, 5, 2))
    """
    return tlsrpt.day_of(now - REPORT_GRACE_MS)


async def run_daily(
    store: tlsrpt_store.TlsRptStore,
    /,
    *,
    sender: ReportSender,
    resolver: dns_resolver.Resolver,
    enqueue_report: EnqueueReport,
    ca_file: str | None,
    now: int,
    timeout_ms: int = DEFAULT_POST_TIMEOUT_MS,
) -> RunSummary:
    """run_daily - send the reports of every finished day not sent yet (module docstring).

    Idempotent: call it every RUN_INTERVAL_MS; a run with nothing due only reads.

    :param store: the aggregates (flushed first).
    :param sender: who signs the reports.
    :param resolver: the engine's resolver: TXT records and rua hosts.
    :param enqueue_report: queues a mail report (see EnqueueReport).
    :param ca_file: extra PKIX trust anchors for https ruas (``[tls] ca_file``).
    :param now: epoch ms.
    :param timeout_ms: bound of each HTTPS POST.
    :raises tlsrpt_store.TlsRptStoreError: the store cannot be read at all (per-report store
        failures are logged and left for the next run).
    """
    summary = RunSummary()
    await store.flush()
    before = ready_before(now)
    ready = await store.days_ready(before)
    semaphore = asyncio.Semaphore(RUN_CONCURRENCY)
    job = _Run(store, sender, resolver, enqueue_report, ca_file, now, timeout_ms, summary)

    async def one(domain: str, day: date) -> None:
        async with semaphore:
            try:
                await job.report(domain, day)
            except DeliveryError as exc:  # the store failed for this one: next run
                log.warning("TLS report of %s for %s: %s; trying again later", domain, day, exc)
                summary.pending.append((domain, day, str(exc)))

    async with asyncio.TaskGroup() as group:
        for domain, day in ready:
            group.create_task(one(domain, day), name=f"tlsrpt {domain} {day}")
    removed = await store.purge(before - timedelta(days=TLSRPT_KEEP_DAYS))
    if removed:
        log.debug("TLS-RPT: forgot %d aggregates older than %d days", removed, TLSRPT_KEEP_DAYS)
    return summary


@dataclass(slots=True)
class _Run:
    """One run's shared arguments, and the work for one (domain, day)."""

    store: tlsrpt_store.TlsRptStore
    sender: ReportSender
    resolver: dns_resolver.Resolver
    enqueue_report: EnqueueReport
    ca_file: str | None
    now: int
    timeout_ms: int
    summary: RunSummary

    def _close(self, domain: str, day: date, why: str) -> Awaitable[None]:
        self.summary.closed.append((domain, day, why))
        return self.store.mark_done(domain, day, now=self.now)

    def _pending(self, domain: str, day: date, why: str) -> None:
        self.summary.pending.append((domain, day, why))

    async def report(self, domain: str, day: date) -> None:
        """Send the report of (domain, day) to every rua that does not have it yet."""
        submitter = self.sender.contact_info.rpartition("@")[2]
        state = await self.store.begin_report(
            domain, day, report_id=tlsrpt.make_report_id(domain, day, submitter), now=self.now
        )
        if state.done:
            return
        if self.now - state.first_attempt_at > REPORT_RETRY_WINDOW_MS:
            why = f"not sent within {REPORT_RETRY_WINDOW_MS // 3_600_000} hours: given up"
            log.warning("TLS report of %s for %s %s (RFC 8460 §5.5)", domain, day, why)
            await self._close(domain, day, why)
            return
        record = await self._record(domain, day)
        if record is None:
            return
        aggregates = await self.store.aggregates(domain, day)
        if not aggregates:
            await self._close(domain, day, "no results")
            return
        try:
            report = tlsrpt.build_report(
                domain,
                day,
                aggregates,
                organization_name=self.sender.organization_name,
                contact_info=self.sender.contact_info,
                report_id=state.report_id,
            )
        except ValueError as exc:
            log.warning("no TLS report for %s on %s: %s", domain, day, exc)
            await self._close(domain, day, str(exc))
            return
        gzipped = tlsrpt.encode_report(report)
        missing = 0
        for rua in record.ruas:
            if rua.uri in state.sent:
                continue
            outcome = await self._send(domain, day, rua, report, gzipped)
            self.summary.ruas.append(outcome)
            if outcome.sent:
                await self.store.mark_sent(domain, day, rua.uri, now=self.now)
                log.info("TLS report of %s for %s sent to %s", domain, day, rua.uri)
            else:
                missing += 1
                log.warning("%s; trying again later", outcome.reason)
        if missing:
            self._pending(domain, day, f"{missing} destinations failed")
        else:
            await self._close(domain, day, "sent")

    async def _record(self, domain: str, day: date) -> tlsrpt.TlsRptRecord | None:
        """The domain's TLS-RPT record; None when there is none (closed) or DNS failed."""
        name = f"{tlsrpt.TLSRPT_PREFIX}{domain}"
        answer = await self.resolver.txt(name)
        match answer.status:
            case Lookup.TEMPFAIL:
                why = f"the TXT lookup of {name} failed: {answer.detail}"
                log.warning("TLS report of %s for %s: %s; trying again later", domain, day, why)
                self._pending(domain, day, why)
                return None
            case Lookup.NXDOMAIN | Lookup.NODATA:
                await self._close(domain, day, f"no TLS-RPT record ({answer.status.value})")
                return None
            case Lookup.ANSWER:
                parsed = tlsrpt.parse_tlsrpt_txt(answer.records)
            case _ as unreachable:
                assert_never(unreachable)
        if parsed.record is None:
            if parsed.status is tlsrpt.TxtStatus.INVALID:
                log.info("no TLS report for %s: %s: %s", domain, name, parsed.reason)
            await self._close(domain, day, f"{name}: {parsed.reason}")
            return None
        for note in parsed.record.notes:
            log.info("TLS-RPT record of %s: %s", domain, note)
        return parsed.record

    async def _send(
        self, domain: str, day: date, rua: tlsrpt.Rua, report: dict[str, object], gzipped: bytes
    ) -> RuaOutcome:
        if rua.scheme == "https":
            posted = await post_report(
                rua.target,
                gzipped,
                ca_file=self.ca_file,
                resolver=self.resolver,
                timeout_ms=self.timeout_ms,
            )
            return RuaOutcome(domain, day, rua.uri, posted.delivered, posted.reason)
        try:
            message = tlsrpt.build_report_mail(
                report,
                to=rua.target,
                reporting_mta=self.sender.reporting_mta,
                from_address=self.sender.from_address,
                now=self.now,
                gzipped=gzipped,
            )
            await self.enqueue_report(message, rua.target)
        except (DeliveryError, ValueError, OSError) as exc:
            reason = f"the TLS report for {rua.target} was not queued: {exc}"
            return RuaOutcome(domain, day, rua.uri, False, reason)
        return RuaOutcome(domain, day, rua.uri, True, f"queued for {rua.target}")
