"""The rcpt and host variables of DESIGN §4, built from queued values."""

from __future__ import annotations

from delivery.engine import variables
from delivery.errors import LastError
from delivery.expr import Context, variables_of
from delivery.queue import model

T0 = 1_700_000_000_000


def recipient(**fields: object) -> model.QueuedRecipient:
    values: dict[str, object] = {
        "id": 7,
        "message_id": "m1",
        "address": "Bob@Example.test",
        "domain": "example.test",
        "status": model.RecipientStatus.SCHEDULED,
        "due": T0,
        "retry_num": 2,
        "notify_num": 1,
        "notify_due": None,
        "expires_at": T0 + 60_000,
        "max_attempts": None,
        "queue": "remote",
        "schedule": "remote",
        "last_error": LastError.TLS,
        "last_status": "mx1 said no",
        "notify": frozenset(),
        "orcpt": None,
        "lease_owner": None,
        "lease_until": None,
    }
    values.update(fields)
    return model.QueuedRecipient(**values)  # type: ignore[arg-type]


def message(
    *recipients: model.QueuedRecipient, sender: str = "Ann@Sender.test"
) -> model.QueuedMessage:
    return model.QueuedMessage(
        id="m1",
        sender=sender,
        size=1234,
        source=model.MessageSource.DSN,
        received_at=T0 - 5000,
        received_from_ip="192.0.2.9",
        received_via_port=587,
        priority=3,
        env_id=None,
        ret=None,
        smtputf8=False,
        eightbitmime=False,
        requiretls=False,
        recipients=recipients,
    )


def test_rcpt_variables_cover_the_rcpt_context_with_their_values() -> None:
    rcpt = recipient()
    other = recipient(id=8, address="carol@example.test")
    values = variables.rcpt_variables(message(rcpt, other), rcpt, now=T0)
    assert set(values) == variables_of(Context.RCPT)
    assert values == {
        "rcpt": "Bob@Example.test",
        "rcpt_domain": "example.test",
        "recipients": ["Bob@Example.test", "carol@example.test"],
        "sender": "Ann@Sender.test",
        "sender_domain": "sender.test",
        "priority": 3,
        "retry_num": 2,
        "notify_num": 1,
        "expires_in": 60_000,
        "last_status": "mx1 said no",
        "last_error": "tls",
        "queue_name": "remote",
        "queue_age": 5000,
        "received_from_ip": "192.0.2.9",
        "received_via_port": 587,
        "source": "dsn",
        "size": 1234,
    }


def test_null_sender_expired_ttl_and_attempt_expiry() -> None:
    past = recipient(expires_at=T0 - 1)
    assert variables.rcpt_variables(message(past, sender=""), past, now=T0)["sender_domain"] == ""
    assert variables.rcpt_variables(message(past), past, now=T0)["expires_in"] == 0
    by_attempts = recipient(expires_at=None, max_attempts=5)
    assert variables.rcpt_variables(message(by_attempts), by_attempts, now=T0)["expires_in"] == 0


def test_host_variables_add_the_host() -> None:
    rcpt = recipient()
    values = variables.host_variables(
        variables.rcpt_variables(message(rcpt), rcpt, now=T0),
        mx="mx1.example.test.",
        remote_ip="127.0.0.5",
        local_ip="127.0.0.1",
    )
    assert set(values) == variables_of(Context.HOST)
    assert (values["mx"], values["remote_ip"], values["local_ip"]) == (
        "mx1.example.test",
        "127.0.0.5",
        "127.0.0.1",
    )
