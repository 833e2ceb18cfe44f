"""The delivery worker: takes due recipients from the queue, delivers them, records outcomes.

`Worker` is the long-lived component `delivery serve` runs (an async context manager, also
`start`/`stop`). In a loop it leases due recipients per virtual queue, as many as the queue's
``threadsPerNode`` leaves room for; each lease (one message, one domain) becomes a job that
evaluates ``route`` and ``schedule`` for its recipients (rcpt variables), runs one
`attempt.Attempt` per route, and records the outcomes with `QueueStore.record`, the DSNs they
call for queued in the same transaction (a DSN only with the outcomes it reports on: an
outcome refused because the lease lapsed is reported by whoever holds the recipient now).
Jobs that finish while a record is being written share the next write (`recorder.Recorder`,
group commit); each still waits for its own outcomes to be durable before it logs them, but
gives its place among ``threadsPerNode`` back as soon as its delivery is over.
It wakes when `wake` is called (new mail), when a delivery ends, when the next recipient is due
(`QueueStore.due_soonest`), and at least every ``poll_interval_ms`` (mail queued by another
process). A virtual queue found with nothing due is not asked again until `wake`, a timed
wait's end or a poll interval later, however often jobs end: each lease is a write
transaction, and an empty one is as dear as a full one. While a queue with work has no room
left, the loop waits for a delivery to end (or a poll interval) without asking when the
next recipient is due.

After an attempt (`settle`, pure):
    delivered   DELIVERED; a success DSN when NOTIFY=SUCCESS asked for one (``delivered``
                for local and LMTP delivery, ``relayed`` to a host without DSN support)
    failed      FAILED with a failure DSN
    delayed     the ``schedule`` expression is evaluated again (retry_num and last_error
                updated); expired (TTL or attempts) -> FAILED with a failure DSN naming the
                last problem; else a delay DSN when a ``notify`` time has passed (one for
                all that passed), and due again after the schedule's next retry interval
                (the last repeats), or at the next ``notify`` time if that comes first and
                the sender is to get a delay DSN (see Delay DSNs)
    DSNs go to the envelope sender with a null return path and source ``dsn``, scheduled by
    the ``schedule`` expression; never for a null sender, nor against NOTIFY (dsn.py).

Outcomes:
    Nothing accepted is lost: a job that raises is caught by one outermost guard, logged and
    its recipients deferred with last_error ``io``; a job cut off by ``attempt_timeout_ms`` is
    deferred the same way; a job cancelled by `stop` records what is final (a 250 already
    received is recorded delivered) and hands the rest back unchanged, due at once. A record
    that fails leaves the lease to lapse: the recipients are due again, never dropped.
    Nothing is recorded delivered without a 2xx from the next hop (or a maildir write).

TLS policies (DESIGN §5):
    The worker owns what its attempts share: one `MtaStsResolver` (policies cached across
    attempts, closed on stop) and one `DnssecProbe`, which asks the resolver for the SOA of
    ``[dns] dnssec_probe`` (a signed name) at start and every `DNSSEC_PROBE_INTERVAL_MS`:
    while it does not come back with AD, DANE is unavailable (never every signed domain
    bogus), loudly in the log and in /healthz. Attempts that need the answer wait for the
    first probe, so no delivery runs with DANE undecided. With a `TlsRptStore`, the TLS-RPT
    results of each attempt are recorded after it (results of messages with source
    ``report`` are ignored by the store: RFC 8460 §5.3).

Security:
    One misbehaving delivery (hostile server, slow DNS, hostile policy host) holds one slot
    of its queue for at most ``attempt_timeout_ms``; every other delivery goes on.

Limits:
    A lease lasts ``attempt_timeout_ms`` + `LEASE_MARGIN_MS`: the store must not hand the
    recipients to anyone else while an attempt may still be running. At start the worker
    takes back leases held under its own ``owner`` (a previous run that crashed), so the
    owner must be unique among processes sharing a queue, and stable across restarts.
    Recipients whose virtual queue no longer exists are leased only when every configured
    queue has spare capacity, and run under the built-in default concurrency.

Delay DSNs:
    A delay DSN goes out with an attempt, at the ``notify`` time: a recipient is due at
    its next retry or its next notify time, whichever comes first; at the notify time it
    is attempted like at a retry, and if it is still delayed the DSN reports that fresh
    failure. This is Postfix's pairing (a delay warning is only ever sent after a delivery
    attempt, qmgr_active_done) with Stalwart's timing (its queue wakes at the earlier of
    the retry and notify times, so a notice is never a retry interval late: over 4 hours
    with the default schedule). Stalwart sends the notice without an attempt, from the
    last status; we attempt, because the notice should say what is true now, and none
    should go out for mail that can be delivered now. The cost is at most one attempt per
    notify time (one with the default schedule), which counts toward an ``Attempts``
    expiry and restarts the retry interval. No wake-up for a notice nobody will get (null
    sender, NOTIFY without DELAY).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, TypeVar

from delivery import config, durations, expr
from delivery.dns import resolver as dns_resolver
from delivery.engine import attempt, dsn, intake, outcome, planner, recorder, variables
from delivery.engine import metrics as engine_metrics
from delivery.engine import schedule as timing
from delivery.errors import DnsTempFail, LastError
from delivery.policy import mtasts_fetch, tlsrpt, tlsrpt_store
from delivery.queue import model
from delivery.queue import store as queue_store
from delivery.registry import snapshot as registry
from delivery.smtp import pool as smtp_pool

__all__ = [
    "DEFAULT_ATTEMPT_TIMEOUT_MS",
    "DEFAULT_GRACE_MS",
    "DEFAULT_POLL_INTERVAL_MS",
    "DNSSEC_PROBE_INTERVAL_MS",
    "LEASE_MARGIN_MS",
    "DnssecProbe",
    "Settled",
    "SnapshotSource",
    "Worker",
    "build_worker",
    "settle",
]

log = logging.getLogger("delivery.engine")

DEFAULT_POLL_INTERVAL_MS = 1000
"""Longest wait between looks at the queue: bounds the delay for mail queued by another
process (``delivery send`` talks to the store directly) and never busy-loops."""

DEFAULT_ATTEMPT_TIMEOUT_MS = 30 * 60_000
"""Longest one job (one message and domain) may run: a tarpitting MX with every phase timeout
at its default can take hours; past this the recipients are deferred with kind io."""

LEASE_MARGIN_MS = 60_000
"""Lease time beyond the attempt timeout, to record the outcome before the lease lapses;
`build_worker` takes a quarter of a shorter ``[worker] lease`` instead."""

DEFAULT_GRACE_MS = 30_000
"""How long `stop` lets in-flight jobs finish before cancelling them."""

CATCH_ALL_BATCH = 10
"""Recipients leased per round from virtual queues that no longer exist (see Limits)."""

SETTLED_HISTORY = 1000
"""Recent outcomes kept in `Worker.settled` for health reports and tests."""

DNSSEC_PROBE_INTERVAL_MS = 60_000
"""How often the resolver's DNSSEC validation is checked again after the start: a resolver
that stops validating makes every signed domain look unsigned (DANE silently off), and one
that came up late should give DANE back soon; one uncached SOA query a minute costs nothing."""

DnssecState = Literal["pending", "validating", "not-validating", "off"]


class DnssecProbe:
    """Whether the worker's resolver validates DNSSEC (DESIGN §5 step 2).

    The resolver is asked for the SOA of a DNSSEC-signed name; an answer with AD (believed
    under ``dnssec = "trust-ad"``) means it validates. Asked by `start`, then every
    ``interval_ms``; each change is logged (a lost validation as a warning).

    :param resolver: the worker's resolver.
    :param name: the signed name (``[dns] dnssec_probe``).
    :param enabled: ``[dns] dnssec`` is ``trust-ad``; when False nothing is asked and DANE
        is never used.
    """

    def __init__(
        self,
        resolver: dns_resolver.Resolver,
        name: str,
        /,
        *,
        enabled: bool,
        interval_ms: int = DNSSEC_PROBE_INTERVAL_MS,
    ) -> None:
        self._resolver = resolver
        self.name = name
        self.enabled = enabled
        self._interval_s = interval_ms / 1000
        self._result: bool | None = None if enabled else False
        self._known = asyncio.Event()
        if not enabled:
            self._known.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def state(self) -> DnssecState:
        """pending (no answer yet), validating, not-validating, or off (``dnssec = "off"``)."""
        if not self.enabled:
            return "off"
        if self._result is None:
            return "pending"
        return "validating" if self._result else "not-validating"

    def describe(self) -> str:
        """The state in one sentence, for /healthz and the log."""
        match self.state:
            case "off":
                return 'DNSSEC is not trusted ([dns] dnssec = "off"): DANE is not used'
            case "pending":
                return f"DNSSEC probe of {self.name} not answered yet"
            case "validating":
                return f"the resolver validates DNSSEC (AD on {self.name}): DANE is in use"
            case "not-validating":
                return (
                    f"the resolver does not validate DNSSEC (no AD on {self.name}, a signed "
                    "name): DANE is unavailable, signed domains get no DANE protection"
                )

    async def validating(self) -> bool:
        """True when the resolver validates; waits for the first probe to answer."""
        await self._known.wait()
        return bool(self._result)

    async def check(self) -> bool:
        """Ask the resolver now; log a change."""
        found = await self._resolver.probe_dnssec(self.name)
        previous, self._result = self._result, found
        self._known.set()
        if found and previous is not True:
            log.info("%s", self.describe())
        elif not found and previous is not False:
            log.warning("%s; check [dns] nameservers and dnssec", self.describe())
        return found

    def start(self) -> None:
        """Probe now and every interval, in a task this probe owns."""
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"dnssec probe {self.name}")

    async def stop(self) -> None:
        """Cancel the probing task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # the probe must outlive any one failure: DANE waits on it
                log.exception("the DNSSEC probe of %s failed", self.name)
                if self._result is None:
                    self._result = False
                self._known.set()
            await asyncio.sleep(self._interval_s)


