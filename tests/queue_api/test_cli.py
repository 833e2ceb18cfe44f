"""`delivery queue list|show|retry|cancel` against a running daemon, over the harness lab."""

from __future__ import annotations

import email
import email.policy

import pytest

from delivery.harness import smtp_script
from tests.queue_api.conftest import OUTSIDER, READER, QueueDaemon


def ids(messages: list[dict[str, object]]) -> list[object]:
    return [m["id"] for m in messages]


async def test_list_with_each_filter(queue_daemon: QueueDaemon) -> None:
    d = queue_daemon
    deferred = await d.deferred("alice@origin.test", "bob@dest.test")
    delivered = await d.submit("carol@origin.test", "erin@ok.test")
    mixed = await d.submit("alice@origin.test", "dan@dest.test", "fay@ok.test")
    await d.settled("erin@ok.test", "dan@dest.test", "fay@ok.test")

    assert ids(await d.cli_json("list")) == [deferred, delivered, mixed]
    cases = [  # (options, expected ids)
        (["--status", "deferred"], [deferred, mixed]),
        (["--status", "scheduled"], [deferred, mixed]),
        (["--status", "delivered"], [delivered, mixed]),
        (["--status", "cancelled"], []),
        (["--domain", "OK.test"], [delivered, mixed]),
        (["--sender", "carol@origin.test"], [delivered]),
        (["--recipient", "Bob@dest.test"], [deferred]),
        (["--queue", "remote"], [deferred, delivered, mixed]),
        (["--queue", "dsn"], []),
        (["--due-after", "1m"], [deferred, mixed]),  # retry in 2 minutes
        (["--due-before", "1m"], []),
        (
            ["--due-before", "1h", "--domain", "dest.test", "--sender", "alice@origin.test"],
            [deferred, mixed],
        ),
        (["--limit", "2"], [deferred, delivered]),
    ]
    for options, expected in cases:
        assert ids(await d.cli_json("list", *options)) == expected, options

    table = await d.cli("list", "--status", "deferred")
    assert table.exit_code == 0
    assert "2 queued messages" in table.output
    assert deferred in table.output and mixed in table.output and delivered not in table.output
    for text in ("bob@dest.test", "deferred", "fay@ok.test", "delivered", "in 1m59s"):
        assert text in table.output


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--due-before", "tomorrow"], "--due-before"),
        (["--due-after", "2026-01-31 noon"], "--due-after"),
        (["--due-before", "100000000h"], "--due-before"),  # past the year 9999
        (["--due-after", "999999999999d"], "--due-after"),
        (["--status", "stuck"], "--status"),
        (["--limit", "0"], "--limit"),
    ],
)
async def test_a_bad_filter_is_a_usage_error_naming_the_option(
    queue_daemon: QueueDaemon, options: list[str], named: str
) -> None:
    result = await queue_daemon.cli("list", *options)
    assert result.exit_code == 2, result.output
    assert named in result.output


async def test_show_every_recipient_with_attempts_and_last_status(
    queue_daemon: QueueDaemon,
) -> None:
    d = queue_daemon
    message_id = await d.submit("alice@origin.test", "bob@dest.test", "fay@ok.test")
    await d.settled("bob@dest.test", "fay@ok.test")

    shown = await d.cli_json("show", message_id)
    by_address = {r["address"]: r for r in shown["recipients"]}
    bob, fay = by_address["bob@dest.test"], by_address["fay@ok.test"]
    assert bob["status"] == "scheduled" and bob["deferred"] and bob["attempts"] == 1
    assert bob["due"] is not None and bob["lastError"] == "unexpected-reply"
    assert "451" in bob["lastStatus"]
    assert fay["status"] == "delivered" and fay["due"] is None
    assert "TLS" in fay["lastStatus"] or "tls" in fay["lastStatus"].lower()

    table = await d.cli("show", message_id)
    assert table.exit_code == 0
    for text in ("alice@origin.test", "bob@dest.test", "deferred", "fay@ok.test", "delivered"):
        assert text in table.output

    missing = await d.cli("show", "0" * 28)
    assert missing.exit_code == 1 and "no queued message" in missing.output


async def test_retry_delivers_a_deferred_message_now(queue_daemon: QueueDaemon) -> None:
    d = queue_daemon
    message_id = await d.deferred("alice@origin.test", "bob@dest.test")
    mx = d.lab.mx("mx1.dest.test")
    mx.script = smtp_script.DEFAULT_SCRIPT  # the MX accepts from now on
    await mx.end_sessions()  # also on the connection the engine keeps from the deferral

    result = await d.cli("retry", message_id)
    assert result.exit_code == 0, result.output
    assert f"Retrying message {message_id}" in result.output
    [received] = await mx.wait_for_messages(1)  # long before the 2-minute retry
    assert received.rcpt_tos == ["bob@dest.test"]
    await d.settled("bob@dest.test")
    [bob] = (await d.message(message_id))["recipients"]
    assert bob["status"] == "delivered" and bob["attempts"] == 2


