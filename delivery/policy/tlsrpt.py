"""SMTP TLS Reporting (RFC 8460), the pure core: results, aggregates, the report and its mail.

The engine records one `SessionResult` per TLS session attempt (the policy domain, the policy
it applied, success or a `FailureDetail`) with the source of the message it carried;
`delivery.policy.tlsrpt_store` keeps them as daily aggregates, and
`delivery.policy.tlsrpt_send` turns each finished day into a report for the ``rua``
destinations that the domain's ``_smtp._tls`` TXT record names. Everything here is a plain
function over plain values: no I/O, no clock, no logging.

Outcomes:
    parse_tlsrpt_txt   TxtResult: FOUND with a TlsRptRecord (its mailto: and https: ruas);
                       ABSENT (no record begins with "v=TLSRPTv1;", or several do: RFC 8460
                       §3 says the domain then does not implement TLS-RPT); INVALID (the one
                       record breaks the §3 grammar, or names no usable rua). Each says why.
    aggregate          SessionResults -> per (domain, UTC day, policy) counts and failure
                       details with their counts; `Tally` is its incremental form
    applied_policy     the PolicyDescription of a session from its MTA-STS lookup and DANE
                       decision; sts_failure and result_type_of_verify_code classify failures
    build_report       the RFC 8460 §4.4 JSON object of one domain and day
    encode_report      gzip of its JSON (RFC 8460 §5.2); decode_report reads it back
    build_report_mail  the RFC 8460 §5.3 message: multipart/report; report-type="tlsrpt"
    reportable         False for messages whose source is ``report``: reports are never
                       about the delivery of reports (RFC 8460 §5.3)
    Malformed arguments (an empty report, a contact address without a domain) raise
    ValueError; nothing here raises for hostile DNS data.

Security:
    The TXT record is attacker-influenced DNS data: parsed strictly, bounded by named caps,
    URIs checked character by character (RFC 3986), and nothing partially parsed is used.
    Every string that reaches a report or a mail header (host names, HELO names, reason codes)
    is cleaned of control characters and capped, so that a hostile peer cannot add a header
    or blow up a report. A rua is a destination the domain chose; we send it only the report
    about that same domain.

Standards: RFC 8460 §3 (TXT record), §4 (report schema and result types), §5.1 (file name),
§5.2 (gzip), §5.3 (mail); RFC 6522 (multipart/report); RFC 3339 (dates); RFC 6068 (mailto);
RFC 3834 (Auto-Submitted).
Limits: a report covers one whole UTC day, end-datetime 23:59:59Z as in the RFC's example.
Failure details past `TLSRPT_MAX_FAILURE_DETAILS` per policy are folded into one per result
type (counts stay exact, the detail is dropped). Mail reports are not DKIM-signed here
(RFC 8460 §5.3 asks for it): signing belongs to the outbound path.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import io
import ipaddress
import json
import re
import secrets
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email import policy as email_policy
from email import utils as email_utils
from email.message import EmailMessage
from typing import Any, Literal, assert_never

from delivery.dns.result import TlsaRecord
from delivery.policy import dane, mtasts, txt
from delivery.queue import model

__all__ = [
    "REPORT_MEDIA_TYPE",
    "TLSRPT_MAX_DETAIL_CHARS",
    "TLSRPT_MAX_FAILURE_DETAILS",
    "TLSRPT_MAX_RECORD_CHARS",
    "TLSRPT_MAX_REPORT_BYTES",
    "TLSRPT_MAX_RUAS",
    "TLSRPT_PREFIX",
    "DayKey",
    "FailureDetail",
    "PolicyAggregate",
    "PolicyDescription",
    "PolicyType",
    "ResultType",
    "Rua",
    "SessionResult",
    "Tally",
    "TlsRptRecord",
    "TxtResult",
    "TxtStatus",
    "aggregate",
    "applied_policy",
    "build_report",
    "build_report_mail",
    "day_of",
    "day_range_s",
    "decode_report",
    "encode_report",
    "make_report_id",
    "merge",
    "parse_tlsrpt_txt",
    "report_file_name",
    "reportable",
    "result_type_of_verify_code",
    "sts_failure",
]

TLSRPT_PREFIX = "_smtp._tls."
"""Owner prefix of the TLS-RPT TXT record (RFC 8460 §3)."""

REPORT_MEDIA_TYPE = "application/tlsrpt+gzip"
"""Media type of a gzipped report, in mail and in HTTPS POST (RFC 8460 §5.2, §6)."""

TLSRPT_MAX_RECORD_CHARS = 2048
"""Longest TLS-RPT TXT record parsed (strings joined). Real ones are under 200 characters;
the cap keeps parse work and error messages small. A longer record is INVALID."""

TLSRPT_MAX_RUAS = 8
"""Most rua destinations used per record: each costs a POST or a mail per domain per day, so
a hostile record listing hundreds would turn us into an amplifier. Past the cap, the first
ones are used and a note says so (reports are optional: never a reason to send none)."""

TLSRPT_MAX_URI_CHARS = 1024
"""Longest rua URI accepted: longer is no real endpoint, and it would be quoted in logs."""

TLSRPT_MAX_DETAIL_CHARS = 255
"""Longest string kept in a failure detail (host names, HELO, reason code, URI): one MX
name is at most 253; a peer's error text longer than this says nothing more, and each
distinct text is a row of its own in the store."""

TLSRPT_MAX_FAILURE_DETAILS = 1000
"""Most distinct failure details one policy entry of a report lists; the rest are folded into
one detail per result type with their counts, so totals stay exact and a report stays well
under `TLSRPT_MAX_REPORT_BYTES`."""

TLSRPT_MAX_REPORT_BYTES = 16 * 1024 * 1024
"""Largest report JSON `decode_report` inflates: bounds memory against a gzip bomb."""

_DAY_S = 86400
_WSP = " \t"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")  # §3 tlsrpt-ext-name
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")  # §3 tlsrpt-ext-value
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")  # RFC 3986 §3.1
# RFC 3986 characters, minus ',' and '!' which RFC 8460 §3 says MUST be percent-encoded (';'
# cannot occur: it ends the field).
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@$&'()*+=%]+")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_LDH_NAME = re.compile(
    r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
_LOCAL_PART_BAD = re.compile(r"[\x00-\x20\x7f<>()\[\]\\,;:\"]")
_ID_ATOM = re.compile(r"[^A-Za-z0-9.-]")  # what a report id keeps of a domain (dot-atom-text)

# OpenSSL X509_V_ERR_* codes (x509_vfy.h) that say what was wrong with a PKIX-checked
# certificate, for `result_type_of_verify_code`.
_X509_EXPIRED = frozenset({10})  # CERT_HAS_EXPIRED
_X509_HOST_MISMATCH = frozenset({62, 64})  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
_X509_NOT_TRUSTED = frozenset(
    {
        2,  # UNABLE_TO_GET_ISSUER_CERT
        7,  # CERT_SIGNATURE_FAILURE
        18,  # DEPTH_ZERO_SELF_SIGNED_CERT
        19,  # SELF_SIGNED_CERT_IN_CHAIN
        20,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        21,  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
        23,  # CERT_REVOKED
        24,  # INVALID_CA
        26,  # INVALID_PURPOSE
        27,  # CERT_UNTRUSTED
        28,  # CERT_REJECTED
    }
)


# ---- result model (RFC 8460 §4.2, §4.3) -----------------------------------------------------


class ResultType(enum.StrEnum):
    """RFC 8460 §4.3 result types of a failed session."""

    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"  # §4.3.3: any other negotiation failure
    TLSA_INVALID = "tlsa-invalid"
    DNSSEC_INVALID = "dnssec-invalid"
    DANE_REQUIRED = "dane-required"
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"


class PolicyType(enum.StrEnum):
    """RFC 8460 §4.2 policy types."""

    STS = "sts"
    TLSA = "tlsa"
    NO_POLICY_FOUND = "no-policy-found"


def _clean(text: str, limit: int = TLSRPT_MAX_DETAIL_CHARS) -> str:
    """Untrusted text made safe for a report or a header: no controls, capped."""
    if text.isprintable():  # no controls to replace (the usual case: skip the regex, as
        # every TLS session's failure detail passes here)
        return text.strip()[:limit]
    return _CONTROL.sub(" ", text).strip()[:limit]


@dataclass(frozen=True, slots=True)
class PolicyDescription:
    """The policy a session applied, as RFC 8460 §4.4 describes it (the domain apart).

    :param policy_type: sts, tlsa or no-policy-found.
    :param policy_string: the policy's lines (sts) or TLSA records in presentation form
        (tlsa); empty for no-policy-found, and for an sts policy that could not be obtained.
    :param mx_host: the policy's mx patterns (sts), the MX host whose TLSA records these are
        (tlsa); empty otherwise.
    """

    policy_type: PolicyType
    policy_string: tuple[str, ...] = ()
    mx_host: tuple[str, ...] = ()

    @classmethod
    def sts(cls, policy: mtasts.Policy, /) -> PolicyDescription:
        """sts - an MTA-STS policy in force, its lines in canonical form (RFC 8460 §4.5.1).

        >>> PolicyDescription.sts(mtasts.Policy(mtasts.Mode.TESTING, ("*.example.test",), 60))
        ... # doctest: +NORMALIZE_WHITESPACE
        PolicyDescription(policy_type=<PolicyType.STS: 'sts'>,
            policy_string=('version: STSv1', 'mode: testing', 'mx: *.example.test',
            'max_age: 60'), mx_host=('*.example.test',))
        """
        lines = (
            "version: STSv1",
            f"mode: {policy.mode}",
            *(f"mx: {pattern}" for pattern in policy.mx),
            f"max_age: {policy.max_age_s}",
        )
        return cls(PolicyType.STS, lines, policy.mx)

    @classmethod
    def sts_unavailable(cls) -> PolicyDescription:
        """sts_unavailable - the domain's MTA-STS policy, which could not be obtained."""
        return cls(PolicyType.STS)

    @classmethod
    def tlsa(cls, records: Iterable[TlsaRecord], mx_host: str, /) -> PolicyDescription:
        """tlsa - the TLSA records of ``mx_host`` (RFC 8460 §4.5.2), in presentation form.

        >>> PolicyDescription.tlsa([TlsaRecord(3, 1, 1, bytes([0xab] * 4))], "MX1.example.test.")
        ... # doctest: +NORMALIZE_WHITESPACE
        PolicyDescription(policy_type=<PolicyType.TLSA: 'tlsa'>,
            policy_string=('3 1 1 ABABABAB',), mx_host=('mx1.example.test',))
        """
        lines = tuple(f"{r.usage} {r.selector} {r.mtype} {r.data.hex().upper()}" for r in records)
        return cls(PolicyType.TLSA, lines, (mx_host.lower().rstrip("."),))

    @classmethod
    def no_policy(cls) -> PolicyDescription:
        """no_policy - neither MTA-STS nor DANE applied to the session."""
        return cls(PolicyType.NO_POLICY_FOUND)

    def to_json(self) -> dict[str, Any]:
        """The ``policy`` object of a report, without ``policy-domain``."""
        out: dict[str, Any] = {"policy-type": self.policy_type.value}
        if self.policy_string:
            out["policy-string"] = list(self.policy_string)
        if self.mx_host:
            out["mx-host"] = list(self.mx_host)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], /) -> PolicyDescription:
        """The inverse of `to_json` (``policy-domain`` is ignored if present)."""
        return cls(
            PolicyType(data["policy-type"]),
            tuple(data.get("policy-string", ())),
            tuple(data.get("mx-host", ())),
        )

    def key(self) -> str:
        """A canonical text of the description: equal descriptions, equal keys."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class FailureDetail:
    """What went wrong in one failed session (RFC 8460 §4.4 ``failure-details``).

    Strings are cleaned and capped at `TLSRPT_MAX_DETAIL_CHARS` when made; "" means absent
    (the field is left out of the report).

    :param result_type: the §4.3 result type.
    :param receiving_mx_hostname: the MX host name we tried.
    :param receiving_ip: the address we connected to.
    :param sending_mta_ip: our address on that connection.
    :param receiving_mx_helo: the name the server announced (greeting or EHLO reply).
    :param additional_information: a URI with more information (§4.4 additional-info-uri).
    :param failure_reason_code: the TLS error code or message, e.g. OpenSSL's verdict.
    """

    result_type: ResultType
    receiving_mx_hostname: str = ""
    receiving_ip: str = ""
    sending_mta_ip: str = ""
    receiving_mx_helo: str = ""
    additional_information: str = ""
    failure_reason_code: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "result_type", ResultType(self.result_type))
        host = _clean(self.receiving_mx_hostname).lower().rstrip(".")
        object.__setattr__(self, "receiving_mx_hostname", host)
        for name in (
            "receiving_ip",
            "sending_mta_ip",
            "receiving_mx_helo",
            "additional_information",
            "failure_reason_code",
        ):
            object.__setattr__(self, name, _clean(getattr(self, name)))

    def to_json(self) -> dict[str, Any]:
        """The ``failure-details`` entry of a report, without ``failed-session-count``."""
        out: dict[str, Any] = {"result-type": self.result_type.value}
        for name, value in (
            ("sending-mta-ip", self.sending_mta_ip),
            ("receiving-mx-hostname", self.receiving_mx_hostname),
            ("receiving-mx-helo", self.receiving_mx_helo),
            ("receiving-ip", self.receiving_ip),
            ("additional-information", self.additional_information),
            ("failure-reason-code", self.failure_reason_code),
        ):
            if value:
                out[name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], /) -> FailureDetail:
        """The inverse of `to_json` (``failed-session-count`` is ignored if present)."""
        return cls(
            ResultType(data["result-type"]),
            receiving_mx_hostname=data.get("receiving-mx-hostname", ""),
            receiving_ip=data.get("receiving-ip", ""),
            sending_mta_ip=data.get("sending-mta-ip", ""),
            receiving_mx_helo=data.get("receiving-mx-helo", ""),
            additional_information=data.get("additional-information", ""),
            failure_reason_code=data.get("failure-reason-code", ""),
        )

    def key(self) -> str:
        """A canonical text of the detail: equal details, equal keys."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class SessionResult:
    """One TLS session attempt, as the engine records it for TLS-RPT.

    :param policy_domain: the recipient domain whose policy applied (any case, trailing dot
        or not; normalized when aggregated).
    :param policy: the policy the session applied.
    :param success: TLS was negotiated and the peer satisfied the policy.
    :param failure: what failed; None exactly when ``success``.
    :param at: when the session took place, UTC epoch ms: it picks the report's day.
    :raises ValueError: ``failure`` given with success, or missing without.
    """

    policy_domain: str
    policy: PolicyDescription
    success: bool
    failure: FailureDetail | None
    at: int

    def __post_init__(self) -> None:
        if self.success and self.failure is not None:
            raise ValueError("a successful session has no failure detail")
        if not self.success and self.failure is None:
            raise ValueError("a failed session needs a failure detail (its result type)")


