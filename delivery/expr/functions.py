"""The function table of the strategy expression language: name -> arity and implementation.

Every function is total: whatever values it is given, it returns a value and never raises, so
that a compiled expression cannot fail at run time (the one exception is ``dns_query``, which
raises NeedsLookup to ask for an answer, see environment.py). Arguments are converted with the
rules of values.py: a string function given a number reads its text, a test returns 1 or 0.

Functions that transform text (``trim``, ``to_lowercase``, ``email_part``...) given an array
apply to each item and return an array, so that ``to_lowercase(recipients)`` works.

Text functions:
    contains(haystack, needle)          array: an item equals needle; else substring test
    contains_ignore_case(haystack, n)   the same, ignoring case
    eq_ignore_case(a, b)                texts equal ignoring case
    starts_with(text, prefix)           ends_with(text, suffix)
    len(value)                          characters of a string, items of an array
    to_lowercase / to_uppercase / trim / trim_start / trim_end (value)
    split(text, separator)              array of parts; "" as separator splits characters
    split_once / rsplit_once(text, sep) [head, tail] at the first / last sep; [] if absent
    substring(text, start, count)       ``count`` characters from ``start`` (0-based)
    strip_prefix / strip_suffix(text, affix)   text without it; "" when it is not there
    hash(value, 'md5'|'sha1'|'sha256'|'sha512')   lowercase hex digest of the UTF-8 text
Arrays:
    count(value)                        items of an array; 0 for "", else 1
    is_empty(value)                     1 for "" and []
    is_intersect(a, b)                  an item of a equals an item of b (a scalar is [scalar])
    sort(array[, ascending])            numbers before strings before arrays; ascending
                                        unless the second argument is false
    dedup(array)                        repeated items removed, first kept
    winnow(array)                       empty items ("" and []) removed
Addresses:
    email_part(address, 'local'|'domain')   part around the last '@', trimmed; "" without '@'
    is_email(value)                     a plausible dot-atom address with a dotted domain
    is_ip_addr / is_ipv4_addr / is_ipv6_addr(value)
    is_ip_in_cidr(ip, cidr)             ``cidr`` may be a bare address; an IPv4-mapped IPv6
                                        address matches IPv4 networks
    ip_reverse_name(ip)                 nibble / octet reversed name without the
                                        in-addr.arpa or ip6.arpa suffix (for DNSBL queries)
Numbers:
    is_number(value)                    a number, or a string that reads as one
Environment:
    is_local_domain(domain)             domain (lowercased, trailing dot removed) is one of
                                        ``[local] domains``
    dns_query(name, type)               the answer list, [] for an empty name, a name longer
                                        than 253 characters or a type it does not know
Special forms (compiled by compile.py, see SPECIAL_FORMS):
    if_then(condition, a, b)            a when condition is true, else b; only the branch
                                        taken is evaluated
    matches(regex, value)               1 when ``re.search`` finds regex in value (an array:
                                        in any item); its groups become $0, $1, ...

Security: values are attacker-influenced (addresses, DNS answers); every function's work is
linear in its input except ``matches``, whose patterns come from administrators (Python's
``re`` backtracks: avoid nested quantifiers such as ``(a+)+``).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from delivery.expr import values
from delivery.expr.environment import Environment, NeedsLookup
from delivery.expr.limits import MAX_DNS_NAME_LENGTH, MAX_REGEX_LENGTH, RUNTIME_REGEX_CACHE_SIZE
from delivery.expr.values import Value, equals, to_text

__all__ = [
    "DNS_RECORD_TYPES",
    "FUNCTIONS",
    "HASH_ALGORITHMS",
    "SPECIAL_FORMS",
    "Function",
    "Signature",
    "compile_regex",
    "search",
    "signature",
]

HASH_ALGORITHMS = frozenset({"md5", "sha1", "sha256", "sha512"})
DNS_RECORD_TYPES = frozenset({"A", "AAAA", "CNAME", "MX", "NS", "PTR", "TLSA", "TXT"})
EMAIL_PARTS = frozenset({"local", "domain"})


@dataclass(frozen=True, slots=True)
class Signature:
    """How a function may be called, checked at compile time.

    :param min_args: fewest arguments.
    :param max_args: most arguments.
    :param choices: argument index -> the texts allowed there, ignoring case; a literal
        outside them is a compile error (at run time such a value gives "" or []).
    """

    min_args: int
    max_args: int
    choices: Mapping[int, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Function:
    """A function of the table: its signature and its implementation.

    ``impl`` takes the argument values; when ``needs_env`` it takes the Environment first.
    Functions without ``needs_env`` are pure: calls with constant arguments are folded.
    """

    signature: Signature
    impl: Callable[..., Value]
    needs_env: bool = False


def _test(condition: bool, /) -> int:
    return 1 if condition else 0


def _each(transform: Callable[[str], Value], /) -> Callable[[Value], Value]:
    """Lift a text transform: applied to the text, or to each item's text of an array."""

    def apply(value: Value, /) -> Value:
        if isinstance(value, list):
            return [transform(to_text(item)) for item in value]
        return transform(to_text(value))

    return apply


