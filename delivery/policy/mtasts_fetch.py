"""MTA-STS discovery, fetch and cache (RFC 8461 §3, §5.1): the I/O shell of `policy.mtasts`.

`MtaStsResolver.policy_for(domain, timeout_ms=...)` looks up the ``_mta-sts.<domain>`` TXT
record through the engine's DNS resolver, fetches
``https://mta-sts.<domain>/.well-known/mta-sts.txt`` when the cache does not hold the policy
of that TXT ``id``, and returns a `mtasts.PolicyLookup`; `mtasts.decide` says what it means.

Outcomes (`PolicyLookup.status`, never an exception except CancelledError):
    POLICY        a policy applies; ``source`` says "fetch", "cache" (TXT id unchanged, not
                  expired) or "cache (refresh failed: <why>)": the TXT lookup, the TXT record
                  or the fetch failed and an unexpired cached policy is used (§3.3, §5.1)
    NONE          the domain publishes no policy: NXDOMAIN/NODATA, no record beginning
                  "v=STSv1;", several of them, or a malformed one (§3.1); nothing cached
    UNAVAILABLE   it may publish one, but none could be obtained and none is cached: TXT
                  tempfail, or a failed fetch. `mtasts.decide` treats it as no policy under
                  ``optional`` (§3.3) and as a temporary failure under ``require``.
    Every failure is a `mtasts.FetchFailure` class (``problem``: TXT tempfail, policy host
    DNS, connect, TLS, HTTP, status, redirect, content type, oversize, timeout, invalid
    policy) with a sentence naming the domain, the URL and the fault.

Deadline: ``timeout_ms`` (the TLS strategy's ``mtaStsTimeout``) becomes one absolute deadline
(STYLE §8) bounding the TXT lookup, the policy host's address lookup, connect, TLS, request
and body together; past it, the lookup ends as a TIMEOUT failure (or the cached policy). A
lookup the DNS and policy caches answer (the common case) waits for nothing and sets no timer.

Sharing and caching:
    Lookups of one domain and TXT id in flight at once share one fetch, run by a task the
    resolver owns: a caller that gives up does not cancel it for the others, and the fetch
    stops at the deadline of the caller that started it. A fetched policy is cached for its
    ``max_age`` and replaced when the TXT id changes; at most `MTA_STS_MAX_CACHE_ENTRIES`
    domains, least recently used evicted. A failed fetch is remembered for
    `MTA_STS_FAILURE_HOLD_S` per (domain, id), so that a dead or slow policy host does not
    cost every delivery to that domain the whole timeout; a new TXT id retries at once.
    ``hits`` / ``misses`` count lookups answered from the cache / that needed a fetch;
    ``fetched`` / ``fetch_failures`` count the fetches themselves (for metrics).

Security:
    Every name is resolved by the engine's `delivery.dns` resolver (``[dns] nameservers``),
    the policy host's A/AAAA included (an aiohttp resolver backed by it), never by the
    system's; no proxy is used (``trust_env`` off). The certificate must be PKIX-valid for
    ``mta-sts.<domain>`` (system trust store plus ``[tls] ca_file``, TLS >= 1.2, SNI set).
    Redirects are never followed, only 200 with ``text/plain`` is taken, the body is asked
    for unencoded and read incrementally up to MTA_STS_MAX_POLICY_BYTES, and no HTTP cache or
    cookie is used. Response bodies and headers are untrusted: quoted in reasons, shortened.

Standards: RFC 8461 §3.1-§3.3, §5.1; RFC 9110 §15.4 (3xx); RFC 6066 §3 (SNI).
Limits: the cache is per process and in memory (a restart refetches); cached policies are
not refreshed ahead of expiry (§3.3 suggests it), only when a delivery needs them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import assert_never

import aiohttp
import aiohttp.abc

from delivery.dns import http as dns_http
from delivery.dns import names
from delivery.dns import resolver as dns_resolver
from delivery.dns.result import DnsResult, Lookup
from delivery.policy import mtasts
from delivery.smtp import tls as smtp_tls

__all__ = [
    "HTTPS_PORT",
    "MTA_STS_FAILURE_HOLD_S",
    "MTA_STS_MAX_CACHE_ENTRIES",
    "POLICY_PATH",
    "READ_CHUNK_BYTES",
    "CachedPolicy",
    "MtaStsResolver",
    "PolicyCache",
]

log = logging.getLogger("delivery.policy.mtasts")

HTTPS_PORT = 443
"""Port of every policy host: RFC 8461 §3.3 names the https URL without a port."""

POLICY_PATH = "/.well-known/mta-sts.txt"  # RFC 8461 §3.3

MTA_STS_MAX_CACHE_ENTRIES = 10_000
"""Domains whose policy is kept at once (each entry is a few hundred bytes): bounds memory
when mail goes to very many domains; the least recently used policy is evicted first."""

MTA_STS_FAILURE_HOLD_S = 300
"""How long a failed fetch is remembered for a (domain, TXT id): the policy host is not asked
again sooner, so a dead or slow host costs one timeout per 5 minutes, not one per delivery.
Short enough that a fixed host is seen by the next retries of the default schedule."""

READ_CHUNK_BYTES = 16 * 1024
"""Bytes asked of the body stream at a time: the 64 KiB cap is checked after each chunk."""

_REQUEST_HEADERS = {
    "Accept": "text/plain",
    # Only an unencoded body: a compressed one could expand far past the size cap.
    "Accept-Encoding": "identity",
    # RFC 8461 §3.3: senders must not use HTTP caching; say so to caches on the path.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class CachedPolicy:
    """A policy in the cache.

    :param policy_id: the TXT ``id`` it was fetched under.
    :param fetched_at: :param expires_at: clock seconds (the cache's clock).
    """

    policy: mtasts.Policy
    policy_id: str
    fetched_at: float
    expires_at: float


class PolicyCache:
    """Fetched policies by domain, each kept for its ``max_age`` (RFC 8461 §3.2).

    :param max_entries: domains kept at most; the least recently used goes first.
    :param clock: seconds, for expiry only (monotonic by default; tests pass their own).
    :raises ValueError: ``max_entries`` is not positive.
    """

    def __init__(
        self,
        *,
        max_entries: int = MTA_STS_MAX_CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be positive, not {max_entries}")
        self._entries: OrderedDict[str, CachedPolicy] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, domain: str, /) -> CachedPolicy | None:
        """The unexpired policy of ``domain``, or None (an expired one is dropped)."""
        entry = self._entries.get(domain)
        if entry is None:
            return None
        if self._clock() >= entry.expires_at:
            del self._entries[domain]
            return None
        self._entries.move_to_end(domain)
        return entry

    def put(self, domain: str, policy: mtasts.Policy, policy_id: str, /) -> None:
        """Keep ``policy`` for its max_age (a max_age of 0 is not kept at all)."""
        if policy.max_age_s == 0:
            self._entries.pop(domain, None)
            return
        now = self._clock()
        self._entries[domain] = CachedPolicy(policy, policy_id, now, now + policy.max_age_s)
        self._entries.move_to_end(domain)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


_FetchResult = mtasts.Policy | mtasts.FetchFailure
_FetchKey = tuple[str, str]  # (domain, TXT id)


@dataclass(frozen=True, slots=True)
class _Fetch:
    """A fetch the TXT record calls for: its ``id``, and the cached policy to fall back on."""

    policy_id: str
    cached: CachedPolicy | None


class MtaStsResolver:
    """MTA-STS policies of recipient domains; async context manager (also ``close``).

    :param resolver: the engine's DNS resolver: the TXT record and the policy host's
        address are looked up through it, and only through it.
    :param ca_file: extra PKIX trust anchors (``[tls] ca_file``), or None.
    :param clock: seconds for cache expiry and the failure hold (monotonic by default).
    :param max_entries: the cache's capacity, see PolicyCache.
    :param failure_hold_s: how long a failed fetch is remembered; 0 disables.
    :param https_port: the policy host's port. **Tests only**: RFC 8461 §3.3 fetches from
        443, and the engine never sets this; it exists for test servers that cannot bind 443.
    :raises OSError, ssl.SSLError: ``ca_file`` cannot be read.
    """

    def __init__(
        self,
        resolver: dns_resolver.Resolver,
        /,
        *,
        ca_file: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MTA_STS_MAX_CACHE_ENTRIES,
        failure_hold_s: float = MTA_STS_FAILURE_HOLD_S,
        https_port: int = HTTPS_PORT,
    ) -> None:
        self._resolver = resolver
        self._ssl = smtp_tls.pkix_context(ca_file)
        self._clock = clock
        self.cache = PolicyCache(max_entries=max_entries, clock=clock)
        self._failure_hold_s = failure_hold_s
        self._max_entries = max_entries
        self._https_port = https_port
        self._held: OrderedDict[_FetchKey, tuple[mtasts.FetchFailure, float]] = OrderedDict()
        self._inflight: dict[_FetchKey, asyncio.Task[_FetchResult]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.hits = 0
        """Lookups answered from the cache without fetching (a failed refresh included)."""
        self.misses = 0
        """Lookups that needed a fetch (joined or started, whatever its outcome)."""
        self.fetched = 0
        """Fetches that returned a valid policy (one per fetch, however many callers joined)."""
        self.fetch_failures = 0
        """Fetches that failed (a remembered failure is no new fetch)."""

    async def policy_for(self, domain: str, /, *, timeout_ms: int) -> mtasts.PolicyLookup:
        """policy_for - the MTA-STS policy of ``domain`` (see the module docstring).

        :param domain: the recipient (policy) domain, any case, trailing dot or not.
        :param timeout_ms: bound of the whole lookup, TXT and HTTPS (``mtaStsTimeout``).
        :returns: a PolicyLookup; never raises, except CancelledError.
        """
        try:
            name = names.normalize_name(domain).rstrip(".")
        except names.InvalidName as exc:
            return mtasts.PolicyLookup(domain, mtasts.LookupStatus.NONE, reason=f"{exc}")
        if not name:
            return mtasts.PolicyLookup(domain, mtasts.LookupStatus.NONE, reason="the root")
        txt_name = f"_mta-sts.{name}"
        cached_txt = self._resolver.cached_txt(txt_name)
        step = None if cached_txt is None else self._after_txt(name, txt_name, cached_txt)
        if isinstance(step, mtasts.PolicyLookup):
            # The common case: the TXT record and the policy (or its absence) are cached.
            # Nothing to wait for, so no deadline timer either.
            return step
        deadline = asyncio.get_running_loop().time() + timeout_ms / 1000
        try:
            async with asyncio.timeout_at(deadline):
                if step is None:
                    answer = await self._resolver.txt(txt_name, deadline=deadline)
                    step = self._after_txt(name, txt_name, answer)
                    if isinstance(step, mtasts.PolicyLookup):
                        return step
                return await self._fetched(name, step, deadline, timeout_ms)
        except TimeoutError:
            failure = mtasts.FetchFailure(
                mtasts.FetchProblem.TIMEOUT,
                f"the MTA-STS lookup of {name} did not finish within {timeout_ms} ms "
                "(mtaStsTimeout)",
            )
            return _fallback(name, self.cache.get(name), failure)

    async def close(self) -> None:
        """Cancel the fetches in flight and close the HTTPS client."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> MtaStsResolver:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ---- discovery ------------------------------------------------------------------------

    def _after_txt(
        self, domain: str, txt_name: str, answer: DnsResult[str]
    ) -> mtasts.PolicyLookup | _Fetch:
        """The lookup the TXT answer settles (with the cache), or the fetch it calls for.

        RFC 8461 §3.3 and §5.1: no usable record means no policy, unless one is cached; a
        cached policy of the same TXT id is used as is; another id needs a fetch.
        """
        cached = self.cache.get(domain)
        match answer.status:
            case Lookup.TEMPFAIL:
                failure = mtasts.FetchFailure(
                    mtasts.FetchProblem.TXT_TEMPFAIL,
                    f"the TXT lookup of {txt_name} failed: {answer.detail}",
                )
                if cached is not None:
                    self.hits += 1
                return _fallback(domain, cached, failure)
            case Lookup.NXDOMAIN | Lookup.NODATA:
                reason = f"no TXT record ({answer.status.value.upper()})"
                txt = mtasts.TxtResult(mtasts.TxtStatus.ABSENT, reason=reason)
            case Lookup.ANSWER:
                txt = mtasts.parse_txt(answer.records)
            case _ as unreachable:
                assert_never(unreachable)
        if txt.status is not mtasts.TxtStatus.FOUND:
            reason = f"{txt_name}: {txt.reason}"
            if cached is None:
                return mtasts.PolicyLookup(domain, mtasts.LookupStatus.NONE, reason=reason)
            self.hits += 1
            return _from_cache(domain, cached, reason=reason)
        if cached is not None and cached.policy_id == txt.policy_id:
            self.hits += 1
            return _from_cache(domain, cached)
        return _Fetch(txt.policy_id, cached)

    async def _fetched(
        self, domain: str, fetch: _Fetch, deadline: float, timeout_ms: int
    ) -> mtasts.PolicyLookup:
        """The policy of TXT id ``fetch.policy_id``, fetched (or shared, or held failed)."""
        self.misses += 1
        result = await self._shared_fetch(domain, fetch.policy_id, deadline, timeout_ms)
        if isinstance(result, mtasts.FetchFailure):
            return _fallback(domain, fetch.cached, result)
        return mtasts.PolicyLookup(
            domain,
            mtasts.LookupStatus.POLICY,
            policy=result,
            policy_id=fetch.policy_id,
            source=mtasts.Source.FETCH,
        )

    # ---- fetch ----------------------------------------------------------------------------

    async def _shared_fetch(
        self, domain: str, policy_id: str, deadline: float, timeout_ms: int
    ) -> _FetchResult:
        """The fetch for (domain, id): a remembered failure, the one in flight, or a new one."""
        key = (domain, policy_id)
        held = self._held_failure(key)
        if held is not None:
            return held
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(
                self._fetch_and_keep(key, deadline, timeout_ms), name=f"mta-sts fetch {domain}"
            )
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        # shield: a caller that gives up must not cancel the fetch for the others
        return await asyncio.shield(task)

    async def _fetch_and_keep(
        self, key: _FetchKey, deadline: float, timeout_ms: int
    ) -> _FetchResult:
        domain, policy_id = key
        try:
            async with asyncio.timeout_at(deadline):
                result = await self._fetch(domain)
        except TimeoutError:
            result = mtasts.FetchFailure(
                mtasts.FetchProblem.TIMEOUT,
                f"the MTA-STS policy of {domain} was not fetched from {self._url(domain)} "
                f"within {timeout_ms} ms (mtaStsTimeout)",
            )
        if isinstance(result, mtasts.Policy):
            self.fetched += 1
            self.cache.put(domain, result, policy_id)
            self._held.pop(key, None)
            log.info("MTA-STS policy of %s (id %s): %s", domain, policy_id, result.describe())
            for note in result.notes:
                log.info("MTA-STS policy of %s: %s", domain, note)
        else:
            self.fetch_failures += 1
            self._hold(key, result)
            log.warning("%s", result.reason)
        return result

    def _hold(self, key: _FetchKey, failure: mtasts.FetchFailure) -> None:
        if self._failure_hold_s <= 0:
            return
        self._held[key] = (failure, self._clock() + self._failure_hold_s)
        self._held.move_to_end(key)
        while len(self._held) > self._max_entries:
            self._held.popitem(last=False)

    def _held_failure(self, key: _FetchKey) -> mtasts.FetchFailure | None:
        held = self._held.get(key)
        if held is None:
            return None
        failure, until = held
        left = until - self._clock()
        if left <= 0:
            del self._held[key]
            return None
        return mtasts.FetchFailure(
            failure.problem, f"{failure.reason} (remembered; next try in {left:.0f} s)"
        )

    def _url(self, domain: str) -> str:
        port = "" if self._https_port == HTTPS_PORT else f":{self._https_port}"
        return f"https://mta-sts.{domain}{port}{POLICY_PATH}"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=dns_http.HttpResolver(self._resolver),
                use_dns_cache=False,  # the engine's resolver caches, by TTL
                ssl=self._ssl,
                force_close=True,  # one fetch per domain per max_age: nothing worth keeping
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),  # the caller's deadline bounds it
                auto_decompress=False,
                trust_env=False,  # no proxy from the environment: it would resolve for us
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def _fetch(self, domain: str) -> _FetchResult:
        """GET the policy once; every expected failure is a FetchFailure."""
        url = self._url(domain)
        host = f"mta-sts.{domain}"
        where = f"the MTA-STS policy of {domain} was not fetched from {url}"
        problem = mtasts.FetchProblem
        try:
            async with self._client().get(
                url, allow_redirects=False, headers=_REQUEST_HEADERS
            ) as response:
                return await _read_policy(response, domain, url, where)
        except aiohttp.ClientConnectorDNSError as exc:
            return mtasts.FetchFailure(problem.HOST_DNS, f"{where}: {exc.os_error}")
        except aiohttp.ClientConnectorCertificateError as exc:
            cert_error = exc.certificate_error
            detail = getattr(cert_error, "verify_message", "") or str(cert_error)
            return mtasts.FetchFailure(
                problem.TLS, f"{where}: the certificate of {host} is not valid: {detail}"
            )
        except aiohttp.ClientSSLError as exc:
            return mtasts.FetchFailure(
                problem.TLS, f"{where}: the TLS handshake with {host} failed: {exc.os_error}"
            )
        except aiohttp.ClientConnectorError as exc:
            return mtasts.FetchFailure(
                problem.CONNECT, f"{where}: could not connect to {host}: {exc.os_error}"
            )
        except aiohttp.ClientResponseError as exc:
            detail = " ".join(exc.message.split())  # aiohttp's parser messages span lines
            return mtasts.FetchFailure(
                problem.HTTP, f"{where}: the answer is not valid HTTP: {_shorten(detail)}"
            )
        except (aiohttp.ClientError, OSError) as exc:
            # A closed connection, a TLS error mid-stream.
            detail = " ".join(str(exc).split()) or type(exc).__name__
            return mtasts.FetchFailure(
                problem.HTTP, f"{where}: the HTTPS exchange with {host} failed: {detail}"
            )


