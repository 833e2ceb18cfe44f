"""The harness pytest fixtures: markers declare a lab, addresses are per worker."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import dns.asyncquery
import dns.message
import pytest

from delivery.harness import (
    certs,
    lab,
    loopback,
    scenario,
)
from tests.plugins import harness as plugin

SCENARIOS = Path(__file__).parents[2] / "fixtures" / "scenarios"


@pytest.mark.harness_mx("mx1.example.test", tls="expired")
@pytest.mark.harness_mx("mx2.example.test", tls="none", replies={"mail": "451 4.3.0 later"})
@pytest.mark.harness_mx("mx.signed.test", domain="signed.test", dnssec="secure", tlsa=["3 1 1"])
async def test_markers_declare_the_lab(harness: lab.Lab) -> None:
    assert harness.mx("mx1.example.test").tls_mode == "expired"
    assert harness.mx("mx2.example.test").script.mail.reply is not None
    host, port = harness.dns.address
    query = dns.message.make_query("example.test", "MX")
    response = await dns.asyncquery.udp(query, host, port=port, timeout=2)
    assert sorted(r.to_text() for rrset in response.answer for r in rrset) == [
        "10 mx1.example.test.",
        "20 mx2.example.test.",
    ]
    assert harness.scenario.domain("signed.test").dnssec == "secure"
    assert harness.zones()[1].records[-1].rtype == "TLSA"


async def test_make_lab_takes_a_file_name_text_or_mapping(
    make_lab: Callable[..., Awaitable[lab.Lab]],
) -> None:
    by_name = await make_lab(str(SCENARIOS / "plain.toml"))
    by_text = await make_lab((SCENARIOS / "plain.toml").read_text())
    by_mapping = await make_lab({"domains": {"plain.test": {"mx": [{"name": "mx1.plain.test"}]}}})
    for running in (by_name, by_text, by_mapping):
        assert set(running.receivers) == {"mx1.plain.test"}
    assert by_name.scenario.name == "plain"


def test_markers_become_a_scenario_mapping() -> None:
    marks = [
        pytest.mark.harness_mx("mx1.a.test", tls="none").mark,
        pytest.mark.harness_mx("mx2.a.test", preference=5).mark,
        pytest.mark.harness_mx("b.test", domain="b.test", implicit=True, dnssec="bogus").mark,
    ]
    assert plugin.scenario_from_markers(marks) == {
        "domains": {
            "a.test": {
                "mx": [
                    {"name": "mx1.a.test", "tls": "none"},
                    {"name": "mx2.a.test", "preference": 5},
                ]
            },
            "b.test": {"mx": [{"name": "b.test", "implicit": True}], "dnssec": "bogus"},
        }
    }
    scenario.parse(plugin.scenario_from_markers(marks))  # and it is a valid scenario


def test_addresses_come_from_this_workers_block(
    harness_pool: loopback.LoopbackPool, loopback_address: str
) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    expected = plugin.WORKER_BLOCK_BASE + (int(worker[2:]) if worker else -1)
    assert harness_pool.block == expected
    assert loopback_address.startswith(f"127.{expected}.")
    assert harness_pool.take() != loopback_address


def test_the_session_ca_file_holds_the_session_ca(
    harness_certs: certs.CertFactory, harness_ca_file: os.PathLike[str]
) -> None:
    with open(harness_ca_file, "rb") as ca:
        assert ca.read() == harness_certs.ca_pem()