def _whole(value: Value, /) -> int:
    """A non-negative whole number for positions and counts; 0 for anything else."""
    number = values.to_number(value)
    if isinstance(number, float):
        number = int(number) if number == number and abs(number) != float("inf") else 0
    return max(number, 0)


def _items(value: Value, /) -> list[Value]:
    """An array as itself; "" as no items; any other value as a one-item array."""
    if isinstance(value, list):
        return value
    return [] if value == "" else [value]


# Text.


def _contains(haystack: Value, needle: Value, /) -> int:
    if isinstance(haystack, list):
        return _test(any(equals(item, needle) for item in haystack))
    return _test(to_text(needle) in to_text(haystack))


def _contains_ignore_case(haystack: Value, needle: Value, /) -> int:
    wanted = to_text(needle).lower()
    if isinstance(haystack, list):
        return _test(any(to_text(item).lower() == wanted for item in haystack))
    return _test(wanted in to_text(haystack).lower())


def _eq_ignore_case(left: Value, right: Value, /) -> int:
    return _test(to_text(left).lower() == to_text(right).lower())


def _starts_with(text: Value, prefix: Value, /) -> int:
    return _test(to_text(text).startswith(to_text(prefix)))


def _ends_with(text: Value, suffix: Value, /) -> int:
    return _test(to_text(text).endswith(to_text(suffix)))


def _len(value: Value, /) -> int:
    return len(value) if isinstance(value, list) else len(to_text(value))


def _split(text: Value, separator: Value, /) -> Value:
    source, sep = to_text(text), to_text(separator)
    parts: list[Value] = list(source) if sep == "" else list(source.split(sep))
    return parts


def _split_once(text: Value, separator: Value, /) -> Value:
    source, sep = to_text(text), to_text(separator)
    if sep not in source:
        return []
    # An empty separator is found before the first character ("" in "abc").
    head, _, tail = source.partition(sep) if sep else ("", "", source)
    return [head, tail]


def _rsplit_once(text: Value, separator: Value, /) -> Value:
    source, sep = to_text(text), to_text(separator)
    if sep not in source:
        return []
    # An empty separator is found after the last character.
    head, _, tail = source.rpartition(sep) if sep else (source, "", "")
    return [head, tail]


def _substring(text: Value, start: Value, count: Value, /) -> str:
    first = _whole(start)
    return to_text(text)[first : first + _whole(count)]


def _strip_prefix(text: Value, prefix: Value, /) -> Value:
    affix = to_text(prefix)
    return _each(lambda item: item[len(affix) :] if item.startswith(affix) else "")(text)


def _strip_suffix(text: Value, suffix: Value, /) -> Value:
    affix = to_text(suffix)
    return _each(lambda item: item[: len(item) - len(affix)] if item.endswith(affix) else "")(text)


def _hash(value: Value, algorithm: Value, /) -> str:
    name = to_text(algorithm).lower()
    if name not in HASH_ALGORITHMS:
        return ""
    digest = hashlib.new(name, usedforsecurity=False)
    # surrogatepass: a lone surrogate (possible in JSON input) still hashes, never raises.
    digest.update(to_text(value).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


# Arrays.


def _count(value: Value, /) -> int:
    return len(value) if isinstance(value, list) else _test(value != "")


def _is_empty(value: Value, /) -> int:
    return _test(value == "" or value == [])


def _is_intersect(left: Value, right: Value, /) -> int:
    first, second = _items(left), _items(right)
    if all(isinstance(item, str) for item in first) and all(
        isinstance(item, str) for item in second
    ):
        return _test(not set(map(to_text, first)).isdisjoint(map(to_text, second)))
    return _test(any(equals(a, b) for a in first for b in second))


def _sort_key(value: Value, /) -> tuple[int, float | str]:
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, to_text(value))


