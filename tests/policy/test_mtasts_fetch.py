"""MTA-STS discovery, fetch and cache over the real harness.

A real DNS server (the lab's), a real HTTPS policy server with certificates from the harness
CA, and the engine's own DNS resolver: every policy here is found the way the engine finds
it. A shared fake clock drives both the DNS cache and the policy cache, so TTLs, max_age
and the failure hold expire exactly when a test says. Misbehaving policy hosts that the
harness server cannot play (an endless body, an encoded body, garbage instead of HTTP) are
a few lines of raw TLS server below.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from delivery.dns import resolver as dns_resolver
from delivery.harness import certs, dns_server, lab
from delivery.harness.mtasts_server import POLICY_PATH, Policy, format_policy
from delivery.policy import mtasts, mtasts_fetch
from delivery.policy.mtasts import FetchProblem, LookupStatus, Mode, Source
from tests.plugins.harness import MakeLab

SCENARIOS = Path(__file__).parents[2] / "fixtures" / "scenarios"
STS = "sts.test"  # mta-sts-enforce.toml: enforce, mx1.sts.test and *.sts.test, id 20240101T000000
TIMEOUT_MS = 5000
DNS_TTL_S = 300  # what the lab's records carry


class Clock:
    """Monotonic seconds that move only when a test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


OpenSts = Callable[..., Awaitable[mtasts_fetch.MtaStsResolver]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def open_sts(clock: Clock) -> AsyncIterator[OpenSts]:
    """``await open_sts(the_lab, **options)``: an MtaStsResolver over the lab's DNS server."""
    opened: list[tuple[dns_resolver.Resolver, mtasts_fetch.MtaStsResolver]] = []

    async def open_one(the_lab: lab.Lab, **options: Any) -> mtasts_fetch.MtaStsResolver:
        dns = dns_resolver.Resolver([the_lab.dns.address], timeout_ms=2000, clock=clock)
        if the_lab.policy_server is not None:
            options.setdefault("https_port", the_lab.policy_server.address[1])
        options.setdefault("ca_file", str(the_lab.ca_file))
        options.setdefault("clock", clock)
        sts = mtasts_fetch.MtaStsResolver(dns, **options)
        opened.append((dns, sts))
        return sts

    try:
        yield open_one
    finally:
        for dns, sts in reversed(opened):
            await sts.close()
            await dns.close()


async def _enforce_lab(make_lab: MakeLab) -> lab.Lab:
    return await make_lab(SCENARIOS / "mta-sts-enforce.toml")


def _server(the_lab: lab.Lab) -> Any:
    assert the_lab.policy_server is not None
    return the_lab.policy_server


# ---- a good policy -------------------------------------------------------------------------


async def test_enforce_policy_is_fetched_then_served_from_the_cache(
    make_lab: MakeLab, open_sts: OpenSts
) -> None:
    the_lab = await _enforce_lab(make_lab)
    sts = await open_sts(the_lab)

    first = await sts.policy_for("STS.test.", timeout_ms=TIMEOUT_MS)
    assert first.status is LookupStatus.POLICY
    assert first.domain == STS
    assert first.source is Source.FETCH and first.source_text == "fetch"
    assert first.policy_id == "20240101T000000"
    assert first.policy == mtasts.Policy(Mode.ENFORCE, ("mx1.sts.test", "*.sts.test"), 604800)
    [request] = _server(the_lab).requests
    assert (request.host, request.sni, request.method, request.path) == (
        "mta-sts.sts.test",
        "mta-sts.sts.test",
        "GET",
        POLICY_PATH,
    )

    again = await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    assert again.source is Source.CACHE and again.source_text == "cache"
    assert again.policy == first.policy
    assert _server(the_lab).request_count(STS) == 1
    assert (sts.hits, sts.misses, len(sts.cache)) == (1, 1, 1)

    verdict = mtasts.decide(again, "mx2.sts.test.", "optional")
    assert verdict.tls_required and verdict.action is mtasts.Action.ENFORCE


async def test_the_policy_host_is_resolved_by_our_dns_server(
    make_lab: MakeLab, open_sts: OpenSts
) -> None:
    # mta-sts.sts.test exists only in the lab's zones: the system resolver cannot know it.
    the_lab = await _enforce_lab(make_lab)
    sts = await open_sts(the_lab)
    assert (await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)).status is LookupStatus.POLICY
    queries = the_lab.dns.queries
    assert ("_mta-sts.sts.test.", "TXT") in queries
    assert ("mta-sts.sts.test.", "A") in queries
    assert queries.index(("_mta-sts.sts.test.", "TXT")) < queries.index(("mta-sts.sts.test.", "A"))


