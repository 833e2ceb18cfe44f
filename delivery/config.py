"""Daemon settings: the TOML settings file, environment overrides, validated into one model.

The settings file holds what is not a managed object (DESIGN §6): hostname, store, API listener
and tokens, submission listener, resolver, local domains, SMTP port, extra trust anchors, who
signs TLS reports and the worker's lease.
Managed objects (strategies, routes, schedules...) live in the store and change through the API.

Sources, later ones win:
    1. embedded defaults (this module);
    2. the settings file: ``--config FILE``, else ``./delivery.toml`` when present;
    3. environment variables ``DELIVERY_<SECTION>_<KEY>`` (``DELIVERY_HOSTNAME`` for the top
       level), e.g. ``DELIVERY_DNS_NAMESERVERS=127.0.0.1:5353,127.0.0.1:5354``. List values are
       comma-separated or a JSON array. ``DELIVERY_*`` names that are not settings (such as the
       CLI's ``DELIVERY_URL`` and ``DELIVERY_TOKEN``) are left alone.

Outcomes:
    load() returns a frozen Settings; any fault raises ConfigError naming the setting (or the
    file and line for a TOML syntax error, or the environment variable) and what is expected.
    Unknown keys are errors, never ignored: a typo must not silently keep a default.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from delivery import durations
from delivery.dns import names
from delivery.errors import ConfigError
from delivery.submit import defaults as submit_defaults

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_DNSSEC_PROBE",
    "DEFAULT_LEASE_MS",
    "ENV_PREFIX",
    "MIN_LEASE_MS",
    "ApiToken",
    "Settings",
    "TlsRptSettings",
    "WorkerSettings",
    "host_port",
    "load",
    "resolv_conf_nameservers",
    "sqlite_path",
]

DEFAULT_CONFIG_FILE = "delivery.toml"
ENV_PREFIX = "DELIVERY_"
DEFAULT_DATA_DIR = "delivery-data"
RESOLV_CONF = "/etc/resolv.conf"
SQLITE_SCHEME = "sqlite://"
DEFAULT_DNSSEC_PROBE = "."
"""The name whose SOA answer must carry AD for the resolver to count as validating: the root,
signed since 2010, which every validating resolver can check (Postfix's ``dnssec_probe``)."""


def sqlite_path(url: str, /) -> Path:
    """The database file of a ``sqlite://`` store URL: everything after ``sqlite://``.

    >>> sqlite_path("sqlite:///var/lib/delivery/delivery.db")
    PosixPath('/var/lib/delivery/delivery.db')
    """
    if not url.startswith(SQLITE_SCHEME):
        raise ValueError(f"{url!r} is not a sqlite:// store URL")
    return Path(url.removeprefix(SQLITE_SCHEME))


def host_port(
    text: str, /, *, default_port: int | None = None, allow_port_zero: bool = False
) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) into its parts.

    ``allow_port_zero`` is for listen addresses: port 0 asks the system for a free port.

    >>> host_port("127.0.0.1:8080"), host_port("[::1]:25"), host_port("127.0.0.1", default_port=53)
    (('127.0.0.1', 8080), ('::1', 25), ('127.0.0.1', 53))
    """
    host, sep, port = text.rpartition(":")
    if text.startswith("[") and "]" in text:
        inside, _, rest = text[1:].partition("]")
        host, port = inside, rest[1:] if rest.startswith(":") else ""
        sep = ":" if port else ""
    elif text.count(":") > 1 or not sep:  # a bare IPv6 address or a bare host
        host, port = text, ""
    if not port:
        if default_port is None:
            raise ValueError(f"{text!r} has no port: write host:port, e.g. 127.0.0.1:8080")
        return host, default_port
    lowest = 0 if allow_port_zero else 1
    if not port.isdigit() or not lowest <= int(port) < 65536:
        raise ValueError(f"{text!r} has an invalid port {port!r}")
    if not host:
        raise ValueError(f"{text!r} has no host")
    return host, int(port)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration_ms(value: Any) -> Any:
    """A duration given as text (``"5s"``) becomes milliseconds; numbers pass through."""
    return durations.parse_duration(value) if isinstance(value, str) else value


def _listen(value: str) -> str:
    host_port(value, allow_port_zero=True)
    return value


class StoreSettings(_Section):
    url: str = f"sqlite://{DEFAULT_DATA_DIR}/delivery.db"
    """``sqlite://<file path>`` (``sqlite:///var/lib/d.db`` is absolute) or ``postgresql://...``."""

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value.startswith(SQLITE_SCHEME):
            if not value.removeprefix(SQLITE_SCHEME):
                raise ValueError("names no database file: write sqlite:///path/to/delivery.db")
        elif not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:// (a file path follows) or postgresql://")
        return value


