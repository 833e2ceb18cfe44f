"""The four DSN kinds reach the sender's MX with the RFC 3464 fields (and only when due)."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from typing import Any

from delivery.harness import lab as harness_lab
from delivery.harness.smtp_dialogue import ReceivedMessage
from delivery.queue import model
from tests.plugins.engine import MakeEngine
from tests.plugins.harness import MakeLab

SENDER = "alice@sender.test"


def world_of(**targets: dict[str, Any]) -> dict[str, Any]:
    """A scenario: the sender's domain (where DSNs go) plus one MX per target domain."""
    domains: dict[str, Any] = {"sender.test": {"mx": [{"name": "mx1.sender.test"}]}}
    for domain, mx in targets.items():
        domains[domain.replace("_", ".")] = {
            "mx": [{"name": f"mx1.{domain.replace('_', '.')}", **mx}]
        }
    return {"domains": domains}


def delivery_status(
    received: ReceivedMessage,
) -> tuple[EmailMessage, dict[str, str], dict[str, str]]:
    """The DSN, its per-message fields and its (first) per-recipient fields."""
    parsed = message_from_bytes(received.body, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    status = next(
        p for p in parsed.iter_parts() if p.get_content_type() == "message/delivery-status"
    )
    blocks = [b for b in status.get_payload() if isinstance(b, Message)]
    per_message, per_recipient = ({k: str(v) for k, v in b.items()} for b in blocks[:2])
    return parsed, per_message, per_recipient


async def dsns(lab: harness_lab.Lab, count: int = 1) -> list[ReceivedMessage]:
    received = await lab.mx("mx1.sender.test").wait_for_messages(count, within=10)
    for message in received:
        assert message.mail_from == ""
        assert message.rcpt_tos == [SENDER]
    return received


async def test_failure_dsn(make_lab: MakeLab, make_engine: MakeEngine) -> None:
    lab = await make_lab(
        world_of(bounce_test={"replies": {"rcpt": {"*": "550 5.1.1 no such user"}}})
    )
    world = await make_engine(lab)
    await world.send(
        SENDER,
        ["bob@bounce.test"],
        env_id="env+2B1",
        ret=model.Ret.FULL,
        orcpt="rfc822;bob@bounce.test",
    )
    [received] = await dsns(lab)
    parsed, per_message, per_recipient = delivery_status(received)
    assert per_message["Reporting-MTA"] == "dns; mta.engine.test"
    assert per_message["Original-Envelope-Id"] == "env+1"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Final-Recipient"] == "rfc822; bob@bounce.test"
    assert per_recipient["Original-Recipient"] == "rfc822;bob@bounce.test"
    assert per_recipient["Remote-MTA"] == "dns; mx1.bounce.test"
    assert per_recipient["Diagnostic-Code"].startswith("smtp; 550 5.1.1 no such user")
    assert parsed["Auto-Submitted"] == "auto-replied"
    original = list(parsed.iter_parts())[-1]
    assert original.get_content_type() == "message/rfc822"  # RET=FULL
    # The sender reads what the server said; the rule that bounced it is for operators.
    human = next(p for p in parsed.iter_parts() if p.get_content_type() == "text/plain")
    assert "550 5.1.1 no such user" in str(human.get_content())
    assert "rule" not in str(human.get_content())
    [settled] = [s for s in world.worker.settled if s.address == "bob@bounce.test"]
    assert settled.outcome.reason.endswith("(rule 6)")
    [stored] = await world.recipients(world.sent[0])
    assert stored.last_status.endswith("(rule 6)")


async def test_delay_dsn_at_the_notify_time(make_lab: MakeLab, make_engine: MakeEngine) -> None:
    lab = await make_lab(world_of(slow_test={"replies": {"rcpt": {"*": "450 4.2.1 busy"}}}))
    world = await make_engine(lab)
    await world.update("MtaDeliverySchedule", "remote", retry=["1s"], notify=["1s"])
    await world.send(SENDER, ["bob@slow.test"])
    [received] = await dsns(lab)
    parsed, _, per_recipient = delivery_status(received)
    assert per_recipient["Action"] == "delayed"
    assert per_recipient["Status"] == "4.2.1"
    assert "Will-Retry-Until" in per_recipient
    assert list(parsed.iter_parts())[-1].get_content_type() == "text/rfc822-headers"
    settled = [s for s in world.worker.settled if s.address == "bob@slow.test"]
    assert settled[0].dsn is None and settled[1].dsn is not None  # at the 2nd attempt (age >= 1s)


async def test_a_delay_dsn_goes_out_at_the_notify_time_not_at_the_next_retry(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab(world_of(slow_test={"replies": {"rcpt": {"*": "450 4.2.1 busy"}}}))
    world = await make_engine(lab)
    await world.update("MtaDeliverySchedule", "remote", retry=["30s"], notify=["2s"])
    message_id = await world.send(SENDER, ["bob@slow.test"])
    [received] = await dsns(lab)  # within 10 s: long before the retry 30 s after the first
    _, _, per_recipient = delivery_status(received)
    assert (per_recipient["Action"], per_recipient["Status"]) == ("delayed", "4.2.1")
    message = await world.store.get_message(message_id)
    assert message is not None
    first, second = [s for s in world.worker.settled if s.address == "bob@slow.test"]
    assert first.dsn is None and first.due == message.received_at + 2000  # woken for the notice
    # ... where it is attempted again, and the notice reports that fresh failure.
    assert second.dsn is not None and second.at >= message.received_at + 2000
    assert second.due == second.at + 30_000  # no notice left: the next retry
    # Two attempts, two transactions (the second may reuse the first one's connection).
    assert sum(c.startswith("MAIL FROM") for c in lab.mx("mx1.slow.test").commands) == 2


async def test_relayed_dsn_when_success_was_asked_and_the_next_hop_has_no_dsn(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab(world_of(nodsn_test={"advertise": {"dsn": False}}))
    world = await make_engine(lab)
    await world.send(SENDER, ["bob@nodsn.test"], notify=frozenset({model.Notify.SUCCESS}))
    [received] = await dsns(lab)
    _, _, per_recipient = delivery_status(received)
    assert per_recipient["Action"] == "relayed"
    assert per_recipient["Status"].startswith("2.")


async def test_delivered_dsn_for_final_delivery_and_none_from_us_when_the_next_hop_reports(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab(world_of(dsn_test={}))
    world = await make_engine(lab, local_domains=["here.test"])
    success = frozenset({model.Notify.SUCCESS})
    await world.send(SENDER, ["bob@dsn.test"], notify=success, orcpt="rfc822;bob@dsn.test")
    await world.send(SENDER, ["me@here.test"], notify=success)
    [received] = await dsns(lab)
    _, _, per_recipient = delivery_status(received)
    assert per_recipient["Action"] == "delivered"
    assert per_recipient["Final-Recipient"] == "rfc822; me@here.test"
    [relayed] = lab.mx("mx1.dsn.test").received
    assert dict(relayed.rcpts[0].params) == {"NOTIFY": "SUCCESS", "ORCPT": "rfc822;bob@dsn.test"}
    await world.worker.wait_settled(3)  # both messages and the DSN itself
    assert len(lab.mx("mx1.sender.test").received) == 1


async def test_no_dsn_for_a_null_sender_or_notify_never(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab(
        world_of(bounce_test={"replies": {"rcpt": {"*": "550 5.1.1 no such user"}}})
    )
    world = await make_engine(lab)
    await world.send("", ["a@bounce.test"])
    await world.send(SENDER, ["b@bounce.test"], notify=frozenset({model.Notify.NEVER}))
    settled = await world.worker.wait_settled(2)
    assert {s.status for s in settled} == {model.RecipientStatus.FAILED}
    assert all(s.dsn is None for s in settled)
    assert len(await world.store.list_messages()) == 2


async def test_a_sender_no_dsn_can_reach_still_lets_the_bounce_be_recorded(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    lab = await make_lab(world_of(bounce_test={"replies": {"rcpt": {"*": "550 5.1.1 no"}}}))
    world = await make_engine(lab)
    message_id = await world.send("postmaster", ["a@bounce.test"])
    [settled] = await world.worker.wait_settled(1)
    assert settled.status is model.RecipientStatus.FAILED
    [stored] = await world.recipients(message_id)
    assert stored.status is model.RecipientStatus.FAILED
    assert len(await world.store.list_messages()) == 1


async def test_no_dsn_for_a_message_cancelled_during_its_attempt(
    make_lab: MakeLab, make_engine: MakeEngine
) -> None:
    slow_550 = {"reply": "550 5.1.1 no such user", "delay": 1}
    lab = await make_lab(world_of(bounce_test={"replies": {"rcpt": {"*": slow_550}}}))
    world = await make_engine(lab)
    message_id = await world.send(SENDER, ["bob@bounce.test"])
    await lab.mx("mx1.bounce.test").wait_for_connections(1)  # the attempt is under way
    cancelled = await world.store.cancel(message_id, reason="cancelled by the operator")
    assert len(cancelled.ids) == 1
    await world.worker.stop()  # the attempt ends (550) within the grace period, and records
    [stored] = await world.recipients(message_id)
    assert stored.status is model.RecipientStatus.CANCELLED
    assert [m.id for m in await world.store.list_messages()] == [message_id]  # no bounce
    assert lab.mx("mx1.sender.test").received == []
