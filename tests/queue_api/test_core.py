"""The pure parts of the queue API and CLI: filters, patches, times, the cancel DSN's lines."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from delivery.api import queue as api_queue
from delivery.api.failures import MethodFailure
from delivery.cli import queue as cli_queue
from delivery.errors import LastError
from delivery.queue import model

T0 = "2026-01-31T12:00:00Z"
T0_MS = 1_769_860_800_000

FILTERS: list[tuple[str, Any, dict[str, Any]]] = [  # (label, filter, QueueFilter fields)
    ("none", None, {}),
    ("empty condition", {}, {}),
    ("deferred", {"status": "deferred"}, {"status": "scheduled", "deferred": True}),
    ("a status", {"status": "failed"}, {"status": "failed"}),
    (
        "texts",
        {"domain": "a.test", "sender": "", "recipient": "b@a.test", "queue": "remote"},
        {"domain": "a.test", "sender": "", "recipient": "b@a.test", "queue": "remote"},
    ),
    (
        "times",
        {"dueBefore": T0, "dueAfter": "2026-01-31T13:00:00+01:00"},
        {"due_before": T0_MS, "due_after": T0_MS},
    ),
    (
        "AND",
        {"operator": "AND", "conditions": [{"domain": "a.test"}, {"status": "deferred"}]},
        {"domain": "a.test", "status": "scheduled", "deferred": True},
    ),
    (
        "AND, same value twice",
        {"operator": "AND", "conditions": [{"queue": "q"}, {"queue": "q"}]},
        {"queue": "q"},
    ),
    (
        "deferred AND scheduled",
        {"operator": "AND", "conditions": [{"status": "deferred"}, {"status": "scheduled"}]},
        {"status": "scheduled", "deferred": True},
    ),
]


@pytest.mark.parametrize(("label", "given", "expected"), FILTERS, ids=[f[0] for f in FILTERS])
def test_filters(label: str, given: Any, expected: dict[str, Any]) -> None:
    parsed = api_queue.parse_filter(given)
    fields: dict[str, Any] = {
        k: model.RecipientStatus(v) if k == "status" else v for k, v in expected.items()
    }
    assert parsed == api_queue.QueueFilter(**fields)


REFUSED: list[tuple[str, Any, str]] = [  # (label, filter, words of the description)
    ("OR", {"operator": "OR", "conditions": [{"domain": "a"}]}, "only AND"),
    ("NOT", {"operator": "NOT", "conditions": []}, "only AND"),
    ("unknown condition", {"subject": "x"}, "unknown condition 'subject'"),
    ("bad status", {"status": "stuck"}, "status must be one of"),
    ("not a string", {"domain": 3}, "domain must be a string"),
    ("no zone", {"dueBefore": "2026-01-31T12:00:00"}, "dueBefore: "),
    ("not a date", {"dueAfter": "tomorrow"}, "dueAfter: 'tomorrow' is not an RFC 3339"),
    (
        "conflict",
        {"operator": "AND", "conditions": [{"status": "failed"}, {"status": "deferred"}]},
        "two different values for status",
    ),
    ("operator without conditions", {"operator": "AND"}, "'conditions' array"),
    ("a list", [{"domain": "a"}], "FilterCondition or FilterOperator"),
    (
        "too deep",
        {
            "operator": "AND",
            "conditions": [
                {
                    "operator": "AND",
                    "conditions": [
                        {
                            "operator": "AND",
                            "conditions": [
                                {
                                    "operator": "AND",
                                    "conditions": [{"operator": "AND", "conditions": []}],
                                }
                            ],
                        }
                    ],
                }
            ],
        },
        "at most 4",
    ),
]


@pytest.mark.parametrize(("label", "given", "words"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_filters(label: str, given: Any, words: str) -> None:
    parsed = api_queue.parse_filter(given)
    assert isinstance(parsed, MethodFailure) and parsed.type == "unsupportedFilter"
    assert words in parsed.description


PATCHES: list[tuple[dict[str, Any], Any]] = [  # (patch, action or SetError properties)
    ({"action": "retry"}, "retry"),
    ({"action": "cancel"}, "cancel"),
    ({"action": "cancelSilently"}, "cancelSilently"),
    ({"action": "delete"}, ("action",)),
    ({"action": None}, ("action",)),
    ({}, ("action",)),
    ({"action": "retry", "sender": "x", "due": None}, ("due", "sender")),
]


@pytest.mark.parametrize(("patch", "expected"), PATCHES)
def test_patches(patch: dict[str, Any], expected: Any) -> None:
    action = api_queue.parse_action(patch)
    if isinstance(expected, tuple):
        assert isinstance(action, api_queue.SetError)
        assert action.type == "invalidProperties" and action.properties == expected
    else:
        assert action == expected


def test_times_round_trip() -> None:
    for ms in (0, T0_MS, T0_MS + 1, T0_MS + 999):
        text = api_queue.format_time(ms)
        assert text is not None and text.endswith("Z")
        assert api_queue.parse_time(text) == ms
    with pytest.raises(ValueError, match="time zone"):
        api_queue.parse_time("2026-01-31T12:00:00")


def recipient(
    rid: int, status: model.RecipientStatus, *, notify: str = "", retry: int = 0
) -> model.QueuedRecipient:
    return model.QueuedRecipient(
        id=rid,
        message_id="m",
        address=f"r{rid}@dest.test",
        domain="dest.test",
        status=status,
        due=T0_MS if status is model.RecipientStatus.SCHEDULED else None,
        retry_num=retry,
        notify_num=0,
        notify_due=None,
        expires_at=T0_MS + 1,
        max_attempts=None,
        queue="remote",
        schedule="remote",
        last_error=LastError.NONE,
        last_status="",
        notify=frozenset(model.Notify(n) for n in notify.split(",") if n),
        orcpt=None,
        lease_owner=None,
        lease_until=None,
    )


def message(sender: str, *recipients: model.QueuedRecipient) -> model.QueuedMessage:
    return model.QueuedMessage(
        id="m",
        sender=sender,
        size=10,
        source=model.MessageSource.AUTHENTICATED,
        received_at=T0_MS,
        received_from_ip="",
        received_via_port=0,
        priority=0,
        env_id=None,
        ret=None,
        smtputf8=False,
        eightbitmime=False,
        requiretls=True,
        recipients=recipients,
    )


S, D = model.RecipientStatus.SCHEDULED, model.RecipientStatus.DELIVERED
CANCEL_DSNS = [  # (label, message, recipient ids the DSN reports on)
    ("NOTIFY absent", message("a@o.test", recipient(1, S)), [1]),
    ("null sender", message("", recipient(1, S)), []),
    ("NOTIFY=NEVER", message("a@o.test", recipient(1, S, notify="NEVER")), []),
    ("NOTIFY=DELAY only", message("a@o.test", recipient(1, S, notify="DELAY")), []),
    ("NOTIFY=FAILURE,DELAY", message("a@o.test", recipient(1, S, notify="FAILURE,DELAY")), [1]),
    ("only the scheduled", message("a@o.test", recipient(1, D), recipient(2, S, retry=3)), [2]),
]


@pytest.mark.parametrize(
    ("label", "queued", "reported"), CANCEL_DSNS, ids=[c[0] for c in CANCEL_DSNS]
)
def test_cancel_dsn_reports_whom_notify_allows(
    label: str, queued: model.QueuedMessage, reported: list[int]
) -> None:
    reports = api_queue.cancel_reports(queued)
    assert [r.address for r in reports] == [f"r{i}@dest.test" for i in reported]
    for report in reports:
        assert report.status == "5.0.0" and report.reason == "cancelled by the operator"
        assert report.action.value == "failed" and report.remote_host is None


def test_message_wire_form() -> None:
    wire = api_queue.message_to_json(
        message("", recipient(1, S, retry=2), recipient(2, S), recipient(3, D))
    )
    assert set(wire) == set(api_queue.PROPERTIES)
    assert wire["sender"] == "" and wire["requireTls"] is True and wire["receivedAt"] == T0
    first, fresh, done = wire["recipients"]
    assert first["deferred"] and first["attempts"] == 2 and first["due"] == T0
    assert not fresh["deferred"] and fresh["status"] == "scheduled"
    assert done["status"] == "delivered" and done["due"] is None and not done["deferred"]
    assert first["id"] == "1" and first["expiresAt"] == "2026-01-31T12:00:00.001Z"


NOW = datetime.datetime(2026, 1, 31, 12, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("30m", "2026-01-31T12:30:00Z"),
        ("2d", "2026-02-02T12:00:00Z"),
        (T0, T0),
        ("garbage", "garbage"),
    ],  # the server judges what is not a duration
)
def test_cli_due_options(given: str, sent: str) -> None:
    assert cli_queue.parse_when(given, now=NOW) == sent
