"""``x:Explain/get`` (its permission, its arguments) and ``delivery explain`` (JSON and the
human report) against a running daemon on the plain scenario."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from delivery.cli import explain as cli_explain
from delivery.cli.main import main
from tests.explain.conftest import ADMIN_TOKEN, NO_EXPLAIN_TOKEN, ExplainDaemon, MakeExplainDaemon
from tests.plugins.harness import MakeLab

PLAIN = Path(__file__).parents[2] / "fixtures" / "scenarios" / "plain.toml"


@pytest.fixture
async def daemon(make_lab: MakeLab, explain_daemon: MakeExplainDaemon) -> ExplainDaemon:
    return await explain_daemon(await make_lab(PLAIN))


async def run_cli(daemon: ExplainDaemon, *args: str, token: str = ADMIN_TOKEN) -> Result:
    """``delivery explain ARGS`` in a thread (its client blocks; the daemon runs here)."""
    assert daemon.daemon.runtime.api_url is not None
    options = ["--url", daemon.daemon.runtime.api_url, "--token", token]
    return await asyncio.to_thread(
        CliRunner().invoke, main, ["explain", *args, *options], catch_exceptions=False
    )


async def test_explain_needs_the_sysexplainget_permission(daemon: ExplainDaemon) -> None:
    name, arguments, _ = await daemon.call({"recipient": "b@plain.test"}, token=NO_EXPLAIN_TOKEN)
    assert (name, arguments["type"]) == ("error", "forbidden")
    assert "sysExplainGet" in arguments["description"]


INVALID: list[tuple[dict[str, Any], str]] = [  # (arguments, words of the description)
    ({}, "'recipient' is required"),
    ({"recipient": 5}, "'recipient' must be an address"),
    ({"recipient": "b"}, "'recipient': 'b' is not a valid address: it has no @domain"),
    ({"recipient": "b@plain.test", "sender": "a b@x.test"}, "'sender': 'a b@x.test' is not"),
    ({"recipient": "b@plain.test", "sender": ["a@x.test"]}, "'sender' must be an address"),
    ({"recipient": "b@plain.test", "rcpt": "c@plain.test"}, "unknown argument 'rcpt'"),
]


async def test_invalid_arguments_are_refused_naming_the_argument(daemon: ExplainDaemon) -> None:
    for arguments, words in INVALID:
        name, answer, _ = await daemon.call(arguments)
        assert (name, answer["type"]) == ("error", "invalidArguments"), arguments
        assert words in answer["description"], answer


async def test_the_answer_is_a_list_of_one_explanation_with_the_sender_given(
    daemon: ExplainDaemon,
) -> None:
    name, answer, _ = await daemon.call(
        {"recipient": "<b@plain.test>", "sender": "a@origin.test", "accountId": "any"}
    )
    assert name == "x:Explain/get"
    [explained] = answer["list"]
    assert (explained["recipient"], explained["sender"]) == ("b@plain.test", "a@origin.test")
    assert explained["variables"]["sender_domain"] == "origin.test"
    null = await daemon.explain("b@plain.test", sender="")
    assert null["sender"] == "" and null["variables"]["sender"] == ""


def comparable(explained: dict[str, Any]) -> dict[str, Any]:
    """The explanation without what changes from one call to the next (time, DNS TTLs)."""
    copied = copy.deepcopy(explained)
    copied.pop("at")
    copied["variables"].pop("queue_age")
    copied["variables"].pop("expires_in")
    for lookup in [copied["mx"]["lookup"], *(lk for h in copied["hosts"] for lk in h["lookups"])]:
        lookup.pop("ttl")
        lookup.pop("detail")
    return copied


async def test_the_command_prints_the_api_json_or_a_report_decision_first(
    daemon: ExplainDaemon,
) -> None:
    result = await run_cli(daemon, "b@plain.test", "--from", "a@origin.test", "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    api = await daemon.explain("b@plain.test", sender="a@origin.test")
    assert comparable(printed) == comparable(api)

    report = await run_cli(daemon, "b@plain.test")
    assert report.exit_code == 0, report.output
    lines = report.output.splitlines()
    assert lines[0].startswith("delivery explain b@plain.test  (sender <>")
    assert lines[1].startswith("Decision: connect to mx1.plain.test [")
    assert "authenticated by PKIX" in report.output
    for words in (
        "Hosts, in the order they would be tried",
        "tls -> 'default'",
        "MX of plain.test",
    ):
        assert words in report.output


async def test_the_command_exits_1_with_the_api_refusal(daemon: ExplainDaemon) -> None:
    result = await run_cli(daemon, "b@plain.test", token=NO_EXPLAIN_TOKEN)
    assert result.exit_code == 1
    assert "forbidden" in result.output and "sysExplainGet" in result.output
    invalid = await run_cli(daemon, "b@")
    assert invalid.exit_code == 1 and "'recipient'" in invalid.output


async def test_the_report_never_reads_dns_text_as_markup(daemon: ExplainDaemon) -> None:
    explained = await daemon.explain("b@plain.test")
    hostile = "[bold red]250 ok[/bold red] [link=http://x.test]x[/link]"
    explained["decision"].update(action="defer", text=f"defer: {hostile}", reason=hostile)
    explained["hosts"][0]["addresses"][0]["step"]["reason"] = hostile
    explained["hosts"][0]["addresses"][0]["step"]["action"] = "defer"
    explained["mtaSts"]["text"] = hostile
    console = Console(width=200, record=True)
    console.print(cli_explain.render(explained))
    text = console.export_text()
    assert text.count(hostile) >= 3