class SnapshotSource(Protocol):
    """Where the worker reads the registry from (a `delivery.registry.Registry`)."""

    def snapshot(self) -> registry.Snapshot: ...


@dataclass(frozen=True, slots=True)
class Settled:
    """One recipient's recorded outcome after an attempt (for logs, health and tests).

    :param status: the recipient's new state; ``due`` the next attempt (epoch ms) when
        SCHEDULED.
    :param at: when it was recorded (epoch ms).
    :param dsn: the DSN action queued for it, if any.
    """

    message_id: str
    recipient_id: int
    address: str
    outcome: outcome.Outcome
    status: model.RecipientStatus
    due: int | None
    at: int
    tls: str
    dsn: dsn.DsnAction | None
    retry_num: int


@dataclass(frozen=True, slots=True)
class Settlement:
    """What `settle` decided for one recipient: its update and the DSN it calls for."""

    update: model.RecipientUpdate
    outcome: outcome.Outcome
    """The outcome recorded (an expired delay becomes a failure)."""
    dsn: dsn.DsnAction | None
    will_retry_until: int | None


_Round = Literal["leased", "full", "idle"]
"""What a lease round did (`Worker._lease_round`)."""


@dataclass(slots=True)
class _Slot:
    """A job's place among its virtual queue's ``threadsPerNode``, given back once."""

    queue: str
    held: bool = True


