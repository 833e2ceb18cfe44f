"""Certificate chains for the DANE tests, good and hostile, and proof that each is what it claims.

Every chain comes from the harness `CertFactory` (its CA, intermediate and leaves of every kind)
or is built here, with `cryptography`, on top of the same CA when a test needs something the
factory does not make on purpose: a forged signature, an expired or non-CA intermediate, a
pathLenConstraint violation, RSA-PSS and Ed25519 signatures, junk in the chain.

`material(factory)` builds them all once per factory. A chain is the DER list a peer would send
(leaf first) plus the certificates TLSA records may describe ("leaf", "issuer", "ca", ...).
The tests at the bottom check the hostile chains with `cryptography` alone, so that a DANE test
failing on them fails for the reason it names, not because the material was wrong.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from delivery.dns.result import TlsaRecord
from delivery.harness.certs import CertFactory, Credential

MX = "mx1.example.test"
DOMAIN = "example.test"
HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def tlsa(usage: int, selector: int, mtype: int, cert: x509.Certificate) -> TlsaRecord:
    """The TLSA record a domain would publish for ``cert`` (computed independently of dane.py)."""
    selected = der(cert) if selector == 0 else spki(cert)
    if mtype == 1:
        selected = hashlib.sha256(selected).digest()
    elif mtype == 2:
        selected = hashlib.sha512(selected).digest()
    return TlsaRecord(usage, selector, mtype, selected)


def from_harness(record: object) -> TlsaRecord:
    """A harness `certs.TlsaRecord` (hex data) as the DNS layer's `TlsaRecord` (bytes)."""
    usage, selector, mtype, data = record.as_tuple()  # type: ignore[attr-defined]
    return TlsaRecord(usage, selector, mtype, bytes.fromhex(data))


def parse_data(text: str) -> bytes:
    """Literal association data: hex, or ``<hex>*<count>`` for repeated bytes ("aa*32")."""
    if "*" in text:
        unit, count = text.split("*")
        return bytes.fromhex(unit) * int(count)
    return bytes.fromhex(text)


def parse_record(text: str, chain: Chain | None = None) -> TlsaRecord:
    """``"usage selector mtype source"``: source is a certificate of ``chain`` or ``data:...``."""
    usage, selector, mtype, source = [*text.split(" ", 3), ""][:4]
    if source.startswith("data:") or chain is None:
        data = parse_data(source.removeprefix("data:"))
        return TlsaRecord(int(usage), int(selector), int(mtype), data)
    return chain.record(int(usage), int(selector), int(mtype), source)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dane tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_cert(
    subject: x509.Name,
    key: SigningKey,
    *,
    issuer: x509.Name | None = None,
    signer: SigningKey | None = None,
    ca: bool | None = False,
    path_length: int | None = None,
    key_cert_sign: bool | None = None,
    sans: Sequence[str] = (),
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    pss: bool = False,
    server_auth: bool | None = True,
    extra: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    """A certificate for ``key``, signed by ``signer`` (self-signed when None).

    :param ca: basicConstraints CA flag; None leaves the extension out.
    :param key_cert_sign: a keyUsage with or without keyCertSign; None leaves it out.
    :param server_auth: extendedKeyUsage serverAuth (True), clientAuth (False), none (None).
    """
    now = datetime.datetime.now(datetime.UTC)
    signer = signer or key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - HOUR)
        .not_valid_after(not_after or now + 30 * DAY)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca, path_length), critical=True)
    if key_cert_sign is not None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=key_cert_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if server_auth is not None:
        purpose = (
            ExtendedKeyUsageOID.SERVER_AUTH if server_auth else ExtendedKeyUsageOID.CLIENT_AUTH
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in sans]), critical=False
        )
    for extension, critical in extra:
        builder = builder.add_extension(extension, critical=critical)
    if isinstance(signer, ed25519.Ed25519PrivateKey):
        return builder.sign(signer, None)
    if pss:
        assert isinstance(signer, rsa.RSAPrivateKey)
        return builder.sign(
            signer,
            hashes.SHA256(),
            rsa_padding=padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH),
        )
    return builder.sign(signer, hashes.SHA256())


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _elements(data: bytes) -> list[bytes]:
    """The DER elements (whole TLVs) that make up ``data``."""
    out, position = [], 0
    while position < len(data):
        first = data[position + 1]
        header = 2 if first < 0x80 else 2 + (first & 0x7F)
        size = first if first < 0x80 else int.from_bytes(data[position + 2 : position + header])
        out.append(data[position : position + header + size])
        position += header + size
    return out


