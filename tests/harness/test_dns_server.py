"""The harness DNS server, asked with dnspython over real loopback sockets."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from delivery.harness.dns_server import DnsServer, RecordSpec, ZoneSpec

TLSA_HASH = "ab" * 32
BIG_TXT = "x" * 3000

ZONES = (
    ZoneSpec(
        "example.test",
        "secure",
        (
            RecordSpec("@", "MX", "10 mx1"),
            RecordSpec("@", "MX", "20 mx2.example.test."),
            RecordSpec("mx1", "A", "127.0.0.10"),
            RecordSpec("mx1", "AAAA", "::1"),
            RecordSpec("mx2.example.test.", "A", "127.0.0.11", ttl=42),
            RecordSpec("www", "CNAME", "mx1"),
            RecordSpec("alias", "CNAME", "www.example.test."),
            RecordSpec("to-insecure", "CNAME", "host.insecure.test."),
            RecordSpec("to-other", "CNAME", "host.other.test."),
            RecordSpec("to-bogus", "CNAME", "host.bogus.test."),
            RecordSpec("to-outside", "CNAME", "elsewhere.invalid."),
            RecordSpec("loop1", "CNAME", "loop2"),
            RecordSpec("loop2", "CNAME", "loop1"),
            RecordSpec("to-broken", "CNAME", "broken"),
            RecordSpec("_25._tcp.mx1", "TLSA", f"3 1 1 {TLSA_HASH}"),
            RecordSpec("_mta-sts", "TXT", '"v=STSv1; id=20240101"'),
            RecordSpec("bare", "TXT", "v=STSv1; id=1"),
            RecordSpec("multi", "TXT", '"part one " "part two"'),
            RecordSpec("big", "TXT", BIG_TXT),
            RecordSpec("a.b.c", "A", "127.0.0.12"),
            RecordSpec("vanished", "TXT", "exists"),
        ),
        faults={"broken": "servfail", "slow": "timeout", "vanished": "nxdomain"},
    ),
    ZoneSpec(
        "insecure.test",
        records=(
            RecordSpec("@", "MX", "0 ."),
            RecordSpec("host", "A", "127.0.0.20"),
        ),
    ),
    ZoneSpec("other.test", "secure", (RecordSpec("host", "A", "127.0.0.30"),)),
    ZoneSpec("bogus.test", "bogus", (RecordSpec("host", "A", "127.0.0.40"),)),
    ZoneSpec(
        "soa.test",
        "insecure",
        (RecordSpec("@", "SOA", "ns.soa.test. admin.soa.test. 7 3600 600 86400 60", ttl=120),),
    ),
)

_addresses = itertools.count(1)


def loopback_ip() -> str:
    """A loopback address no other test in this run uses (xdist workers differ by pid)."""
    n = next(_addresses)
    return f"127.{os.getpid() % 200 + 20}.{n // 250 % 250}.{n % 250 + 1}"


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    async with DnsServer(ZONES, host=loopback_ip()) as running:
        yield running


async def ask(
    server: DnsServer,
    name: str,
    rtype: str,
    *,
    tcp: bool = False,
    dnssec_ok: bool = True,
    ad: bool = False,
    edns: bool = True,
    wait_s: float = 2.0,
) -> dns.message.Message:
    flags = dns.flags.RD | (dns.flags.AD if ad else 0)
    query = dns.message.make_query(
        name, rtype, use_edns=0 if edns else False, want_dnssec=dnssec_ok and edns, flags=flags
    )
    host, port = server.address
    if tcp:
        return await dns.asyncquery.tcp(query, host, wait_s, port)
    return await dns.asyncquery.udp(query, host, wait_s, port)


def answer_texts(response: dns.message.Message) -> list[str]:
    """Answer lines, chain order kept, records within one RRset sorted (RRsets are sets)."""
    return [line for rrset in response.answer for line in sorted(rrset.to_text().splitlines())]


TRANSPORTS = [pytest.param(False, id="udp"), pytest.param(True, id="tcp")]

ANSWER_CASES = [  # (label, name, type, rcode, answer lines, AD)
    (
        "MX with relative and absolute exchanges",
        "example.test",
        "MX",
        "NOERROR",
        [
            "example.test. 300 IN MX 10 mx1.example.test.",
            "example.test. 300 IN MX 20 mx2.example.test.",
        ],
        True,
    ),
    ("A", "mx1.example.test", "A", "NOERROR", ["mx1.example.test. 300 IN A 127.0.0.10"], True),
    ("AAAA", "mx1.example.test", "AAAA", "NOERROR", ["mx1.example.test. 300 IN AAAA ::1"], True),
    (
        "names are case-insensitive; the owner echoes the query's case",
        "MX1.Example.TEST",
        "A",
        "NOERROR",
        ["MX1.Example.TEST. 300 IN A 127.0.0.10"],
        True,
    ),
    (
        "TLSA",
        "_25._tcp.mx1.example.test",
        "TLSA",
        "NOERROR",
        [f"_25._tcp.mx1.example.test. 300 IN TLSA 3 1 1 {TLSA_HASH}"],
        True,
    ),
    (
        "quoted TXT",
        "_mta-sts.example.test",
        "TXT",
        "NOERROR",
        ['_mta-sts.example.test. 300 IN TXT "v=STSv1; id=20240101"'],
        True,
    ),
    (
        "bare TXT is one string, semicolon included",
        "bare.example.test",
        "TXT",
        "NOERROR",
        ['bare.example.test. 300 IN TXT "v=STSv1; id=1"'],
        True,
    ),
    (
        "TXT with several strings",
        "multi.example.test",
        "TXT",
        "NOERROR",
        ['multi.example.test. 300 IN TXT "part one " "part two"'],
        True,
    ),
    (
        "CNAME chain followed and included",
        "alias.example.test",
        "A",
        "NOERROR",
        [
            "alias.example.test. 300 IN CNAME www.example.test.",
            "www.example.test. 300 IN CNAME mx1.example.test.",
            "mx1.example.test. 300 IN A 127.0.0.10",
        ],
        True,
    ),
    (
        "CNAME asked for itself is not followed",
        "www.example.test",
        "CNAME",
        "NOERROR",
        ["www.example.test. 300 IN CNAME mx1.example.test."],
        True,
    ),
    (
        "chain into an insecure zone is not AD",
        "to-insecure.example.test",
        "A",
        "NOERROR",
        [
            "to-insecure.example.test. 300 IN CNAME host.insecure.test.",
            "host.insecure.test. 300 IN A 127.0.0.20",
        ],
        False,
    ),
    (
        "chain across two secure zones is AD",
        "to-other.example.test",
        "A",
        "NOERROR",
        [
            "to-other.example.test. 300 IN CNAME host.other.test.",
            "host.other.test. 300 IN A 127.0.0.30",
        ],
        True,
    ),
    ("chain into a bogus zone", "to-bogus.example.test", "A", "SERVFAIL", [], False),
    ("chain leaving the served zones", "to-outside.example.test", "A", "SERVFAIL", [], False),
    ("CNAME loop", "loop1.example.test", "A", "SERVFAIL", [], False),
    ("chain into a servfail fault", "to-broken.example.test", "A", "SERVFAIL", [], False),
    ("null MX", "insecure.test", "MX", "NOERROR", ["insecure.test. 300 IN MX 0 ."], False),
    (
        "insecure zone: no AD",
        "host.insecure.test",
        "A",
        "NOERROR",
        ["host.insecure.test. 300 IN A 127.0.0.20"],
        False,
    ),
    ("bogus zone: SERVFAIL", "host.bogus.test", "A", "SERVFAIL", [], False),
    (
        "TTL as written",
        "mx2.example.test",
        "A",
        "NOERROR",
        ["mx2.example.test. 42 IN A 127.0.0.11"],
        True,
    ),
    ("NODATA: name has other types", "mx1.example.test", "TXT", "NOERROR", [], True),
    ("NODATA: empty non-terminal", "b.c.example.test", "A", "NOERROR", [], True),
    ("NXDOMAIN below an existing name", "x.mx1.example.test", "A", "NXDOMAIN", [], True),
    ("NXDOMAIN: no such name", "nope.example.test", "A", "NXDOMAIN", [], True),
    ("servfail fault", "broken.example.test", "A", "SERVFAIL", [], False),
    ("nxdomain fault hides existing records", "vanished.example.test", "TXT", "NXDOMAIN", [], True),
    ("outside every zone: REFUSED, never forwarded", "example.com", "A", "REFUSED", [], False),
    ("meta type ANY", "example.test", "ANY", "NOTIMP", [], False),
    (
        "SOA synthesized at the origin",
        "other.test",
        "SOA",
        "NOERROR",
        ["other.test. 3600 IN SOA ns.other.test. hostmaster.other.test. 1 3600 600 86400 300"],
        True,
    ),
]


@pytest.mark.parametrize("tcp", TRANSPORTS)
@pytest.mark.parametrize(
    ("label", "name", "rtype", "rcode", "lines", "ad"),
    ANSWER_CASES,
    ids=[c[0] for c in ANSWER_CASES],
)
async def test_answers(
    server: DnsServer,
    tcp: bool,
    label: str,
    name: str,
    rtype: str,
    rcode: str,
    lines: list[str],
    ad: bool,
) -> None:
    response = await ask(server, name, rtype, tcp=tcp)
    assert dns.rcode.to_text(response.rcode()) == rcode
    assert answer_texts(response) == lines
    assert bool(response.flags & dns.flags.AD) is ad
    assert response.flags & dns.flags.RA


@pytest.mark.parametrize(
    ("dnssec_ok", "ad", "edns", "expected"),
    [
        (False, False, True, False),
        (True, False, True, True),
        (False, True, True, True),
        (False, True, False, True),
        (False, False, False, False),
    ],
    ids=["neither", "DO", "AD", "AD-without-EDNS", "plain"],
)
async def test_ad_bit_needs_do_or_ad_in_the_query(
    server: DnsServer, dnssec_ok: bool, ad: bool, edns: bool, expected: bool
) -> None:
    response = await ask(server, "mx1.example.test", "A", dnssec_ok=dnssec_ok, ad=ad, edns=edns)
    assert bool(response.flags & dns.flags.AD) is expected
    assert bool(response.ednsflags & dns.flags.DO) is (dnssec_ok and edns)


async def test_checking_disabled_returns_bogus_data_without_ad(server: DnsServer) -> None:
    query = dns.message.make_query(
        "host.bogus.test", "A", want_dnssec=True, flags=dns.flags.RD | dns.flags.CD
    )
    host, port = server.address
    response = await dns.asyncquery.udp(query, host, 2.0, port)
    assert answer_texts(response) == ["host.bogus.test. 300 IN A 127.0.0.40"]
    assert not response.flags & dns.flags.AD


@pytest.mark.parametrize(
    ("name", "rcode", "soa_ttl"),
    [
        ("nope.example.test", dns.rcode.NXDOMAIN, 300),
        ("mx1.example.test", dns.rcode.NOERROR, 300),
        ("nope.soa.test", dns.rcode.NXDOMAIN, 60),  # min(SOA TTL 120, minimum 60)
    ],
)
async def test_negative_answers_carry_the_zone_soa(
    server: DnsServer, name: str, rcode: dns.rcode.Rcode, soa_ttl: int
) -> None:
    response = await ask(server, name, "TXT")
    assert response.rcode() == rcode and response.answer == []
    [soa] = response.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == soa_ttl
    assert name.endswith(soa.name.to_text().rstrip("."))


async def test_timeout_fault_sends_no_answer(server: DnsServer) -> None:
    with pytest.raises(dns.exception.Timeout):
        await ask(server, "slow.example.test", "A", wait_s=0.2)
    assert server.queries == [("slow.example.test.", "A")]


@pytest.mark.parametrize("rtype", ["TXT", "TLSA"])
async def test_large_answer_is_truncated_over_udp_and_complete_over_tcp(
    server: DnsServer, rtype: str
) -> None:
    if rtype == "TLSA":
        tlsa = tuple(RecordSpec("big", "TLSA", f"3 1 2 {i:02x}" + "cd" * 63) for i in range(40))
        server.set_zones([ZoneSpec("example.test", "secure", tlsa)])
    truncated = await ask(server, "big.example.test", rtype, edns=False)
    assert truncated.flags & dns.flags.TC and truncated.answer == []
    host, port = server.address
    query = dns.message.make_query("big.example.test", rtype, use_edns=0, payload=1232)
    response, used_tcp = await dns.asyncquery.udp_with_fallback(query, host, 2.0, port)
    assert used_tcp and not response.flags & dns.flags.TC
    [rrset] = response.answer
    if rtype == "TXT":
        [txt] = rrset
        assert [len(s) for s in txt.strings] == [255] * 11 + [195]
        assert b"".join(txt.strings).decode() == BIG_TXT
    else:
        assert len(rrset) == 40


async def test_answer_within_the_edns_payload_is_not_truncated(server: DnsServer) -> None:
    response = await ask(server, "multi.example.test", "TXT", edns=True)
    assert not response.flags & dns.flags.TC


async def test_garbage_is_ignored_and_serving_goes_on(server: DnsServer) -> None:
    host, port = server.address
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect((host, port))
        query = dns.message.make_query("mx1.example.test", "A")
        for packet in (b"", b"\x00", os.urandom(64), b"\xff" * 12 + b"junk"):
            await loop.sock_sendall(sock, packet)
        await loop.sock_sendall(sock, query.to_wire())
        async with asyncio.timeout(2):
            reply = dns.message.from_wire(await loop.sock_recv(sock, 65535))
    assert reply.id == query.id  # the first datagram back answers the real query
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"\x00\x05hello")
    writer.write(len(query.to_wire()).to_bytes(2, "big") + query.to_wire())
    async with asyncio.timeout(2):
        size = int.from_bytes(await reader.readexactly(2), "big")
        reply = dns.message.from_wire(await reader.readexactly(size))
    writer.close()
    assert reply.id == query.id and answer_texts(reply) == ["mx1.example.test. 300 IN A 127.0.0.10"]
    assert server.queries == [("mx1.example.test.", "A"), ("mx1.example.test.", "A")]


async def test_queries_are_logged_in_order(server: DnsServer) -> None:
    await ask(server, "Example.TEST", "MX")
    await ask(server, "_25._tcp.mx1.example.test", "TLSA", tcp=True)
    await ask(server, "example.com", "A")
    assert server.queries == [
        ("example.test.", "MX"),
        ("_25._tcp.mx1.example.test.", "TLSA"),
        ("example.com.", "A"),
    ]


async def test_set_zones_replaces_the_data_at_runtime(server: DnsServer) -> None:
    server.set_zones(
        [ZoneSpec("example.com", records=(RecordSpec("@", "MX", "5 mx.example.com."),))]
    )
    assert (await ask(server, "example.test", "MX")).rcode() == dns.rcode.REFUSED
    response = await ask(server, "example.com", "MX")
    assert answer_texts(response) == ["example.com. 300 IN MX 5 mx.example.com."]


async def test_serves_ipv6_loopback() -> None:
    async with DnsServer(ZONES, host="::1") as server:
        assert server.address[0] == "::1"
        for tcp in (False, True):
            response = await ask(server, "mx1.example.test", "A", tcp=tcp)
            assert answer_texts(response) == ["mx1.example.test. 300 IN A 127.0.0.10"]


@pytest.mark.parametrize(
    "zones",
    [
        [
            ZoneSpec(
                "example.test",
                records=(RecordSpec("www", "CNAME", "a"), RecordSpec("www", "A", "127.0.0.1")),
            )
        ],
        [ZoneSpec("example.test", records=(RecordSpec("x.other.test.", "A", "127.0.0.1"),))],
        [ZoneSpec("example.test", records=(RecordSpec("@", "MX", "not-a-number mx"),))],
        [ZoneSpec("example.test", records=(RecordSpec("@", "A", "127.0.0.1", ttl=-1),))],
        [ZoneSpec("example.test"), ZoneSpec("EXAMPLE.test.")],
        [ZoneSpec("example.test", faults={"x": "explode"})],  # type: ignore[dict-item]
    ],
    ids=[
        "cname-and-other-data",
        "outside-origin",
        "bad-rdata",
        "negative-ttl",
        "twice",
        "bad-fault",
    ],
)
def test_bad_zone_data_is_rejected(zones: list[ZoneSpec]) -> None:
    with pytest.raises(ValueError, match=r"(?i)example\.test"):
        DnsServer(zones)


def test_binds_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        DnsServer(ZONES, host="0.0.0.0")


async def test_other_classes_are_refused(server: DnsServer) -> None:
    query = dns.message.make_query("example.test", "MX", rdclass=dns.rdataclass.CH)
    host, port = server.address
    response = await dns.asyncquery.udp(query, host, 2.0, port)
    assert response.rcode() == dns.rcode.REFUSED