_Settling = tuple[model.QueuedRecipient, Settlement, attempt.RecipientResult | None]
"""A leased recipient, what `settle` decided for it, and its attempt's result (if any)."""


@dataclass(frozen=True, slots=True)
class _Dsn:
    """The DSN of one job, and what it takes to make it again for fewer recipients."""

    notice: queue_store.Notice
    reports: Sequence[tuple[int, dsn.RecipientReport]]
    """(recipient id, its lines) for each recipient it reports on."""
    body: bytes


@dataclass(frozen=True, slots=True)
class _Record:
    """One store call's worth: the updates and DSN of a job, and what to log after."""

    settlements: Sequence[_Settling]
    updates: Sequence[model.RecipientUpdate]
    dsn: _Dsn | None
    now: int


def settle(
    lease: model.Lease,
    recipient: model.QueuedRecipient,
    result: outcome.Outcome,
    /,
    *,
    schedule: planner.Selection[registry.DeliverySchedule],
    handoff: dsn.Handoff,
    now: int,
) -> Settlement:
    """settle - the recipient's next state after an attempt ended in ``result``.

    :param schedule: the schedule the ``schedule`` expression picks now (after the attempt).
    :param handoff: who took a delivered recipient (for the success DSN).
    """
    message = lease.message
    attempts = recipient.retry_num + 1
    base = dataclasses.replace(
        model.RecipientUpdate.unchanged(lease, recipient),
        retry_num=attempts,
        last_error=result.kind,
        last_status=result.reason,
    )
    sender, notify = message.sender, recipient.notify
    plan = planner.timing_of(schedule.value)
    received_at = message.received_at
    if result.action == "delayed" and timing.is_expired(
        plan.expiry, received_at=received_at, attempts=attempts, now=now
    ):
        result = outcome.expired(result, reason=_expiry_reason(plan.expiry, attempts))
        base = dataclasses.replace(base, last_status=result.reason)
    match result.action:
        case "delivered":
            update = dataclasses.replace(
                base, status=model.RecipientStatus.DELIVERED, due=None, notify_due=None
            )
            action = dsn.dsn_action("delivered", sender=sender, notify=notify, handoff=handoff)
            return Settlement(update, result, action, None)
        case "failed":
            update = dataclasses.replace(
                base, status=model.RecipientStatus.FAILED, due=None, notify_due=None
            )
            return Settlement(
                update, result, dsn.dsn_action("failed", sender=sender, notify=notify), None
            )
        case "delayed":
            pass
    notify_num, action = recipient.notify_num, None
    notify_time = timing.notify_at(plan, received_at=received_at, notify_num=notify_num)
    if notify_time is not None and now >= notify_time:
        action = dsn.dsn_action("delayed", sender=sender, notify=notify)
        while notify_time is not None and now >= notify_time:  # one notice for all passed
            notify_num += 1
            notify_time = timing.notify_at(plan, received_at=received_at, notify_num=notify_num)
    due = timing.next_attempt_at(plan, received_at=received_at, attempts=attempts, now=now)
    wanted = dsn.dsn_action("delayed", sender=sender, notify=notify) is not None
    if notify_time is not None and wanted:
        due = min(due, notify_time)  # the next notice is not a retry interval late
    chosen = schedule.value
    update = dataclasses.replace(
        base,
        status=model.RecipientStatus.SCHEDULED,
        due=due,
        notify_num=notify_num,
        notify_due=notify_time,
        queue=chosen.queue,
        schedule=schedule.name,
        expires_at=timing.deadline(plan.expiry, received_at=received_at),
        max_attempts=(
            chosen.expiry.max_attempts
            if isinstance(chosen.expiry, registry.AttemptsExpiry)
            else None
        ),
    )
    until = timing.expected_expiry(plan, received_at=received_at, attempts=attempts, now=now)
    return Settlement(update, result, action, until)


def _expiry_reason(expiry: timing.Expiry, attempts: int) -> str:
    match expiry:
        case timing.Ttl(expire_ms):
            return (
                f"gave up: the message was in the queue for {durations.format_duration(expire_ms)}"
            )
        case timing.Attempts():
            return f"gave up after {attempts} attempts"


