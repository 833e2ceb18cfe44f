"""TLS building blocks for outbound SMTP: client contexts and what the peer sent.

Contexts are built once per distinct argument and cached for the life of the
process (an `ssl.SSLContext` is costly to build and safe to share between
connections; nobody may mutate a returned context).

    pkix_context(ca_file)  system trust store plus `ca_file`, hostname check,
                           TLS >= 1.2: for PKIX verification of the MX name
    unverified_context()   TLS >= 1.2, no verification at all: for
                           allowInvalidCerts, and for DANE, where the chain
                           is checked after the handshake by policy.dane
                           using `peer_chain`

Outcomes:
    `peer_chain` returns the DER certificates the peer sent, leaf first;
    `tls_info` summarises a finished handshake. A failed handshake is
    classified by `delivery.smtp.session`: ssl.SSLCertVerificationError means
    the certificate was bad, any other failure means the handshake was.

Security:
    `unverified_context` authenticates nothing by itself; using it without a
    later DANE check is exactly "opportunistic TLS". The pkix_context cache is
    keyed by path: a CA file changed on disk is read again only after restart.

Standards: RFC 3207, RFC 8996 (no TLS 1.0/1.1), RFC 7672 §3.1 (DANE needs the chain).
Limits: Python 3.11 has no public API for the peer's chain (3.13 adds
SSLObject.get_unverified_chain); `peer_chain` reaches into the private
``_sslobj`` and, where even that is missing, returns the leaf alone and logs
a warning once: DANE-TA(2) then cannot match.
"""

from __future__ import annotations

import functools
import logging
import ssl
from dataclasses import dataclass
from typing import Any

__all__ = ["TlsInfo", "peer_chain", "pkix_context", "tls_info", "unverified_context"]

log = logging.getLogger("delivery.smtp")

_DER_ENCODING = 2
"""CPython's _ssl.ENCODING_DER, for _ssl.Certificate.public_bytes (private API)."""


@functools.cache
def pkix_context(ca_file: str | None) -> ssl.SSLContext:
    """Return the cached PKIX client context: system CAs + `ca_file`, hostname checked.

    :param ca_file: a PEM file of extra trust anchors (settings ``[tls] ca_file``), or None.
    :raises OSError, ssl.SSLError: the CA file cannot be read or parsed.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@functools.cache
def unverified_context() -> ssl.SSLContext:
    """Return the cached client context that verifies nothing (names, dates, trust)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # must precede CERT_NONE, or ssl refuses
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """What a finished handshake negotiated.

    :param version: protocol, e.g. "TLSv1.3".
    :param cipher: OpenSSL cipher suite name, e.g. "TLS_AES_256_GCM_SHA384".
    :param peer_leaf_der: the peer's certificate (DER), or None if it sent none.
    """

    version: str
    cipher: str
    peer_leaf_der: bytes | None


def tls_info(ssl_object: ssl.SSLObject | ssl.SSLSocket, /) -> TlsInfo:
    """Summarise the negotiated version, cipher and peer certificate."""
    cipher = ssl_object.cipher()
    return TlsInfo(
        version=ssl_object.version() or "",
        cipher=cipher[0] if cipher else "",
        peer_leaf_der=ssl_object.getpeercert(binary_form=True),
    )


@functools.cache
def _warn_leaf_only() -> None:
    log.warning(
        "this Python cannot show the peer's certificate chain; only the leaf is "
        "available, so DANE-TA(2) records cannot match"
    )


def peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket, /) -> list[bytes]:
    """Return the certificates the peer sent, as DER, leaf first, unverified.

    This is the chain *as sent*, not a verified path: DANE (RFC 7672 §3.1)
    matches TLSA records against it itself. Empty if the peer sent nothing.
    """
    public: Any = getattr(ssl_object, "get_unverified_chain", None)  # Python >= 3.13
    if public is not None:
        return list(public() or [])
    private: Any = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if private is not None:
        return [cert.public_bytes(_DER_ENCODING) for cert in private() or []]
    _warn_leaf_only()
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []
