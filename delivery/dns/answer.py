"""Turn one DNS response into a DnsResult (pure core: no I/O, no clock).

The resolver shell sends the query and hands the response here; everything
that decides what the response means lives in `classify`, tested with tables
of hand-built messages.

Outcomes (see delivery.dns.result.Lookup):
    ANSWER     NOERROR and, after following the CNAME chain from the queried
               name, an RRset of the asked type
    NODATA     NOERROR without it; TTL from the SOA in the authority section
    NXDOMAIN   rcode NXDOMAIN, for the last name of the chain (RFC 6604 §2)
    TEMPFAIL   any other rcode (SERVFAIL, REFUSED, ...), TC over TCP, a CNAME
               loop or over-long chain, records with NXDOMAIN, or a referral
               from a server that does not recurse

Security:
    The response is attacker-influenced. Only RRsets on the chain from the
    queried name count; anything else in the message is ignored. `secure`
    is the AD bit and only when the operator trusts the resolver (RFC 6840
    §5.7, RFC 4035 §3.2.3); the AD bit covers the whole answer, chain included.

Standards: RFC 1034 §3.6.2 and §4.3.2 (CNAME), RFC 2308 (negative caching),
RFC 6604 (rcode with CNAME chains), RFC 6840 §5.7-5.8 (AD).
Limits: MAX_CNAME_CHAIN hops.
"""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TLSA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rrset

from delivery.dns.result import DnsResult, Lookup, MxRecord, TlsaRecord

__all__ = [
    "MAX_CNAME_CHAIN",
    "MAX_TTL_S",
    "classify",
    "tempfail",
    "to_address",
    "to_mx",
    "to_rdata_text",
    "to_tlsa",
    "to_txt",
]

MAX_CNAME_CHAIN = 16
"""Aliases followed in one answer; longer chains are misconfigured or hostile, and
common resolvers give up after 8-16 hops."""

MAX_TTL_S = 0x7FFFFFFF
"""The largest TTL a record can carry (RFC 2181 §8)."""

_RCODE_MEANING = {
    dns.rcode.SERVFAIL: "the resolver could not get a (validated) answer",
    dns.rcode.REFUSED: "the resolver refused to answer",
    dns.rcode.FORMERR: "the resolver could not parse our query",
    dns.rcode.NOTIMP: "the resolver does not implement this query",
}

Rdata = dns.rdata.Rdata


def tempfail(name: str, detail: str, /) -> DnsResult[Rdata]:
    """A TEMPFAIL result for `name` (normalised) saying why in `detail`."""
    return DnsResult(Lookup.TEMPFAIL, (), False, 0, name, (), detail)


