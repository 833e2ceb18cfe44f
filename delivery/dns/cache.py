"""TTL-bounded cache of DNS answers, shared by every delivery.

Keyed by (normalised name, type) through `cache_key`, the one function that
builds keys. The caller passes the time in (monotonic seconds), so the cache
has no clock of its own and tests control expiry exactly.

Lifetimes (`cache_lifetime`):
    ANSWER            the lowest TTL on the chain, capped at POSITIVE_CACHE_MAX_S
    NODATA/NXDOMAIN   the SOA negative TTL (RFC 2308 §5), capped at
                      NEGATIVE_CACHE_MAX_S; not cached without an SOA
    TEMPFAIL          TEMPFAIL_CACHE_S, see the constant for why
    TTL 0             never cached

Outcomes:
    get() returns the cached result with `ttl` counted down to what is left, or
    None (expired or absent); hits/misses count those two cases for metrics.
    get_converted() is get() with the records converted (rdata to MxRecord, ...),
    converted once per entry: a hit costs a dictionary lookup and one small object,
    no DNS name or rdata work.

Security:
    The cache holds validated and unvalidated answers alike, each with its own
    `secure` flag; a lookup never upgrades one into the other. Entries are bounded
    in number (max_entries, least recently used evicted first) and in age.

Standards: RFC 1035 §3.2.1 (TTL), RFC 2181 §8, RFC 2308 §5 (negative caching).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import dns.rdata
import dns.rdatatype

from delivery.dns.result import DnsResult, Lookup

__all__ = [
    "DNS_CACHE_MAX_ENTRIES",
    "NEGATIVE_CACHE_MAX_S",
    "POSITIVE_CACHE_MAX_S",
    "TEMPFAIL_CACHE_S",
    "CacheKey",
    "DnsCache",
    "cache_key",
    "cache_lifetime",
]

POSITIVE_CACHE_MAX_S = 86_400
"""Longest life of a positive answer: a day, as common resolvers cap TTLs, so that a
record published with an absurd TTL is still re-read daily."""

NEGATIVE_CACHE_MAX_S = 900
"""Longest life of NXDOMAIN/NODATA: a freshly published MX, TLSA or MTA-STS record
is seen within 15 minutes even if the zone asks for longer negative caching."""

TEMPFAIL_CACHE_S = 5
"""Life of a TEMPFAIL. Short, but not zero: when a domain's servers time out or its
signatures are bogus, every queued message for it would otherwise wait the whole
lookup timeout asking the same question; for 5 s they fail fast together (each is
deferred and retried on its schedule), and a brief resolver hiccup heals quickly."""

DNS_CACHE_MAX_ENTRIES = 10_000
"""Entries kept before the least recently used is evicted: bounds memory when many
distinct domains (or an attacker's random names) pass through."""

CacheKey = tuple[str, int]

Rdata = dns.rdata.Rdata
R = TypeVar("R")
S = TypeVar("S")


def cache_key(name: str, rdtype: dns.rdatatype.RdataType, /) -> CacheKey:
    """The key of (name, type); `name` must come from names.normalize_name."""
    return (name, int(rdtype))


def cache_lifetime(result: DnsResult[Rdata], /) -> int:
    """Seconds `result` may be cached; 0 means not at all.

    >>> cache_lifetime(DnsResult(Lookup.ANSWER, (), False, 10**6, "a.test.", ()))
    86400
    """
    match result.status:
        case Lookup.ANSWER:
            return min(result.ttl, POSITIVE_CACHE_MAX_S)
        case Lookup.NODATA | Lookup.NXDOMAIN:
            return min(result.ttl, NEGATIVE_CACHE_MAX_S)
        case Lookup.TEMPFAIL:
            return TEMPFAIL_CACHE_S


class _Entry:
    """One cached result, with what every hit on it reuses."""

    __slots__ = ("detail", "expires", "result", "views")

    def __init__(self, result: DnsResult[Rdata], expires: float, /) -> None:
        self.result = result
        self.expires = expires  # monotonic seconds
        self.detail = f"{result.detail} (cached)"
        # The records converted by each converter `get_converted` was given (a handful of
        # module-level functions: to_mx, to_address, ...), so that a hit converts nothing.
        self.views: dict[Callable[[Rdata], Any], tuple[Any, ...]] = {}


class DnsCache:
    """Bounded, TTL-respecting store of lookup results.

    :param max_entries: entries kept; 0 disables caching.
    """

    def __init__(self, *, max_entries: int = DNS_CACHE_MAX_ENTRIES) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self._max_entries = max_entries
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._hits = 0
        self._misses = 0

    @property
    def hits(self) -> int:
        """Lookups answered from the cache."""
        return self._hits

    @property
    def misses(self) -> int:
        """Lookups the cache could not answer (absent or expired)."""
        return self._misses

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey, now: float, /) -> DnsResult[Rdata] | None:
        """The live result for `key` with its TTL counted down, or None."""
        entry = self._live(key, now)
        if entry is None:
            return None
        return _shown(entry, entry.result.records, now)

    def get_converted(
        self,
        key: CacheKey,
        now: float,
        convert: Callable[[Rdata], S],
        /,
        *,
        count_miss: bool = True,
    ) -> DnsResult[S] | None:
        """As `get`, each record converted by `convert` (e.g. `answer.to_mx`), or None.

        The conversion runs once per entry and converter; later hits reuse its records.
        ``convert`` should be a module-level function: each distinct one is kept per entry.

        :param count_miss: False for a caller that asks again through a path that counts
            the miss itself (the resolver's lookup), so that a lookup counts once.
        """
        entry = self._live(key, now, count_miss=count_miss)
        if entry is None:
            return None
        records: tuple[S, ...] | None = entry.views.get(convert)
        if records is None:
            records = tuple(convert(record) for record in entry.result.records)
            entry.views[convert] = records
        return _shown(entry, records, now)

    def _live(self, key: CacheKey, now: float, /, *, count_miss: bool = True) -> _Entry | None:
        """The unexpired entry for `key` (now the most recently used), counting hit or miss."""
        entry = self._entries.get(key)
        if entry is None or entry.expires <= now:
            if entry is not None:
                del self._entries[key]
            if count_miss:
                self._misses += 1
            return None
        self._hits += 1
        self._entries.move_to_end(key)
        return entry

    def put(self, key: CacheKey, result: DnsResult[Rdata], now: float, /) -> None:
        """Store `result` for its cache_lifetime, evicting the least recently used."""
        lifetime = cache_lifetime(result)
        if lifetime <= 0 or self._max_entries == 0:
            return
        self._entries[key] = _Entry(result, now + lifetime)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


def _shown(entry: _Entry, records: tuple[R, ...], now: float, /) -> DnsResult[R]:
    """The entry as a hit returns it: `records`, the TTL left, the detail marked cached."""
    result = entry.result
    return DnsResult(
        result.status,
        records,
        result.secure,
        min(result.ttl, math.ceil(entry.expires - now)),
        result.canonical_name,
        result.cname_chain,
        entry.detail,
    )
