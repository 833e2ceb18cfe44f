"""Harness fixtures: the test SMTP harness as pytest fixtures (register as a plugin).

Certificates:
    harness_certs       session-scoped `CertFactory`: the harness CA, issued certs memoized
    harness_ca_file     that CA as a PEM file (session-scoped)
Addresses:
    harness_pool        this worker's `LoopbackPool`: 127.<10 + worker number>.x.y, starting
                        at an offset from the process id so parallel runs rarely meet (and
                        every address is checked by binding anyway)
    loopback_address    a fresh loopback address for one test
Servers (started in the test's event loop, stopped after it):
    make_receiver       ``await make_receiver("mx1.example.test", tls="expired", ...)``: one
                        `SmtpReceiver` on a fresh address and free port
    make_lab            ``await make_lab(source)``: a running `Lab`; the source is a scenario
                        file (a Path, or a str ending in .toml), TOML text, a mapping or a
                        `Scenario`; keywords go to `Lab` (``smtp_port=...``)
    harness             the `Lab` declared by the test's ``harness_mx`` markers:

    @pytest.mark.harness_mx("mx1.example.test", tls="expired")
    async def test_x(harness):
        assert harness.mx("mx1.example.test").received == []

``harness_mx(name, **keys)`` takes the keys of a scenario MX table (``tls``, ``preference``,
``replies``, ``tlsa``, ``down``...) plus ``domain`` (default: the name minus its first label)
and ``dnssec`` for that domain.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from delivery.harness import certs, lab, loopback, scenario, smtp_server

__all__ = [
    "harness",
    "harness_ca_file",
    "harness_certs",
    "harness_pool",
    "loopback_address",
    "make_lab",
    "make_receiver",
    "scenario_from_markers",
]

WORKER_BLOCK_BASE = 10  # 127.10.x.y for worker gw0, 127.11.x.y for gw1...; 127.9 without xdist
ScenarioSource = Path | str | Mapping[str, Any] | scenario.Scenario

MakeLab = Callable[..., Awaitable[lab.Lab]]
"""The type of the `make_lab` fixture."""


def _worker_block() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    number = int(worker.removeprefix("gw")) if worker.startswith("gw") else -1
    return (WORKER_BLOCK_BASE + number) % 256


@pytest.fixture(scope="session")
def harness_certs() -> certs.CertFactory:
    """The session's harness CA and every certificate issued under it."""
    return certs.CertFactory()


@pytest.fixture(scope="session")
def harness_ca_file(
    harness_certs: certs.CertFactory, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The harness CA certificate as a PEM file."""
    return harness_certs.write_ca(tmp_path_factory.mktemp("harness-ca") / "ca.pem")


@pytest.fixture(scope="session")
def harness_pool() -> loopback.LoopbackPool:
    """This worker's loopback addresses."""
    return loopback.LoopbackPool(_worker_block(), start=os.getpid() % 200)


@pytest.fixture
def loopback_address(harness_pool: loopback.LoopbackPool) -> str:
    """A loopback address no other test of this run uses."""
    return harness_pool.take()


@pytest.fixture
async def make_receiver(
    harness_certs: certs.CertFactory, harness_pool: loopback.LoopbackPool
) -> AsyncIterator[Callable[..., Awaitable[smtp_server.SmtpReceiver]]]:
    """A factory of started receivers, each on a fresh address; all stopped after the test."""
    started: list[smtp_server.SmtpReceiver] = []

    async def make(hostname: str, **options: Any) -> smtp_server.SmtpReceiver:
        options.setdefault("host", harness_pool.take())
        options.setdefault("factory", harness_certs)
        receiver = smtp_server.SmtpReceiver(hostname, **options)
        await receiver.start()
        started.append(receiver)
        return receiver

    try:
        yield make
    finally:
        for receiver in reversed(started):
            await receiver.stop()


def _scenario(source: ScenarioSource) -> scenario.Scenario:
    if isinstance(source, scenario.Scenario):
        return source
    if isinstance(source, Path):
        return scenario.load(source)
    if isinstance(source, str):
        if source.endswith(".toml") and "\n" not in source:
            return scenario.load(source)  # a file name, not TOML text
        return scenario.parse(source)
    return scenario.parse(dict(source))


@pytest.fixture
async def make_lab(
    harness_certs: certs.CertFactory, harness_pool: loopback.LoopbackPool, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[lab.Lab]]]:
    """A factory of started labs: a scenario file (Path), TOML text, a mapping or a Scenario."""
    started: list[lab.Lab] = []

    async def make(source: ScenarioSource, **options: Any) -> lab.Lab:
        options.setdefault("factory", harness_certs)
        options.setdefault("pool", harness_pool)
        options.setdefault("workdir", tmp_path / f"lab{len(started)}")
        running = lab.Lab(_scenario(source), **options)
        await running.start()
        started.append(running)
        return running

    try:
        yield make
    finally:
        for running in reversed(started):
            await running.stop()


def scenario_from_markers(markers: list[pytest.Mark]) -> dict[str, Any]:
    """The scenario mapping that ``harness_mx`` markers declare (see the module docstring)."""
    domains: dict[str, dict[str, Any]] = {}
    for mark in markers:
        if len(mark.args) != 1:
            raise pytest.UsageError("harness_mx takes one MX host name, then keywords")
        name = str(mark.args[0])
        keys = dict(mark.kwargs)
        domain_name = keys.pop("domain", None) or name.partition(".")[2] or name
        domain = domains.setdefault(domain_name, {"mx": []})
        if "dnssec" in keys:
            domain["dnssec"] = keys.pop("dnssec")
        domain["mx"].append({"name": name, **keys})
    return {"domains": domains}


@pytest.fixture
async def harness(
    request: pytest.FixtureRequest, make_lab: Callable[..., Awaitable[lab.Lab]]
) -> lab.Lab:
    """The lab the test's ``harness_mx`` markers declare."""
    markers = list(request.node.iter_markers("harness_mx"))
    if not markers:
        raise pytest.UsageError(
            f"{request.node.nodeid}: the harness fixture needs @pytest.mark.harness_mx(...)"
        )
    return await make_lab(scenario_from_markers(list(reversed(markers))))