async def _read_policy(
    response: aiohttp.ClientResponse, domain: str, url: str, where: str
) -> _FetchResult:
    """Check status, type, encoding and size (RFC 8461 §3.3); read and parse the body."""
    problem = mtasts.FetchProblem
    status = response.status
    if 300 <= status < 400:
        location = _shorten(response.headers.get("Location", "(no Location header)"))
        return mtasts.FetchFailure(
            problem.REDIRECT,
            f"{where}: the server redirects ({status}) to {location}, and RFC 8461 §3.3 "
            "forbids following redirects",
        )
    if status != 200:
        return mtasts.FetchFailure(
            problem.STATUS, f"{where}: the server answered {status} {response.reason}, not 200"
        )
    content_type = response.headers.get("Content-Type", "")
    media_type = content_type.partition(";")[0].strip(" \t").lower()  # parameters allowed
    if media_type != "text/plain":
        shown = _shorten(content_type) if content_type else "missing"
        return mtasts.FetchFailure(
            problem.CONTENT_TYPE,
            f"{where}: Content-Type is {shown}, not text/plain (RFC 8461 §3.3)",
        )
    encoding = response.headers.get("Content-Encoding", "identity").strip(" \t").lower()
    if encoding not in ("", "identity"):
        return mtasts.FetchFailure(
            problem.HTTP, f"{where}: the body is {_shorten(encoding)}-encoded; none was accepted"
        )
    cap = mtasts.MTA_STS_MAX_POLICY_BYTES
    if response.content_length is not None and response.content_length > cap:
        return mtasts.FetchFailure(
            problem.OVERSIZE,
            f"{where}: the body is {response.content_length} bytes, more than the {cap} "
            "a sender reads (RFC 8461 §3.3)",
        )
    body = bytearray()
    while chunk := await response.content.read(READ_CHUNK_BYTES):
        body += chunk
        if len(body) > cap:
            return mtasts.FetchFailure(
                problem.OVERSIZE,
                f"{where}: the body is longer than the {cap} bytes a sender reads "
                "(RFC 8461 §3.3); stopped reading",
            )
    parsed = mtasts.parse_policy(bytes(body))
    if isinstance(parsed, mtasts.PolicyError):
        return mtasts.FetchFailure(
            problem.INVALID_POLICY, f"the MTA-STS policy of {domain} at {url} is invalid: {parsed}"
        )
    return parsed


