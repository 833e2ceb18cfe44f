"""MTA-STS end to end (DESIGN §5 step 1, RFC 8461): the daemon's worker, the harness DNS server,
real HTTPS to the harness policy server on port 443, real TLS to the harness receivers."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from delivery.engine import worker as engine_worker
from delivery.errors import LastError
from delivery.harness import lab as harness_lab
from delivery.harness import mtasts_server, smtp_server
from delivery.harness.dns_server import RecordSpec
from delivery.policy import tlsrpt, tlsrpt_store
from delivery.queue import model
from tests.integration.conftest import StartDaemon
from tests.plugins.harness import MakeLab

SCENARIOS = Path(__file__).parents[2] / "fixtures" / "scenarios"
DELIVERED, SCHEDULED = model.RecipientStatus.DELIVERED, model.RecipientStatus.SCHEDULED


def saw_mail(receiver: smtp_server.SmtpReceiver) -> bool:
    return any(line.upper().startswith("MAIL") for line in receiver.commands)


def last_of(settled: Sequence[engine_worker.Settled], address: str) -> engine_worker.Settled:
    """The latest outcome recorded for ``address``."""
    return [s for s in settled if s.address == address][-1]


def today() -> date:
    return tlsrpt.day_of(model.now_ms())


async def reported(store: tlsrpt_store.TlsRptStore, domain: str) -> list[tlsrpt.PolicyAggregate]:
    """The TLS-RPT aggregates of ``domain`` for today (and yesterday, should the test have
    crossed midnight UTC), everything buffered written first."""
    await store.flush()
    now = model.now_ms()
    days = sorted({tlsrpt.day_of(now - 600_000), tlsrpt.day_of(now)})
    return [aggregate for day in days for aggregate in await store.aggregates(domain, day)]


def result_types(aggregates: Sequence[tlsrpt.PolicyAggregate]) -> list[str]:
    return sorted(
        detail.result_type.value for aggregate in aggregates for detail, _ in aggregate.details
    )


async def test_enforce_delivers_only_over_verified_tls_to_the_listed_mx(
    make_lab: MakeLab, start_daemon: StartDaemon
) -> None:
    lab = await make_lab(
        {
            "domains": {
                "sts.test": {
                    "mx": [
                        {"name": "mx1.sts.test", "preference": 10},  # preferred, not listed
                        {"name": "mx2.sts.test", "preference": 20},
                    ],
                    "mta_sts": {"mode": "enforce", "mx": ["mx2.sts.test"]},
                }
            }
        }
    )
    daemon = await start_daemon(lab)
    world = daemon.world
    message_id = await world.send("a@sender.test", ["b@sts.test"])
    [settled] = await world.worker.wait_settled(1)

    assert settled.status is DELIVERED
    [received] = lab.mx("mx2.sts.test").received
    assert received.tls is not None
    assert lab.mx("mx1.sts.test").connections == 0  # never used, not even tried
    assert "certificate verified (PKIX; the MTA-STS policy of sts.test (mode enforce)" in (
        settled.tls
    )
    [stored] = await world.recipients(message_id)
    assert "lists mx2.sts.test" in stored.last_status
    assert lab.policy_server is not None
    [request] = [r for r in lab.policy_server.requests if r.host == "mta-sts.sts.test"]
    assert (request.sni, request.path) == ("mta-sts.sts.test", "/.well-known/mta-sts.txt")
    assert ("_mta-sts.sts.test.", "TXT") in lab.dns.queries  # our resolver, not the system's
    assert ("mta-sts.sts.test.", "A") in lab.dns.queries
    # TLS-RPT: the unlisted MX is reported, the delivery is a success under the sts policy.
    [aggregate] = await reported(daemon.tlsrpt, "sts.test")
    assert aggregate.policy.policy_type is tlsrpt.PolicyType.STS
    assert (aggregate.successes, aggregate.failures) == (1, 1)
    [(detail, count)] = aggregate.details
    assert count == 1
    assert detail.result_type is tlsrpt.ResultType.VALIDATION_FAILURE
    assert detail.receiving_mx_hostname == "mx1.sts.test"


@pytest.mark.parametrize("mode", ["none", "self-signed", "expired", "wrong-name", "broken"])
async def test_enforce_never_sends_in_clear_or_to_an_invalid_certificate(
    mode: str, make_lab: MakeLab, start_daemon: StartDaemon
) -> None:
    lab = await make_lab(
        {
            "domains": {
                "sts.test": {
                    "mx": [{"name": "mx1.sts.test", "tls": mode}],
                    "mta_sts": {"mode": "enforce"},
                }
            }
        }
    )
    daemon = await start_daemon(lab)
    world = daemon.world
    await world.outbound(tls={"else": "'invalid-tls'"})  # allowInvalidCerts: ignored by MTA-STS
    await world.send("a@sender.test", ["b@sts.test"])
    [settled] = await world.worker.wait_settled(1)

    receiver = lab.mx("mx1.sts.test")
    assert receiver.received == [] and not saw_mail(receiver)
    assert settled.status is SCHEDULED
    assert settled.outcome.kind is LastError.TLS and settled.outcome.status.startswith("4.")
    assert "the MTA-STS policy of sts.test (mode enforce) requires TLS" in settled.outcome.reason
    assert "not sending in clear text" in settled.outcome.reason


async def test_testing_delivers_and_reports_each_failure(
    make_lab: MakeLab, start_daemon: StartDaemon
) -> None:
    """mta-sts-testing.toml: a testing policy that does not list the self-signed MX."""
    lab = await make_lab(SCENARIOS / "mta-sts-testing.toml")
    daemon = await start_daemon(lab)
    world = daemon.world
    await world.send("a@sender.test", ["b@testing.test"])
    first, second = await world.worker.wait_settled(2)

    # The default strategy checks the certificate; its retry picks invalid-tls and delivers.
    assert (first.status, first.outcome.kind) == (SCHEDULED, LastError.TLS)
    assert second.status is DELIVERED
    [received] = lab.mx("mx1.testing.test").received
    assert received.tls is not None
    [aggregate] = await reported(daemon.tlsrpt, "testing.test")
    assert aggregate.policy.policy_string[1] == "mode: testing"
    assert (aggregate.successes, aggregate.failures) == (0, 2)
    assert result_types([aggregate]) == ["certificate-not-trusted", "validation-failure"]


MISBEHAVING_POLICY_HOSTS: dict[str, tuple[dict[str, Any], str]] = {
    # domain: (what its policy host does, the RFC 8460 result type reported)
    "redirect.test": (
        {"redirect": "https://mta-sts.elsewhere.test/.well-known/mta-sts.txt"},
        "sts-policy-fetch-error",
    ),
    "notfound.test": ({"status": 404}, "sts-policy-fetch-error"),
    "ctype.test": ({"content_type": "text/html"}, "sts-policy-fetch-error"),
    "badcert.test": ({"cert": "expired"}, "sts-webpki-invalid"),
    "huge.test": ({"pad_to": 70000}, "sts-policy-fetch-error"),
    "slow.test": ({"delay": 2}, "sts-policy-fetch-error"),  # past the 1 s mtaStsTimeout
    "down.test": ({"down": True}, "sts-policy-fetch-error"),
    "binary.test": (
        {"body": "version: STSv1\r\nmode: enforce\x00\x01\x7f\r\nmx: *\r\n"},
        "sts-policy-invalid",
    ),
    "endless.test": (
        {"body": "version: STSv1\r\nmode: enforce\r\nmx: " + "a" * 20000 + "\r\nmax_age: 60\r\n"},
        "sts-policy-invalid",
    ),
}


async def test_a_policy_that_cannot_be_fetched_is_no_policy_and_is_reported(
    make_lab: MakeLab, start_daemon: StartDaemon
) -> None:
    """Each policy host misbehaves; every MX lacks STARTTLS, so a policy applied by mistake
    would show as a deferral. Treated as no policy (RFC 8461 §3.3): delivered as without
    MTA-STS, the fetch failure reported. A sound domain in the same run is unaffected."""
    domains: dict[str, Any] = {
        name: {
            "mx": [{"name": f"mx1.{name}", "tls": "none"}],
            "mta_sts": {"mode": "enforce", **server},
        }
        for name, (server, _) in MISBEHAVING_POLICY_HOSTS.items()
    }
    domains["fine.test"] = {"mx": [{"name": "mx1.fine.test"}], "mta_sts": {"mode": "enforce"}}
    lab = await make_lab({"domains": domains})
    daemon = await start_daemon(lab)
    world = daemon.world
    await world.update("MtaTlsStrategy", "default", mtaStsTimeout=1000)
    for name in domains:
        await world.send("a@sender.test", [f"b@{name}"])
    settled = await world.worker.wait_settled(len(domains), timeout_s=30)

    for name, (_, result_type) in MISBEHAVING_POLICY_HOSTS.items():
        outcome = last_of(settled, f"b@{name}")
        assert outcome.status is DELIVERED, (name, outcome.outcome.reason)
        assert outcome.tls == "clear text (STARTTLS not offered)"
        aggregates = await reported(daemon.tlsrpt, name)
        assert [a.policy.policy_type for a in aggregates] == [tlsrpt.PolicyType.STS]
        assert result_types(aggregates) == [result_type], name
    fine = last_of(settled, "b@fine.test")
    assert fine.status is DELIVERED and "MTA-STS policy of fine.test" in fine.tls


def publish_txt(lab: harness_lab.Lab, domain: str, text: str) -> None:
    """Replace the domain's ``_mta-sts`` TXT record (TTL 0: the resolver sees it at once)."""
    spec = lab.scenario.domain(domain)
    owner = f"_mta-sts.{domain}."
    records = tuple(r for r in spec.records if r.name != owner)
    records += (RecordSpec(owner, "TXT", text, 0),)
    changed = dataclasses.replace(spec, records=records)
    domains = tuple(changed if d.name == domain else d for d in lab.scenario.domains)
    lab.scenario = dataclasses.replace(lab.scenario, domains=domains)
    lab.dns.set_zones(lab.zones())