def _content(element: bytes) -> bytes:
    first = element[1]
    return element[2 if first < 0x80 else 2 + (first & 0x7F) :]


ECDSA_WITH_SHA1 = _tlv(0x30, _tlv(0x06, bytes.fromhex("2a8648ce3d0401")))  # 1.2.840.10045.4.1


def resign_with_sha1(cert: x509.Certificate, signer: ec.EllipticCurvePrivateKey) -> bytes:
    """``cert`` re-signed with ECDSA-SHA1, which cryptography no longer signs with: by hand."""
    tbs_fields = _elements(_content(cert.tbs_certificate_bytes))
    version, serial, _algorithm, *rest = tbs_fields
    tbs = _tlv(0x30, b"".join([version, serial, ECDSA_WITH_SHA1, *rest]))
    signature = signer.sign(tbs, ec.ECDSA(hashes.SHA1()))
    return _tlv(0x30, tbs + ECDSA_WITH_SHA1 + _tlv(0x03, b"\x00" + signature))


def tamper_signature(cert_der: bytes) -> bytes:
    """The same certificate with the last byte of its signature changed (still parses)."""
    return cert_der[:-1] + bytes([cert_der[-1] ^ 0x01])


@dataclass
class Chain:
    """What a peer sends (DER, leaf first) and the certificates records may describe."""

    sent: list[bytes]
    certs: dict[str, x509.Certificate] = field(default_factory=dict)
    names: tuple[str, ...] = (MX,)

    def record(self, usage: int, selector: int, mtype: int, source: str) -> TlsaRecord:
        return tlsa(usage, selector, mtype, self.certs[source])


def _sent(credential: Credential, *, with_root: bool = False) -> list[bytes]:
    chain = [der(credential.cert), *(der(cert) for cert in credential.chain)]
    return [*chain, der(credential.root)] if with_root else chain


def _from_credential(
    credential: Credential, *, with_root: bool = False, **extra: x509.Certificate
) -> Chain:
    certs = {
        "leaf": credential.cert,
        "issuer": credential.issuer_cert(),
        "ca": credential.root,
        **extra,
    }
    return Chain(_sent(credential, with_root=with_root), certs)


