"""The lab's Postfix receivers and MTA-STS policy server, run from make_zones.py's configuration.

Each receiver is Debian's Postfix started with ``postfix -c <its etc>`` on its own loopback
address (as root, as Postfix needs): mx-valid offers STARTTLS with a certificate that verifies
against the lab CA for every name pointing at it, mx-selfsigned offers STARTTLS with the
self-signed certificate its DANE-EE record describes, mx-plain offers no STARTTLS; mail lands
in a Maildir per recipient domain, with Postfix's own record of the TLS used. nginx serves each
MTA-STS policy over TLS with a certificate of the lab CA, and nothing else.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
import time
from email.parser import BytesParser
from pathlib import Path

import pytest
from cryptography import x509

from delivery.harness import certs
from tests.lab.conftest import (
    START_TIMEOUT_S,
    LabMaterial,
    load_make_zones,
    postfix,
    which,
)

EHLO_NAME = "engine.lab.test"
SMTP_TIMEOUT_S = 10.0


def smtp(lab: LabMaterial, role: str) -> smtplib.SMTP:
    client = smtplib.SMTP(timeout=SMTP_TIMEOUT_S, local_hostname=EHLO_NAME)
    client.connect(lab.addresses[role], lab.ports["smtp"])
    return client


def starttls(client: smtplib.SMTP, context: ssl.SSLContext, server_name: str) -> ssl.SSLSocket:
    """STARTTLS with SNI and name check for ``server_name`` (smtplib would use the address)."""
    code, _ = client.docmd("STARTTLS")
    assert code == 220 and client.sock is not None
    client.sock = context.wrap_socket(client.sock, server_hostname=server_name)
    client.file = None
    client.helo_resp = client.ehlo_resp = None  # forget the features seen before TLS
    client.esmtp_features, client.does_esmtp = {}, False
    return client.sock


@pytest.mark.parametrize("role", ["mx-valid", "mx-selfsigned", "mx-plain"])
def test_postfix_accepts_each_configuration(lab_receivers: LabMaterial, role: str) -> None:
    checked = postfix(lab_receivers, role, "check")
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout
    etc = lab_receivers.out / "postfix" / role / "etc"
    shown = subprocess.run(
        [which("postconf") or "postconf", "-c", str(etc), "-h", "smtpd_tls_security_level"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    receiver = load_make_zones().RECEIVERS[role]
    assert shown == ("none" if receiver.tls == "none" else "may")


def test_valid_receiver_verifies_for_every_name_pointing_at_it(
    lab_receivers: LabMaterial,
) -> None:
    make_zones = load_make_zones()
    names = [name for name, host in make_zones.HOSTS.items() if host.receiver == "mx-valid"]
    assert len(names) >= 3
    for name in names:
        context = ssl.create_default_context(cafile=str(lab_receivers.out / "ca.pem"))
        with smtp(lab_receivers, "mx-valid") as client:
            client.ehlo()
            assert client.has_extn("starttls")
            tls = starttls(client, context, name)
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            client.ehlo()
            assert not client.has_extn("starttls")  # EHLO again, inside TLS


def test_selfsigned_receiver_fails_pkix_and_presents_its_dane_ee_certificate(
    lab_receivers: LabMaterial,
) -> None:
    context = ssl.create_default_context(cafile=str(lab_receivers.out / "ca.pem"))
    with smtp(lab_receivers, "mx-selfsigned") as client:
        client.ehlo()
        assert client.has_extn("starttls")
        with pytest.raises(ssl.SSLCertVerificationError):
            starttls(client, context, "mx-selfsigned.lab.test")
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    with smtp(lab_receivers, "mx-selfsigned") as client:
        client.ehlo()
        tls = starttls(client, unverified, "mx-dane-ee.lab.test")
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    presented = x509.load_der_x509_certificate(der)
    on_file = x509.load_pem_x509_certificate(
        (lab_receivers.out / "certs" / "mx-selfsigned.crt").read_bytes()
    )
    assert presented == on_file
    zone = (lab_receivers.out / "zones" / "unsigned" / "lab.test.zone").read_text()
    record = certs.make_tlsa(presented, 3, 1, 1).to_text()
    assert f"_25._tcp.mx-dane-ee TLSA {record}" in zone


def test_plain_receiver_offers_no_starttls(lab_receivers: LabMaterial) -> None:
    with smtp(lab_receivers, "mx-plain") as client:
        code, _ = client.ehlo()
        assert code == 250
        assert not client.has_extn("starttls")
        code, _ = client.docmd("STARTTLS")
        assert code >= 500


def test_mail_lands_in_the_domain_maildir_with_the_tls_it_came_over(
    lab_receivers: LabMaterial,
) -> None:
    recipient = "bob@starttls.lab.test"
    marker = f"lab-test-{time.monotonic_ns()}"
    message = f"From: lab@{EHLO_NAME}\r\nSubject: {marker}\r\n\r\nhello\r\n".encode()
    context = ssl.create_default_context(cafile=str(lab_receivers.out / "ca.pem"))
    with smtp(lab_receivers, "mx-valid") as client:
        client.ehlo()
        starttls(client, context, "mx-valid.lab.test")
        client.ehlo()
        assert client.sendmail(f"lab@{EHLO_NAME}", [recipient], message) == {}
    maildir = lab_receivers.out / "mail" / "mx-valid" / "starttls.lab.test" / "new"
    delivered = wait_for_file(maildir, marker)
    headers = BytesParser().parsebytes(delivered.read_bytes(), headersonly=True)
    assert headers["Delivered-To"] == recipient
    received = " ".join(headers.get_all("Received") or [])
    assert "using TLSv1." in received and "by mx-valid.lab.test (Postfix)" in received


def wait_for_file(folder: Path, marker: str) -> Path:
    """The Maildir file holding ``marker``, once virtual(8) has written it."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if folder.is_dir():
            for path in folder.iterdir():
                if marker in path.read_text(errors="replace"):
                    return path
        time.sleep(0.05)
    pytest.fail(f"no message {marker} in {folder} within {START_TIMEOUT_S:.0f} s")


def https_get(lab: LabMaterial, host: str, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of GET https://host/path from the lab's policy server."""
    context = ssl.create_default_context(cafile=str(lab.out / "ca.pem"))
    address = (lab.addresses["mta-sts"], lab.ports["https"])
    with (
        socket.create_connection(address, timeout=SMTP_TIMEOUT_S) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        tls.sendall(request.encode())
        response = b""
        while chunk := tls.recv(65536):
            response += chunk
    head, _, body = response.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return status, fields.get("content-type", ""), body


def test_policy_server_serves_each_policy_and_nothing_else(lab_policies: LabMaterial) -> None:
    make_zones = load_make_zones()
    served = 0
    for domain in make_zones.DOMAINS:
        if domain.mta_sts is None:
            continue
        host = f"mta-sts.{domain.name}"
        status, content_type, body = https_get(lab_policies, host, "/.well-known/mta-sts.txt")
        assert (status, content_type) == (200, "text/plain"), host
        assert body.splitlines()[:3] == [
            "version: STSv1",
            f"mode: {domain.mta_sts}",
            f"mx: {domain.mx}",
        ]
        assert https_get(lab_policies, host, "/")[0] == 404
        served += 1
    assert served == 3
