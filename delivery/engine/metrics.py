"""Delivery metrics: what the engine did and holds, in the daemon's `MetricsRegistry`.

`DeliveryMetrics(registry)` registers the engine's metrics; the worker and each attempt call
its small methods where the facts are settled, and `watch` adds what is read at scrape time:

    recipient_outcome(outcome)     a recipient's outcome was recorded (worker, with the
                                   ``delivery.engine`` log line)
    tls_session(report)            an SMTP session is ready for mail: clear text, or TLS and
                                   how the host was authenticated (attempt, after STARTTLS)
    attempt_ended(seconds, ids, results)  one attempt (one message, domain and route) ended
    watch(queue=..., dns_cache=..., mta_sts=...)  the queue's size by virtual queue and
                                   status, and the DNS and MTA-STS caches' counts

Metrics (labels in braces):
    delivery_outcomes_total{action,last_error}        counter: recorded recipient outcomes;
        action delivered | delayed | failed (RFC 3464), last_error the DESIGN §4 kind
    delivery_smtp_sessions_total{authentication}      counter: sessions ready for mail;
        clear (no TLS), none (TLS, the host not authenticated), pkix, mta-sts (PKIX, for a
        host the domain's MTA-STS policy lists), dane
    delivery_attempt_duration_seconds{outcome}        histogram: one per attempt; outcome
        delivered | delayed | failed when every recipient of the attempt ended so, mixed
        otherwise
    delivery_queue_recipients{queue,status}           gauge: recipients in the store now
    delivery_dns_cache_hits_total, _misses_total      counters; delivery_dns_cache_entries
    delivery_mta_sts_cache_hits_total, _misses_total  counters; delivery_mta_sts_cache_entries
    delivery_mta_sts_fetches_total{result}            counter: policy fetches, policy | failed

Outcomes: the methods return nothing and never raise for a value of their declared types.
Their label children are bound at construction, so a call on the hot path is a dict lookup
and an addition: no string is formatted.

Security: every label value comes from a closed set (enums, literals, the registry's queue
names), never from a message, a reply or a DNS answer.

Limits: the counters are per process and start at 0 with it (Prometheus' ``rate()`` copes);
the queue gauge is read from the store at each scrape, so it is right across restarts and
counts every node's recipients in a shared store (every node reports the same numbers:
aggregate them with max, not sum).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sized
from typing import Literal, Protocol, get_args

from delivery.api import metrics
from delivery.errors import LastError
from delivery.queue import model

__all__ = [
    "ATTEMPT_SECONDS_BOUNDS",
    "AttemptOutcome",
    "DeliveryMetrics",
    "TlsAuthentication",
    "attempt_outcome",
    "tls_authentication",
]

ATTEMPT_SECONDS_BOUNDS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800,
)  # fmt: skip
"""Upper bounds of the attempt duration buckets, in seconds. From a local or LAN delivery
(milliseconds) through an ordinary Internet one (0.1-5 s) to the slow end: per-phase SMTP
timeouts are minutes (RFC 5321 §4.5.3.2), and one attempt is cut off at the worker's
attempt timeout, 30 minutes by default (1800)."""

TlsAuthentication = Literal["clear", "none", "pkix", "mta-sts", "dane"]
"""How an SMTP session was protected (see the module docstring)."""

AttemptOutcome = Literal["delivered", "delayed", "failed", "mixed"]
"""How an attempt ended for its recipients taken together."""

Action = Literal["delivered", "delayed", "failed"]

_ACTIONS: tuple[Action, ...] = get_args(Action)


class TlsState(Protocol):
    """The TLS state of a session, as `attempt.TlsReport` reports it."""

    @property
    def version(self) -> str | None:
        """None for clear text."""
        ...

    @property
    def authenticated(self) -> str:
        """none, pkix or dane."""
        ...

    @property
    def by(self) -> str:
        """For PKIX: the MTA-STS policy that lists the host, or ""."""
        ...


class Settled(Protocol):
    """A recipient's outcome (`outcome.Outcome`)."""

    @property
    def action(self) -> Action: ...

    @property
    def kind(self) -> LastError: ...