def reportable(source: model.MessageSource, /) -> bool:
    """reportable - whether sessions carrying a message of ``source`` go into TLS reports.

    Reports are never about the delivery of reports (RFC 8460 §5.3: the session that carries
    a report is not included in the next one).

    >>> reportable(model.MessageSource.AUTHENTICATED), reportable(model.MessageSource.REPORT)
    (True, False)
    """
    return source is not model.MessageSource.REPORT


def result_type_of_verify_code(code: int, /) -> ResultType:
    """result_type_of_verify_code - the result type of a failed PKIX check (OpenSSL code).

    For `smtp.errors.CertificateRejected.verify_code`; an unlisted code is a
    validation-failure (RFC 8460 §4.3.3).

    >>> result_type_of_verify_code(10), result_type_of_verify_code(62)
    (<ResultType.CERTIFICATE_EXPIRED: 'certificate-expired'>, \
<ResultType.CERTIFICATE_HOST_MISMATCH: 'certificate-host-mismatch'>)
    >>> result_type_of_verify_code(20), result_type_of_verify_code(9)
    (<ResultType.CERTIFICATE_NOT_TRUSTED: 'certificate-not-trusted'>, \
<ResultType.VALIDATION_FAILURE: 'validation-failure'>)
    """
    if code in _X509_EXPIRED:
        return ResultType.CERTIFICATE_EXPIRED
    if code in _X509_HOST_MISMATCH:
        return ResultType.CERTIFICATE_HOST_MISMATCH
    if code in _X509_NOT_TRUSTED:
        return ResultType.CERTIFICATE_NOT_TRUSTED
    return ResultType.VALIDATION_FAILURE


