"""The engine's async DNS resolver: nameservers, deadline, cache, single-flight.

A thin shell: it builds the query, sends it to the configured nameservers in
turn (UDP, then TCP when the answer is truncated), and hands the response to
`answer.classify`. Only the nameservers the caller passes are ever asked;
nothing here reads /etc/resolv.conf or calls the system resolver.

Outcomes:
    Every public lookup returns a DnsResult (see delivery.dns.result) and never
    raises, except asyncio.CancelledError. A nameserver that times out, answers
    SERVFAIL/REFUSED or sends something malformed is skipped for the next one;
    when none gives an answer, the result is TEMPFAIL and `detail` lists what
    each said. An invalid name is NXDOMAIN without any query: it cannot exist.

Deadlines:
    `timeout_ms` bounds one whole lookup: every nameserver, UDP and TCP. Each
    nameserver gets an equal share of what is left, so a silent first server
    leaves time for the second. A caller may pass its own `deadline` (event
    loop time, as `asyncio.timeout_at` takes) for a multi-step operation; the
    result is then TEMPFAIL when that passes first.

Sharing:
    Identical lookups (same name and type) in flight at once share one query;
    answers are cached per DnsCache. The shared query runs in a task owned by
    the resolver, so a caller that gives up does not cancel it for the others.
    A cache hit creates no task and parses no name: `names.normalize_name` takes
    plain names without dnspython, and the cache keeps each entry's records
    converted (`DnsCache.get_converted`); `addresses` asks only what is missing.

Security:
    Every query sets AD (RFC 6840 §5.7) and, with trust_ad, EDNS0 DO; the AD bit
    of the answer is believed only with trust_ad, which the operator sets for a
    validating resolver reached over a path they trust. Responses must match the
    query's id, question and source (dnspython checks); stray or malformed UDP
    packets are ignored while waiting for the real answer.

Standards: RFC 1035, RFC 2308, RFC 6840 §5.7-5.8, RFC 6891 (EDNS0), RFC 7766 (TCP).
Limits: one try per nameserver per lookup (no UDP retransmission).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdatatype

from delivery.dns import answer, names
from delivery.dns import cache as dns_cache
from delivery.dns.result import DnsResult, Lookup, MxRecord, TlsaRecord, map_records
from delivery.errors import ConfigError

if TYPE_CHECKING:
    from delivery.config import DnsSettings

__all__ = [
    "DEFAULT_TIMEOUT_MS",
    "EDNS_PAYLOAD_BYTES",
    "AddressFamily",
    "Resolver",
]

log = logging.getLogger("delivery.dns")

DEFAULT_TIMEOUT_MS = 5000
"""`[dns] timeout` when not set: bounds one whole lookup, every nameserver included."""

EDNS_PAYLOAD_BYTES = 1232
"""UDP payload we accept: the DNS Flag Day 2020 size, which avoids IP fragmentation;
larger answers come over TCP."""

Rdata = dns.rdata.Rdata
S = TypeVar("S")

AddressFamily = Literal["A", "AAAA"]
"""An address record type, as `Resolver.addresses` takes them."""

_ADDRESS_TYPES: Final[dict[str, dns.rdatatype.RdataType]] = {
    "A": dns.rdatatype.A,
    "AAAA": dns.rdatatype.AAAA,
}


class Resolver:
    """Async stub resolver in front of the operator's (validating) resolvers.

    :param nameservers: (IP, port) pairs, tried in order; see names.parse_nameserver.
    :param timeout_ms: bound of one whole lookup, all nameservers together.
    :param trust_ad: believe the AD bit (`[dns] dnssec = "trust-ad"`); when False,
        every result has ``secure=False`` and queries go without DO.
    :param cache: the cache to share; a private one when None.
    :param clock: monotonic seconds, for cache expiry only.
    :raises ConfigError: no nameserver, one that is not an IP address and port, or a
        timeout that is not positive.
    """

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]],
        *,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        trust_ad: bool = True,
        cache: dns_cache.DnsCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not nameservers:
            raise ConfigError("dns.nameservers", "at least one nameserver is required")
        if timeout_ms <= 0:
            raise ConfigError("dns.timeout", f"must be positive, not {timeout_ms} ms")
        # The round trip checks each entry is an IP literal with a valid port.
        self._nameservers = tuple(
            names.parse_nameserver(names.format_nameserver(server)) for server in nameservers
        )
        self._timeout_s = timeout_ms / 1000
        self._trust_ad = trust_ad
        self.cache = cache if cache is not None else dns_cache.DnsCache()
        self._clock = clock
        self._inflight: dict[dns_cache.CacheKey, asyncio.Task[DnsResult[Rdata]]] = {}

    @classmethod
    def from_settings(cls, settings: DnsSettings, /) -> Resolver:
        """The resolver the ``[dns]`` settings describe (nameservers, timeout, dnssec).

        :raises ConfigError: as the constructor, or a resolv.conf nameserver that is not an
            IP address.
        """
        return cls(
            settings.servers(),
            timeout_ms=settings.timeout_ms,
            trust_ad=settings.dnssec == "trust-ad",
        )

    async def mx(self, domain: str, *, deadline: float | None = None) -> DnsResult[MxRecord]:
        """MX records of `domain`; see result.is_null_mx for RFC 7505."""
        return await self._lookup(domain, dns.rdatatype.MX, answer.to_mx, deadline)

    async def a(self, name: str, *, deadline: float | None = None) -> DnsResult[str]:
        """IPv4 addresses of `name`."""
        return await self._lookup(name, dns.rdatatype.A, answer.to_address, deadline)

    async def aaaa(self, name: str, *, deadline: float | None = None) -> DnsResult[str]:
        """IPv6 addresses of `name`."""
        return await self._lookup(name, dns.rdatatype.AAAA, answer.to_address, deadline)

    async def addresses(
        self, name: str, families: Sequence[AddressFamily], *, deadline: float | None = None
    ) -> list[DnsResult[str]]:
        """The A and/or AAAA lookups of `name`, one result per entry of `families`, in order.

        What the cache holds is answered at once, without a task; only the lookups it
        cannot answer are asked, concurrently when there are several.
        """
        results: list[DnsResult[str] | None] = [
            self._cached(name, _ADDRESS_TYPES[family], answer.to_address) for family in families
        ]
        missing = [index for index, found in enumerate(results) if found is None]
        if len(missing) == 1:
            [index] = missing
            rdtype = _ADDRESS_TYPES[families[index]]
            results[index] = await self._lookup(name, rdtype, answer.to_address, deadline)
        elif missing:
            asked = await asyncio.gather(
                *(
                    self._lookup(name, _ADDRESS_TYPES[families[i]], answer.to_address, deadline)
                    for i in missing
                )
            )
            for index, found in zip(missing, asked, strict=True):
                results[index] = found
        return [found for found in results if found is not None]

    async def txt(self, name: str, *, deadline: float | None = None) -> DnsResult[str]:
        """TXT records of `name`, each record's strings joined."""
        return await self._lookup(name, dns.rdatatype.TXT, answer.to_txt, deadline)

    def cached_txt(self, name: str, /) -> DnsResult[str] | None:
        """The TXT records of `name` if the cache holds them (a hit), else None.

        A None is not counted as a cache miss: the caller then calls `txt`, which counts it.
        """
        return self._cached(name, dns.rdatatype.TXT, answer.to_txt)

    async def tlsa(self, name: str, *, deadline: float | None = None) -> DnsResult[TlsaRecord]:
        """TLSA records at `name`, e.g. "_25._tcp.mx1.example.com"."""
        return await self._lookup(name, dns.rdatatype.TLSA, answer.to_tlsa, deadline)

    async def query(
        self, name: str, rtype: str, *, deadline: float | None = None
    ) -> DnsResult[str]:
        """Records of any type as zone-file rdata text (for the dns_query() function).

        An unknown or meta type (ANY, AXFR, ...) is TEMPFAIL: nothing was asked.
        """
        try:
            rdtype = dns.rdatatype.from_text(rtype)
        except (dns.rdatatype.UnknownRdatatype, ValueError):  # ValueError: TYPE70000
            rdtype = None
        if rdtype is None or dns.rdatatype.is_metatype(rdtype):
            unsupported = answer.tempfail(name, f"unknown or unsupported record type {rtype!r}")
            return map_records(unsupported, answer.to_rdata_text)
        return await self._lookup(name, rdtype, answer.to_rdata_text, deadline)

    async def probe_dnssec(self, name: str) -> bool:
        """Whether the nameservers validate: a known-secure `name` answers with AD.

        Bypasses the cache. Always False without trust_ad.
        """
        try:
            qname = names.normalize_name(name)
        except names.InvalidName:
            return False
        found = await self._resolve(qname, dns.rdatatype.SOA)
        log.info("DNSSEC probe of %s: %s", qname, found.detail)
        return found.secure  # never True for TEMPFAIL, nor without trust_ad

    async def close(self) -> None:
        """Cancel the queries still in flight (their callers get CancelledError)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> Resolver:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _cached(
        self, name: str, rdtype: dns.rdatatype.RdataType, convert: Callable[[Rdata], S]
    ) -> DnsResult[S] | None:
        """The cached result (converted), or None without counting a miss (see cached_txt)."""
        try:
            qname = names.normalize_name(name)
        except names.InvalidName:
            return None  # `_lookup` answers it
        key = dns_cache.cache_key(qname, rdtype)
        return self.cache.get_converted(key, self._clock(), convert, count_miss=False)

    async def _lookup(
        self,
        name: str,
        rdtype: dns.rdatatype.RdataType,
        convert: Callable[[Rdata], S],
        deadline: float | None,
    ) -> DnsResult[S]:
        """Cache, then a shared in-flight query, then a new one; bounded by `deadline`.

        The records come converted by `convert`; a cache hit reuses the entry's conversion.
        """
        try:
            qname = names.normalize_name(name)
        except names.InvalidName as exc:
            return DnsResult(Lookup.NXDOMAIN, (), False, 0, name, (), f"{exc}; not queried")
        key = dns_cache.cache_key(qname, rdtype)
        cached = self.cache.get_converted(key, self._clock(), convert)
        if cached is not None:
            return cached
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._resolve_and_store(key, qname, rdtype))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        try:
            async with asyncio.timeout_at(deadline):
                # shield: a caller that gives up must not cancel the query for the others
                found = await asyncio.shield(task)
        except TimeoutError:
            found = answer.tempfail(qname, f"caller's deadline passed before {qname} resolved")
        return map_records(found, convert)

    async def _resolve_and_store(
        self, key: dns_cache.CacheKey, qname: str, rdtype: dns.rdatatype.RdataType
    ) -> DnsResult[Rdata]:
        found = await self._resolve(qname, rdtype)
        self.cache.put(key, found, self._clock())
        return found

    async def _resolve(self, qname: str, rdtype: dns.rdatatype.RdataType) -> DnsResult[Rdata]:
        """Ask the nameservers in turn until one answers, within timeout_ms."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        failures: list[str] = []
        for index, nameserver in enumerate(self._nameservers):
            left = deadline - loop.time()
            if left <= 0:
                break
            share_s = left / (len(self._nameservers) - index)
            found = await self._exchange(qname, rdtype, nameserver, share_s)
            if found.status is not Lookup.TEMPFAIL:
                log.debug("%s %s: %s", qname, dns.rdatatype.to_text(rdtype), found.detail)
                return found
            failures.append(found.detail)
        skipped = len(self._nameservers) - len(failures)
        if skipped:
            failures.append(f"{skipped} nameserver(s) not tried: lookup timeout reached")
        detail = "; ".join(failures)
        log.debug("%s %s: TEMPFAIL: %s", qname, dns.rdatatype.to_text(rdtype), detail)
        return answer.tempfail(qname, detail)

    async def _exchange(
        self,
        qname: str,
        rdtype: dns.rdatatype.RdataType,
        nameserver: tuple[str, int],
        budget_s: float,
    ) -> DnsResult[Rdata]:
        """One query to one nameserver within `budget_s`: UDP, then TCP if truncated."""
        host, port = nameserver
        label = names.format_nameserver(nameserver)
        query = dns.message.make_query(
            qname,
            rdtype,
            use_edns=0,
            payload=EDNS_PAYLOAD_BYTES,
            want_dnssec=self._trust_ad,
            flags=dns.flags.RD | dns.flags.AD,  # AD: tell us what validated (RFC 6840 §5.7)
        )
        try:
            async with asyncio.timeout(budget_s):
                response, used_tcp = await dns.asyncquery.udp_with_fallback(
                    query,
                    host,
                    port=port,
                    ignore_unexpected=True,  # stray packets: keep waiting for the answer
                    ignore_errors=True,
                )
        except TimeoutError:
            return answer.tempfail(qname, f"{label}: no answer within {budget_s * 1000:.0f} ms")
        except (dns.exception.DNSException, OSError, EOFError) as exc:
            # dnspython wraps every parse failure in DNSException; OSError covers refused
            # and reset connections; EOFError a TCP peer closing mid-answer.
            return answer.tempfail(qname, f"{label}: failed exchange: {exc!r}")
        server = f"{label} over {'tcp' if used_tcp else 'udp'}"
        return answer.classify(
            response, query.question[0].name, rdtype, trust_ad=self._trust_ad, server=server
        )