class _Secret(_Section):
    """A named credential given as a plain ``secret`` or as its ``secret_sha256`` hex digest."""

    name: str = Field(min_length=1)
    secret: str | None = None
    secret_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")

    @pydantic.model_validator(mode="after")
    def _one_secret(self) -> Self:
        if (self.secret is None) == (self.secret_sha256 is None):
            raise ValueError(f"{self.name!r} needs exactly one of secret or secret_sha256")
        return self

    def digest(self) -> str:
        """The SHA-256 of the secret, as lowercase hex."""
        if self.secret_sha256 is not None:
            return self.secret_sha256.lower()
        assert self.secret is not None
        return hashlib.sha256(self.secret.encode()).hexdigest()


class ApiToken(_Secret):
    permissions: list[str] = ["*"]


class ApiSettings(_Section):
    listen: str = "127.0.0.1:8080"
    tokens: list[ApiToken] = []

    _check_listen = field_validator("listen")(_listen)


class SubmissionUser(_Secret):
    """A ``[[submission.users]]`` entry: credentials for SMTP AUTH."""


class SubmissionSettings(_Section):
    listen: str = "127.0.0.1:2525"
    networks: list[str] = ["127.0.0.0/8", "::1/128"]
    tls_cert: str | None = None
    tls_key: str | None = None
    max_message_size: int = Field(default=submit_defaults.DEFAULT_MAX_MESSAGE_BYTES, gt=0)
    max_recipients: int = Field(default=submit_defaults.DEFAULT_MAX_RECIPIENTS, gt=0)
    max_sessions: int = Field(default=submit_defaults.DEFAULT_MAX_SESSIONS, gt=0)
    idle_timeout_ms: int = Field(
        default=int(submit_defaults.DEFAULT_IDLE_TIMEOUT_S * 1000), alias="idle_timeout", gt=0
    )
    require_auth: bool = False
    auth_in_clear: bool = False
    users: list[SubmissionUser] = []

    _check_listen = field_validator("listen")(_listen)

    _check_idle_timeout = field_validator("idle_timeout_ms", mode="before")(_duration_ms)

    @pydantic.model_validator(mode="after")
    def _tls_pair(self) -> SubmissionSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.require_auth and not self.users:
            raise ValueError("require_auth needs at least one [[submission.users]] entry")
        return self

    @field_validator("networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value


class DnsSettings(_Section):
    nameservers: list[str] = []
    """Resolvers as host:port; empty means the nameservers of /etc/resolv.conf."""
    timeout_ms: int = Field(default=5000, alias="timeout", gt=0)
    dnssec: Literal["trust-ad", "off"] = "trust-ad"
    dnssec_probe: str = DEFAULT_DNSSEC_PROBE
    """A DNSSEC-signed name the resolver must answer with AD for DANE to be used (checked at
    start and every minute); change it only for a resolver that cannot reach the root."""

    @field_validator("dnssec_probe")
    @classmethod
    def _probe_name(cls, value: str) -> str:
        try:
            return names.normalize_name(value)
        except names.InvalidName as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, value: list[str]) -> list[str]:
        for server in value:
            try:
                names.parse_nameserver(server)
            except ConfigError as exc:
                raise ValueError(exc.reason) from exc
        return value

    _check_timeout = field_validator("timeout_ms", mode="before")(_duration_ms)

    def servers(self) -> list[tuple[str, int]]:
        """The resolvers to use, as (ip, port) pairs (`names.parse_nameserver`).

        :raises ConfigError: a resolv.conf nameserver that is not an IP address.
        """
        configured = self.nameservers or resolv_conf_nameservers()
        return [names.parse_nameserver(server) for server in configured]


class LocalSettings(_Section):
    domains: list[str] = []

    @field_validator("domains")
    @classmethod
    def _lowercase(cls, value: list[str]) -> list[str]:
        return [domain.strip().rstrip(".").lower() for domain in value]


class SmtpSettings(_Section):
    port: int = Field(default=25, gt=0, lt=65536)


class TlsSettings(_Section):
    ca_file: str | None = None


class TlsRptSettings(_Section):
    """Who signs the daily TLS reports (RFC 8460 §4.4) and whether they are made at all."""

    enabled: bool = True
    """Record TLS session results and send the daily reports to domains that ask for them."""
    organization: str | None = Field(default=None, min_length=1)
    """The report's organization-name; None: the ``hostname`` setting."""
    contact: str | None = None
    """The report's contact-info and the From of report mails; None: tlsrpt-noreply@hostname."""

    @field_validator("contact")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        local, at, domain = (value or "").rpartition("@")
        if value is not None and (
            not at or not local or not domain or any(c.isspace() or c in "<>" for c in value)
        ):
            raise ValueError("must be a mail address such as tlsrpt@example.org")
        return value


DEFAULT_LEASE_MS = 31 * 60_000
"""How long a node holds the recipients it takes: the worker's 30-minute attempt timeout plus
a minute to record the outcome (engine/worker.py)."""

