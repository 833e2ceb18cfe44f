"""Settings file and environment overrides: defaults, precedence and errors that name the fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from delivery import config
from delivery.errors import ConfigError

FULL_EXAMPLE = """
hostname = "mta.example.org"
[store]
url = "sqlite:///var/lib/delivery/delivery.db"
[api]
listen = "127.0.0.1:8080"
[[api.tokens]]
name = "admin"
secret = "change-me"
permissions = ["*"]
[[api.tokens]]
name = "reader"
secret_sha256 = "%s"
permissions = ["sysMtaTlsStrategyGet"]
[submission]
listen = "127.0.0.1:2525"
networks = ["127.0.0.0/8", "::1/128"]
[dns]
nameservers = ["127.0.0.1:53"]
timeout = "5s"
dnssec = "trust-ad"
[local]
domains = ["Example.ORG"]
[smtp]
port = 25
[tls]
ca_file = "/etc/delivery/extra-ca.pem"
""" % ("ab" * 32)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "delivery.toml"
    path.write_text(text)
    return path


def test_embedded_defaults_when_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = config.load(environ={})
    assert settings.source == "embedded defaults"
    assert settings.store.url == f"sqlite://{tmp_path}/delivery-data/delivery.db"
    assert config.sqlite_path(settings.store.url) == tmp_path / "delivery-data" / "delivery.db"
    assert settings.data_dir == tmp_path / "delivery-data"
    assert settings.api.listen == "127.0.0.1:8080"
    assert settings.api.tokens == []
    assert settings.dns.timeout_ms == 5000 and settings.dns.dnssec == "trust-ad"
    assert settings.smtp.port == 25 and settings.tls.ca_file is None


def test_design_example_file_is_accepted_as_written(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, FULL_EXAMPLE), environ={})
    assert settings.hostname == "mta.example.org"
    assert settings.store.url == "sqlite:///var/lib/delivery/delivery.db"
    assert [t.name for t in settings.api.tokens] == ["admin", "reader"]
    assert settings.api.tokens[1].permissions == ["sysMtaTlsStrategyGet"]
    assert settings.dns.servers() == [("127.0.0.1", 53)]
    assert settings.local.domains == ["example.org"]
    assert settings.tls.ca_file == "/etc/delivery/extra-ca.pem"


def test_dot_toml_in_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, 'hostname = "here.example"\n')
    monkeypatch.chdir(tmp_path)
    assert config.load(environ={}).hostname == "here.example"


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_EXAMPLE)
    environ = {
        "DELIVERY_DNS_NAMESERVERS": "127.0.0.53:5353, [::1]:5354",
        "DELIVERY_DNS_TIMEOUT": "2s",
        "DELIVERY_SMTP_PORT": "2525",
        "DELIVERY_HOSTNAME": "env.example",
        "DELIVERY_TLS_CA_FILE": "/tmp/ca.pem",
        "DELIVERY_LOCAL_DOMAINS": '["a.example", "b.example"]',
        "DELIVERY_URL": "http://127.0.0.1:8080",  # the CLI's, not a setting
        "DELIVERY_TOKEN": "x",
    }
    settings = config.load(path, environ=environ)
    assert settings.dns.servers() == [("127.0.0.53", 5353), ("::1", 5354)]
    assert settings.dns.timeout_ms == 2000
    assert settings.smtp.port == 2525
    assert settings.hostname == "env.example"
    assert settings.tls.ca_file == "/tmp/ca.pem"
    assert settings.local.domains == ["a.example", "b.example"]


ERRORS = [  # (label, file text or None, environment, field named, words in the reason)
    ("syntax", "[dns\n", {}, "delivery.toml", "line 1"),
    ("unknown section", "[dnss]\ntimeout = 1\n", {}, "dnss", "unknown setting"),
    ("unknown key", "[dns]\ntimeuot = 1\n", {}, "dns.timeuot", "unknown setting"),
    ("bad duration", '[dns]\ntimeout = "soon"\n', {}, "dns.timeout", "not a duration"),
    ("zero duration", '[dns]\ntimeout = "0s"\n', {}, "dns.timeout", "greater than 0"),
    ("bad dnssec", '[dns]\ndnssec = "yes"\n', {}, "dns.dnssec", "trust-ad"),
    ("nameserver not an IP", '[dns]\nnameservers = ["ns.example:53"]\n', {}, "dns.nameservers", ""),
    ("listen without port", '[api]\nlisten = "127.0.0.1"\n', {}, "api.listen", "no port"),
    ("bad network", '[submission]\nnetworks = ["300.0.0.0/8"]\n', {}, "submission.networks", ""),
    ("bad store", '[store]\nurl = "mysql://x"\n', {}, "store.url", "sqlite://"),
    ("store without file", '[store]\nurl = "sqlite://"\n', {}, "store.url", "no database file"),
    ("port out of range", "[smtp]\nport = 70000\n", {}, "smtp.port", "less than 65536"),
    (
        "token two secrets",
        '[[api.tokens]]\nname="a"\nsecret="x"\nsecret_sha256="%s"\n' % ("0" * 64),
        {},
        "api.tokens",
        "exactly one",
    ),
    ("env bad value", None, {"DELIVERY_DNS_TIMEOUT": "abc"}, "dns.timeout", "DELIVERY_DNS_TIMEOUT"),
    (
        "env unknown key",
        None,
        {"DELIVERY_DNS_TIMEOUTS": "1s"},
        "DELIVERY_DNS_TIMEOUTS",
        "no setting",
    ),
]


@pytest.mark.parametrize(
    ("label", "text", "environ", "field", "words"), ERRORS, ids=[e[0] for e in ERRORS]
)
def test_bad_settings_name_the_field(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    label: str,
    text: str | None,
    environ: dict[str, str],
    field: str,
    words: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, text) if text is not None else None
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ=environ)
    assert caught.value.field.endswith(field)
    assert words in caught.value.reason


def test_relative_sqlite_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = config.load(write(tmp_path, '[store]\nurl = "sqlite://data/q.db"\n'), environ={})
    assert config.sqlite_path(settings.store.url) == tmp_path / "data" / "q.db"


def test_missing_file_named_explicitly_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "absent.toml", environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:25", ("::1", 25)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_host_port(text: str, expected: tuple[str, int]) -> None:
    assert config.host_port(text) == expected


def test_listen_addresses_may_ask_for_a_free_port(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, '[api]\nlisten = "127.0.0.1:0"\n'), environ={})
    assert config.host_port(settings.api.listen, allow_port_zero=True) == ("127.0.0.1", 0)


@pytest.mark.parametrize("text", ["127.0.0.1:0", "127.0.0.1:x", ":25", "[::1]"])
def test_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        config.host_port(text)


def test_resolv_conf_is_only_the_fallback(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# comment\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n")
    assert config.resolv_conf_nameservers(str(resolv)) == ["127.0.0.53:53", "[::1]:53"]


def test_dnssec_probe_and_tls_reports_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    defaults = config.load(environ={})
    assert defaults.dns.dnssec_probe == "."  # the root: signed, checkable by any validator
    assert defaults.tlsrpt.enabled
    assert defaults.tlsrpt.organization is None and defaults.tlsrpt.contact is None
    settings = config.load(
        write(
            tmp_path,
            '[dns]\ndnssec_probe = "Signed.Example"\n'
            '[tlsrpt]\nenabled = false\norganization = "Example Mail"\n'
            'contact = "tlsrpt@example.org"\n',
        ),
        environ={"DELIVERY_TLSRPT_ORGANIZATION": "Example Ops"},
    )
    assert settings.dns.dnssec_probe == "signed.example."
    assert not settings.tlsrpt.enabled
    assert settings.tlsrpt.organization == "Example Ops"
    assert settings.tlsrpt.contact == "tlsrpt@example.org"


@pytest.mark.parametrize(
    ("environ", "field", "words"),
    [
        ({"DELIVERY_DNS_DNSSEC_PROBE": "a..b"}, "dns.dnssec_probe", "invalid domain name"),
        ({"DELIVERY_TLSRPT_CONTACT": "nobody"}, "tlsrpt.contact", "mail address"),
        ({"DELIVERY_TLSRPT_CONTACT": "a <b@c>"}, "tlsrpt.contact", "mail address"),
    ],
)
def test_bad_probe_name_or_contact_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], field: str, words: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        config.load(environ=environ)
    assert caught.value.field == field and words in caught.value.reason