async def test_the_cache_keeps_the_policy_while_the_id_is_unchanged(
    make_lab: MakeLab, open_sts: OpenSts, clock: Clock
) -> None:
    the_lab = await _enforce_lab(make_lab)
    sts = await open_sts(the_lab)
    await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    clock.advance(DNS_TTL_S + 1)  # the TXT record is asked again: same id
    lookup = await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    assert lookup.source is Source.CACHE
    assert the_lab.dns.queries.count(("_mta-sts.sts.test.", "TXT")) == 2
    assert _server(the_lab).request_count(STS) == 1


async def test_a_changed_txt_id_refreshes_the_policy(
    make_lab: MakeLab, open_sts: OpenSts, clock: Clock
) -> None:
    the_lab = await _enforce_lab(make_lab)
    sts = await open_sts(the_lab)
    await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    changed = format_policy("testing", ["mx1.sts.test"], 3600)
    the_lab.set_policy(STS, Policy(changed), policy_id="20250101")

    before_ttl = await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    assert before_ttl.policy_id == "20240101T000000"  # the old TXT answer is still cached
    clock.advance(DNS_TTL_S + 1)
    lookup = await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    assert lookup.source is Source.FETCH
    assert lookup.policy_id == "20250101"
    assert lookup.policy == mtasts.Policy(Mode.TESTING, ("mx1.sts.test",), 3600)
    assert _server(the_lab).request_count(STS) == 2
    assert (await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)).source is Source.CACHE


async def test_a_policy_is_fetched_again_after_max_age(
    make_lab: MakeLab, open_sts: OpenSts, clock: Clock
) -> None:
    the_lab = await _enforce_lab(make_lab)
    the_lab.set_policy(STS, Policy(format_policy("enforce", ["*.sts.test"], 600)))
    sts = await open_sts(the_lab)
    await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    clock.advance(599)
    assert (await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)).source is Source.CACHE
    clock.advance(1)
    assert (await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)).source is Source.FETCH
    assert _server(the_lab).request_count(STS) == 2


async def test_concurrent_lookups_share_one_fetch(make_lab: MakeLab, open_sts: OpenSts) -> None:
    the_lab = await _enforce_lab(make_lab)
    the_lab.set_policy(STS, Policy(format_policy("enforce", ["*.sts.test"], 600), delay=0.2))
    sts = await open_sts(the_lab)
    lookups = await asyncio.gather(*(sts.policy_for(STS, timeout_ms=TIMEOUT_MS) for _ in range(8)))
    assert {lookup.source for lookup in lookups} == {Source.FETCH}
    assert _server(the_lab).request_count(STS) == 1


async def test_a_caller_that_gives_up_does_not_cancel_the_fetch_for_others(
    make_lab: MakeLab, open_sts: OpenSts
) -> None:
    the_lab = await _enforce_lab(make_lab)
    the_lab.set_policy(STS, Policy(format_policy("enforce", ["*.sts.test"], 600), delay=0.3))
    sts = await open_sts(the_lab)
    patient = asyncio.create_task(sts.policy_for(STS, timeout_ms=TIMEOUT_MS))
    await asyncio.sleep(0.05)  # the patient caller starts the fetch; then one joins and leaves
    hasty = await sts.policy_for(STS, timeout_ms=100)
    assert hasty.status is LookupStatus.UNAVAILABLE
    assert hasty.problem is FetchProblem.TIMEOUT
    assert "did not finish within 100 ms (mtaStsTimeout)" in hasty.reason
    assert (await patient).source is Source.FETCH
    assert _server(the_lab).request_count(STS) == 1


# ---- policy hosts that misbehave -----------------------------------------------------------

