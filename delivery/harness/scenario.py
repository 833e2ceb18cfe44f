"""Harness scenario files: a whole mail world in a few lines of TOML, parsed and checked.

A scenario declares recipient domains and, for each, its MX hosts (name, preference, loopback
address, TLS mode, scripted replies, advertised extensions, TLSA records), its DNSSEC status,
DNS faults, MTA-STS policy and policy-server behaviour, TLS-RPT record and extra records.
`load` / `parse` turn it into a frozen `Scenario`; `lab.Lab` runs it. Every name is a full
domain name (trailing dot optional).

```toml
description = "one line saying what this world is for"

[domains."example.test"]
dnssec = "secure"                      # secure | insecure (default) | bogus
tlsrpt = "mailto:tlsrpt@example.test"  # TXT _smtp._tls.<domain>
faults = { "mx2.example.test" = "timeout" }   # servfail | timeout | nxdomain, per name

[[domains."example.test".mx]]
name = "mx1.example.test"
preference = 10                        # default 10, 20, 30... in order
tls = "valid"                          # none | valid | self-signed | expired | not-yet-valid
                                       # | wrong-name | unknown-ca | no-server-auth | broken
intermediate = false                   # true: the leaf is issued by the harness intermediate
ip = "127.1.0.2"                       # default: the next free loopback address
down = false                           # true: A record, but nothing listens (refused)
implicit = false                       # true: no MX record; the A record is at the domain
tlsa = ["3 1 1", "2 0 1 ca"]           # usage selector mtype [leaf | issuer | ca | mismatch]
advertise = { pipelining = true, size = 1048576, chunking = true, requiretls = true }

[domains."example.test".mx.replies]    # per stage: "CODE text" or {reply, delay, close}
greeting = { delay = 2.5 }
mail = "451 4.3.0 try again later"
rcpt = { "*@fail.example.test" = "550 5.1.1 no such user" }
end_of_data = { reply = "250 2.0.0 ok", close = true }

[domains."example.test".mta_sts]
mode = "enforce"                       # enforce | testing | none
mx = ["*.example.test"]                # default: the domain's MX names
max_age = 86400
id = "20240101"                        # TXT id; default derived from the policy text
txt = true                             # false: no _mta-sts TXT; a string: that TXT text
status = 200                           # server behaviour: status, content_type, body,
content_type = "text/plain"            # redirect (Location), delay (s), pad_to (bytes),
cert = "valid"                         # cert (a TLS mode with a certificate), down

[[domains."example.test".records]]     # anything else, zone-file rdata
name = "example.test"
type = "TXT"
value = "v=spf1 -all"
```

Other keys of a domain: ``null_mx = true`` publishes ``MX 0 .`` (RFC 7505). An MX host that
several domains share is described once; elsewhere give only its name and preference.

Outcomes: `Scenario`; `ScenarioError` (a `ConfigError`) naming the file, the table and the key
at fault, and what is expected. Unknown keys are errors: a typo must not silently keep a
default.

Security: a scenario may name loopback addresses only (127.0.0.0/8).
Limits: IPv4 only (see `loopback`); no wildcards or delegations (see `dns_server`).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NoReturn, TypeVar, get_args

from delivery.errors import ConfigError
from delivery.harness import certs, dns_server, loopback, mtasts_server
from delivery.harness.smtp_script import (
    DEFAULT_EXTENSIONS,
    DEFAULT_SCRIPT,
    STAGES,
    Extensions,
    RcptRule,
    Reply,
    Script,
    Step,
)
from delivery.harness.smtp_server import TLS_MODES, TlsMode

__all__ = [
    "DomainSpec",
    "HostSpec",
    "MtaStsSpec",
    "MxSpec",
    "Scenario",
    "ScenarioError",
    "TlsaSpec",
    "load",
    "parse",
]

TlsaOrigin = Literal["leaf", "issuer", "ca", "mismatch"]
"""What a scenario TLSA record describes: the host's leaf, its issuer, the root CA, or an
unrelated certificate (a record that matches nothing the host presents)."""
TLSA_ORIGINS: tuple[TlsaOrigin, ...] = get_args(TlsaOrigin)

DEFAULT_MAX_AGE_S = 86400  # one day: long enough for a test run, short as policies go
MAX_MAX_AGE_S = 31557600  # RFC 8461 §3.2: max_age is at most 31557600 (about a year)
MAX_PREFERENCE = 65535  # MX preference is a 16-bit field (RFC 1035 §3.3.9)
MAX_DELAY_S = 3600.0  # a scripted delay longer than an hour is a typo
POLICY_ID_HEX_CHARS = 16  # default TXT id: a digest prefix (RFC 8461: 1-32 alphanumerics)
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_STEP_KEYS = {"reply", "delay", "close"}
_POLICY_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
T = TypeVar("T", bound=str)


class ScenarioError(ConfigError):
    """A scenario file is invalid.

    :param source: the file (or ``<string>``).
    :param table: the TOML table at fault, e.g. ``domains."example.test".mx[0]``.
    :param key: the key at fault in that table, or None for the table itself.
    :param reason: what is wrong and what is expected.
    """

    def __init__(self, source: str, table: str, key: str | None, reason: str, /) -> None:
        super().__init__(f"{table}.{key}" if key and table else key or table, reason)
        self.args = (source, table, key, reason)
        self.source, self.table, self.key = source, table, key

    def __str__(self) -> str:
        where = f"[{self.table}] " if self.table else ""
        what = f"{self.key}: " if self.key else ""
        return f"{self.source}: {where}{what}{self.reason}"


@dataclass(frozen=True, slots=True)
class TlsaSpec:
    """A TLSA record to derive from a host's certificates when the lab starts."""

    usage: int
    selector: int
    mtype: int
    origin: TlsaOrigin = "leaf"


