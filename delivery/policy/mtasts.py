"""MTA-STS (RFC 8461), the pure core: TXT record, policy, MX matching, and the decision.

Decides from data already fetched (STYLE §1); `delivery.policy.mtasts_fetch` finds the TXT
record, fetches the policy over HTTPS, keeps the cache and hands its answer over as a
`PolicyLookup`. The attempt asks `decide` once per MX host (or `screen_mx` for a whole MX
list) and builds ``policy.tls.PolicyInputs(mta_sts_enforce=verdict.tls_required, ...)``.

Outcomes:
    parse_txt     TxtResult: FOUND with the policy id; ABSENT (no record begins with
                  "v=STSv1;", or several do: RFC 8461 §3.1 treats both as no policy);
                  INVALID (the one STSv1 record breaks the §3.1 grammar). Each says why.
    parse_policy  Policy, or PolicyError naming the line (1-based) and the fault
    mx_matches    whether a host matches one policy ``mx`` pattern (§4.1)
    decide        MtaStsVerdict for one MX host, under the TLS strategy's ``mtaSts`` mode:

    Action.SKIP            ``mtaSts: disable``: MTA-STS is not consulted at all
    Action.NOT_APPLICABLE  no policy in force: none published, mode ``none``, or none could
                           be obtained under ``optional`` (deliver as without MTA-STS, §3.3)
    Action.ENFORCE         mode ``enforce`` lists the host: TLS required, with a certificate
                           PKIX-valid for the MX name (§4.2); allowInvalidCerts is ignored
    Action.REPORT_ONLY     mode ``testing``: deliver as usual, report failures (§5, RFC 8460)
    Action.EXCLUDE_HOST    mode ``enforce`` does not list the host: it is never used (§4.1);
                           a temporary policy failure (``last_error`` ``mta-sts``)
    Action.DEFER           no host can be used for now (``require`` and no policy could be
                           obtained, or no MX host is listed): temporary, for the domain
    Action.FAIL            ``require`` and the domain publishes no policy in force: permanent,
                           for the domain ("no MTA-STS policy published")

    ``require`` enforces a ``testing`` policy: the operator asked for MTA-STS-authenticated
    delivery, and a testing policy still names the hosts to authenticate.

Security:
    The TXT record is attacker-influenced DNS data; the policy comes over PKIX-authenticated
    HTTPS but from a server we do not control. Both are parsed strictly and bounded by named
    caps; nothing partially parsed is trusted (a PolicyError is no policy). Where RFC 8461 and
    a strict reading differ, the choice that keeps a published policy in force wins, because
    rejecting a policy is a downgrade: a repeated field keeps its first value (§3.2 says
    so), fields may come in any order (the §3.2 grammar allows it), blank lines and a
    trailing dot on an ``mx`` pattern are tolerated (they change no meaning).

Standards: RFC 8461 §3.1 (TXT), §3.2 (policy), §3.3 (fetch, size), §4.1 (MX matching),
§4.2 (certificates), §5 (modes); RFC 8460 §4.3 (result types); RFC 5321 §4.1.2 (Domain).
Limits: MTA_STS_MAX_POLICY_BYTES, MTA_STS_MAX_LINE_BYTES, MTA_STS_MAX_MX_PATTERNS; MX patterns
and hosts are compared in A-label form (§3.2 asks policies to publish A-labels).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, assert_never

from delivery.errors import LastError
from delivery.policy import txt

__all__ = [
    "MTA_STS_MAX_AGE_S",
    "MTA_STS_MAX_LINE_BYTES",
    "MTA_STS_MAX_MX_PATTERNS",
    "MTA_STS_MAX_POLICY_BYTES",
    "Action",
    "FetchFailure",
    "FetchProblem",
    "LookupStatus",
    "Mode",
    "MtaStsVerdict",
    "MxScreening",
    "Policy",
    "PolicyError",
    "PolicyLookup",
    "Source",
    "StsStrategy",
    "TxtResult",
    "TxtStatus",
    "decide",
    "mx_matches",
    "parse_policy",
    "parse_txt",
    "screen_mx",
]

MTA_STS_MAX_POLICY_BYTES = 64 * 1024
"""Largest policy body read or parsed: RFC 8461 §3.3 lets senders cap it at 64 KiB; real
policies are a few hundred bytes. Protects memory and parse time from a hostile server."""

MTA_STS_MAX_LINE_BYTES = 1024
"""Longest policy line (terminator excluded). The longest meaningful line is an ``mx`` line:
"mx: *." plus a 253-byte name; the cap keeps error messages short and rejects endless lines."""

MTA_STS_MAX_MX_PATTERNS = 128
"""Most ``mx`` patterns one policy may list: every MX host is matched against each, and
``explain`` shows them all. Real policies list a handful; more is an error, not a truncation
(a truncated list could silently exclude a legitimate host)."""

MTA_STS_MAX_AGE_S = 31557600
"""Largest ``max_age``: one year of 365.25 days (RFC 8461 §3.2)."""

StsStrategy = Literal["optional", "require", "disable"]
"""The ``mtaSts`` property of the chosen MtaTlsStrategy."""

_WSP = " \t"
_POLICY_ID = re.compile(r"[A-Za-z0-9]{1,32}")  # §3.1 sts-id
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")  # §3.1/§3.2 ext-name
_TXT_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")  # §3.1: no '=', ';', SP, controls
# §3.2 sts-policy-ext-value: visible ASCII or UTF-8, inner spaces, no tabs or controls
_POLICY_EXT_VALUE = re.compile(r"[^\x00-\x20\x7f]([^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # anything but TAB below SP, and DEL
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # RFC 5321 sub-domain, ASCII
_MAX_MAX_AGE_DIGITS = 10  # §3.2: 1*10(DIGIT)
_MAX_NAME_OCTETS = 253  # RFC 1035 §2.3.4, written form without the final dot


# ---- TXT record (RFC 8461 §3.1) --------------------------------------------------------------


class TxtStatus(enum.Enum):
    FOUND = "found"  # exactly one valid STSv1 record
    ABSENT = "absent"  # no STSv1 record, or more than one: no policy (§3.1)
    INVALID = "invalid"  # one STSv1 record, malformed: no policy (§3.1)


@dataclass(frozen=True, slots=True)
class TxtResult:
    """What the ``_mta-sts`` TXT records say.

    :param policy_id: the ``id`` (1-32 letters and digits) when FOUND, else "".
    :param reason: why the result is not FOUND, naming the record at fault; "" when FOUND.
    """

    status: TxtStatus
    policy_id: str = ""
    reason: str = ""


def parse_txt(records: Sequence[str], /) -> TxtResult:
    """parse_txt - the policy id the ``_mta-sts.<domain>`` TXT records announce.

    :param records: the TXT records, each one's strings already joined.

    >>> parse_txt(["v=spf1 -all", "v=STSv1; id=20240101T000000;"])
    TxtResult(status=<TxtStatus.FOUND: 'found'>, policy_id='20240101T000000', reason='')
    >>> parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]).status
    <TxtStatus.ABSENT: 'absent'>
    """
    chosen = txt.select_record(records, "v=STSv1", several="treated as no policy (RFC 8461 §3.1)")
    if isinstance(chosen, txt.NoRecord):
        return TxtResult(TxtStatus.ABSENT, reason=chosen.reason)
    record = chosen
    fields = [part.strip(_WSP) for part in record.split(";")[1:]]
    if fields and fields[-1] == "":
        fields.pop()  # a final ';' is allowed
    policy_id = ""
    for field in fields:
        fault = _txt_field_fault(field)
        if fault:
            return TxtResult(TxtStatus.INVALID, reason=f"TXT record {txt.quote(record)}: {fault}")
        name, _, value = field.partition("=")
        if name == "id" and not policy_id:  # a repeated field keeps its first value (§3.2)
            policy_id = value
    if not policy_id:
        return TxtResult(TxtStatus.INVALID, reason=f"TXT record {txt.quote(record)} has no id=")
    return TxtResult(TxtStatus.FOUND, policy_id=policy_id)


def _txt_field_fault(field: str) -> str:
    """What is wrong with one ';'-separated field of the TXT record; "" when it is fine."""
    if not field:
        return "an empty field between two ';'"
    name, equals, value = field.partition("=")
    if not equals:
        return f"field {txt.quote(field)} is not name=value"
    if name == "id":
        if not _POLICY_ID.fullmatch(value):
            return f"id {txt.quote(value)} is not 1 to 32 letters and digits"
        return ""
    if not _EXT_NAME.fullmatch(name):
        return f"field name {txt.quote(name)} is not 1-32 letters, digits, '_', '-' or '.'"
    if not _TXT_EXT_VALUE.fullmatch(value):
        return f"field {txt.quote(field)} has a value with a space, '=', ';' or a control character"
    return ""


# ---- policy (RFC 8461 §3.2) -----------------------------------------------------------------


class Mode(enum.StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed MTA-STS policy.

    :param mode: what the domain asks of senders.
    :param mx: the ``mx`` patterns, lowercase, without a trailing dot; empty only in mode none.
    :param max_age_s: seconds the policy may be cached (0 to MTA_STS_MAX_AGE_S).
    :param notes: what the parser tolerated (a repeated field), for logs; empty when nothing.
    """

    mode: Mode
    mx: tuple[str, ...]
    max_age_s: int
    notes: tuple[str, ...] = ()

    def matches(self, host: str, /) -> bool:
        """Whether ``host`` matches one of the policy's ``mx`` patterns (§4.1)."""
        return any(mx_matches(pattern, host) for pattern in self.mx)

    def describe(self) -> str:
        """One line for reasons, logs and ``explain``.

        >>> Policy(Mode.ENFORCE, ("mx1.example.test", "*.example.test"), 86400).describe()
        'mode enforce, mx mx1.example.test, *.example.test, max_age 86400 s'
        """
        mx = ", ".join(self.mx) if self.mx else "(none)"
        return f"mode {self.mode}, mx {mx}, max_age {self.max_age_s} s"