def applied_policy(
    sts: mtasts.PolicyLookup | None, tls_dane: dane.DaneDecision | None, /
) -> PolicyDescription:
    """applied_policy - the policy one session with a host applied, for its SessionResult.

    DANE wins when the host has usable TLSA records (RFC 8461 §2: MTA-STS never overrides
    DANE); then an MTA-STS policy in force (enforce or testing); then an MTA-STS policy that
    could not be obtained (the fetch failure is reported under sts); else no-policy-found.

    :param sts: the domain's MTA-STS lookup, or None when MTA-STS was not consulted.
    :param tls_dane: the host's DANE decision, or None when DANE was not consulted.
    """
    if tls_dane is not None and tls_dane.outcome is dane.DaneOutcome.REQUIRED:
        return PolicyDescription.tlsa(tls_dane.records, tls_dane.host)
    if sts is None:
        return PolicyDescription.no_policy()
    match sts.status:
        case mtasts.LookupStatus.POLICY:
            assert sts.policy is not None
            if sts.policy.mode is mtasts.Mode.NONE:
                return PolicyDescription.no_policy()
            return PolicyDescription.sts(sts.policy)
        case mtasts.LookupStatus.UNAVAILABLE:
            return PolicyDescription.sts_unavailable()
        case mtasts.LookupStatus.NONE:
            return PolicyDescription.no_policy()
        case _ as unreachable:
            assert_never(unreachable)