def _from_cache(
    domain: str,
    cached: CachedPolicy,
    *,
    reason: str = "",
    failure: mtasts.FetchFailure | None = None,
) -> mtasts.PolicyLookup:
    """The cached policy as a lookup; with a reason, because a refresh failed."""
    why = failure.reason if failure is not None else reason
    return mtasts.PolicyLookup(
        domain,
        mtasts.LookupStatus.POLICY,
        policy=cached.policy,
        policy_id=cached.policy_id,
        source=mtasts.Source.CACHE_REFRESH_FAILED if why else mtasts.Source.CACHE,
        reason=why,
        problem=failure.problem if failure is not None else None,
    )


def _fallback(
    domain: str, cached: CachedPolicy | None, failure: mtasts.FetchFailure
) -> mtasts.PolicyLookup:
    """After a failure: the unexpired cached policy (RFC 8461 §3.3), else UNAVAILABLE."""
    if cached is not None:
        return _from_cache(domain, cached, failure=failure)
    return mtasts.PolicyLookup(
        domain, mtasts.LookupStatus.UNAVAILABLE, reason=failure.reason, problem=failure.problem
    )


def _shorten(text: str) -> str:
    """A header value quoted for a message: it is the server's, possibly long or hostile."""
    limit = 120
    return repr(text if len(text) <= limit else text[:limit] + "...")
