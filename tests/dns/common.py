"""Zones and helpers shared by the delivery.dns tests."""

from __future__ import annotations

import itertools
import os

from delivery.harness.dns_server import RecordSpec, ZoneSpec

TLSA_HASH = "ab" * 32
BIG_TXT = "y" * 3000

ZONES = (
    ZoneSpec(
        "example.test",
        "secure",
        (
            RecordSpec("@", "MX", "10 mx1"),
            RecordSpec("@", "MX", "20 mx2"),
            RecordSpec("mx1", "A", "127.0.0.10"),
            RecordSpec("mx1", "AAAA", "::1"),
            RecordSpec("mx2", "A", "127.0.0.11", ttl=42),
            RecordSpec("www", "CNAME", "mx1", ttl=100),
            RecordSpec("alias", "CNAME", "www", ttl=60),
            RecordSpec("to-insecure", "CNAME", "host.insecure.test."),
            RecordSpec("_25._tcp.mx1", "TLSA", f"3 1 1 {TLSA_HASH}"),
            RecordSpec("_mta-sts", "TXT", '"v=STSv1; " "id=20240101"'),
            RecordSpec("big", "TXT", BIG_TXT),
        ),
        faults={"broken": "servfail", "slow": "timeout"},
    ),
    ZoneSpec(
        "insecure.test",
        records=(RecordSpec("@", "MX", "0 ."), RecordSpec("host", "A", "127.0.0.20")),
    ),
    ZoneSpec("bogus.test", "bogus", (RecordSpec("@", "MX", "10 mx.bogus.test."),)),
    ZoneSpec(
        "longneg.test",
        records=(
            RecordSpec("@", "SOA", "ns.longneg.test. h.longneg.test. 1 2 3 4 86400", ttl=86400),
        ),
    ),
)

_addresses = itertools.count(1)


def loopback_ip() -> str:
    """A loopback address no other test in this run uses (xdist workers differ by pid)."""
    n = next(_addresses)
    return f"127.{os.getpid() % 200 + 20}.{n // 250 % 250 + 100}.{n % 250 + 1}"


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
