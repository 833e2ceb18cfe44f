"""Harness DNS server: a validating recursive resolver in front of scenario zones.

Serves the zones of a scenario over UDP and TCP on one loopback address and
port, answering the way the engine's configured resolver would: RA set, CNAME
chains followed across the served zones and included in the answer, an SOA in
the authority section of negative answers, the AD bit for secure zones and
SERVFAIL for bogus ones. Nothing is ever forwarded.

Outcomes (per query):
    NOERROR + answer   the name (after CNAMEs) has records of the type
    NOERROR, empty     NODATA: the name exists with other types only, or is an
                       empty non-terminal; SOA in the authority section
    NXDOMAIN           the name does not exist in its zone, or an `nxdomain`
                       fault; SOA in the authority section
    SERVFAIL           a `bogus` zone on the path (unless the query sets CD), a
                       `servfail` fault, a CNAME loop, a chain longer than
                       MAX_CNAME_CHAIN, or a chain leaving the served zones
    REFUSED            the name is outside every served zone, or class is not IN
    NOTIMP             opcode other than QUERY, or a meta type (ANY, AXFR, ...)
    FORMERR            a query without exactly one question
    no answer at all   a `timeout` fault; garbage packets; DNS responses

    AD is set when every zone the answer touched is `secure` and the query set
    DO or AD (RFC 6840 §5.8). UDP answers larger than the client's payload size
    (512 bytes without EDNS) go out empty with TC set (RFC 1035 §4.2.1), so the
    client retries over TCP. TTLs are served as written; the negative TTL is
    min(SOA TTL, SOA minimum) (RFC 2308 §5). `queries` logs every well-formed
    query in arrival order as (lowercase absolute name, type mnemonic), e.g.
    ("_25._tcp.mx1.example.test.", "TLSA"), faulted and refused ones included.

Security:
    Test equipment: binds loopback addresses only and never forwards a query.
    Packets are untrusted; any that fail to parse are dropped and the server
    keeps serving.

Standards: RFC 1034, RFC 1035, RFC 2308, RFC 4035 §3.2, RFC 6840 §5.7-5.8.
Limits: no wildcards, DNAME or delegations (a zone whose origin lies inside
another zone simply takes over its names); no RRSIG/NSEC records (DNSSEC status
is reported through AD and SERVFAIL only, as a validating resolver does); zone
data must be valid for dnspython, so malformed records (e.g. a TLSA hash of the
wrong length) cannot be served.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, cast, get_args

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rrset
import dns.tokenizer

__all__ = [
    "DnsServer",
    "Dnssec",
    "Fault",
    "RecordSpec",
    "ZoneSpec",
]

log = logging.getLogger("delivery.harness.dns")

Dnssec = Literal["secure", "insecure", "bogus"]
Fault = Literal["servfail", "timeout", "nxdomain"]

MAX_CNAME_CHAIN = 16
"""CNAME hops followed before answering SERVFAIL: real resolvers give up after 8-16."""

EDNS_PAYLOAD_BYTES = 1232
"""UDP payload size we advertise: the DNS Flag Day 2020 value, safe from fragmentation."""

UDP_PAYLOAD_WITHOUT_EDNS_BYTES = 512
"""Largest UDP answer a client without EDNS accepts (RFC 1035 §4.2.1)."""

TCP_MAX_MESSAGE_BYTES = 65535
"""A TCP DNS message carries a 16-bit length prefix (RFC 1035 §4.2.2)."""

TCP_IDLE_TIMEOUT_S = 10.0
"""An idle TCP client is dropped after this long, so a stuck test cannot pin a task."""

TXT_STRING_MAX_BYTES = 255
"""One TXT character-string holds at most 255 bytes (RFC 1035 §3.3.14)."""

BIND_ATTEMPTS = 8
"""With port 0, tries to find a port free for both UDP and TCP before giving up."""

SYNTH_SOA_TTL_S = 3600
SYNTH_SOA_MINIMUM_S = 300
"""The synthesized SOA's TTL and minimum: negative answers live 300 s unless the zone
gives its own SOA record at "@"."""


@dataclass(frozen=True)
class RecordSpec:
    """One resource record, as in a zone file.

    :param name: owner, relative to the zone origin, absolute (trailing dot), or "@".
    :param rtype: type mnemonic, e.g. "MX", "TLSA".
    :param value: zone-file rdata text ("10 mx1.example.test.", "0 ." for a null MX,
        "3 1 1 <hex>"); a TXT value is either quoted strings or bare text taken as one
        string, split into 255-byte strings when longer.
    :param ttl: seconds, served as written.
    """

    name: str
    rtype: str
    value: str
    ttl: int = 300


@dataclass(frozen=True)
class ZoneSpec:
    """One served zone: its records, its DNSSEC status and per-name faults.

    :param origin: the zone apex, e.g. "example.test".
    :param dnssec: "secure" (AD set), "insecure" (no AD) or "bogus" (SERVFAIL).
    :param records: the zone's records; an SOA at "@" is synthesized when missing.
    :param faults: owner name (relative, absolute or "@") -> fault served for every
        query reaching that name, directly or through a CNAME.
    """

    origin: str
    dnssec: Dnssec = "insecure"
    records: tuple[RecordSpec, ...] = ()
    faults: Mapping[str, Fault] = field(default_factory=dict)


# --- pure core: zone compilation ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Zone:
    origin: dns.name.Name
    dnssec: Dnssec
    nodes: Mapping[dns.name.Name, Mapping[dns.rdatatype.RdataType, dns.rrset.RRset]]
    existing: frozenset[dns.name.Name]  # owners and their ancestors: empty non-terminals
    faults: Mapping[dns.name.Name, Fault]
    negative_soa: dns.rrset.RRset  # the SOA for authority sections, TTL already lowered


_Zones = Mapping[dns.name.Name, _Zone]


def _owner(origin: dns.name.Name, text: str) -> dns.name.Name:
    name = origin if text == "@" else dns.name.from_text(text, origin=origin)
    if not name.is_subdomain(origin):
        raise ValueError(f"{text!r} is outside zone {origin}")
    return name


def _txt_rdata(value: str) -> dns.rdata.Rdata:
    """TXT rdata from quoted strings or bare text, long strings split at 255 bytes."""
    if value.lstrip().startswith('"'):
        tokens = dns.tokenizer.Tokenizer(value).get_remaining()
        strings = [token.unescape_to_bytes().value for token in tokens]
    else:
        strings = [value.encode()]
    if not strings:
        raise ValueError("TXT needs at least one string")
    chunks = [
        s[i : i + TXT_STRING_MAX_BYTES]
        for s in strings
        for i in range(0, max(len(s), 1), TXT_STRING_MAX_BYTES)
    ]
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)


def _rdata(origin: dns.name.Name, spec: RecordSpec) -> dns.rdata.Rdata:
    rdtype = dns.rdatatype.from_text(spec.rtype)
    if rdtype == dns.rdatatype.TXT:
        return _txt_rdata(spec.value)
    return dns.rdata.from_text(
        dns.rdataclass.IN, rdtype, spec.value, origin=origin, relativize=False
    )


def _synthesized_soa(origin: dns.name.Name) -> dns.rrset.RRset:
    text = f"ns.{origin} hostmaster.{origin} 1 3600 600 86400 {SYNTH_SOA_MINIMUM_S}"
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA, text)
    return dns.rrset.from_rdata(origin, SYNTH_SOA_TTL_S, rdata)


def _compile_zone(spec: ZoneSpec) -> _Zone:
    """Index one zone; raises ValueError naming the zone and the bad record."""
    if spec.dnssec not in get_args(Dnssec):
        raise ValueError(f"zone {spec.origin}: dnssec must be one of {get_args(Dnssec)}")
    origin = dns.name.from_text(spec.origin)
    nodes: dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rrset.RRset]] = {}
    for record in spec.records:
        try:
            if not 0 <= record.ttl <= 0x7FFFFFFF:
                raise ValueError("ttl must be 0..2147483647 (RFC 2181 §8)")
            owner = _owner(origin, record.name)
            rdata = _rdata(origin, record)
        except (ValueError, dns.exception.DNSException) as exc:
            raise ValueError(f"zone {origin}: bad record {record}: {exc}") from exc
        node = nodes.setdefault(owner, {})
        rrset = node.setdefault(rdata.rdtype, dns.rrset.RRset(owner, rdata.rdclass, rdata.rdtype))
        rrset.add(rdata, record.ttl)  # mixed TTLs in one RRset: the lowest wins, as resolvers do
    for owner, node in nodes.items():
        cname = node.get(dns.rdatatype.CNAME)
        if cname is not None and (len(cname) > 1 or len(node) > 1 or owner == origin):
            raise ValueError(
                f"zone {origin}: CNAME at {owner} must be the only record there, "
                "and not at the origin (RFC 1034 §3.6.2)"
            )
    apex = nodes.setdefault(origin, {})
    soa_rrset = apex.setdefault(dns.rdatatype.SOA, _synthesized_soa(origin))
    soa = soa_rrset[0]
    assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
    negative_soa = dns.rrset.from_rdata(origin, min(soa_rrset.ttl, soa.minimum), soa)
    existing: set[dns.name.Name] = {origin}
    for owner in nodes:
        while owner != origin:
            existing.add(owner)
            owner = owner.parent()
    faults: dict[dns.name.Name, Fault] = {}
    for text, fault in spec.faults.items():
        if fault not in get_args(Fault):
            raise ValueError(f"zone {origin}: fault for {text!r} must be one of {get_args(Fault)}")
        try:
            faults[_owner(origin, text)] = fault
        except (ValueError, dns.exception.DNSException) as exc:
            raise ValueError(f"zone {origin}: bad fault name {text!r}: {exc}") from exc
    return _Zone(origin, spec.dnssec, nodes, frozenset(existing), faults, negative_soa)


def _compile(zones: Sequence[ZoneSpec]) -> _Zones:
    compiled: dict[dns.name.Name, _Zone] = {}
    for spec in zones:
        zone = _compile_zone(spec)
        if zone.origin in compiled:
            raise ValueError(f"zone {zone.origin} is given twice")
        compiled[zone.origin] = zone
    return compiled


def _find_zone(zones: _Zones, name: dns.name.Name) -> _Zone | None:
    """The zone with the longest origin containing `name`, or None."""
    while True:
        zone = zones.get(name)
        if zone is not None or name == dns.name.root:
            return zone
        name = name.parent()


# --- pure core: resolution -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Resolution:
    rcode: dns.rcode.Rcode
    answer: tuple[dns.rrset.RRset, ...] = ()
    authority: tuple[dns.rrset.RRset, ...] = ()
    secure: bool = False


def _resolve(
    zones: _Zones,
    qname: dns.name.Name,
    qtype: dns.rdatatype.RdataType,
    *,
    checking_disabled: bool,
) -> _Resolution | None:
    """Answer one question as a validating recursive resolver; None means stay silent."""
    chain: list[dns.rrset.RRset] = []
    all_secure = True
    name = qname
    for _ in range(MAX_CNAME_CHAIN + 1):
        zone = _find_zone(zones, name)
        if zone is None:
            # First hop: not ours, refuse (we never forward). Later hop: the chain leaves
            # the served zones and a resolver that cannot follow it fails the lookup.
            return _Resolution(dns.rcode.SERVFAIL if chain else dns.rcode.REFUSED)
        fault = zone.faults.get(name)
        if fault == "timeout":
            return None
        if fault == "servfail" or (zone.dnssec == "bogus" and not checking_disabled):
            return _Resolution(dns.rcode.SERVFAIL)
        all_secure = all_secure and zone.dnssec == "secure"
        if fault == "nxdomain":
            return _Resolution(dns.rcode.NXDOMAIN, tuple(chain), (zone.negative_soa,), all_secure)
        node = zone.nodes.get(name, {})
        if qtype in node:
            return _Resolution(dns.rcode.NOERROR, (*chain, node[qtype]), (), all_secure)
        cname = node.get(dns.rdatatype.CNAME)
        if cname is None:
            # NODATA for names with other types and for empty non-terminals (RFC 8020)
            rcode = dns.rcode.NOERROR if name in zone.existing else dns.rcode.NXDOMAIN
            return _Resolution(rcode, tuple(chain), (zone.negative_soa,), all_secure)
        chain.append(cname)
        target = cname[0]
        assert isinstance(target, dns.rdtypes.ANY.CNAME.CNAME)
        if any(rrset.name == target.target for rrset in chain):
            return _Resolution(dns.rcode.SERVFAIL)  # CNAME loop
        name = target.target
    return _Resolution(dns.rcode.SERVFAIL)  # chain longer than MAX_CNAME_CHAIN


@dataclass(frozen=True, slots=True)
class _Exchange:
    question: tuple[str, str] | None  # for the query log; None for garbage
    reply: bytes | None  # None: send nothing


def _respond(zones: _Zones, wire: bytes, *, tcp: bool) -> _Exchange:
    """Turn one query packet into one answer packet (or silence)."""
    try:
        query = dns.message.from_wire(wire)
    except Exception:  # any garbage packet: dnspython may raise beyond DNSException here
        log.debug("dropped %d-byte packet that does not parse as DNS", len(wire))
        return _Exchange(None, None)
    if query.flags & dns.flags.QR:
        return _Exchange(None, None)
    response = dns.message.make_response(
        query, recursion_available=True, our_payload=EDNS_PAYLOAD_BYTES
    )
    if query.edns >= 0 and query.ednsflags & dns.flags.DO:
        response.want_dnssec(True)  # echo DO (RFC 3225 §3)
    if query.opcode() != dns.opcode.QUERY:
        return _Exchange(None, _render(query, response, dns.rcode.NOTIMP, tcp=tcp))
    if len(query.question) != 1:
        return _Exchange(None, _render(query, response, dns.rcode.FORMERR, tcp=tcp))
    question = query.question[0]
    logged = (question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype))
    if question.rdclass != dns.rdataclass.IN:
        return _Exchange(logged, _render(query, response, dns.rcode.REFUSED, tcp=tcp))
    if dns.rdatatype.is_metatype(question.rdtype):
        return _Exchange(logged, _render(query, response, dns.rcode.NOTIMP, tcp=tcp))
    resolution = _resolve(
        zones,
        question.name,
        question.rdtype,
        checking_disabled=bool(query.flags & dns.flags.CD),
    )
    if resolution is None:
        return _Exchange(logged, None)
    response.answer = list(resolution.answer)
    response.authority = list(resolution.authority)
    if resolution.secure and (query.flags & dns.flags.AD or query.ednsflags & dns.flags.DO):
        response.flags |= dns.flags.AD
    return _Exchange(logged, _render(query, response, resolution.rcode, tcp=tcp))


def _render(
    query: dns.message.Message,
    response: dns.message.Message,
    rcode: dns.rcode.Rcode,
    *,
    tcp: bool,
) -> bytes:
    response.set_rcode(rcode)
    if tcp:
        limit = TCP_MAX_MESSAGE_BYTES
    elif query.edns >= 0:
        limit = max(query.payload, UDP_PAYLOAD_WITHOUT_EDNS_BYTES)
    else:
        limit = UDP_PAYLOAD_WITHOUT_EDNS_BYTES
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        # Send no partial RRsets: an empty answer with TC makes the client ask over TCP.
        response.answer, response.authority, response.additional = [], [], []
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit)


# --- async shell ----------------------------------------------------------------------------


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's UDP transport does not subclass DatagramTransport in 3.11.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = self._server._exchange(data, tcp=False)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for clients that went away: keep serving the others.
        log.debug("UDP error ignored: %s", exc)


class DnsServer:
    """The harness resolver on one loopback address: UDP and TCP on the same port.

    Use as ``async with DnsServer(zones) as dns_server:`` or call start()/stop().

    :param zones: the zones to serve (validated now; ValueError names the bad record).
    :param host: a loopback IP address (127.0.0.0/8 or ::1); ValueError otherwise.
    :param port: the port for UDP and TCP; 0 picks one free for both.
    """

    def __init__(
        self, zones: Sequence[ZoneSpec], *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the harness DNS server binds loopback only, not {host}")
        self._zones = _compile(zones)
        self._host, self._port = host, port
        self.queries: list[tuple[str, str]] = []
        self._address: tuple[str, int] | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[object], asyncio.StreamWriter] = {}

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port) while started; RuntimeError otherwise."""
        if self._address is None:
            raise RuntimeError("DnsServer is not started")
        return self._address

    def set_zones(self, zones: Sequence[ZoneSpec]) -> None:
        """Replace every served zone at once; the next query sees the new data."""
        self._zones = _compile(zones)

    async def start(self) -> None:
        """Bind UDP and TCP on the same port and start answering."""
        if self._address is not None:
            raise RuntimeError("DnsServer is already started")
        loop = asyncio.get_running_loop()
        for _ in range(BIND_ATTEMPTS):
            udp, _protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self._host, self._port)
            )
            port: int = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self._host, port)
            except OSError as exc:
                udp.close()
                if self._port != 0 or exc.errno != errno.EADDRINUSE:
                    raise
                continue  # the UDP port is taken for TCP: try another one
            self._udp, self._address = udp, (self._host, port)
            log.debug("harness DNS server on %s port %d", self._host, port)
            return
        raise OSError(errno.EADDRINUSE, f"no port free for both UDP and TCP on {self._host}")

    async def stop(self) -> None:
        """Stop answering, drop TCP clients and release the port."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            # Closing the sockets ends each handler through EOF; cancelling a stream
            # handler task instead makes asyncio log the cancellation as an error.
            for writer in self._connections.values():
                writer.transport.abort()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._tcp.wait_closed()
            self._tcp = None
        self._address = None

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _exchange(self, wire: bytes, *, tcp: bool) -> bytes | None:
        exchange = _respond(self._zones, wire, tcp=tcp)
        if exchange.question is not None:
            self.queries.append(exchange.question)
        return exchange.reply

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT_S):
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    wire = await reader.readexactly(size)
                reply = self._exchange(wire, tcp=True)
                if reply is not None:
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass  # client closed, reset or idled out
        finally:
            del self._connections[task]
            with contextlib.suppress(RuntimeError):  # loop already closing
                writer.close()