class Ended(Protocol):
    """A recipient's attempt result (`attempt.RecipientResult`)."""

    @property
    def outcome(self) -> Settled: ...


class QueueCounts(Protocol):
    """The queue store's count (`QueueStore.count_by_queue`)."""

    def count_by_queue(self) -> Awaitable[Mapping[tuple[str, model.RecipientStatus], int]]:
        """Recipients per (virtual queue, status), the absent pairs left out."""
        ...


class DnsCacheCounts(Protocol):
    """The DNS cache's counts (`dns.cache.DnsCache`)."""

    @property
    def hits(self) -> int: ...

    @property
    def misses(self) -> int: ...

    def __len__(self) -> int: ...


class PolicyCounts(Protocol):
    """The MTA-STS resolver's counts (`policy.mtasts_fetch.MtaStsResolver`)."""

    @property
    def hits(self) -> int: ...

    @property
    def misses(self) -> int: ...

    @property
    def fetched(self) -> int:
        """Fetches that returned a valid policy."""
        ...

    @property
    def fetch_failures(self) -> int:
        """Fetches that failed."""
        ...

    @property
    def cache(self) -> Sized:
        """The policies cached now."""
        ...


def tls_authentication(report: TlsState | None, /) -> TlsAuthentication:
    """tls_authentication - the session's label: clear, none, pkix, mta-sts or dane.

    >>> from delivery.engine.attempt import TlsReport
    >>> [tls_authentication(r) for r in (None, TlsReport(None), TlsReport("TLSv1.3"))]
    ['clear', 'clear', 'none']
    >>> tls_authentication(TlsReport("TLSv1.3", "x", "pkix", "the MTA-STS policy of ..."))
    'mta-sts'
    >>> tls_authentication(TlsReport("TLSv1.3", "x", "pkix"))
    'pkix'
    """
    if report is None or report.version is None:
        return "clear"
    match report.authenticated:
        case "dane":
            return "dane"
        case "pkix":
            # attempt.TlsReport: ``by`` of a PKIX session names the MTA-STS policy that
            # lists the host, and is "" when no policy vouches (PKIX alone).
            return "mta-sts" if report.by else "pkix"
        case _:
            return "none"


def attempt_outcome(actions: Iterable[str], /) -> AttemptOutcome:
    """attempt_outcome - delivered, delayed or failed when all agree, else mixed.

    An attempt that left no outcome (its recipients are deferred by the worker) is delayed.

    >>> attempt_outcome(["delivered", "delivered"]), attempt_outcome(["failed", "delayed"])
    ('delivered', 'mixed')
    >>> attempt_outcome([])
    'delayed'
    """
    seen = set(actions)
    if len(seen) > 1:
        return "mixed"
    match seen.pop() if seen else "delayed":
        case "delivered":
            return "delivered"
        case "failed":
            return "failed"
        case _:
            return "delayed"