BAD_SERVERS = [  # (domain in mta-sts-bad-server.toml, problem, phrase of the reason)
    ("redirect.test", FetchProblem.REDIRECT, "the server redirects (301) to 'https://mta-sts."),
    ("notfound.test", FetchProblem.STATUS, "the server answered 404 Not Found, not 200"),
    ("ctype.test", FetchProblem.CONTENT_TYPE, "Content-Type is 'text/html', not text/plain"),
    ("huge.test", FetchProblem.OVERSIZE, "more than the 65536 a sender reads"),
    ("badcert.test", FetchProblem.TLS, "the certificate of mta-sts.badcert.test is not valid"),
    ("nohost.test", FetchProblem.CONNECT, "could not connect to mta-sts.nohost.test"),
]


@pytest.mark.parametrize(
    ("domain", "problem", "phrase"), BAD_SERVERS, ids=[b[0] for b in BAD_SERVERS]
)
async def test_a_misbehaving_policy_host_means_no_policy(
    make_lab: MakeLab, open_sts: OpenSts, domain: str, problem: FetchProblem, phrase: str
) -> None:
    the_lab = await make_lab(SCENARIOS / "mta-sts-bad-server.toml")
    if domain == "nohost.test" and _server(the_lab).address[1] != mtasts_fetch.HTTPS_PORT:
        pytest.skip("the refused address is bound on port 443 only when 443 can be bound")
    sts = await open_sts(the_lab)
    lookup = await sts.policy_for(domain, timeout_ms=TIMEOUT_MS)
    assert lookup.status is LookupStatus.UNAVAILABLE
    assert lookup.policy is None and lookup.source is None
    assert lookup.problem is problem
    assert phrase in lookup.reason
    assert lookup.reason.startswith(f"the MTA-STS policy of {domain} was not fetched from https://")

    optional = mtasts.decide(lookup, f"mx1.{domain}", "optional")
    assert optional.action is mtasts.Action.NOT_APPLICABLE and optional.usable
    required = mtasts.decide(lookup, f"mx1.{domain}", "require")
    assert required.action is mtasts.Action.DEFER and not required.permanent


BAD_POLICIES = [  # (label, what the server now serves, problem, phrase of the reason)
    (
        "redirect",
        Policy("", status=302, location="https://mta-sts.elsewhere.test/x"),
        FetchProblem.REDIRECT,
        "redirects (302) to 'https://mta-sts.elsewhere.test/x'",
    ),
    ("404", Policy("gone\n", status=404), FetchProblem.STATUS, "answered 404 Not Found"),
    ("500", Policy("oops\n", status=500), FetchProblem.STATUS, "answered 500 Internal Server"),
    (
        "wrong content type",
        Policy(format_policy("enforce", ["*.sts.test"], 60), content_type="application/json"),
        FetchProblem.CONTENT_TYPE,
        "Content-Type is 'application/json'",
    ),
    (
        "oversized body",
        Policy(format_policy("enforce", ["*.sts.test"], 60), pad_to=70_000),
        FetchProblem.OVERSIZE,
        "bytes, more than the 65536",
    ),
    (
        "self-signed certificate",
        Policy(format_policy("enforce", ["*.sts.test"], 60), cert="self-signed"),
        FetchProblem.TLS,
        "is not valid: self-signed certificate",
    ),
    (
        "certificate for another name",
        Policy(format_policy("enforce", ["*.sts.test"], 60), cert="wrong-name"),
        FetchProblem.TLS,
        "Hostname mismatch",
    ),
    (
        "expired certificate",
        Policy(format_policy("enforce", ["*.sts.test"], 60), cert="expired"),
        FetchProblem.TLS,
        "is not valid: certificate has expired",
    ),
    (
        "certificate from an unknown CA",
        Policy(format_policy("enforce", ["*.sts.test"], 60), cert="unknown-ca"),
        FetchProblem.TLS,
        "unable to get local issuer certificate",
    ),
    (
        "invalid policy",
        Policy("version: STSv1\r\nmode: enforce\r\nmax_age: 60\r\n"),
        FetchProblem.INVALID_POLICY,
        "is invalid: mode enforce needs at least one 'mx' field",
    ),
    (
        "HTML error page served as text/plain",
        Policy("<html><body>Maintenance</body></html>\n"),
        FetchProblem.INVALID_POLICY,
        "is invalid: line 1: '<html><body>Maintenance</body></html>' is not 'name: value'",
    ),
]


