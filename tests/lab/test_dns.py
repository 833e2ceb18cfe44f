"""The lab's DNS as the engine sees it: Knot serving the zones make_zones.py signed with
kzonesign, Unbound validating them from the lab's trust anchor (both Debian's, run from the
configuration the script wrote, on loopback).

Signed lab domains answer with AD (MX, the MX host's address, TLSA, MTA-STS records); the
unsigned one answers without AD; the one whose signatures expired is SERVFAIL; TLSA records
match the certificates the receivers present; names outside the lab are never looked up
elsewhere; faults.test is asked of the harness's DNS server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from cryptography import x509

from delivery.harness import certs, lab, loopback, scenario
from tests.lab.conftest import LAB, LabMaterial, load_make_zones


def rdatas(answer: dns.message.Message, rtype: str) -> list[str]:
    wanted = dns.rdatatype.from_text(rtype)
    return [rd.to_text() for rrset in answer.answer if rrset.rdtype == wanted for rd in rrset]


def secure(answer: dns.message.Message) -> bool:
    return answer.rcode() == dns.rcode.NOERROR and bool(answer.flags & dns.flags.AD)


def pem_certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes()) if path.read_bytes() else []


def test_signed_lab_domains_answer_with_ad(lab_dns: LabMaterial) -> None:
    make_zones = load_make_zones()
    checked = 0
    for domain in make_zones.DOMAINS:
        if domain.dnssec != "secure":
            continue
        answer = lab_dns.query(domain.name, "MX")
        assert secure(answer), f"{domain.name} MX: {answer}"
        assert rdatas(answer, "MX") == [f"10 {domain.mx}."]
        if domain.mta_sts:
            txt = lab_dns.query(f"_mta-sts.{domain.name}", "TXT")
            assert secure(txt) and rdatas(txt, "TXT")[0].startswith('"v=STSv1; id=')
            policy_host = lab_dns.query(f"mta-sts.{domain.name}", "A")
            assert secure(policy_host)
            assert rdatas(policy_host, "A") == [lab_dns.addresses["mta-sts"]]
        checked += 1
    assert checked >= 8
    for name, host in make_zones.HOSTS.items():
        answer = lab_dns.query(name, "A")
        assert secure(answer), f"{name} A: {answer}"
        assert rdatas(answer, "A") == [lab_dns.addresses[host.receiver]]


def test_tlsa_records_are_signed_and_match_the_receivers_certificates(
    lab_dns: LabMaterial,
) -> None:
    """Computed here again from the certificate files the receivers present."""
    make_zones = load_make_zones()
    folder = lab_dns.out / "certs"
    presented = {
        role: pem_certs(folder / f"{role}.fullchain.pem")
        for role, receiver in make_zones.RECEIVERS.items()
        if receiver.tls != "none"
    }
    for name, host in make_zones.HOSTS.items():
        answer = lab_dns.query(f"_25._tcp.{name}", "TLSA")
        if not host.tlsa:  # proven absent (signed NXDOMAIN): DANE does not apply to the host
            assert answer.rcode() == dns.rcode.NXDOMAIN and answer.flags & dns.flags.AD, name
            continue
        assert secure(answer), f"_25._tcp.{name} TLSA: {answer}"
        records = rdatas(answer, "TLSA")
        chain = presented[host.receiver]
        for spec, record in zip(host.tlsa, records, strict=True):
            usage, selector, mtype, source = spec.split()
            fields = int(usage), int(selector), int(mtype)
            matches = [certs.make_tlsa(c, *fields).to_text() == record for c in chain]
            if source == "leaf":
                assert matches[0], f"{name}: {record} does not match its certificate"
            elif source == "issuer":
                assert any(matches[1:]), f"{name}: {record} matches no CA above the leaf"
            else:
                assert not any(matches), f"{name}: the mismatch record {record} matches"


def test_unsigned_lab_domain_answers_without_ad(lab_dns: LabMaterial) -> None:
    answer = lab_dns.query("insecure.lab.test", "MX")
    assert answer.rcode() == dns.rcode.NOERROR
    assert not answer.flags & dns.flags.AD
    assert rdatas(answer, "MX") == ["10 mx-dane-bad.lab.test."]


def test_zone_with_expired_signatures_is_servfail(lab_dns: LabMaterial) -> None:
    answer = lab_dns.query("bogus.lab.test", "MX")
    assert answer.rcode() == dns.rcode.SERVFAIL
    assert "signature expired" in (lab_dns.logs / "unbound.log").read_text(errors="replace")


def test_names_outside_the_lab_are_not_resolved(lab_dns: LabMaterial) -> None:
    """The resolver's only upstream is the lab's server, which refuses other names."""
    answer = lab_dns.query("example.com", "A")
    assert answer.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED)
    assert rdatas(answer, "A") == []


async def test_faults_test_is_asked_of_the_harness(
    lab_dns: LabMaterial, harness_pool: loopback.LoopbackPool
) -> None:
    faults = scenario.load(LAB / "faults.toml")
    harness = lab.Lab(
        faults,
        pool=harness_pool,
        dns_host=lab_dns.addresses["harness-dns"],
        dns_port=lab_dns.ports["harness-dns"],
    )
    async with harness:
        # The harness's DNS server answers in this event loop: ask from another thread.
        answer = await asyncio.to_thread(lab_dns.query, "tempfail.faults.test", "MX")
        assert answer.rcode() == dns.rcode.NOERROR and not answer.flags & dns.flags.AD
        assert rdatas(answer, "MX") == ["10 mx1.tempfail.faults.test."]
        nomail = await asyncio.to_thread(lab_dns.query, "nomail.faults.test", "MX")
        assert rdatas(nomail, "MX") == ["0 ."]
        servfail = await asyncio.to_thread(lab_dns.query, "servfail.faults.test", "MX")
        assert servfail.rcode() == dns.rcode.SERVFAIL
        asked = [(name.rstrip(".").lower(), rtype) for name, rtype in harness.dns.queries]
    assert ("tempfail.faults.test", "MX") in asked


@pytest.mark.parametrize("role", ["auth", "resolver"])
def test_servers_listen_only_where_they_were_told(lab_dns: LabMaterial, role: str) -> None:
    """The addresses and ports come from make_zones.py's arguments, not from edited files."""
    conf = {"auth": "knot/knot.conf", "resolver": "unbound/unbound.conf"}[role]
    text = (lab_dns.out / conf).read_text()
    assert f"{lab_dns.addresses[role]}@{lab_dns.ports[role]}" in text