def _sort(value: Value, ascending: Value = 1, /) -> Value:
    return sorted(_items(value), key=_sort_key, reverse=not ascending)


def _identity(value: Value, /) -> object:
    """A hashable stand-in for ``value``: ``1`` and ``1.0`` are the same, ``"1"`` is not."""
    if isinstance(value, list):
        return ("array", tuple(map(_identity, value)))
    if isinstance(value, str):
        return ("text", value)
    return ("number", value)


def _dedup(value: Value, /) -> Value:
    seen: set[object] = set()
    kept: list[Value] = []
    for item in _items(value):
        key = _identity(item)
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def _winnow(value: Value, /) -> Value:
    return [item for item in _items(value) if item != "" and item != []]


# Addresses.


def _email_part(address: Value, part: Value, /) -> Value:
    which = to_text(part).lower()

    def extract(text: str) -> str:
        local, at, domain = text.rpartition("@")
        if not at or which not in EMAIL_PARTS:
            return ""
        return (local if which == "local" else domain).strip()

    return _each(extract)(address)


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_LABEL = (
    r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?"
)
_EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+")


def _is_email(value: Value, /) -> int:
    return _test(_EMAIL.fullmatch(to_text(value)) is not None)


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(value: Value, /) -> _Address | None:
    try:
        return ipaddress.ip_address(to_text(value))
    except ValueError:
        return None