@pytest.mark.parametrize(
    ("label", "bad", "problem", "phrase"), BAD_POLICIES, ids=[b[0] for b in BAD_POLICIES]
)
async def test_a_failed_refresh_keeps_the_cached_policy(
    make_lab: MakeLab,
    open_sts: OpenSts,
    clock: Clock,
    label: str,
    bad: Policy,
    problem: FetchProblem,
    phrase: str,
) -> None:
    the_lab = await _enforce_lab(make_lab)
    sts = await open_sts(the_lab)
    good = await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    the_lab.set_policy(STS, bad, policy_id="broken1")
    clock.advance(DNS_TTL_S + 1)

    lookup = await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    assert lookup.status is LookupStatus.POLICY, label
    assert lookup.source is Source.CACHE_REFRESH_FAILED
    assert lookup.policy == good.policy and lookup.policy_id == good.policy_id
    assert lookup.problem is problem
    assert phrase in lookup.reason
    assert lookup.source_text == f"cache (refresh failed: {lookup.reason})"
    assert mtasts.decide(lookup, "mx1.sts.test", "optional").tls_required

    # Without a cached policy, the same server means no policy (RFC 8461 §3.3).
    fresh = await open_sts(the_lab)
    alone = await fresh.policy_for(STS, timeout_ms=TIMEOUT_MS)
    assert alone.status is LookupStatus.UNAVAILABLE
    assert alone.problem is problem
    assert phrase in alone.reason


async def test_a_slow_policy_host_is_cut_at_the_deadline(
    make_lab: MakeLab, open_sts: OpenSts, clock: Clock
) -> None:
    the_lab = await _enforce_lab(make_lab)
    sts = await open_sts(the_lab)
    good = await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    slow = Policy(format_policy("enforce", ["*.sts.test"], 60), delay=1.0)
    the_lab.set_policy(STS, slow, policy_id="slow1")
    clock.advance(DNS_TTL_S + 1)

    started = time.monotonic()
    lookup = await sts.policy_for(STS, timeout_ms=250)
    assert time.monotonic() - started < 0.9
    assert lookup.source is Source.CACHE_REFRESH_FAILED and lookup.policy == good.policy
    assert lookup.problem is FetchProblem.TIMEOUT
    assert "within 250 ms (mtaStsTimeout)" in lookup.reason

    fresh = await open_sts(the_lab)
    alone = await fresh.policy_for(STS, timeout_ms=250)
    assert alone.status is LookupStatus.UNAVAILABLE and alone.problem is FetchProblem.TIMEOUT


async def test_one_deadline_bounds_the_txt_lookup_too(make_lab: MakeLab, open_sts: OpenSts) -> None:
    the_lab = await make_lab(
        {
            "domains": {
                "mute.test": {
                    "mta_sts": {"mode": "enforce", "mx": ["*.mute.test"]},
                    "faults": {"_mta-sts.mute.test": "timeout"},
                }
            }
        }
    )
    sts = await open_sts(the_lab)
    started = time.monotonic()
    lookup = await sts.policy_for("mute.test", timeout_ms=300)
    assert time.monotonic() - started < 1.0
    assert lookup.status is LookupStatus.UNAVAILABLE
    assert lookup.problem in (FetchProblem.TXT_TEMPFAIL, FetchProblem.TIMEOUT)
    assert _server(the_lab).request_count("mute.test") == 0


async def test_a_failed_fetch_is_remembered_until_the_hold_ends_or_the_id_changes(
    make_lab: MakeLab, open_sts: OpenSts, clock: Clock
) -> None:
    the_lab = await _enforce_lab(make_lab)
    the_lab.set_policy(STS, Policy("gone\n", status=404), policy_id="gone1")
    sts = await open_sts(the_lab)
    first = await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    second = await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    assert first.problem is second.problem is FetchProblem.STATUS
    assert "(remembered; next try in 300 s)" in second.reason
    assert _server(the_lab).request_count(STS) == 1

    clock.advance(mtasts_fetch.MTA_STS_FAILURE_HOLD_S)
    await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    assert _server(the_lab).request_count(STS) == 2

    the_lab.set_policy(
        STS, Policy(format_policy("enforce", ["*.sts.test"], 60)), policy_id="fixed1"
    )
    clock.advance(DNS_TTL_S + 1)  # the new TXT id is seen; the hold of the old id is not
    fixed = await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    assert fixed.source is Source.FETCH
    assert _server(the_lab).request_count(STS) == 3