@dataclass(frozen=True, slots=True)
class HostSpec:
    """An MX host: where it listens and how its receiver behaves."""

    name: str
    ip: str | None = None  # None: the lab picks a free loopback address
    tls: TlsMode = "valid"
    intermediate: bool = False  # leaf issued by the harness intermediate CA
    down: bool = False  # published in DNS, nothing listening
    script: Script = DEFAULT_SCRIPT
    extensions: Extensions = DEFAULT_EXTENSIONS
    tlsa: tuple[TlsaSpec, ...] = ()
    dnssec: dns_server.Dnssec = "insecure"  # of the zone made for it when no domain holds it


@dataclass(frozen=True, slots=True)
class MxSpec:
    """One MX record of a domain; ``implicit``: no MX record, the A record at the domain."""

    name: str
    preference: int
    implicit: bool = False


@dataclass(frozen=True, slots=True)
class MtaStsSpec:
    """A domain's MTA-STS TXT record and what its policy host serves."""

    policy: mtasts_server.Policy
    policy_id: str
    txt: str | None  # the _mta-sts TXT text, None: none published
    down: bool = False  # mta-sts.<domain> resolves, nothing listens


@dataclass(frozen=True, slots=True)
class DomainSpec:
    """A recipient domain: its zone's status and contents."""

    name: str
    dnssec: dns_server.Dnssec = "insecure"
    mx: tuple[MxSpec, ...] = ()
    null_mx: bool = False
    faults: Mapping[str, dns_server.Fault] = field(default_factory=dict)
    mta_sts: MtaStsSpec | None = None
    tlsrpt: str | None = None  # the _smtp._tls TXT text
    records: tuple[dns_server.RecordSpec, ...] = ()  # absolute owner names


@dataclass(frozen=True, slots=True)
class Scenario:
    """A parsed scenario: domains, and the MX hosts they use by name."""

    name: str
    description: str
    source: str
    domains: tuple[DomainSpec, ...]
    hosts: Mapping[str, HostSpec]

    def domain(self, name: str) -> DomainSpec:
        """The domain called ``name``; KeyError if the scenario has none."""
        wanted = name.lower().rstrip(".")
        for domain in self.domains:
            if domain.name == wanted:
                return domain
        raise KeyError(f"scenario {self.name} has no domain {wanted}")

    def zone_origins(self) -> list[str]:
        """The zones to serve: every domain, plus a zone for each host no domain contains."""
        origins = [domain.name for domain in self.domains]
        for host in self.hosts.values():
            if zone_of(host.name, origins) is None:
                origins.append(host.name.partition(".")[2] or host.name)
        return origins


