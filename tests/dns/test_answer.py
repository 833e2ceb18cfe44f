"""The pure core: DNS responses -> DnsResult, as a table of hand-built messages."""

from __future__ import annotations

from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from delivery.dns import answer
from delivery.dns.result import Lookup, MxRecord, TlsaRecord

SERVER = "127.0.0.1:53 over udp"


def rr(line: str) -> dns.rrset.RRset:
    name, ttl, rdclass, rdtype, rdata = line.split(maxsplit=4)
    return dns.rrset.from_text(name, int(ttl), rdclass, rdtype, rdata)


def response(
    qname: str,
    rtype: str,
    *,
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    answer_rrs: tuple[str, ...] = (),
    authority_rrs: tuple[str, ...] = (),
    flags: int = 0,
) -> dns.message.Message:
    """A response as it arrives: rendered and parsed back, so RRsets merge as on the wire."""
    reply = dns.message.make_response(dns.message.make_query(qname, rtype))
    reply.set_rcode(rcode)
    reply.flags |= flags
    reply.answer = [rr(line) for line in answer_rrs]
    reply.authority = [rr(line) for line in authority_rrs]
    return dns.message.from_wire(reply.to_wire())


SOA = "example.test. 3600 IN SOA ns.example.test. h.example.test. 1 2 3 4 60"


@dataclass(frozen=True)
class Case:
    """One response (qname, rtype, rcode, sections, flags) and the result it must give."""

    label: str
    qname: str
    rtype: str
    status: Lookup
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR
    answer_rrs: tuple[str, ...] = ()
    authority_rrs: tuple[str, ...] = ()
    flags: int = 0
    trust_ad: bool = True
    records: tuple[str, ...] = ()
    secure: bool = False
    ttl: int = 0
    canonical: str = ""
    chain: tuple[str, ...] = ()
    detail: str = ""


LOOP = tuple(f"c{i}.example.test. 300 IN CNAME c{i + 1}.example.test." for i in range(17))

CASES = [
    Case(
        "answer, AD trusted",
        "mx1.example.test.",
        "A",
        Lookup.ANSWER,
        answer_rrs=("mx1.example.test. 300 IN A 192.0.2.1",),
        flags=dns.flags.AD,
        records=("192.0.2.1",),
        secure=True,
        ttl=300,
        canonical="mx1.example.test.",
        detail="1 A for mx1.example.test., secure",
    ),
    Case(
        "AD ignored without trust",
        "mx1.example.test.",
        "A",
        Lookup.ANSWER,
        answer_rrs=("mx1.example.test. 300 IN A 192.0.2.1",),
        flags=dns.flags.AD,
        trust_ad=False,
        records=("192.0.2.1",),
        ttl=300,
        canonical="mx1.example.test.",
    ),
    Case(
        "CNAME chain: lowest TTL, original and final names",
        "Alias.Example.TEST.",
        "A",
        Lookup.ANSWER,
        answer_rrs=(
            "alias.example.test. 100 IN CNAME www.example.test.",
            "www.example.test. 50 IN CNAME mx1.example.test.",
            "mx1.example.test. 300 IN A 192.0.2.1",
        ),
        flags=dns.flags.AD,
        records=("192.0.2.1",),
        secure=True,
        ttl=50,
        canonical="mx1.example.test.",
        chain=("alias.example.test.", "www.example.test."),
        detail="(alias of alias.example.test.)",
    ),
    Case(
        "CNAME asked for itself",
        "www.example.test.",
        "CNAME",
        Lookup.ANSWER,
        answer_rrs=("www.example.test. 100 IN CNAME mx1.example.test.",),
        records=("mx1.example.test.",),
        ttl=100,
        canonical="www.example.test.",
    ),
    Case(
        "NXDOMAIN: TTL is min(SOA TTL, minimum)",
        "nope.example.test.",
        "MX",
        Lookup.NXDOMAIN,
        rcode=dns.rcode.NXDOMAIN,
        authority_rrs=(SOA,),
        flags=dns.flags.AD,
        secure=True,
        ttl=60,
        canonical="nope.example.test.",
        detail="NXDOMAIN nope.example.test.",
    ),
    Case(
        "NODATA with a short SOA TTL",
        "mx1.example.test.",
        "TLSA",
        Lookup.NODATA,
        authority_rrs=("example.test. 30 IN SOA ns.example.test. h.example.test. 1 2 3 4 300",),
        ttl=30,
        canonical="mx1.example.test.",
        detail="no TLSA for mx1.example.test. (NODATA), insecure",
    ),
    Case(
        "NODATA without SOA is not cacheable",
        "mx1.example.test.",
        "TLSA",
        Lookup.NODATA,
        canonical="mx1.example.test.",
    ),
    Case(
        "NXDOMAIN at the end of a chain is for the final name (RFC 6604)",
        "alias.example.test.",
        "A",
        Lookup.NXDOMAIN,
        rcode=dns.rcode.NXDOMAIN,
        answer_rrs=("alias.example.test. 20 IN CNAME gone.example.test.",),
        authority_rrs=(SOA,),
        ttl=20,
        canonical="gone.example.test.",
        chain=("alias.example.test.",),
    ),
    Case(
        "unrelated records are ignored",
        "mx1.example.test.",
        "A",
        Lookup.NODATA,
        answer_rrs=("evil.example.test. 300 IN A 192.0.2.66",),
        authority_rrs=(SOA,),
        ttl=60,
        canonical="mx1.example.test.",
    ),
    Case(
        "SERVFAIL",
        "bogus.test.",
        "MX",
        Lookup.TEMPFAIL,
        rcode=dns.rcode.SERVFAIL,
        flags=dns.flags.AD,
        canonical="bogus.test.",
        detail="127.0.0.1:53 over udp: SERVFAIL",
    ),
    Case(
        "REFUSED",
        "example.com.",
        "MX",
        Lookup.TEMPFAIL,
        rcode=dns.rcode.REFUSED,
        canonical="example.com.",
        detail="REFUSED",
    ),
    Case(
        "truncated even over TCP",
        "big.example.test.",
        "TXT",
        Lookup.TEMPFAIL,
        flags=dns.flags.TC,
        canonical="big.example.test.",
        detail="truncated",
    ),
    Case(
        "CNAME loop",
        "a.example.test.",
        "A",
        Lookup.TEMPFAIL,
        answer_rrs=(
            "a.example.test. 300 IN CNAME b.example.test.",
            "b.example.test. 300 IN CNAME a.example.test.",
        ),
        canonical="a.example.test.",
        detail="CNAME loop",
    ),
    Case(
        "CNAME chain too long",
        "c0.example.test.",
        "A",
        Lookup.TEMPFAIL,
        answer_rrs=LOOP,
        canonical="c0.example.test.",
        detail="longer than 16",
    ),
    Case(
        "records with NXDOMAIN",
        "mx1.example.test.",
        "A",
        Lookup.TEMPFAIL,
        rcode=dns.rcode.NXDOMAIN,
        answer_rrs=("mx1.example.test. 300 IN A 192.0.2.1",),
        canonical="mx1.example.test.",
        detail="NXDOMAIN with records",
    ),
    Case(
        "referral from a non-recursive server",
        "mx1.example.test.",
        "A",
        Lookup.TEMPFAIL,
        authority_rrs=("example.test. 300 IN NS ns.example.test.",),
        canonical="mx1.example.test.",
        detail="not a recursive resolver",
    ),
]