async def test_the_harness_ca_is_trusted_only_through_ca_file(
    make_lab: MakeLab, open_sts: OpenSts
) -> None:
    the_lab = await _enforce_lab(make_lab)
    sts = await open_sts(the_lab, ca_file=None)
    lookup = await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    assert lookup.problem is FetchProblem.TLS
    assert "unable to get local issuer certificate" in lookup.reason


# ---- DNS: the TXT record and the policy host's address ---------------------------------------


async def test_txt_tempfail_with_a_cached_policy_uses_the_cache(
    make_lab: MakeLab, open_sts: OpenSts, clock: Clock
) -> None:
    the_lab = await _enforce_lab(make_lab)
    sts = await open_sts(the_lab)
    good = await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    the_lab.dns.set_zones(_with_fault(the_lab, "_mta-sts.sts.test.", "servfail"))
    clock.advance(DNS_TTL_S + 1)

    lookup = await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    assert lookup.source is Source.CACHE_REFRESH_FAILED
    assert lookup.policy == good.policy
    assert lookup.problem is FetchProblem.TXT_TEMPFAIL
    assert lookup.reason.startswith("the TXT lookup of _mta-sts.sts.test failed: ")
    assert _server(the_lab).request_count(STS) == 1

    fresh = await open_sts(the_lab)
    alone = await fresh.policy_for(STS, timeout_ms=TIMEOUT_MS)
    assert alone.status is LookupStatus.UNAVAILABLE
    assert alone.problem is FetchProblem.TXT_TEMPFAIL
    assert mtasts.decide(alone, "mx1.sts.test", "require").action is mtasts.Action.DEFER


async def test_a_removed_txt_record_keeps_the_cached_policy_until_it_expires(
    make_lab: MakeLab, open_sts: OpenSts, clock: Clock
) -> None:
    # RFC 8461 §8.3: a domain leaves MTA-STS by publishing mode none, not by deleting records.
    the_lab = await _enforce_lab(make_lab)
    sts = await open_sts(the_lab)
    await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    zones = [
        dataclasses.replace(z, records=tuple(r for r in z.records if not r.name.startswith("_mta")))
        for z in the_lab.zones()
    ]
    the_lab.dns.set_zones(zones)
    clock.advance(DNS_TTL_S + 1)
    lookup = await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    assert lookup.source is Source.CACHE_REFRESH_FAILED
    assert lookup.reason == "_mta-sts.sts.test: no TXT record (NXDOMAIN)"
    clock.advance(604800)
    gone = await sts.policy_for(STS, timeout_ms=TIMEOUT_MS)
    assert gone.status is LookupStatus.NONE


MALFORMED_TXT = [  # (label, scenario keys of the domain's mta_sts table, phrase of the reason)
    ("no TXT record", {"txt": False}, "_mta-sts.txt.test: no TXT record (NXDOMAIN)"),
    ("id with a hyphen", {"txt": "v=STSv1; id=2024-01-01;"}, "id '2024-01-01' is not 1 to 32"),
    ("no id", {"txt": "v=STSv1; foo=bar;"}, "has no id="),
    ("another version", {"txt": "v=STSv2; id=abc;"}, "none of the 1 TXT records begins with"),
    ("version not followed by ';'", {"txt": "v=STSv1 id=abc"}, "does not begin with 'v=STSv1;'"),
    ("a field without '='", {"txt": "v=STSv1; id=abc; junk"}, "field 'junk' is not name=value"),
]


@pytest.mark.parametrize(
    ("label", "keys", "phrase"), MALFORMED_TXT, ids=[m[0] for m in MALFORMED_TXT]
)
async def test_a_missing_or_malformed_txt_record_means_no_policy_and_no_fetch(
    make_lab: MakeLab, open_sts: OpenSts, label: str, keys: dict[str, Any], phrase: str
) -> None:
    the_lab = await make_lab(
        {"domains": {"txt.test": {"mta_sts": {"mode": "enforce", "mx": ["*.txt.test"], **keys}}}}
    )
    sts = await open_sts(the_lab)
    lookup = await sts.policy_for("txt.test", timeout_ms=TIMEOUT_MS)
    assert lookup.status is LookupStatus.NONE, label
    assert phrase in lookup.reason
    assert _server(the_lab).request_count("txt.test") == 0
    assert mtasts.decide(lookup, "mx1.txt.test", "require").permanent