def zone_of(name: str, origins: list[str]) -> str | None:
    """The longest origin in ``origins`` that contains ``name``, or None.

    >>> zone_of("mx1.example.test", ["test", "example.test"])
    'example.test'
    """
    best = None
    for origin in origins:
        if (name == origin or name.endswith("." + origin)) and len(origin) > len(best or ""):
            best = origin
    return best


def load(path: str | Path) -> Scenario:
    """Read and parse a scenario file.

    :raises ScenarioError: unreadable file, TOML syntax, or an invalid value.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(path), "", None, f"cannot read: {exc.strerror}") from exc
    return parse(text, source=str(path), name=path.stem)


def parse(
    scenario: str | Mapping[str, object], *, source: str = "<string>", name: str = "scenario"
) -> Scenario:
    """Parse a scenario from TOML text or an already-loaded mapping.

    :param source: how errors name the input (the file path, ``<string>``...).
    :param name: the scenario name unless the scenario gives one.
    :raises ScenarioError: naming the table and key at fault.
    """
    if isinstance(scenario, str):
        try:
            data: Mapping[str, object] = tomllib.loads(scenario)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(source, "", None, f"not valid TOML: {exc}") from exc
    else:
        data = scenario
    return _Parser(source).scenario(_Table(data, "", source), name)


class _Table:
    """Typed, tracked access to one TOML table: unknown keys are reported by `finish`."""

    def __init__(self, data: Mapping[str, object], path: str, source: str) -> None:
        self.data, self.path, self.source = data, path, source
        self.known: list[str] = []

    def fail(self, key: str | None, reason: str) -> NoReturn:
        raise ScenarioError(self.source, self.path, key, reason)

    def raw(self, key: str) -> object | None:
        self.known.append(key)
        return self.data.get(key)

    def string(self, key: str, default: str | None = None) -> str | None:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {_kind(value)}")
        return value

    def required_string(self, key: str) -> str:
        value = self.string(key)
        if value is None:
            self.fail(key, "is required")
        return value

    def choice(self, key: str, choices: tuple[T, ...], default: T) -> T:
        value = self.string(key)
        if value is None:
            return default
        for choice in choices:
            if value == choice:
                return choice
        self.fail(key, f"is {value!r}; expected one of {', '.join(choices)}")

    def integer(self, key: str, default: int, *, low: int = 0, high: int | None = None) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, not {_kind(value)}")
        if value < low or (high is not None and value > high):
            self.fail(key, f"is {value}; expected {low}..{high}" if high else f"must be >= {low}")
        return value

    def seconds(self, key: str) -> float:
        value = self.raw(key)
        if value is None:
            return 0.0
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"must be a number of seconds, not {_kind(value)}")
        if not 0 <= value <= MAX_DELAY_S:
            self.fail(key, f"is {value}; expected 0..{MAX_DELAY_S:g} seconds")
        return float(value)

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {_kind(value)}")
        return value

    def strings(self, key: str) -> list[str] | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(key, "must be an array of strings")
        return list(value)

    def table(self, key: str) -> _Table | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(key, f"must be a table, not {_kind(value)}")
        return _Table(
            value, f"{self.path}.{_quote(key)}" if self.path else _quote(key), self.source
        )

    def tables(self, key: str) -> list[_Table]:
        value = self.raw(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(key, "must be an array of tables ([[...]] or [{...}, ...])")
        base = self.subpath(key)
        return [_Table(v, f"{base}[{i}]", self.source) for i, v in enumerate(value)]

    def subpath(self, key: str) -> str:
        return f"{self.path}.{_quote(key)}" if self.path else _quote(key)

    def finish(self) -> None:
        for key in self.data:
            if key not in self.known:
                expected = ", ".join(sorted(set(self.known)))
                self.fail(key, f"unknown key; expected one of: {expected}")


def _kind(value: object) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _quote(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'


def _domain_name(table: _Table, key: str | None, text: str) -> str:
    name = text.lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        table.fail(key, f"{text!r} is not a domain name")
    return name


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.hosts: dict[str, HostSpec] = {}
        self.defined_at: dict[str, str] = {}

    def scenario(self, top: _Table, default_name: str) -> Scenario:
        name = top.string("name", default_name) or default_name
        description = top.string("description", "") or ""
        domains_table = top.table("domains")
        top.finish()
        if domains_table is None or not domains_table.data:
            top.fail("domains", 'is required: at least one [domains."<name>"] table')
        domains = []
        for key in domains_table.data:
            table = domains_table.table(key)
            assert table is not None
            domains.append(self.domain(_domain_name(domains_table, key, key), table))
        domains_table.finish()
        scenario = Scenario(
            name, description, self.source, tuple(domains), MappingProxyType(dict(self.hosts))
        )
        self.check_placement(scenario)
        self.check_addresses(scenario)
        return scenario

    def domain(self, name: str, table: _Table) -> DomainSpec:
        dnssec = table.choice("dnssec", get_args(dns_server.Dnssec), "insecure")
        mx = tuple(self.mx(i, t, dnssec) for i, t in enumerate(table.tables("mx")))
        null_mx = table.boolean("null_mx")
        if null_mx and mx:
            table.fail("null_mx", "a null MX (RFC 7505) cannot have other MX hosts")
        faults = self.faults(table.table("faults"))
        mx_names = [m.name for m in mx]
        sts_table = table.table("mta_sts")
        mta_sts = self.mta_sts(sts_table, mx_names) if sts_table is not None else None
        tlsrpt = table.string("tlsrpt")
        if tlsrpt is not None and not tlsrpt.startswith("v=TLSRPTv1"):
            tlsrpt = f"v=TLSRPTv1; rua={tlsrpt}"
        records = tuple(self.record(t) for t in table.tables("records"))
        table.finish()
        names = [m.name for m in mx]
        if len(set(names)) != len(names):
            table.fail("mx", "lists an MX host twice")
        for spec in mx:
            if spec.implicit and spec.name != name:
                table.fail("mx", f"implicit MX host {spec.name} must be named {name}")
        return DomainSpec(name, dnssec, mx, null_mx, faults, mta_sts, tlsrpt, records)

    def mx(self, index: int, table: _Table, dnssec: dns_server.Dnssec) -> MxSpec:
        name = _domain_name(table, "name", table.required_string("name"))
        preference = table.integer("preference", 10 * (index + 1), high=MAX_PREFERENCE)
        implicit = table.boolean("implicit")
        settings = set(table.data) - {"name", "preference", "implicit"}
        host = self.host(name, table, dnssec)
        table.finish()
        if settings:
            if name in self.defined_at:
                table.fail(
                    None,
                    f"host {name} is already described at [{self.defined_at[name]}]; "
                    "give its settings once, and only name and preference elsewhere",
                )
            self.defined_at[name] = table.path
            self.hosts[name] = host
        elif name not in self.hosts:
            self.hosts[name] = host  # the defaults, unless another entry describes it
        return MxSpec(name, preference, implicit)

    def host(self, name: str, table: _Table, dnssec: dns_server.Dnssec) -> HostSpec:
        ip = table.string("ip")
        if ip is not None:
            try:
                loopback.require_loopback(ip)
            except ValueError as exc:
                table.fail("ip", str(exc))
        tls = table.choice("tls", TLS_MODES, "valid")
        intermediate = table.boolean("intermediate")
        down = table.boolean("down")
        replies = table.table("replies")
        script = self.script(replies) if replies is not None else DEFAULT_SCRIPT
        advertise = table.table("advertise")
        extensions = self.extensions(advertise) if advertise is not None else DEFAULT_EXTENSIONS
        tlsa = tuple(self.tlsa(table, text) for text in table.strings("tlsa") or [])
        return HostSpec(name, ip, tls, intermediate, down, script, extensions, tlsa, dnssec)

    def step(self, table: _Table, key: str) -> Step:
        value = table.raw(key)
        if value is None:
            return Step()
        if isinstance(value, str):
            return Step(reply=self.reply(table, key, value))
        if not isinstance(value, dict):
            table.fail(key, 'must be a reply ("CODE text") or a table {reply, delay, close}')
        sub = table.table(key)
        assert sub is not None
        text = sub.string("reply")
        step = Step(
            reply=self.reply(sub, "reply", text) if text is not None else None,
            delay=sub.seconds("delay"),
            close=sub.boolean("close"),
        )
        sub.finish()
        return step

    def reply(self, table: _Table, key: str, text: str) -> Reply:
        try:
            return Reply.parse(text)
        except ValueError as exc:
            table.fail(key, str(exc))

    def script(self, table: _Table) -> Script:
        steps = {stage: self.step(table, stage) for stage in STAGES if stage != "rcpt"}
        rules: list[RcptRule] = []
        rcpt = table.raw("rcpt")
        if isinstance(rcpt, str) or (isinstance(rcpt, dict) and set(rcpt) <= _STEP_KEYS):
            rules.append(RcptRule("*", self.step(table, "rcpt")))  # one step for everyone
        elif rcpt is not None:
            patterns = table.table("rcpt")  # glob -> step, first match wins
            assert patterns is not None
            rules.extend(RcptRule(p, self.step(patterns, p)) for p in list(patterns.data))
            patterns.finish()
        table.finish()
        return Script(
            greeting=steps["greeting"],
            ehlo=steps["ehlo"],
            starttls=steps["starttls"],
            mail=steps["mail"],
            rcpt=tuple(rules),
            data=steps["data"],
            end_of_data=steps["end_of_data"],
            quit=steps["quit"],
        )

    def extensions(self, table: _Table) -> Extensions:
        size_value = table.raw("size")
        size: int | None = DEFAULT_EXTENSIONS.size
        if size_value is False:
            size = None
        elif size_value is not None:
            size = table.integer("size", 0, low=1)
        extensions = Extensions(
            pipelining=table.boolean("pipelining", DEFAULT_EXTENSIONS.pipelining),
            size=size,
            eightbitmime=table.boolean("8bitmime", DEFAULT_EXTENSIONS.eightbitmime),
            smtputf8=table.boolean("smtputf8", DEFAULT_EXTENSIONS.smtputf8),
            dsn=table.boolean("dsn", DEFAULT_EXTENSIONS.dsn),
            enhancedstatuscodes=table.boolean(
                "enhancedstatuscodes", DEFAULT_EXTENSIONS.enhancedstatuscodes
            ),
            chunking=table.boolean("chunking", DEFAULT_EXTENSIONS.chunking),
            requiretls=table.boolean("requiretls", DEFAULT_EXTENSIONS.requiretls),
        )
        table.finish()
        return extensions

    def tlsa(self, table: _Table, text: str) -> TlsaSpec:
        words = text.split()
        usage_text = "usage selector mtype [leaf | issuer | ca | mismatch]"
        if len(words) not in (3, 4) or not all(w.isdigit() for w in words[:3]):
            table.fail("tlsa", f'{text!r} is not {usage_text!r}, e.g. "3 1 1" or "2 0 1 ca"')
        usage, selector, mtype = (int(w) for w in words[:3])
        origin = words[3] if len(words) == 4 else "leaf"
        if origin not in TLSA_ORIGINS:
            table.fail("tlsa", f"{text!r}: the certificate is one of {', '.join(TLSA_ORIGINS)}")
        try:
            certs.check_tlsa_fields(usage, selector, mtype)
        except ValueError as exc:
            table.fail("tlsa", f"{text!r}: {exc}")
        return TlsaSpec(usage, selector, mtype, _tlsa_origin(origin))

    def faults(self, table: _Table | None) -> Mapping[str, dns_server.Fault]:
        if table is None:
            return {}
        faults = {}
        for key in list(table.data):
            fault = table.choice(key, get_args(dns_server.Fault), "servfail")
            faults[_domain_name(table, key, key)] = fault
        table.finish()
        return MappingProxyType(faults)

    def mta_sts(self, table: _Table, mx_names: list[str]) -> MtaStsSpec:
        mode = table.choice("mode", get_args(mtasts_server.StsMode), "enforce")
        patterns = table.strings("mx")
        max_age = table.integer("max_age", DEFAULT_MAX_AGE_S, high=MAX_MAX_AGE_S)
        version = table.string("version", "STSv1") or "STSv1"
        body = table.string("body")
        if body is None:
            body = mtasts_server.format_policy(
                mode, patterns if patterns is not None else mx_names, max_age, version=version
            )
        digest = hashlib.sha256(body.encode()).hexdigest()[:POLICY_ID_HEX_CHARS]
        policy_id = table.string("id", digest) or digest
        if not _POLICY_ID.match(policy_id):
            table.fail("id", f"{policy_id!r} must be 1-32 letters and digits (RFC 8461 §3.1)")
        txt_value = table.raw("txt")
        txt: str | None = mtasts_server.format_txt(policy_id)
        if txt_value is False:
            txt = None
        elif isinstance(txt_value, str):
            txt = txt_value
        elif txt_value is not None and txt_value is not True:
            table.fail("txt", "must be true, false or the TXT text")
        redirect = table.string("redirect")
        status = table.integer("status", 301 if redirect else 200, low=100, high=599)
        policy = mtasts_server.Policy(
            body=body,
            status=status,
            content_type=table.string("content_type", "text/plain") or "",
            location=redirect,
            delay=table.seconds("delay"),
            pad_to=table.integer("pad_to", 0, low=0) or None,
            cert=table.choice("cert", certs.CERT_KINDS, "valid"),
        )
        down = table.boolean("down")
        table.finish()
        return MtaStsSpec(policy, policy_id, txt, down)

    def record(self, table: _Table) -> dns_server.RecordSpec:
        name = _domain_name(table, "name", table.required_string("name"))
        rtype = table.required_string("type").upper()
        value = table.required_string("value")
        ttl = table.integer("ttl", 300, high=0x7FFFFFFF)
        table.finish()
        return dns_server.RecordSpec(name + ".", rtype, value, ttl)

    def check_addresses(self, scenario: Scenario) -> None:
        """Two hosts cannot listen on one address: they share the lab's one SMTP port."""
        seen: dict[str, str] = {}
        for host in scenario.hosts.values():
            if host.ip is None:
                continue
            if host.ip in seen:
                raise ScenarioError(
                    self.source,
                    self.defined_at.get(host.name, "domains"),
                    "ip",
                    f"{host.ip} is also the address of {seen[host.ip]}",
                )
            seen[host.ip] = host.name

    def check_placement(self, scenario: Scenario) -> None:
        """Every fault and extra record falls inside a served zone; every record is valid."""
        origins = scenario.zone_origins()
        for domain in scenario.domains:
            table = f'domains."{domain.name}"'
            for name in domain.faults:
                if zone_of(name, origins) is None:
                    raise ScenarioError(self.source, table, "faults", f"{name} is in no zone")
            for index, record in enumerate(domain.records):
                zone = zone_of(record.name.rstrip("."), origins)
                if zone is None:
                    raise ScenarioError(
                        self.source, table, "records", f"{record.name} is in no zone"
                    )
                try:  # compiling the zone checks the rdata as the DNS server will read it
                    dns_server.DnsServer([dns_server.ZoneSpec(f"{zone}.", records=(record,))])
                except ValueError as exc:
                    raise ScenarioError(
                        self.source, f"{table}.records[{index}]", "value", str(exc)
                    ) from exc


def _tlsa_origin(text: str) -> TlsaOrigin:
    for origin in TLSA_ORIGINS:
        if origin == text:
            return origin
    raise ValueError(text)
