"""DANE policy for one MX host (RFC 7672).

Decides, from the TLSA lookup result and the DNSSEC status of the MX and
address RRsets, whether TLS is required and how the peer is authenticated;
after the handshake, verifies the peer's certificate chain against the usable
TLSA records. Pure: no I/O, no clock, no logging; the caller fetches the DNS
answers (`tlsa_queries` says which, in what order), passes the time, and logs.

Outcomes:
    DaneOutcome.REQUIRED         usable DANE-EE(3) / DANE-TA(2) records
    DaneOutcome.UNAUTHENTICATED  secure RRset with only unusable records
    DaneOutcome.NOT_APPLICABLE   insecure zone, or secure NODATA/NXDOMAIN
    DaneOutcome.TEMPFAIL         SERVFAIL, timeout or bogus: never a downgrade
    DaneOutcome.PERMFAIL         `dane: require` and no usable TLSA records
    verify() returns a DaneVerification: ok with the record that matched and
    why, or a DaneFailure naming what did not hold; it never raises.

Security:
    Input is attacker-influenced DNS data. Malformed records are dropped
    with a warning naming the record; nothing is partially trusted.
    (`DaneDecision.dropped` carries each record and its reason; the caller
    logs them.) The peer's chain is attacker-controlled too: certificates
    that do not parse are classified failures, every signature of a DANE-TA
    path is checked, and the work one chain can cost is capped. A TLSA
    lookup that could not be answered is TEMPFAIL, never "no records".

Standards: RFC 6698, RFC 7671, RFC 7672.
Limits: usages 0/1 are unusable for SMTP (RFC 7672 §3.1.3). TLSA records
    are looked up for the CNAME target first, then the original name, only
    when the address answer, CNAMEs included, is secure (a secure alias to
    an insecure target gets no TLSA lookup). No digest algorithm agility
    (RFC 7671 §9): SHA-256 and SHA-512 records are all tried. DANE-TA
    paths holding name constraints are refused, not evaluated.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, assert_never

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from delivery.dns.result import DnsResult, Lookup, MxRecord, TlsaRecord

__all__ = [
    "MAX_PEER_CERTIFICATES",
    "MAX_SIGNATURE_CHECKS",
    "MAX_USABLE_RECORDS",
    "MIN_RSA_KEY_BITS",
    "TLSA_PREFIX",
    "DaneDecision",
    "DaneFailure",
    "DaneMode",
    "DaneOutcome",
    "DaneVerification",
    "DroppedRecord",
    "MxSecurity",
    "TlsaAnswer",
    "TlsaQuery",
    "classify_records",
    "decide",
    "format_record",
    "is_conclusive",
    "match_record",
    "mx_security",
    "name_matches",
    "tlsa_queries",
    "verify",
]

TLSA_PREFIX = "_25._tcp."
"""Owner prefix of SMTP TLSA records: port 25, TCP (RFC 6698 §3, RFC 7672 §2.2.3)."""

MAX_USABLE_RECORDS = 32
"""Usable records kept per RRset: real ones hold 1-4; bounds the matching work per chain.
Records past the cap are dropped (which can only make verification fail, never pass)."""

MAX_PEER_CERTIFICATES = 10
"""Certificates of the peer's chain looked at, leaf included: longer than any real chain;
bounds parsing and path building on attacker-sent data."""

MAX_SIGNATURE_CHECKS = 64
"""Signature verifications one DANE-TA path search may make: a real chain needs one per
link; a chain crafted to branch at every level gives up here instead of burning CPU."""

MIN_RSA_KEY_BITS = 2048
"""Smallest RSA issuer key whose signatures a DANE-TA path accepts (OpenSSL security level 2):
1024-bit RSA signatures are within reach of a well-funded forger."""

_MAX_DETAIL_CHARS = 80  # of a parser's error text quoted in a reason: logs stay readable
_WEAK_HASHES = (hashes.MD5, hashes.SHA1)  # collisions are practical: certificate forgery

USAGE_NAMES = {0: "PKIX-TA", 1: "PKIX-EE", 2: "DANE-TA", 3: "DANE-EE"}  # RFC 7218 §2.1
_SELECTORS = (0, 1)  # Cert, SPKI (RFC 6698 §2.1.2)
_DIGEST_BYTES = {1: 32, 2: 64}  # SHA2-256, SHA2-512 (RFC 6698 §2.1.3)
_DIGEST_NAMES = {1: "SHA-256", 2: "SHA-512"}

# Extensions a DANE-TA path may mark critical: the ones checked here, plus those whose
# meaning does not change the verdict (policies are not processed, key identifiers only
# help path building). Any other critical extension refuses the certificate (RFC 5280 §4.2).
_UNDERSTOOD_CRITICAL = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
)

DaneMode = Literal["optional", "require", "disable"]
"""The `dane` property of an MtaTlsStrategy."""


class MxSecurity(enum.Enum):
    """Where the host name came from, and whether DNSSEC vouches for it (RFC 7672 §2.2.1)."""

    SECURE = "secure"  # from a DNSSEC-secure MX RRset (or secure next-hop domain)
    INSECURE = "insecure"  # from an MX RRset that is not validated secure
    TRUSTED_RELAY = "trusted-relay"  # a locally configured relay the operator marked trusted


class DaneOutcome(enum.Enum):
    """What DANE requires of one host."""

    REQUIRED = "required"  # TLS, authenticated by the usable records
    UNAUTHENTICATED = "unauthenticated"  # TLS, without authentication
    NOT_APPLICABLE = "not-applicable"  # DANE says nothing; other policies decide
    TEMPFAIL = "tempfail"  # could not find out: skip the host for now
    PERMFAIL = "permfail"  # `dane: require` and this host has no usable TLSA


def mx_security(result: DnsResult[MxRecord], /) -> MxSecurity:
    """mx_security - SECURE for a validated MX answer, INSECURE otherwise.

    A TEMPFAIL MX lookup yields no hosts at all, so it never gets here.
    """
    secure = result.secure and result.status is Lookup.ANSWER
    return MxSecurity.SECURE if secure else MxSecurity.INSECURE


@dataclass(frozen=True, slots=True)
class TlsaQuery:
    """One TLSA lookup to make.

    :param base: the TLSA base domain, absolute and lowercase ("mx1.example.test."): the
        SNI name and the primary reference identifier when its records are used.
    :param qname: the name to ask for TLSA ("_25._tcp.mx1.example.test.").
    """

    base: str
    qname: str


@dataclass(frozen=True, slots=True)
class TlsaAnswer:
    """A TLSA lookup and what the resolver said."""

    query: TlsaQuery
    result: DnsResult[TlsaRecord]


@dataclass(frozen=True, slots=True)
class DroppedRecord:
    """A TLSA record left out of the usable set, and why."""

    record: TlsaRecord
    reason: str

    def describe(self) -> str:
        """describe - one line for logs: the record and the reason.

        >>> DroppedRecord(TlsaRecord(1, 1, 1, bytes(32)), "unusable").describe()[:14]
        'TLSA 1 1 1 000'
        """
        return f"TLSA {format_record(self.record)}: {self.reason}"


@dataclass(frozen=True, slots=True)
class DaneDecision:
    """What DANE requires of one host, and why.

    :param outcome: see `DaneOutcome`.
    :param host: the MX (or relay) host name, absolute and lowercase.
    :param reason: a sentence for `explain`, logs and `last_status`.
    :param base: the TLSA base domain whose records were used (SNI name); None when no
        TLSA answer was used.
    :param records: the usable records, what `verify` takes; empty unless REQUIRED.
    :param dropped: records of the answer left out, each with its reason (log as warnings).
    :param names: reference identifiers for DANE-TA name checks, lowercase, no trailing
        dot: the base domain, the original host name, the recipient domain (RFC 7672 §3.2.2).
    """

    outcome: DaneOutcome
    host: str
    reason: str
    base: str | None = None
    records: tuple[TlsaRecord, ...] = ()
    dropped: tuple[DroppedRecord, ...] = ()
    names: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        """The peer must be authenticated by DANE: `PolicyInputs.dane_usable`."""
        return self.outcome is DaneOutcome.REQUIRED

    @property
    def tls_required(self) -> bool:
        """Clear text is never allowed with this host (usable or only unusable records)."""
        return self.outcome in (DaneOutcome.REQUIRED, DaneOutcome.UNAUTHENTICATED)

    @property
    def sni(self) -> str | None:
        """The TLS SNI HostName to send: the TLSA base domain (RFC 7671 §10.2)."""
        return self.base.rstrip(".") if self.base else None


def format_record(record: TlsaRecord, /) -> str:
    """format_record - a TLSA record in presentation form, long data elided in the middle.

    >>> format_record(TlsaRecord(3, 1, 1, bytes.fromhex("ab12")))
    '3 1 1 ab12'
    >>> format_record(TlsaRecord(2, 0, 0, bytes(100)))
    '2 0 0 0000000000000000...0000000000000000 (100 bytes)'
    """
    data = record.data.hex()
    if len(record.data) > 64:
        data = f"{data[:16]}...{data[-16:]} ({len(record.data)} bytes)"
    return f"{record.usage} {record.selector} {record.mtype} {data}"


def classify_records(
    records: Iterable[TlsaRecord], /
) -> tuple[tuple[TlsaRecord, ...], tuple[DroppedRecord, ...]]:
    """classify_records - split an RRset into usable records and dropped ones with reasons.

    Usable: DANE-TA(2) or DANE-EE(3), selector 0 or 1, matching type 0 (non-empty), 1
    (32 bytes) or 2 (64 bytes); at most MAX_USABLE_RECORDS, duplicates once.

    >>> usable, dropped = classify_records([TlsaRecord(3, 1, 1, bytes(31))])
    >>> usable, dropped[0].reason
    ((), 'SHA-256 association data is 31 bytes, not 32')
    """
    usable: list[TlsaRecord] = []
    dropped: list[DroppedRecord] = []
    for record in records:
        problem = _record_problem(record)
        if problem is None and len(usable) >= MAX_USABLE_RECORDS:
            problem = f"more than {MAX_USABLE_RECORDS} usable records (MAX_USABLE_RECORDS)"
        if problem is not None:
            dropped.append(DroppedRecord(record, problem))
        elif record not in usable:
            usable.append(record)
    return tuple(usable), tuple(dropped)


def _record_problem(record: TlsaRecord) -> str | None:
    if record.usage not in USAGE_NAMES:
        return f"unknown certificate usage {record.usage}"
    if record.selector not in _SELECTORS:
        return f"unknown selector {record.selector}"
    if record.mtype not in (0, *_DIGEST_BYTES):
        return f"unknown matching type {record.mtype}"
    if record.usage in (0, 1):
        return (
            f"usage {record.usage} ({USAGE_NAMES[record.usage]}) is unusable for SMTP "
            "(RFC 7672 §3.1.3)"
        )
    expected = _DIGEST_BYTES.get(record.mtype)
    if expected is not None and len(record.data) != expected:
        name = _DIGEST_NAMES[record.mtype]
        return f"{name} association data is {len(record.data)} bytes, not {expected}"
    if not record.data:
        return "empty association data"
    return None


def is_conclusive(result: DnsResult[TlsaRecord], /) -> bool:
    """is_conclusive - this TLSA result decides; later names in `tlsa_queries` need no lookup.

    Conclusive: a lookup failure (never passed over: RFC 7672 §2.2) and a secure answer
    with records. A negative or insecure answer sends the caller to the next name
    (RFC 7672 §2.2.2).

    >>> is_conclusive(DnsResult(Lookup.NXDOMAIN, (), True, 300, "_25._tcp.a.test.", ()))
    False
    """
    match result.status:
        case Lookup.TEMPFAIL:
            return True
        case Lookup.ANSWER:
            return result.secure and bool(result.records)
        case Lookup.NODATA | Lookup.NXDOMAIN:
            return False
        case _ as unreachable:
            assert_never(unreachable)


def tlsa_queries(
    host: str,
    /,
    *,
    mode: DaneMode,
    mx: MxSecurity,
    address: DnsResult[str],
    validating: bool = True,
) -> tuple[TlsaQuery, ...]:
    """tlsa_queries - the TLSA lookups to make for ``host``, in order; () when DANE cannot apply.

    Ask them in order and stop after the first `is_conclusive` result. For a host whose
    secure address answer came through CNAMEs, the CNAME target comes first, then the
    original name (RFC 7672 §2.2.2, RFC 7671 §7, as Postfix does).

    :param host: the MX host (or relay) name as the MX record or route gave it.
    :param address: the A or AAAA answer for ``host`` the session's address comes from.
    :param validating: the resolver validates DNSSEC (the daemon's start-up probe).
    """
    name = _absolute(host)
    if _gate(name, mode=mode, mx=mx, address=address, validating=validating, domain="") is None:
        return _queries(name, address)
    return ()


def decide(
    host: str,
    /,
    *,
    mode: DaneMode,
    mx: MxSecurity,
    address: DnsResult[str],
    tlsa: Sequence[TlsaAnswer],
    domain: str,
    validating: bool = True,
) -> DaneDecision:
    """decide - what DANE requires of ``host``, from DNS answers already fetched.

    :param host: the MX host (or relay) name.
    :param mode: the TLS strategy's `dane` property.
    :param mx: how the host was found (`mx_security`, or TRUSTED_RELAY).
    :param address: the A or AAAA answer the session's address comes from.
    :param tlsa: the answers to `tlsa_queries`, in any order; answers to other names are
        ignored, and a lookup it needs but was not given counts as a failed one.
    :param domain: the recipient domain (a reference identifier, and for messages).
    :param validating: the resolver validates DNSSEC; False makes DANE unavailable.
    """
    name = _absolute(host)
    gate = _gate(name, mode=mode, mx=mx, address=address, validating=validating, domain=domain)
    if gate is not None:
        return gate
    given = {_absolute(answer.query.qname): answer.result for answer in tlsa}
    passed: list[str] = []
    for query in _queries(name, address):
        result = given.get(query.qname)
        if result is None:
            return DaneDecision(
                DaneOutcome.TEMPFAIL,
                name,
                f"no result for the TLSA lookup of {query.qname}: {name} is skipped for now",
            )
        if is_conclusive(result):
            return _from_answer(name, query, result, mode=mode, domain=domain, passed=passed)
        passed.append(f"{query.qname} {_describe_empty(result)}")
    return _no_dane(name, mode, "no DNSSEC-secure TLSA records (" + "; ".join(passed) + ")")


def _gate(
    host: str,
    *,
    mode: DaneMode,
    mx: MxSecurity,
    address: DnsResult[str],
    validating: bool,
    domain: str,
) -> DaneDecision | None:
    """The decision made before any TLSA lookup, or None when TLSA records must be asked."""
    if mode == "disable":
        return DaneDecision(
            DaneOutcome.NOT_APPLICABLE, host, "DANE disabled by the TLS strategy (dane: disable)"
        )
    if not validating:
        if mode == "require":
            return DaneDecision(
                DaneOutcome.TEMPFAIL,
                host,
                "dane: require, but the resolver does not validate DNSSEC, so whether "
                f"{host} publishes TLSA records cannot be known",
            )
        return DaneDecision(
            DaneOutcome.NOT_APPLICABLE,
            host,
            "DANE unavailable: the configured resolver does not validate DNSSEC",
        )
    if _is_ip_literal(host):
        return _no_dane(host, mode, f"{host} is an IP address, which has no TLSA records")
    match mx:
        case MxSecurity.INSECURE:
            whose = f" of {domain}" if domain else ""
            return _no_dane(
                host, mode, f"the MX RRset{whose} is not DNSSEC-secure (RFC 7672 §2.2.1)"
            )
        case MxSecurity.SECURE | MxSecurity.TRUSTED_RELAY:
            pass
        case _ as unreachable:
            assert_never(unreachable)
    match address.status:
        case Lookup.TEMPFAIL:
            return DaneDecision(
                DaneOutcome.TEMPFAIL,
                host,
                f"the address lookup of {host} failed ({address.detail or 'no detail'}): "
                "its DNSSEC status is unknown, so it is skipped for now",
            )
        case Lookup.NXDOMAIN | Lookup.NODATA:
            return _no_dane(host, mode, f"{host} has no address records")
        case Lookup.ANSWER:
            if not address.secure:
                return _no_dane(
                    host,
                    mode,
                    f"the address records of {host} are not DNSSEC-secure (RFC 7672 §2.2.2)",
                )
            return None
        case _ as unknown_status:
            assert_never(unknown_status)


def _queries(host: str, address: DnsResult[str]) -> tuple[TlsaQuery, ...]:
    final = _absolute(address.canonical_name) if address.canonical_name else host
    if final != host:  # a secure CNAME chain: the target first, then the original name
        return (_query(final), _query(host))
    return (_query(host),)


def _query(base: str) -> TlsaQuery:
    return TlsaQuery(base=base, qname=TLSA_PREFIX + base)


def _from_answer(
    host: str,
    query: TlsaQuery,
    result: DnsResult[TlsaRecord],
    *,
    mode: DaneMode,
    domain: str,
    passed: list[str],
) -> DaneDecision:
    fallback = f" (after {'; '.join(passed)}: RFC 7672 §2.2.2)" if passed else ""
    if result.status is Lookup.TEMPFAIL:
        return DaneDecision(
            DaneOutcome.TEMPFAIL,
            host,
            f"the TLSA lookup of {query.qname} failed ({result.detail or 'no detail'}){fallback}:"
            f" {host} is skipped for now, never downgraded",
        )
    usable, dropped = classify_records(result.records)
    names = _reference_names(query.base, host, domain)
    where = f"{query.qname} (DNSSEC-secure){fallback}"
    dropped_note = f"; {len(dropped)} record(s) dropped" if dropped else ""
    if usable:
        listed = ", ".join(f"{r.usage} {r.selector} {r.mtype}" for r in usable)
        return DaneDecision(
            DaneOutcome.REQUIRED,
            host,
            f"{len(usable)} usable TLSA record(s) [{listed}] at {where}{dropped_note}: "
            f"TLS required, certificate checked by DANE, not PKIX (RFC 7672 §2.2)",
            base=query.base,
            records=usable,
            dropped=dropped,
            names=names,
        )
    why = f"only unusable TLSA records at {where}"
    if mode == "require":
        return DaneDecision(
            DaneOutcome.PERMFAIL,
            host,
            f"dane: require, but {why}: no usable TLSA records",
            base=query.base,
            dropped=dropped,
            names=names,
        )
    return DaneDecision(
        DaneOutcome.UNAUTHENTICATED,
        host,
        f"{why}: TLS required, without authentication (RFC 7672 §2.2)",
        base=query.base,
        dropped=dropped,
        names=names,
    )


def _no_dane(host: str, mode: DaneMode, why: str) -> DaneDecision:
    if mode == "require":
        return DaneDecision(
            DaneOutcome.PERMFAIL, host, f"dane: require, but {why}: no usable TLSA records"
        )
    return DaneDecision(DaneOutcome.NOT_APPLICABLE, host, f"DANE does not apply: {why}")


def _describe_empty(result: DnsResult[TlsaRecord]) -> str:
    security = "secure" if result.secure else "insecure"
    match result.status:
        case Lookup.NXDOMAIN:
            return f"{security} NXDOMAIN"
        case Lookup.NODATA:
            return f"{security} NODATA"
        case Lookup.ANSWER:
            if result.secure:  # a secure answer without records: treated as NODATA
                return "secure empty answer"
            return f"insecure answer with {len(result.records)} record(s), ignored"
        case Lookup.TEMPFAIL:  # conclusive: never described as empty
            return "lookup failed"
        case _ as unreachable:
            assert_never(unreachable)


def _reference_names(base: str, host: str, domain: str) -> tuple[str, ...]:
    names: list[str] = []
    for name in (base, host, domain):
        bare = name.lower().rstrip(".")
        if bare and bare not in names:
            names.append(bare)
    return tuple(names)


def _absolute(name: str) -> str:
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def _is_ip_literal(host: str) -> bool:
    text = host.rstrip(".").strip("[]")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# ---- verification after the handshake ----------------------------------------------------


class DaneFailure(enum.Enum):
    """Why the peer's chain did not satisfy the TLSA records."""

    NO_USABLE_RECORDS = "no-usable-records"  # nothing to verify against
    NO_CERTIFICATE = "no-certificate"  # the peer sent no certificate
    BAD_CERTIFICATE = "bad-certificate"  # the leaf does not parse
    NOT_MATCHED = "not-matched"  # no record matches the leaf or a certificate above it
    UNTRUSTED_CHAIN = "untrusted-chain"  # a DANE-TA path failed: signature, CA flags, ...
    EXPIRED = "expired"  # a DANE-TA path certificate is outside its validity dates
    NAME_MISMATCH = "name-mismatch"  # DANE-TA: the leaf names none of the reference names

    @property
    def result_type(self) -> str:
        """The RFC 8460 §4.3 result type a TLS report records for this failure."""
        match self:
            case DaneFailure.EXPIRED:
                return "certificate-expired"
            case DaneFailure.NAME_MISMATCH:
                return "certificate-host-mismatch"
            case DaneFailure.NOT_MATCHED | DaneFailure.UNTRUSTED_CHAIN:
                return "certificate-not-trusted"
            case (
                DaneFailure.NO_USABLE_RECORDS
                | DaneFailure.NO_CERTIFICATE
                | DaneFailure.BAD_CERTIFICATE
            ):
                return "validation-failure"
            case _ as unreachable:
                assert_never(unreachable)


@dataclass(frozen=True, slots=True)
class DaneVerification:
    """How the peer's chain fared against the TLSA records.

    :param ok: the peer is authenticated.
    :param reason: a sentence naming the record, the certificates and the check.
    :param record: the record that matched; None on failure.
    :param depth: where it matched: 0 the leaf (DANE-EE); >= 1 the trust anchor's place in
        the path built from the leaf (a bare key counts one above the top); None on failure.
    :param failure: what did not hold; None when ok.
    """

    ok: bool
    reason: str
    record: TlsaRecord | None = None
    depth: int | None = None
    failure: DaneFailure | None = None


def match_record(record: TlsaRecord, der: bytes, /) -> bool:
    """match_record - ``der`` (a certificate; or a SubjectPublicKeyInfo) is what ``record`` names.

    Selector 1 takes the certificate's SubjectPublicKeyInfo as encoded in it; DER that is
    not a certificate is then compared as a SubjectPublicKeyInfo itself. Usage is not
    looked at: where a record may match is `verify`'s business.

    >>> match_record(TlsaRecord(3, 0, 0, b"\\x30\\x00"), b"\\x30\\x00")
    True
    """
    if record.selector not in _SELECTORS:
        return False
    if record.selector == 1:
        return _matches(record, _spki(der) or der)
    return _matches(record, der)


def _matches(record: TlsaRecord, selected: bytes) -> bool:
    match record.mtype:
        case 0:
            return selected == record.data
        case 1:
            return hashlib.sha256(selected).digest() == record.data
        case 2:
            return hashlib.sha512(selected).digest() == record.data
        case _:
            return False


def _select(record: TlsaRecord, cert_der: bytes) -> bytes | None:
    """What ``record`` is compared with in the certificate ``cert_der``; None if unreadable."""
    return cert_der if record.selector == 0 else _spki(cert_der)


def verify(
    chain: Sequence[bytes],
    records: Sequence[TlsaRecord],
    *,
    names: Sequence[str],
    now: datetime.datetime,
) -> DaneVerification:
    """verify - authenticate the peer's chain by the TLSA records (RFC 7672 §3).

    Every DANE-EE(3) record is tried against the leaf first: full certificate or
    SubjectPublicKeyInfo; names, dates and everything else ignored (RFC 7672 §3.1.1).
    Then DANE-TA(2): a path is built from the leaf up through the certificates the peer
    sent (and full certificates of "2 0 0" records) to a certificate at depth >= 1 that a
    record matches, or to a "2 1 0" key that signed the top. Every link's signature, every
    path certificate's dates at ``now``, the CA flag, keyCertSign and pathLenConstraint of
    every issuer are checked, then the leaf's names against ``names`` (RFC 7672 §3.2.3).

    :param chain: the DER certificates the peer sent, leaf first (`smtp.tls.peer_chain`).
    :param records: the TLSA records, e.g. `DaneDecision.records`; unusable ones are ignored.
    :param names: reference identifiers for DANE-TA, e.g. `DaneDecision.names`.
    :param now: the time to check validity dates at (naive means UTC).
    :returns: a DaneVerification; never raises on bad certificates or records.
    """
    usable, _ = classify_records(records)
    if not usable:
        return _failed(DaneFailure.NO_USABLE_RECORDS, "no usable TLSA records to verify against")
    if not chain:
        return _failed(DaneFailure.NO_CERTIFICATE, "the peer sent no certificate")
    leaf_der = chain[0]
    end_entity = [r for r in usable if r.usage == 3]
    for record in end_entity:
        selected = _select(record, leaf_der)
        if selected is not None and _matches(record, selected):
            return DaneVerification(
                True,
                f"DANE-EE record {format_record(record)} matches the peer's certificate "
                "(names and dates not checked, RFC 7672 §3.1.1)",
                record=record,
                depth=0,
            )
    leaf = _load(leaf_der, "the peer's certificate")
    if isinstance(leaf, str):
        return _failed(DaneFailure.BAD_CERTIFICATE, leaf)
    ee_note = (
        f"none of the {len(end_entity)} DANE-EE record(s) matches {leaf.label}"
        if end_entity
        else ""
    )
    anchors = [r for r in usable if r.usage == 2]
    if not anchors:
        return _failed(DaneFailure.NOT_MATCHED, ee_note)
    return _verify_anchored(leaf, chain[1:], anchors, names, _utc(now), ee_note)


def _verify_anchored(
    leaf: _Cert,
    sent: Sequence[bytes],
    anchors: list[TlsaRecord],
    names: Sequence[str],
    now: datetime.datetime,
    ee_note: str,
) -> DaneVerification:
    search = _PathSearch(leaf, anchors, now)
    for position, der in enumerate(sent[: MAX_PEER_CERTIFICATES - 1], start=1):
        loaded = _load(der, f"certificate {position} of the peer's chain")
        if isinstance(loaded, str):
            search.notes.append(f"{loaded}: ignored")
        else:
            search.add_candidate(loaded)
    if len(sent) >= MAX_PEER_CERTIFICATES:
        ignored = len(sent) - MAX_PEER_CERTIFICATES + 1
        search.notes.append(f"{ignored} certificate(s) past MAX_PEER_CERTIFICATES ignored")
    for record in anchors:
        if record.mtype != 0:
            continue
        if record.selector == 0:
            loaded = _load(record.data, f"the certificate of TLSA {format_record(record)}")
            if not isinstance(loaded, str):
                search.add_candidate(loaded)
        else:
            key = _load_key(record.data)
            if key is not None:
                search.keys.append((record, key))

    found = search.run()
    notes = "".join(f"; {note}" for note in search.notes)
    prefix = f"{ee_note}; " if ee_note else ""
    if found is None:
        if search.problems:
            failure, text = search.problems[0]
            more = len(search.problems) - 1
            extra = f" (and {more} other problem(s))" if more else ""
            return _failed(failure, f"{prefix}DANE-TA: {text}{extra}{notes}")
        top = search.deepest[-1]
        if _self_issued(top.cert):
            end = f"the path ends at {top.label}, which is self-signed"
        else:
            end = (
                f"the path ends at {top.label}, whose issuer [{_issuer_text(top.cert)}] the "
                "peer did not send (a digest record needs its trust anchor in the chain, "
                "RFC 7671 §5.2.2)"
            )
        return _failed(
            DaneFailure.NOT_MATCHED,
            f"{prefix}DANE-TA: no certificate above {leaf.label} matches a DANE-TA record, "
            f"and no DANE-TA key signed the top of its chain: {end}{notes}",
        )
    record, depth, path = found
    for failure, problem in (
        (DaneFailure.EXPIRED, _dates_problem(leaf, now)),
        (DaneFailure.UNTRUSTED_CHAIN, _extension_problem(leaf)),
        (DaneFailure.UNTRUSTED_CHAIN, _purpose_problem(leaf)),
    ):
        if problem is not None:
            return _failed(failure, f"{prefix}DANE-TA: {problem}{notes}")
    presented = _leaf_names(leaf.cert)
    matched = next(
        (ref for ref in names for pattern in presented if name_matches(pattern, ref)), None
    )
    if matched is None:
        return _failed(
            DaneFailure.NAME_MISMATCH,
            f"{prefix}DANE-TA: the names of {leaf.label} ({', '.join(presented) or 'none'}) "
            f"match none of {', '.join(names) or 'no reference names'} (RFC 7672 §3.2.3)",
        )
    return DaneVerification(
        True,
        f"DANE-TA record {format_record(record)} matches at depth {depth} "
        f"(path: {path}); the leaf's name matches {matched}",
        record=record,
        depth=depth,
    )


def _failed(failure: DaneFailure, reason: str) -> DaneVerification:
    return DaneVerification(False, reason, failure=failure)


@dataclass(frozen=True, slots=True, eq=False)
class _Cert:
    """A parsed certificate and where it came from, for messages."""

    der: bytes
    cert: x509.Certificate
    label: str


def _load(der: bytes, where: str) -> _Cert | str:
    """The parsed certificate, or a sentence saying why it does not parse."""
    try:
        cert = x509.load_der_x509_certificate(der)
        subject = cert.subject.rfc4514_string() or "empty subject"
    except ValueError as exc:
        detail = str(exc)
        if len(detail) > _MAX_DETAIL_CHARS:
            detail = detail[: _MAX_DETAIL_CHARS - 3] + "..."
        return f"{where} does not parse ({detail})"
    return _Cert(der, cert, f"{where} [{subject}]")


def _load_key(spki: bytes) -> PublicKeyTypes | None:
    try:
        return serialization.load_der_public_key(spki)
    except (ValueError, UnsupportedAlgorithm):
        return None


@dataclass(slots=True)
class _PathSearch:
    """Depth-first search for a DANE-TA path from the leaf (RFC 7671 §5.2)."""

    leaf: _Cert
    anchors: list[TlsaRecord]
    now: datetime.datetime
    candidates: list[_Cert] = field(default_factory=list)
    keys: list[tuple[TlsaRecord, PublicKeyTypes]] = field(default_factory=list)
    problems: list[tuple[DaneFailure, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: int = 0
    deepest: list[_Cert] = field(default_factory=list)

    def add_candidate(self, issuer: _Cert) -> None:
        """Offer a certificate as a possible issuer (each distinct one once)."""
        if all(issuer.der != known.der for known in self.candidates):
            self.candidates.append(issuer)

    def run(self) -> tuple[TlsaRecord, int, str] | None:
        """The anchoring record, its depth and the path rendered; None if no path holds."""
        return self._extend([self.leaf])

    def _extend(self, path: list[_Cert]) -> tuple[TlsaRecord, int, str] | None:
        top, depth = path[-1], len(path) - 1
        if len(path) > len(self.deepest):
            self.deepest = path
        if depth >= 1:  # the leaf itself is never a trust anchor (RFC 7672 §3.1.2)
            for record in self.anchors:
                selected = _select(record, top.der)
                if selected is not None and _matches(record, selected):
                    return record, depth, _render(path)
        for issuer in self.candidates:
            if any(issuer.der == member.der for member in path) or (
                issuer.cert.subject != top.cert.issuer
            ):
                continue
            if not self._spend():
                return None
            key = _public_key(issuer.cert)
            problem = (
                f"{issuer.label} has a public key that cannot be loaded"
                if key is None
                else _signature_problem(top.cert, key, issuer.label)
            )
            if problem is not None:
                self.problems.append((DaneFailure.UNTRUSTED_CHAIN, f"{top.label}: {problem}"))
                continue
            failure = _issuer_problem(issuer, path, self.now)
            if failure is not None:
                self.problems.append(failure)
                continue
            found = self._extend([*path, issuer])
            if found is not None:
                return found
        own = _public_key(self.leaf.cert)
        leaf_key = _key_spki(own) if own is not None else None
        for record, key in self.keys:
            if leaf_key is not None and _key_spki(key) == leaf_key:
                continue  # the leaf's own key would anchor it at depth 0: refused
            if not self._spend():
                return None
            label = f"the key of TLSA {format_record(record)}"
            if _signature_problem(top.cert, key, label) is None:
                return record, depth + 1, f"{_render(path)} <- {label}"
        return None

    def _spend(self) -> bool:
        if self.checks >= MAX_SIGNATURE_CHECKS:
            if not any("MAX_SIGNATURE_CHECKS" in text for _, text in self.problems):
                self.problems.append(
                    (
                        DaneFailure.UNTRUSTED_CHAIN,
                        f"gave up after {MAX_SIGNATURE_CHECKS} signature checks "
                        "(MAX_SIGNATURE_CHECKS)",
                    )
                )
            return False
        self.checks += 1
        return True


def _issuer_text(cert: x509.Certificate) -> str:
    try:
        return cert.issuer.rfc4514_string() or "empty name"
    except ValueError:
        return "unreadable name"


def _render(path: list[_Cert]) -> str:
    return " <- ".join(member.label for member in path)


def _signature_problem(cert: x509.Certificate, key: PublicKeyTypes, signer: str) -> str | None:
    """None when ``key`` made ``cert``'s signature, else what is wrong (no exception)."""
    try:
        digest = cert.signature_hash_algorithm
        params = cert.signature_algorithm_parameters
    except UnsupportedAlgorithm as exc:
        return f"unsupported signature algorithm ({exc})"
    if isinstance(digest, _WEAK_HASHES):
        return f"signed with {digest.name}, which can be forged"
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < MIN_RSA_KEY_BITS:
                return f"{signer} is a {key.key_size}-bit RSA key (MIN_RSA_KEY_BITS)"
            if digest is None or not isinstance(params, padding.PKCS1v15 | padding.PSS):
                return f"its signature algorithm does not fit the RSA key of {signer}"
            key.verify(cert.signature, cert.tbs_certificate_bytes, params, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if digest is None or not isinstance(params, ec.ECDSA):
                return f"its signature algorithm does not fit the EC key of {signer}"
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(digest))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            if digest is not None or params is not None:
                return f"its signature algorithm does not fit the EdDSA key of {signer}"
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return f"{signer} has an unsupported key type ({type(key).__name__})"
    except InvalidSignature:
        return f"its signature does not verify with the key of {signer}"
    except (UnsupportedAlgorithm, ValueError, TypeError) as exc:
        return f"its signature cannot be checked with the key of {signer} ({exc})"
    return None


def _issuer_problem(
    issuer: _Cert, path: list[_Cert], now: datetime.datetime
) -> tuple[DaneFailure, str] | None:
    """Why ``issuer`` may not sign the top of ``path`` (RFC 5280 §6.1.4), or None."""
    dates = _dates_problem(issuer, now)
    if dates is not None:
        return DaneFailure.EXPIRED, dates
    problem = _extension_problem(issuer)
    if problem is not None:
        return DaneFailure.UNTRUSTED_CHAIN, problem
    try:
        constraints = issuer.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return DaneFailure.UNTRUSTED_CHAIN, f"{issuer.label} is not a CA (no basicConstraints)"
    if not constraints.ca:
        return (
            DaneFailure.UNTRUSTED_CHAIN,
            f"{issuer.label} is not a CA (basicConstraints CA=false)",
        )
    try:
        usage = issuer.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        if not usage.key_cert_sign:
            return DaneFailure.UNTRUSTED_CHAIN, f"{issuer.label} keyUsage lacks keyCertSign"
    limit = constraints.path_length
    if limit is not None:
        below = sum(1 for member in path[1:] if not _self_issued(member.cert))
        if below > limit:
            return (
                DaneFailure.UNTRUSTED_CHAIN,
                f"{issuer.label} has pathLenConstraint {limit}, but {below} CA certificate(s) "
                "follow it",
            )
    return None


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


def _dates_problem(member: _Cert, now: datetime.datetime) -> str | None:
    start, end = member.cert.not_valid_before_utc, member.cert.not_valid_after_utc
    if now < start:
        return f"{member.label} is not valid before {start:%Y-%m-%d %H:%M} UTC"
    if now > end:
        return f"{member.label} expired on {end:%Y-%m-%d %H:%M} UTC"
    return None


def _extension_problem(member: _Cert) -> str | None:
    try:
        extensions = list(member.cert.extensions)
    except (ValueError, x509.DuplicateExtension) as exc:
        return f"{member.label} has extensions that do not parse ({exc})"
    for extension in extensions:
        if extension.oid == ExtensionOID.NAME_CONSTRAINTS:
            return f"{member.label} carries name constraints, which are not supported"
        if extension.critical and extension.oid not in _UNDERSTOOD_CRITICAL:
            oid = extension.oid.dotted_string
            return f"{member.label} has an unknown critical extension {oid}"
    return None


def _purpose_problem(leaf: _Cert) -> str | None:
    try:
        purposes = leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.SERVER_AUTH in purposes or (
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in purposes
    ):
        return None
    return f"{leaf.label} is not for TLS servers (extendedKeyUsage lacks serverAuth)"


def _leaf_names(cert: x509.Certificate) -> tuple[str, ...]:
    """DNS-IDs of the subjectAltName; the CN only when there are none (RFC 7672 §3.2.3)."""
    try:
        alt_names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_ids = alt_names.get_values_for_type(x509.DNSName)
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
        dns_ids = []
    if dns_ids:
        return tuple(name.lower().rstrip(".") for name in dns_ids)
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return tuple(str(attr.value).lower().rstrip(".") for attr in common)


def name_matches(pattern: str, name: str, /) -> bool:
    """name_matches - certificate name ``pattern`` covers reference name ``name``.

    A wildcard is only a whole left-most label and covers exactly one label, with at least
    two labels after it (RFC 7672 §3.2.3, RFC 6125 §6.4.3).

    >>> name_matches("*.example.test", "mx1.example.test")
    True
    >>> name_matches("*.example.test", "a.mx1.example.test"), name_matches("*.test", "a.test")
    (False, False)
    >>> name_matches("MX1.example.test.", "mx1.EXAMPLE.test")
    True
    """
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if not pattern or not name or "*" in name:
        return False
    if pattern.startswith("*."):
        rest = pattern[2:]
        head, _, tail = name.partition(".")
        return "*" not in rest and "." in rest and bool(head) and tail == rest
    return "*" not in pattern and pattern == name


def _utc(now: datetime.datetime) -> datetime.datetime:
    return now if now.tzinfo is not None else now.replace(tzinfo=datetime.UTC)


def _public_key(cert: x509.Certificate) -> PublicKeyTypes | None:
    try:
        return cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None


def _key_spki(key: PublicKeyTypes) -> bytes | None:
    try:
        return key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


# ---- DER: the SubjectPublicKeyInfo exactly as encoded in a certificate --------------------

_DER_SEQUENCE = 0x30
_DER_VERSION_TAG = 0xA0  # [0] EXPLICIT Version, absent in v1 certificates
_TBS_FIELDS_BEFORE_SPKI = 5  # serialNumber, signature, issuer, validity, subject (RFC 5280)


def _spki(cert_der: bytes) -> bytes | None:
    """The subjectPublicKeyInfo of a DER certificate, byte for byte; None if not one.

    Read from the encoding rather than re-encoded from a parsed key, so that selector 1
    matches exactly what the certificate carries (RFC 6698 §1.1.2), even for key types
    `cryptography` cannot load.
    """
    try:
        tag, start, end = _der_element(cert_der, 0)
        if tag != _DER_SEQUENCE or end != len(cert_der):
            return None
        tag, position, tbs_end = _der_element(cert_der, start)
        if tag != _DER_SEQUENCE:
            return None
        tag, _, after = _der_element(cert_der, position)
        if tag == _DER_VERSION_TAG:
            position = after
        for _ in range(_TBS_FIELDS_BEFORE_SPKI):
            position = _der_element(cert_der, position)[2]
        tag, _, spki_end = _der_element(cert_der, position)
        if tag != _DER_SEQUENCE or spki_end > tbs_end:
            return None
        return cert_der[position:spki_end]
    except ValueError:
        return None


def _der_element(data: bytes, position: int) -> tuple[int, int, int]:
    """(tag, content start, end) of the DER element at ``position``.

    :raises ValueError: truncated, indefinite or over-long length, or a multi-byte tag.
    """
    if position + 2 > len(data):
        raise ValueError("truncated")
    tag, first = data[position], data[position + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte tag")
    position += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or position + count > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[position : position + count], "big")
        position += count
    end = position + length
    if end > len(data):
        raise ValueError("truncated")
    return tag, position, end
