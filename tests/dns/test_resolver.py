"""The Resolver against the harness DNS server over real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import dns.flags
import dns.message
import dns.rcode
import pytest

from delivery.dns import cache
from delivery.dns.resolver import AddressFamily, Resolver
from delivery.dns.result import Lookup, MxRecord, TlsaRecord, is_null_mx
from delivery.errors import ConfigError
from delivery.harness.dns_server import DnsServer, ZoneSpec
from tests.dns.common import BIG_TXT, TLSA_HASH, ZONES, FakeClock, loopback_ip


@pytest.mark.parametrize(
    ("rtype", "name", "status", "secure", "records"),
    [
        (
            "MX",
            "Example.TEST",
            Lookup.ANSWER,
            True,
            ("10 mx1.example.test.", "20 mx2.example.test."),
        ),
        ("A", "mx1.example.test", Lookup.ANSWER, True, ("127.0.0.10",)),
        ("AAAA", "mx1.example.test", Lookup.ANSWER, True, ("::1",)),
        ("TXT", "mx1.example.test", Lookup.NODATA, True, ()),
        ("A", "nope.example.test", Lookup.NXDOMAIN, True, ()),
        ("A", "host.insecure.test", Lookup.ANSWER, False, ("127.0.0.20",)),
        ("TLSA", "_25._tcp.host.insecure.test", Lookup.NXDOMAIN, False, ()),
        ("MX", "bogus.test", Lookup.TEMPFAIL, False, ()),
        ("A", "broken.example.test", Lookup.TEMPFAIL, False, ()),
        ("MX", "example.com", Lookup.TEMPFAIL, False, ()),  # REFUSED: not served
    ],
)
async def test_statuses_and_dnssec_flag(
    resolver: Resolver,
    rtype: str,
    name: str,
    status: Lookup,
    secure: bool,
    records: tuple[str, ...],
) -> None:
    result = await resolver.query(name, rtype)
    assert result.status is status
    assert result.secure is secure
    assert tuple(sorted(result.records)) == records
    assert result.detail  # every outcome says who said what


@pytest.mark.parametrize(
    ("name", "said"),
    [("bogus.test", "SERVFAIL"), ("broken.example.test", "SERVFAIL"), ("example.com", "REFUSED")],
)
async def test_tempfail_detail_names_the_server_and_its_answer(
    resolver: Resolver, dns_server: DnsServer, name: str, said: str
) -> None:
    result = await resolver.mx(name)
    host, port = dns_server.address
    assert result.status is Lookup.TEMPFAIL and result.ttl == 0
    assert f"{host}:{port} over udp: {said}" in result.detail


async def test_typed_lookups(resolver: Resolver) -> None:
    mx = await resolver.mx("example.test")
    assert sorted(mx.records, key=lambda r: r.preference) == [
        MxRecord(10, "mx1.example.test."),
        MxRecord(20, "mx2.example.test."),
    ]
    assert not is_null_mx(mx)
    assert is_null_mx(await resolver.mx("insecure.test"))
    assert (await resolver.a("mx1.example.test")).records == ("127.0.0.10",)
    assert (await resolver.aaaa("mx1.example.test")).records == ("::1",)
    assert (await resolver.txt("_mta-sts.example.test")).records == ("v=STSv1; id=20240101",)
    tlsa = await resolver.tlsa("_25._tcp.mx1.example.test")
    assert tlsa.records == (TlsaRecord(3, 1, 1, bytes.fromhex(TLSA_HASH)),)
    assert tlsa.secure


async def test_cname_chain_fields(resolver: Resolver) -> None:
    result = await resolver.a("Alias.example.test")
    assert result.status is Lookup.ANSWER and result.records == ("127.0.0.10",)
    assert result.canonical_name == "mx1.example.test."
    assert result.cname_chain == ("alias.example.test.", "www.example.test.")
    assert result.ttl == 60 and result.secure
    plain = await resolver.a("mx1.example.test")
    assert (plain.canonical_name, plain.cname_chain) == ("mx1.example.test.", ())


async def test_chain_through_an_insecure_zone_is_not_secure(resolver: Resolver) -> None:
    result = await resolver.a("to-insecure.example.test")
    assert result.status is Lookup.ANSWER and result.canonical_name == "host.insecure.test."
    assert not result.secure


async def test_trust_ad_off_ignores_ad(dns_server: DnsServer) -> None:
    async with Resolver([dns_server.address], trust_ad=False) as untrusting:
        result = await untrusting.mx("example.test")
        assert result.status is Lookup.ANSWER and not result.secure
        assert not await untrusting.probe_dnssec("example.test")


async def test_probe_dnssec(resolver: Resolver, dns_server: DnsServer) -> None:
    assert await resolver.probe_dnssec("example.test")
    assert not await resolver.probe_dnssec("insecure.test")
    assert not await resolver.probe_dnssec("bogus.test")
    await resolver.probe_dnssec("example.test")
    assert dns_server.queries.count(("example.test.", "SOA")) == 2  # never from the cache


class RefusingUdp(asyncio.DatagramProtocol):
    """A nameserver that records each query and answers REFUSED."""

    def __init__(self) -> None:
        self.queries: list[dns.message.Message] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        query = dns.message.from_wire(data)
        self.queries.append(query)
        reply = dns.message.make_response(query)
        reply.set_rcode(dns.rcode.REFUSED)
        assert self.transport is not None
        self.transport.sendto(reply.to_wire(), addr)


@pytest.mark.parametrize("trust_ad", [True, False])
async def test_queries_set_ad_and_do_only_when_trusting_ad(trust_ad: bool) -> None:
    host = loopback_ip()
    transport, server = await asyncio.get_running_loop().create_datagram_endpoint(
        RefusingUdp, local_addr=(host, 0)
    )
    try:
        async with Resolver(
            [(host, transport.get_extra_info("sockname")[1])], trust_ad=trust_ad
        ) as r:
            assert (await r.a("mx1.example.test")).status is Lookup.TEMPFAIL
    finally:
        transport.close()
    [query] = server.queries
    assert query.flags & dns.flags.AD and query.flags & dns.flags.RD
    assert query.edns == 0 and query.payload == 1232
    assert bool(query.ednsflags & dns.flags.DO) is trust_ad


async def test_invalid_name_is_nxdomain_without_a_query(
    resolver: Resolver, dns_server: DnsServer
) -> None:
    result = await resolver.mx("a..example.test")
    assert result.status is Lookup.NXDOMAIN and "invalid domain name" in result.detail
    assert dns_server.queries == []


async def test_unknown_type_is_tempfail(resolver: Resolver) -> None:
    result = await resolver.query("example.test", "NOSUCHTYPE")
    assert result.status is Lookup.TEMPFAIL and "NOSUCHTYPE" in result.detail


async def test_cache_hit_within_ttl_and_miss_after(
    resolver: Resolver, dns_server: DnsServer, clock: FakeClock
) -> None:
    first = await resolver.a("mx2.example.test")
    assert first.ttl == 42
    clock.now += 41
    second = await resolver.a("MX2.example.test.")
    assert second.records == first.records and second.ttl == 1
    assert dns_server.queries == [("mx2.example.test.", "A")]
    clock.now += 1
    await resolver.a("mx2.example.test")
    assert dns_server.queries == [("mx2.example.test.", "A")] * 2
    assert (resolver.cache.hits, resolver.cache.misses) == (1, 2)


@pytest.mark.parametrize(
    ("families", "expected"),
    [
        (("A", "AAAA"), [("127.0.0.10",), ("::1",)]),
        (("AAAA", "A"), [("::1",), ("127.0.0.10",)]),
        (("A",), [("127.0.0.10",)]),
    ],
)
async def test_addresses_in_the_order_asked_and_cached_ones_without_a_query(
    resolver: Resolver,
    dns_server: DnsServer,
    families: tuple[AddressFamily, ...],
    expected: list[tuple[str, ...]],
) -> None:
    first = await resolver.addresses("mx1.example.test", families)
    assert [found.records for found in first] == expected
    assert sorted(dns_server.queries) == sorted(("mx1.example.test.", f) for f in families)
    again = await resolver.addresses("MX1.example.test", families)
    assert [found.records for found in again] == expected
    assert len(dns_server.queries) == len(families)
    assert (resolver.cache.hits, resolver.cache.misses) == (len(families), len(families))


async def test_addresses_asks_only_what_the_cache_lacks(
    resolver: Resolver, dns_server: DnsServer
) -> None:
    await resolver.aaaa("mx1.example.test")
    found = await resolver.addresses("mx1.example.test", ("A", "AAAA"))
    assert [f.records for f in found] == [("127.0.0.10",), ("::1",)]
    assert dns_server.queries == [("mx1.example.test.", "AAAA"), ("mx1.example.test.", "A")]
    assert (resolver.cache.hits, resolver.cache.misses) == (1, 2)


async def test_cached_txt_answers_only_from_the_cache(
    resolver: Resolver, dns_server: DnsServer
) -> None:
    name = "_mta-sts.example.test"
    assert resolver.cached_txt(name) is None
    assert (resolver.cache.hits, resolver.cache.misses) == (0, 0)  # txt() counts the miss
    assert dns_server.queries == []
    fetched = await resolver.txt(name)
    cached = resolver.cached_txt(name.upper())
    assert cached is not None and cached.records == fetched.records
    assert (resolver.cache.hits, resolver.cache.misses) == (1, 1)
    assert resolver.cached_txt("a..example.test") is None


@pytest.mark.parametrize(
    ("name", "lifetime"),
    [
        ("nope.example.test", 300),  # the synthesized SOA's minimum
        ("nope.longneg.test", cache.NEGATIVE_CACHE_MAX_S),  # SOA asks for a day: capped
    ],
)
async def test_negative_answers_are_cached_for_the_soa_minimum(
    resolver: Resolver, dns_server: DnsServer, clock: FakeClock, name: str, lifetime: int
) -> None:
    assert (await resolver.mx(name)).status is Lookup.NXDOMAIN
    clock.now += lifetime - 1
    assert (await resolver.mx(name)).status is Lookup.NXDOMAIN
    assert len(dns_server.queries) == 1
    clock.now += 1
    await resolver.mx(name)
    assert len(dns_server.queries) == 2


async def test_tempfail_is_cached_only_briefly(
    resolver: Resolver, dns_server: DnsServer, clock: FakeClock
) -> None:
    assert (await resolver.mx("broken.example.test")).status is Lookup.TEMPFAIL
    clock.now += cache.TEMPFAIL_CACHE_S - 1
    assert (await resolver.mx("broken.example.test")).status is Lookup.TEMPFAIL
    assert len(dns_server.queries) == 1
    clock.now += 1
    await resolver.mx("broken.example.test")
    assert len(dns_server.queries) == 2


async def test_concurrent_identical_lookups_share_one_query(dns_server: DnsServer) -> None:
    uncached = cache.DnsCache(max_entries=0)  # only single-flight can merge the two
    async with Resolver([dns_server.address], cache=uncached) as resolver:
        first, second = await asyncio.gather(
            resolver.mx("example.test"), resolver.mx("example.test")
        )
        assert first == second and first.status is Lookup.ANSWER
        assert dns_server.queries == [("example.test.", "MX")]
        await resolver.mx("example.test")
        assert len(dns_server.queries) == 2


@pytest.fixture
async def second_server() -> AsyncIterator[DnsServer]:
    async with DnsServer(ZONES, host=loopback_ip()) as server:
        yield server


@pytest.mark.parametrize("fault", ["timeout", "servfail"])
async def test_next_nameserver_is_asked_when_the_first_fails(
    second_server: DnsServer, fault: str
) -> None:
    faulty_zones = [ZoneSpec(z.origin, z.dnssec, z.records, {"@": fault}) for z in ZONES]  # type: ignore[dict-item]
    async with DnsServer(faulty_zones, host=loopback_ip()) as first_server:
        nameservers = [first_server.address, second_server.address]
        async with Resolver(nameservers, timeout_ms=1000) as resolver:
            result = await resolver.mx("example.test")
    assert result.status is Lookup.ANSWER and result.secure
    host, port = second_server.address
    assert result.detail.startswith(f"{host}:{port} over udp")
    assert first_server.queries == second_server.queries == [("example.test.", "MX")]


async def test_timeout_is_tempfail_within_the_deadline(dns_server: DnsServer) -> None:
    loop = asyncio.get_running_loop()
    async with Resolver([dns_server.address], timeout_ms=300) as quick:
        started = loop.time()
        result = await quick.a("slow.example.test")
        elapsed = loop.time() - started
    assert result.status is Lookup.TEMPFAIL
    assert "no answer within 300 ms" in result.detail
    assert 0.3 <= elapsed < 1.5


async def test_caller_deadline_bounds_the_lookup(resolver: Resolver) -> None:
    loop = asyncio.get_running_loop()
    result = await resolver.a("slow.example.test", deadline=loop.time() + 0.1)
    assert result.status is Lookup.TEMPFAIL and "deadline" in result.detail


async def test_truncated_answer_is_retried_over_tcp(
    resolver: Resolver, dns_server: DnsServer
) -> None:
    result = await resolver.txt("big.example.test")
    assert result.status is Lookup.ANSWER and result.records == (BIG_TXT,)
    assert " over tcp: " in result.detail
    assert dns_server.queries == [("big.example.test.", "TXT")] * 2  # UDP, then TCP


async def test_malformed_answer_is_tempfail() -> None:
    """A server that sets TC over UDP and then sends garbage over TCP."""

    class TruncatingUdp(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
            reply = dns.message.make_response(dns.message.from_wire(data))
            reply.flags |= dns.flags.TC
            self.transport.sendto(reply.to_wire(), addr)  # type: ignore[attr-defined]

    async def garbage_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = int.from_bytes(await reader.readexactly(2), "big")
        query = await reader.readexactly(size)
        junk = query[:2] + b"\x81\x80" + b"\xff" * 20  # right id, then nonsense
        writer.write(len(junk).to_bytes(2, "big") + junk)
        await writer.drain()
        writer.close()

    host = loopback_ip()
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(TruncatingUdp, local_addr=(host, 0))
    port = udp.get_extra_info("sockname")[1]
    tcp = await asyncio.start_server(garbage_tcp, host, port)
    try:
        async with Resolver([(host, port)], timeout_ms=2000) as resolver:
            result = await resolver.mx("example.test")
    finally:
        udp.close()
        tcp.close()
        await tcp.wait_closed()
    assert result.status is Lookup.TEMPFAIL
    assert result.detail.startswith(f"{host}:{port}: failed exchange")


@pytest.mark.parametrize(
    ("nameservers", "timeout_ms", "field"),
    [
        ([], 5000, "dns.nameservers"),
        ([("resolver.example", 53)], 5000, "dns.nameservers"),
        ([("127.0.0.1", 0)], 5000, "dns.nameservers"),
        ([("127.0.0.1", 53)], 0, "dns.timeout"),
    ],
)
def test_bad_settings_are_config_errors(
    nameservers: list[tuple[str, int]], timeout_ms: int, field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Resolver(nameservers, timeout_ms=timeout_ms)
    assert caught.value.field == field
