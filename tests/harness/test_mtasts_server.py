"""MTA-STS policy server with a real HTTPS client (aiohttp): each scripted behaviour."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.abc
import pytest

from delivery.harness import certs
from delivery.harness.mtasts_server import (
    POLICY_PATH,
    Policy,
    PolicyServer,
    format_policy,
)

POLICY = format_policy("enforce", ["mx1.example.test", "*.mx.example.test"], 86400)


class LabResolver(aiohttp.abc.AbstractResolver):
    """Resolves every name to the policy server, as the lab's DNS would."""

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


@pytest.fixture
async def server(
    harness_certs: certs.CertFactory, loopback_address: str
) -> AsyncIterator[PolicyServer]:
    policies = {
        "example.test": Policy(POLICY),
        "html.test": Policy(POLICY, content_type="text/html"),
        "missing.test": Policy("", status=404),
        "moved.test": Policy("", status=301, location="https://other.test/x"),
        "slow.test": Policy(POLICY, delay=0.5),
        "huge.test": Policy(POLICY, pad_to=70_000),
        "expired.test": Policy(POLICY, cert="expired"),
        "wrongname.test": Policy(POLICY, cert="wrong-name"),
        "selfsigned.test": Policy(POLICY, cert="self-signed"),
    }
    async with PolicyServer(policies, factory=harness_certs, host=loopback_address) as running:
        yield running


@pytest.fixture
async def http(server: PolicyServer, harness_ca_file: Path) -> AsyncIterator[aiohttp.ClientSession]:
    context = ssl.create_default_context(cafile=str(harness_ca_file))
    connector = aiohttp.TCPConnector(resolver=LabResolver(server.address[0]), ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def fetch(
    http: aiohttp.ClientSession, server: PolicyServer, domain: str, **options: Any
) -> tuple[int, str, bytes, str | None]:
    url = f"https://mta-sts.{domain}:{server.address[1]}{POLICY_PATH}"
    options.setdefault("allow_redirects", False)
    async with http.get(url, **options) as response:
        body = await response.read()
        return response.status, response.content_type, body, response.headers.get("Location")


async def test_valid_policy_over_verified_https(
    http: aiohttp.ClientSession, server: PolicyServer
) -> None:
    status, content_type, body, _ = await fetch(http, server, "example.test")
    assert (status, content_type, body.decode()) == (200, "text/plain", POLICY)
    (request,) = server.requests
    assert (request.host, request.sni, request.path) == (
        "mta-sts.example.test",
        "mta-sts.example.test",
        POLICY_PATH,
    )
    assert server.request_count("example.test") == 1


@pytest.mark.parametrize(
    ("domain", "expected_status", "expected_type"),
    [("html.test", 200, "text/html"), ("missing.test", 404, "text/plain")],
)
async def test_status_and_content_type_as_scripted(
    http: aiohttp.ClientSession,
    server: PolicyServer,
    domain: str,
    expected_status: int,
    expected_type: str,
) -> None:
    status, content_type, _, _ = await fetch(http, server, domain)
    assert (status, content_type) == (expected_status, expected_type)


async def test_redirect_carries_its_location(
    http: aiohttp.ClientSession, server: PolicyServer
) -> None:
    status, _, _, location = await fetch(http, server, "moved.test")
    assert (status, location) == (301, "https://other.test/x")


async def test_delay_holds_the_answer(http: aiohttp.ClientSession, server: PolicyServer) -> None:
    with pytest.raises(TimeoutError):
        await fetch(http, server, "slow.test", timeout=aiohttp.ClientTimeout(total=0.1))
    assert server.request_count("slow.test") == 1


async def test_oversized_body_is_still_a_policy_at_the_start(
    http: aiohttp.ClientSession, server: PolicyServer
) -> None:
    _, _, body, _ = await fetch(http, server, "huge.test")
    assert len(body) >= 70_000
    assert body.startswith(POLICY.encode())


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        ("expired.test", "certificate has expired"),
        ("wrongname.test", "Hostname mismatch"),
        ("selfsigned.test", "self-signed certificate"),
    ],
)
async def test_bad_certificates_fail_verification(
    http: aiohttp.ClientSession, server: PolicyServer, domain: str, reason: str
) -> None:
    with pytest.raises(aiohttp.ClientConnectorCertificateError, match=reason):
        await fetch(http, server, domain)
    assert server.request_count(domain) == 0


async def test_unknown_host_and_path_get_404(
    http: aiohttp.ClientSession, server: PolicyServer
) -> None:
    status, _, _, _ = await fetch(http, server, "example.test.")  # trailing dot: same host
    assert status == 200
    port = server.address[1]
    async with http.get(f"https://mta-sts.example.test:{port}/other") as response:
        assert response.status == 404
    server.remove_policy("example.test")
    status, _, _, _ = await fetch(http, server, "example.test")
    assert status == 404


async def test_policy_changes_at_runtime(http: aiohttp.ClientSession, server: PolicyServer) -> None:
    testing = format_policy("testing", ["mx9.example.test"], 3600)
    server.set_policy("example.test", Policy(testing))
    _, _, body, _ = await fetch(http, server, "example.test")
    assert body.decode() == testing
    assert server.policies["example.test"] == Policy(testing)


async def test_new_certificate_kind_applies_to_new_connections(
    harness_certs: certs.CertFactory, harness_ca_file: Path, loopback_address: str
) -> None:
    async with PolicyServer(
        {"example.test": Policy(POLICY)}, factory=harness_certs, host=loopback_address
    ) as running:
        context = ssl.create_default_context(cafile=str(harness_ca_file))
        connector = aiohttp.TCPConnector(
            resolver=LabResolver(loopback_address), ssl=context, force_close=True
        )
        async with aiohttp.ClientSession(connector=connector) as http:
            status, *_ = await fetch(http, running, "example.test")
            assert status == 200
            running.set_policy("example.test", Policy(POLICY, cert="expired"))
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await fetch(http, running, "example.test")


async def test_only_loopback_addresses(harness_certs: certs.CertFactory) -> None:
    with pytest.raises(ValueError, match="loopback only"):
        await PolicyServer({}, factory=harness_certs, host="0.0.0.0").start()


def test_policy_text_follows_rfc_8461() -> None:
    text = format_policy("testing", ["a.example.test", "*.b.example.test"], 600)
    assert text.split("\r\n") == [
        "version: STSv1",
        "mode: testing",
        "mx: a.example.test",
        "mx: *.b.example.test",
        "max_age: 600",
        "",
    ]