async def test_the_cached_policy_outlives_a_failed_refresh_and_a_new_id_refreshes(
    make_lab: MakeLab, start_daemon: StartDaemon
) -> None:
    domain = "cached.test"
    lab = await make_lab(
        {
            "domains": {
                domain: {
                    "mx": [
                        {"name": "mx0.cached.test", "preference": 5},
                        {"name": "mx1.cached.test", "preference": 10},
                    ],
                    "mta_sts": {"mode": "enforce", "mx": ["mx1.cached.test"], "txt": False},
                }
            }
        }
    )
    publish_txt(lab, domain, "v=STSv1; id=one;")
    daemon = await start_daemon(lab)
    world = daemon.world
    mx0, mx1 = lab.mx("mx0.cached.test"), lab.mx("mx1.cached.test")
    assert lab.policy_server is not None

    await world.send("a@sender.test", [f"b@{domain}"])
    await world.worker.wait_settled(1)
    assert (len(mx1.received), mx0.connections) == (1, 0)

    # The domain's policy host breaks while a new id is announced: the cached policy holds.
    broken = mtasts_server.Policy(body="", status=404)
    lab.set_policy(domain, broken)
    publish_txt(lab, domain, "v=STSv1; id=two;")
    await world.send("a@sender.test", [f"c@{domain}"])
    settled = await world.worker.wait_settled(2)
    assert last_of(settled, f"c@{domain}").status is DELIVERED
    assert (len(mx1.received), mx0.connections) == (2, 0)
    assert lab.policy_server.request_count(domain) == 2  # the refresh was tried

    # A new id with a policy that lists mx0: fetched at once, and mx0 (preferred) is used.
    listing = mtasts_server.format_policy("enforce", ["mx0.cached.test"], 86400)
    lab.set_policy(domain, mtasts_server.Policy(body=listing))
    publish_txt(lab, domain, "v=STSv1; id=three;")
    await world.send("a@sender.test", [f"d@{domain}"])
    settled = await world.worker.wait_settled(3)
    assert last_of(settled, f"d@{domain}").status is DELIVERED
    assert (len(mx0.received), len(mx1.received)) == (1, 2)
    assert lab.policy_server.request_count(domain) == 3


