"""`delivery harness`: run a local test mail world, make test certificates, check scenarios.

Commands:
    run SCENARIO     start the lab of a scenario file on loopback, print the settings that point
                     `delivery` at it (stdout), then show what each receiver gets (stderr: a
                     live table on a terminal, one line per event otherwise) until Ctrl-C or
                     SIGTERM, and stop cleanly
    certs            write a harness CA and certificates of any kind, and their TLSA records
    check SCENARIO   parse and validate scenario files; exit 0 when all are valid

Exit status: 0 on success (and on a clean stop of ``run``); 2 when a scenario is invalid or a
lab cannot start (the message names the file, table and key, or the address at fault).

Security: the lab binds loopback addresses only; ``certs`` writes private keys with mode 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from rich.console import Console
from rich.live import Live
from rich.table import Table

from delivery.harness import certs, lab, loopback, scenario, smtp_dialogue

__all__ = ["harness"]

REFRESH_S = 0.5  # how often the receiver table is redrawn (a display rate, not a test wait)
BAD_INPUT_EXIT = 2


@click.group("harness")
def harness() -> None:
    """Local test SMTP harness: DNS, SMTP receivers, MTA-STS server and certificates."""


def _load(path: Path) -> scenario.Scenario:
    try:
        return scenario.load(path)
    except scenario.ScenarioError as exc:
        click.echo(f"invalid scenario: {exc}", err=True)
        raise SystemExit(BAD_INPUT_EXIT) from exc


@harness.command("check")
@click.argument(
    "scenario_files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)
def check(scenario_files: tuple[Path, ...]) -> None:
    """Validate scenario files and exit (status 2 if any is invalid)."""
    failed = False
    for path in scenario_files:
        try:
            parsed = scenario.load(path)
        except scenario.ScenarioError as exc:
            click.echo(f"invalid: {exc}", err=True)
            failed = True
            continue
        first_line = parsed.description.strip().splitlines()[0] if parsed.description else ""
        click.echo(
            f"ok: {path}: {len(parsed.domains)} domain(s), {len(parsed.hosts)} MX host(s)"
            + (f" - {first_line}" if first_line else "")
        )
    if failed:
        raise SystemExit(BAD_INPUT_EXIT)


@harness.command("run")
@click.argument("scenario_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write ca.pem here (default: a temporary folder removed at stop).",
)
@click.option("--dns-port", type=int, default=0, show_default=True, help="0: a free port.")
@click.option("--smtp-port", type=int, default=0, show_default=True, help="0: a free port.")
@click.option(
    "--block",
    type=click.IntRange(0, 255),
    default=1,
    show_default=True,
    help="Loopback addresses come from 127.<block>.0.0/16.",
)
def run(
    scenario_file: Path, workdir: Path | None, dns_port: int, smtp_port: int, block: int
) -> None:
    """Run the lab of SCENARIO_FILE until Ctrl-C or SIGTERM; print its settings first."""
    parsed = _load(scenario_file)
    the_lab = lab.Lab(
        parsed,
        pool=loopback.LoopbackPool(block),
        workdir=workdir,
        dns_port=dns_port,
        smtp_port=smtp_port,
    )
    asyncio.run(_run(the_lab))


async def _run(the_lab: lab.Lab) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await the_lab.start()
    except OSError as exc:
        click.echo(f"cannot start the lab: {exc}", err=True)
        raise SystemExit(BAD_INPUT_EXIT) from exc
    try:
        click.echo(the_lab.settings_toml(), nl=False)
        sys.stdout.flush()
        console = Console(stderr=True)
        console.print(f"harness lab {the_lab.scenario.name!r} running; Ctrl-C to stop")
        if console.is_terminal:
            await _live_table(the_lab, console, stop)
        else:
            await _event_lines(the_lab, console, stop)
    finally:
        await the_lab.stop()


async def _live_table(the_lab: lab.Lab, console: Console, stop: asyncio.Event) -> None:
    with Live(_table(the_lab), console=console, auto_refresh=False) as live:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_S):
                    await stop.wait()
            live.update(_table(the_lab), refresh=True)


async def _event_lines(the_lab: lab.Lab, console: Console, stop: asyncio.Event) -> None:
    seen: dict[str, int] = dict.fromkeys(the_lab.receivers, 0)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REFRESH_S):
                await stop.wait()
        for name, receiver in the_lab.receivers.items():
            for message in receiver.received[seen[name] :]:
                console.print(f"{name}: {_describe(message)}", highlight=False)
            seen[name] = len(receiver.received)


def _describe(message: smtp_dialogue.ReceivedMessage) -> str:
    tls = f"{message.tls.version} {message.tls.cipher}" if message.tls else "clear text"
    rcpts = ", ".join(message.rcpt_tos)
    return f"<{message.mail_from}> -> {rcpts} ({len(message.body)} bytes, {tls})"


def _table(the_lab: lab.Lab) -> Table:
    table = Table(title=f"harness lab {the_lab.scenario.name}", title_justify="left")
    for column in ("MX host", "address", "TLS mode", "conns", "TLS ok", "TLS failed", "msgs"):
        table.add_column(column, no_wrap=True)
    table.add_column("last message", overflow="fold")
    for name, address in the_lab.addresses.items():
        where = f"{address}:{the_lab.smtp_port}"
        receiver = the_lab.receivers.get(name)
        if receiver is None:
            table.add_row(name, where, "down", "-", "-", "-", "-", "")
            continue
        tls_ok = sum(1 for session in receiver.sessions if session.tls is not None)
        tls_failed = sum(1 for session in receiver.sessions if session.tls_error is not None)
        last = _describe(receiver.received[-1]) if receiver.received else ""
        counts = (receiver.connections, tls_ok, tls_failed, len(receiver.received))
        table.add_row(name, where, receiver.tls_mode, *(str(n) for n in counts), last)
    dns_host, dns_port = the_lab.dns.address
    caption = f"DNS {dns_host}:{dns_port}: {len(the_lab.dns.queries)} queries"
    if the_lab.policy_server is not None:
        requests = len(the_lab.policy_server.requests)
        caption += f"; MTA-STS policy server: {requests} requests"
    table.caption = caption
    return table


@harness.command("certs")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write to; a CA already there (ca.pem + ca.key) is reused.",
)
@click.option("--name", "names", multiple=True, required=True, help="A DNS name (repeatable).")
@click.option(
    "--kind",
    type=click.Choice(certs.CERT_KINDS),
    default="valid",
    show_default=True,
    help="What is wrong with the certificate, if anything.",
)
@click.option("--intermediate", is_flag=True, help="Issue through a harness intermediate CA.")
@click.option("--rsa", "use_rsa", is_flag=True, help="RSA-2048 keys instead of EC P-256.")
def certs_command(
    out: Path, names: tuple[str, ...], kind: certs.CertKind, intermediate: bool, use_rsa: bool
) -> None:
    """Write a CA and a certificate for NAMEs, and print its TLSA records."""
    key_type: certs.KeyType = "rsa" if use_rsa else "ec"
    ca = _existing_ca(out) or certs.CertificateAuthority.create_root(key_type=key_type)
    factory = certs.CertFactory(ca, key_type=key_type)
    ca_files = _write_ca(out, ca)
    credential = factory.credential(names, kind, intermediate=intermediate)
    stem = names[0] if kind == "valid" else f"{names[0]}-{kind}"
    files = credential.write(out, stem)
    click.echo(f"CA certificate:   {ca_files[0]}  (trust this: [tls] ca_file)")
    click.echo(f"CA key:           {ca_files[1]}")
    click.echo(f"certificate:      {files.cert}")
    click.echo(f"key:              {files.key}")
    click.echo(f"chain:            {files.chain}")
    click.echo(f"full chain:       {files.fullchain}")
    owner = f"_25._tcp.{names[0]}. IN TLSA"
    click.echo(f"TLSA (DANE-EE):   {owner} {credential.tlsa(3, 1, 1).to_text()}")
    click.echo(f"TLSA (DANE-TA):   {owner} {credential.tlsa(2, 0, 1, source='issuer').to_text()}")


def _existing_ca(out: Path) -> certs.CertificateAuthority | None:
    cert_file, key_file = out / "ca.pem", out / "ca.key"
    if not (cert_file.exists() and key_file.exists()):
        return None
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise click.ClickException(f"{key_file} holds neither an EC nor an RSA key")
    return certs.CertificateAuthority(cert, key)


def _write_ca(out: Path, ca: certs.CertificateAuthority) -> tuple[Path, Path]:
    return ca.write(out, "ca")
