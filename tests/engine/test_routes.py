"""Routes, MX order and fail-over, DNS answers, and the route/schedule/connection expressions."""

from __future__ import annotations

from pathlib import Path

import pytest

from delivery.errors import LastError
from delivery.harness import lab as harness_lab
from delivery.queue import model
from tests.plugins.engine import MakeEngine
from tests.plugins.harness import MakeLab

SCENARIOS = Path(__file__).parents[2] / "fixtures" / "scenarios"


async def test_fails_over_to_the_next_mx_within_one_attempt(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab(SCENARIOS / "first-mx-down.toml")
    world = await make_engine(lab)
    await world.send("a@sender.test", ["b@backup.test"])
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.DELIVERED
    assert settled.retry_num == 1
    assert settled.outcome.remote_host == "mx3.backup.test"
    assert lab.mx("mx2.backup.test").received == []
    assert any(c.upper().startswith("MAIL") for c in lab.mx("mx2.backup.test").commands)
    [received] = lab.mx("mx3.backup.test").received
    assert received.rcpt_tos == ["b@backup.test"]


DOMAIN_CASES = [  # (label, recipient, action, status, kind)
    ("null MX", "b@nomail.test", "failed", "5.1.10", LastError.DNS),
    ("no such domain", "b@nosuch.implicit.test", "failed", "5.1.2", LastError.DNS),
    ("bogus DNSSEC is a temporary failure", "b@bogus.test", "delayed", "4.4.3", LastError.DNS),
]


@pytest.mark.parametrize(
    ("label", "recipient", "action", "status", "kind"),
    DOMAIN_CASES,
    ids=[case[0] for case in DOMAIN_CASES],
)
async def test_domain_answers(
    label: str,
    recipient: str,
    action: str,
    status: str,
    kind: LastError,
    make_lab: MakeLab,
    make_engine: MakeEngine,
) -> None:
    lab = await make_lab(
        {
            "domains": {
                "nomail.test": {"null_mx": True},
                "implicit.test": {"mx": [{"name": "implicit.test", "implicit": True}]},
                "bogus.test": {"dnssec": "bogus", "mx": [{"name": "mx1.bogus.test"}]},
            }
        }
    )
    world = await make_engine(lab)
    await world.send("", [recipient])
    [settled] = await world.worker.wait_settled(1)
    assert (settled.outcome.action, settled.outcome.status, settled.outcome.kind) == (
        action,
        status,
        kind,
    )
    assert recipient.partition("@")[2] in settled.outcome.reason


async def test_no_mx_means_the_domain_is_its_own_mx(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab(SCENARIOS / "null-mx.toml")
    world = await make_engine(lab)
    await world.send("a@sender.test", ["b@implicit.test"])
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.DELIVERED
    assert settled.outcome.remote_host == "implicit.test"
    assert lab.mx("implicit.test").received[0].rcpt_tos == ["b@implicit.test"]


async def test_an_mx_whose_address_lookup_times_out_is_skipped(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab(SCENARIOS / "dns-trouble.toml")
    world = await make_engine(lab)
    await world.send("a@sender.test", ["b@slowdns.test"])
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.DELIVERED
    assert settled.outcome.remote_host == "mx2.slowdns.test"


async def test_a_route_expression_falls_back_to_a_relay_on_retry(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab(
        {
            "domains": {
                "busy.test": {
                    "mx": [{"name": "mx1.busy.test", "replies": {"rcpt": {"*": "451 4.3.0 busy"}}}]
                },
                "relay.test": {"mx": [{"name": "smart.relay.test"}]},
            }
        }
    )
    world = await make_engine(lab)
    await world.create(
        "MtaRoute", type_="Relay", name="fallback", address="smart.relay.test", port=lab.smtp_port
    )
    await world.outbound(
        route={
            "match": [
                {"if": "is_local_domain(rcpt_domain)", "then": "'local'"},
                {"if": "retry_num > 0", "then": "'fallback'"},
            ],
            "else": "'mx'",
        }
    )
    await world.send("a@sender.test", ["b@busy.test"])
    first, second = await world.worker.wait_settled(2)
    assert first.status is model.RecipientStatus.SCHEDULED
    assert "451 4.3.0 busy" in first.outcome.reason
    assert second.status is model.RecipientStatus.DELIVERED
    assert second.outcome.remote_host == "smart.relay.test"
    assert lab.mx("smart.relay.test").received[0].rcpt_tos == ["b@busy.test"]
    assert lab.mx("mx1.busy.test").received == []


@pytest.mark.harness_mx("mx1.plain.test")
async def test_local_domains_go_to_a_maildir(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness, local_domains=["here.test"])
    message_id = await world.send("a@plain.test", ["me@here.test"])
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.DELIVERED
    [stored] = await world.recipients(message_id)
    assert stored.schedule == "local" and stored.queue == "local"
    box = world.settings.data_dir / "maildir" / "here.test" / "me" / "new"
    [file] = list(box.iterdir())
    assert b"Subject: test\nMessage-ID" in file.read_bytes()
    assert harness.mx("mx1.plain.test").received == []


@pytest.mark.harness_mx("mx1.slow.test", replies={"rcpt": {"*": "450 4.2.1 try later"}})
async def test_a_schedule_expression_picks_the_retry_intervals(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness)
    await world.create(
        "MtaDeliverySchedule",
        name="patient",
        queue="remote",
        retry=["3s"],
        notify=[],
        expiry={"@type": "Ttl", "expire": "1h"},
    )
    await world.outbound(
        schedule={
            "match": [{"if": "rcpt_domain == 'slow.test'", "then": "'patient'"}],
            "else": "'remote'",
        }
    )
    message_id = await world.send("a@sender.test", ["b@slow.test"])
    [settled] = await world.worker.wait_settled(1)
    assert settled.due is not None and settled.due - settled.at == 3000
    [stored] = await world.recipients(message_id)
    assert stored.schedule == "patient"


async def test_a_connection_expression_picks_ehlo_name_source_and_timeouts(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab(
        {
            "domains": {
                "conn.test": {"mx": [{"name": "mx1.conn.test"}]},
                "tarpit.test": {
                    "mx": [{"name": "mx1.tarpit.test", "replies": {"greeting": {"delay": 3}}}]
                },
            }
        }
    )
    world = await make_engine(lab)
    await world.create(
        "MtaConnectionStrategy",
        name="pinned",
        ehloHostname="pinned.engine.test",
        sourceIps=[{"sourceIp": "127.0.0.1", "ehloHostname": "source.engine.test"}],
    )
    await world.create("MtaConnectionStrategy", name="impatient", greetingTimeout="500ms")
    await world.outbound(
        connection={
            "match": [
                {"if": "mx == 'mx1.conn.test'", "then": "'pinned'"},
                {"if": "rcpt_domain == 'tarpit.test'", "then": "'impatient'"},
            ],
            "else": "'default'",
        }
    )
    await world.send("a@sender.test", ["b@conn.test"])
    await world.send("a@sender.test", ["b@tarpit.test"])
    settled = {s.address: s for s in await world.worker.wait_settled(2)}
    assert settled["b@conn.test"].status is model.RecipientStatus.DELIVERED
    [received] = lab.mx("mx1.conn.test").received
    assert received.ehlo == "source.engine.test"
    assert received.peer[0] == "127.0.0.1"
    tarpit = settled["b@tarpit.test"]
    assert tarpit.status is model.RecipientStatus.SCHEDULED
    assert "greeting" in tarpit.outcome.reason and "0.5s" in tarpit.outcome.reason


async def test_dns_query_in_a_route_expression_is_resolved_and_a_failure_defers(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab(
        {
            "domains": {
                "flagged.test": {
                    "mx": [{"name": "mx1.flagged.test"}],
                    "records": [{"name": "flagged.test", "type": "TXT", "value": '"relay-me"'}],
                },
                "broken.test": {
                    "mx": [{"name": "mx1.broken.test"}],
                    "faults": {"broken.test": "servfail"},
                },
                "relay.test": {"mx": [{"name": "smart.relay.test"}]},
            }
        }
    )
    world = await make_engine(lab)
    await world.create(
        "MtaRoute", type_="Relay", name="fallback", address="smart.relay.test", port=lab.smtp_port
    )
    await world.outbound(
        route={
            "match": [{"if": "len(dns_query(rcpt_domain, 'TXT')) > 0", "then": "'fallback'"}],
            "else": "'mx'",
        }
    )
    await world.send("", ["a@flagged.test"])
    await world.send("", ["b@broken.test"])
    settled = {s.address: s for s in await world.worker.wait_settled(2)}
    assert settled["a@flagged.test"].status is model.RecipientStatus.DELIVERED
    assert lab.mx("smart.relay.test").received[0].rcpt_tos == ["a@flagged.test"]
    failed = settled["b@broken.test"]
    assert failed.status is model.RecipientStatus.SCHEDULED
    assert failed.outcome.kind is LastError.DNS and "dns_query" in failed.outcome.reason
