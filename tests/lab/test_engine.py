"""The compose lab's walk-through without docker: `delivery serve` with fixtures/lab/delivery.toml
(addresses overridden by DELIVERY_* variables; nothing else differs from the compose engine),
`delivery send` to a recipient at each lab domain and at some fault domains, and the engine's
log says what README's table says each shows.

Everything is real and on loopback: Unbound validating Knot's signed zones, Debian's Postfix
receiving (the Maildirs get what was delivered), nginx serving the MTA-STS policies on port
443, the harness serving faults.test behind Unbound. The `remote` schedule is shortened to one
second through the API (`delivery update`), so the retry of the self-signed domain, and the DSN
of the refused recipients to the sender's own domain, happen within the test. Needs root
(Postfix, and port 443 for MTA-STS).
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest

from delivery.harness import lab, loopback, scenario
from tests.lab.conftest import LAB, LabMaterial, free_port, load_make_zones, require_root

START_TIMEOUT_S = 30.0  # a loaded machine imports the daemon slowly
OUTCOMES_TIMEOUT_S = 30.0  # first attempts, one retry a second later, a DSN
RETRY_MS = 1000
SENDER = "lab@engine.lab.test"
SETTINGS = LAB / "delivery.toml"
_FIELD = re.compile(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")

# recipient domain -> (action, kind ("" = any), what the tls field or the reason says)
FIRST_ATTEMPT: dict[str, tuple[str, str, str]] = {
    "starttls.lab.test": ("delivered", "none", "certificate verified (PKIX)"),
    "selfsigned.lab.test": ("delayed", "tls", "failed verification for mx-selfsigned.lab.test"),
    "plain.lab.test": ("delivered", "none", "clear text (STARTTLS not offered)"),
    "dane-ee.lab.test": ("delivered", "none", "DANE-EE record 3 1 1 matches the certificate"),
    "dane-ta.lab.test": ("delivered", "none", "DANE-TA record 2 0 1 matches its chain"),
    "dane-mismatch.lab.test": ("delayed", "dane", "none of the 1 DANE-EE record(s) matches"),
    "sts-enforce.lab.test": ("delivered", "none", "MTA-STS policy of sts-enforce.lab.test"),
    "sts-testing.lab.test": ("delivered", "none", "clear text (STARTTLS not offered)"),
    "sts-badcert.lab.test": ("delayed", "tls", "MTA-STS policy of sts-badcert.lab.test"),
    "insecure.lab.test": ("delivered", "none", "certificate verified (PKIX)"),
    "bogus.lab.test": ("delayed", "dns", "SERVFAIL"),
    # served by the harness, behind Unbound's stub zone for faults.test
    "tempfail.faults.test": ("delayed", "", "450 4.2.1"),
    "reject.faults.test": ("failed", "", "550 5.1.1"),
    "backup.faults.test": ("delivered", "none", "mx3.backup.faults.test"),
    "nomail.faults.test": ("failed", "", "null MX"),
}


def fields(line: str) -> dict[str, str]:
    """The key=value fields of one ``delivery ...`` log line (quoted values unquoted)."""
    return {
        key: ast.literal_eval(value) if value[:1] in "'\"" else value
        for key, value in _FIELD.findall(line.split(" delivery ", 1)[1])
    }


async def cli(env: Mapping[str, str], *args: str, stdin: bytes | None = None) -> str:
    """Run ``delivery ARGS --config fixtures/lab/delivery.toml``; its stdout (exit 0 asserted)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "delivery", *args, "--config", str(SETTINGS),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=dict(env),
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin), START_TIMEOUT_S)
    assert process.returncode == 0, f"delivery {' '.join(args)}: {err.decode()}"
    return out.decode()


