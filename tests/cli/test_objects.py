"""`delivery get|create|update|delete|query` against a running API, shaped like stalwart-cli.

Each stalwart-cli example of the reference pages is split with the shell's rules (`shlex`), so
the arguments are exactly what a shell passes, and run as the matching `delivery` command.
Commands run through click's CliRunner in a worker thread while the API serves on the loop;
one test runs the real `python -m delivery` executable.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import socket
import sys
from typing import Any

import pytest
from click.testing import CliRunner, Result

from delivery.cli.main import main
from delivery.cli.objects import parse_value
from tests.plugins.api import ADMIN_TOKEN, READONLY_TOKEN, RunningApi, daemon_environment


async def delivery(api_url: str, args: list[str], *, token: str | None = ADMIN_TOKEN) -> Result:
    """Run `delivery ARGS` with DELIVERY_URL / DELIVERY_TOKEN pointing at the API."""
    env = {"DELIVERY_URL": api_url, "DELIVERY_TOKEN": token}
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, main, args, env=env, catch_exceptions=False)


def page_example(command: str) -> list[str]:
    """A page's stalwart-cli command as the shell would pass it, without the program name."""
    words = shlex.split(command)
    assert words[0] == "stalwart-cli"
    return words[1:]


async def tls_id(api: RunningApi, name: str) -> str:
    _, found, _ = await api.call("x:MtaTlsStrategy/query", {"filter": {"name": name}})
    _, got, _ = await api.call("x:MtaTlsStrategy/get", {"ids": found["ids"]})
    [obj] = [o for o in got["list"] if o["name"] == name]
    identifier: str = obj["id"]
    return identifier


VALUE_CASES = [  # (text after NAME=, value sent)
    ('{"else":"\'default\'"}', {"else": "'default'"}),
    ("[1, 2]", [1, 2]),
    ("5m", "5m"),
    ("300000", 300000),
    ("true", True),
    ("null", None),
    ('"42"', "42"),
    ("updated value", "updated value"),
    ("strict", "strict"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "value"), VALUE_CASES)
def test_field_values_are_json_first_then_strings(text: str, value: Any) -> None:
    assert parse_value(text) == value


# --- The reference pages' examples ------------------------------------------------------------


async def test_get_outbound_strategy(api: RunningApi) -> None:
    result = await delivery(api.url, page_example("stalwart-cli get MtaOutboundStrategy"))
    assert result.exit_code == 0, result.output
    assert "connection" in result.output and "is_local_domain(rcpt_domain)" in result.output
    as_json = await delivery(api.url, ["get", "MtaOutboundStrategy", "--json"])
    [singleton] = json.loads(as_json.stdout)["list"]
    assert singleton["id"] == "singleton" and singleton["connection"]["else"] == "'default'"


async def test_update_outbound_strategy_as_the_page_writes_it(api: RunningApi) -> None:
    args = page_example(
        "stalwart-cli update MtaOutboundStrategy "
        """--field connection='{"else":"'\\''default'\\''"}'"""
    )
    assert args[-1] == """connection={"else":"'default'"}"""
    await api.call(
        "x:MtaOutboundStrategy/set",
        {"update": {"singleton": {"connection": {"else": "'other'"}}}},
    )
    result = await delivery(api.url, args)
    assert result.exit_code == 0, result.output
    assert "Updated MtaOutboundStrategy singleton" in result.output
    _, got, _ = await api.call("x:MtaOutboundStrategy/get", {"ids": ["singleton"]})
    assert got["list"][0]["connection"]["else"] == "'default'"


async def test_get_tls_strategy_by_id(api: RunningApi) -> None:
    missing = await delivery(api.url, page_example("stalwart-cli get MtaTlsStrategy id1"))
    assert missing.exit_code == 1
    assert "MtaTlsStrategy id1: not found" in missing.stderr
    default_id = await tls_id(api, "default")
    found = await delivery(api.url, ["get", "MtaTlsStrategy", default_id])
    assert found.exit_code == 0, found.output
    assert "startTls" in found.stdout and "optional" in found.stdout


async def test_get_all_tls_strategies(api: RunningApi) -> None:
    result = await delivery(api.url, ["get", "MtaTlsStrategy", "--json"])
    assert result.exit_code == 0
    assert {o["name"] for o in json.loads(result.stdout)["list"]} == {"default", "invalid-tls"}


async def test_create_tls_strategy(api: RunningApi) -> None:
    bare = await delivery(api.url, page_example("stalwart-cli create MtaTlsStrategy"))
    assert bare.exit_code == 1
    assert "MtaTlsStrategy (new): cannot create (invalidProperties, property name)" in bare.stderr
    made = await delivery(
        api.url,
        ["create", "MtaTlsStrategy", "--field", "name=strict", "--field", "startTls=require"],
    )
    assert made.exit_code == 0, made.output
    strict_id = await tls_id(api, "strict")
    assert made.stdout.strip() == f"Created MtaTlsStrategy {strict_id}"
    _, got, _ = await api.call("x:MtaTlsStrategy/get", {"ids": [strict_id]})
    assert got["list"][0]["startTls"] == "require"


