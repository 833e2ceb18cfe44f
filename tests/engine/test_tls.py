"""STARTTLS as the TLS strategies say (DESIGN §5 step 3), against real TLS receivers."""

from __future__ import annotations

import pytest

from delivery.errors import LastError
from delivery.harness import lab as harness_lab
from delivery.harness import smtp_server
from delivery.queue import model
from tests.plugins.engine import EngineWorld, MakeEngine
from tests.plugins.harness import MakeLab


def saw_mail_command(receiver: smtp_server.SmtpReceiver) -> bool:
    return any(line.upper().startswith("MAIL") for line in receiver.commands)


def saw_starttls(receiver: smtp_server.SmtpReceiver) -> bool:
    return any(line.upper().startswith("STARTTLS") for line in receiver.commands)


async def with_strategy(world: EngineWorld, name: str, **properties: object) -> None:
    """Create TLS strategy ``name`` and make the `tls` expression always pick it."""
    if name not in ("default", "invalid-tls"):
        await world.create("MtaTlsStrategy", name=name, **properties)
    await world.outbound(tls={"else": f"'{name}'"})


@pytest.mark.harness_mx("mx1.tls.test", tls="valid")
async def test_optional_uses_starttls_when_offered_and_verifies_the_certificate(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness)
    message_id = await world.send("a@sender.test", ["b@tls.test"])
    [settled] = await world.worker.wait_settled(1)
    [received] = harness.mx("mx1.tls.test").received
    assert received.tls is not None and received.tls.version.startswith("TLSv1.")
    assert settled.status is model.RecipientStatus.DELIVERED
    assert "certificate verified (PKIX)" in settled.tls
    [stored] = await world.recipients(message_id)
    assert received.tls.cipher in stored.last_status and "PKIX" in stored.last_status