class Daemon:
    """`delivery serve` as a child process; its log lines, and the outcomes they report."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None and process.stderr is not None
        self.process = process
        self.log: list[str] = []
        self.outcomes: list[dict[str, str]] = []

    async def read_until(self, done: Callable[[], bool], timeout_s: float) -> None:
        """Read the log until ``done()``; fail quoting the log if it ends or times out."""
        assert self.process.stderr is not None
        try:
            async with asyncio.timeout(timeout_s):
                while not done():
                    line = (await self.process.stderr.readline()).decode(errors="replace")
                    assert line, "delivery serve ended:\n" + "".join(self.log)
                    self.log.append(line)
                    if " delivery message_id=" in line:
                        self.outcomes.append(fields(line))
        except TimeoutError:
            pytest.fail(f"not seen within {timeout_s:.0f} s; the log:\n" + "".join(self.log))

    async def admin_token(self) -> str:
        """The admin token printed at first start (no [[api.tokens]] in the lab's settings)."""
        assert self.process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT_S):
            while line := (await self.process.stdout.readline()).decode():
                if "DELIVERY_TOKEN=" in line:
                    return line.split("DELIVERY_TOKEN=", 1)[1].strip()
        pytest.fail("delivery serve printed no admin token:\n" + "".join(self.log))

    def first(self, recipient: str) -> dict[str, str] | None:
        return next((o for o in self.outcomes if o["recipient"] == recipient), None)

    def delivered(self, recipient: str) -> dict[str, str] | None:
        mine = (o for o in self.outcomes if o["recipient"] == recipient)
        return next((o for o in mine if o["action"] == "delivered"), None)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.process.wait(), START_TIMEOUT_S)


@pytest.fixture
async def faults_harness(
    lab_dns: LabMaterial, lab_receivers: LabMaterial, harness_pool: loopback.LoopbackPool
) -> AsyncIterator[lab.Lab]:
    """`delivery harness run fixtures/lab/faults.toml`, as the compose harness service runs it."""
    harness = lab.Lab(
        scenario.load(LAB / "faults.toml"),
        pool=harness_pool,
        dns_host=lab_dns.addresses["harness-dns"],
        dns_port=lab_dns.ports["harness-dns"],
        smtp_port=lab_dns.ports["smtp"],
    )
    async with harness:
        yield harness


def engine_env(
    engine: str, tmp_path: Path, *, nameserver: str, smtp_port: int, ca_file: Path, **more: str
) -> dict[str, str]:
    """The environment of the engine's commands: fixtures/lab/delivery.toml, these overrides."""
    return {
        **os.environ,
        "DELIVERY_DNS_NAMESERVERS": nameserver,
        "DELIVERY_SMTP_PORT": str(smtp_port),
        "DELIVERY_TLS_CA_FILE": str(ca_file),
        "DELIVERY_STORE_URL": f"sqlite://{tmp_path}/delivery.db",
        # Free ports chosen here: `delivery serve` does not take port 0 for the API.
        "DELIVERY_API_LISTEN": f"{engine}:{free_port(engine)}",
        "DELIVERY_SUBMISSION_LISTEN": f"{engine}:{free_port(engine)}",
        **more,
    }


async def walk_through(
    env: dict[str, str], domains: list[str], *, also: Callable[[Daemon], bool]
) -> Daemon:
    """`delivery serve`; the `remote` schedule shortened; `delivery send` to postmaster@ each
    domain; the log read until every recipient has an outcome and ``also`` holds."""
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "delivery", "serve", "--config", str(SETTINGS),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    daemon = Daemon(serve)
    try:
        env["DELIVERY_TOKEN"] = await daemon.admin_token()
        await daemon.read_until(
            lambda: any("the resolver validates DNSSEC" in line for line in daemon.log),
            START_TIMEOUT_S,
        )
        query = await cli(env, "query", "MtaDeliverySchedule", "--where", "name=remote", "--json")
        (remote,) = json.loads(query)["ids"]
        await cli(env, "update", "MtaDeliverySchedule", remote, "--field", f"retry=[{RETRY_MS}]")
        recipients = [f"postmaster@{domain}" for domain in domains]
        message = b"Subject: lab walk-through\n\nhello from the lab test\n"
        await cli(
            env, "send", "--from", SENDER, *(a for r in recipients for a in ("--to", r)),
            stdin=message,
        )  # fmt: skip
        await daemon.read_until(
            lambda: all(daemon.first(r) for r in recipients) and also(daemon),
            OUTCOMES_TIMEOUT_S,
        )
    finally:
        await daemon.stop()
    return daemon