def sts_failure(lookup: mtasts.PolicyLookup, /, **where: str) -> FailureDetail | None:
    """sts_failure - the failure to report when no MTA-STS policy could be obtained.

    Only for UNAVAILABLE: a policy used from the cache while a refresh failed still protected
    the session, which is then reported on its own merits.

    :param where: FailureDetail fields of the session (``receiving_mx_hostname=...``).
    """
    if lookup.status is not mtasts.LookupStatus.UNAVAILABLE or lookup.problem is None:
        return None
    return FailureDetail(
        ResultType(lookup.problem.tlsrpt_result_type),
        failure_reason_code=where.pop("failure_reason_code", lookup.problem.value),
        **where,
    )


# ---- aggregation ----------------------------------------------------------------------------


DayKey = tuple[str, date]
"""(policy domain, UTC day) of one report."""


@dataclass(frozen=True, slots=True)
class PolicyAggregate:
    """The sessions of one domain and day under one policy.

    :param successes: :param failures: session counts.
    :param details: each distinct failure detail and its session count, most frequent first.
    """

    policy: PolicyDescription
    successes: int = 0
    failures: int = 0
    details: tuple[tuple[FailureDetail, int], ...] = field(default=())


def day_of(at_ms: int, /) -> date:
    """day_of - the UTC day of an epoch-ms time.

    >>> day_of(1_700_000_000_000)
    datetime.date(2023, 11, 14)
    """
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).date()


def day_range_s(day: date, /) -> tuple[int, int]:
    """day_range_s - first and last second of a UTC day, epoch seconds (RFC 8460 §5.1).

    >>> day_range_s(date(2023, 11, 14))
    (1699920000, 1700006399)
    """
    begin = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    return begin, begin + _DAY_S - 1


def _normal_domain(domain: str) -> str:
    return domain.lower().rstrip(".")


class _Counts:
    """The running counts of one policy of one (domain, day)."""

    __slots__ = ("details", "failures", "successes")

    def __init__(self) -> None:
        self.successes = 0
        self.failures = 0
        self.details: dict[FailureDetail, int] = {}


