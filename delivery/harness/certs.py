"""Certificate factory of the test harness: a CA, intermediates, leaves good and bad, TLSA data.

Makes the X.509 material the harness servers present and the engine checks: a harness root CA
(the trust anchor written to ``[tls] ca_file``), intermediates under it, leaf certificates for
any DNS names (subjectAltName dNSName), and the bad kinds a sender must refuse. For any
certificate it computes DANE TLSA association data (RFC 6698 §2.1).

Kinds (`CertKind`), as a PKIX verifier sees them with the harness CA as the only anchor:
    valid            issued by the harness CA (or its intermediate) for the names: verifies
    self-signed      issuer = subject, not issued by any CA: "self-signed certificate"
    expired          notAfter in the past: "certificate has expired"
    not-yet-valid    notBefore in the future: "certificate is not yet valid"
    wrong-name       valid chain, but the SAN names WRONG_NAME only: "hostname mismatch"
    unknown-ca       issued by a second CA that is never written to the CA file:
                     "unable to get local issuer certificate"
    no-server-auth   extendedKeyUsage clientAuth only: "unsupported certificate purpose"

Outcomes: values (`Credential`, `TlsaRecord`); `ValueError` for impossible requests (no names,
TLSA parameters outside RFC 6698 registries).

Security: test material only. Private keys are unencrypted, written with mode 0600, and never
leave the machine; nothing here should ever be trusted outside a harness run.

Standards: RFC 5280 (profile), RFC 6125 (names in SAN), RFC 6698 and RFC 7671 (TLSA fields).
Limits: EC P-256 keys by default (generation takes microseconds; RSA-2048 on request for peers
that need it). A `CertFactory` memoizes every credential it issued, so one factory per test
session pays for each (names, kind) once.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, assert_never, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CERT_KINDS",
    "KEY_TYPES",
    "TLSA_SOURCES",
    "WRONG_NAME",
    "CertFactory",
    "CertKind",
    "CertificateAuthority",
    "Credential",
    "KeyType",
    "PemFiles",
    "PrivateKey",
    "TlsaRecord",
    "TlsaSource",
    "check_tlsa_fields",
    "make_tlsa",
]

CertKind = Literal[
    "valid",
    "self-signed",
    "expired",
    "not-yet-valid",
    "wrong-name",
    "unknown-ca",
    "no-server-auth",
]
CERT_KINDS: tuple[CertKind, ...] = get_args(CertKind)

KeyType = Literal["ec", "rsa"]
KEY_TYPES: tuple[KeyType, ...] = get_args(KeyType)

TlsaSource = Literal["leaf", "issuer", "ca"]
"""Which certificate of a credential a TLSA record describes: the leaf itself, the certificate
that signed it (the intermediate when there is one, else the root), or the root CA."""
TLSA_SOURCES: tuple[TlsaSource, ...] = get_args(TlsaSource)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

WRONG_NAME = "wrong-name.harness.invalid"
"""The only SAN of a ``wrong-name`` certificate: under .invalid (RFC 2606), so it can match
no MX host a scenario names."""

RSA_KEY_BITS = 2048  # the smallest size every TLS stack still accepts
LEAF_LIFETIME = datetime.timedelta(days=90)  # outlives any harness run; short like real leaves
CA_LIFETIME = datetime.timedelta(days=3650)
BACKDATE = datetime.timedelta(hours=1)  # tolerates clock skew between processes of one run
EXPIRED_AGO = datetime.timedelta(days=1)  # notAfter of an ``expired`` certificate, before now
NOT_YET_VALID_IN = datetime.timedelta(days=1)  # notBefore of a ``not-yet-valid`` one, after now

# RFC 6698 §2.1: the registries of the three numeric fields.
TLSA_USAGES = (0, 1, 2, 3)  # PKIX-TA, PKIX-EE, DANE-TA, DANE-EE
TLSA_SELECTORS = (0, 1)  # full certificate, SubjectPublicKeyInfo
TLSA_MATCHING_TYPES = (0, 1, 2)  # exact, SHA-256, SHA-512


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _make_key(key_type: KeyType) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "delivery harness"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True, slots=True)
class TlsaRecord:
    """One TLSA association (RFC 6698 §2.1): usage, selector, matching type, data as hex.

    >>> TlsaRecord(3, 1, 1, "ab12").to_text()
    '3 1 1 ab12'
    """

    usage: int
    selector: int
    mtype: int
    data: str  # lowercase hex of the (hashed) certificate or SubjectPublicKeyInfo

    def to_text(self) -> str:
        """The record's rdata in zone-file presentation form."""
        return f"{self.usage} {self.selector} {self.mtype} {self.data}"

    def as_tuple(self) -> tuple[int, int, int, str]:
        """``(usage, selector, mtype, hex)``."""
        return (self.usage, self.selector, self.mtype, self.data)