MIN_LEASE_MS = 1000
"""Shorter leases could lapse while a delivery to a healthy host is still running, and that
host would get the message twice."""


class WorkerSettings(_Section):
    """The delivery worker of this node."""

    lease_ms: int = Field(default=DEFAULT_LEASE_MS, alias="lease", ge=MIN_LEASE_MS)
    """How long a node holds the recipients it takes for one attempt. A node that dies holds
    them until then; the other nodes (or this one, restarted) then take them over. An attempt
    is cut off (and deferred) shortly before its lease ends (engine/worker.py)."""

    _check_lease = field_validator("lease_ms", mode="before")(_duration_ms)


class Settings(_Section):
    """Every daemon setting (DESIGN §6), validated and frozen."""

    hostname: str = Field(default_factory=socket.gethostname, min_length=1)
    store: StoreSettings = StoreSettings()
    api: ApiSettings = ApiSettings()
    submission: SubmissionSettings = SubmissionSettings()
    dns: DnsSettings = DnsSettings()
    local: LocalSettings = LocalSettings()
    smtp: SmtpSettings = SmtpSettings()
    tls: TlsSettings = TlsSettings()
    tlsrpt: TlsRptSettings = TlsRptSettings()
    worker: WorkerSettings = WorkerSettings()
    source: str = Field(default="embedded defaults", exclude=True)
    """Where the settings came from, for logs: the file path or "embedded defaults"."""

    @property
    def data_dir(self) -> Path:
        """The folder for local data (SQLite database, local maildirs)."""
        url = self.store.url
        if url.startswith(SQLITE_SCHEME):
            return sqlite_path(url).parent
        return Path(DEFAULT_DATA_DIR).absolute()


def resolv_conf_nameservers(path: str = RESOLV_CONF) -> list[str]:
    """The ``nameserver`` lines of resolv.conf, used only when ``[dns] nameservers`` is empty."""
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    servers = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append(names.format_nameserver((fields[1], names.DEFAULT_DNS_PORT)))
    return servers


def load(path: str | Path | None = None, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the embedded defaults, the settings file and the environment.

    :param path: the settings file; None means ``./delivery.toml`` if it exists.
    :param environ: the environment to read overrides from (``os.environ`` by default).
    :raises ConfigError: naming the setting, file line or variable at fault.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source = "embedded defaults"
    file = Path(path) if path is not None else Path(DEFAULT_CONFIG_FILE)
    if path is not None or file.exists():
        data, source = _read_toml(file), str(file)
    from_env = _apply_environment(data, environ)
    try:
        settings = Settings.model_validate({**data, "source": source})
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
        reason = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            reason = "unknown setting (check its spelling and section against the README)"
        origin = from_env.get(field) or source
        raise ConfigError(field or "settings", f"{reason} (from {origin})") from exc
    return _absolute_store(settings)


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(str(file), f"cannot read the settings file: {exc.strerror}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), f"not valid TOML: {exc}") from exc


def _section_fields() -> dict[str, type[BaseModel]]:
    sections = {}
    for name, info in Settings.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections[name] = annotation
    return sections


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Merge ``DELIVERY_*`` overrides into ``data``; returns setting path -> variable name."""
    sections = _section_fields()
    applied: dict[str, str] = {}
    for variable, value in environ.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        name = variable.removeprefix(ENV_PREFIX).lower()
        if name == "hostname":
            data["hostname"] = value
            applied["hostname"] = variable
            continue
        section, _, key = name.partition("_")
        model = sections.get(section)
        if model is None or not key:
            continue  # not a setting (e.g. DELIVERY_URL for the CLI)
        field = next(
            (
                f
                for f, info in model.model_fields.items()
                if key in (f, info.alias) and f not in ("tokens", "users")
            ),
            None,
        )
        if field is None:
            raise ConfigError(variable, f"[{section}] has no setting {key!r}")
        info = model.model_fields[field]
        target = data.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(section, "must be a table")
        key = info.alias or field
        target[key] = _env_value(value, info.annotation, variable)
        applied[f"{section}.{key}"] = variable
    return applied


def _env_value(value: str, annotation: Any, variable: str) -> Any:
    if typing.get_origin(annotation) is not list:
        return value
    if value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(variable, f"not a valid JSON array: {exc}") from exc
        return parsed
    return [item.strip() for item in value.split(",") if item.strip()]


def _absolute_store(settings: Settings) -> Settings:
    """Make a relative SQLite path absolute, so that a later chdir cannot move the queue."""
    url = settings.store.url
    if not url.startswith(SQLITE_SCHEME):
        return settings
    db_path = sqlite_path(url)
    if db_path.is_absolute():
        return settings
    store = settings.store.model_copy(update={"url": f"{SQLITE_SCHEME}{db_path.absolute()}"})
    return settings.model_copy(update={"store": store})
