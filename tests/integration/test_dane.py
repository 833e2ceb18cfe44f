"""DANE end to end (DESIGN §5 step 2, RFC 7672): signed zones served by the harness DNS server
(AD set, bogus as SERVFAIL), TLSA records made from the receivers' own certificates, real TLS.

Each daemon's DNSSEC probe asks a secure zone of its lab, so the resolver counts as validating
(the default probe name, the root, is not served by the harness)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from delivery.engine import worker as engine_worker
from delivery.errors import LastError
from delivery.harness import lab as harness_lab
from delivery.harness import loopback, smtp_server
from delivery.policy import tlsrpt
from delivery.queue import model
from tests.integration.conftest import StartDaemon
from tests.integration.test_mta_sts import last_of, reported, result_types
from tests.plugins.harness import MakeLab

DELIVERED, SCHEDULED = model.RecipientStatus.DELIVERED, model.RecipientStatus.SCHEDULED
FAILED = model.RecipientStatus.FAILED
SHA256_ZEROS = "00" * 32


def saw(receiver: smtp_server.SmtpReceiver, command: str) -> bool:
    return any(line.upper().startswith(command) for line in receiver.commands)


def tlsa_queries(queries: Sequence[tuple[str, str]]) -> list[str]:
    return [name for name, rtype in queries if rtype == "TLSA"]


def signed(mx: dict[str, Any], **domain: Any) -> dict[str, Any]:
    """A scenario with the one DNSSEC-signed domain ``x.test`` and its one MX host."""
    return {"domains": {"x.test": {"dnssec": "secure", "mx": [mx], **domain}}}


MATCHING = [  # (label, TLSA records, certificate, intermediate, what last_status says)
    ("DANE-EE SPKI, self-signed", ["3 1 1"], "self-signed", False, "DANE-EE record 3 1 1"),
    ("DANE-EE full cert, expired", ["3 0 1"], "expired", False, "DANE-EE record 3 0 1"),
    ("DANE-EE SHA-512, wrong name", ["3 1 2"], "wrong-name", False, "DANE-EE record 3 1 2"),
    ("DANE-EE exact, unknown CA", ["3 0 0"], "unknown-ca", False, "DANE-EE record 3 0 0"),
    ("DANE-TA cert of the issuer", ["2 0 1 issuer"], "valid", True, "DANE-TA record 2 0 1"),
    ("DANE-TA key of the issuer", ["2 1 1 issuer"], "valid", True, "DANE-TA record 2 1 1"),
    (
        "a record that matches nothing is skipped",
        ["3 1 1 mismatch", "3 1 1"],
        "self-signed",
        False,
        "DANE-EE record 3 1 1",
    ),
]


@pytest.mark.parametrize(
    ("label", "tlsa", "tls", "intermediate", "words"), MATCHING, ids=[m[0] for m in MATCHING]
)
async def test_matching_records_deliver_whatever_pkix_would_say(
    label: str,
    tlsa: list[str],
    tls: str,
    intermediate: bool,
    words: str,
    make_lab: MakeLab,
    start_daemon: StartDaemon,
) -> None:
    lab = await make_lab(
        signed({"name": "mx1.x.test", "tls": tls, "intermediate": intermediate, "tlsa": tlsa})
    )
    daemon = await start_daemon(lab, dnssec_probe="x.test")
    message_id = await daemon.world.send("a@sender.test", ["b@x.test"])
    [settled] = await daemon.world.worker.wait_settled(1)

    assert settled.status is DELIVERED, settled.outcome.reason
    [received] = lab.mx("mx1.x.test").received
    assert received.tls is not None
    assert f"certificate verified (DANE: {words} matches" in settled.tls
    [stored] = await daemon.world.recipients(message_id)
    assert "DANE" in stored.last_status
    assert tlsa_queries(lab.dns.queries) == ["_25._tcp.mx1.x.test."]
    [aggregate] = await reported(daemon.tlsrpt, "x.test")
    assert aggregate.policy.policy_type is tlsrpt.PolicyType.TLSA
    assert (aggregate.successes, aggregate.failures) == (1, 0)


DEFERRED = [  # (label, scenario, kind, connected, reported result types)
    (
        "records that do not match",
        signed({"name": "mx1.x.test", "tlsa": ["3 1 1 mismatch", "2 0 1 mismatch"]}),
        LastError.DANE,
        True,
        ["certificate-not-trusted"],
    ),
    (
        "no STARTTLS on a DANE host",
        signed({"name": "mx1.x.test", "tls": "none", "tlsa": ["3 1 1"]}),
        LastError.TLS,
        True,
        ["starttls-not-supported"],
    ),
    (
        "a handshake that breaks",
        signed({"name": "mx1.x.test", "tls": "broken", "tlsa": ["3 1 1"]}),
        LastError.TLS,
        True,
        ["validation-failure"],
    ),
    (
        "TLSA lookup SERVFAIL",
        signed(
            {"name": "mx1.x.test", "tlsa": ["3 1 1"]},
            faults={"_25._tcp.mx1.x.test": "servfail"},
        ),
        LastError.DANE,
        False,
        ["dnssec-invalid"],
    ),
    (
        "a bogus zone",
        {"domains": {"x.test": {"dnssec": "bogus", "mx": [{"name": "mx1.x.test"}]}}},
        LastError.DNS,
        False,
        [],
    ),
    (
        "the MX host's zone is bogus",
        {
            "domains": {
                "x.test": {"dnssec": "secure", "mx": [{"name": "mx1.hosting.test"}]},
                "hosting.test": {"dnssec": "bogus"},
            }
        },
        LastError.DNS,
        False,
        [],
    ),
]


@pytest.mark.parametrize(
    ("label", "scenario", "kind", "connected", "types"), DEFERRED, ids=[d[0] for d in DEFERRED]
)
async def test_dane_failures_defer_and_send_nothing_in_clear(
    label: str,
    scenario: dict[str, Any],
    kind: LastError,
    connected: bool,
    types: list[str],
    make_lab: MakeLab,
    start_daemon: StartDaemon,
) -> None:
    lab = await make_lab(scenario)
    daemon = await start_daemon(lab, dnssec_probe="sender.test" if "bogus" in label else "x.test")
    # Whatever the strategy allows: the retry's invalid-tls changes nothing for a DANE host.
    await daemon.world.outbound(tls={"else": "'invalid-tls'"})
    await daemon.world.send("a@sender.test", ["b@x.test"])
    [settled] = await daemon.world.worker.wait_settled(1)

    assert settled.status is SCHEDULED and settled.outcome.action == "delayed"
    assert settled.outcome.kind is kind, settled.outcome.reason
    for receiver in lab.receivers.values():
        assert receiver.received == [] and not saw(receiver, "MAIL")
        assert (receiver.connections > 0) is connected
    assert result_types(await reported(daemon.tlsrpt, "x.test")) == types


async def test_insecure_tlsa_records_are_ignored(
    make_lab: MakeLab, start_daemon: StartDaemon
) -> None:
    """TLSA records that do not match, in an unsigned zone, and for an MX host of a signed
    domain whose own zone is unsigned: neither is looked up; PKIX decides, and delivers."""
    lab = await make_lab(
        {
            "domains": {
                "plain.test": {"mx": [{"name": "mx1.plain.test", "tlsa": ["3 1 1 mismatch"]}]},
                "signed.test": {
                    "dnssec": "secure",
                    "mx": [{"name": "mx1.hosted.test", "tlsa": ["3 1 1 mismatch"]}],
                },
                "hosted.test": {"dnssec": "insecure"},
            }
        }
    )
    daemon = await start_daemon(lab, dnssec_probe="signed.test")
    await daemon.world.send("a@sender.test", ["b@plain.test", "c@signed.test"])
    settled = await daemon.world.worker.wait_settled(2)

    for address in ("b@plain.test", "c@signed.test"):
        outcome = last_of(settled, address)
        assert outcome.status is DELIVERED, outcome.outcome.reason
        assert outcome.tls.endswith("certificate verified (PKIX)")
    assert tlsa_queries(lab.dns.queries) == []


async def test_dane_require_fails_a_domain_without_usable_records(
    make_lab: MakeLab, start_daemon: StartDaemon
) -> None:
    lab = await make_lab(
        {
            "domains": {
                "none.test": {"dnssec": "secure", "mx": [{"name": "mx1.none.test"}]},
                "unsigned.test": {"mx": [{"name": "mx1.unsigned.test", "tlsa": ["3 1 1"]}]},
                # One host without TLSA, one whose TLSA lookup fails: not a definite answer.
                "mixed.test": {
                    "dnssec": "secure",
                    "faults": {"_25._tcp.mx2.mixed.test": "servfail"},
                    "mx": [
                        {"name": "mx1.mixed.test"},
                        {"name": "mx2.mixed.test", "tlsa": ["3 1 1"]},
                    ],
                },
            }
        }
    )
    daemon = await start_daemon(lab, dnssec_probe="none.test")
    world = daemon.world
    await world.create("MtaTlsStrategy", name="dane-only", dane="require")
    await world.outbound(tls={"else": "'dane-only'"})
    for domain in ("none.test", "unsigned.test", "mixed.test"):
        await world.send("a@sender.test", [f"b@{domain}"])
    settled = await daemon.outcomes("b@none.test", "b@unsigned.test", "b@mixed.test")

    for domain in ("none.test", "unsigned.test"):
        outcome = settled[f"b@{domain}"]
        assert outcome.status is FAILED
        assert (outcome.outcome.status, outcome.outcome.kind) == ("5.7.4", LastError.DANE)
        assert "dane: require" in outcome.outcome.reason
    mixed = settled["b@mixed.test"]
    assert mixed.status is SCHEDULED and mixed.outcome.status.startswith("4.")
    assert all(receiver.connections == 0 for receiver in lab.receivers.values())
    assert result_types(await reported(daemon.tlsrpt, "none.test")) == ["dane-required"]


async def test_only_unusable_records_require_tls_without_authentication(
    make_lab: MakeLab, start_daemon: StartDaemon
) -> None:
    lab = await make_lab(
        {
            "domains": {
                "tls.test": {
                    "dnssec": "secure",
                    "mx": [{"name": "mx1.tls.test", "tls": "self-signed", "tlsa": ["1 1 1"]}],
                },
                "clear.test": {
                    "dnssec": "secure",
                    "mx": [{"name": "mx1.clear.test", "tls": "none", "tlsa": ["0 0 1 ca"]}],
                },
            }
        }
    )
    daemon = await start_daemon(lab, dnssec_probe="tls.test")
    await daemon.world.send("a@sender.test", ["b@tls.test", "c@clear.test"])
    settled = await daemon.world.worker.wait_settled(2)

    encrypted = last_of(settled, "b@tls.test")
    assert encrypted.status is DELIVERED, encrypted.outcome.reason
    assert encrypted.tls.endswith("certificate not verified")
    refused = last_of(settled, "c@clear.test")
    assert refused.status is SCHEDULED and refused.outcome.kind is LastError.TLS
    assert lab.mx("mx1.clear.test").received == []
    assert result_types(await reported(daemon.tlsrpt, "tls.test")) == ["tlsa-invalid"]


async def test_malformed_tlsa_records_are_dropped_never_half_trusted(
    make_lab: MakeLab, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """Unknown usages, selectors and matching types beside a good record: the good one
    authenticates. Only bad ones: as if no record were usable (TLS, unauthenticated). Each
    record dropped is logged, naming it and why."""
    bad = [  # (a wrong digest length cannot be served: see the next test)
        f"4 1 1 {SHA256_ZEROS}",  # unknown usage
        f"3 7 1 {SHA256_ZEROS}",  # unknown selector
        f"3 1 9 {SHA256_ZEROS}",  # unknown matching type
    ]

    def records(host: str) -> list[dict[str, str]]:
        return [{"name": f"_25._tcp.{host}", "type": "TLSA", "value": value} for value in bad]

    lab = await make_lab(
        {
            "domains": {
                "good.test": {
                    "dnssec": "secure",
                    "mx": [{"name": "mx1.good.test", "tls": "self-signed", "tlsa": ["3 1 1"]}],
                    "records": records("mx1.good.test"),
                },
                "bad.test": {
                    "dnssec": "secure",
                    "mx": [{"name": "mx1.bad.test", "tls": "self-signed"}],
                    "records": records("mx1.bad.test"),
                },
            }
        }
    )
    daemon = await start_daemon(lab, dnssec_probe="good.test")
    await daemon.world.send("a@sender.test", ["b@good.test", "c@bad.test"])
    settled = await daemon.world.worker.wait_settled(2)

    good = last_of(settled, "b@good.test")
    assert good.status is DELIVERED and "DANE-EE record 3 1 1" in good.tls
    bad_one = last_of(settled, "c@bad.test")
    assert bad_one.status is DELIVERED and bad_one.tls.endswith("certificate not verified")
    dropped = [r.getMessage() for r in caplog.records if "TLSA " in r.getMessage()]
    for why in ("unknown certificate usage 4", "unknown selector 7", "unknown matching type 9"):
        assert any(why in message and "mx1.good.test" in message for message in dropped)


async def test_without_a_validating_resolver_dane_is_unavailable_and_healthz_says_so(
    make_lab: MakeLab, start_daemon: StartDaemon
) -> None:
    """The probe's name (the root) gets no AD from this resolver: DANE is not used, loudly,
    and no signed domain is treated as bogus: it is delivered as without DANE."""
    lab = await make_lab(signed({"name": "mx1.x.test", "tlsa": ["3 1 1 mismatch"]}))
    daemon = await start_daemon(lab)  # default probe name: the root, which the lab lacks
    await daemon.world.send("a@sender.test", ["b@x.test"])
    [settled] = await daemon.world.worker.wait_settled(1)

    assert settled.status is DELIVERED and settled.tls.endswith("certificate verified (PKIX)")
    assert tlsa_queries(lab.dns.queries) == []
    report = await daemon.runtime.health_checks.report()
    dns = report["checks"]["dns"]  # type: ignore[index]
    assert dns["status"] == "degraded"
    assert "does not validate DNSSEC" in dns["detail"] and "DANE is unavailable" in dns["detail"]
    probe: engine_worker.DnssecProbe = daemon.runtime.require_worker().dnssec
    assert probe.state == "not-validating"


class _TlsaTamperer(asyncio.DatagramProtocol):
    """A resolver in the middle (UDP): every query goes on to the lab's DNS server, except the
    TLSA query for ``name``, answered with a DANE-EE SHA-256 record of 2 bytes (AD set: a
    validating resolver passes on what a signed zone holds; DNSSEC does not check TLSA data).
    dnspython, in the harness as in the engine, refuses to build such a record."""

    def __init__(self, upstream: tuple[str, int], name: str) -> None:
        self.upstream = upstream
        self.name = dns.name.from_text(name)
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector loop's datagram transport does not subclass DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        task = asyncio.ensure_future(self._answer(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        if question.rdtype == dns.rdatatype.TLSA and question.name == self.name:
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AD | dns.flags.RA
            rrset = dns.rrset.RRset(self.name, dns.rdataclass.IN, dns.rdatatype.TLSA)
            bad = bytes([3, 1, 1]) + bytes.fromhex("abcd")  # 3 1 1, 2 bytes of "SHA-256"
            rrset.add(dns.rdata.GenericRdata(dns.rdataclass.IN, dns.rdatatype.TLSA, bad), 60)
            response.answer.append(rrset)
        else:
            host, port = self.upstream
            response = await dns.asyncquery.udp(query, host, port=port, timeout=2)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@contextlib.asynccontextmanager
async def tlsa_tamperer(
    lab: harness_lab.Lab, pool: loopback.LoopbackPool, name: str
) -> AsyncIterator[str]:
    """Run a `_TlsaTamperer` before the lab's DNS server; yields its ``host:port``."""
    loop = asyncio.get_running_loop()
    tamperer = _TlsaTamperer(lab.dns.address, name)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: tamperer, local_addr=(pool.take(), 0)
    )
    try:
        host, port = transport.get_extra_info("sockname")[:2]
        yield f"{host}:{port}"
    finally:
        transport.close()
        for task in list(tamperer.tasks):
            task.cancel()
        await asyncio.gather(*tamperer.tasks, return_exceptions=True)