async def test_require_fails_a_domain_without_a_policy(
    make_lab: MakeLab, start_daemon: StartDaemon
) -> None:
    lab = await make_lab({"domains": {"plain.test": {"mx": [{"name": "mx1.plain.test"}]}}})
    daemon = await start_daemon(lab)
    world = daemon.world
    await world.create("MtaTlsStrategy", name="sts-only", mtaSts="require")
    await world.outbound(tls={"else": "'sts-only'"})
    await world.send("a@sender.test", ["b@plain.test"])
    settled = last_of(await world.worker.wait_settled(1), "b@plain.test")

    assert settled.status is model.RecipientStatus.FAILED
    assert (settled.outcome.status, settled.outcome.kind) == ("5.7.4", LastError.MTA_STS)
    assert "no MTA-STS policy published by plain.test" in settled.outcome.reason
    assert lab.mx("mx1.plain.test").connections == 0


@pytest.mark.parametrize(
    "txt",
    [
        "v=STSv1; id=not valid!;",  # a malformed id
        "v=STSv1;",  # no id
        "v=STSv2; id=1;",  # another version: not an STSv1 record
        "v=STSv1; id=" + "x" * 300 + ";",  # an id far too long
    ],
)
async def test_a_malformed_txt_record_is_no_policy(
    txt: str, make_lab: MakeLab, start_daemon: StartDaemon
) -> None:
    lab = await make_lab(
        {
            "domains": {
                "odd.test": {
                    "mx": [{"name": "mx1.odd.test", "tls": "none"}],
                    "mta_sts": {"mode": "enforce", "txt": txt},
                }
            }
        }
    )
    daemon = await start_daemon(lab)
    await daemon.world.send("a@sender.test", ["b@odd.test"])
    [settled] = await daemon.world.worker.wait_settled(1)

    assert settled.status is DELIVERED  # no policy: an enforce policy would have refused
    assert lab.policy_server is not None and lab.policy_server.request_count("odd.test") == 0