@functools.lru_cache(maxsize=256)
def _network(text: str, /) -> _Network | None:
    """The network ``text`` names (a bare address is a /32 or /128), cached: rules repeat."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _is_ip_addr(value: Value, /) -> int:
    return _test(_address(value) is not None)


def _is_ipv4_addr(value: Value, /) -> int:
    return _test(isinstance(_address(value), ipaddress.IPv4Address))


def _is_ipv6_addr(value: Value, /) -> int:
    return _test(isinstance(_address(value), ipaddress.IPv6Address))


def _is_ip_in_cidr(ip: Value, cidr: Value, /) -> int:
    address, network = _address(ip), _network(to_text(cidr))
    if address is None or network is None:
        return 0
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if mapped is not None and isinstance(network, ipaddress.IPv4Network):
        return _test(mapped in network)
    return _test(address in network)


def _ip_reverse_name(ip: Value, /) -> str:
    address = _address(ip)
    if address is None:
        return ""
    suffix = ".in-addr.arpa" if isinstance(address, ipaddress.IPv4Address) else ".ip6.arpa"
    return address.reverse_pointer.removesuffix(suffix)


# Numbers.


def _is_number(value: Value, /) -> int:
    if isinstance(value, int | float):
        return 1
    return _test(isinstance(value, str) and values.parse_number(value) is not None)


# Environment.


def _is_local_domain(env: Environment, domain: Value, /) -> int:
    return _test(to_text(domain).lower().rstrip(".") in env.local_domains)


def _dns_query(env: Environment, name: Value, rtype: Value, /) -> Value:
    key = (to_text(name).lower(), to_text(rtype).upper())
    if not key[0] or len(key[0]) > MAX_DNS_NAME_LENGTH or key[1] not in DNS_RECORD_TYPES:
        return []
    answer = env.dns_answers.get(key)
    if answer is None:
        raise NeedsLookup(*key)
    return answer


# Regular expressions, for matches() (the special form itself lives in compile.py).


def compile_regex(pattern: str, /) -> re.Pattern[str] | str:
    """The compiled pattern, or the reason it is refused (too long or invalid).

    ``re.compile`` raises re.error on a syntax error, OverflowError on a repeat count too
    large and RecursionError on a pattern nested too deeply for its compiler.
    """
    if len(pattern) > MAX_REGEX_LENGTH:
        return f"regular expression longer than {MAX_REGEX_LENGTH} characters"
    try:
        return re.compile(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc.msg} (at offset {exc.pos} of the pattern)"
    except (OverflowError, RecursionError) as exc:
        return f"invalid regular expression: {exc}"


@functools.lru_cache(maxsize=RUNTIME_REGEX_CACHE_SIZE)
def _runtime_regex(pattern: str, /) -> re.Pattern[str] | None:
    compiled = compile_regex(pattern)
    return compiled if isinstance(compiled, re.Pattern) else None


def search(regex: re.Pattern[str] | Value, value: Value, /) -> re.Match[str] | None:
    """The first match of ``regex`` in ``value`` (in the first array item that matches).

    ``regex`` is a compiled literal pattern, or a run-time value whose text is compiled (and
    cached); a run-time pattern that is invalid or too long never matches.
    """
    pattern = regex if isinstance(regex, re.Pattern) else _runtime_regex(to_text(regex))
    if pattern is None:
        return None
    for item in value if isinstance(value, list) else (value,):
        found = pattern.search(to_text(item))
        if found is not None:
            return found
    return None


def _function(
    min_args: int,
    max_args: int,
    impl: Callable[..., Value],
    /,
    *,
    choices: Mapping[int, frozenset[str]] | None = None,
    needs_env: bool = False,
) -> Function:
    return Function(Signature(min_args, max_args, choices or {}), impl, needs_env)


FUNCTIONS: Mapping[str, Function] = {
    # text
    "contains": _function(2, 2, _contains),
    "contains_ignore_case": _function(2, 2, _contains_ignore_case),
    "eq_ignore_case": _function(2, 2, _eq_ignore_case),
    "starts_with": _function(2, 2, _starts_with),
    "ends_with": _function(2, 2, _ends_with),
    "len": _function(1, 1, _len),
    "to_lowercase": _function(1, 1, _each(str.lower)),
    "to_uppercase": _function(1, 1, _each(str.upper)),
    "trim": _function(1, 1, _each(str.strip)),
    "trim_start": _function(1, 1, _each(str.lstrip)),
    "trim_end": _function(1, 1, _each(str.rstrip)),
    "split": _function(2, 2, _split),
    "split_once": _function(2, 2, _split_once),
    "rsplit_once": _function(2, 2, _rsplit_once),
    "substring": _function(3, 3, _substring),
    "strip_prefix": _function(2, 2, _strip_prefix),
    "strip_suffix": _function(2, 2, _strip_suffix),
    "hash": _function(2, 2, _hash, choices={1: HASH_ALGORITHMS}),
    # arrays
    "count": _function(1, 1, _count),
    "is_empty": _function(1, 1, _is_empty),
    "is_intersect": _function(2, 2, _is_intersect),
    "sort": _function(1, 2, _sort),
    "dedup": _function(1, 1, _dedup),
    "winnow": _function(1, 1, _winnow),
    # addresses
    "email_part": _function(2, 2, _email_part, choices={1: EMAIL_PARTS}),
    "is_email": _function(1, 1, _is_email),
    "is_ip_addr": _function(1, 1, _is_ip_addr),
    "is_ipv4_addr": _function(1, 1, _is_ipv4_addr),
    "is_ipv6_addr": _function(1, 1, _is_ipv6_addr),
    "is_ip_in_cidr": _function(2, 2, _is_ip_in_cidr),
    "ip_reverse_name": _function(1, 1, _ip_reverse_name),
    # numbers
    "is_number": _function(1, 1, _is_number),
    # environment
    "is_local_domain": _function(1, 1, _is_local_domain, needs_env=True),
    "dns_query": _function(2, 2, _dns_query, choices={1: DNS_RECORD_TYPES}, needs_env=True),
}

SPECIAL_FORMS: Mapping[str, Signature] = {
    "if_then": Signature(3, 3),
    "matches": Signature(2, 2),
}
"""Functions compile.py builds itself: ``if_then`` evaluates only the branch taken, and
``matches`` compiles a literal pattern once and sets the ``$n`` captures."""


def signature(name: str, /) -> Signature | None:
    """The signature of function ``name``, special forms included; None when unknown."""
    function = FUNCTIONS.get(name)
    if function is not None:
        return function.signature
    return SPECIAL_FORMS.get(name)
