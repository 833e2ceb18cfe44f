"""`delivery eval` through click's CliRunner, with settings files and the harness DNS server."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from delivery.cli import eval as eval_cli
from delivery.cli.main import main
from delivery.expr import Context
from delivery.harness.dns_server import DnsServer, RecordSpec, ZoneSpec

TLS_CONDITION = "retry_num > 0 && last_error == 'tls'"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["eval", *args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ./delivery.toml and no DELIVERY_* overrides leak in from the caller."""
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.startswith("DELIVERY_")]:
        monkeypatch.delenv(name)


def settings_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("args", "stdout"),
    [
        ([TLS_CONDITION, "--var", "retry_num=1", "--var", "last_error=tls"], "1\n"),
        ([TLS_CONDITION, "--var", "retry_num=0", "--var", "last_error=tls"], "0\n"),
        ([TLS_CONDITION], "0\n"),
        (["'invalid-tls'"], "invalid-tls\n"),
        (["7 / 2"], "3.5\n"),
        (["split(rcpt, '@')", "--var", "rcpt=a@example.org"], '["a", "example.org"]\n'),
        (["rcpt", "--var", "rcpt="], "\n"),
        (["last_status", "--var", "last_status=250 2.0.0 a=b"], "250 2.0.0 a=b\n"),
    ],
)
def test_prints_the_result(args: list[str], stdout: str) -> None:
    result = run(*args)
    assert (result.exit_code, result.stdout, result.stderr) == (0, stdout, "")


@pytest.mark.parametrize(
    ("expression", "printed"),
    [
        ("'tls'", "tls"),
        ("1 + 1", 2),
        ("1 / 4", 0.25),
        ("[1, 'a', [2.5]]", [1, "a", [2.5]]),
        ("received_via_port", 587),
        ("recipients", ["a@x.test", 2]),
        ("size + 1.5", 3.5),
    ],
)
def test_json_output_is_typed(expression: str, printed: object) -> None:
    result = run(
        expression,
        "--json",
        "--var",
        "received_via_port=587",
        "--var",
        'recipients=["a@x.test", 2]',
        "--var",
        "size=2",
    )
    assert result.exit_code == 0, result.stderr
    decoded = json.loads(result.stdout)
    assert decoded == printed and type(decoded) is type(printed)


def test_json_output_of_an_infinite_float_is_text() -> None:
    result = run("1.0 * 9223372036854775807" + " * 9223372036854775807" * 20, "--json")
    assert (result.exit_code, result.stdout) == (0, '"inf"\n')


def test_compile_error_goes_to_stderr_with_a_caret_and_exits_2() -> None:
    result = run("retry_num > 0 && last_error == tls")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "error: unknown variable 'tls' (to return the text, quote it: 'tls') at position 31\n"
        "  retry_num > 0 && last_error == tls\n"
        "                                 ^\n"
    )


def test_the_curl_example_without_its_inner_quotes_explains_itself() -> None:
    result = run("default")
    assert result.exit_code == 2
    assert "quote it: 'default'" in result.stderr


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["1", "--var", "nobody=1"], "unknown variable 'nobody' in the host context"),
        (["1", "--var", "retry_num"], "'retry_num' is not NAME=VALUE"),
        (["1", "--var", "=1"], "'=1' is not NAME=VALUE"),
        (["1", "--context", "rcpt", "--var", "mx=a"], "it is a host variable"),
        (["1", "--var", "recipients=[1, nul"], "is not a JSON array"),
        (["1", "--var", 'recipients=[{"a": 1}]'], "is not a JSON array"),
        (["1", "--context", "smtp"], "'smtp' is not one of 'rcpt', 'host'"),
    ],
)
def test_bad_arguments_exit_2_naming_the_fault(args: list[str], reason: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert reason in result.stderr


def test_context_rcpt_rejects_host_variables() -> None:
    assert run("mx", "--context", "rcpt").exit_code == 2
    assert run("mx", "--context", "host", "--var", "mx=mx1.test").stdout == "mx1.test\n"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("3", 3),
        ("-2", -2),
        ("1.5", 1.5),
        ("007", 7),
        ("[]", []),
        ('["a", 1, [true]]', ["a", 1, [1]]),
        ("tls", "tls"),
        ("", ""),
        ("1.2.3.4", "1.2.3.4"),
        ("[not json", None),
    ],
)
def test_parse_value(raw: str, value: object) -> None:
    if value is None:
        with pytest.raises(click.BadParameter):
            eval_cli.parse_value(raw)
    else:
        assert eval_cli.parse_value(raw) == value


