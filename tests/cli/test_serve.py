"""`delivery serve` as a real process: first-start token, restart, SIGTERM/SIGINT, bad starts."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.plugins.api import USING, StartDaemon, daemon_environment, write_settings


def post(url: str, token: str, calls: list[list[Any]]) -> Any:
    """One JMAP request (blocking: run it in a thread)."""
    request = urllib.request.Request(
        url + "/api",
        data=json.dumps({"using": USING, "methodCalls": calls}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["methodResponses"]


def token_from(lines: list[str]) -> str:
    [line] = [line for line in lines if "DELIVERY_TOKEN=" in line]
    return line.split("DELIVERY_TOKEN=", 1)[1].strip()


async def test_first_start_token_restart_and_signals(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    settings = write_settings(tmp_path)
    first = await start_daemon(settings)
    assert any("shown only this once" in line for line in first.output)
    token = token_from(first.output)
    answer = await asyncio.to_thread(
        post,
        first.url,
        token,
        [["x:MtaTlsStrategy/set", {"create": {"n": {"name": "survivor"}}}, "c"]],
    )
    assert "n" in answer[0][1]["created"]
    assert await first.stop(signal.SIGTERM) == 0
    assert sum("DELIVERY_TOKEN=" in line for line in first.output) == 1

    second = await start_daemon(settings)
    assert not any("DELIVERY_TOKEN" in line or "token" in line for line in second.output)
    answer = await asyncio.to_thread(
        post,
        second.url,
        token,  # the first start's token still works: its digest is in the store
        [["x:MtaTlsStrategy/query", {"filter": {"name": "survivor"}}, "c"]],
    )
    assert len(answer[0][1]["ids"]) == 1
    assert await second.stop(signal.SIGINT) == 0


async def test_configured_tokens_replace_the_admin_token(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    settings = write_settings(
        tmp_path,
        extra='[[api.tokens]]\nname = "ops"\nsecret = "ops-secret"\npermissions = ["*"]\n',
    )
    daemon = await start_daemon(settings)
    assert not any("DELIVERY_TOKEN" in line for line in daemon.output)
    answer = await asyncio.to_thread(
        post, daemon.url, "ops-secret", [["x:MtaOutboundStrategy/get", {}, "c"]]
    )
    assert answer[0][1]["list"][0]["id"] == "singleton"
    assert await daemon.stop(signal.SIGTERM) == 0


async def run_serve(settings: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "delivery",
        "serve",
        "--config",
        str(settings),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=daemon_environment(),
        cwd=settings.parent,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_invalid_settings_exit_2(tmp_path: Path) -> None:
    settings = tmp_path / "delivery.toml"
    settings.write_text('[api]\nlisten = "nowhere"\n')
    code, stderr = await run_serve(settings)
    assert code == 2 and "api.listen" in stderr


async def test_address_in_use_exits_1_and_keeps_no_token(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        settings = write_settings(tmp_path, port=busy.getsockname()[1])
        code, stderr = await run_serve(settings)
    assert code == 1 and "cannot start" in stderr
    # The failed start showed no token and kept none: the next start makes one and shows it.
    daemon = await start_daemon(write_settings(tmp_path))
    assert token_from(daemon.output)
    assert await daemon.stop(signal.SIGTERM) == 0