@pytest.mark.parametrize("mode", ["none", "broken", "expired", "self-signed", "wrong-name"])
async def test_require_never_sends_in_clear_text(
    mode: str, make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab({"domains": {"req.test": {"mx": [{"name": "mx1.req.test", "tls": mode}]}}})
    world = await make_engine(lab)
    await with_strategy(world, "strict", startTls="require")
    await world.send("a@sender.test", ["b@req.test"])
    [settled] = await world.worker.wait_settled(1)
    receiver = lab.mx("mx1.req.test")
    assert receiver.received == []
    assert not saw_mail_command(receiver)
    assert settled.status is model.RecipientStatus.SCHEDULED
    assert settled.outcome.action == "delayed"
    assert settled.outcome.kind is LastError.TLS
    assert "TLS strategy 'strict' requires STARTTLS" in settled.outcome.reason
    assert "not sending in clear text" in settled.outcome.reason


@pytest.mark.harness_mx("mx1.tls.test", tls="valid")
async def test_require_delivers_over_verified_tls(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness)
    await with_strategy(world, "strict", startTls="require")
    await world.send("a@sender.test", ["b@tls.test"])
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.DELIVERED
    [received] = harness.mx("mx1.tls.test").received
    assert received.tls is not None


@pytest.mark.harness_mx("mx1.tls.test", tls="valid")
async def test_disable_never_starts_tls(harness: harness_lab.Lab, make_engine: MakeEngine) -> None:
    world = await make_engine(harness)
    await with_strategy(world, "plain", startTls="disable")
    await world.send("a@sender.test", ["b@tls.test"])
    [settled] = await world.worker.wait_settled(1)
    receiver = harness.mx("mx1.tls.test")
    [received] = receiver.received
    assert received.tls is None and not saw_starttls(receiver)
    assert settled.status is model.RecipientStatus.DELIVERED
    assert "disables STARTTLS" in settled.tls


@pytest.mark.parametrize("mode", ["self-signed", "expired", "wrong-name", "unknown-ca"])
async def test_an_invalid_certificate_is_refused_unless_allowed(
    mode: str, make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab({"domains": {"bad.test": {"mx": [{"name": "mx1.bad.test", "tls": mode}]}}})
    world = await make_engine(lab)
    await with_strategy(world, "default")
    await world.send("a@sender.test", ["b@bad.test"])
    [refused] = await world.worker.wait_settled(1)
    receiver = lab.mx("mx1.bad.test")
    assert receiver.received == [] and not saw_mail_command(receiver)
    assert refused.outcome.kind is LastError.TLS and refused.outcome.action == "delayed"
    assert "certificate" in refused.outcome.reason

    await with_strategy(world, "invalid-tls")
    await world.send("a@sender.test", ["c@bad.test"])
    settled = await world.worker.wait_settled(2)
    accepted = next(s for s in settled if s.address == "c@bad.test")
    assert accepted.status is model.RecipientStatus.DELIVERED
    assert "certificate not verified" in accepted.tls
    assert any(m.rcpt_tos == ["c@bad.test"] and m.tls is not None for m in receiver.received)


@pytest.mark.harness_mx("mx1.self.test", tls="self-signed")
async def test_default_tls_expression_retries_with_invalid_tls_after_a_tls_failure(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness)
    message_id = await world.send("a@sender.test", ["b@self.test"])
    first, second = await world.worker.wait_settled(2)
    assert first.outcome.kind is LastError.TLS and first.status is model.RecipientStatus.SCHEDULED
    assert second.status is model.RecipientStatus.DELIVERED
    assert second.retry_num == 2
    assert "certificate not verified" in second.tls
    [received] = harness.mx("mx1.self.test").received
    assert received.tls is not None
    [stored] = await world.recipients(message_id)
    assert stored.status is model.RecipientStatus.DELIVERED


@pytest.mark.harness_mx("mx1.broken.test", tls="broken")
async def test_optional_never_leaves_mail_stuck_on_a_broken_tls_stack(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    """PKIX first: the failed handshake defers (kind tls); the retry under invalid-tls has
    nothing left to verify, so it reconnects and delivers in clear text (DESIGN §5.3)."""
    world = await make_engine(harness)
    await world.send("a@sender.test", ["b@broken.test"])
    first, second = await world.worker.wait_settled(2)
    assert first.outcome.kind is LastError.TLS and first.status is model.RecipientStatus.SCHEDULED
    assert second.status is model.RecipientStatus.DELIVERED
    assert "after a failed TLS handshake" in second.tls
    [received] = harness.mx("mx1.broken.test").received
    assert received.tls is None


async def test_a_custom_tls_expression_picks_strategies_by_mx_and_domain(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab(
        {
            "domains": {
                "a.test": {"mx": [{"name": "mx1.a.test", "tls": "valid"}]},
                "b.test": {"mx": [{"name": "mx1.b.test", "tls": "valid"}]},
                "c.test": {"mx": [{"name": "mx1.c.test", "tls": "none"}]},
            }
        }
    )
    world = await make_engine(lab)
    await world.create("MtaTlsStrategy", name="strict", startTls="require")
    await world.create("MtaTlsStrategy", name="plain", startTls="disable")
    await world.outbound(
        tls={
            "match": [
                {"if": "mx == 'mx1.a.test' || mx == 'mx1.c.test'", "then": "'strict'"},
                {"if": "rcpt_domain == 'b.test'", "then": "'plain'"},
            ],
            "else": "'default'",
        }
    )
    for domain in ("a.test", "b.test", "c.test"):
        await world.send("a@sender.test", [f"x@{domain}"])
    settled = {s.address: s for s in await world.worker.wait_settled(3)}
    [to_a] = lab.mx("mx1.a.test").received
    [to_b] = lab.mx("mx1.b.test").received
    assert to_a.tls is not None and to_b.tls is None
    assert not saw_starttls(lab.mx("mx1.b.test"))
    assert settled["x@c.test"].status is model.RecipientStatus.SCHEDULED
    assert "'strict'" in settled["x@c.test"].outcome.reason
    assert lab.mx("mx1.c.test").received == []


async def test_requiretls_never_goes_to_a_host_nothing_authenticates(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    """RFC 8689 §4.2.1: TLS and REQUIRETLS at the next hop are not enough; the host must be
    authenticated by DANE or MTA-STS (tests/integration covers those). Here neither applies,
    and the resolver does not validate (the probe's root is not served), so whether DANE
    would is unknown: the message waits, nothing is sent."""
    lab = await make_lab(
        {
            "domains": {
                "yes.test": {"mx": [{"name": "mx1.yes.test", "advertise": {"requiretls": True}}]},
                "clear.test": {"mx": [{"name": "mx1.clear.test", "tls": "none"}]},
            }
        }
    )
    world = await make_engine(lab)
    for domain in ("yes.test", "clear.test"):
        await world.send("a@sender.test", [f"b@{domain}"], requiretls=True)
    settled = {s.address: s for s in await world.worker.wait_settled(2)}
    for domain in ("yes.test", "clear.test"):
        refused = settled[f"b@{domain}"]
        assert refused.status is model.RecipientStatus.SCHEDULED
        assert (refused.outcome.kind, refused.outcome.status) == (LastError.TLS, "4.7.10")
        assert "REQUIRETLS" in refused.outcome.reason
        assert lab.mx(f"mx1.{domain}").connections == 0


@pytest.mark.harness_mx("mx1.tls.test", tls="valid")
async def test_disable_under_requiretls_refuses_without_connecting(
    harness: harness_lab.Lab, make_engine: MakeEngine
) -> None:
    world = await make_engine(harness)
    await with_strategy(world, "plain", startTls="disable")
    await world.send("a@sender.test", ["b@tls.test"], requiretls=True)
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.SCHEDULED
    assert "REQUIRETLS" in settled.outcome.reason
    assert harness.mx("mx1.tls.test").connections == 0