async def test_retry_all_deferred(queue_daemon: QueueDaemon) -> None:
    d = queue_daemon
    first = await d.deferred("alice@origin.test", "bob@dest.test")
    second = await d.deferred("carol@origin.test", "dan@dest.test")
    mx = d.lab.mx("mx1.dest.test")
    mx.script = smtp_script.DEFAULT_SCRIPT
    await mx.end_sessions()

    result = await d.cli("retry", "--all-deferred")
    assert result.exit_code == 0, result.output
    assert "Retrying 2 deferred messages" in result.output
    received = await mx.wait_for_messages(2)
    assert sorted(m.rcpt_tos[0] for m in received) == ["bob@dest.test", "dan@dest.test"]
    await d.settled("bob@dest.test", "dan@dest.test")
    for message_id in (first, second):
        [recipient] = (await d.message(message_id))["recipients"]
        assert recipient["status"] == "delivered"

    usage = await d.cli("retry")
    assert usage.exit_code == 2 and "--all-deferred" in usage.output


async def test_cancel_sends_the_sender_a_dsn(queue_daemon: QueueDaemon) -> None:
    d = queue_daemon
    message_id = await d.deferred("alice@origin.test", "bob@dest.test", ret="FULL")

    result = await d.cli("cancel", message_id)
    assert result.exit_code == 0, result.output
    assert f"Cancelled message {message_id}: bob@dest.test" in result.output
    assert "DSN queued to <alice@origin.test>" in result.output

    [dsn] = await d.lab.mx("mx1.origin.test").wait_for_messages(1)
    assert dsn.mail_from == "" and dsn.rcpt_tos == ["alice@origin.test"]
    report = email.message_from_bytes(dsn.body, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    text = dsn.body.decode()
    assert "cancelled by the operator" in text and "token" not in text
    assert "Status: 5.0.0" in text and "Final-Recipient: rfc822; bob@dest.test" in text
    assert "Action: failed" in text
    assert "message/rfc822" in text  # RET=FULL: the whole original comes back

    [bob] = (await d.message(message_id))["recipients"]
    assert bob["status"] == "cancelled"
    assert "(token admin)" in bob["lastStatus"]


async def test_cancel_silent_sends_no_dsn(queue_daemon: QueueDaemon) -> None:
    d = queue_daemon
    message_id = await d.deferred("alice@origin.test", "bob@dest.test")

    result = await d.cli("cancel", message_id, "--silent")
    assert result.exit_code == 0, result.output
    assert "no DSN" in result.output
    [bob] = (await d.message(message_id))["recipients"]
    assert bob["status"] == "cancelled"
    assert await d.cli_json("list", "--queue", "dsn") == []  # none was queued
    assert d.lab.mx("mx1.origin.test").received == []

    again = await d.cli("cancel", message_id)
    assert again.exit_code == 1 and "notScheduled" in again.output


async def test_cancel_honours_notify_never(queue_daemon: QueueDaemon) -> None:
    d = queue_daemon
    message_id = await d.deferred("alice@origin.test", "bob@dest.test", notify="NEVER")

    result = await d.cli("cancel", message_id)
    assert result.exit_code == 0, result.output
    assert "no DSN" in result.output
    assert await d.cli_json("list", "--sender", "") == []  # no DSN (null sender) queued


async def test_permissions_are_checked_and_named(queue_daemon: QueueDaemon) -> None:
    d = queue_daemon
    message_id = await d.deferred("alice@origin.test", "bob@dest.test")

    listed = await d.cli("list", token=READER)
    assert listed.exit_code == 0 and message_id in listed.output
    for args in (("cancel", message_id), ("retry", message_id), ("retry", "--all-deferred")):
        refused = await d.cli(*args, token=READER)
        assert refused.exit_code == 1, args
        assert "forbidden" in refused.output and "sysQueuedMessageUpdate" in refused.output
    [bob] = (await d.message(message_id))["recipients"]
    assert bob["status"] == "scheduled"  # nothing changed

    outsider = await d.cli("show", message_id, token=OUTSIDER)
    assert outsider.exit_code == 1 and "sysQueuedMessageGet" in outsider.output
    outsider = await d.cli("list", token=OUTSIDER)
    assert outsider.exit_code == 1 and "sysQueuedMessageQuery" in outsider.output
    unknown = await d.cli("list", token="not-a-token")
    assert unknown.exit_code == 1 and "401" in unknown.output


async def test_unknown_ids_are_not_found(queue_daemon: QueueDaemon) -> None:
    d = queue_daemon
    for args in (("retry", "nope"), ("cancel", "nope"), ("cancel", "nope", "--silent")):
        result = await d.cli(*args)
        assert result.exit_code == 1, args
        assert "QueuedMessage nope" in result.output and "notFound" in result.output