def check_tlsa_fields(usage: int, selector: int, mtype: int) -> None:
    """Check TLSA usage, selector and matching type against the RFC 6698 registries.

    :raises ValueError: naming the field outside its registry.
    """
    if usage not in TLSA_USAGES:
        raise ValueError(f"TLSA usage {usage} is not one of {TLSA_USAGES}")
    if selector not in TLSA_SELECTORS:
        raise ValueError(f"TLSA selector {selector} is not one of {TLSA_SELECTORS}")
    if mtype not in TLSA_MATCHING_TYPES:
        raise ValueError(f"TLSA matching type {mtype} is not one of {TLSA_MATCHING_TYPES}")


def make_tlsa(cert: x509.Certificate, usage: int, selector: int, mtype: int) -> TlsaRecord:
    """The TLSA association of ``cert`` for the given usage, selector and matching type.

    :raises ValueError: a field outside the RFC 6698 registries.
    """
    check_tlsa_fields(usage, selector, mtype)
    if selector == 0:
        selected = cert.public_bytes(serialization.Encoding.DER)
    else:
        selected = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    if mtype == 1:
        selected = hashlib.sha256(selected).digest()
    elif mtype == 2:
        selected = hashlib.sha512(selected).digest()
    return TlsaRecord(usage, selector, mtype, selected.hex())


@dataclass(frozen=True, slots=True)
class PemFiles:
    """Where `Credential.write` put each part."""

    cert: Path  # the leaf alone
    key: Path  # its private key, PKCS#8, mode 0600
    chain: Path  # the intermediates, leaf excluded (empty file when issued by the root)
    fullchain: Path  # leaf then intermediates: what a server presents


@dataclass(frozen=True, slots=True, eq=False)
class Credential:
    """A leaf certificate, its key, the intermediates to present, and the root that anchors it."""

    kind: CertKind
    names: tuple[str, ...]  # the names asked for (a wrong-name leaf does not carry them)
    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...]  # intermediates, nearest the leaf first; may be empty
    root: x509.Certificate  # the self-signed anchor at the top (the leaf itself if self-signed)
    _context: list[ssl.SSLContext] = field(default_factory=list, compare=False, repr=False)

    def cert_pem(self) -> bytes:
        """The leaf, PEM."""
        return _pem(self.cert)

    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM."""
        return _key_pem(self.key)

    def chain_pem(self) -> bytes:
        """The intermediates, PEM, nearest the leaf first (empty when there are none)."""
        return b"".join(_pem(cert) for cert in self.chain)

    def fullchain_pem(self) -> bytes:
        """Leaf then intermediates: what a server sends in its Certificate message."""
        return self.cert_pem() + self.chain_pem()

    def write(self, directory: Path, stem: str) -> PemFiles:
        """Write ``<stem>.crt``, ``<stem>.key``, ``<stem>.chain.pem``, ``<stem>.fullchain.pem``.

        :returns: the paths written.
        """
        directory.mkdir(parents=True, exist_ok=True)
        files = PemFiles(
            cert=directory / f"{stem}.crt",
            key=directory / f"{stem}.key",
            chain=directory / f"{stem}.chain.pem",
            fullchain=directory / f"{stem}.fullchain.pem",
        )
        files.cert.write_bytes(self.cert_pem())
        _write_private(files.key, self.key_pem())
        files.chain.write_bytes(self.chain_pem())
        files.fullchain.write_bytes(self.fullchain_pem())
        return files

    def issuer_cert(self) -> x509.Certificate:
        """The certificate that signed the leaf (itself when self-signed)."""
        return self.chain[0] if self.chain else self.root

    def tlsa(
        self, usage: int, selector: int, mtype: int, *, source: TlsaSource = "leaf"
    ) -> TlsaRecord:
        """The TLSA association for the leaf, its issuer or its root (see `TlsaSource`).

        :raises ValueError: a field outside the RFC 6698 registries.
        """
        cert = {"leaf": self.cert, "issuer": self.issuer_cert(), "ca": self.root}[source]
        return make_tlsa(cert, usage, selector, mtype)

    def server_context(self) -> ssl.SSLContext:
        """A server-side SSLContext presenting this credential, built once and then shared.

        Do not change the shared context; `make_server_context` makes one of your own.
        """
        if not self._context:
            self._context.append(self.make_server_context())
        return self._context[0]

    def make_server_context(self) -> ssl.SSLContext:
        """A new server-side SSLContext presenting this credential."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # ssl can only load a chain from files: write them to a private temporary folder.
        with tempfile.TemporaryDirectory(prefix="delivery-harness-") as tmp:
            files = self.write(Path(tmp), "server")
            context.load_cert_chain(files.fullchain, files.key)
        return context


