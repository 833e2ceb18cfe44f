"""Allowed networks and credentials of the submission listener: tables of cases."""

from __future__ import annotations

import hashlib

import pytest

from delivery.errors import ConfigError
from delivery.submit.credentials import Credentials
from delivery.submit.policy import SubmissionPolicy

NETWORKS = ["127.0.0.0/8", "192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]

ADMITS = [
    ("127.0.0.3", True),
    ("192.0.2.200", True),
    ("192.0.3.1", False),
    ("198.51.100.7", True),
    ("198.51.100.8", False),
    ("2001:db8::25", True),
    ("2001:db9::25", False),
    ("::ffff:192.0.2.1", True),  # an IPv4 client on an IPv6 socket
    ("::ffff:10.0.0.1", False),
    ("::1", False),
    ("fe80::1%eth0", False),
]


@pytest.mark.parametrize(("ip", "expected"), ADMITS)
def test_admits(ip: str, expected: bool) -> None:
    assert SubmissionPolicy(NETWORKS).admits(ip) is expected


def test_a_bad_network_names_the_setting() -> None:
    with pytest.raises(ConfigError) as error:
        SubmissionPolicy(["10.0.0.0/33"])
    assert error.value.field == "submission.networks" and "10.0.0.0/33" in error.value.reason


CREDENTIALS = Credentials.from_secrets({"app": "s3cret-value", "üser": "pässword"})

CHECKS = [
    ("app", "s3cret-value", True),
    ("app", "s3cret-valuE", False),
    ("app", "", False),
    ("App", "s3cret-value", False),  # identities are exact
    ("nobody", "s3cret-value", False),
    ("üser", "pässword", True),
]


@pytest.mark.parametrize(("identity", "secret", "expected"), CHECKS)
def test_credentials_check(identity: str, secret: str, expected: bool) -> None:
    assert CREDENTIALS.check(identity, secret) is expected


def test_credentials_from_digests() -> None:
    digest = hashlib.sha256(b"token-1").hexdigest()
    users = Credentials({"ci": digest.upper()})
    assert users.check("ci", "token-1") and not users.check("ci", "token-2")
    assert len(users) == 1
    with pytest.raises(ConfigError, match="64 hex digits"):
        Credentials({"ci": "abc"})