async def test_tlsa_records_of_a_wrong_length_are_a_temporary_failure(
    make_lab: MakeLab, start_daemon: StartDaemon, harness_pool: loopback.LoopbackPool
) -> None:
    """Such an answer does not parse: the resolver drops it as it drops any malformed packet
    and waits for a good one until ``[dns] timeout``; the TLSA lookup failed, and the host is
    skipped for now (never delivered to without DANE); another domain of the run is delivered."""
    lab = await make_lab(
        {
            "domains": {
                name: {
                    "dnssec": "secure",
                    "mx": [{"name": f"mx1.{name}", "tls": "self-signed", "tlsa": ["3 1 1"]}],
                }
                for name in ("x.test", "ok.test")
            }
        }
    )
    async with tlsa_tamperer(lab, harness_pool, "_25._tcp.mx1.x.test.") as resolver:
        daemon = await start_daemon(
            lab, dnssec_probe="x.test", settings={"dns": {"nameservers": [resolver]}}
        )
        await daemon.world.send("a@sender.test", ["b@x.test"])
        await daemon.world.send("a@sender.test", ["c@ok.test"])
        settled = await daemon.outcomes("b@x.test", "c@ok.test")

    tampered = settled["b@x.test"]
    assert tampered.status is SCHEDULED and tampered.outcome.kind is LastError.DANE
    assert "the TLSA lookup of _25._tcp.mx1.x.test. failed" in tampered.outcome.reason
    assert lab.mx("mx1.x.test").connections == 0
    assert settled["c@ok.test"].status is DELIVERED
    assert result_types(await reported(daemon.tlsrpt, "x.test")) == ["dnssec-invalid"]
