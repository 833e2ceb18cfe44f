"""A small test PKI: root CA, intermediate, and leaves good and bad for one MX name.

Test material only (unencrypted keys in a pytest temporary folder). The harness
will have its own certificate factory (delivery/harness/certs.py); this one
exists so tests/smtp does not wait for it.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MX_NAME = "mx1.example.test"

_DAY = datetime.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    names: tuple[str, ...] = (),
    expired: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - (30 * _DAY if expired else _DAY))
        .not_valid_after(now - _DAY if expired else now + 30 * _DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False
        ).add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class Pki:
    """Paths and server contexts of the test PKI; `leaves` maps kind -> server context."""

    ca_file: str
    leaf_der: bytes
    intermediate_der: bytes
    leaves: dict[str, ssl.SSLContext]


def make_pki(directory: Path) -> Pki:
    """Root -> intermediate -> leaf for MX_NAME (valid), and self-signed/expired/wrong-name."""
    root_key, inter_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    root = _cert("test root CA", root_key, None, ca=True)
    inter = _cert("test intermediate CA", inter_key, (root.subject, root_key), ca=True)
    by_inter = (inter.subject, inter_key)
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(_pem(root))

    leaves: dict[str, ssl.SSLContext] = {}
    valid_leaf = None
    for kind in ("valid", "self-signed", "expired", "wrong-name"):
        key = ec.generate_private_key(ec.SECP256R1())
        names = ("other.example.test",) if kind == "wrong-name" else (MX_NAME,)
        issuer = None if kind == "self-signed" else by_inter
        leaf = _cert(MX_NAME, key, issuer, ca=False, names=names, expired=kind == "expired")
        chain = (leaf,) if kind == "self-signed" else (leaf, inter)
        (directory / f"{kind}.pem").write_bytes(_pem(*chain))
        (directory / f"{kind}.key").write_bytes(_key_pem(key))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / f"{kind}.pem", directory / f"{kind}.key")
        leaves[kind] = context
        if kind == "valid":
            valid_leaf = leaf
    assert valid_leaf is not None
    return Pki(
        ca_file=str(ca_file),
        leaf_der=valid_leaf.public_bytes(serialization.Encoding.DER),
        intermediate_der=inter.public_bytes(serialization.Encoding.DER),
        leaves=leaves,
    )