class Worker:
    """Delivers due recipients (see the module docstring). Async context manager.

    :param settings: the daemon settings.
    :param registry: where the registry snapshot is read, once per lease round and job.
    :param store: the queue.
    :param resolver: the DNS resolver for MX, address, TLSA and ``dns_query()`` lookups.
    :param owner: this worker's lease owner name: unique among processes sharing the queue,
        stable across restarts (see Limits).
    :param lease_margin_ms: how much longer than ``attempt_timeout_ms`` a lease lasts.
    :param clock: epoch milliseconds.
    :param mta_sts: the MTA-STS resolver; by default one on ``resolver`` and ``[tls]
        ca_file``, owned (closed on stop) by the worker.
    :param tlsrpt: where TLS-RPT results are recorded; None: not recorded.
    :param metrics: where outcomes, sessions and attempt durations are counted; None: not.
    :param dnssec_probe_interval_ms: how often the DNSSEC probe asks again.
    :raises OSError, ssl.SSLError: ``[tls] ca_file`` cannot be read.
    """

    def __init__(
        self,
        settings: config.Settings,
        registry: SnapshotSource,
        store: queue_store.QueueStore,
        resolver: dns_resolver.Resolver,
        *,
        owner: str,
        poll_interval_ms: int = DEFAULT_POLL_INTERVAL_MS,
        attempt_timeout_ms: int = DEFAULT_ATTEMPT_TIMEOUT_MS,
        lease_margin_ms: int = LEASE_MARGIN_MS,
        grace_ms: int = DEFAULT_GRACE_MS,
        clock: Callable[[], int] = model.now_ms,
        rng: random.Random | None = None,
        mta_sts: mtasts_fetch.MtaStsResolver | None = None,
        tlsrpt: tlsrpt_store.TlsRptStore | None = None,
        metrics: engine_metrics.DeliveryMetrics | None = None,
        dnssec_probe_interval_ms: int = DNSSEC_PROBE_INTERVAL_MS,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._store = store
        self._recorder = recorder.Recorder(store)
        """Outcomes of jobs that finish together go to the store in one write."""
        self.pool: smtp_pool.ConnectionPool[attempt.TlsReport] = smtp_pool.ConnectionPool()
        """SMTP connections kept between attempts (closed on stop); replace it before
        `start` to change its limits."""
        self._resolver = resolver
        self.owner = owner
        self._poll_s = poll_interval_ms / 1000
        self._attempt_timeout_ms = attempt_timeout_ms
        self._lease_ms = attempt_timeout_ms + lease_margin_ms
        self._grace_s = grace_ms / 1000
        self._clock = clock
        self._rng = rng or random.Random()
        self._env = expr.Environment(local_domains=frozenset(settings.local.domains))
        self._lookup = attempt.make_lookup(resolver)
        self._wakeup = asyncio.Event()
        self._drained: dict[str, float] = {}
        """Queues (``""``: the catch-all) found with nothing due, and when (loop time): not
        asked again within a poll interval unless `wake` says mail came, or a timed wait
        ends (something may be due). A lease is a write transaction, empty or not."""
        self._running: collections.Counter[str] = collections.Counter()
        self.peak: collections.Counter[str] = collections.Counter()
        """Most deliveries under way at once, per virtual queue name, since start (for
        metrics); a job that only waits for its outcomes to be written no longer counts."""
        self._jobs: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._on_stop: list[Callable[[], object]] = []
        self.settled: collections.deque[Settled] = collections.deque(maxlen=SETTLED_HISTORY)
        self.settled_total = 0
        self._settled_changed = asyncio.Condition()
        self._own_mta_sts = mta_sts is None
        self.mta_sts = mta_sts or mtasts_fetch.MtaStsResolver(
            resolver, ca_file=settings.tls.ca_file
        )
        """The MTA-STS policies of recipient domains, cached across attempts."""
        self.dnssec = DnssecProbe(
            resolver,
            settings.dns.dnssec_probe,
            enabled=settings.dns.dnssec == "trust-ad",
            interval_ms=dnssec_probe_interval_ms,
        )
        """Whether the resolver validates DNSSEC (DANE is unavailable while it does not)."""
        self.tlsrpt = tlsrpt
        self.metrics = metrics

    # ---- lifecycle --------------------------------------------------------------------------

    @property
    def resolver(self) -> dns_resolver.Resolver:
        """The resolver every attempt of this worker shares (its cache, for health and metrics)."""
        return self._resolver

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return self._loop_task is not None and not self._loop_task.done()

    @property
    def in_flight(self) -> int:
        """Jobs running now."""
        return len(self._jobs)

    async def start(self) -> None:
        """Take back this owner's leases from a previous run, then start the loop."""
        if self._loop_task is not None:
            raise RuntimeError("the worker is already started")
        released = await self._store.release(self.owner, now=self._clock())
        if released:
            log.warning(
                "took back %d recipients leased by a previous run of %s; they are due now",
                released,
                self.owner,
            )
        self._stopping = False
        self.peak.clear()
        self.dnssec.start()
        self._loop_task = asyncio.create_task(self._loop(), name=f"delivery worker {self.owner}")

    async def stop(self) -> None:
        """Stop leasing; let jobs finish within the grace period, then cancel the rest.

        Cancelled jobs record what is final and hand the rest back (due at once).
        """
        self._stopping = True
        if self._loop_task is not None:
            # A store call cut off here rolls back or completes; leases it may have taken
            # are released below with the rest.
            self._loop_task.cancel()
            await asyncio.wait([self._loop_task])  # our own cancellation still propagates
            self._loop_task = None
        if self._jobs:
            _, pending = await asyncio.wait(set(self._jobs), timeout=self._grace_s)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "cancelling %d deliveries still running after the grace period", len(pending)
                )
                await asyncio.wait(pending)
        await self._recorder.close()
        await self.pool.close()
        with contextlib.suppress(queue_store.QueueError):
            await self._store.release(self.owner, now=self._clock())
        await self.dnssec.stop()
        if self._own_mta_sts:
            await self.mta_sts.close()
        for closer in reversed(self._on_stop):
            result = closer()
            if asyncio.iscoroutine(result):
                await result
        self._on_stop.clear()

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def wake(self) -> None:
        """Look at the queue now (call after enqueuing mail)."""
        self._drained.clear()
        self._wakeup.set()

    def close_on_stop(self, closer: Callable[[], object], /) -> None:
        """Call ``closer`` (sync or async) at the end of `stop`, e.g. a resolver the worker owns."""
        self._on_stop.append(closer)

    async def wait_settled(self, count: int, /, *, timeout_s: float = 10.0) -> list[Settled]:
        """Wait until ``count`` recipient outcomes were recorded in all; the recent ones.

        :raises TimeoutError: fewer within ``timeout_s``.
        """
        async with asyncio.timeout(timeout_s), self._settled_changed:
            await self._settled_changed.wait_for(lambda: self.settled_total >= count)
        return list(self.settled)

    # ---- the loop ---------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                match await self._lease_round():
                    case "leased":
                        delay = 0.0
                    case "full":  # a delivery that ends wakes the loop; no store call needed
                        delay = self._poll_s
                    case "idle":
                        delay = await self._idle_seconds()
            except queue_store.QueueError as exc:
                log.error("cannot take work from the queue: %s", exc)
                delay = self._poll_s
            except Exception:  # the loop must outlive any one bug: log, wait, go on
                log.exception("the delivery loop failed; trying again")
                delay = self._poll_s
            if delay > 0 and not self._stopping:
                try:
                    async with asyncio.timeout(delay):
                        await self._wakeup.wait()
                except TimeoutError:  # a due time or the poll interval: look everywhere
                    self._drained.clear()

    async def _idle_seconds(self) -> float:
        """How long to sleep: until the next due time, at most one poll interval."""
        due = await self._store.due_soonest()
        now = self._clock()
        if due is None or due <= now:  # nothing, or due but every slot is busy
            return self._poll_s
        return min(self._poll_s, (due - now) / 1000)

    async def _lease_round(self) -> _Round:
        """Lease what each virtual queue has room for: ``leased`` when anything was, else
        ``full`` when a queue with work had no room left, else ``idle``."""
        snapshot = self._registry.snapshot()
        now = self._clock()
        leased, saturated = False, False
        for queue in snapshot.virtual_queues:
            free = queue.threads_per_node - self._running[queue.name]
            if free <= 0:
                saturated = True
                continue
            if self._is_drained(queue.name):
                continue
            limit = min(free, queue_store.MAX_LEASE_BATCH)
            leases = await self._store.lease_due(
                now=now, owner=self.owner, lease_ms=self._lease_ms, limit=limit, queue=queue.name
            )
            if sum(len(lease.recipients) for lease in leases) >= limit:
                saturated = True
            else:  # fewer than asked for: nothing else is due in it now
                self._drained[queue.name] = asyncio.get_running_loop().time()
            for lease in leases:
                self._spawn(lease)
            leased = leased or bool(leases)
        if not saturated and not self._stopping and not self._is_drained(""):
            due = await self._store.due_soonest()
            if due is None or due > now:
                self._drained[""] = asyncio.get_running_loop().time()
            else:  # due recipients in queues that do not exist
                leases = await self._store.lease_due(
                    now=now, owner=self.owner, lease_ms=self._lease_ms, limit=CATCH_ALL_BATCH
                )
                # Recipients of a configured queue that became due since its own lease (new
                # mail, another node's lapsed lease) go back: taking them here would pass its
                # threadsPerNode. The next round leases them within it.
                known = {queue.name for queue in snapshot.virtual_queues}
                given_back = [lease for lease in leases if lease.recipients[0].queue in known]
                if given_back:
                    await self._store.release_leases(given_back, now=now)
                    leased = True  # round again at once: their queue's lease takes them
                    for lease in given_back:
                        self._drained.pop(lease.recipients[0].queue, None)
                for lease in leases:
                    if lease.recipients[0].queue not in known:
                        self._spawn(lease)
                        leased = True
        if leased:
            return "leased"
        return "full" if saturated else "idle"

    def _is_drained(self, queue: str) -> bool:
        """The queue had nothing due when last asked, less than a poll interval ago."""
        since = self._drained.get(queue)
        return since is not None and asyncio.get_running_loop().time() - since < self._poll_s

    def _spawn(self, lease: model.Lease) -> None:
        slot = _Slot(lease.recipients[0].queue)
        self._running[slot.queue] += 1
        self.peak[slot.queue] = max(self.peak[slot.queue], self._running[slot.queue])
        task = asyncio.create_task(
            self._job(lease, slot), name=f"delivery {lease.message.id} {lease.domain}"
        )
        self._jobs.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._jobs.discard(task)
            self._free(slot)

        task.add_done_callback(done)

    def _free(self, slot: _Slot) -> None:
        """Give the job's place in its virtual queue back (once), and look for more work."""
        if slot.held:
            slot.held = False
            self._running[slot.queue] -= 1
            self._wakeup.set()

    # ---- one job ----------------------------------------------------------------------------

    async def _job(self, lease: model.Lease, slot: _Slot) -> None:
        """Deliver one lease and record the outcomes; the outermost guard of an attempt.

        The job holds its place in the virtual queue (``slot``) while it delivers, and gives it
        back before it waits for its outcomes to be written: ``threadsPerNode`` bounds the
        deliveries under way, and the jobs that wait for one shared write (`recorder`) let as
        many new deliveries start meanwhile.

        Cancelled (by `stop`) before its outcomes reached the store, the job records what is
        final and hands the rest back (`_abandon`); once they reach the store, the record runs
        to its end (`_apply`), so that a 250 received is never left unrecorded.
        """
        snapshot = self._registry.snapshot()
        results: dict[int, attempt.RecipientResult] = {}
        body: bytes | None = None
        problem: str | None = None
        try:
            deadline = asyncio.timeout(self._attempt_timeout_ms / 1000)
            try:
                async with deadline:
                    body = lease.body  # small bodies come with the lease: no store call
                    if body is None:
                        body = await self._store.load_body(lease.message.id)
                    await self._deliver(lease, snapshot, body, results)
            except TimeoutError:
                if not deadline.expired():
                    raise
                problem = (
                    "the attempt did not finish within "
                    f"{durations.format_duration(self._attempt_timeout_ms)}"
                )
            except queue_store.MessageNotFound:
                problem = "the message is no longer in the queue"
            except Exception as exc:  # the outermost guard: never lose the recipients
                log.exception(
                    "delivery of message %s to %s failed unexpectedly",
                    lease.message.id,
                    lease.domain,
                )
                problem = f"internal error during the attempt: {exc!r}"
            self._free(slot)  # the delivery is over: what is left is bookkeeping
            now = self._clock()
            settlements = await self._settlements(lease, snapshot, results, problem, now)
            record = await self._prepare(lease, snapshot, settlements, body, now)
        except asyncio.CancelledError:
            await self._abandon(lease, snapshot, results, body)
            raise
        try:
            await _complete(self._apply(lease.message, record))
        except Exception:  # recording failed: the lease lapses and the recipients come back
            log.exception(
                "cannot record the outcome for message %s (%s); its recipients will be "
                "retried when the lease lapses",
                lease.message.id,
                lease.domain,
            )

    async def _deliver(
        self,
        lease: model.Lease,
        snapshot: registry.Snapshot,
        body: bytes,
        results: dict[int, attempt.RecipientResult],
    ) -> None:
        """Route every recipient, then one attempt per route."""
        message = lease.message
        now = self._clock()
        outbound = snapshot.outbound
        by_route: dict[str, tuple[registry.Route, list[attempt.Target]]] = {}
        addresses = [r.address for r in message.recipients]
        for recipient in lease.recipients:
            rcpt_vars = variables.rcpt_variables(message, recipient, now=now, recipients=addresses)
            try:
                route = await expr.evaluate_resolving(
                    outbound.route, rcpt_vars, self._env, self._lookup
                )
                schedule = await expr.evaluate_resolving(
                    outbound.schedule, rcpt_vars, self._env, self._lookup
                )
            except DnsTempFail as exc:
                failed = outcome.routing_dns_deferral(str(exc))
                target = attempt.Target(recipient, rcpt_vars, None)
                results[recipient.id] = attempt.RecipientResult(
                    target, failed, None, dsn.Handoff.RELAY
                )
                continue
            plan = planner.plan_recipient(snapshot, route=route, schedule=schedule)
            routed = by_route.setdefault(plan.route.name.lower(), (plan.route.value, []))
            routed[1].append(attempt.Target(recipient, rcpt_vars, plan))
        for chosen, targets in by_route.values():
            job = attempt.Job(
                message=message,
                body=body,
                domain=lease.domain,
                route=chosen,
                targets=tuple(targets),
            )
            sessions: list[tlsrpt.SessionResult] = []
            started = time.perf_counter()
            try:
                await attempt.Attempt(
                    job,
                    settings=self._settings,
                    snapshot=snapshot,
                    resolver=self._resolver,
                    mta_sts=self.mta_sts,
                    dnssec=self.dnssec,
                    env=self._env,
                    results=results,
                    tls_results=sessions,
                    metrics=self.metrics,
                    pool=self.pool,
                    rng=self._rng,
                    clock=self._clock,
                ).run()
            finally:  # the sessions took place, whatever became of the attempt
                if self.tlsrpt is not None and sessions:
                    self.tlsrpt.record(sessions, source=message.source)
                if self.metrics is not None:
                    ids = [target.recipient.id for target in targets]
                    self.metrics.attempt_ended(time.perf_counter() - started, ids, results)

    # ---- recording --------------------------------------------------------------------------

    async def _settlements(
        self,
        lease: model.Lease,
        snapshot: registry.Snapshot,
        results: dict[int, attempt.RecipientResult],
        problem: str | None,
        now: int,
    ) -> list[_Settling]:
        """Every leased recipient's next state after the attempt (a missing result: io)."""
        settlements: list[_Settling] = []
        for recipient in lease.recipients:
            result = results.get(recipient.id)
            if result is None:
                reason = problem or "the attempt ended without an outcome for this recipient"
                got = outcome.without_host("delayed", "4.3.0", LastError.IO, reason)
                handoff = dsn.Handoff.RELAY
            else:
                got, handoff = result.outcome, result.handoff
            schedule = await self._reschedule(lease, recipient, got, snapshot, now)
            settlement = settle(lease, recipient, got, schedule=schedule, handoff=handoff, now=now)
            settlements.append((recipient, settlement, result))
        return settlements

    async def _abandon(
        self,
        lease: model.Lease,
        snapshot: registry.Snapshot,
        results: dict[int, attempt.RecipientResult],
        body: bytes | None,
    ) -> None:
        """A cancelled job: record final outcomes, hand the others back unchanged, due now."""
        now = self._clock()
        settlements: list[_Settling] = []
        for recipient in lease.recipients:
            result = results.get(recipient.id)
            if result is not None and result.outcome.action != "delayed":
                schedule = await self._reschedule(lease, recipient, result.outcome, snapshot, now)
                settlement = settle(
                    lease,
                    recipient,
                    result.outcome,
                    schedule=schedule,
                    handoff=result.handoff,
                    now=now,
                )
                settlements.append((recipient, settlement, result))
        try:
            record = await self._prepare(lease, snapshot, settlements, body, now)
            await _complete(self._hand_back(lease, record))
        except Exception:  # stop() releases whatever is still leased
            log.exception("cannot record the abandoned delivery of message %s", lease.message.id)

    async def _hand_back(self, lease: model.Lease, record: _Record) -> None:
        """Record what is final, then release the rest of the lease: due now, no attempt."""
        if record.updates:
            await self._apply(lease.message, record)
        await self._store.release_leases([lease], now=record.now)

    async def _reschedule(
        self,
        lease: model.Lease,
        recipient: model.QueuedRecipient,
        got: outcome.Outcome,
        snapshot: registry.Snapshot,
        now: int,
    ) -> planner.Selection[registry.DeliverySchedule]:
        """The schedule for the recipient after this attempt: ``schedule`` evaluated again.

        Only a delayed recipient has a next attempt to schedule (`settle` reads no schedule
        for a final outcome): any other keeps its current one, and no ``dns_query()`` is made.
        A ``dns_query()`` in the expression that cannot be answered keeps the current one.
        """
        if got.action != "delayed":
            return planner.select_schedule(snapshot, recipient.schedule)
        after = dataclasses.replace(
            recipient,
            retry_num=recipient.retry_num + 1,
            last_error=got.kind,
            last_status=got.reason,
        )
        rcpt_vars = variables.rcpt_variables(lease.message, after, now=now)
        try:
            value = await expr.evaluate_resolving(
                snapshot.outbound.schedule, rcpt_vars, self._env, self._lookup
            )
        except DnsTempFail as exc:
            log.warning("keeping schedule %r of %s: %s", recipient.schedule, recipient.address, exc)
            value = recipient.schedule
        return planner.select_schedule(snapshot, value)

    async def _prepare(
        self,
        lease: model.Lease,
        snapshot: registry.Snapshot,
        settlements: Sequence[_Settling],
        body: bytes | None,
        now: int,
    ) -> _Record:
        """The updates to record and the DSN to queue with them (one per lease, if any)."""
        message = lease.message
        reports = [
            (
                recipient.id,
                dsn.RecipientReport.of(
                    recipient,
                    settlement.outcome,
                    settlement.dsn,
                    last_attempt_at=now,
                    will_retry_until=settlement.will_retry_until,
                ),
            )
            for recipient, settlement, _ in settlements
            if settlement.dsn is not None
        ]
        updates = [settlement.update for _, settlement, _ in settlements]
        if not reports:
            return _Record(settlements, updates, None, now)
        if body is None:
            log.warning("no DSN for message %s: its body is gone", message.id)
            return _Record(settlements, updates, None, now)
        try:
            notice = self._make_dsn(message, [report for _, report in reports], body, now)
            to = await self._dsn_recipient(snapshot, notice, message.sender, now)
        except ValueError as exc:  # InvalidEnvelope: a sender no DSN can be addressed to
            log.warning("no DSN for message %s to %r: %s", message.id, message.sender, exc)
            return _Record(settlements, updates, None, now)
        except Exception:
            # The original is attacker-written and the email package can fail on it in more
            # ways than ValueError. Unrecorded outcomes would come back when the lease lapses:
            # a delivered recipient delivered again, at every lapse, for ever.
            log.exception("no DSN for message %s: it could not be built", message.id)
            return _Record(settlements, updates, None, now)
        about = frozenset(rid for rid, _ in reports)
        return _Record(
            settlements, updates, _Dsn(queue_store.Notice(notice, [to], about), reports, body), now
        )

    def _make_dsn(
        self,
        message: model.QueuedMessage,
        reports: Sequence[dsn.RecipientReport],
        body: bytes,
        now: int,
    ) -> model.NewMessage:
        return dsn.make_dsn(
            message, reports, original=body, reporting_mta=self._settings.hostname, now=now
        )

    async def _apply(self, message: model.QueuedMessage, record: _Record) -> None:
        """Record the outcomes and queue the DSN in one store call, then log each outcome.

        Run to its end even by a cancelled job (`_complete`): a store call abandoned
        half-way would leave the job not knowing whether its outcomes were recorded.
        """
        notices = [record.dsn.notice] if record.dsn is not None else []
        recorded = await self._recorder.record(record.updates, notices=notices)
        if recorded.refused:
            log.warning(
                "message %s: %d outcomes were not recorded: the lease lapsed or the recipient "
                "was cancelled meanwhile",
                message.id,
                len(recorded.refused),
            )
        if record.dsn is not None:
            if recorded.message_ids[0] is None:
                await self._reissue(message, record.dsn, recorded.refused, record.now)
            self.wake()
        for recipient, settlement, result in record.settlements:
            if recipient.id in recorded.refused:
                continue
            self._note(message, recipient, settlement, result, record.now)
        async with self._settled_changed:
            self._settled_changed.notify_all()

    async def _reissue(
        self, message: model.QueuedMessage, made: _Dsn, refused: frozenset[int], now: int
    ) -> None:
        """The DSN was not queued: some outcomes it reports on were refused. Queue one for
        the others, if any (their outcomes are recorded; the refused ones are reported by
        whoever holds those recipients now).

        Rare (a lapsed lease partly taken over), and not atomic with the record: a crash in
        between loses this DSN, never duplicates one.
        """
        kept = [report for rid, report in made.reports if rid not in refused]
        if not kept:
            return
        notice = self._make_dsn(message, kept, made.body, now)
        await self._store.enqueue(notice, made.notice.recipients)
        log.warning(
            "message %s: part of the lease lapsed; DSN queued for %d of %d recipients",
            message.id,
            len(kept),
            len(made.reports),
        )

    async def _dsn_recipient(
        self, snapshot: registry.Snapshot, notice: model.NewMessage, to: str, now: int
    ) -> model.NewRecipient:
        """The DSN's one recipient ``to`` (the original sender), scheduled by ``schedule``."""
        [planned] = await intake.plan_recipients(
            snapshot,
            notice,
            [intake.RecipientRequest(to)],
            env=self._env,
            lookup=self._lookup,
            now=now,
        )
        return planned

    def _note(
        self,
        message: model.QueuedMessage,
        recipient: model.QueuedRecipient,
        settlement: Settlement,
        result: attempt.RecipientResult | None,
        now: int,
    ) -> None:
        """The structured log line of one recipient's attempt, and the history entry."""
        got, update = settlement.outcome, settlement.update
        if self.metrics is not None:
            self.metrics.recipient_outcome(got)
        tls = result.tls.describe() if result is not None and result.tls is not None else "-"
        plan = result.target.plan if result is not None else None
        route = plan.route.name if plan is not None else "-"
        next_due = (
            f"retry in {durations.format_duration(max(0, (update.due or now) - now))}"
            if update.status is model.RecipientStatus.SCHEDULED
            else update.status.value
        )
        fields = {
            "message_id": message.id,
            "recipient": recipient.address,
            "route": route,
            "mx": got.remote_host or "-",
            "ip": got.remote_ip or "-",
            "tls": tls,
            "action": got.action,
            "status": got.status,
            "kind": got.kind.value,
            "next": next_due,
            "dsn": settlement.dsn.value if settlement.dsn is not None else "-",
        }
        log.info(
            "delivery %s reason=%r",
            " ".join(
                f"{key}={value!r}" if " " in value else f"{key}={value}"
                for key, value in fields.items()
            ),
            got.reason,
            extra={"delivery": fields | {"reason": got.reason}},
        )
        self.settled.append(
            Settled(
                message_id=message.id,
                recipient_id=recipient.id,
                address=recipient.address,
                outcome=got,
                status=update.status,
                due=update.due,
                at=now,
                tls=tls,
                dsn=settlement.dsn,
                retry_num=update.retry_num,
            )
        )
        self.settled_total += 1


