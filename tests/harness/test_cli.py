"""`delivery harness run|certs|check` as users run them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import aiosmtplib
from click.testing import CliRunner

from delivery import config
from delivery.cli.main import main
from delivery.harness import loopback

SCENARIOS = Path(__file__).parents[2] / "fixtures" / "scenarios"
START_TIMEOUT_S = 30.0  # generous: a loaded CI machine imports and binds slowly


async def test_run_prints_settings_serves_and_stops_on_sigterm(
    harness_pool: loopback.LoopbackPool,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "delivery", "harness", "run", str(SCENARIOS / "plain.toml"),
        "--block", str(harness_pool.block),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    try:
        lines: list[str] = []
        async with asyncio.timeout(START_TIMEOUT_S):
            while not lines or not lines[-1].startswith("ca_file"):
                lines.append((await process.stdout.readline()).decode())
                assert lines[-1], "harness run ended before printing its settings"
            ready = await process.stderr.readline()
        assert b"running; Ctrl-C to stop" in ready
        text = "".join(lines)
        settings = tomllib.loads(text)
        ca_file = Path(settings["tls"]["ca_file"])
        assert await asyncio.to_thread(ca_file.exists)
        address = next(line.split()[-3] for line in lines if line.startswith("#   MX"))
        host, port = address.split(":")
        assert int(port) == settings["smtp"]["port"]
        async with aiosmtplib.SMTP(hostname=host, port=int(port), start_tls=False) as smtp:
            await smtp.sendmail("a@origin.test", ["b@plain.test"], b"Subject: x\r\n\r\nx\r\n")
        async with asyncio.timeout(START_TIMEOUT_S):
            event = await process.stderr.readline()
        assert b"mx1.plain.test: <a@origin.test> -> b@plain.test" in event
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(START_TIMEOUT_S):
            await process.wait()
    assert process.returncode == 0
    assert not await asyncio.to_thread(ca_file.exists)  # the temporary folder went too
    loaded = await asyncio.to_thread(_load_settings, text, ca_file.parent)
    assert loaded.smtp.port == settings["smtp"]["port"]


def _load_settings(text: str, folder: Path) -> config.Settings:
    path = folder.with_name(f"{folder.name}-settings.toml")
    path.write_text(text)
    try:
        return config.load(path, environ={})
    finally:
        path.unlink()


def test_run_refuses_an_invalid_scenario(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[domains."a.test".mx]]\nname = "mx1.a.test"\ntls = "expird"\n')
    result = CliRunner().invoke(main, ["harness", "run", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: [domains.\"a.test\".mx[0]] tls: is 'expird'" in result.output


def test_certs_writes_files_that_verify(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "pki"
    result = runner.invoke(
        main, ["harness", "certs", "--out", str(out), "--name", "mx1.example.test"]
    )
    assert result.exit_code == 0, result.output
    assert "_25._tcp.mx1.example.test. IN TLSA 3 1 1 " in result.output
    ca_before = (out / "ca.pem").read_bytes()
    result = runner.invoke(
        main,
        ["harness", "certs", "--out", str(out), "--name", "mx2.example.test", "--intermediate"],
    )
    assert result.exit_code == 0, result.output
    assert (out / "ca.pem").read_bytes() == ca_before  # the CA already there is reused
    for name in ("mx1.example.test", "mx2.example.test"):
        verify = subprocess.run(
            [
                "openssl", "verify", "-CAfile", str(out / "ca.pem"),
                "-untrusted", str(out / f"{name}.fullchain.pem"),
                "-verify_hostname", name, str(out / f"{name}.crt"),
            ],
            capture_output=True,
            check=False,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stdout + verify.stderr
    assert oct((out / "ca.key").stat().st_mode & 0o777) == "0o600"


def test_certs_of_a_bad_kind(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["harness", "certs", "--out", str(tmp_path), "--name", "mx.test", "--kind", "expired"],
    )
    assert result.exit_code == 0, result.output
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "ca.pem"),
            str(tmp_path / "mx.test-expired.crt"),
        ],
        capture_output=True,
        check=False,
    )
    assert b"certificate has expired" in verify.stdout + verify.stderr


def test_check_accepts_every_example_and_names_faults(tmp_path: Path) -> None:
    runner = CliRunner()
    examples = sorted(str(path) for path in SCENARIOS.glob("*.toml"))
    result = runner.invoke(main, ["harness", "check", *examples])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok: ") == len(examples)
    bad = tmp_path / "bad.toml"
    bad.write_text('[domains."a.test"]\nmta_sts = { mode = "strict" }\n')
    result = runner.invoke(main, ["harness", "check", examples[0], str(bad)])
    assert result.exit_code == 2
    assert f"invalid: {bad}: [domains.\"a.test\".mta_sts] mode: is 'strict'" in result.output
