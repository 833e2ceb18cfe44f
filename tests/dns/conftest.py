"""Fixtures for delivery.dns: the harness DNS server on its own loopback address,
a controllable clock, and a Resolver pointed at the server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from delivery.dns.resolver import Resolver
from delivery.harness.dns_server import DnsServer
from tests.dns.common import ZONES, FakeClock, loopback_ip


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    async with DnsServer(ZONES, host=loopback_ip()) as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def resolver(dns_server: DnsServer, clock: FakeClock) -> AsyncIterator[Resolver]:
    async with Resolver([dns_server.address], timeout_ms=2000, clock=clock) as running:
        yield running