class DeliveryMetrics:
    """The engine's metrics (see the module docstring), registered in ``registry``.

    :raises ValueError: ``registry`` already holds them (one per registry).
    """

    def __init__(self, registry: metrics.MetricsRegistry, /) -> None:
        self._registry = registry
        outcomes = registry.counter(
            "delivery_outcomes_total",
            "Recipient outcomes recorded, by RFC 3464 action and last_error kind.",
            ("action", "last_error"),
        )
        self._outcomes = {
            (action, kind): outcomes.labels(action=action, last_error=kind.value)
            for action in _ACTIONS
            for kind in LastError
        }
        sessions = registry.counter(
            "delivery_smtp_sessions_total",
            "SMTP sessions ready for mail, by how they were protected: clear (no TLS), none "
            "(TLS, host not authenticated), pkix, mta-sts (PKIX, host listed by the domain's "
            "MTA-STS policy), dane.",
            ("authentication",),
        )
        self._sessions = {
            how: sessions.labels(authentication=how) for how in get_args(TlsAuthentication)
        }
        durations = registry.histogram(
            "delivery_attempt_duration_seconds",
            "Duration of delivery attempts (one message, domain and route each), by how "
            "they ended for their recipients: delivered, delayed, failed, or mixed.",
            ("outcome",),
            bounds=ATTEMPT_SECONDS_BOUNDS,
        )
        self._durations = {
            result: durations.labels(outcome=result) for result in get_args(AttemptOutcome)
        }

    def recipient_outcome(self, result: Settled, /) -> None:
        """Count one recorded recipient outcome."""
        self._outcomes[(result.action, result.kind)].inc()

    def tls_session(self, report: TlsState | None, /) -> None:
        """Count one session that is ready for MAIL FROM (`tls_authentication` labels it)."""
        self._sessions[tls_authentication(report)].inc()

    def attempt_ended(
        self, seconds: float, recipient_ids: Iterable[int], results: Mapping[int, Ended], /
    ) -> None:
        """Observe one attempt's duration, labelled by the results of its recipients."""
        actions = (results[rid].outcome.action for rid in recipient_ids if rid in results)
        self._durations[attempt_outcome(actions)].observe(seconds)

    def watch(
        self,
        *,
        queue: QueueCounts,
        queue_names: Callable[[], Iterable[str]],
        dns_cache: DnsCacheCounts,
        mta_sts: PolicyCounts,
    ) -> None:
        """Register what is read at scrape time: the queue, the DNS and MTA-STS caches.

        :param queue_names: the virtual queues configured now: each is shown with every
            status, at 0 when empty, beside any queue the store still holds recipients of.
        """
        registry = self._registry

        async def queue_size() -> list[tuple[tuple[str, str], float]]:
            counts = await queue.count_by_queue()
            names = {*queue_names(), *(name for name, _ in counts)}
            return [
                ((name, status.value), float(counts.get((name, status), 0)))
                for name in names
                for status in model.RecipientStatus
            ]

        registry.async_gauge_callback(
            "delivery_queue_recipients",
            "Recipients in the queue store by virtual queue and status, read at each scrape.",
            queue_size,
            ("queue", "status"),
        )
        caches: list[tuple[str, str, Callable[[], float]]] = [
            (
                "dns_cache_hits_total",
                "DNS lookups answered from the cache.",
                lambda: dns_cache.hits,
            ),
            (
                "dns_cache_misses_total",
                "DNS lookups the cache could not answer (absent or expired).",
                lambda: dns_cache.misses,
            ),
            (
                "mta_sts_cache_hits_total",
                "MTA-STS lookups answered from the policy cache (a failed refresh included).",
                lambda: mta_sts.hits,
            ),
            (
                "mta_sts_cache_misses_total",
                "MTA-STS lookups that needed a policy fetch (started or joined).",
                lambda: mta_sts.misses,
            ),
        ]
        for name, help, read in caches:
            registry.counter_callback(f"delivery_{name}", help, _single(read))
        registry.gauge_callback(
            "delivery_dns_cache_entries", "DNS answers cached now.", _single(dns_cache.__len__)
        )
        registry.gauge_callback(
            "delivery_mta_sts_cache_entries",
            "MTA-STS policies cached now.",
            _single(lambda: len(mta_sts.cache)),
        )
        registry.counter_callback(
            "delivery_mta_sts_fetches_total",
            "MTA-STS policy fetches, by result: policy (fetched and valid) or failed.",
            lambda: [(("policy",), mta_sts.fetched), (("failed",), mta_sts.fetch_failures)],
            ("result",),
        )


def _single(read: Callable[[], float], /) -> Callable[[], list[tuple[tuple[()], float]]]:
    """A callback of one unlabelled sample."""
    return lambda: [((), float(read()))]
