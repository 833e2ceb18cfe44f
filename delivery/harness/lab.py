"""A running harness lab: a scenario's DNS server, SMTP receivers and MTA-STS policy server.

`Lab(scenario)` is an async context manager. Starting it picks loopback addresses (those the
scenario leaves open) and one SMTP port free on all of them, issues the certificates, starts a
receiver per MX host on its address (all on that one port: the engine dials every MX on
``[smtp] port``), starts the policy server on port 443 of its own address when any domain
has MTA-STS, serves the zones (`make_zones`) from the DNS server, and writes the harness CA to
``ca.pem``. Then it hands out what tests and users need:

    lab.mx("mx1.example.test")   the `SmtpReceiver` of that host (it records what it gets)
    lab.dns                      the `DnsServer` (``queries`` log, ``set_zones``)
    lab.policy_server            the `PolicyServer`, or None without MTA-STS
    lab.ca_file                  the CA certificate file to trust
    lab.settings_toml()          the `delivery` settings that point at this lab
    lab.set_policy(domain, ...)  serve a new MTA-STS policy and publish its new TXT id

Outcomes: start raises OSError when addresses or ports cannot be bound (everything started so
far is stopped again); `mx` raises KeyError naming the hosts there are.

Security: every server binds 127.0.0.0/8 (the DNS server 127.0.0.1 by default) and the DNS
server never forwards: a lab cannot send anything off the machine.

Limits: the policy server needs port 443, which needs root or CAP_NET_BIND_SERVICE; without
it the lab serves policies on a free port, which `settings_toml` flags, and the engine (which
always dials 443) cannot fetch them. TLSA records are published at ``_25._tcp.<mx>`` whatever
the SMTP port, as senders look them up (RFC 7672 §2.2.1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from delivery.harness import certs, dns_server, loopback, mtasts_server, smtp_server
from delivery.harness.scenario import HostSpec, Scenario, zone_of

__all__ = [
    "MISMATCH_NAME",
    "POLICY_PORT",
    "Lab",
    "make_zones",
]

POLICY_PORT = 443  # RFC 8461 §3.3: policies are fetched over HTTPS on the default port
MISMATCH_NAME = "tlsa-mismatch.harness.invalid"  # the certificate a `mismatch` TLSA describes


def make_zones(
    scenario: Scenario,
    addresses: Mapping[str, str],
    policy_addresses: Mapping[str, str],
    tlsa: Mapping[str, tuple[certs.TlsaRecord, ...]],
) -> list[dns_server.ZoneSpec]:
    """The zones that publish ``scenario``; pure.

    :param addresses: MX host name -> its loopback address (A record).
    :param policy_addresses: domain -> address of ``mta-sts.<domain>`` (A record).
    :param tlsa: MX host name -> its TLSA records (at ``_25._tcp.<host>``).
    """
    origins = scenario.zone_origins()
    records: dict[str, list[dns_server.RecordSpec]] = {origin: [] for origin in origins}
    faults: dict[str, dict[str, dns_server.Fault]] = {origin: {} for origin in origins}

    def add(name: str, rtype: str, value: str) -> None:
        zone = zone_of(name, origins)
        assert zone is not None, f"{name} is in no zone"  # scenario.parse checked placement
        records[zone].append(dns_server.RecordSpec(f"{name}.", rtype, value))

    for domain in scenario.domains:
        for mx in domain.mx:
            if not mx.implicit:
                add(domain.name, "MX", f"{mx.preference} {mx.name}.")
        if domain.null_mx:
            add(domain.name, "MX", "0 .")
        sts = domain.mta_sts
        if sts is not None:
            if sts.txt is not None:
                add(f"_mta-sts.{domain.name}", "TXT", sts.txt)
            add(f"mta-sts.{domain.name}", "A", policy_addresses[domain.name])
        if domain.tlsrpt is not None:
            add(f"_smtp._tls.{domain.name}", "TXT", domain.tlsrpt)
        for record in domain.records:
            zone = zone_of(record.name.rstrip("."), origins)
            assert zone is not None
            records[zone].append(record)
        for name, fault in domain.faults.items():
            zone = zone_of(name, origins)
            assert zone is not None
            faults[zone][f"{name}."] = fault
    for name in scenario.hosts:
        add(name, "A", addresses[name])
        for association in tlsa.get(name, ()):
            add(f"_25._tcp.{name}", "TLSA", association.to_text())
    dnssec: dict[str, dns_server.Dnssec] = {d.name: d.dnssec for d in scenario.domains}
    for host in scenario.hosts.values():
        dnssec.setdefault(zone_of(host.name, origins) or host.name, host.dnssec)
    return [
        dns_server.ZoneSpec(
            origin=f"{origin}.",
            dnssec=dnssec.get(origin, "insecure"),
            records=tuple(records[origin]),
            faults=faults[origin],
        )
        for origin in origins
    ]


class Lab:
    """A scenario brought to life on loopback; async context manager (also start/stop).

    :param scenario: what to run.
    :param factory: the certificate factory (share one across labs to issue each cert once).
    :param pool: where addresses come from for hosts that name none.
    :param workdir: where ``ca.pem`` goes; by default a temporary folder removed at stop.
    :param dns_host: :param dns_port: where the DNS server listens (0: a free port).
    :param smtp_port: the receivers' common port (0: one free on every address).
    :param policy_port: the policy server's port (443, as senders dial).
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        factory: certs.CertFactory | None = None,
        pool: loopback.LoopbackPool | None = None,
        workdir: Path | None = None,
        dns_host: str = "127.0.0.1",
        dns_port: int = 0,
        smtp_port: int = 0,
        policy_port: int = POLICY_PORT,
    ) -> None:
        self.scenario = scenario
        self.factory = factory or certs.CertFactory()
        self.pool = pool or loopback.LoopbackPool()
        self.receivers: dict[str, smtp_server.SmtpReceiver] = {}
        self.addresses: dict[str, str] = {}
        self.credentials: dict[str, certs.Credential] = {}
        self.policy_addresses: dict[str, str] = {}
        self.policy_server: mtasts_server.PolicyServer | None = None
        self.smtp_port = smtp_port
        self.policy_port = policy_port
        self._dns_host, self._dns_port = dns_host, dns_port
        self._workdir, self._own_workdir = workdir, workdir is None
        self._dns: dns_server.DnsServer | None = None
        self._reserved: list[socket.socket] = []  # bound, never listening: "down" hosts
        self._stack: contextlib.AsyncExitStack | None = None

    # ---- handles --------------------------------------------------------------------------

    @property
    def dns(self) -> dns_server.DnsServer:
        """The running DNS server."""
        if self._dns is None:
            raise RuntimeError(f"lab {self.scenario.name} is not started")
        return self._dns

    @property
    def workdir(self) -> Path:
        """The folder holding ``ca.pem``."""
        if self._workdir is None:
            raise RuntimeError(f"lab {self.scenario.name} is not started")
        return self._workdir

    @property
    def ca_file(self) -> Path:
        """The harness CA certificate (PEM): the ``[tls] ca_file`` to trust."""
        return self.workdir / "ca.pem"

    def mx(self, name: str) -> smtp_server.SmtpReceiver:
        """The receiver playing MX host ``name``.

        :raises KeyError: no such host, or the host is down (it has no receiver).
        """
        key = name.lower().rstrip(".")
        if key in self.receivers:
            return self.receivers[key]
        if key in self.scenario.hosts:
            raise KeyError(f"{key} is down in scenario {self.scenario.name}: it has no receiver")
        known = ", ".join(sorted(self.receivers)) or "none"
        raise KeyError(f"no MX host {key} in scenario {self.scenario.name} (hosts: {known})")

    def zones(self) -> list[dns_server.ZoneSpec]:
        """The zones the DNS server serves now."""
        tlsa = {name: self._tlsa(host) for name, host in self.scenario.hosts.items()}
        return make_zones(self.scenario, self.addresses, self.policy_addresses, tlsa)

    def settings(self) -> dict[str, dict[str, object]]:
        """The `delivery` settings that point at this lab, as a mapping.

        With a DNSSEC-secure zone in the scenario, its origin is the engine's DNSSEC probe
        (``[dns] dnssec_probe``): the lab's resolver answers only its own zones, not the root.
        """
        host, port = self.dns.address
        dns: dict[str, object] = {"nameservers": [f"{host}:{port}"], "dnssec": "trust-ad"}
        secure = [zone.origin for zone in self.zones() if zone.dnssec == "secure"]
        if secure:
            dns["dnssec_probe"] = secure[0]
        return {
            "dns": dns,
            "smtp": {"port": self.smtp_port},
            "tls": {"ca_file": str(self.ca_file)},
        }

    def settings_toml(self) -> str:
        """`settings` as TOML, with a comment saying where everything listens."""
        lines = [f"# delivery settings for harness scenario {self.scenario.name!r}"]
        for name, address in self.addresses.items():
            state = "down" if name not in self.receivers else self.receivers[name].tls_mode
            lines.append(f"#   MX {name} = {address}:{self.smtp_port} (TLS {state})")
        if self.policy_server is not None:
            address, port = self.policy_server.address
            lines.append(f"#   MTA-STS policy server = {address}:{port}")
            if port != POLICY_PORT:
                lines.append(
                    f"#   WARNING: not on port {POLICY_PORT} (binding it needs root or "
                    "CAP_NET_BIND_SERVICE): the engine cannot fetch these policies"
                )
        for section, values in self.settings().items():
            lines.append(f"\n[{section}]")
            lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
        return "\n".join(lines) + "\n"

    def set_policy(
        self, domain: str, policy: mtasts_server.Policy, *, policy_id: str | None = None
    ) -> None:
        """Serve ``policy`` for ``domain`` and, with ``policy_id``, publish that TXT id.

        :raises KeyError: the domain has no MTA-STS in this scenario.
        """
        spec = self.scenario.domain(domain)
        if spec.mta_sts is None or self.policy_server is None:
            raise KeyError(f"domain {spec.name} has no MTA-STS in scenario {self.scenario.name}")
        sts = dataclasses.replace(spec.mta_sts, policy=policy)
        if policy_id is not None:
            sts = dataclasses.replace(
                sts, policy_id=policy_id, txt=mtasts_server.format_txt(policy_id)
            )
        domains = tuple(
            dataclasses.replace(d, mta_sts=sts) if d.name == spec.name else d
            for d in self.scenario.domains
        )
        self.scenario = dataclasses.replace(self.scenario, domains=domains)
        if not sts.down:
            self.policy_server.set_policy(spec.name, policy)
        self.dns.set_zones(self.zones())

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind, issue, start everything; on failure stop what was started and re-raise."""
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._start(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def stop(self) -> None:
        """Stop every server, release the addresses, remove the temporary folder."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> Lab:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        scenario = self.scenario
        self.receivers.clear()
        self.addresses.clear()
        self.policy_addresses.clear()
        self.policy_server = None
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="delivery-harness-"))
            stack.callback(self._forget_workdir)
        self.factory.write_ca(self.ca_file)
        for name, host in scenario.hosts.items():
            self.addresses[name] = host.ip or self.pool.take()
            kind = smtp_server.cert_kind(host.tls) or "valid"
            self.credentials[name] = self.factory.credential(
                name, kind, intermediate=host.intermediate
            )
        port, sockets = loopback.bind_same_port(list(self.addresses.values()), port=self.smtp_port)
        self.smtp_port = port
        for sock in sockets.values():
            stack.callback(sock.close)
        for name, host in scenario.hosts.items():
            sock = sockets[self.addresses[name]]
            if host.down:
                continue  # bound and never listening: connections are refused
            receiver = smtp_server.SmtpReceiver(
                name,
                tls=host.tls,
                credential=self.credentials[name] if smtp_server.cert_kind(host.tls) else None,
                script=host.script,
                extensions=host.extensions,
                sock=sock,
            )
            await stack.enter_async_context(receiver)
            self.receivers[name] = receiver
        await self._start_policy_server(stack)
        self._dns = dns_server.DnsServer(self.zones(), host=self._dns_host, port=self._dns_port)
        await stack.enter_async_context(self._dns)

    async def _start_policy_server(self, stack: contextlib.AsyncExitStack) -> None:
        policies: dict[str, mtasts_server.Policy] = {}
        for domain in self.scenario.domains:
            if domain.mta_sts is None:
                continue
            if domain.mta_sts.down:
                # An address whose policy port is bound but never listening: refused.
                address, reserved = self._bind_policy_port()
                stack.callback(reserved.close)
                self.policy_addresses[domain.name] = address
            else:
                policies[domain.name] = domain.mta_sts.policy
        if not policies:
            return
        address, sock = self._bind_policy_port()
        stack.callback(sock.close)
        for name in policies:
            self.policy_addresses[name] = address
        self.policy_server = mtasts_server.PolicyServer(policies, factory=self.factory, sock=sock)
        await stack.enter_async_context(self.policy_server)

    def _bind_policy_port(self) -> tuple[str, socket.socket]:
        try:
            return self.pool.bind(self.policy_port)
        except PermissionError:
            return self.pool.bind(0)  # settings_toml warns that senders cannot reach it

    def _forget_workdir(self) -> None:
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _tlsa(self, host: HostSpec) -> tuple[certs.TlsaRecord, ...]:
        credential = self.credentials[host.name]
        records = []
        for spec in host.tlsa:
            if spec.origin == "mismatch":
                other = self.factory.credential(MISMATCH_NAME)
                records.append(other.tlsa(spec.usage, spec.selector, spec.mtype))
            else:
                source: certs.TlsaSource = spec.origin
                records.append(
                    credential.tlsa(spec.usage, spec.selector, spec.mtype, source=source)
                )
        return tuple(records)