def _ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@functools.cache
def material(factory: CertFactory) -> dict[str, Chain]:
    """Every named chain of the DANE tests, built once per factory."""
    ca, inter = factory.ca, factory.intermediate
    other = factory.credential("other.example.test").cert
    root_cert, inter_cert = ca.cert, inter.cert
    now = datetime.datetime.now(datetime.UTC)
    chains: dict[str, Chain] = {}

    def credential_chain(name: str, kind: str = "valid", **options: bool) -> None:
        with_root = options.pop("with_root", False)
        credential = factory.credential(MX, kind, **options)  # type: ignore[arg-type]
        chains[name] = _from_credential(credential, with_root=with_root, other=other)

    credential_chain("root-leaf")  # leaf issued by the root; root not sent (as usual)
    credential_chain("root-leaf+ca", with_root=True)
    credential_chain("int-leaf", intermediate=True)  # leaf <- intermediate; root not sent
    credential_chain("int-leaf+ca", intermediate=True, with_root=True)
    for kind in ("self-signed", "expired", "not-yet-valid", "wrong-name", "no-server-auth"):
        credential_chain(kind, kind, intermediate=True, with_root=True)
    unknown = factory.credential(MX, "unknown-ca")
    chains["unknown-ca"] = _from_credential(unknown, with_root=True, other=other)

    valid = chains["int-leaf+ca"]
    chains["int-leaf-only"] = Chain(valid.sent[:1], dict(valid.certs))

    domain_leaf = inter.issue([DOMAIN])
    chains["domain-leaf"] = _from_credential(domain_leaf, with_root=True)
    wildcard = inter.issue(["*.example.test"])
    chains["wildcard"] = _from_credential(wildcard, with_root=True)
    deep = inter.issue(["*.mx1.example.test"])
    chains["wildcard-deeper"] = _from_credential(deep, with_root=True)

    # A leaf carrying no subjectAltName: only then does its CN count (RFC 7672 §3.2.3).
    leaf_key = _ec()
    cn_only = make_cert(_name(MX), leaf_key, issuer=inter_cert.subject, signer=inter.key)
    chains["cn-only"] = Chain([der(cn_only), der(inter_cert), der(root_cert)], {"ca": root_cert})
    cn_and_san = make_cert(
        _name(MX), leaf_key, issuer=inter_cert.subject, signer=inter.key, sans=["other.test"]
    )
    chains["cn-ignored-with-san"] = Chain(
        [der(cn_and_san), der(inter_cert), der(root_cert)], {"ca": root_cert}
    )

    # Junk between good certificates: ignored, the path still builds.
    chains["junk-between"] = Chain(
        [valid.sent[0], b"junk", valid.sent[1], b"\x30\x03\x02\x01\x00", valid.sent[2]],
        dict(valid.certs),
    )
    chains["junk-leaf"] = Chain([b"not a certificate"], dict(valid.certs))
    chains["truncated-leaf"] = Chain([valid.sent[0][:-10], *valid.sent[1:]], dict(valid.certs))
    chains["empty"] = Chain([], dict(valid.certs))

    # Forgeries: the genuine intermediate and root are public, so an attacker can send them.
    forged_leaf = tamper_signature(valid.sent[0])
    chains["forged-signature"] = Chain([forged_leaf, *valid.sent[1:]], dict(valid.certs))
    attacker = _ec()
    impostor = make_cert(
        _name(MX), attacker, issuer=inter_cert.subject, signer=attacker, sans=[MX]
    )  # claims the harness intermediate as issuer, signed by the attacker's own key
    chains["forged-issuer"] = Chain(
        [der(impostor), der(inter_cert), der(root_cert)],
        {"leaf": impostor, "ca": root_cert, "issuer": inter_cert},
    )
    chains["wrong-issuer"] = Chain(  # an unknown CA's leaf, with the genuine chain appended
        [der(unknown.cert), der(inter_cert), der(root_cert)],
        {"leaf": unknown.cert, "ca": root_cert, "issuer": inter_cert},
    )

    def under(name: str, intermediate: x509.Certificate, key: SigningKey) -> None:
        leaf = make_cert(_name(MX), _ec(), issuer=intermediate.subject, signer=key, sans=[MX])
        chains[name] = Chain(
            [der(leaf), der(intermediate), der(root_cert)],
            {"leaf": leaf, "issuer": intermediate, "ca": root_cert},
        )

    def intermediate(common_name: str, **options: object) -> tuple[x509.Certificate, SigningKey]:
        key = _ec()
        defaults: dict[str, object] = {"ca": True, "path_length": 0, "key_cert_sign": True}
        defaults.update(options)
        cert = make_cert(
            _name(common_name),
            key,
            issuer=root_cert.subject,
            signer=ca.key,
            server_auth=None,
            **defaults,  # type: ignore[arg-type]
        )
        return cert, key

    under(
        "expired-intermediate",
        *intermediate("expired CA", not_before=now - 60 * DAY, not_after=now - DAY),
    )
    under("non-ca-intermediate", *intermediate("non-CA", ca=False, path_length=None))
    under("no-basic-constraints", *intermediate("no BC", ca=None, path_length=None))
    under("no-keycertsign", *intermediate("no keyCertSign", key_cert_sign=False))
    under(
        "name-constrained",
        *intermediate(
            "constrained",
            extra=[
                (x509.NameConstraints([x509.DNSName("example.test")], None), True),
            ],
        ),
    )
    under(
        "unknown-critical-intermediate",
        *intermediate(
            "odd CA",
            extra=[
                (
                    x509.UnrecognizedExtension(
                        x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"
                    ),
                    True,
                )
            ],
        ),
    )
    sha1_ca, sha1_key = intermediate("sha1 CA")
    assert isinstance(sha1_key, ec.EllipticCurvePrivateKey)
    sha256_leaf = make_cert(_name(MX), _ec(), issuer=sha1_ca.subject, signer=sha1_key, sans=[MX])
    sha1_leaf = resign_with_sha1(sha256_leaf, sha1_key)
    chains["sha1-signed"] = Chain(
        [sha1_leaf, der(sha1_ca), der(root_cert)],
        {"leaf": x509.load_der_x509_certificate(sha1_leaf), "ca": root_cert},
    )

    # pathLenConstraint: root <- upper (pathLen 0) <- lower <- leaf: upper allows no CA below it.
    upper, upper_key = intermediate("upper CA", path_length=0)
    lower_key = _ec()
    lower = make_cert(
        _name("lower CA"),
        lower_key,
        issuer=upper.subject,
        signer=upper_key,
        ca=True,
        path_length=None,
        key_cert_sign=True,
        server_auth=None,
    )
    deep_leaf = make_cert(_name(MX), _ec(), issuer=lower.subject, signer=lower_key, sans=[MX])
    chains["pathlen-violation"] = Chain(
        [der(deep_leaf), der(lower), der(upper), der(root_cert)],
        {"leaf": deep_leaf, "lower": lower, "upper": upper, "ca": root_cert},
    )
    roomy, roomy_key = intermediate("roomy CA", path_length=1)
    lower2 = make_cert(
        _name("lower CA"),  # same name and key as `lower`: the same leaf chains to it
        lower_key,
        issuer=roomy.subject,
        signer=roomy_key,
        ca=True,
        key_cert_sign=True,
        server_auth=None,
    )
    chains["pathlen-ok"] = Chain(
        [der(deep_leaf), der(lower2), der(roomy), der(root_cert)],
        {"leaf": deep_leaf, "lower": lower2, "upper": roomy, "ca": root_cert},
    )

    # Leaf-as-anchor traps: a self-signed CA-flagged leaf, sent twice.
    own_key = _ec()
    self_ca_leaf = make_cert(_name(MX), own_key, ca=True, key_cert_sign=True, sans=[MX])
    chains["self-signed-ca-leaf-twice"] = Chain(
        [der(self_ca_leaf), der(self_ca_leaf)], {"leaf": self_ca_leaf}
    )

    # Other signature algorithms: RSA PKCS#1 v1.5 and PSS, Ed25519, each through a CA.
    rsa_root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_root = make_cert(
        _name("rsa root"), rsa_root_key, ca=True, key_cert_sign=True, server_auth=None
    )
    for name, pss in (("rsa-pkcs1", False), ("rsa-pss", True)):
        leaf = make_cert(
            _name(MX), _ec(), issuer=rsa_root.subject, signer=rsa_root_key, sans=[MX], pss=pss
        )
        chains[name] = Chain([der(leaf), der(rsa_root)], {"leaf": leaf, "ca": rsa_root})
    small_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    small_root = make_cert(_name("small rsa root"), small_key, ca=True, key_cert_sign=True)
    small_leaf = make_cert(_name(MX), _ec(), issuer=small_root.subject, signer=small_key, sans=[MX])
    chains["rsa-1024"] = Chain([der(small_leaf), der(small_root)], {"ca": small_root})
    ed_root_key = ed25519.Ed25519PrivateKey.generate()
    ed_root = make_cert(_name("ed25519 root"), ed_root_key, ca=True, key_cert_sign=True)
    ed_leaf_key = ed25519.Ed25519PrivateKey.generate()
    ed_leaf = make_cert(
        _name(MX), ed_leaf_key, issuer=ed_root.subject, signer=ed_root_key, sans=[MX]
    )
    chains["ed25519"] = Chain([der(ed_leaf), der(ed_root)], {"leaf": ed_leaf, "ca": ed_root})

    # Longer than MAX_PEER_CERTIFICATES: the anchor sits past the cap.
    padding_certs = [der(other)] * 10
    chains["anchor-past-cap"] = Chain(
        [valid.sent[0], *padding_certs, *valid.sent[1:]], dict(valid.certs)
    )

    # A chain crafted to branch: ten self-issued CA certificates under one name and key, each
    # a valid issuer of every other; no record matches any of them.
    maze_key = _ec()
    maze_name = _name("maze CA")
    maze = [
        make_cert(maze_name, maze_key, ca=True, key_cert_sign=True, server_auth=None)
        for _ in range(9)
    ]
    maze_leaf = make_cert(_name(MX), _ec(), issuer=maze_name, signer=maze_key, sans=[MX])
    chains["maze"] = Chain([der(maze_leaf), *(der(c) for c in maze)], {"ca": root_cert})
    return chains


