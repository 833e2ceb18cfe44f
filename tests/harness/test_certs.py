"""Certificate factory: each kind as OpenSSL's verifier sees it, PEM files, TLSA data."""

from __future__ import annotations

import hashlib
import itertools
import stat
import subprocess
from pathlib import Path

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TLSA
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from delivery.harness import certs

NAME = "mx1.example.test"

KIND_CASES = [  # (kind, intermediate, what `openssl verify` says, None: verifies)
    ("valid", False, None),
    ("valid", True, None),
    ("self-signed", False, "self-signed certificate"),
    ("expired", False, "certificate has expired"),
    ("expired", True, "certificate has expired"),
    ("not-yet-valid", False, "certificate is not yet valid"),
    ("wrong-name", False, "hostname mismatch"),
    ("unknown-ca", False, "unable to get local issuer certificate"),
    ("no-server-auth", False, "unsuitable certificate purpose"),
]


def openssl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=False)


@pytest.mark.parametrize(("kind", "intermediate", "error"), KIND_CASES)
def test_each_kind_verifies_or_fails_as_named(
    harness_certs: certs.CertFactory,
    harness_ca_file: Path,
    tmp_path: Path,
    kind: certs.CertKind,
    intermediate: bool,
    error: str | None,
) -> None:
    files = harness_certs.credential(NAME, kind, intermediate=intermediate).write(tmp_path, "mx")
    result = openssl(
        "verify",
        "-CAfile", str(harness_ca_file),
        "-untrusted", str(files.fullchain),
        "-purpose", "sslserver",
        "-verify_hostname", NAME,
        str(files.cert),
    )  # fmt: skip
    output = (result.stdout + result.stderr).decode()
    if error is None:
        assert result.returncode == 0, output
    else:
        assert result.returncode != 0
        assert error in output


def test_pem_files_hold_leaf_key_and_chain(
    harness_certs: certs.CertFactory, tmp_path: Path
) -> None:
    credential = harness_certs.credential(NAME, intermediate=True)
    files = credential.write(tmp_path, "mx")
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert files.chain.read_bytes() == harness_certs.intermediate.cert_pem()
    assert files.fullchain.read_bytes() == files.cert.read_bytes() + files.chain.read_bytes()
    cert_key = openssl("x509", "-in", str(files.cert), "-noout", "-pubkey").stdout
    key_pub = openssl("pkey", "-in", str(files.key), "-pubout").stdout
    assert cert_key == key_pub != b""


def test_root_issued_leaf_has_an_empty_chain(
    harness_certs: certs.CertFactory, tmp_path: Path
) -> None:
    files = harness_certs.credential(NAME).write(tmp_path, "mx")
    assert files.chain.read_bytes() == b""


def test_names_go_into_subject_alt_name(harness_certs: certs.CertFactory) -> None:
    credential = harness_certs.credential(["mx1.example.test", "mx.example.test"])
    text = openssl("x509", "-noout", "-ext", "subjectAltName", data=credential.cert_pem())
    assert b"DNS:mx1.example.test, DNS:mx.example.test" in text.stdout


def test_credentials_are_issued_once_per_names_kind_and_issuer(
    harness_certs: certs.CertFactory,
) -> None:
    first = harness_certs.credential(NAME, "expired")
    assert harness_certs.credential(NAME.upper() + ".", "expired") is first
    assert harness_certs.credential(NAME, "valid") is not first
    assert harness_certs.credential(NAME, "expired", intermediate=True) is not first


def test_rsa_keys_on_request() -> None:
    factory = certs.CertFactory(key_type="rsa")
    credential = factory.credential(NAME)
    assert isinstance(credential.key, rsa.RSAPrivateKey)
    assert credential.key.key_size == certs.RSA_KEY_BITS


def _der(pem: bytes, selector: int) -> bytes:
    """What a TLSA selector covers, extracted by openssl (independently of our code)."""
    if selector == 0:
        return openssl("x509", "-outform", "DER", data=pem).stdout
    public = openssl("x509", "-noout", "-pubkey", data=pem).stdout
    return openssl("pkey", "-pubin", "-outform", "DER", data=public).stdout


@pytest.mark.parametrize(
    ("source", "selector", "mtype"),
    list(itertools.product(certs.TLSA_SOURCES, (0, 1), (0, 1, 2))),
)
def test_tlsa_data_matches_what_openssl_extracts(
    harness_certs: certs.CertFactory, source: certs.TlsaSource, selector: int, mtype: int
) -> None:
    credential = harness_certs.credential(NAME, intermediate=True)
    described = {
        "leaf": credential.cert_pem(),
        "issuer": harness_certs.intermediate.cert_pem(),
        "ca": harness_certs.ca_pem(),
    }[source]
    der = _der(described, selector)
    expected = {0: der, 1: hashlib.sha256(der).digest(), 2: hashlib.sha512(der).digest()}[mtype]
    record = credential.tlsa(3 if source == "leaf" else 2, selector, mtype, source=source)
    assert record.data == expected.hex()
    assert record.as_tuple() == (record.usage, selector, mtype, expected.hex())
    parsed = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, record.to_text())
    assert isinstance(parsed, dns.rdtypes.ANY.TLSA.TLSA)
    assert (parsed.usage, parsed.selector, parsed.mtype, parsed.cert) == (
        record.usage,
        selector,
        mtype,
        expected,
    )


def test_self_signed_leaf_is_its_own_issuer_and_root(harness_certs: certs.CertFactory) -> None:
    credential = harness_certs.credential(NAME, "self-signed")
    assert credential.tlsa(2, 0, 1, source="ca") == credential.tlsa(2, 0, 1, source="leaf")


@pytest.mark.parametrize(("usage", "selector", "mtype"), [(4, 1, 1), (3, 2, 1), (3, 1, 3)])
def test_tlsa_fields_outside_the_registries_are_refused(
    harness_certs: certs.CertFactory, usage: int, selector: int, mtype: int
) -> None:
    with pytest.raises(ValueError, match="TLSA"):
        harness_certs.credential(NAME).tlsa(usage, selector, mtype)


def test_a_leaf_needs_a_name(harness_certs: certs.CertFactory) -> None:
    with pytest.raises(ValueError, match="at least one name"):
        harness_certs.credential([])