async def test_two_sts_records_mean_no_policy(make_lab: MakeLab, open_sts: OpenSts) -> None:
    the_lab = await make_lab(
        {
            "domains": {
                "two.test": {
                    "mta_sts": {"mode": "enforce", "mx": ["*.two.test"], "id": "one"},
                    "records": [
                        {"name": "_mta-sts.two.test", "type": "TXT", "value": "v=STSv1; id=two;"}
                    ],
                }
            }
        }
    )
    sts = await open_sts(the_lab)
    lookup = await sts.policy_for("two.test", timeout_ms=TIMEOUT_MS)
    assert lookup.status is LookupStatus.NONE
    assert "2 TXT records begin with 'v=STSv1;': treated as no policy" in lookup.reason
    assert _server(the_lab).request_count("two.test") == 0


async def test_a_policy_host_without_an_address(make_lab: MakeLab, open_sts: OpenSts) -> None:
    the_lab = await make_lab(
        {
            "domains": {
                "noaddr.test": {
                    "mta_sts": {"mode": "enforce", "mx": ["*.noaddr.test"]},
                    "faults": {"mta-sts.noaddr.test": "nxdomain"},
                }
            }
        }
    )
    sts = await open_sts(the_lab)
    lookup = await sts.policy_for("noaddr.test", timeout_ms=TIMEOUT_MS)
    assert lookup.status is LookupStatus.UNAVAILABLE
    assert lookup.problem is FetchProblem.HOST_DNS
    assert "mta-sts.noaddr.test has no address: A nxdomain" in lookup.reason
    assert ("mta-sts.noaddr.test.", "A") in the_lab.dns.queries


async def test_a_name_that_cannot_be_a_domain_is_no_policy(
    make_lab: MakeLab, open_sts: OpenSts
) -> None:
    the_lab = await _enforce_lab(make_lab)
    sts = await open_sts(the_lab)
    lookup = await sts.policy_for("bad..name", timeout_ms=TIMEOUT_MS)
    assert lookup.status is LookupStatus.NONE
    assert "invalid domain name" in lookup.reason


def _with_fault(the_lab: lab.Lab, name: str, fault: dns_server.Fault) -> list[dns_server.ZoneSpec]:
    zones = []
    for zone in the_lab.zones():
        if name.endswith("." + zone.origin):
            zone = dataclasses.replace(zone, faults={**zone.faults, name: fault})
        zones.append(zone)
    return zones


# ---- raw servers: what the harness policy server cannot do ---------------------------------

RAW = "raw.test"
HEAD_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"