@pytest.fixture(scope="module")
def chains(harness_certs: CertFactory) -> dict[str, Chain]:
    return material(harness_certs)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def test_valid_chains_verify_with_cryptography_alone(chains: dict[str, Chain]) -> None:
    for name in ("int-leaf+ca", "pathlen-ok", "rsa-pkcs1", "rsa-pss", "ed25519"):
        certs = [x509.load_der_x509_certificate(d) for d in chains[name].sent]
        for child, parent in itertools.pairwise(certs):
            assert _signed_by(child, parent), name


def test_forgeries_fail_with_cryptography_alone(chains: dict[str, Chain]) -> None:
    for name in ("forged-signature", "forged-issuer"):
        leaf, issuer = (x509.load_der_x509_certificate(d) for d in chains[name].sent[:2])
        assert leaf.issuer == issuer.subject, name  # the names chain: only the signature lies
        assert not _signed_by(leaf, issuer), name


def test_hostile_intermediates_are_genuinely_signed(chains: dict[str, Chain]) -> None:
    """So that refusing them is about CA flags, dates or path length, not signatures."""
    for name in (
        "expired-intermediate",
        "non-ca-intermediate",
        "no-basic-constraints",
        "no-keycertsign",
        "name-constrained",
        "pathlen-violation",
    ):
        certs = [x509.load_der_x509_certificate(d) for d in chains[name].sent]
        for child, parent in itertools.pairwise(certs):
            assert _signed_by(child, parent), name


def test_harness_records_match_independent_computation(harness_certs: CertFactory) -> None:
    credential = harness_certs.credential(MX, intermediate=True)
    for selector in (0, 1):
        for mtype in (0, 1, 2):
            leaf = from_harness(credential.tlsa(3, selector, mtype, source="leaf"))
            root = from_harness(credential.tlsa(2, selector, mtype, source="ca"))
            assert leaf == tlsa(3, selector, mtype, credential.cert)
            assert root == tlsa(2, selector, mtype, credential.root)


def test_sha1_leaf_is_genuinely_signed(chains: dict[str, Chain]) -> None:
    """cryptography no longer verifies SHA-1 certificate signatures; the raw key still does."""
    leaf, issuer = (x509.load_der_x509_certificate(d) for d in chains["sha1-signed"].sent[:2])
    key = issuer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(hashes.SHA1()))