def _write_private(path: Path, data: bytes) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # O_CREAT keeps an existing file's mode: start from a new file
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA that issues leaves and intermediates; `parent` is None for a root."""

    cert: x509.Certificate
    key: PrivateKey
    parent: CertificateAuthority | None = None

    @classmethod
    def create_root(
        cls, common_name: str = "delivery harness root CA", *, key_type: KeyType = "ec"
    ) -> CertificateAuthority:
        """A new self-signed root CA, valid from an hour ago for ten years."""
        key = _make_key(key_type)
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @property
    def root(self) -> CertificateAuthority:
        """The root at the top of this CA's chain."""
        return self if self.parent is None else self.parent.root

    def chain(self) -> tuple[x509.Certificate, ...]:
        """This CA's certificate and its parents', root excluded: what a server presents."""
        if self.parent is None:
            return ()
        return (self.cert, *self.parent.chain())

    def cert_pem(self) -> bytes:
        """This CA's certificate, PEM."""
        return _pem(self.cert)

    def key_pem(self) -> bytes:
        """This CA's private key, unencrypted PKCS#8 PEM."""
        return _key_pem(self.key)

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.pem`` (certificate) and ``<stem>.key`` (mode 0600); return both."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_file.write_bytes(self.cert_pem())
        _write_private(key_file, self.key_pem())
        return cert_file, key_file

    def intermediate(
        self, common_name: str = "delivery harness intermediate CA", *, key_type: KeyType = "ec"
    ) -> CertificateAuthority:
        """A new intermediate CA under this one (pathLenConstraint 0: it issues leaves only)."""
        key = _make_key(key_type)
        now = _now()
        cert = (
            self._builder(_name(common_name), key, now - BACKDATE, now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return CertificateAuthority(cert, key, self)

    def issue(
        self,
        names: Sequence[str],
        *,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        server_auth: bool = True,
        key_type: KeyType = "ec",
        kind: CertKind = "valid",
    ) -> Credential:
        """A leaf for ``names`` (SAN dNSName; the first is also the CN), signed by this CA.

        :param server_auth: False puts only clientAuth in extendedKeyUsage.
        :param kind: recorded on the credential; the caller chose the fields that make it so.
        :raises ValueError: no names.
        """
        if not names:
            raise ValueError("a leaf certificate needs at least one name")
        key = _make_key(key_type)
        now = _now()
        cert = (
            self._builder(
                _name(names[0]), key, not_before or now - BACKDATE, not_after or now + LEAF_LIFETIME
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(key), critical=True)
            .add_extension(_eku(server_auth), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .sign(self.key, hashes.SHA256())
        )
        return Credential(kind, tuple(names), cert, key, self.chain(), self.root.cert)

    def _builder(
        self,
        subject: x509.Name,
        key: PrivateKey,
        not_before: datetime.datetime,
        not_after: datetime.datetime,
    ) -> x509.CertificateBuilder:
        issuer_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski.value),
                critical=False,
            )
        )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage(key: PrivateKey) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        # RSA key exchange needs keyEncipherment; an EC key never encrypts.
        key_encipherment=isinstance(key, rsa.RSAPrivateKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _eku(server_auth: bool) -> x509.ExtendedKeyUsage:
    if server_auth:
        return x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    return x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])


