"""Name resolution for aiohttp clients through the engine's resolver.

HTTPS clients of the engine (MTA-STS policy fetches, TLS-RPT report posts) must resolve their
hosts with the configured `[dns] nameservers`, never the system's resolver (DESIGN §5 step 1).
`HttpResolver` plugs `delivery.dns.resolver.Resolver` into aiohttp's connector.

Outcomes:
    A list of addresses (A and/or AAAA, per the family aiohttp asks for); a host with none, or
    whose lookups failed, raises HostUnresolved (an OSError, as aiohttp expects), which reaches
    the caller wrapped in ``aiohttp.ClientConnectorDNSError``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable

import aiohttp
import aiohttp.abc

from delivery.dns import resolver as dns_resolver
from delivery.dns.result import DnsResult, Lookup

__all__ = ["HostUnresolved", "HttpResolver"]


class HostUnresolved(OSError):
    """A host an HTTPS client asked for has no address in our DNS, or its lookup failed.

    An OSError because that is what aiohttp expects of a resolver; it arrives wrapped in
    ``aiohttp.ClientConnectorDNSError``.

    :param host: the host name.
    :param detail: what the A and AAAA lookups said.
    """

    def __init__(self, host: str, detail: str, /) -> None:
        super().__init__(f"{host} has no address: {detail}")
        self.host, self.detail = host, detail


class HttpResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's name resolution, through the engine's resolver (DESIGN §5 step 1)."""

    def __init__(self, resolver: dns_resolver.Resolver, /) -> None:
        self._resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        """A and/or AAAA of ``host`` as aiohttp wants them; HostUnresolved if none."""
        lookups: list[tuple[socket.AddressFamily, Awaitable[DnsResult[str]]]] = []
        if family in (socket.AF_INET, socket.AF_UNSPEC):
            lookups.append((socket.AF_INET, self._resolver.a(host)))
        if family in (socket.AF_INET6, socket.AF_UNSPEC):
            lookups.append((socket.AF_INET6, self._resolver.aaaa(host)))
        results = await asyncio.gather(*(lookup for _, lookup in lookups))
        found: list[aiohttp.abc.ResolveResult] = [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": address_family,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for (address_family, _), result in zip(lookups, results, strict=True)
            if result.status is Lookup.ANSWER
            for address in result.records
        ]
        if not found:
            said = [
                f"{'A' if address_family == socket.AF_INET else 'AAAA'} {result.status.value}"
                + (f" ({result.detail})" if result.detail else "")
                for (address_family, _), result in zip(lookups, results, strict=True)
            ]
            raise HostUnresolved(host, "; ".join(said) or "no address family asked")
        return found

    async def close(self) -> None:
        """Nothing to release: the engine's resolver outlives this one."""