def classify(
    response: dns.message.Message,
    qname: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    /,
    *,
    trust_ad: bool,
    server: str,
) -> DnsResult[Rdata]:
    """Classify the response to the question (`qname`, `rdtype`, IN).

    :param response: a response whose question matches (the transport checked it).
    :param trust_ad: take the AD bit as "validated" (`[dns] dnssec = "trust-ad"`).
    :param server: who answered, e.g. "127.0.0.1:53 over udp", quoted in `detail`.
    :returns: a DnsResult of raw rdata; never raises on any message content.
    """
    asked = qname.to_text().lower()
    type_text = dns.rdatatype.to_text(rdtype)
    rcode = response.rcode()
    if response.flags & dns.flags.TC:
        return tempfail(asked, f"{server}: answer truncated even over TCP")
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        meaning = _RCODE_MEANING.get(rcode, "unexpected response code")
        return tempfail(asked, f"{server}: {dns.rcode.to_text(rcode)} ({meaning})")

    chain: list[dns.name.Name] = []
    ttl = MAX_TTL_S
    name = qname
    while (rrset := _find(response, name, rdtype)) is None and rdtype != dns.rdatatype.CNAME:
        cname = _find(response, name, dns.rdatatype.CNAME)
        if cname is None:
            break
        if len(chain) == MAX_CNAME_CHAIN:
            return tempfail(asked, f"{server}: CNAME chain longer than {MAX_CNAME_CHAIN}")
        target = cname[0]  # CNAME is a singleton type: dnspython keeps one per name
        assert isinstance(target, dns.rdtypes.ANY.CNAME.CNAME)
        chain.append(name)
        ttl = min(ttl, cname.ttl)
        name = target.target
        if name in chain:
            return tempfail(asked, f"{server}: CNAME loop at {name}")

    secure = trust_ad and bool(response.flags & dns.flags.AD)
    aliases = tuple(alias.to_text().lower() for alias in chain)
    canonical = name.to_text().lower()
    via = f" (alias of {asked})" if chain else ""
    validated = "secure" if secure else "insecure"
    if rrset is not None:
        if rcode == dns.rcode.NXDOMAIN:
            return tempfail(asked, f"{server}: malformed answer: NXDOMAIN with records")
        ttl = min(ttl, rrset.ttl)
        detail = f"{server}: {len(rrset)} {type_text} for {canonical}{via}, {validated}"
        return DnsResult(Lookup.ANSWER, tuple(rrset), secure, ttl, canonical, aliases, detail)

    negative_ttl = _negative_ttl(response, name)
    if negative_ttl is None and any(r.rdtype == dns.rdatatype.NS for r in response.authority):
        # A referral instead of an answer: the server is authoritative-only, and its
        # "no answer" would read as NODATA for every name.
        return tempfail(asked, f"{server}: referral instead of an answer: not a recursive resolver")
    # RFC 2308 §5: a negative answer without an SOA is not cached (TTL 0).
    ttl = 0 if negative_ttl is None else min(ttl, negative_ttl)
    if rcode == dns.rcode.NXDOMAIN:
        detail = f"{server}: NXDOMAIN {canonical}{via}, {validated}"
        return DnsResult(Lookup.NXDOMAIN, (), secure, ttl, canonical, aliases, detail)
    detail = f"{server}: no {type_text} for {canonical}{via} (NODATA), {validated}"
    return DnsResult(Lookup.NODATA, (), secure, ttl, canonical, aliases, detail)


def _find(
    response: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.rrset.RRset | None:
    return response.get_rrset(dns.message.ANSWER, name, dns.rdataclass.IN, rdtype)


def _negative_ttl(response: dns.message.Message, name: dns.name.Name) -> int | None:
    """min(SOA TTL, SOA minimum) of the SOA for `name`'s zone (RFC 2308 §5), or None."""
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
            soa = rrset[0]
            assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
            return min(rrset.ttl, soa.minimum)
    return None


def to_mx(rdata: Rdata, /) -> MxRecord:
    """MX rdata -> MxRecord, the exchange absolute and lowercase ("." for null MX)."""
    assert isinstance(rdata, dns.rdtypes.ANY.MX.MX)
    return MxRecord(rdata.preference, rdata.exchange.to_text().lower())


def to_address(rdata: Rdata, /) -> str:
    """A or AAAA rdata -> the address text ("192.0.2.1", "2001:db8::1")."""
    assert isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA)
    return str(rdata.address)


def to_txt(rdata: Rdata, /) -> str:
    """TXT rdata -> its strings joined (RFC 7208 §3.3, RFC 8461 §3.1).

    Bytes that are not UTF-8 become U+FFFD, so a parser downstream rejects the record
    rather than this function raising.
    """
    assert isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
    return b"".join(rdata.strings).decode("utf-8", errors="replace")


def to_tlsa(rdata: Rdata, /) -> TlsaRecord:
    """TLSA rdata -> TlsaRecord."""
    assert isinstance(rdata, dns.rdtypes.ANY.TLSA.TLSA)
    return TlsaRecord(rdata.usage, rdata.selector, rdata.mtype, rdata.cert)


def to_rdata_text(rdata: Rdata, /) -> str:
    """Any rdata -> its zone-file text, names absolute ("10 mx1.example.test.")."""
    return rdata.to_text()