def _self_signed(names: Sequence[str], key_type: KeyType) -> Credential:
    key = _make_key(key_type)
    now = _now()
    subject = _name(names[0])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + LEAF_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(key), critical=True)
        .add_extension(_eku(True), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return Credential("self-signed", tuple(names), cert, key, (), cert)


class CertFactory:
    """The harness CA plus every credential issued under it, memoized.

    One factory per test session (or per `delivery harness run`): the CA, its intermediate, the
    unknown CA and each (names, kind, intermediate) credential are made once.
    """

    def __init__(self, ca: CertificateAuthority | None = None, *, key_type: KeyType = "ec") -> None:
        self.key_type: KeyType = key_type
        self.ca = ca or CertificateAuthority.create_root(key_type=key_type)
        self._intermediate: CertificateAuthority | None = None
        self._unknown_ca: CertificateAuthority | None = None
        self._issued: dict[tuple[tuple[str, ...], CertKind, bool], Credential] = {}

    @property
    def intermediate(self) -> CertificateAuthority:
        """The harness intermediate CA (made on first use)."""
        if self._intermediate is None:
            self._intermediate = self.ca.intermediate(key_type=self.key_type)
        return self._intermediate

    @property
    def unknown_ca(self) -> CertificateAuthority:
        """A second root that no harness CA file ever contains (made on first use)."""
        if self._unknown_ca is None:
            self._unknown_ca = CertificateAuthority.create_root(
                "delivery harness unknown CA", key_type=self.key_type
            )
        return self._unknown_ca

    def ca_pem(self) -> bytes:
        """The trust anchor to write to ``[tls] ca_file``: the harness root CA, PEM."""
        return self.ca.cert_pem()

    def write_ca(self, path: Path) -> Path:
        """Write the root CA certificate (PEM) to ``path`` and return it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.ca_pem())
        return path

    def credential(
        self, names: Sequence[str] | str, kind: CertKind = "valid", *, intermediate: bool = False
    ) -> Credential:
        """The credential of ``kind`` for ``names``, issued once and then reused.

        :param intermediate: issue through the harness intermediate CA rather than the root
            (ignored by ``self-signed`` and ``unknown-ca``, which have issuers of their own).
        :raises ValueError: no names, or an unknown kind.
        """
        names = (names,) if isinstance(names, str) else tuple(names)
        if not names:
            raise ValueError("a leaf certificate needs at least one name")
        if kind not in CERT_KINDS:
            raise ValueError(f"unknown certificate kind {kind!r}; expected one of {CERT_KINDS}")
        key = (tuple(n.lower().rstrip(".") for n in names), kind, intermediate)
        if key not in self._issued:
            self._issued[key] = self._make(key[0], kind, intermediate)
        return self._issued[key]

    def _make(self, names: tuple[str, ...], kind: CertKind, intermediate: bool) -> Credential:
        issuer = self.intermediate if intermediate else self.ca
        now = _now()
        key_type = self.key_type
        match kind:
            case "valid":
                return issuer.issue(names, key_type=key_type)
            case "self-signed":
                return _self_signed(names, key_type)
            case "expired":
                return issuer.issue(
                    names,
                    not_before=now - LEAF_LIFETIME,
                    not_after=now - EXPIRED_AGO,
                    key_type=key_type,
                    kind=kind,
                )
            case "not-yet-valid":
                return issuer.issue(
                    names,
                    not_before=now + NOT_YET_VALID_IN,
                    not_after=now + LEAF_LIFETIME,
                    key_type=key_type,
                    kind=kind,
                )
            case "wrong-name":
                issued = issuer.issue([WRONG_NAME], key_type=key_type, kind=kind)
                return Credential(kind, names, issued.cert, issued.key, issued.chain, issued.root)
            case "unknown-ca":
                return self.unknown_ca.issue(names, key_type=key_type, kind=kind)
            case "no-server-auth":
                return issuer.issue(names, server_auth=False, key_type=key_type, kind=kind)
            case _:
                assert_never(kind)