async def _serve_raw(
    the_lab: lab.Lab,
    factory: certs.CertFactory,
    address: str,
    respond: Callable[[asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.Server, asyncio.Event]:
    """A TLS server for mta-sts.raw.test that reads one request and lets ``respond`` write."""
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await respond(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up: what these tests expect
        finally:
            writer.close()
            done.set()

    context = factory.credential(f"mta-sts.{RAW}").server_context()
    server = await asyncio.start_server(handle, address, 0, ssl=context)
    return server, done


async def _endless(writer: asyncio.StreamWriter) -> None:
    writer.write(HEAD_OK + b"\r\nversion: STSv1\r\n")
    line = b"x-padding: " + b"y" * 100 + b"\r\n"
    while True:
        writer.write(line * 64)
        await writer.drain()


async def _gzip(writer: asyncio.StreamWriter) -> None:
    writer.write(HEAD_OK + b"Content-Encoding: gzip\r\n\r\n\x1f\x8b\x08\x00")
    await writer.drain()


async def _not_http(writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 mail.raw.test ESMTP ready\r\n")
    await writer.drain()


async def _closed(writer: asyncio.StreamWriter) -> None:
    return None


RAW_CASES = [  # (label, response, problem, phrase of the reason)
    ("an endless body", _endless, FetchProblem.OVERSIZE, "longer than the 65536 bytes"),
    ("a gzip-encoded body", _gzip, FetchProblem.HTTP, "the body is 'gzip'-encoded"),
    (
        "an SMTP banner instead of HTTP",
        _not_http,
        FetchProblem.HTTP,
        'is not valid HTTP: "Bad status line: Expected HTTP/',
    ),
    (
        "a connection closed without an answer",
        _closed,
        FetchProblem.HTTP,
        "the HTTPS exchange with mta-sts.raw.test failed: Server disconnected",
    ),
]


@pytest.mark.parametrize(
    ("label", "respond", "problem", "phrase"), RAW_CASES, ids=[r[0] for r in RAW_CASES]
)
async def test_hostile_http_answers_are_classified(
    make_lab: MakeLab,
    open_sts: OpenSts,
    harness_certs: certs.CertFactory,
    loopback_address: str,
    label: str,
    respond: Callable[[asyncio.StreamWriter], Awaitable[None]],
    problem: FetchProblem,
    phrase: str,
) -> None:
    the_lab = await make_lab(
        {
            "domains": {
                RAW: {
                    "records": [
                        {"name": f"_mta-sts.{RAW}", "type": "TXT", "value": "v=STSv1; id=raw1;"},
                        {"name": f"mta-sts.{RAW}", "type": "A", "value": loopback_address},
                    ]
                }
            }
        }
    )
    server, done = await _serve_raw(the_lab, harness_certs, loopback_address, respond)
    async with server:
        port = server.sockets[0].getsockname()[1]
        sts = await open_sts(the_lab, https_port=port)
        lookup = await sts.policy_for(RAW, timeout_ms=TIMEOUT_MS)
        assert lookup.status is LookupStatus.UNAVAILABLE, label
        assert lookup.problem is problem, lookup.reason
        assert phrase in lookup.reason
        assert f"https://mta-sts.{RAW}:{port}/.well-known/mta-sts.txt" in lookup.reason
        await asyncio.wait_for(done.wait(), 5)  # we hung up: the server is not left writing


async def test_cancelling_a_lookup_raises_cancelled_error(
    make_lab: MakeLab, open_sts: OpenSts
) -> None:
    the_lab = await _enforce_lab(make_lab)
    the_lab.set_policy(STS, Policy(format_policy("enforce", ["*.sts.test"], 600), delay=0.5))
    sts = await open_sts(the_lab)
    lookup = asyncio.create_task(sts.policy_for(STS, timeout_ms=TIMEOUT_MS))
    await asyncio.sleep(0.1)
    lookup.cancel()
    with pytest.raises(asyncio.CancelledError):
        await lookup


# ---- the cache alone -----------------------------------------------------------------------

POLICY = mtasts.Policy(Mode.ENFORCE, ("*.example.test",), 600)


def test_the_cache_keeps_a_policy_for_its_max_age(clock: Clock) -> None:
    cache = mtasts_fetch.PolicyCache(clock=clock)
    cache.put("example.test", POLICY, "id1")
    entry = cache.get("example.test")
    assert entry is not None
    assert (entry.policy, entry.policy_id, entry.fetched_at, entry.expires_at) == (
        POLICY,
        "id1",
        clock.now,
        clock.now + 600,
    )
    clock.advance(599.9)
    assert cache.get("example.test") is not None
    clock.advance(0.1)
    assert cache.get("example.test") is None
    assert len(cache) == 0


def test_a_policy_with_max_age_zero_is_not_kept(clock: Clock) -> None:
    cache = mtasts_fetch.PolicyCache(clock=clock)
    cache.put("example.test", POLICY, "id1")
    cache.put("example.test", dataclasses.replace(POLICY, max_age_s=0), "id2")
    assert cache.get("example.test") is None


def test_the_cache_evicts_the_least_recently_used_domain(clock: Clock) -> None:
    cache = mtasts_fetch.PolicyCache(max_entries=2, clock=clock)
    cache.put("a.test", POLICY, "1")
    cache.put("b.test", POLICY, "1")
    assert cache.get("a.test") is not None  # a is now the most recently used
    cache.put("c.test", POLICY, "1")
    assert [cache.get(d) is not None for d in ("a.test", "b.test", "c.test")] == [True, False, True]
    with pytest.raises(ValueError, match="max_entries must be positive"):
        mtasts_fetch.PolicyCache(max_entries=0)