class Tally:
    """Session results counted as they come: the incremental form of `aggregate`.

    Memory grows with the distinct (domain, day, policy, failure detail) entries, not with
    the sessions: a million identical sessions are one entry. Policies and details are
    compared as values, so equal descriptions made by different sessions count together.
    """

    def __init__(self) -> None:
        self._counts: dict[DayKey, dict[PolicyDescription, _Counts]] = {}
        self.sessions = 0
        """Session results counted."""
        self.entries = 0
        """Distinct policy and failure-detail entries: what a write costs, row by row."""

    def __len__(self) -> int:
        return self.sessions

    def add(self, result: SessionResult, /) -> None:
        """add - count one session result under its (domain, UTC day) and policy."""
        key = (_normal_domain(result.policy_domain), day_of(result.at))
        counts = self._entry(key, result.policy)
        self.sessions += 1
        if result.success:
            counts.successes += 1
            return
        assert result.failure is not None  # SessionResult checks it
        counts.failures += 1
        self._add_detail(counts, result.failure, 1)

    def update(self, other: Tally, /) -> None:
        """update - add every count of ``other`` to this tally."""
        for key, per_policy in other._counts.items():
            for policy, theirs in per_policy.items():
                counts = self._entry(key, policy)
                counts.successes += theirs.successes
                counts.failures += theirs.failures
                for detail, n in theirs.details.items():
                    self._add_detail(counts, detail, n)
        self.sessions += other.sessions

    def result(self) -> dict[DayKey, list[PolicyAggregate]]:
        """result - the aggregates per (domain, day), policies in the order first seen."""
        return {
            key: [
                _make_aggregate(policy, c.successes, c.failures, c.details)
                for policy, c in per_policy.items()
            ]
            for key, per_policy in self._counts.items()
        }

    def _entry(self, key: DayKey, policy: PolicyDescription) -> _Counts:
        per_policy = self._counts.setdefault(key, {})
        counts = per_policy.get(policy)
        if counts is None:
            counts = per_policy[policy] = _Counts()
            self.entries += 1
        return counts

    def _add_detail(self, counts: _Counts, detail: FailureDetail, n: int) -> None:
        if detail not in counts.details:
            self.entries += 1
        counts.details[detail] = counts.details.get(detail, 0) + n


def aggregate(results: Iterable[SessionResult], /) -> dict[DayKey, list[PolicyAggregate]]:
    """aggregate - session results counted per (domain, UTC day) and policy.

    Domains are lowercased without a trailing dot; policies in the order first seen.
    """
    tally = Tally()
    for result in results:
        tally.add(result)
    return tally.result()


def merge(aggregates: Iterable[PolicyAggregate], /) -> list[PolicyAggregate]:
    """merge - aggregates of the same policy added together, in the order first seen."""
    merged: dict[PolicyDescription, _Counts] = {}
    for item in aggregates:
        counts = merged.setdefault(item.policy, _Counts())
        counts.successes += item.successes
        counts.failures += item.failures
        for detail, n in item.details:
            counts.details[detail] = counts.details.get(detail, 0) + n
    return [
        _make_aggregate(policy, c.successes, c.failures, c.details) for policy, c in merged.items()
    ]


def _make_aggregate(
    policy: PolicyDescription, successes: int, failures: int, details: dict[FailureDetail, int]
) -> PolicyAggregate:
    ordered = sorted(details.items(), key=lambda item: (-item[1], item[0].key()))
    return PolicyAggregate(policy, successes, failures, tuple(ordered))


# ---- the report (RFC 8460 §4.4) -------------------------------------------------------------


def make_report_id(domain: str, day: date, submitter: str, /) -> str:
    """make_report_id - a new unique report id, usable as the Subject's ``<id-left@id-right>``.

    >>> rid = make_report_id("Example.test", date(2024, 5, 1), "mta.example.org")
    >>> rid.startswith("20240501.example.test."), rid.endswith("@mta.example.org")
    (True, True)
    """
    left = _ID_ATOM.sub("-", _normal_domain(domain)) or "domain"
    right = _ID_ATOM.sub("-", _normal_domain(submitter)) or "localhost"
    return f"{day:%Y%m%d}.{left}.{secrets.token_hex(8)}@{right}"


def _submitter(contact_info: str) -> str:
    local, at, domain = contact_info.rpartition("@")
    domain = _normal_domain(domain)
    if not at or not local or not _LDH_NAME.fullmatch(domain):
        raise ValueError(
            f"contact-info {contact_info!r} is not an address with a domain: RFC 8460 §5.1 "
            "takes the submitter's domain from it"
        )
    return domain


def build_report(
    domain: str,
    day: date,
    aggregates: Sequence[PolicyAggregate],
    /,
    *,
    organization_name: str,
    contact_info: str,
    report_id: str,
) -> dict[str, Any]:
    """build_report - the RFC 8460 §4.4 report of ``domain`` for the UTC day ``day``.

    :param aggregates: the day's aggregates (`tlsrpt_store.TlsRptStore.aggregates`); the same
        policy given twice is added up.
    :param organization_name: who sends the report (the operator's organization).
    :param contact_info: an address of the party responsible for the report; its domain is
        the submitter of RFC 8460 §5.1 and §5.3.
    :param report_id: unique per report (`make_report_id`); kept across retries of one report.
    :raises ValueError: no aggregates, a domain that is not a host name, or a contact
        address without a domain.
    """
    name = _normal_domain(domain)
    if not _LDH_NAME.fullmatch(name):
        raise ValueError(f"{domain!r} is not a domain name a report can be about")
    _submitter(contact_info)
    merged = merge(aggregates)
    if not merged:
        raise ValueError(f"no results for {name} on {day}: there is nothing to report")
    start = f"{day.isoformat()}T00:00:00Z"
    end = f"{day.isoformat()}T23:59:59Z"
    policies = [_policy_entry(name, item) for item in sorted(merged, key=_policy_order)]
    return {
        "organization-name": _clean(organization_name, 1000),
        "date-range": {"start-datetime": start, "end-datetime": end},
        "contact-info": contact_info,
        "report-id": report_id,
        "policies": policies,
    }


