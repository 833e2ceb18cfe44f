"""Labs: every example scenario runs; DNS, receivers, policy server and settings agree."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import ssl
from pathlib import Path

import aiohttp
import aiosmtplib
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from delivery import config
from delivery.dns import resolver as dns_resolver
from delivery.harness import lab, scenario
from delivery.harness.dns_server import RecordSpec
from delivery.harness.mtasts_server import POLICY_PATH, Policy, format_policy, format_txt
from tests.plugins.harness import MakeLab

SCENARIOS = Path(__file__).parents[2] / "fixtures" / "scenarios"


async def query(
    the_lab: lab.Lab, name: str, rdtype: str, *, within: float = 2.0
) -> dns.message.Message:
    host, port = the_lab.dns.address
    message = dns.message.make_query(name, rdtype, want_dnssec=True)
    return await dns.asyncquery.udp(message, host, port=port, timeout=within)


def answers(response: dns.message.Message) -> list[str]:
    return sorted(rdata.to_text() for rrset in response.answer for rdata in rrset)


async def greeting(address: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(address, port)
    try:
        return await reader.readline()
    finally:
        writer.close()


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
async def test_every_example_scenario_starts_serves_and_stops(
    make_lab: MakeLab, path: Path
) -> None:
    the_lab = await make_lab(path)
    for domain in the_lab.scenario.domains:
        response = await query(the_lab, domain.name, "MX")
        if domain.dnssec == "bogus":
            assert response.rcode() == dns.rcode.SERVFAIL
            continue
        assert response.rcode() == dns.rcode.NOERROR
        assert bool(response.flags & dns.flags.AD) == (domain.dnssec == "secure")
        published = {(m.preference, m.name) for m in domain.mx if not m.implicit}
        expected = {f"{p} {n}." for p, n in published} | ({"0 ."} if domain.null_mx else set())
        assert set(answers(response)) == expected
    for name, host in the_lab.scenario.hosts.items():
        address = the_lab.addresses[name]
        if host.down:
            with pytest.raises(ConnectionRefusedError):
                await greeting(address, the_lab.smtp_port)
        elif host.script.greeting.delay == 0:
            assert (await greeting(address, the_lab.smtp_port)).startswith(b"220 ")
    listening = [*the_lab.addresses.values(), *the_lab.policy_addresses.values()]
    assert all(address.startswith("127.") for address in listening)  # loopback only
    settings = config.load(_write(the_lab), environ={})
    assert settings.dns.servers() == [the_lab.dns.address]
    assert settings.smtp.port == the_lab.smtp_port
    assert settings.tls.ca_file == str(the_lab.ca_file)
    assert the_lab.ca_file.read_bytes() == the_lab.factory.ca_pem()
    await the_lab.stop()
    for address in set(the_lab.addresses.values()):
        with pytest.raises(ConnectionRefusedError):
            await greeting(address, the_lab.smtp_port)


def _write(the_lab: lab.Lab) -> Path:
    path = the_lab.workdir / "delivery.toml"
    path.write_text(the_lab.settings_toml())
    return path


async def _chain(address: str, port: int, name: str) -> list[x509.Certificate]:
    """The certificates the server presents, as openssl s_client -showcerts prints them."""
    process = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-starttls", "smtp", "-connect", f"{address}:{port}",
        "-servername", name, "-showcerts",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    output, _ = await process.communicate(b"QUIT\r\n")
    pems = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", output, re.S)
    return [x509.load_pem_x509_certificate(pem) for pem in pems]


def _spki_sha256(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


async def test_dane_records_match_what_the_hosts_present(make_lab: MakeLab) -> None:
    the_lab = await make_lab(SCENARIOS / "dane.toml")
    response = await query(the_lab, "_25._tcp.mx1.dane.test", "TLSA")
    assert response.flags & dns.flags.AD
    (record,) = [rdata for rrset in response.answer for rdata in rrset]
    (leaf,) = await _chain(the_lab.addresses["mx1.dane.test"], the_lab.smtp_port, "mx1.dane.test")
    assert (record.usage, record.selector, record.mtype) == (3, 1, 1)
    assert record.cert.hex() == _spki_sha256(leaf)

    response = await query(the_lab, "_25._tcp.mx2.dane.test", "TLSA")
    records = {
        (r.usage, r.selector, r.mtype): r.cert.hex() for rrset in response.answer for r in rrset
    }
    leaf, issuer = await _chain(
        the_lab.addresses["mx2.dane.test"], the_lab.smtp_port, "mx2.dane.test"
    )
    issuer_der = issuer.public_bytes(serialization.Encoding.DER)
    assert records[(2, 0, 1)] == hashlib.sha256(issuer_der).hexdigest()
    assert records[(3, 1, 1)] != _spki_sha256(leaf)  # the "mismatch" record matches nothing


async def test_first_mx_down_second_defers_third_accepts(make_lab: MakeLab) -> None:
    the_lab = await make_lab(SCENARIOS / "first-mx-down.toml")
    port = the_lab.smtp_port
    with pytest.raises(ConnectionRefusedError):
        await greeting(the_lab.addresses["mx1.backup.test"], port)
    with pytest.raises(KeyError, match=r"mx1\.backup\.test is down"):
        the_lab.mx("mx1.backup.test")
    async with aiosmtplib.SMTP(
        hostname=the_lab.addresses["mx2.backup.test"], port=port, start_tls=False
    ) as smtp:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await smtp.sendmail("a@origin.test", ["b@backup.test"], b"x\r\n")
    assert refused.value.code == 421
    async with aiosmtplib.SMTP(
        hostname=the_lab.addresses["mx3.backup.test"], port=port, start_tls=False
    ) as smtp:
        await smtp.sendmail("a@origin.test", ["b@backup.test"], b"x\r\n")
    (message,) = await the_lab.mx("mx3.backup.test").wait_for_messages()
    assert message.rcpt_tos == ["b@backup.test"]


async def _fetch_policy(the_lab: lab.Lab, domain: str) -> tuple[int, str]:
    response = await query(the_lab, f"mta-sts.{domain}", "A")
    (address,) = answers(response)
    port = the_lab.policy_server.address[1] if the_lab.policy_server else lab.POLICY_PORT
    context = ssl.create_default_context(cafile=str(the_lab.ca_file))
    connector = aiohttp.TCPConnector(ssl=context, resolver=_FixedResolver(address))
    async with aiohttp.ClientSession(connector=connector) as http:
        url = f"https://mta-sts.{domain}:{port}{POLICY_PATH}"
        async with http.get(url, allow_redirects=False) as reply:
            return reply.status, await reply.text()


class _FixedResolver(aiohttp.abc.AbstractResolver):
    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        return [
            {
                "hostname": host,
                "host": self.address,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        pass


async def test_mta_sts_policy_is_published_and_can_change(make_lab: MakeLab) -> None:
    the_lab = await make_lab(SCENARIOS / "mta-sts-enforce.toml")
    txt = answers(await query(the_lab, "_mta-sts.sts.test", "TXT"))
    assert txt == ['"v=STSv1; id=20240101T000000;"']
    assert answers(await query(the_lab, "_smtp._tls.sts.test", "TXT")) == [
        '"v=TLSRPTv1; rua=mailto:tlsrpt@sts.test"'
    ]
    status, body = await _fetch_policy(the_lab, "sts.test")
    assert status == 200
    assert body == format_policy("enforce", ["mx1.sts.test", "*.sts.test"], 604800)

    changed = format_policy("testing", ["mx1.sts.test"], 3600)
    the_lab.set_policy("sts.test", Policy(changed), policy_id="20250101")
    assert answers(await query(the_lab, "_mta-sts.sts.test", "TXT")) == [
        f'"{format_txt("20250101")}"'
    ]
    assert await _fetch_policy(the_lab, "sts.test") == (200, changed)
    assert the_lab.policy_server is not None
    assert the_lab.policy_server.request_count("sts.test") == 2


async def test_dns_faults_from_the_scenario(make_lab: MakeLab) -> None:
    the_lab = await make_lab(SCENARIOS / "dns-trouble.toml")
    assert (await query(the_lab, "mx1.bogus.test", "A")).rcode() == dns.rcode.SERVFAIL
    with pytest.raises(dns.exception.Timeout):
        await query(the_lab, "mx1.slowdns.test", "A", within=0.2)
    assert answers(await query(the_lab, "mx2.slowdns.test", "A")) == [
        the_lab.addresses["mx2.slowdns.test"]
    ]
    tlsa = await query(the_lab, "_25._tcp.mx1.tlsafail.test", "TLSA")
    assert tlsa.rcode() == dns.rcode.SERVFAIL


async def test_null_mx_and_implicit_mx(make_lab: MakeLab) -> None:
    the_lab = await make_lab(SCENARIOS / "null-mx.toml")
    assert answers(await query(the_lab, "nomail.test", "MX")) == ["0 ."]
    assert answers(await query(the_lab, "implicit.test", "MX")) == []
    assert answers(await query(the_lab, "implicit.test", "A")) == [
        the_lab.addresses["implicit.test"]
    ]
    address = the_lab.addresses["implicit.test"]
    assert (await greeting(address, the_lab.smtp_port)).startswith(b"220 implicit.test")


async def test_two_labs_at_once_get_their_own_addresses(make_lab: MakeLab) -> None:
    first = await make_lab(SCENARIOS / "plain.toml")
    second = await make_lab(SCENARIOS / "plain.toml")
    assert first.addresses["mx1.plain.test"] != second.addresses["mx1.plain.test"]
    for the_lab in (first, second):
        banner = await greeting(the_lab.addresses["mx1.plain.test"], the_lab.smtp_port)
        assert banner.startswith(b"220 mx1.plain.test")


async def test_a_scenario_address_is_used_as_given(make_lab: MakeLab) -> None:
    the_lab = await make_lab(
        '[[domains."fixed.test".mx]]\nname = "mx1.fixed.test"\nip = "127.254.77.2"\n'
    )
    assert the_lab.mx("mx1.fixed.test").address == ("127.254.77.2", the_lab.smtp_port)
    assert answers(await query(the_lab, "mx1.fixed.test", "A")) == ["127.254.77.2"]


async def test_unknown_host_names_the_hosts_there_are(make_lab: MakeLab) -> None:
    the_lab = await make_lab(SCENARIOS / "plain.toml")
    with pytest.raises(KeyError, match=r"no MX host mx9.plain.test .*hosts: mx1.plain.test"):
        the_lab.mx("mx9.plain.test")
    assert the_lab.mx("MX1.plain.test.") is the_lab.receivers["mx1.plain.test"]


def test_make_zones_publishes_the_scenario() -> None:
    parsed = scenario.parse(
        """
        [domains."example.test"]
        dnssec = "secure"
        faults = { "mx2.example.test" = "nxdomain" }
        mta_sts = { id = "1", mx = ["mx1.example.test"] }
        [[domains."example.test".mx]]
        name = "mx1.example.test"
        [[domains."example.test".mx]]
        name = "mx.provider.test"
        """
    )
    tlsa = {"mx1.example.test": ()}
    zones = lab.make_zones(
        parsed,
        {"mx1.example.test": "127.0.5.2", "mx.provider.test": "127.0.5.3"},
        {"example.test": "127.0.5.4"},
        tlsa,
    )
    assert [(z.origin, z.dnssec) for z in zones] == [
        ("example.test.", "secure"),
        ("provider.test.", "secure"),
    ]
    assert zones[0].records == (
        RecordSpec("example.test.", "MX", "10 mx1.example.test."),
        RecordSpec("example.test.", "MX", "20 mx.provider.test."),
        RecordSpec("_mta-sts.example.test.", "TXT", "v=STSv1; id=1;"),
        RecordSpec("mta-sts.example.test.", "A", "127.0.5.4"),
        RecordSpec("mx1.example.test.", "A", "127.0.5.2"),
    )
    assert dict(zones[0].faults) == {"mx2.example.test.": "nxdomain"}
    assert zones[1].records == (RecordSpec("mx.provider.test.", "A", "127.0.5.3"),)


async def test_settings_toml_says_where_everything_is(make_lab: MakeLab) -> None:
    the_lab = await make_lab(SCENARIOS / "mta-sts-enforce.toml")
    text = the_lab.settings_toml()
    for name, address in the_lab.addresses.items():
        assert f"#   MX {name} = {address}:{the_lab.smtp_port} (TLS valid)" in text
    assert the_lab.policy_server is not None
    policy_host, policy_port = the_lab.policy_server.address
    assert f"#   MTA-STS policy server = {policy_host}:{policy_port}" in text
    assert the_lab.settings()["smtp"] == {"port": the_lab.smtp_port}


async def test_settings_point_the_dnssec_probe_at_a_signed_zone_of_the_lab(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    """`delivery harness run` + `delivery serve` must find a validating resolver, or DANE is off."""
    the_lab = await make_lab(SCENARIOS / "dane.toml")
    settings_file = tmp_path / "delivery.toml"
    settings_file.write_text(the_lab.settings_toml())
    settings = config.load(settings_file, environ={})
    assert settings.dns.dnssec_probe == "dane.test."
    async with dns_resolver.Resolver(settings.dns.servers(), timeout_ms=2000) as resolver:
        assert await resolver.probe_dnssec(settings.dns.dnssec_probe)

    plain = await make_lab(SCENARIOS / "plain.toml")
    assert "dnssec_probe" not in plain.settings()["dns"]