def check_first_attempts(daemon: Daemon, domains: list[str]) -> None:
    """Each domain's first outcome is the one FIRST_ATTEMPT says."""
    for domain in domains:
        action, kind, says = FIRST_ATTEMPT[domain]
        got = daemon.first(f"postmaster@{domain}")
        assert got is not None
        where = f"{domain}: {got}"
        assert got["action"] == action, where
        assert not kind or got["kind"] == kind, where
        assert says in got["tls"] + " " + got["reason"], where
        if action != "delivered":
            assert "verified" not in got["tls"], where


def check_self_signed_retry(daemon: Daemon) -> None:
    """Retried under the invalid-tls strategy (the default `tls` expression after a TLS
    failure): over TLS, the certificate not checked."""
    retried = daemon.delivered("postmaster@selfsigned.lab.test")
    assert retried is not None, "the self-signed domain was not retried"
    assert retried["tls"].startswith("TLSv1.")
    assert retried["tls"].endswith("certificate not verified"), retried


async def test_delivery_send_to_each_lab_domain_shows_its_tls_outcome(
    lab_dns: LabMaterial,
    lab_receivers: LabMaterial,
    lab_policies: LabMaterial,
    faults_harness: lab.Lab,
    tmp_path: Path,
) -> None:
    require_root("the engine fetches MTA-STS policies on port 443")
    domains = list(FIRST_ATTEMPT)
    env = engine_env(
        lab_dns.addresses["engine"],
        tmp_path,
        nameserver=f"{lab_dns.addresses['resolver']}:{lab_dns.ports['resolver']}",
        smtp_port=lab_dns.ports["smtp"],
        ca_file=lab_dns.out / "ca.pem",
    )
    daemon = await walk_through(
        env,
        domains,
        also=lambda d: (
            d.delivered("postmaster@selfsigned.lab.test") is not None
            and d.delivered(SENDER) is not None
        ),
    )
    check_first_attempts(daemon, domains)
    check_self_signed_retry(daemon)
    # Each delivered lab message is in the Maildir of the Postfix receiver that took it, and
    # the DSN for the refused recipients in the sender domain's (mx-valid's engine.lab.test/).
    make_zones = load_make_zones()
    for domain in make_zones.DOMAINS:
        if daemon.delivered(f"postmaster@{domain.name}") is not None:
            receiver = make_zones.HOSTS[domain.mx].receiver
            maildir = lab_dns.out / "mail" / receiver / domain.name / "new"
            assert maildir.is_dir() and any(maildir.iterdir()), f"nothing in {maildir}"
    dsn_maildir = lab_dns.out / "mail" / "mx-valid" / "engine.lab.test" / "new"
    dsns = [path.read_text(errors="replace") for path in dsn_maildir.iterdir()]
    assert any("postmaster@reject.faults.test" in text for text in dsns)


async def test_the_harness_lab_shows_the_same_outcomes_without_docker(
    harness_pool: loopback.LoopbackPool, tmp_path: Path
) -> None:
    """fixtures/lab/lab.toml under `delivery harness`: every lab domain, the same outcome."""
    require_root("the harness serves MTA-STS policies on port 443")
    mirror = lab.Lab(scenario.load(LAB / "lab.toml"), pool=harness_pool)
    async with mirror:
        settings = mirror.settings()
        dns, smtp, tls = settings["dns"], settings["smtp"], settings["tls"]
        assert isinstance(dns["nameservers"], list)
        env = engine_env(
            harness_pool.take(),
            tmp_path,
            nameserver=str(dns["nameservers"][0]),
            smtp_port=int(str(smtp["port"])),
            ca_file=Path(str(tls["ca_file"])),
            DELIVERY_DNS_DNSSEC_PROBE=str(dns["dnssec_probe"]),
        )
        domains = [d.name for d in load_make_zones().DOMAINS]
        daemon = await walk_through(
            env, domains, also=lambda d: d.delivered("postmaster@selfsigned.lab.test") is not None
        )
    check_first_attempts(daemon, domains)
    check_self_signed_retry(daemon)