def _policy_order(item: PolicyAggregate) -> tuple[str, str]:
    return item.policy.policy_type.value, item.policy.key()


def _policy_entry(domain: str, item: PolicyAggregate) -> dict[str, Any]:
    policy = item.policy.to_json()
    policy["policy-domain"] = domain
    ordered = {key: policy[key] for key in _POLICY_KEYS if key in policy}
    entry: dict[str, Any] = {
        "policy": ordered,
        "summary": {
            "total-successful-session-count": item.successes,
            "total-failure-session-count": item.failures,
        },
    }
    details = _folded(item.details)
    if details:
        entry["failure-details"] = [
            {**detail.to_json(), "failed-session-count": count} for detail, count in details
        ]
    return entry


_POLICY_KEYS = ("policy-type", "policy-string", "policy-domain", "mx-host")  # §4.4 order


def _folded(
    details: Sequence[tuple[FailureDetail, int]],
) -> list[tuple[FailureDetail, int]]:
    """At most TLSRPT_MAX_FAILURE_DETAILS details; the rest folded per result type."""
    if len(details) <= TLSRPT_MAX_FAILURE_DETAILS:
        return list(details)
    kept = dict(details[: TLSRPT_MAX_FAILURE_DETAILS - len(ResultType)])
    for detail, count in details[len(kept) :]:
        bare = FailureDetail(detail.result_type)
        kept[bare] = kept.get(bare, 0) + count
    return sorted(kept.items(), key=lambda item: (-item[1], item[0].key()))


def encode_report(report: Mapping[str, Any], /) -> bytes:
    """encode_report - the report as gzipped UTF-8 JSON (RFC 8460 §5.2), byte-for-byte stable."""
    text = json.dumps(report, ensure_ascii=False, separators=(",", ":"))
    return gzip.compress(text.encode("utf-8"), mtime=0)


def decode_report(data: bytes, /) -> dict[str, Any]:
    """decode_report - the report in gzipped JSON ``data``.

    :raises ValueError: not gzip, larger than TLSRPT_MAX_REPORT_BYTES inflated, not a JSON
        object.
    """
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            text = stream.read(TLSRPT_MAX_REPORT_BYTES + 1)
    except (OSError, EOFError) as exc:
        raise ValueError(f"not a gzipped report: {exc}") from exc
    if len(text) > TLSRPT_MAX_REPORT_BYTES:
        raise ValueError(f"the report inflates past {TLSRPT_MAX_REPORT_BYTES} bytes")
    report = json.loads(text)
    if not isinstance(report, dict):
        raise ValueError("the report is not a JSON object")
    return report


# ---- delivery: file name and mail (RFC 8460 §5) ---------------------------------------------


def report_file_name(report: Mapping[str, Any], /) -> str:
    """report_file_name - ``<submitter>!<policy-domain>!<begin>!<end>!<unique>.json.gz`` (§5.1).

    ``unique`` is derived from the report id (letters and digits), so a retried report keeps
    its name.
    """
    submitter = _submitter(report["contact-info"])
    domain = report["policies"][0]["policy"]["policy-domain"]
    begin, end = _report_range_s(report)
    unique = hashlib.sha256(report["report-id"].encode("utf-8")).hexdigest()[:16]
    return f"{submitter}!{domain}!{begin}!{end}!{unique}.json.gz"


