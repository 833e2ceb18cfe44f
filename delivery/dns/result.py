"""What a DNS lookup returns: an outcome value, never an exception.

"Not found" is an answer; "could not find out" is not (STYLE §4). Policy code
matches on `DnsResult.status` with `assert_never`, so a new status breaks the
type check wherever it matters.

Outcomes:
    Lookup.ANSWER    NOERROR with records of the asked type (after CNAMEs)
    Lookup.NODATA    the name exists, without records of that type
    Lookup.NXDOMAIN  the name does not exist (or cannot: an invalid name)
    Lookup.TEMPFAIL  SERVFAIL (bogus data included), timeout, REFUSED or a
                     malformed answer from every nameserver: never "no records"

Security:
    `secure` is the AD bit of a validating resolver the operator trusts
    (`[dns] dnssec = "trust-ad"`); it is False whenever that trust is off, on
    TEMPFAIL, and when any part of the answer was not validated. Records are
    attacker-influenced data; callers decide from them, not on them.

Standards: RFC 1035, RFC 2308 (negative answers), RFC 4035 §3.2.3 (AD),
RFC 7505 (null MX), RFC 6698 (TLSA), RFC 7672 §2.2 (original and final names).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "DnsResult",
    "Lookup",
    "MxRecord",
    "TlsaRecord",
    "is_null_mx",
    "map_records",
]

R = TypeVar("R")
S = TypeVar("S")


class Lookup(enum.Enum):
    """How one lookup ended."""

    ANSWER = "answer"  # NOERROR with records
    NODATA = "nodata"  # NOERROR, no records of this type
    NXDOMAIN = "nxdomain"  # the name does not exist
    TEMPFAIL = "tempfail"  # SERVFAIL, timeout, bogus, REFUSED, malformed


@dataclass(frozen=True, slots=True)
class DnsResult(Generic[R]):
    """One lookup's outcome.

    :param status: how the lookup ended.
    :param records: the records of the asked type; empty unless ANSWER.
    :param secure: True when a trusted validating resolver set AD on the answer; the
        AD bit covers the whole answer, CNAMEs included.
    :param ttl: seconds this answer may still be used: the lowest TTL on the CNAME
        chain and the RRset, or the negative TTL from the SOA (RFC 2308 §5); 0 for
        TEMPFAIL and for negative answers without an SOA.
    :param canonical_name: where the CNAME chain ended (the owner of `records`);
        the queried name when it is not an alias. Absolute, lowercase.
    :param cname_chain: the aliases followed, in order, starting with the queried
        name; empty when the name is not an alias.
    :param detail: which nameserver said what, for `delivery explain` and logs.
    """

    status: Lookup
    records: tuple[R, ...]
    secure: bool
    ttl: int
    canonical_name: str
    cname_chain: tuple[str, ...]
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MxRecord:
    """One MX record.

    :param preference: lower is preferred.
    :param exchange: the host, absolute and lowercase ("mx1.example.test."); "." for
        the root, which is never a host (RFC 7505).
    """

    preference: int
    exchange: str


@dataclass(frozen=True, slots=True)
class TlsaRecord:
    """One TLSA record (RFC 6698 §2.1).

    :param usage: 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    :param selector: 0 full certificate, 1 SubjectPublicKeyInfo.
    :param mtype: 0 exact, 1 SHA-256, 2 SHA-512.
    :param data: the certificate association data, raw bytes.
    """

    usage: int
    selector: int
    mtype: int
    data: bytes


def is_null_mx(result: DnsResult[MxRecord], /) -> bool:
    """True when the domain declares it accepts no mail (RFC 7505 null MX).

    Every record of the answer names the root; RFC 7505 §3 forbids mixing a
    null MX with other MX records, and a root exchange is never a usable host.

    >>> is_null_mx(DnsResult(Lookup.ANSWER, (MxRecord(0, "."),), False, 300, "a.test.", ()))
    True
    """
    return (
        result.status is Lookup.ANSWER
        and bool(result.records)
        and all(record.exchange == "." for record in result.records)
    )


def map_records(result: DnsResult[R], convert: Callable[[R], S], /) -> DnsResult[S]:
    """The same result with each record converted, e.g. rdata to MxRecord."""
    return DnsResult(
        status=result.status,
        records=tuple(convert(record) for record in result.records),
        secure=result.secure,
        ttl=result.ttl,
        canonical_name=result.canonical_name,
        cname_chain=result.cname_chain,
        detail=result.detail,
    )