@pytest.mark.parametrize("c", CASES, ids=[c.label for c in CASES])
def test_classify(c: Case) -> None:
    message = response(
        c.qname,
        c.rtype,
        rcode=c.rcode,
        answer_rrs=c.answer_rrs,
        authority_rrs=c.authority_rrs,
        flags=c.flags,
    )
    result = answer.classify(
        message,
        dns.name.from_text(c.qname),
        dns.rdatatype.from_text(c.rtype),
        trust_ad=c.trust_ad,
        server=SERVER,
    )
    assert result.status is c.status
    assert tuple(sorted(r.to_text() for r in result.records)) == c.records
    assert (result.secure, result.ttl) == (c.secure, c.ttl)
    assert (result.canonical_name, result.cname_chain) == (c.canonical, c.chain)
    assert c.detail in result.detail and result.detail.startswith(SERVER)


def rdata(rtype: str, text: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text)


@pytest.mark.parametrize(
    ("convert", "rtype", "text", "expected"),
    [
        (answer.to_mx, "MX", "10 MX1.Example.TEST.", MxRecord(10, "mx1.example.test.")),
        (answer.to_mx, "MX", "0 .", MxRecord(0, ".")),
        (answer.to_address, "A", "192.0.2.1", "192.0.2.1"),
        (answer.to_address, "AAAA", "2001:DB8:0::1", "2001:db8::1"),
        (answer.to_txt, "TXT", '"v=STSv1; " "id=1"', "v=STSv1; id=1"),
        (answer.to_txt, "TXT", '"bad \\255 byte"', "bad \ufffd byte"),
        (answer.to_tlsa, "TLSA", "3 1 1 " + "ab" * 32, TlsaRecord(3, 1, 1, b"\xab" * 32)),
        (answer.to_rdata_text, "MX", "10 mx1.example.test.", "10 mx1.example.test."),
    ],
)
def test_record_conversions(convert: object, rtype: str, text: str, expected: object) -> None:
    assert callable(convert)
    assert convert(rdata(rtype, text)) == expected