def _report_range_s(report: Mapping[str, Any]) -> tuple[int, int]:
    dates = report["date-range"]
    begin = datetime.fromisoformat(dates["start-datetime"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(dates["end-datetime"].replace("Z", "+00:00"))
    return int(begin.timestamp()), int(end.timestamp())


def build_report_mail(
    report: Mapping[str, Any],
    /,
    *,
    to: str,
    reporting_mta: str,
    from_address: str,
    now: int,
    gzipped: bytes | None = None,
) -> bytes:
    """build_report_mail - the report as an RFC 8460 §5.3 message, CRLF line endings.

    multipart/report; report-type="tlsrpt" (RFC 6522): a text/plain summary, then the report
    as application/tlsrpt+gzip named by `report_file_name`. Headers: From, To, Date, Subject
    ``Report Domain: <domain> Submitter: <submitter> Report-ID: <<id>>``, Message-ID,
    TLS-Report-Domain, TLS-Report-Submitter, Auto-Submitted: auto-generated. ASCII only, so
    it is queued without SMTPUTF8 or 8BITMIME (envelope: ``from_address`` to ``to``, source
    ``report``).

    :param report: from `build_report`.
    :param to: the mailto rua's address.
    :param reporting_mta: this host's name (the ``hostname`` setting): Message-ID, text.
    :param from_address: the From address (e.g. ``tlsrpt-noreply@<hostname>``).
    :param now: epoch ms, the Date.
    :param gzipped: `encode_report` of ``report``, when the caller has it already.
    :raises ValueError: an address or domain that cannot go into a header.
    """
    submitter = _submitter(report["contact-info"])
    domain = report["policies"][0]["policy"]["policy-domain"]
    for label, address in (("to", to), ("from_address", from_address)):
        if _CONTROL.search(address) or not address.isascii() or "@" not in address:
            raise ValueError(f"{label} {address!r} is not an ASCII mail address")
    mail_policy = email_policy.SMTP.clone(max_line_length=998)
    mail = EmailMessage(policy=mail_policy)
    mail["From"] = from_address
    mail["To"] = to
    mail["Date"] = email_utils.format_datetime(datetime.fromtimestamp(now / 1000, tz=UTC))
    mail["Subject"] = (
        f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report['report-id']}>"
    )
    mail["Message-ID"] = email_utils.make_msgid(domain=_normal_domain(reporting_mta))
    mail["TLS-Report-Domain"] = domain
    mail["TLS-Report-Submitter"] = submitter
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(_human_text(report, reporting_mta, submitter), cte="7bit")
    mail.make_mixed()
    mail.set_type("multipart/report")
    mail.set_param("report-type", "tlsrpt")
    attachment = EmailMessage(policy=mail_policy)
    attachment.set_content(
        gzipped if gzipped is not None else encode_report(report),
        maintype="application",
        subtype="tlsrpt+gzip",
        disposition="attachment",
        filename=report_file_name(report),
        cte="base64",
    )
    del attachment["MIME-Version"]
    mail.attach(attachment)
    return mail.as_bytes()


def _human_text(report: Mapping[str, Any], reporting_mta: str, submitter: str) -> str:
    """The text/plain part: what the report covers, in a few lines (ASCII)."""
    dates = report["date-range"]
    policies = report["policies"]
    domain = policies[0]["policy"]["policy-domain"]
    ok = sum(p["summary"]["total-successful-session-count"] for p in policies)
    failed = sum(p["summary"]["total-failure-session-count"] for p in policies)
    mta = _ascii(reporting_mta)
    origin = mta if _normal_domain(mta) == submitter else f"{mta} ({submitter})"
    lines = [
        f"This is an aggregate TLS report (RFC 8460) from {origin} about mail to {domain},",
        f"from {dates['start-datetime']} to {dates['end-datetime']}.",
        "",
        f"TLS sessions: {ok} successful, {failed} failed.",
    ]
    by_type: dict[str, int] = {}
    for entry in policies:
        for detail in entry.get("failure-details", ()):
            kind = detail["result-type"]
            by_type[kind] = by_type.get(kind, 0) + detail["failed-session-count"]
    lines += [f"  {kind}: {count}" for kind, count in sorted(by_type.items())]
    lines += ["", f"Report-ID: {_ascii(report['report-id'])}", "The report is attached."]
    return "\n".join(lines) + "\n"


def _ascii(text: str) -> str:
    return _clean(text, 1000).encode("ascii", "backslashreplace").decode("ascii")


# ---- the TXT record (RFC 8460 §3) -----------------------------------------------------------


class TxtStatus(enum.Enum):
    FOUND = "found"  # exactly one valid TLSRPTv1 record with a usable rua
    ABSENT = "absent"  # no TLSRPTv1 record, or more than one: no TLS-RPT (§3)
    INVALID = "invalid"  # one TLSRPTv1 record, malformed or without a usable rua


@dataclass(frozen=True, slots=True)
class Rua:
    """One report destination.

    :param uri: as published: what "sent once per rua" is keyed on.
    :param scheme: mailto or https.
    :param target: the address (mailto, percent-decoded, no query) or the URL to POST to
        (https, without a fragment).
    """

    uri: str
    scheme: Literal["mailto", "https"]
    target: str


@dataclass(frozen=True, slots=True)
class TlsRptRecord:
    """A valid TLS-RPT record.

    :param ruas: the destinations, in record order, duplicates once, at most TLSRPT_MAX_RUAS.
    :param notes: what the parser skipped (other schemes, a repeated rua, past the cap).
    """

    ruas: tuple[Rua, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TxtResult:
    """What the ``_smtp._tls`` TXT records say.

    :param record: the record when FOUND, else None.
    :param reason: why the result is not FOUND, naming the record at fault; "" when FOUND.
    """

    status: TxtStatus
    record: TlsRptRecord | None = None
    reason: str = ""


def parse_tlsrpt_txt(records: Sequence[str], /) -> TxtResult:
    """parse_tlsrpt_txt - the report destinations the ``_smtp._tls.<domain>`` TXT records name.

    :param records: the TXT records, each one's strings already joined (RFC 8460 §3).

    >>> found = parse_tlsrpt_txt(["v=TLSRPTv1; rua=mailto:tls@example.test,https://r.test/x"])
    >>> [(rua.scheme, rua.target) for rua in found.record.ruas]
    [('mailto', 'tls@example.test'), ('https', 'https://r.test/x')]
    >>> parse_tlsrpt_txt(["v=TLSRPTv1; rua=mailto:a@b.test", "v=TLSRPTv1; rua=mailto:c@d.test"])
    ... # doctest: +ELLIPSIS
    TxtResult(status=<TxtStatus.ABSENT: 'absent'>, record=None, reason="2 TXT records begin...")
    """
    chosen = txt.select_record(records, "v=TLSRPTv1", several="treated as no TLS-RPT (RFC 8460 §3)")
    if isinstance(chosen, txt.NoRecord):
        return TxtResult(TxtStatus.ABSENT, reason=chosen.reason)
    record = chosen
    parsed = _parse_record(record)
    if isinstance(parsed, str):
        return TxtResult(TxtStatus.INVALID, reason=f"TXT record {txt.quote(record)}: {parsed}")
    return TxtResult(TxtStatus.FOUND, parsed)


def _parse_record(record: str) -> TlsRptRecord | str:
    """The record's ruas, or what is wrong with it."""
    if len(record) > TLSRPT_MAX_RECORD_CHARS:
        return f"{len(record)} characters, more than the {TLSRPT_MAX_RECORD_CHARS} accepted"
    fields = [part.strip(_WSP) for part in record.split(";")[1:]]
    if fields and fields[-1] == "":
        fields.pop()  # a final ';' is allowed (§3 [field-delim])
    rua_text: str | None = None
    notes: list[str] = []
    other_names: list[str] = []
    for text in fields:
        if not text:
            return "an empty field between two ';'"
        name, equals, value = text.partition("=")
        if not equals:
            return f"field {txt.quote(text)} is not name=value"
        if not _EXT_NAME.fullmatch(name):
            return f"field name {txt.quote(name)} is not 1-32 letters, digits, '_', '-' or '.'"
        if name == "rua":
            if rua_text is not None:
                notes.append("'rua' repeated: the first one applies")
                continue
            rua_text = value
        elif not _EXT_VALUE.fullmatch(value):
            return f"field {txt.quote(text)} has a value with a space, '=' or a control character"
        else:
            other_names.append(name)
    if rua_text is None:
        hint = ""
        if any(name.lower() == "rua" for name in other_names):
            hint = " (names are case-sensitive: 'rua' must be lowercase)"
        return f"no 'rua=' field: it is required (RFC 8460 §3){hint}"
    ruas = _parse_ruas(rua_text, notes)
    if isinstance(ruas, str):
        return ruas
    if not ruas:
        return "no mailto: or https: destination in 'rua=' " + (
            f"({'; '.join(notes)})" if notes else ""
        )
    return TlsRptRecord(ruas, tuple(notes))


def _parse_ruas(text: str, notes: list[str]) -> tuple[Rua, ...] | str:
    """The usable ruas of the rua= value (appending notes), or what is wrong with it."""
    ruas: list[Rua] = []
    seen: set[str] = set()
    for raw in text.split(","):
        uri = raw.strip(_WSP)
        problem = _uri_problem(uri)
        if problem:
            return f"rua {txt.quote(uri)}: {problem}"
        scheme = uri.partition(":")[0].lower()
        if scheme not in ("mailto", "https"):
            notes.append(f"rua {txt.quote(uri)} ignored: only mailto: and https: are supported")
            continue
        if uri in seen:
            continue
        seen.add(uri)
        rua = _mailto(uri) if scheme == "mailto" else _https(uri)
        if isinstance(rua, str):
            return f"rua {txt.quote(uri)}: {rua}"
        if len(ruas) == TLSRPT_MAX_RUAS:
            notes.append(f"more than {TLSRPT_MAX_RUAS} destinations: the first ones are used")
            break
        ruas.append(rua)
    return tuple(ruas)


def _uri_problem(uri: str) -> str:
    """What makes ``uri`` no tlsrpt-uri (RFC 8460 §3, RFC 3986); "" when it is one."""
    if not uri:
        return "empty (a ',' with nothing around it)"
    if len(uri) > TLSRPT_MAX_URI_CHARS:
        return f"longer than {TLSRPT_MAX_URI_CHARS} characters"
    if "!" in uri:
        return "'!' must be percent-encoded in a rua (RFC 8460 §3)"
    if not _URI_CHARS.fullmatch(uri):
        bad = next(c for c in uri if not _URI_CHARS.fullmatch(c))
        return f"character {bad!r} is not allowed in a URI (RFC 3986)"
    if _BAD_PERCENT.search(uri):
        return "'%' is not followed by two hex digits"
    scheme, colon, _ = uri.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        return "not a URI: no scheme"
    return ""


def _mailto(uri: str) -> Rua | str:
    """A mailto rua (RFC 6068): one address, hfields ignored; or what is wrong with it."""
    to = uri[len("mailto:") :].partition("?")[0]
    address = urllib.parse.unquote(to)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return "not mailto:local-part@domain"
    if "," in address or _LOCAL_PART_BAD.search(local) or not local.isascii():
        return "not exactly one plain ASCII address"
    if not _LDH_NAME.fullmatch(domain.rstrip(".")):
        return f"domain {txt.quote(domain)} is not a host name"
    return Rua(uri, "mailto", f"{local}@{_normal_domain(domain)}")


def _https(uri: str) -> Rua | str:
    """An https rua, to POST to; or what is wrong with it."""
    parts = urllib.parse.urlsplit(uri)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError:
        return "the port is not a number from 1 to 65535"
    if parts.username is not None or parts.password is not None:
        return "user information is not allowed in an https URI (RFC 9110 §4.2.4)"
    host = parts.hostname or ""
    if not host:
        return "no host"
    if not (_LDH_NAME.fullmatch(host.rstrip(".")) or _is_ip_literal(host)):
        return f"host {txt.quote(host)} is not a host name or IP literal"
    return Rua(uri, "https", urllib.parse.urlunsplit(parts._replace(fragment="")))


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
