"""Queue model values: what can and cannot be queued."""

from __future__ import annotations

import dataclasses

import pytest

from delivery.errors import LastError
from delivery.queue import model
from tests.plugins.queue import T0, make_recipient


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("user@Example.COM", "example.com"),
        ('"a@b"@example.org', "example.org"),
        ("user@BÜCHER.example", "bücher.example"),
    ],
)
def test_recipient_domain_is_the_lowercased_part_after_the_last_at(
    address: str, domain: str
) -> None:
    assert make_recipient(address).domain == domain


@pytest.mark.parametrize("address", ["postmaster", "@example.com", "user@", ""])
def test_an_address_without_local_part_and_domain_is_refused(address: str) -> None:
    with pytest.raises(model.InvalidEnvelope) as caught:
        make_recipient(address)
    assert caught.value.field == "address"


def test_notify_never_stands_alone() -> None:
    with pytest.raises(model.InvalidEnvelope, match="NEVER"):
        make_recipient(notify=frozenset({model.Notify.NEVER, model.Notify.FAILURE}))
    assert make_recipient(notify=frozenset({model.Notify.NEVER})).notify == {model.Notify.NEVER}


def test_a_recipient_must_be_able_to_expire() -> None:
    with pytest.raises(model.InvalidEnvelope, match="expires_at or max_attempts"):
        make_recipient(expires_at=None, max_attempts=None)


def test_message_ids_sort_by_time_and_differ_within_a_millisecond() -> None:
    ids = [model.make_message_id(T0) for _ in range(100)] + [model.make_message_id(T0 + 1)]
    assert len(set(ids)) == 101
    assert max(ids[:100]) < ids[100]


def test_a_rescheduled_update_needs_a_due_time() -> None:
    rcpt = model.QueuedRecipient(
        id=1, message_id="m", address="a@b.c", domain="b.c",
        status=model.RecipientStatus.SCHEDULED, due=T0, retry_num=0, notify_num=0,
        notify_due=None, expires_at=T0 + 1, max_attempts=None, queue="q", schedule="s",
        last_error=LastError.NONE, last_status="", notify=frozenset(), orcpt=None,
        lease_owner="n", lease_until=T0,
    )  # fmt: skip
    message = model.QueuedMessage(
        id="m", sender="", size=0, source=model.MessageSource.DSN, received_at=T0,
        received_from_ip="", received_via_port=0, priority=0, env_id=None, ret=None,
        smtputf8=False, eightbitmime=False, requiretls=False, recipients=(rcpt,),
    )  # fmt: skip
    lease = model.Lease(token="t", owner="n", until=T0, domain="b.c", message=message)
    update = model.RecipientUpdate.unchanged(lease, rcpt)

    assert (update.recipient_id, update.token, update.due) == (1, "t", T0)
    with pytest.raises(model.InvalidEnvelope, match="due"):
        dataclasses.replace(update, due=None)
    assert dataclasses.replace(update, status=model.RecipientStatus.FAILED, due=None).due is None


def test_final_statuses() -> None:
    assert [s for s in model.RecipientStatus if s.final] == [
        model.RecipientStatus.DELIVERED,
        model.RecipientStatus.FAILED,
        model.RecipientStatus.CANCELLED,
    ]
