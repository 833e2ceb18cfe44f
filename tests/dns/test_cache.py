"""DnsCache: lifetimes per outcome, countdown, eviction and counters (pure, clock passed in)."""

from __future__ import annotations

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from delivery.dns import cache
from delivery.dns.result import DnsResult, Lookup

A = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.A, "192.0.2.1")


def result(status: Lookup, ttl: int) -> DnsResult[dns.rdata.Rdata]:
    records = (A,) if status is Lookup.ANSWER else ()
    return DnsResult(status, records, False, ttl, "a.test.", (), "127.0.0.1:53 over udp: ...")


@pytest.mark.parametrize(
    ("status", "ttl", "lifetime"),
    [
        (Lookup.ANSWER, 300, 300),
        (Lookup.ANSWER, 10**7, cache.POSITIVE_CACHE_MAX_S),
        (Lookup.ANSWER, 0, 0),
        (Lookup.NXDOMAIN, 60, 60),
        (Lookup.NODATA, 86_400, cache.NEGATIVE_CACHE_MAX_S),
        (Lookup.NODATA, 0, 0),  # no SOA: RFC 2308 §5
        (Lookup.TEMPFAIL, 0, cache.TEMPFAIL_CACHE_S),
    ],
)
def test_cache_lifetime(status: Lookup, ttl: int, lifetime: int) -> None:
    assert cache.cache_lifetime(result(status, ttl)) == lifetime


def test_entry_lives_for_its_lifetime_with_ttl_counting_down() -> None:
    store = cache.DnsCache()
    key = cache.cache_key("a.test.", dns.rdatatype.A)
    store.put(key, result(Lookup.ANSWER, 300), 100.0)
    hit = store.get(key, 100.0 + 120.5)
    assert hit is not None and hit.ttl == 180 and hit.records == (A,)
    assert hit.detail.endswith("(cached)")
    assert store.get(key, 100.0 + 300) is None
    assert (store.hits, store.misses, len(store)) == (1, 1, 0)


def test_tempfail_is_kept_briefly_with_ttl_zero() -> None:
    store = cache.DnsCache()
    key = cache.cache_key("a.test.", dns.rdatatype.MX)
    store.put(key, result(Lookup.TEMPFAIL, 0), 0.0)
    hit = store.get(key, cache.TEMPFAIL_CACHE_S - 0.1)
    assert hit is not None and hit.status is Lookup.TEMPFAIL and hit.ttl == 0
    assert store.get(key, cache.TEMPFAIL_CACHE_S) is None


def test_keys_differ_by_type() -> None:
    store = cache.DnsCache()
    store.put(cache.cache_key("a.test.", dns.rdatatype.A), result(Lookup.ANSWER, 300), 0.0)
    assert store.get(cache.cache_key("a.test.", dns.rdatatype.AAAA), 1.0) is None


def test_least_recently_used_entry_is_evicted() -> None:
    store = cache.DnsCache(max_entries=2)
    first, second, third = (cache.cache_key(f"{n}.test.", dns.rdatatype.A) for n in "abc")
    store.put(first, result(Lookup.ANSWER, 300), 0.0)
    store.put(second, result(Lookup.ANSWER, 300), 0.0)
    assert store.get(first, 1.0) is not None  # first is now the most recently used
    store.put(third, result(Lookup.ANSWER, 300), 1.0)
    assert len(store) == 2
    assert store.get(second, 2.0) is None
    assert store.get(first, 2.0) is not None and store.get(third, 2.0) is not None


def test_zero_entries_disables_caching() -> None:
    store = cache.DnsCache(max_entries=0)
    key = cache.cache_key("a.test.", dns.rdatatype.A)
    store.put(key, result(Lookup.ANSWER, 300), 0.0)
    assert store.get(key, 0.0) is None and len(store) == 0


def test_get_converted_converts_once_per_entry_and_counts_each_hit() -> None:
    store = cache.DnsCache()
    key = cache.cache_key("a.test.", dns.rdatatype.A)
    store.put(key, result(Lookup.ANSWER, 300), 0.0)
    converted: list[dns.rdata.Rdata] = []

    def to_text(rdata: dns.rdata.Rdata) -> str:
        converted.append(rdata)
        return rdata.to_text()

    first = store.get_converted(key, 1.0, to_text)
    second = store.get_converted(key, 200.5, to_text)
    assert first is not None and second is not None
    assert first.records == second.records == ("192.0.2.1",) and converted == [A]
    assert (first.ttl, second.ttl) == (299, 100) and second.detail.endswith("(cached)")
    raw = store.get(key, 201.0)
    assert raw is not None and raw.records == (A,)  # the unconverted view is unchanged
    assert (store.hits, store.misses) == (3, 0)


def test_a_miss_is_counted_only_when_asked_to() -> None:
    store = cache.DnsCache()
    key = cache.cache_key("a.test.", dns.rdatatype.A)
    assert store.get_converted(key, 0.0, str, count_miss=False) is None
    assert (store.hits, store.misses) == (0, 0)
    assert store.get_converted(key, 0.0, str) is None
    assert (store.hits, store.misses) == (0, 1)