@dataclass(frozen=True, slots=True)
class PolicyError:
    """Why a policy body is not a valid policy.

    :param reason: the fault, quoting the offending text.
    :param line: 1-based line number of the fault; None for the body as a whole (size, a
        required field missing).
    """

    reason: str
    line: int | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line is not None else self.reason


def parse_policy(body: bytes, /) -> Policy | PolicyError:
    """parse_policy - the policy in ``body``, or the first fault found in it (RFC 8461 §3.2).

    Lines end in LF or CRLF; the last terminator is optional. Each line is ``name: value``
    (no space before the colon, any spaces or tabs after it and at the end of the line),
    UTF-8. ``version`` (STSv1), ``mode`` and ``max_age`` are required, ``mx`` at least once
    unless the mode is none; names are case-sensitive; unknown fields are ignored; a repeated
    field other than ``mx`` keeps its first value.

    >>> parse_policy(b"version: STSv1\\r\\nmode: testing\\r\\nmx: *.example.test\\r\\nmax_age: 60")
    Policy(mode=<Mode.TESTING: 'testing'>, mx=('*.example.test',), max_age_s=60, notes=())
    >>> print(parse_policy(b"version: STSv1\\nmode: enforce\\nmx: *.*.example.test\\nmax_age: 60"))
    line 3: mx '*.*.example.test': '*' is allowed only as the whole leftmost label
    """
    if len(body) > MTA_STS_MAX_POLICY_BYTES:
        return PolicyError(
            f"the policy is {len(body)} bytes, more than the {MTA_STS_MAX_POLICY_BYTES} "
            "a sender reads (RFC 8461 §3.3)"
        )
    raw_lines = body.split(b"\n")
    if raw_lines[-1] == b"":
        raw_lines.pop()  # the last line's terminator, or an empty body
    first: dict[str, tuple[int, str]] = {}  # field -> (line, value) of its first occurrence
    mx: list[str] = []
    notes: list[str] = []
    noted: set[str] = set()
    other_names: dict[str, int] = {}  # lowercase unknown name -> line, for case hints
    for number, raw in enumerate(raw_lines, start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > MTA_STS_MAX_LINE_BYTES:
            return PolicyError(f"longer than {MTA_STS_MAX_LINE_BYTES} bytes", number)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return PolicyError(f"not UTF-8 (byte {exc.start + 1} of the line)", number)
        if not line.strip(_WSP):
            continue  # a blank line carries no field: tolerated (see Security)
        parsed = _policy_field(line)
        if isinstance(parsed, str):
            return PolicyError(parsed, number)
        name, value = parsed
        if name == "mx":
            pattern = _mx_pattern(value)
            if pattern.startswith("!"):
                return PolicyError(f"mx {txt.quote(value)}: {pattern[1:]}", number)
            if len(mx) == MTA_STS_MAX_MX_PATTERNS:
                return PolicyError(f"more than {MTA_STS_MAX_MX_PATTERNS} mx patterns", number)
            mx.append(pattern)
        elif name in ("version", "mode", "max_age"):
            if name in first:
                if name not in noted:  # one note per field, however often it repeats
                    noted.add(name)
                    notes.append(
                        f"line {number}: '{name}' repeated; the first, on line "
                        f"{first[name][0]}, applies (RFC 8461 §3.2)"
                    )
                continue
            first[name] = (number, value)
        else:
            other_names.setdefault(name.lower(), number)
    return _assemble(first, tuple(mx), tuple(notes), other_names)


def _policy_field(line: str) -> tuple[str, str] | str:
    """(name, value) of one policy line, or what is wrong with it."""
    control = _CONTROL.search(line)
    if control is not None:
        return f"control character U+{ord(control.group()):04X} at column {control.start() + 1}"
    name, colon, rest = line.partition(":")
    if not colon:
        return f"{txt.quote(line)} is not 'name: value' (no ':')"
    if not _EXT_NAME.fullmatch(name):
        if name.startswith("\ufeff"):
            return "a byte-order mark (U+FEFF) starts the line: not allowed in a policy"
        if name.strip(_WSP) != name:
            return f"field name {txt.quote(name)}: no space is allowed around a name, before ':'"
        return f"field name {txt.quote(name)} is not 1-32 letters, digits, '_', '-' or '.'"
    value = rest.strip(_WSP)
    if name not in ("version", "mode", "max_age", "mx") and not _POLICY_EXT_VALUE.fullmatch(value):
        return f"field {txt.quote(name)} has an empty value or a tab inside it"
    return name, value


def _mx_pattern(value: str) -> str:
    """The normalized ``mx`` pattern, or "!" + what is wrong with it."""
    wildcard = value.startswith("*.")
    name = value[2:] if wildcard else value
    if name.endswith("."):
        name = name[:-1]  # a trailing dot names the same host (see Security)
    if not name:
        return "!no domain name"
    if not name.isascii():
        return "!not ASCII: publish internationalized names as A-labels (xn--...)"
    labels = name.lower().split(".")
    if "*" in name:
        return "!'*' is allowed only as the whole leftmost label"
    if len(name) > _MAX_NAME_OCTETS:
        return f"!longer than {_MAX_NAME_OCTETS} characters"
    for label in labels:
        if not _LABEL.fullmatch(label):
            return (
                f"!label {txt.quote(label)} is not 1-63 letters, digits and inner hyphens "
                "(RFC 5321 §4.1.2)"
            )
    return ("*." if wildcard else "") + ".".join(labels)


def _assemble(
    first: dict[str, tuple[int, str]],
    mx: tuple[str, ...],
    notes: tuple[str, ...],
    other_names: dict[str, int],
) -> Policy | PolicyError:
    """Check the required fields and their values; build the policy."""
    for name in ("version", "mode", "max_age"):
        if name not in first:
            hint = ""
            if name in other_names:
                hint = f" (line {other_names[name]} spells it otherwise: names are case-sensitive)"
            return PolicyError(f"no '{name}' field: it is required (RFC 8461 §3.2){hint}")
    line, version = first["version"]
    if version != "STSv1":
        return PolicyError(f"version {txt.quote(version)} is not supported (expected STSv1)", line)
    line, mode_text = first["mode"]
    if mode_text not in ("enforce", "testing", "none"):
        return PolicyError(
            f"mode {txt.quote(mode_text)} is not enforce, testing or none (case-sensitive)", line
        )
    mode = Mode(mode_text)
    line, age_text = first["max_age"]
    if not (age_text.isascii() and age_text.isdigit()) or len(age_text) > _MAX_MAX_AGE_DIGITS:
        return PolicyError(f"max_age {txt.quote(age_text)} is not 1 to 10 digits", line)
    max_age = int(age_text)
    if max_age > MTA_STS_MAX_AGE_S:
        return PolicyError(
            f"max_age {max_age} is more than {MTA_STS_MAX_AGE_S} (a year, RFC 8461 §3.2)", line
        )
    if not mx and mode is not Mode.NONE:
        return PolicyError(f"mode {mode} needs at least one 'mx' field (RFC 8461 §3.2)")
    return Policy(mode, mx, max_age, notes)


# ---- MX matching (RFC 8461 §4.1) ------------------------------------------------------------


def mx_matches(pattern: str, host: str, /) -> bool:
    """mx_matches - whether MX ``host`` matches policy ``mx`` ``pattern`` (RFC 8461 §4.1).

    Case-insensitive, trailing dots ignored; a leading ``*.`` stands for exactly one label.

    >>> mx_matches("*.example.com", "MX1.example.com.")
    True
    >>> mx_matches("*.example.com", "a.b.example.com"), mx_matches("*.example.com", "example.com")
    (False, False)
    """
    pattern = pattern.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if not pattern or not host:
        return False
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        label = host.removesuffix(suffix) if host.endswith(suffix) else ""
        return bool(label) and "." not in label
    return pattern == host


# ---- what a lookup found (filled by mtasts_fetch) ---------------------------------------------


class FetchProblem(enum.StrEnum):
    """Why no policy could be obtained for a domain that may have one."""

    TXT_TEMPFAIL = "txt-tempfail"  # the _mta-sts TXT lookup failed (SERVFAIL, timeout)
    HOST_DNS = "host-dns"  # mta-sts.<domain> has no address, or its lookup failed
    CONNECT = "connect"  # the TCP connection failed
    TLS = "tls"  # handshake failed or the certificate is not PKIX-valid
    HTTP = "http"  # the HTTP exchange broke (closed, malformed, encoded body)
    STATUS = "status"  # an HTTP status other than 200 (and not a redirect)
    REDIRECT = "redirect"  # a 3xx: redirects are never followed (§3.3)
    CONTENT_TYPE = "content-type"  # not text/plain (§3.3)
    OVERSIZE = "oversize"  # more than MTA_STS_MAX_POLICY_BYTES
    TIMEOUT = "timeout"  # mtaStsTimeout passed before the policy was in
    INVALID_POLICY = "invalid-policy"  # fetched, but parse_policy rejected it

    @property
    def tlsrpt_result_type(self) -> str:
        """The RFC 8460 §4.3 result type a TLS report gives this failure."""
        match self:
            case FetchProblem.TLS:
                return "sts-webpki-invalid"
            case FetchProblem.INVALID_POLICY:
                return "sts-policy-invalid"
            case _:
                return "sts-policy-fetch-error"


@dataclass(frozen=True, slots=True)
class FetchFailure:
    """One failed discovery or fetch.

    :param problem: the class of failure.
    :param reason: an operator sentence naming the domain, the URL or record, and the fault.
    """

    problem: FetchProblem
    reason: str


class LookupStatus(enum.Enum):
    POLICY = "policy"  # a policy applies, fetched now or cached
    NONE = "none"  # the domain publishes no MTA-STS policy (a definite answer)
    UNAVAILABLE = "unavailable"  # it may have one, but none could be obtained, none cached


class Source(enum.Enum):
    FETCH = "fetch"  # fetched during this lookup
    CACHE = "cache"  # cached, and the TXT id is unchanged
    CACHE_REFRESH_FAILED = "cache-refresh-failed"  # cached; the TXT record or fetch failed


@dataclass(frozen=True, slots=True)
class PolicyLookup:
    """What the MTA-STS lookup of one domain found.

    :param domain: the policy domain, lowercase, without a trailing dot.
    :param status: POLICY, NONE or UNAVAILABLE.
    :param policy: the policy in force when POLICY, else None.
    :param policy_id: the TXT ``id`` the policy was fetched under; "" without policy.
    :param source: where the policy came from; None without policy.
    :param reason: why there is no policy (NONE, UNAVAILABLE), or why the cached one was used
        (CACHE_REFRESH_FAILED); "" otherwise.
    :param problem: the classified failure behind UNAVAILABLE or CACHE_REFRESH_FAILED, for
        TLS reports; None otherwise.
    """

    domain: str
    status: LookupStatus
    policy: Policy | None = None
    policy_id: str = ""
    source: Source | None = None
    reason: str = ""
    problem: FetchProblem | None = None

    @property
    def source_text(self) -> str:
        """The source as a phrase: fetch, cache, or cache (refresh failed: <why>); "" if none."""
        match self.source:
            case None:
                return ""
            case Source.FETCH:
                return "fetch"
            case Source.CACHE:
                return "cache"
            case Source.CACHE_REFRESH_FAILED:
                return f"cache (refresh failed: {self.reason})"
            case _ as unreachable:
                assert_never(unreachable)

    def describe(self) -> str:
        """One line for logs and ``explain``."""
        match self.status:
            case LookupStatus.POLICY:
                assert self.policy is not None
                return (
                    f"MTA-STS policy of {self.domain} (id {self.policy_id}, from "
                    f"{self.source_text}): {self.policy.describe()}"
                )
            case LookupStatus.NONE:
                return f"no MTA-STS policy for {self.domain}: {self.reason}"
            case LookupStatus.UNAVAILABLE:
                return f"no MTA-STS policy obtained: {self.reason}"
            case _ as unreachable:
                assert_never(unreachable)


# ---- the decision (RFC 8461 §4, §5) ----------------------------------------------------------


class Action(enum.Enum):
    """What MTA-STS means for one MX host (see the module docstring)."""

    SKIP = "skip"
    NOT_APPLICABLE = "not-applicable"
    ENFORCE = "enforce"
    REPORT_ONLY = "report-only"
    EXCLUDE_HOST = "exclude-host"
    DEFER = "defer"
    FAIL = "fail"


_USABLE = frozenset({Action.SKIP, Action.NOT_APPLICABLE, Action.ENFORCE, Action.REPORT_ONLY})


@dataclass(frozen=True, slots=True)
class MtaStsVerdict:
    """The MTA-STS decision for one MX host (or, with ``mx_host`` "", for the domain).

    :param action: what to do.
    :param domain: the policy domain.
    :param mx_host: the MX host, lowercase, without a trailing dot; "" for a domain verdict.
    :param reason: an operator sentence naming the domain, the host, the policy and its mode.
    :param lookup: what the lookup found; None under ``mtaSts: disable``.
    :param mx_listed: whether the policy lists the host; None without a policy in force.
    """

    action: Action
    domain: str
    mx_host: str
    reason: str
    lookup: PolicyLookup | None = None
    mx_listed: bool | None = None

    @property
    def usable(self) -> bool:
        """The host may be tried (with TLS required when ``tls_required``)."""
        return self.action in _USABLE

    @property
    def tls_required(self) -> bool:
        """TLS with a PKIX-valid certificate for the MX name is required: the engine's
        ``PolicyInputs.mta_sts_enforce``."""
        return self.action is Action.ENFORCE

    @property
    def permanent(self) -> bool:
        """The failure is permanent (``require`` and no policy published)."""
        return self.action is Action.FAIL

    @property
    def kind(self) -> LastError | None:
        """``last_error`` of the failure when the host is not usable; None when it is."""
        return None if self.usable else LastError.MTA_STS


def decide(lookup: PolicyLookup | None, mx_host: str, strategy: StsStrategy, /) -> MtaStsVerdict:
    """decide - what the domain's MTA-STS policy means for ``mx_host``.

    :param lookup: the domain's lookup (`MtaStsResolver.policy_for`); None only under
        ``disable``, where nothing is looked up.
    :param mx_host: the MX host name (any case, trailing dot or not).
    :param strategy: the ``mtaSts`` mode of the TLS strategy chosen for this host.
    :raises ValueError: ``lookup`` is None while ``strategy`` is not ``disable``.
    """
    return _decide(lookup, mx_host.lower().rstrip("."), strategy, _domain_verdict(lookup, strategy))


def _decide(
    lookup: PolicyLookup | None,
    host: str,
    strategy: StsStrategy,
    verdict: MtaStsVerdict | None,
    /,
) -> MtaStsVerdict:
    """`decide` for a normalized ``host``, given the domain's ``verdict`` (`_domain_verdict`)."""
    if verdict is not None:  # the domain's verdict for this host; built directly, not with
        # dataclasses.replace, which costs several times more on every host of every delivery
        return MtaStsVerdict(
            verdict.action, verdict.domain, host, verdict.reason, verdict.lookup, verdict.mx_listed
        )
    assert lookup is not None and lookup.policy is not None  # _domain_verdict checked
    policy = lookup.policy
    listed = policy.matches(host)
    enforced = policy.mode is Mode.ENFORCE or strategy == "require"
    mode = f"mode {policy.mode}" + (
        ", enforced because mtaSts is require" if policy.mode is not Mode.ENFORCE else ""
    )
    if enforced and listed:
        reason = (
            f"the MTA-STS policy of {lookup.domain} ({mode}) lists {host}: TLS required, "
            f"with a certificate valid for {host}"
        )
        action = Action.ENFORCE
    elif enforced:
        reason = (
            f"{host} is not listed in the MTA-STS policy of {lookup.domain} ({mode}; mx "
            f"{', '.join(policy.mx)}): never delivering to it"
        )
        action = Action.EXCLUDE_HOST
    else:
        listing = "lists" if listed else "does NOT list"
        reason = (
            f"the MTA-STS policy of {lookup.domain} (mode testing) {listing} {host}: "
            "delivering as usual, failures reported"
        )
        action = Action.REPORT_ONLY
    return MtaStsVerdict(action, lookup.domain, host, reason, lookup, listed)


def _domain_verdict(lookup: PolicyLookup | None, strategy: StsStrategy) -> MtaStsVerdict | None:
    """The verdict that does not depend on the host; None when a policy applies per host."""
    if strategy == "disable":
        domain = lookup.domain if lookup is not None else ""
        reason = "MTA-STS not consulted (the TLS strategy's mtaSts is disable)"
        return MtaStsVerdict(Action.SKIP, domain, "", reason, lookup)
    if lookup is None:
        raise ValueError(f"decide needs the domain's MTA-STS lookup under mtaSts {strategy}")
    domain = lookup.domain
    required = strategy == "require"
    match lookup.status:
        case LookupStatus.NONE:
            if required:
                reason = (
                    f"no MTA-STS policy published by {domain}, and the TLS strategy requires "
                    f"one (mtaSts: require): {lookup.reason}"
                )
                return MtaStsVerdict(Action.FAIL, domain, "", reason, lookup)
            return MtaStsVerdict(Action.NOT_APPLICABLE, domain, "", lookup.describe(), lookup)
        case LookupStatus.UNAVAILABLE:
            if required:
                reason = f"the TLS strategy requires MTA-STS (mtaSts: require), and {lookup.reason}"
                return MtaStsVerdict(Action.DEFER, domain, "", reason, lookup)
            reason = f"{lookup.describe()}; delivering as without MTA-STS (RFC 8461 §3.3)"
            return MtaStsVerdict(Action.NOT_APPLICABLE, domain, "", reason, lookup)
        case LookupStatus.POLICY:
            if lookup.policy is None:
                raise ValueError(f"the MTA-STS lookup of {domain} has status POLICY but no policy")
            if lookup.policy.mode is not Mode.NONE:
                return None
            if required:
                reason = (
                    f"the MTA-STS policy of {domain} is in mode none (no policy in force), and "
                    "the TLS strategy requires one (mtaSts: require)"
                )
                return MtaStsVerdict(Action.FAIL, domain, "", reason, lookup)
            reason = f"the MTA-STS policy of {domain} is in mode none: no policy in force"
            return MtaStsVerdict(Action.NOT_APPLICABLE, domain, "", reason, lookup)
        case _ as unreachable:
            assert_never(unreachable)


@dataclass(frozen=True, slots=True)
class MxScreening:
    """The MTA-STS verdicts of a domain's MX hosts, in the order given.

    :param verdicts: one per host.
    :param failure: set when no host may be used: a domain verdict (``mx_host`` "") whose
        action is DEFER (temporary) or FAIL (permanent); None when some host is usable.
    """

    verdicts: tuple[MtaStsVerdict, ...]
    failure: MtaStsVerdict | None

    @property
    def usable(self) -> tuple[str, ...]:
        """The hosts that may be tried, in order."""
        return tuple(v.mx_host for v in self.verdicts if v.usable)

    @property
    def excluded(self) -> tuple[MtaStsVerdict, ...]:
        """The verdicts of the hosts that must not be used, each with its reason."""
        return tuple(v for v in self.verdicts if not v.usable)

    def explain(self) -> list[str]:
        """One line per host, then the domain's failure if any."""
        lines = [f"{v.mx_host}: {v.action.value}: {v.reason}" for v in self.verdicts]
        if self.failure is not None:
            lines.append(f"domain: {self.failure.action.value}: {self.failure.reason}")
        return lines


def screen_mx(
    lookup: PolicyLookup | None, hosts: Sequence[str], strategy: StsStrategy, /
) -> MxScreening:
    """screen_mx - `decide` for every MX host, and the domain's failure when none is usable.

    Lets the engine drop unlisted hosts before connecting and say why; see `decide` for the
    arguments.
    """
    failure = _domain_verdict(lookup, strategy)  # once for every host
    verdicts = tuple(_decide(lookup, host.lower().rstrip("."), strategy, failure) for host in hosts)
    if failure is not None and failure.usable:
        failure = None
    if failure is None and verdicts and not any(v.usable for v in verdicts):
        assert lookup is not None and lookup.policy is not None  # only EXCLUDE_HOST is left
        names = ", ".join(v.mx_host for v in verdicts)
        reason = (
            f"no MX host of {lookup.domain} ({names}) is listed in its MTA-STS policy "
            f"({lookup.policy.describe()}): not delivering until one is"
        )
        failure = MtaStsVerdict(Action.DEFER, lookup.domain, "", reason, lookup, False)
    return MxScreening(verdicts, failure)
