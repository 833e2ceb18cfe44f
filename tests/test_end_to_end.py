"""The product as an operator runs it: `delivery serve` as a process, mail in by `delivery send`
and by SMTP submission, delivered to a harness MX over STARTTLS, and a clean stop."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiosmtplib

from delivery.harness import lab as harness_lab
from tests.plugins.api import StartDaemon, daemon_environment, free_port
from tests.plugins.harness import MakeLab

SUBMISSION = re.compile(r"SMTP submission listening on (\S+):(\d+)")


def write_settings(directory: Path, lab: harness_lab.Lab) -> Path:
    path = directory / "delivery.toml"
    path.write_text(
        'hostname = "mta.e2e.test"\n'
        f'[store]\nurl = "sqlite://{directory}/data/delivery.db"\n'
        f'[api]\nlisten = "127.0.0.1:{free_port()}"\n'
        '[submission]\nlisten = "127.0.0.1:0"\n' + lab.settings_toml()
    )
    return path


async def delivery_send(settings: Path, body: bytes, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "delivery",
        "send",
        "--config",
        str(settings),
        *args,
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=daemon_environment(),
    )
    output, _ = await process.communicate(body)
    return process.returncode or 0, output.decode()


async def test_send_and_submission_are_delivered_over_starttls(
    make_lab: MakeLab, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    lab = await make_lab({"domains": {"e2e.test": {"mx": [{"name": "mx1.e2e.test"}]}}})
    settings = write_settings(tmp_path, lab)
    daemon = await start_daemon(settings)
    [(host, port)] = [m.groups() for line in daemon.output if (m := SUBMISSION.search(line))]
    mx = lab.mx("mx1.e2e.test")

    status, output = await delivery_send(
        settings,
        b"Subject: by send\r\n\r\nfrom the shell\n",
        "--from",
        "alice@origin.test",
        "--to",
        "bob@e2e.test",
    )
    assert status == 0, output
    [by_send] = await mx.wait_for_messages(1)
    assert by_send.mail_from == "alice@origin.test" and by_send.rcpt_tos == ["bob@e2e.test"]
    assert by_send.tls is not None  # STARTTLS offered, so used under the default strategy
    assert b"from the shell\r\n" in by_send.body and b"Received: by mta.e2e.test" in by_send.body

    await aiosmtplib.send(
        b"Subject: by smtp\r\n\r\nover submission\r\n",
        sender="carol@origin.test",
        recipients=["dave@e2e.test"],
        hostname=host,
        port=int(port),
        start_tls=False,
    )
    received = await mx.wait_for_messages(2)
    by_smtp = received[1]
    assert by_smtp.rcpt_tos == ["dave@e2e.test"] and by_smtp.tls is not None
    assert b"over submission" in by_smtp.body

    assert await daemon.stop(signal.SIGTERM) == 0


async def test_send_refuses_a_bad_address_and_queues_nothing(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    lab = await make_lab({"domains": {"e2e.test": {"mx": [{"name": "mx1.e2e.test"}]}}})
    settings = write_settings(tmp_path, lab)
    status, output = await delivery_send(
        settings, b"x\r\n", "--from", "alice@origin.test", "--to", "bob@e2e.test\r\nRCPT TO:<x@y>"
    )
    assert status == 2
    assert "--to" in output