def test_parse_assignment_keeps_equals_signs_in_the_value() -> None:
    assert eval_cli.parse_assignment("last_status=a=b", Context.RCPT) == ("last_status", "a=b")


def test_is_local_domain_reads_the_local_domains_of_the_settings(tmp_path: Path) -> None:
    settings = settings_file(tmp_path, '[local]\ndomains = ["Example.ORG"]\n')
    route = "if_then(is_local_domain(rcpt_domain), 'local', 'mx')"
    local = run(
        route, "--context", "rcpt", "--var", "rcpt_domain=example.org", "--config", settings
    )
    remote = run(
        route, "--context", "rcpt", "--var", "rcpt_domain=example.net", "--config", settings
    )
    assert (local.exit_code, local.stdout) == (0, "local\n")
    assert (remote.exit_code, remote.stdout) == (0, "mx\n")


def test_without_settings_no_domain_is_local() -> None:
    result = run("is_local_domain('example.org')")
    assert (result.exit_code, result.stdout) == (0, "0\n")


def test_reads_delivery_toml_of_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "delivery.toml").write_text('[local]\ndomains = ["here.test"]\n')
    assert run("is_local_domain('here.test')").stdout == "1\n"


def test_a_bad_settings_file_exits_2(tmp_path: Path) -> None:
    settings = settings_file(tmp_path, "[local]\ndomain = ['typo.test']\n")
    result = run("1", "--config", settings)
    assert result.exit_code == 2
    assert "local.domain" in result.stderr


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """The harness DNS server on 127.0.0.1, served from a thread of its own: the command
    under test runs its own event loop."""
    zone = ZoneSpec(
        "example.test",
        records=(
            RecordSpec("@", "MX", "10 mx1.example.test."),
            RecordSpec("mx1", "A", "127.0.0.2"),
        ),
        faults={"broken": "servfail"},
    )
    server = DnsServer([zone], host="127.0.0.1")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=5)
    yield server
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


def dns_settings(tmp_path: Path, server: DnsServer) -> str:
    host, port = server.address
    return settings_file(
        tmp_path, f'[dns]\nnameservers = ["{host}:{port}"]\ntimeout = "2s"\ndnssec = "off"\n'
    )


def test_dns_query_asks_the_configured_nameservers(tmp_path: Path, dns_server: DnsServer) -> None:
    settings = dns_settings(tmp_path, dns_server)
    expression = "dns_query(rcpt_domain, 'MX')[0] + ' ' + dns_query('mx1.example.test', 'A')[0]"
    result = run(expression, "--var", "rcpt_domain=Example.TEST", "--config", settings)
    assert (result.exit_code, result.stdout) == (0, "10 mx1.example.test. 127.0.0.2\n")
    assert [name for name, _ in dns_server.queries] == ["example.test.", "mx1.example.test."]


def test_dns_query_of_a_missing_name_is_an_empty_answer(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    settings = dns_settings(tmp_path, dns_server)
    result = run("dns_query('none.example.test', 'A')", "--json", "--config", settings)
    assert (result.exit_code, result.stdout) == (0, "[]\n")


def test_dns_query_that_fails_exits_1(tmp_path: Path, dns_server: DnsServer) -> None:
    settings = dns_settings(tmp_path, dns_server)
    result = run("dns_query('broken.example.test', 'A')", "--config", settings)
    assert result.exit_code == 1
    assert "dns_query('broken.example.test', 'A') failed" in result.stderr