T = TypeVar("T")


async def _complete(step: Awaitable[T], /) -> T:
    """Await ``step`` to its end even if the caller is cancelled meanwhile, then re-raise.

    A failure of ``step`` after a cancellation is logged; the cancellation wins.
    """
    task = asyncio.ensure_future(step)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])  # never cancels ``task`` itself
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled() and task.exception() is not None:
            log.error("a step finished after its job was cancelled failed: %s", task.exception())
        raise asyncio.CancelledError
    return task.result()


def build_worker(
    settings: config.Settings,
    registry: SnapshotSource,
    store: queue_store.QueueStore,
    /,
    *,
    owner: str | None = None,
    tlsrpt: tlsrpt_store.TlsRptStore | None = None,
    metrics: engine_metrics.DeliveryMetrics | None = None,
) -> Worker:
    """build_worker - the worker `delivery serve` runs, with a resolver from the settings.

    The resolver (and the worker's MTA-STS resolver) are closed when the worker stops.

    :param owner: the lease owner name; default the ``hostname`` setting (one daemon per host
        and queue; see the module docstring).
    :param tlsrpt: where TLS-RPT results are recorded; None: not recorded.
    :param metrics: where the worker counts what it does; None: not counted.
    :raises OSError, ssl.SSLError: ``[tls] ca_file`` cannot be read.
    """
    resolver = dns_resolver.Resolver.from_settings(settings.dns)
    margin = min(LEASE_MARGIN_MS, settings.worker.lease_ms // 4)  # [worker] lease: both
    worker = Worker(
        settings,
        registry,
        store,
        resolver,
        owner=owner or settings.hostname,
        attempt_timeout_ms=settings.worker.lease_ms - margin,
        lease_margin_ms=margin,
        tlsrpt=tlsrpt,
        metrics=metrics,
    )
    worker.close_on_stop(resolver.close)
    return worker