async def test_query_tls_strategies(api: RunningApi) -> None:
    everything = await delivery(api.url, page_example("stalwart-cli query MtaTlsStrategy"))
    assert everything.exit_code == 0, everything.output
    assert "default" in everything.stdout and "invalid-tls" in everything.stdout
    await api.call("x:MtaTlsStrategy/set", {"create": {"n": {"name": "example"}}})
    example = await delivery(
        api.url, page_example("stalwart-cli query MtaTlsStrategy --where name=example")
    )
    assert example.exit_code == 0, example.output
    assert "example" in example.stdout and "invalid-tls" not in example.stdout
    as_json = await delivery(
        api.url, ["query", "MtaTlsStrategy", "--where", "name=example", "--json"]
    )
    assert json.loads(as_json.stdout)["ids"] == [await tls_id(api, "example")]


async def test_update_tls_strategy(api: RunningApi) -> None:
    command = "stalwart-cli update MtaTlsStrategy id1 --field description='updated value'"
    missing = await delivery(api.url, page_example(command))
    assert missing.exit_code == 1
    assert "MtaTlsStrategy id1: cannot update (notFound)" in missing.stderr
    default_id = await tls_id(api, "default")
    result = await delivery(api.url, page_example(command.replace("id1", default_id)))
    assert result.exit_code == 0, result.output
    _, got, _ = await api.call("x:MtaTlsStrategy/get", {"ids": [default_id]})
    assert got["list"][0]["description"] == "updated value"


async def test_delete_tls_strategy(api: RunningApi) -> None:
    missing = await delivery(api.url, page_example("stalwart-cli delete MtaTlsStrategy --ids id1"))
    assert missing.exit_code == 1
    assert "MtaTlsStrategy id1: cannot delete (notFound)" in missing.stderr
    _, made, _ = await api.call(
        "x:MtaTlsStrategy/set", {"create": {"a": {"name": "a"}, "b": {"name": "b"}}}
    )
    ids = [made["created"][k]["id"] for k in ("a", "b")]
    result = await delivery(api.url, ["delete", "MtaTlsStrategy", "--ids", ",".join(ids)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"Deleted MtaTlsStrategy {i}" for i in ids]


# --- Errors -------------------------------------------------------------------------------------


async def test_invalid_value_names_object_id_and_property(api: RunningApi) -> None:
    default_id = await tls_id(api, "default")
    result = await delivery(
        api.url, ["update", "MtaTlsStrategy", default_id, "--field", "startTls=maybe"]
    )
    assert result.exit_code == 1
    assert f"MtaTlsStrategy {default_id}: cannot update (invalidProperties, property startTls)" in (
        result.stderr
    )


async def test_forbidden_is_refused(api: RunningApi) -> None:
    result = await delivery(
        api.url, ["create", "MtaTlsStrategy", "--field", "name=x"], token=READONLY_TOKEN
    )
    assert result.exit_code == 1
    assert "x:MtaTlsStrategy/set refused (forbidden)" in result.stderr


@pytest.mark.parametrize(
    ("token", "message"),
    [("wrong", "401 Unauthorized: the token was refused"), (None, "no token given")],
    ids=["wrong token", "no token"],
)
async def test_unauthorized(api: RunningApi, token: str | None, message: str) -> None:
    result = await delivery(api.url, ["get", "MtaOutboundStrategy"], token=token)
    assert result.exit_code == 1 and message in result.stderr


async def test_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await delivery(f"http://127.0.0.1:{port}", ["get", "MtaOutboundStrategy"])
    assert result.exit_code == 1
    assert f"cannot reach the API at http://127.0.0.1:{port}/api: connection refused" in (
        result.stderr
    )


@pytest.mark.parametrize(
    "args",
    [
        ["update", "MtaTlsStrategy", "x", "--field", "no-equals-sign"],
        ["update", "MtaTlsStrategy", "x"],
        ["create", "MtaTlsStrategy", "--field", "=value"],
        ["delete", "MtaTlsStrategy"],
        ["query", "MtaTlsStrategy", "--limit", "-1"],
    ],
    ids=["field without =", "update without field", "empty name", "delete without ids", "limit"],
)
async def test_usage_errors_exit_2(api: RunningApi, args: list[str]) -> None:
    result = await delivery(api.url, args)
    assert result.exit_code == 2, result.output


async def test_url_from_the_settings_file(api: RunningApi, tmp_path: Any) -> None:
    settings = tmp_path / "cli.toml"
    settings.write_text(f'[api]\nlisten = "{api.url.removeprefix("http://")}"\n')
    env = {"DELIVERY_URL": None, "DELIVERY_TOKEN": ADMIN_TOKEN}
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, main, ["get", "MtaOutboundStrategy", "--config", str(settings)], env=env
    )
    assert result.exit_code == 0, result.output


async def test_the_installed_command(api: RunningApi) -> None:
    env = {**daemon_environment(), "DELIVERY_URL": api.url, "DELIVERY_TOKEN": ADMIN_TOKEN}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "delivery",
        "get",
        "MtaTlsStrategy",
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert len(json.loads(stdout)["list"]) == 2
