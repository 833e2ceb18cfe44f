"""TLS building blocks: cached contexts with the promised settings, the peer chain accessor."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from delivery.smtp import tls


def test_pkix_context_settings_and_cache(ca_file: str) -> None:
    context = tls.pkix_context(ca_file)
    assert context is tls.pkix_context(ca_file)  # built once
    assert context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    # The extra CA is trusted in addition to the system store, not instead of it.
    subjects = [repr(ca["subject"]) for ca in context.get_ca_certs()]
    assert any("'delivery harness root CA'" in subject for subject in subjects)
    assert tls.pkix_context(None) is not context


def test_pkix_context_with_missing_ca_file_fails_loudly(tmp_path: Any) -> None:
    with pytest.raises(OSError):
        tls.pkix_context(str(tmp_path / "missing.pem"))


def test_unverified_context_settings_and_cache() -> None:
    context = tls.unverified_context()
    assert context is tls.unverified_context()
    assert not context.check_hostname and context.verify_mode is ssl.CERT_NONE
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


class LeafOnly:
    """An ssl object as a Python without any chain accessor would give: only getpeercert."""

    def __init__(self, leaf: bytes | None) -> None:
        self.leaf = leaf

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        assert binary_form
        return self.leaf


def test_peer_chain_falls_back_to_the_leaf(caplog: pytest.LogCaptureFixture) -> None:
    assert tls.peer_chain(LeafOnly(b"leaf-der")) == [b"leaf-der"]  # type: ignore[arg-type]
    assert tls.peer_chain(LeafOnly(None)) == []  # type: ignore[arg-type]


def test_peer_chain_prefers_the_public_api() -> None:
    class Python313(LeafOnly):
        def get_unverified_chain(self) -> list[bytes]:
            return [b"leaf", b"intermediate"]

    assert tls.peer_chain(Python313(b"leaf")) == [b"leaf", b"intermediate"]  # type: ignore[arg-type]


# The real accessor (private _sslobj on Python 3.11/3.12) is exercised over a real handshake
# in test_starttls.py::test_starttls_with_pkix_verification: leaf + intermediate, as sent.
